"""Find a kernel header tree for BCC (BCC_KERNEL_SOURCE).

BCC needs a header tree to compile, but the struct offsets the program uses come from BTF,
so any kernel's headers will do. Preference: the running kernel's /lib/modules/<release>/build;
else the installed tree closest in version. A Debian/Ubuntu tree comes in two halves (the
flavour tree, e.g. linux-headers-6.1.0-56-amd64, includes the -common one); BCC takes one
directory, so the halves are merged into a tree of symlinks under a cache directory
(directories present in both are merged recursively; on clashes the flavour tree wins).
Nothing under /lib/modules or /usr/src is changed.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from ..errors import EnvError

SRC_DIRS = ("/usr/src", "/usr/src/kernels")
CACHE_DIRS = ("/var/cache/ipft-web", "~/.cache/ipft-web")
STAMP = ".ipft-web-merged.json"
FORMAT = 1


def install_hint() -> str:
    """The install line for this machine's distribution and architecture (any version will do)."""
    try:
        from ..doctor import Host, headers_install_line
        return headers_install_line(Host()) + " (any kernel version will do)"
    except Exception:  # the hint must never hide the error it belongs to
        return "install your distribution's kernel headers package (any kernel version will do)"


def _version_key(release: str) -> tuple[int, ...]:
    nums = re.findall(r"\d+", release)
    return tuple(int(n) for n in nums[:4]) or (0,)


def _has_generated(path: Path) -> bool:
    return (path / "include" / "generated").is_dir() or (path / ".config").is_file()


def source_of(build: Path) -> Path | None:
    """The second half of a split tree: the -common tree a flavour tree's Makefile includes."""
    try:
        first = (build / "Makefile").read_text(errors="replace")[:4096]
    except OSError:
        first = ""
    m = re.search(r"^\s*include\s+(\S+)/Makefile\s*$", first, re.M)
    if m:
        cand = Path(m.group(1))
        if not cand.is_absolute():
            cand = build / cand
        if cand.is_dir() and cand.resolve() != build.resolve():
            return cand
    m = re.search(r"^MAKEARGS\s*:=.*-C\s+(\S+)", first, re.M)  # Ubuntu-style wrapper
    if m:
        cand = (build / m.group(1)) if not m.group(1).startswith("/") else Path(m.group(1))
        if cand.is_dir() and cand.resolve() != build.resolve():
            return cand
    return None


def installed_trees(src_dirs=SRC_DIRS) -> list[tuple[str, Path, Path | None]]:
    """(release, build tree, source tree or None) for every complete tree under /usr/src."""
    out = []
    for d in src_dirs:
        try:
            entries = sorted(Path(d).iterdir())
        except OSError:
            continue
        for p in entries:
            if not p.is_dir() or re.search(r"-common(-\w+)?$", p.name) or not (p / "Makefile").is_file():
                continue
            if not _has_generated(p):
                continue  # a source half only, or a source tree that was never configured
            release = p.name.removeprefix("linux-headers-")
            out.append((release, p, source_of(p)))
    return out


def _modules_tree(release: str, modules_dir: str) -> tuple[Path, Path | None] | None:
    if "/" in release or release in ("", ".", ".."):
        return None
    build = Path(modules_dir) / release / "build"
    if not build.is_dir():
        return None
    source = Path(modules_dir) / release / "source"
    src = source if source.is_dir() and source.resolve() != build.resolve() else source_of(build)
    return build, src


def _cache_root(cache_dirs=CACHE_DIRS) -> Path:
    for d in cache_dirs:
        p = Path(os.path.expanduser(d)) / "kernel-headers"
        try:
            p.mkdir(parents=True, exist_ok=True)
            if os.access(p, os.W_OK):
                return p
        except OSError:
            continue
    raise EnvError("no writable cache directory for the merged kernel headers "
                   f"(tried {', '.join(cache_dirs)})")


def _stamp_for(sources: list[Path]) -> dict:
    return {"format": FORMAT,
            "sources": [str(s) for s in sources],
            "mtimes": [os.stat(s).st_mtime_ns for s in sources]}


def _merge(dst: Path, sources: list[Path]) -> int:
    """Fill `dst` with symlinks to the union of `sources` (first wins); returns links made."""
    names: dict[str, list[Path]] = {}
    for src in sources:
        try:
            for entry in os.scandir(src):
                names.setdefault(entry.name, []).append(Path(entry.path))
        except OSError:
            continue
    made = 0
    for name, paths in names.items():
        dirs = [p for p in paths if p.is_dir()]
        if len(dirs) > 1 and paths[0].is_dir() and len({os.path.realpath(p) for p in dirs}) > 1:
            sub = dst / name
            sub.mkdir()
            made += _merge(sub, dirs)
        else:
            os.symlink(os.path.abspath(paths[0]), dst / name)
            made += 1
    return made


def merged_tree(build: Path, source: Path, release: str, cache_dirs=CACHE_DIRS) -> Path:
    """A symlink tree merging build (wins) and source, cached and rebuilt when stale."""
    root = _cache_root(cache_dirs)
    safe = re.sub(r"[^A-Za-z0-9._+-]", "_", release) or "unknown"
    target = root / safe
    stamp = _stamp_for([build, source])
    try:
        if json.loads((target / STAMP).read_text()) == stamp:
            return target
    except (OSError, ValueError):
        pass
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{safe}.", dir=root))
        os.chmod(tmp, 0o755)
    except OSError as exc:
        raise EnvError(f"cannot build the merged kernel header tree in {root}: {exc.strerror or exc}") from None
    try:
        _merge(tmp, [build, source])
        (tmp / STAMP).write_text(json.dumps(stamp))
        old = None
        if target.exists() or target.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{safe}.old.", dir=root))
            os.rename(target, old / "tree")
        os.rename(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        try:  # another process may have built it meanwhile
            if json.loads((target / STAMP).read_text()) == stamp:
                return target
        except (OSError, ValueError):
            pass
        raise EnvError(f"cannot build the merged kernel header tree in {root}: {exc.strerror or exc}") from None
    return target


def find_headers(release: str | None = None, *, modules_dir: str = "/lib/modules", src_dirs=SRC_DIRS,
                 cache_dirs=CACHE_DIRS, env: dict | None = None) -> tuple[Path | None, str | None]:
    """(directory for BCC_KERNEL_SOURCE or None to leave BCC's default, message to log or None).

    EnvError when there is no header tree at all."""
    release = release or os.uname().release
    env = os.environ if env is None else env
    preset = env.get("BCC_KERNEL_SOURCE")
    if preset:
        if Path(preset).is_dir():
            return Path(preset), f"using BCC_KERNEL_SOURCE={preset}"
        raise EnvError(f"BCC_KERNEL_SOURCE={preset} is not a directory")
    own = _modules_tree(release, modules_dir)
    if own is not None:
        # BCC reads /lib/modules/<release>/build (and .../source if there) by itself.
        return None, None
    ranked = ranked_trees(release, src_dirs)
    if not ranked:
        raise EnvError(f"no kernel headers found (none for {release} in {modules_dir}/{release}/build, "
                       f"none under {', '.join(src_dirs)}): {install_hint()}")
    return prepare(ranked[0], release, cache_dirs)


def ranked_trees(release: str, src_dirs=SRC_DIRS) -> list[tuple[str, Path, Path | None]]:
    """Installed trees, best first: nearest major.minor to `release`, then the newest.
    (A caller whose compile fails with one tree may try the next one.)"""
    want = _version_key(release) + (0, 0)

    def distance(tree):
        key = _version_key(tree[0]) + (0, 0)
        gap = abs((key[0] * 1000 + key[1]) - (want[0] * 1000 + want[1]))
        return gap, tuple(-k for k in key)

    return sorted(installed_trees(src_dirs), key=distance)


def prepare(tree: tuple[str, Path, Path | None], release: str | None = None,
            cache_dirs=CACHE_DIRS) -> tuple[Path, str]:
    """(directory for BCC_KERNEL_SOURCE, message) for one of ranked_trees()."""
    rel, build, source = tree
    release = release or os.uname().release
    path = build if source is None else merged_tree(build, source, rel, cache_dirs)
    return path, f"using headers of {rel} for kernel {release} ({path})"
