"""Files ipft keeps between runs (compiled programs, the kernel view of this boot), and when to trust them.

root loads what these files say into the kernel, so a file counts only when nobody else could have
written it: the directory and the file belong to the user running ipft and are writable by nobody
else, the file is not a symlink, and it parses as exactly one JSON object. Anything else is ignored
(with a warning) and the work done again, as if there were no cache.

IPFT_CACHE_DIR chooses the directory (default /var/cache/ipft-web/programs; the kernel views go in
its kernel/ subdirectory); IPFT_CACHE_DIR=off turns every cache off.
"""
from __future__ import annotations

import binascii
import json
import os
import re
import stat

from .logs import get_logger

try:   # the interpreter's own SHA-256 (3.10-3.11: _sha256, 3.12: _sha2): hashlib loads OpenSSL for it,
    from _sha256 import sha256   # a tenth of a second of a start under emulation
except ImportError:
    try:
        from _sha2 import sha256
    except ImportError:
        from hashlib import sha256

log = get_logger(__name__)

DEFAULT_DIR = "/var/cache/ipft-web/programs"
OFF = ("", "off", "0", "no", "none")


# Paths are strings on the way to tracing (pathlib imports fnmatch, ntpath, urllib.parse, ipaddress);
# what writes returns a pathlib.Path.
def directory() -> str | None:
    value = os.environ.get("IPFT_CACHE_DIR", DEFAULT_DIR)
    if value.strip().lower() in OFF:
        return None
    return value


def trusted(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def cache_dir(sub: str | None = None, create: bool = False, base: os.PathLike | str | None = None) -> str | None:
    """The cache directory (or its subdirectory `sub`) if it can be trusted; None otherwise.
    `base`: the cache directory chosen earlier (default: IPFT_CACHE_DIR now)."""
    where = os.fspath(base) if base else directory()
    if where is None:
        return None
    dirs = [where] + ([os.path.join(where, sub)] if sub else [])
    for d in dirs:
        try:
            if create:
                os.makedirs(d, mode=0o700, exist_ok=True)
            st = os.lstat(d)
        except OSError:
            return None
        if not stat.S_ISDIR(st.st_mode) or not trusted(st):
            log.warning("not using the cache %s: it must be a directory owned by uid %d and "
                        "writable by nobody else", d, os.geteuid())
            return None
    return dirs[-1]


_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def b64encode(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode()


def b64decode(text: str) -> bytes:
    """base64.b64decode(text, validate=True) (without importing base64): ValueError unless `text`
    is nothing but the base64 alphabet with its padding."""
    if not isinstance(text, str) or _BASE64.fullmatch(text) is None:
        raise ValueError("not base64")
    return binascii.a2b_base64(text)


def read_json(path: os.PathLike | str, max_size: int, what: str) -> dict | None:
    """The JSON object in `path`, or None when absent or untrusted. ValueError when it is damaged."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not trusted(st) or st.st_size > max_size:
            log.warning("ignoring %s %s (owner, mode or size)", what, path)
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            doc = json.loads(f.read())
    finally:
        os.close(fd)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    try:
        os.utime(path)   # recently used: kept longest
    except OSError:
        pass
    return doc


def write_json(where: os.PathLike | str, name: str, doc: dict, what: str):
    """Store `doc` as where/name atomically: its pathlib.Path, or None (and a warning) when that fails."""
    from pathlib import Path
    try:
        import tempfile   # only when writing: tempfile imports shutil, random (and hashlib)
        fd, tmp = tempfile.mkstemp(dir=where, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, separators=(",", ":"))
            path = Path(where, name)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except (OSError, TypeError, ValueError) as exc:
        log.warning("could not store the %s in %s: %s", what, where, exc)
        return None
    return path


def prune(where: os.PathLike | str, keep: int, pattern: str = "*.json") -> None:
    """Keep the `keep` most recently used files matching `pattern`."""
    from pathlib import Path
    try:
        files = sorted(Path(where).glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return
    for old in files[keep:]:
        try:
            old.unlink()
        except OSError:
            pass


def clear(where: os.PathLike | str | None, pattern: str = "*.json") -> int:
    if where is None:
        return 0
    from pathlib import Path
    n = 0
    for path in Path(where).glob(pattern):
        try:
            path.unlink()
            n += 1
        except OSError:
            pass
    return n
