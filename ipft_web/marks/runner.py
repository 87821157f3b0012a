"""Run iptables/ip6tables/nft as argument lists (never a shell), optionally inside a named netns."""
from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import subprocess

from ..errors import EnvError

SBIN = "/usr/local/sbin:/usr/sbin:/sbin"
TIMEOUT = 15
LOCK_PATHS = ("/run/lock/ipft-web-marks.lock", "/tmp/ipft-web-marks.lock")


def search_path() -> str:
    return f"{os.environ.get('PATH', '/usr/bin:/bin')}:{SBIN}"


def which(name: str) -> str | None:
    return shutil.which(name, path=search_path())


def in_netns(netns: str | None, argv) -> list[str]:
    """argv as run inside network namespace `netns` (None: this namespace)."""
    return (["ip", "netns", "exec", netns] if netns else []) + list(argv)


def text(argv) -> str:
    """The exact copyable command line for an argument list."""
    return shlex.join(argv)


def run(argv, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=search_path(), LC_ALL="C")
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL, check=False)
    except FileNotFoundError:
        raise EnvError(f"{argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise EnvError(f"{text(argv)} did not finish within {timeout} seconds") from None


def first_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
    # iptables prints the offending line, then the explanation; nft the other way round
    return (lines[0] if lines else f"exit status {proc.returncode}")[:300]


def check(argv, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    proc = run(argv, timeout)
    if proc.returncode != 0:
        raise EnvError(f"`{text(argv)}` failed: {first_line(proc)}")
    return proc


def require_root() -> None:
    if os.geteuid() != 0:
        raise EnvError("marking rules need root (CAP_NET_ADMIN): run it with sudo")


@contextlib.contextmanager
def nft_lock():
    """Serialise changes to `table inet ipft_web` between ipft processes (create/delete when empty)."""
    fd = None
    for path in LOCK_PATHS:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            break
        except OSError:
            continue
    if fd is None:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
