"""The program images shipped with ipft-web: `bpf/prebuilt/<arch>[-fields].json.gz`.

The compiled program is the same for every kernel (its offsets are map contents, see
program.py), so it can be compiled once, when a version is made, rather than on every machine:
a machine then needs neither BCC's compiler nor a kernel header tree to trace, and its first
start skips a compile of seconds (minutes in slow VMs). An image is used only when its key is
the key of what the running code would compile (bpfcache.key: source, flags, architecture,
image format, ipft-web version), so an edited bpf/ipft.bpf.c is compiled as before until the
images are made again:

    sudo python3 -m ipft_web.prebuilt        (BCC and any kernel header tree needed)

The files are part of the installed package (as trusted as its code) and parsed as strictly as
a cached image (bpfobject.Image.from_json).
"""
from __future__ import annotations

import json
import os
import sys
import zlib

from . import logs, resources

log = logs.get_logger(__name__)

MAX_FILE = 16 << 20   # decompressed


def file(with_fields: bool, machine: str | None = None, root: os.PathLike | str | None = None) -> str:
    """The image's file name (a string: the way to tracing does not import pathlib)."""
    machine = machine or os.uname().machine
    return os.path.join(root or os.path.join(resources.where("bpf"), "prebuilt"),
                        f"{machine}{'-fields' if with_fields else ''}.json.gz")


def path(with_fields: bool, machine: str | None = None, root: os.PathLike | str | None = None):
    """file() as a pathlib.Path."""
    from pathlib import Path
    return Path(file(with_fields, machine, root))


def load(digest: str, with_fields: bool, root: os.PathLike | str | None = None):
    """The shipped image with key `digest`, or None (none for this architecture, or another key,
    or IPFT_PREBUILT=off: then BCC compiles as if none was shipped)."""
    from .bpfobject import Image
    if os.environ.get("IPFT_PREBUILT", "").lower() == "off":
        return None
    where = file(with_fields, root=root)
    try:
        with open(where, "rb") as f:
            packed = f.read(MAX_FILE + 1)
        # zlib, not gzip (one module less to import at every start): the gzip format, 16 + MAX_WBITS
        unpack = zlib.decompressobj(16 + zlib.MAX_WBITS)
        raw = unpack.decompress(packed, MAX_FILE + 1)
        if len(raw) <= MAX_FILE and not unpack.eof:
            raise EOFError("compressed data ends early")
    except FileNotFoundError:
        return None
    except (OSError, EOFError, zlib.error) as exc:
        log.warning("ignoring the shipped program %s: %s", where, exc)
        return None
    try:
        if len(raw) > MAX_FILE:
            raise ValueError("too large")
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("key") != digest:
            log.debug("shipped program %s is of other code (key %s)", where, str(doc.get("key"))[:12]
                      if isinstance(doc, dict) else "?")
            return None
        return Image.from_json(doc)
    except (ValueError, TypeError, AttributeError) as exc:
        log.warning("ignoring the shipped program %s: %s", where, exc)
        return None


def write(root: os.PathLike | str | None = None) -> list:
    """Compile both variants with BCC and write their images (gzip without a timestamp, so the
    same compile gives the same bytes)."""
    import gzip

    from . import bpfcache, program
    out = []
    for with_fields in (False, True):
        spec = program.build_spec(with_fields)
        image, _note = program.compile_image(spec)
        digest = bpfcache.key(spec.text, spec.cflags)
        doc = dict(image.to_json(), key=digest)
        target = path(with_fields, root=root)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        with open(target, "wb") as f:
            f.write(gzip.compress(data, 9, mtime=0))
        out.append(target)
    return out


def main(argv=None) -> int:
    logs.configure(logs.INFO, "ipft prebuilt: %(message)s")
    # by default where load() looks: the checkout's bpf/prebuilt/, or the installed package's
    for p in write(argv[0] if argv else None):
        print(f"wrote {p} ({p.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
