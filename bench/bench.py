#!/usr/bin/env python3
"""Benchmarks for the tracer on the running kernel: prints a table of numbers and ratios.

Run as root, ideally inside a guest kernel (bench/run-guest.sh [VERSION] [args] boots one):

    sudo .venv/bin/python bench/bench.py                 # every backend this kernel supports
    sudo .venv/bin/python bench/bench.py -b kprobe -r '^ip_'
    IPFT2=/path/to/ipft sudo -E .venv/bin/python bench/bench.py   # ipftrace2 side by side
                                                                  # (bench/build-ipftrace2.sh builds one)

Measured per backend, for all skb functions (or -r):
  start     time-to-tracing: in the dashboard (program compiled at start-up, precompile_s; then
            Start: kernel view + program from memory + attach, and its parts), and for the CLI
            from nothing, from its program cache, and from both caches
  detach    time to take every probe away
  flood     a marked ping flood in a network namespace: packets sent, journeys seen, events lost
  overhead  TCP throughput over loopback in a namespace with the tracer attached, unmarked traffic,
            as a ratio of the throughput with no tracer, measured just before and just after
            (iperf3 when installed, else a Python sender); --overhead-rounds N repeats it N times
            (and with bpftool reads the kernel's count of ns per BPF program run meanwhile),
            interleaved with ipftrace2, and prints each ratio and the median
Under emulation (virtme-ng --disable-kvm) compare ratios, not absolute times.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ipft_web.config import TraceConfig  # noqa: E402
from ipft_web.kernel.view import KernelView  # noqa: E402
from ipft_web.tracer import Tracer, precompile  # noqa: E402

MARK = 0xBE4C


def netns_up() -> str:
    name = f"ipftbench{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "netns", "exec", name, "ip", "addr", "add", "127.0.0.2/8", "dev", "lo"], check=True)
    return name


def in_ns(ns, *argv, **kw):
    return subprocess.run(["ip", "netns", "exec", ns, *argv], **kw)


def tcp_throughput(ns: str, seconds: float) -> float:
    """MB/s of one TCP stream over the namespace's loopback (iperf3 if present, else Python)."""
    if shutil.which("iperf3"):
        srv = subprocess.Popen(["ip", "netns", "exec", ns, "iperf3", "-s", "-1", "-B", "127.0.0.1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        out = in_ns(ns, "iperf3", "-c", "127.0.0.1", "-t", str(int(seconds)), "-J",
                    capture_output=True, text=True)
        srv.wait(timeout=30)
        import json
        try:
            return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 8e6
        except (ValueError, KeyError):
            return float("nan")
    code = ("import socket,time,threading\n"
            "s=socket.socket();s.bind(('127.0.0.1',5201));s.listen()\n"
            "def rx():\n a,_=s.accept()\n while a.recv(1<<16):pass\n"
            "threading.Thread(target=rx,daemon=True).start()\n"
            "c=socket.create_connection(('127.0.0.1',5201));b=b'x'*(1<<16);n=0;t=time.time()\n"
            f"while time.time()-t<{seconds}:c.sendall(b);n+=len(b)\n"
            "print(n/(time.time()-t)/1e6)\n")
    out = in_ns(ns, sys.executable, "-c", code, capture_output=True, text=True)
    return float(out.stdout.strip() or "nan")


def run_backend(backend: str, regex: str | None, seconds: float, flood: int) -> dict:
    row = {"backend": backend, "mbps_off_before": baseline(seconds)}
    journeys = []
    # as the dashboard does at start-up: the kernel view and the program are ready before Start,
    # so start_s is what pressing Start costs (the CLI rows show a start from nothing)
    row["precompile_s"] = precompile()
    t0 = time.monotonic()
    tracer = Tracer(TraceConfig(mark=MARK, regex=regex, backend=backend), journeys.append)
    tracer.start()
    row["start_s"] = time.monotonic() - t0
    st = tracer.stats()
    row.update(attached=st["attached"], failed=st["failed"], **{f"{k}_s": v for k, v in st["timings"].items()})
    ns = netns_up()
    try:
        row["mbps_on"] = tcp_throughput(ns, seconds)
        in_ns(ns, "iptables", "-t", "raw", "-A", "OUTPUT", "-p", "icmp", "--icmp-type", "echo-request",
              "-j", "MARK", "--set-mark", hex(MARK), check=True)
        ping = subprocess.Popen(["ip", "netns", "exec", ns, "ping", "-f", "-q", "-c", str(flood), "127.0.0.2"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ts = time.monotonic()
        while ping.poll() is None:
            tracer.poll(50)
        row["flood_s"] = time.monotonic() - ts
        for _ in range(30):
            tracer.poll(50)
    finally:
        t1 = time.monotonic()
        tracer.stop()
        row["stop_s"] = time.monotonic() - t1
        row["detach_s"] = tracer.timings.get("detach")
        subprocess.run(["ip", "netns", "del", ns])
    row["mbps_off_after"] = baseline(seconds)
    st = tracer.stats()
    row["refused"] = st["failed_funcs"]
    row["sent"] = flood
    row["journeys"] = sum(1 for j in journeys if (j.get("tuple") or {}).get("icmp_type") == 8)
    row["events"] = st["events"]
    row["lost"] = st["lost"]
    row["events_per_s"] = st["events"] / row["flood_s"] if row["flood_s"] else 0
    return row


def baseline(seconds: float) -> float:
    ns = netns_up()
    try:
        return tcp_throughput(ns, seconds)
    finally:
        subprocess.run(["ip", "netns", "del", ns])


def flood_ping(ns: str, flood: int) -> float:
    """Mark the namespace's echo requests and send `flood` of them as fast as they are answered;
    returns the seconds it took."""
    in_ns(ns, "iptables", "-t", "raw", "-A", "OUTPUT", "-p", "icmp", "--icmp-type", "echo-request",
          "-j", "MARK", "--set-mark", hex(MARK), check=True)
    ts = time.monotonic()
    in_ns(ns, "ping", "-f", "-q", "-c", str(flood), "127.0.0.2", stdout=subprocess.DEVNULL,
          stderr=subprocess.DEVNULL)
    return time.monotonic() - ts


IPFT2_BACKEND = {"fentry": "ftrace"}   # ipftrace2's name for it


def ipftrace2(path: str, regex: str | None, backend: str, seconds: float, flood: int) -> dict:
    """The same work for an ipftrace2 binary: time-to-tracing ("Trace ready!"), unmarked TCP
    throughput while attached, the marked flood (its JSON output has one line per event; a ping's
    echo request reaches icmp_rcv once, so icmp_rcv lines count the packets it saw), detach."""
    import re
    import tempfile
    import threading

    argv = [path, "-m", hex(MARK), "-b", IPFT2_BACKEND.get(backend, backend), "-o", "json"]
    argv += ["-r", regex] if regex else []
    row = {"backend": f"ipftrace2 {backend}", "sent": flood, "mbps_off_before": baseline(seconds)}
    out = tempfile.TemporaryFile(mode="w+")
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE)
    ready = threading.Event()
    said: list[str] = []

    def read_stderr():
        # Read as it comes (its progress lines end in "\r", not "\n"): the first "Attaching program"
        # starts its attach, "Trace ready" ends it.
        buf = b""
        while True:
            chunk = p.stderr.read1(4096)
            if not chunk:
                break
            buf += chunk
            now = time.monotonic()
            if b"Attaching program" in buf and "attach_from" not in row:
                row["attach_from"] = now
            if b"Trace ready" in buf and "start_s" not in row:
                row["start_s"] = now - t0
                if "attach_from" in row:
                    row["attach_s"] = now - row["attach_from"]
                ready.set()
        said.extend(buf.decode(errors="replace").replace("\r", "\n").splitlines(True))
        ready.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    ready.wait(timeout=3600)
    row.pop("attach_from", None)
    if p.poll() is not None:
        reader.join(timeout=30)
        row["note"] = "exited: " + " / ".join(line.strip() for line in said[-3:])
        return row
    ns = netns_up()
    try:
        row["mbps_on"] = tcp_throughput(ns, seconds)
        row["flood_s"] = flood_ping(ns, flood)
        time.sleep(3)
    finally:
        t1 = time.monotonic()
        p.send_signal(signal.SIGINT)
        p.wait(timeout=3600)
        row["stop_s"] = time.monotonic() - t1
        subprocess.run(["ip", "netns", "del", ns])
    reader.join(timeout=30)
    progress = [m for line in said for m in re.findall(r"succeeded (\d+), failed (\d+)", line)]
    if progress:
        row["attached"], row["failed"] = int(progress[-1][0]), int(progress[-1][1])
    row["mbps_off_after"] = baseline(seconds)
    out.seek(0)
    events = icmp = 0
    for line in out:
        events += 1
        icmp += '"function":"icmp_rcv"' in line
    row.update(events=events, journeys=icmp, events_per_s=events / row["flood_s"] if row.get("flood_s") else 0,
               lost="not counted")
    return row


def cli_start(regex: str | None, backend: str, cache: str, extra_env: dict | None = None) -> dict:
    """`ipft` as a user runs it: seconds until it says "tracing N functions", then Ctrl-C to exit."""
    # IPFT_BENCH_CLI: an `ipft` installed as users get it (bench/run-guest.sh makes one: not the
    # test venv's editable install, whose import hook costs 0.8 s of each start under emulation)
    cli = os.environ.get("IPFT_BENCH_CLI")
    argv = [cli] if cli else [sys.executable, "-m", "ipft_web.cli"]
    argv += ["-m", hex(MARK), "-b", backend, "-v"] + (["-r", regex] if regex else [])
    env = dict(os.environ, IPFT_CACHE_DIR=cache, **(extra_env or {}))
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                         cwd=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    ready, how, view = None, "", "kernel read"
    for line in p.stderr:
        if "kernel view loaded from this boot's cache" in line:
            view = "kernel view stored"
        elif "kernel view loaded from this kernel's cache" in line:
            source = line.rsplit("addresses from ", 1)[-1].strip()   # text bases, ftrace, kallsyms
            view = f"kernel view of an earlier boot, addresses from {source}"
        if line.startswith("BPF program "):
            how = ("program cached" if "from the cache" in line else
                   "program shipped" if "shipped" in line else "compiled")
        if line.startswith("tracing "):
            ready = time.monotonic() - t0
            break
    t1 = time.monotonic()
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=1800)
    return {"backend": f"ipft CLI {backend} ({how or '?'}, {view})", "start_s": ready, "stop_s": time.monotonic() - t1}


def ipftrace2_attached(path: str, regex: str | None, backend: str):
    """An ipftrace2 process that has said "Trace ready" (or None if it exited first)."""
    import threading
    argv = [path, "-m", hex(MARK), "-b", IPFT2_BACKEND.get(backend, backend), "-o", "json"]
    argv += ["-r", regex] if regex else []
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ready = threading.Event()

    def read_stderr():
        buf = b""
        while chunk := p.stderr.read1(4096):
            buf = (buf + chunk)[-4096:]
            if b"Trace ready" in buf:
                ready.set()
        ready.set()

    threading.Thread(target=read_stderr, daemon=True).start()
    ready.wait(timeout=3600)
    return p if p.poll() is None else None


def prog_stats() -> dict:
    """{program id: (name, run_time_ns, run_cnt)} of every loaded BPF program (bpftool; the counts
    grow only while kernel.bpf_stats_enabled is 1), or {} without bpftool."""
    import json
    if not shutil.which("bpftool"):
        return {}
    out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True).stdout
    try:
        return {p["id"]: (p.get("name", ""), p.get("run_time_ns", 0), p.get("run_cnt", 0)) for p in json.loads(out)}
    except (ValueError, KeyError, TypeError):
        return {}


def ns_per_run(before: dict, after: dict) -> tuple[float, int]:
    """(mean ns per program run, runs) over the programs that ran between the two prog_stats()."""
    runs = total = 0
    for pid, (_name, ns, cnt) in after.items():
        _n, ns0, cnt0 = before.get(pid, ("", 0, 0))
        if cnt > cnt0:
            runs += cnt - cnt0
            total += ns - ns0
    return (total / runs if runs else float("nan")), runs


def overhead_rounds(backend: str, regex: str | None, seconds: float, rounds: int, ipft2: str | None) -> list[dict]:
    """Unmarked throughput with each tracer attached, against tracer-off runs on either side, in
    `rounds` interleaved rounds (off, ipft-web, off, ipftrace2, off; the order flips each round), so
    that the guest's drift falls on both alike. One ratio per round and tool; the median is the figure.
    With bpftool, also the time the kernel counts in the tracer's BPF programs per run (per function
    hit) during the tracer-on run (kernel.bpf_stats_enabled): the cost without the throughput's noise."""
    import statistics
    stats_on = bool(shutil.which("bpftool")) and subprocess.run(
        ["sysctl", "-q", "-w", "kernel.bpf_stats_enabled=1"], capture_output=True).returncode == 0
    tracer_cfg = TraceConfig(mark=MARK, regex=regex, backend=backend)
    tools = ["ipft-web"] + (["ipftrace2"] if ipft2 else [])
    ratios: dict[str, list[float]] = {t: [] for t in tools}
    per_run: dict[str, list[float]] = {t: [] for t in tools}
    for r in range(rounds):
        order = tools if r % 2 == 0 else tools[::-1]
        before = baseline(seconds)
        for tool in order:
            if tool == "ipft-web":
                t = Tracer(tracer_cfg, lambda j: None)
                t.start()
                s0 = prog_stats() if stats_on else {}
                on = baseline(seconds)
                s1 = prog_stats() if stats_on else {}
                t.stop()
            else:
                p = ipftrace2_attached(ipft2, regex, backend)
                if p is None:
                    continue
                s0 = prog_stats() if stats_on else {}
                on = baseline(seconds)
                s1 = prog_stats() if stats_on else {}
                p.send_signal(signal.SIGINT)
                p.wait(timeout=3600)
            after = baseline(seconds)
            ratios[tool].append(on / ((before + after) / 2))
            ns, runs = ns_per_run(s0, s1) if stats_on else (float("nan"), 0)
            if runs:
                per_run[tool].append(ns)
            print(f"overhead round {r + 1} {tool} {backend}: off {before:.1f}, on {on:.1f}, off {after:.1f} MB/s"
                  + (f"; BPF {ns:.0f} ns per run over {runs} runs" if runs else ""), flush=True)
            before = after
    if stats_on:
        subprocess.run(["sysctl", "-q", "-w", "kernel.bpf_stats_enabled=0"], capture_output=True)
    return [{"tool": f"{t} {backend}", "rounds": len(v), "ratios": " ".join(f"{x:.2f}" for x in v),
             "median": f"{statistics.median(v):.2f}x" if v else "",
             "ns_per_run": f"{statistics.median(per_run[t]):.0f}" if per_run[t] else ""} for t, v in ratios.items()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-b", "--backend", action="append", help="backend(s) to measure (default: all available)")
    ap.add_argument("-r", "--regex", help="function filter (default: every skb function)")
    ap.add_argument("--seconds", type=float, default=5, help="length of each throughput run")
    ap.add_argument("--flood", type=int, default=2000, help="marked pings in the flood")
    ap.add_argument("--overhead-rounds", type=int, default=0, metavar="N",
                    help="also measure the unmarked overhead in N interleaved rounds with ipftrace2 (IPFT2); "
                         "each round attaches and detaches every backend once")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: needs root", file=sys.stderr)
        return 2
    import tempfile
    os.environ["IPFT_CACHE_DIR"] = tempfile.mkdtemp(prefix="ipft-bench-cache-")   # (the shipped program, if current)
    kernel = KernelView.load()
    kernel.store()   # now, not while the first row measures throughput
    backends = args.backend or kernel.backends()
    print(f"kernel {os.uname().release}; {len(kernel.skb_functions())} skb functions; backends {backends}")
    base = baseline(args.seconds)
    print(f"baseline TCP over loopback, no tracer: {base:.1f} MB/s")
    rows = []
    for b in backends:
        rows.append(run_backend(b, args.regex, args.seconds, args.flood))
        print("done:", {k: v for k, v in rows[-1].items() if k != "refused"}, flush=True)
    # first, with an empty cache and the shipped program ignored: it reads the kernel and
    # compiles (what a changed bpf/ipft.bpf.c costs); then a fresh cache: the first run reads the
    # kernel and takes the program shipped with ipft-web (a user's first run), the second loads
    # both; the third is the first run of a later boot (this boot's view deleted: the kernel's is
    # kept), the fourth reads the kernel with the program cached (both views deleted)
    rows.append(cli_start(args.regex, backends[0], tempfile.mkdtemp(prefix="ipft-bench-cache-"),
                          {"IPFT_PREBUILT": "off"}))
    print("done:", {k: v for k, v in rows[-1].items() if k != "refused"}, flush=True)
    cache = tempfile.mkdtemp(prefix="ipft-bench-cache-")
    for run in ("cold", "warm", "later boot", "kernel read"):
        if run in ("later boot", "kernel read"):
            shutil.rmtree(os.path.join(cache, "kernel"), ignore_errors=True)
        if run == "kernel read":
            shutil.rmtree(os.path.join(cache, "kernel-build"), ignore_errors=True)
        rows.append(cli_start(args.regex, backends[0], cache))
        print("done:", {k: v for k, v in rows[-1].items() if k != "refused"}, flush=True)
    if os.environ.get("IPFT2"):
        for b in backends:
            if b != "tracepoint":   # ipftrace2 has no tracepoint backend
                rows.append(ipftrace2(os.environ["IPFT2"], args.regex, b, args.seconds, args.flood))
                print("done:", {k: v for k, v in rows[-1].items() if k != "refused"}, flush=True)
    cols = ["backend", "attached", "failed", "precompile_s", "kernel_s", "compile_s", "attach_s", "attach_load_s", "attach_link_s",
            "attach_tp_s", "start_s", "stop_s", "detach_s",
            "events_per_s", "sent", "journeys", "lost", "mbps_off", "mbps_on", "overhead"]
    print()
    print(" | ".join(cols))
    print(" | ".join("---" for _ in cols))
    for r in rows:
        if "mbps_on" in r:
            # against the tracer-off runs just before and after this one (the guest's speed drifts)
            off = [r[k] for k in ("mbps_off_before", "mbps_off_after") if r.get(k) == r.get(k) and r.get(k)]
            near = sum(off) / len(off) if off else base
            r["mbps_off"] = near
            r["overhead"] = f"{r['mbps_on'] / near:.2f}x" if near else "n/a"
        print(" | ".join(f"{r.get(c):.2f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols))
    for r in rows:
        for name, why in list((r.get("refused") or {}).items())[:10]:
            print(f"{r['backend']}: refused {name}: {why}")
    if args.overhead_rounds > 0:
        table = []
        for b in backends:
            table += overhead_rounds(b, args.regex, args.seconds, args.overhead_rounds,
                                     os.environ.get("IPFT2") if b != "tracepoint" else None)
        print()
        print("unmarked overhead, interleaved rounds (throughput with the tracer / without, on either side)")
        print("tool | rounds | ratios | median | BPF ns per run (median)")
        print("--- | --- | --- | --- | ---")
        for row in table:
            print(" | ".join(str(row[c]) for c in ("tool", "rounds", "ratios", "median", "ns_per_run")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
