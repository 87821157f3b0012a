"""How long the kernel introspection takes: BTF (vmlinux + modules), kallsyms, skb catalog.

    .venv/bin/python bench/btf_load.py [--repeat N]

Prints wall and CPU seconds per step (best of N runs in this process; nothing is cached between runs).
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ipft_web.kernel import btf, catalog, kallsyms  # noqa: E402


def once() -> dict:
    steps = {}

    def step(name, fn):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        steps[name] = (time.perf_counter() - w, time.process_time() - c)
        return out

    btf._RUNNING.clear()   # the process keeps the running kernel's base BTF: parse it again
    db = step("btf (vmlinux + modules)", lambda: btf.load_kernel_btf(modules=True))
    syms = step("kallsyms", kallsyms.load)
    cat = step("catalog: Catalog()", lambda: catalog.Catalog(db, syms))
    funcs = step("catalog: skb functions", lambda: cat.traceable_skb_functions())
    tps = step("catalog: skb tracepoints", cat.skb_tracepoints)
    step("kallsyms: address index", lambda: syms.addresses("ip_rcv"))
    steps["_counts"] = (len(db.vmlinux), len(db.modules), len(cat.skb_functions()), len(funcs), len(tps), cat.source)
    return steps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    runs = [once() for _ in range(max(1, args.repeat))]
    types, mods, skb, traceable, tps, source = runs[0]["_counts"]
    print(f"{types} vmlinux types, {mods} module BTFs, {skb} skb functions, {traceable} traceable ({source}), "
          f"{tps} skb tracepoints")
    names = [k for k in runs[0] if not k.startswith("_")]
    total_w = total_c = 0.0
    for name in names:
        w = min(r[name][0] for r in runs)
        c = min(r[name][1] for r in runs)
        if not name.startswith("kallsyms: address"):
            total_w += w
            total_c += c
        print(f"{name:<28} {w:6.3f} s wall  {c:6.3f} s cpu")
    print(f"{'load + catalog':<28} {total_w:6.3f} s wall  {total_c:6.3f} s cpu  (best of {len(runs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
