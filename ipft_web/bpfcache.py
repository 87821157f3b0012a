"""Compiled program images kept on disk, so a later `ipft` does not compile, on any kernel.

An image is keyed by what is compiled: the source text and flags (nothing of the kernel: its
struct offsets are map contents), the architecture, the image format and our version (see key()).
A hit skips BCC entirely (tens of seconds under emulation, a few on real hardware).

These files are BPF instructions that root will load into the kernel: ipft_web/cachefiles.py says
when one is trusted (owner, mode, no symlink). Anything that does not parse exactly is ignored and
the program compiled as if there were no cache. IPFT_CACHE_DIR chooses the directory (default
/var/cache/ipft-web/programs); IPFT_CACHE_DIR=off turns the cache off.
"""
from __future__ import annotations

import json
import os

from . import __version__, cachefiles
from .bpfobject import FORMAT, Image
from .logs import get_logger

log = get_logger(__name__)

KEEP = 16                     # images kept; the oldest go first
MAX_FILE = 64 << 20


def key(text: str, cflags: list[str]) -> str:
    """What is compiled and for which architecture (registers). Not the kernel, nor the header
    tree: nothing of the kernel is compiled in (its offsets are map contents), and BCC makes the
    same instructions with any header tree (6.1's and 6.12's were checked byte for byte). Nor
    BCC's version: any correct compile of this text serves (so the images shipped with ipft-web,
    ipft_web/prebuilt.py, do wherever BCC is another version)."""
    parts = [FORMAT, __version__, os.uname().machine, text, list(cflags)]
    return cachefiles.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def load(digest: str) -> Image | None:
    """The image stored under `digest`, or None (absent, untrusted, or damaged)."""
    where = cachefiles.cache_dir()
    if where is None:
        return None
    path = os.path.join(where, f"{digest}.json")
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


def save(digest: str, image: Image):
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
