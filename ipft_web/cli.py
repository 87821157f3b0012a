"""`ipft`: follow marked packets through the kernel, in a terminal (ipftrace2's flags)."""
from __future__ import annotations

import argparse
import os
import sys
import time

from . import logs
from .config import BACKENDS, TraceConfig, compile_regex
from .errors import Cancelled, EnvError, UsageError
from .output import Aggregate, format_json, format_text

EPILOG = """\
examples:
  sudo ipft -l -r '^ip_'                      list traceable functions (name, module, skb position)
  sudo iptables -t raw -A OUTPUT -p icmp -d 127.0.0.2 -j MARK --set-mark 0xdeadbeef
  sudo ipft -m 0xdeadbeef                     trace every function that takes a struct sk_buff *
  sudo ipft -m 0xdeadbeef -r '^(ip|icmp)_'    only the functions matching a regex
  sudo ipft -m 0xdeadbeef -o json --duration 10 > journeys.jsonl
  sudo ipft -m 0xdeadbeef -o aggregate        how many packets took each distinct path
  sudo ipft -m 0xdeadbeef --field skb->len --field shinfo->gso_segs --field skb->dev->name
                                              show these fields of the skb at each function
  sudo ipft -m 0xdeadbeef -s gso              an installed field script (--scripts lists them)
  ping -c1 127.0.0.2                          ... then watch the packet's journey
  sudo ipft -m 0xdeadbeef --mark-rule tx,icmp,dst=127.0.0.2
                                              add the marking rule for the trace's duration

A packet is traced when (skb->mark & MASK) == (MARK & MASK), and followed until it is freed
even where the mark is cleared on the way. Ctrl-C (or --duration) prints what is still open,
detaches every probe and exits.
"""


def terminal_width() -> int:
    """What shutil.get_terminal_size() says ($COLUMNS, else stdout's terminal, else 80), without
    importing shutil: argparse's formatter imports it (and with it bz2, lzma, fnmatch) otherwise."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


class Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog, **kw):
        kw.setdefault("width", terminal_width() - 2)   # argparse's own margin
        super().__init__(prog, **kw)


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def build_parser() -> Parser:
    p = Parser(prog="ipft", description=__doc__, epilog=EPILOG, formatter_class=Formatter)
    p.add_argument("-m", "--mark", help="skb mark to trace (hex 0x... or decimal); required for tracing")
    p.add_argument("--mask", default="0xffffffff", help="only compare these bits of the mark (default 0xffffffff)")
    p.add_argument("-r", "--regex", help="trace only functions whose name matches this (Python) regex")
    p.add_argument("-l", "--list", action="store_true", help="list the functions that would be traced and exit")
    p.add_argument("-b", "--backend", default="auto", choices=BACKENDS, metavar="BACKEND",
                   help="auto (default), kprobe, tracepoint (kprobe-multi and fentry: see README)")
    p.add_argument("-o", "--output", default="text", choices=("text", "json", "aggregate"),
                   help="text (default), json (JSON Lines, one journey per line), aggregate")
    p.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this many seconds")
    p.add_argument("--idle-timeout", type=float, default=1.0, metavar="SECONDS",
                   help="emit a journey whose skb was not freed after this long without hits (default 1)")
    p.add_argument("--vmlinux", metavar="PATH", help="ELF with DWARF debug info, for kernels without BTF")
    p.add_argument("--field", action="append", metavar="PATH", dest="fields",
                   help="also record this field at each function, e.g. skb->len, skb->dev->name, "
                        "shinfo->gso_type, tcph->seq (repeatable, at most 8; docs/fields.md)")
    p.add_argument("-s", "--script", metavar="NAME|FILE",
                   help="a field script: the name of an installed one, or a .toml file")
    p.add_argument("--scripts", action="store_true", help="list the installed field scripts and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="say more: functions refused, headers used")
    p.add_argument("--doctor", action="store_true", help="check this machine (bcc, BTF, backends, headers) and exit")
    from .marks.cli import add_arguments as add_mark_rule_arguments
    add_mark_rule_arguments(p)
    return p


def list_functions(args) -> int:
    from .kernel.view import KernelView

    pattern = compile_regex(args.regex)
    kernel = KernelView.load(vmlinux=args.vmlinux)
    n = 0
    out = sys.stdout
    for f in kernel.skb_functions():
        if pattern is None or pattern.search(f.name):
            out.write(f"{f.name:<48} {f.module or 'vmlinux':<16} {f.pos}\n")
            n += 1
    t = 0
    for tp in kernel.tracepoints:
        if pattern is None or pattern.search(tp.label):
            out.write(f"{tp.label:<48} {'tracepoint':<16} {tp.arg + 1}\n")
            t += 1
    sys.stderr.write(f"{n} functions ({kernel.catalog_source}), {t} tracepoints\n")
    return 0


def list_scripts() -> int:
    from .fields import scripts
    for s in scripts.installed():
        sys.stdout.write(f"{s.name:<16} {s.description}\n{'':<16} {' '.join(s.fields)}\n")
    sys.stderr.write("installed in: " + ", ".join(str(d) for d in scripts.dirs()) + "\n")
    return 0


def trace(args) -> int:
    from .tracer import Tracer

    if args.mark is None:
        raise UsageError("-m/--mark is required for tracing (e.g. -m 0xdeadbeef); -l lists functions")
    if args.duration is not None and not 0 < args.duration <= 365 * 86400:
        raise UsageError("--duration must be a positive number of seconds")
    fields = list(args.fields or [])
    if args.script:
        from .fields import scripts
        fields = scripts.resolve_choice(args.script).fields + fields
    config = TraceConfig(mark=args.mark, mask=args.mask, regex=args.regex, backend=args.backend,
                         idle_timeout=args.idle_timeout, vmlinux=args.vmlinux, fields=fields)
    if config.mask == 0:
        sys.stderr.write("ipft: warning: --mask 0 compares no bit of the mark: every packet is traced\n")
    agg = Aggregate()
    out = sys.stdout

    stop = {"now": False, "tracing": False, "pipe_closed": False}

    def on_journey(j):
        if stop["pipe_closed"]:
            return
        try:
            if args.output == "json":
                out.write(format_json(j))
            elif args.output == "text":
                out.write(format_text(j))
            else:
                agg.add(j)
            out.flush()
        except BrokenPipeError:  # `ipft ... | head`: the reader is gone; stop tracing quietly
            stop["pipe_closed"] = stop["now"] = True
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())

    from .interrupt import Interrupt
    from .marks.cli import applied_rules

    tracer = Tracer(config, on_journey, store_view=False)
    rules = applied_rules(args, config.mark, config.mask)  # validated before anything is attached

    def on_signal(signum):
        stop["now"] = True
        tracer.cancel()   # still compiling or attaching: start() stops at its next step and undoes it

    # tracing: the loop below sees stop["now"]; before that, the interrupt also cuts a wait short
    interrupt = Interrupt(on_signal=on_signal, when=lambda: not stop["tracing"]).install()
    try:
        tracer.start()
        stop["tracing"] = True
        with rules:  # marking starts only once every probe is attached, and ends before detaching
            st = tracer.stats()
            if args.verbose:
                if tracer.header_note:
                    sys.stderr.write(f"{tracer.header_note}\n")
                how = {"cache": "loaded from the cache", "shipped": "shipped with ipft-web, loaded"}.get(
                    st["program"], "compiled (kept for the next run)")
                sys.stderr.write(f"BPF program {how} in {st['timings'].get('compile', 0):.2f} s\n")
                for name, why in st["failed_funcs"].items():
                    sys.stderr.write(f"refused: {name}: {why}\n")
            if st["backend"] == "tracepoint" and args.backend == "auto" and "kprobe" not in tracer.kernel.backends():
                sys.stderr.write(f"ipft: kprobes do not work on this kernel ({tracer.kernel.why_not('kprobe')}): "
                                 "tracing the skb tracepoints only\n")
            failed = f", {st['failed']} refused{'' if args.verbose else ' (-v lists them)'}" if st["failed"] else ""
            sys.stderr.write(f"tracing {st['attached']} functions ({st['backend']}){failed}\n")
            sys.stderr.flush()
            # the first run of a boot stores the kernel view for the next ones: in a thread, now
            # that tracing is announced (sorting and writing every symbol holds the GIL for long)
            tracer.kernel.store_soon()
            deadline = time.monotonic() + args.duration if args.duration else None
            while not stop["now"] and (deadline is None or time.monotonic() < deadline):
                tracer.poll(100)
            tracer.poll(0)
    finally:
        interrupt.caught()
        tracer.stop()
    if args.output == "aggregate":
        out.write(agg.format_text())
    st = tracer.stats()
    summary = f"{st['journeys']} journeys, {st['events']} events, {st['lost']} lost"
    if st["errors"]:
        summary += f", {st['errors']} undecodable"
    if st["lost"]:
        summary += (" (ring buffer full: the consumer fell behind; narrow -r, mark fewer packets, "
                    "or limit the mark rule's rate=)")
    sys.stderr.write(summary + "\n")
    if args.verbose:
        sys.stderr.write("seconds: " + ", ".join(f"{k} {v}" for k, v in st["timings"].items()) + "\n")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(logs.INFO if args.verbose else logs.WARNING, "ipft: %(message)s")
    try:
        if args.doctor:
            from .doctor import main as doctor_main
            return doctor_main([], vmlinux=args.vmlinux)
        if args.scripts:
            return list_scripts()
        return list_functions(args) if args.list else trace(args)
    except (UsageError, EnvError) as exc:
        if isinstance(exc, Cancelled):   # a signal during the start
            sys.stderr.write("ipft: interrupted\n")
            return 130
        sys.stderr.write(f"ipft: error: {exc}\n")
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        sys.stderr.write("ipft: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
