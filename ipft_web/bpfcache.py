"""Compiled program images kept on disk, so a later `ipft` on the same kernel does not compile.

An image is keyed by everything that goes into the compile: the source text and flags (which hold
this kernel's struct offsets), the header tree, the kernel build, BCC's version and ours. A hit
skips BCC entirely (tens of seconds under emulation, a few on real hardware).

These files are BPF instructions that root will load into the kernel, so they are trusted only
when nobody else could have written them: the directory and the file must belong to the user
running ipft (root) and be writable by nobody else. Anything else, or anything that does not
parse exactly, is ignored and the program compiled as if there were no cache.

IPFT_CACHE_DIR chooses the directory (default /var/cache/ipft-web/programs); IPFT_CACHE_DIR=off turns
the cache off.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import tempfile
from pathlib import Path

from . import __version__
from .bpfobject import FORMAT, Image

log = logging.getLogger(__name__)

DEFAULT_DIR = "/var/cache/ipft-web/programs"
KEEP = 16                     # images kept; the oldest go first
MAX_FILE = 64 << 20


def directory() -> Path | None:
    value = os.environ.get("IPFT_CACHE_DIR", DEFAULT_DIR)
    if value.strip().lower() in ("", "off", "0", "no", "none"):
        return None
    return Path(value)


def bcc_version() -> str | None:
    """BCC's version, read from its package without importing it (the import loads libbcc, LLVM
    and all: a second or more under emulation, which a cache hit should not pay). None without BCC."""
    import importlib.util
    import re

    try:
        spec = importlib.util.find_spec("bcc")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for where in spec.submodule_search_locations or ():
        try:
            m = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", Path(where, "version.py").read_text())
        except OSError:
            continue
        if m:
            return m.group(1)
    import bcc
    return getattr(bcc, "__version__", "unknown")


def key(text: str, cflags: list[str], headers: str | None) -> str:
    uname = os.uname()
    parts = [FORMAT, __version__, bcc_version() or "none", uname.release, uname.version,
             uname.machine, headers or "", text, list(cflags)]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _trusted(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _dir(create: bool) -> Path | None:
    where = directory()
    if where is None:
        return None
    try:
        if create:
            where.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(where)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or not _trusted(st):
        log.warning("not using the program cache %s: it must be a directory owned by uid %d and "
                    "writable by nobody else", where, os.geteuid())
        return None
    return where


def load(digest: str) -> Image | None:
    """The image stored under `digest`, or None (absent, untrusted, or damaged)."""
    where = _dir(create=False)
    if where is None:
        return None
    path = where / f"{digest}.json"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _trusted(st) or st.st_size > MAX_FILE:
            log.warning("ignoring cached program %s (owner, mode or size)", path)
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            doc = json.loads(f.read())
        if doc.get("key") != digest:
            raise ValueError("key mismatch")
        image = Image.from_json(doc)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        log.warning("ignoring cached program %s: %s", path, exc)
        return None
    finally:
        os.close(fd)
    try:
        os.utime(path)   # recently used: kept longest
    except OSError:
        pass
    return image


def save(digest: str, image: Image) -> Path | None:
    """Store the image (atomically); None when there is no usable cache directory."""
    where = _dir(create=True)
    if where is None:
        return None
    doc = dict(image.to_json(), key=digest)
    try:
        fd, tmp = tempfile.mkstemp(dir=where, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        path = where / f"{digest}.json"
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("could not store the compiled program in %s: %s", where, exc)
        return None
    _prune(where)
    return path


def _prune(where: Path) -> None:
    try:
        files = sorted(where.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return
    for old in files[KEEP:]:
        try:
            old.unlink()
        except OSError:
            pass


def clear() -> int:
    """Remove every stored image; returns how many."""
    where = _dir(create=False)
    if where is None:
        return 0
    n = 0
    for path in where.glob("*.json"):
        try:
            path.unlink()
            n += 1
        except OSError:
            pass
    return n
