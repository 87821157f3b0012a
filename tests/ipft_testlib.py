"""Helpers behind the fixtures of tests/conftest.py (importable by name from any test module:
`from ipft_testlib import ...`; `conftest` itself is ambiguous once subdirectories have their own).

  NetNS, NetnsFactory   named network namespaces with lo up, veth pairs, iptables, ping, TCP
  Ipft, IpftFactory     the `ipft` CLI as a subprocess, ready once it printed `tracing N functions`
  funcs, parse_journeys, summarize_journeys   journey helpers
"""
from __future__ import annotations

import ipaddress
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IN_GUEST = os.environ.get("IPFT_IN_GUEST") == "1"
IS_ROOT = os.geteuid() == 0
# Compiling the BPF program takes 30-130 s in an emulated guest, a few seconds on a host.
READY_TIMEOUT = float(os.environ.get("IPFT_READY_TIMEOUT", "300" if IN_GUEST else "120"))
# How long a test waits for a journey to show up once the traffic was sent.
JOURNEY_TIMEOUT = float(os.environ.get("IPFT_JOURNEY_TIMEOUT", "60" if IN_GUEST else "20"))
READY_RE = re.compile(r"tracing (\d+) functions \((\S+)\)")
SBIN_PATH = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"


def tool(name: str) -> str:
    """Absolute path of a system tool (also looks in the sbin directories)."""
    path = shutil.which(name, path=SBIN_PATH)
    if path is None:
        pytest.skip(f"{name} is not installed (scripts/setup.sh installs it)")
    return path


def run(argv, check=True, timeout=60, **kw) -> subprocess.CompletedProcess:
    """subprocess.run with captured text output; a failure shows the command's output."""
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} exited {proc.returncode}\n"
                             f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}")
    return proc


# -- network namespaces -------------------------------------------------------------------------

_counter = itertools.count(1)


class NetNS:
    """A named network namespace; commands given as argv lists run inside it."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self):
        return f"NetNS({self.name!r})"

    def argv(self, *argv) -> list[str]:
        return [tool("ip"), "netns", "exec", self.name, *map(str, argv)]

    def run(self, *argv, check=True, timeout=60, **kw) -> subprocess.CompletedProcess:
        return run(self.argv(*argv), check=check, timeout=timeout, **kw)

    def popen(self, *argv, **kw) -> subprocess.Popen:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("text", True)
        return subprocess.Popen(self.argv(*argv), **kw)

    def sysctl(self, key: str, value) -> None:
        self.run(tool("sysctl"), "-q", "-w", f"{key}={value}")

    def iptables(self, *args, v6=False) -> None:
        """One iptables (or ip6tables) command in this namespace; the tables go with the namespace."""
        self.run(tool("ip6tables" if v6 else "iptables"), "-w", *args)

    def addr(self, dev: str, cidr: str) -> None:
        self.run(tool("ip"), "addr", "add", cidr, "dev", dev, *(["nodad"] if ":" in cidr else []))

    def route(self, *args) -> None:
        self.run(tool("ip"), "route", "add", *args)

    def ping(self, dst: str, count=1, check=True, timeout=30) -> subprocess.CompletedProcess:
        """ping from inside the namespace: one packet a 0.2 s, waits at most 2 s for each reply."""
        six = ":" in dst
        return self.run(tool("ping"), *(["-6"] if six else ["-4"]), "-n", "-c", count, "-i", "0.2",
                        "-W", "2", dst, check=check, timeout=timeout)

    def tcp_connect(self, host: str, port: int, payload=b"hello", timeout=30) -> str:
        """Start a one-shot TCP listener on host:port in this namespace, connect to it, send
        `payload`; returns what the listener received (as text)."""
        server = self.popen(sys.executable, "-c", TCP_SERVER, host, port, timeout)
        try:
            line = server.stdout.readline()  # "listening" once bound
            if "listening" not in line:
                server.kill()
                raise AssertionError(f"TCP listener did not start: {line!r} {server.stderr.read()[-1000:]}")
            self.run(sys.executable, "-c", TCP_CLIENT, host, port, payload.decode(), timeout, timeout=timeout)
            out, err = server.communicate(timeout=timeout)
            if server.returncode != 0:
                raise AssertionError(f"TCP listener failed: {err[-1000:]}")
            return out.strip()
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()


TCP_SERVER = """\
import socket, sys
host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port))
s.listen(1)
s.settimeout(timeout)
print("listening", flush=True)
c, _ = s.accept()
c.settimeout(timeout)
data = c.recv(1024)
print(data.decode(errors="replace"), flush=True)
c.close()
s.close()
"""

TCP_CLIENT = """\
import socket, sys
host, port, payload, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
c = socket.create_connection((host, port), timeout=timeout)
c.sendall(payload.encode())
c.close()
"""


class NetnsFactory:
    def __init__(self):
        self.created: list[NetNS] = []

    def __call__(self, label: str = "ns", lo=True) -> NetNS:
        if not IS_ROOT:
            pytest.skip("network namespaces need root")
        tag = re.sub(r"[^A-Za-z0-9_-]", "", label)[:12] or "ns"
        ns = NetNS(f"ipftt-{os.getpid()}-{next(_counter)}-{tag}")
        run([tool("ip"), "netns", "add", ns.name])
        self.created.append(ns)
        if lo:
            ns.run(tool("ip"), "link", "set", "lo", "up")
        return ns

    def veth(self, a: NetNS, a_cidr: str | None, b: NetNS, b_cidr: str | None,
             a_if: str | None = None, b_if: str | None = None) -> tuple[str, str]:
        """A veth pair with one end in `a`, the other in `b`, both up, addressed if a cidr is given.
        Returns the two interface names."""
        n = next(_counter)
        a_if = a_if or f"v{n}a"
        b_if = b_if or f"v{n}b"
        ip = tool("ip")
        # made inside `a` so no interface ever appears in the caller's namespace
        a.run(ip, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b.name)
        for ns, ifname, cidr in ((a, a_if, a_cidr), (b, b_if, b_cidr)):
            if cidr:
                ipaddress.ip_interface(cidr)  # refuse a typo early
                ns.addr(ifname, cidr)
            ns.run(ip, "link", "set", ifname, "up")
        return a_if, b_if

    def cleanup(self) -> None:
        for ns in reversed(self.created):
            subprocess.run([tool("ip"), "netns", "del", ns.name], capture_output=True, timeout=60)
        self.created.clear()






# -- the ipft CLI -------------------------------------------------------------------------------

def ipft_argv() -> list[str]:
    exe = Path(sys.executable).parent / "ipft"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "ipft_web.cli"]


@dataclass
class IpftResult:
    returncode: int
    stdout: str
    stderr: str
    journeys: list = field(default_factory=list)

    def __str__(self):
        return f"ipft exited {self.returncode}\nstderr:\n{self.stderr[-3000:]}\nstdout:\n{self.stdout[-3000:]}"


class Ipft:
    """A running `ipft`: its stdout and stderr are read by two threads as lines arrive."""

    def __init__(self, args, netns: NetNS | None = None, env=None):
        self.args = [str(a) for a in args]
        argv = ipft_argv() + self.args
        if netns is not None:
            argv = netns.argv(*argv)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env,
                                     start_new_session=True)
        self.out_lines: list[str] = []
        self.err_lines: list[str] = []
        self.cond = threading.Condition()
        self.functions: int | None = None
        self.backend: str | None = None
        self.started = time.monotonic()
        self.ready_after: float | None = None
        self.result: IpftResult | None = None
        self.threads = [threading.Thread(target=self._read, args=(s, l), daemon=True)
                        for s, l in ((self.proc.stdout, self.out_lines), (self.proc.stderr, self.err_lines))]
        for t in self.threads:
            t.start()

    def _read(self, stream, lines):
        for line in stream:
            with self.cond:
                lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    @property
    def stdout(self) -> str:
        with self.cond:
            return "".join(self.out_lines)

    @property
    def stderr(self) -> str:
        with self.cond:
            return "".join(self.err_lines)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> "Ipft":
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.err_lines:
                    m = READY_RE.search(line)
                    if m:
                        self.functions, self.backend = int(m.group(1)), m.group(2)
                        self.ready_after = time.monotonic() - self.started
                        return self
                if self.proc.poll() is not None and not any(t.is_alive() for t in self.threads):
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(min(left, 1.0))
        res = self.stop(timeout=30) if self.proc.poll() is None else self._finish()
        raise AssertionError(f"ipft {' '.join(self.args)} did not start tracing "
                             f"(within {timeout:.0f} s)\n{res}")

    # journeys (with -o json)
    @property
    def journeys(self) -> list[dict]:
        return parse_journeys(self.stdout)

    def wait_for(self, pred, timeout: float = JOURNEY_TIMEOUT, what="a matching journey") -> dict:
        """The first journey (JSON line) for which pred(journey) is true, as soon as ipft prints it."""
        deadline = time.monotonic() + timeout
        while True:
            for j in self.journeys:
                if pred(j):
                    return j
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise AssertionError(f"no {what} within {timeout:.0f} s; journeys: "
                                     f"{summarize_journeys(self.journeys)}\nstderr: {self.stderr[-2000:]}")
            with self.cond:
                self.cond.wait(min(left, 0.5))

    def stop(self, timeout: float = 120) -> IpftResult:
        """SIGINT (what Ctrl-C sends), wait for the exit; returns everything it printed."""
        if self.result is not None:
            return self.result
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self._finish()

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)

    def _finish(self) -> IpftResult:
        self.proc.wait(timeout=60)
        for t in self.threads:
            t.join(timeout=10)
        out = self.stdout
        self.result = IpftResult(self.proc.returncode, out, self.stderr, parse_journeys(out))
        return self.result


def parse_journeys(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass  # a line still being written
    return out


def funcs(journey: dict) -> list[str]:
    return [h["func"] for h in journey.get("hits", [])]


def summarize_journeys(journeys, limit=20) -> str:
    lines = []
    for j in journeys[:limit]:
        t = j.get("tuple") or {}
        lines.append(f"\n  mark=0x{j.get('mark', 0):x} {t.get('proto')} {t.get('src')}>{t.get('dst')} "
                     f"end={j.get('end')} drop={j.get('drop_reason')} funcs={funcs(j)[:40]}")
    if len(journeys) > limit:
        lines.append(f"\n  ... {len(journeys) - limit} more")
    return "".join(lines) or "none"


class IpftFactory:
    def __init__(self):
        self.handles: list[Ipft] = []

    def __call__(self, *args, netns: NetNS | None = None, ready_timeout: float = READY_TIMEOUT,
                 env=None, wait=True) -> Ipft:
        if not IS_ROOT:
            pytest.skip("tracing needs root")
        h = Ipft(args, netns=netns, env=env)
        self.handles.append(h)
        return h.wait_ready(ready_timeout) if wait else h

    def cleanup(self) -> None:
        for h in self.handles:
            if h.result is None:
                h.stop(timeout=60)



