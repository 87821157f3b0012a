"""Compiled program images kept on disk, so a later `ipft` on the same kernel does not compile.

An image is keyed by everything that goes into the compile: the source text and flags (which hold
this kernel's struct offsets), the header tree, the kernel build, BCC's version and ours. A hit
skips BCC entirely (tens of seconds under emulation, a few on real hardware).

These files are BPF instructions that root will load into the kernel: ipft_web/cachefiles.py says
when one is trusted (owner, mode, no symlink). Anything that does not parse exactly is ignored and
the program compiled as if there were no cache. IPFT_CACHE_DIR chooses the directory (default
/var/cache/ipft-web/programs); IPFT_CACHE_DIR=off turns the cache off.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from . import __version__, cachefiles
from .bpfobject import FORMAT, Image

log = logging.getLogger(__name__)

KEEP = 16                     # images kept; the oldest go first
MAX_FILE = 64 << 20


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


def key(text: str, cflags: list[str]) -> str:
    """Not the kernel, nor the header tree: nothing of the kernel is compiled in (its offsets are
    map contents), and the instructions BCC makes are the same with any header tree (6.1's and
    6.12's were checked byte for byte); only the architecture (registers) and the compiler count."""
    parts = [FORMAT, __version__, bcc_version() or "none", os.uname().machine, text, list(cflags)]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def load(digest: str) -> Image | None:
    """The image stored under `digest`, or None (absent, untrusted, or damaged)."""
    where = cachefiles.cache_dir()
    if where is None:
        return None
    path = where / f"{digest}.json"
    try:
        doc = cachefiles.read_json(path, MAX_FILE, "cached program")
        if doc is None:
            return None
        if doc.get("key") != digest:
            raise ValueError("key mismatch")
        return Image.from_json(doc)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        log.warning("ignoring cached program %s: %s", path, exc)
        return None


def save(digest: str, image: Image) -> Path | None:
    """Store the image (atomically); None when there is no usable cache directory."""
    where = cachefiles.cache_dir(create=True)
    if where is None:
        return None
    path = cachefiles.write_json(where, f"{digest}.json", dict(image.to_json(), key=digest), "compiled program")
    if path is not None:
        cachefiles.prune(where, KEEP)
    return path


def clear() -> int:
    """Remove every stored image; returns how many."""
    return cachefiles.clear(cachefiles.cache_dir())
