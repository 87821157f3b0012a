"""`ipft-web`: the dashboard server (Flask-SocketIO) on the traced host."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from ..errors import EnvError, UsageError
from ..interrupt import Interrupt
from ..logs import get_logger
from . import auth as auth_mod
from . import runner, tracers
from .hostcheck import is_loopback
from .store import default_data_dir

PROG = "ipft-web"

EPILOG = """\
examples:
  sudo ipft-web                               dashboard on http://127.0.0.1:8080/?token=... (printed)
  sudo ipft-web --port 9000                   another port
  ssh -L 8080:127.0.0.1:8080 HOST             from your desk: tunnel to a server's dashboard
  sudo ipft-web --host 192.0.2.10 --allow-host tracer.example.net
                                              listen beyond loopback (read docs/security.md first)
  sudo IPFT_WEB_TOKEN=$(cat /etc/ipft-web/token) ipft-web
                                              a token of yours instead of a fresh one
  sudo ipft-web --cleanup                     remove marking rules a killed run left behind, and exit

In the page: set the mark (or let "Mark packets" add the iptables/nft rule for you), press Start,
click a packet to see its journey. Ctrl-C, SIGTERM or SIGHUP stop the trace, detach every probe and
remove the marking rules it added.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Follow marked packets through the kernel, in a browser.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8080, help="TCP port (default 8080)")
    p.add_argument("--token", help="access token (default: $IPFT_WEB_TOKEN, else a fresh random one)")
    p.add_argument("--async-mode", choices=("eventlet", "threading"), default="eventlet",
                   help="server concurrency model (default eventlet)")
    p.add_argument("--data-dir", default=None,
                   help=f"where sessions are kept (SQLite; default {default_data_dir()})")
    p.add_argument("--max-journeys", type=_bounded(1, 10_000_000), default=20000, metavar="N",
                   help="journeys kept per session; the rest are counted, not kept (default 20000)")
    p.add_argument("--keep-sessions", type=_bounded(1, 100000), default=50, metavar="N",
                   help="finished sessions kept on disk (default 50)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="another Host name browsers may use (when listening beyond loopback)")
    p.add_argument("--cleanup", action="store_true",
                   help="remove marking rules (tagged ipft-web:*) left behind by a killed run, and exit")
    # test-only: replay a recording instead of tracing (also IPFT_WEB_TRACER=replay:PATH)
    p.add_argument("--tracer", default=None, help=argparse.SUPPRESS)
    return p


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 1..65535, got {text[:20]!r}")
    return int(text)


def _bounded(lo: int, hi: int):
    def parse(text: str) -> int:
        if not text.isdigit() or not lo <= int(text) <= hi:
            raise argparse.ArgumentTypeError(f"must be an integer {lo}..{hi}, got {text[:20]!r}")
        return int(text)
    return parse


def url_for(host: str, port: int, token: str) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/?token={token}"


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def _check_privileges(choice) -> None:
    if choice.is_replay:
        return
    if os.geteuid() != 0:
        raise EnvError("tracing needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN): run it with sudo")
    try:
        from ..kernel import features
    except ImportError:
        return
    features.require_bpf()


def _host_warning(host: str) -> str | None:
    if is_loopback(host.strip("[]").lower()):
        return None
    return (f"{PROG}: warning: listening on {host}, beyond loopback: anyone who can reach this port and "
            "has the token can trace this host, and the traffic is not encrypted")


def _marks_cleanup() -> None:
    """Remove the mark rules this process applied (the marks part also does it at exit)."""
    try:
        from ..marks.registry import REGISTRY
    except ImportError:
        return
    try:
        REGISTRY.remove_all()
    except Exception as exc:
        print(f"{PROG}: warning: removing mark rules failed: {exc}", file=sys.stderr)


def _leftover_banner() -> None:
    try:
        from ..marks.cleanup import leftover_warning
        line = leftover_warning()
    except Exception:  # iptables missing or unreadable: the marks panel says more
        return
    if line:
        print(f"{PROG}: warning: {line} (ipft-web --cleanup removes them)", file=sys.stderr)


def _quietly(fn):
    def run():
        try:
            fn()
        except Exception as exc:  # the first Start reports it properly
            logging.getLogger(__name__).info("precompile failed: %s", exc)
    return run


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    if args.cleanup:
        if os.geteuid() != 0:
            return _fail("--cleanup changes iptables/nft rules: run it with sudo")
        from ..marks.cleanup import run_cleanup
        return run_cleanup()
    try:
        choice = tracers.from_env(args.tracer)
        _check_privileges(choice)
        token = args.token or os.environ.get("IPFT_WEB_TOKEN") or auth_mod.new_token()
        try:
            auth_mod.check_token_value(token)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if args.async_mode == "eventlet":
            try:
                import eventlet  # noqa: F401
            except ImportError:
                raise EnvError("eventlet is not installed: pip install eventlet, or use --async-mode threading") from None
        from .app import Settings, create_app
        settings = Settings(token=token, data_dir=args.data_dir or default_data_dir(), host=args.host,
                            port=args.port, async_mode=args.async_mode, tracer=args.tracer,
                            allow_hosts=args.allow_host, max_journeys=args.max_journeys,
                            keep_sessions=args.keep_sessions)
        app, socketio = create_app(settings)
    except (UsageError, EnvError) as exc:
        return _fail(str(exc))

    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(levelname)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)   # request logs would show the token
    ctx = app.extensions["ipft_web"]
    try:
        sock = runner.bind(args.host, args.port, args.async_mode)
    except OSError as exc:
        ctx.store.close()
        return _fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
    warning = _host_warning(args.host)
    if warning:
        print(warning, file=sys.stderr)
    if choice.is_replay:
        print(f"{PROG}: TEST MODE: replaying {choice.path} instead of tracing", file=sys.stderr)
    else:
        _leftover_banner()
        # Compile the BPF program now, so the first Start only attaches (BCC compiles take
        # seconds here, minutes in slow VMs); off the event loop like every blocking call.
        from . import offhub
        from ..tracer import precompile
        offhub.run_off_hub(_quietly(precompile))
    print(f"{PROG}: open {url_for(args.host, args.port, token)}", flush=True)

    # SIGTERM (kill, systemd) and SIGHUP (the terminal running it closed) end it like Ctrl-C: the
    # session is stopped, probes detached and marking rules removed in the finally below. The
    # interrupt is raised again until it gets here (see interrupt.py), and not during the clean-up.
    interrupt = Interrupt().install()
    try:
        runner.serve(app, sock, args.host, args.port, args.async_mode)
    except KeyboardInterrupt:
        pass
    finally:
        interrupt.caught()
        ctx.sessions.shutdown()
        _marks_cleanup()
        ctx.store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
