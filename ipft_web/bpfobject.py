"""The compiled program as data, and loading it with our own bpf() calls.

BCC is only the compiler here. What it produced is kept as an `Image`: each program's
instructions with the map references taken out (relocations: instruction index -> map name),
and the specification of every map. An image holds no file descriptor, so it can be written to
disk (ipft_web/bpfcache.py) and loaded again by a later process without compiling.

`BPFObject(image)` creates fresh maps, puts their fds into the instructions and loads a program
when a backend asks for it, with the program type and attach type that backend needs.
"""
from __future__ import annotations

import ctypes
import os
import struct
import threading

from .cachefiles import b64decode, b64encode
from .errors import EnvError
from .kernel import sysbpf
from .records import field, record

FORMAT = 1
MAX_MAPS = 64
MAX_PROGS = 512
MAX_INSNS = 1_000_000


@record(frozen=True)
class MapSpec:
    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0


@record
class ProgImage:
    insns: bytes                                   # map-fd immediates zeroed
    relocs: list = field(default_factory=list)     # [(instruction index, map name)]


@record
class Image:
    maps: dict                 # name -> MapSpec
    progs: dict                # name -> ProgImage
    license: str = "GPL"

    # -- from BCC ----------------------------------------------------------------------------
    @classmethod
    def from_bcc(cls, bpf) -> "Image":
        """Everything BCC compiled: maps by their fds in the module, programs by dump_func()."""
        lib = _libbcc()
        module = bpf.module
        maps, by_fd = {}, {}
        for i in range(lib.bpf_num_tables(module)):
            name = lib.bpf_table_name(module, i).decode()
            maps[name] = MapSpec(name, int(lib.bpf_table_type_id(module, i)),
                                 int(lib.bpf_table_key_size_id(module, i)),
                                 int(lib.bpf_table_leaf_size_id(module, i)),
                                 int(lib.bpf_table_max_entries_id(module, i)),
                                 int(lib.bpf_table_flags_id(module, i)))
            by_fd[int(lib.bpf_table_fd_id(module, i))] = name
        progs = {}
        for i in range(lib.bpf_num_functions(module)):
            raw = lib.bpf_function_name(module, i)
            name = raw.decode()
            progs[name] = unlink(bytes(bpf.dump_func(raw)), by_fd, name)
        license = (lib.bpf_module_license(module) or b"GPL").decode()
        return cls(maps, progs, license)

    # -- to and from JSON ----------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "license": self.license,
            "maps": [vars(m) for m in self.maps.values()],
            "progs": {name: {"insns": b64encode(p.insns), "relocs": p.relocs}
                      for name, p in self.progs.items()},
        }

    @classmethod
    def from_json(cls, doc) -> "Image":
        """An image from untrusted JSON; ValueError when anything is off."""
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError("not an image of this format")
        maps = {}
        raw_maps = doc.get("maps")
        if not isinstance(raw_maps, list) or len(raw_maps) > MAX_MAPS:
            raise ValueError("bad map list")
        for m in raw_maps:
            if not isinstance(m, dict) or set(m) != {"name", "type", "key_size", "value_size", "max_entries", "flags"}:
                raise ValueError("bad map entry")
            if not isinstance(m["name"], str) or not m["name"].isidentifier():
                raise ValueError("bad map name")
            if not all(type(m[k]) is int and 0 <= m[k] < 2**32 for k in m if k != "name"):
                raise ValueError("bad map numbers")
            maps[m["name"]] = MapSpec(**m)
        progs = {}
        raw_progs = doc.get("progs")
        if not isinstance(raw_progs, dict) or len(raw_progs) > MAX_PROGS:
            raise ValueError("bad program list")
        for name, p in raw_progs.items():
            if not isinstance(name, str) or not name.isidentifier() or not isinstance(p, dict):
                raise ValueError("bad program entry")
            insns = b64decode(p.get("insns", ""))
            relocs = p.get("relocs")
            if not insns or len(insns) % 8 or len(insns) // 8 > MAX_INSNS or not isinstance(relocs, list):
                raise ValueError(f"bad program {name}")
            clean = []
            for r in relocs:
                if (not isinstance(r, list) or len(r) != 2 or type(r[0]) is not int or r[1] not in maps
                        or not 0 <= r[0] < len(insns) // 8 - 1):
                    raise ValueError(f"bad relocation in {name}")
                code, regs = insns[8 * r[0]], insns[8 * r[0] + 1]
                if code != sysbpf.BPF_LD_IMM64 or regs >> 4 != sysbpf.BPF_PSEUDO_MAP_FD:
                    raise ValueError(f"relocation in {name} is not a map load")
                clean.append((r[0], r[1]))
            progs[name] = ProgImage(insns, clean)
        license = doc.get("license")
        if not isinstance(license, str) or not license.isprintable() or len(license) > 64:
            raise ValueError("bad license")
        return cls(maps, progs, license)


_LIB = None


def _libbcc():
    """libbcc's module accessors with their C signatures (our own handle: BCC's is left as it is;
    a call without argtypes would cut the module pointer to 32 bits)."""
    global _LIB
    if _LIB is None:
        from bcc import lib as bcc_lib

        lib = ctypes.CDLL(bcc_lib._name)
        vp, size = ctypes.c_void_p, ctypes.c_size_t
        for name, restype, argtypes in (
                ("bpf_num_tables", size, [vp]),
                ("bpf_table_name", ctypes.c_char_p, [vp, size]),
                ("bpf_table_fd_id", ctypes.c_int, [vp, size]),
                ("bpf_table_type_id", ctypes.c_int, [vp, size]),
                ("bpf_table_key_size_id", size, [vp, size]),
                ("bpf_table_leaf_size_id", size, [vp, size]),
                ("bpf_table_max_entries_id", size, [vp, size]),
                ("bpf_table_flags_id", ctypes.c_int, [vp, size]),
                ("bpf_num_functions", size, [vp]),
                ("bpf_function_name", ctypes.c_char_p, [vp, size]),
                ("bpf_module_license", ctypes.c_char_p, [vp])):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
        _LIB = lib
    return _LIB


def unlink(insns: bytes, by_fd: dict, name: str = "?") -> ProgImage:
    """Instructions with every map-fd immediate zeroed, and where they were."""
    out = bytearray(insns)
    relocs = []
    for i in range(0, len(out) - 8, 8):
        if out[i] == sysbpf.BPF_LD_IMM64 and out[i + 1] >> 4 == sysbpf.BPF_PSEUDO_MAP_FD:
            fd = struct.unpack_from("<i", out, i + 4)[0]
            if fd not in by_fd:
                raise EnvError(f"BPF program {name} refers to map fd {fd}, which BCC did not create")
            relocs.append((i // 8, by_fd[fd]))
            struct.pack_into("<i", out, i + 4, 0)
    return ProgImage(bytes(out), relocs)


def link(prog: ProgImage, fds: dict) -> bytes:
    """The instructions with each map's fd put back."""
    out = bytearray(prog.insns)
    for index, name in prog.relocs:
        struct.pack_into("<i", out, 8 * index + 4, fds[name])
    return bytes(out)


class BPFObject:
    """One image made live: its maps created now, its programs loaded on first use."""

    def __init__(self, image: Image, fields: bool = False):
        self.image = image
        self.fields = fields        # built with the field reader (for the verifier-refusal hint)
        self.map_fds: dict[str, int] = {}
        self._progs: dict[tuple, int] = {}
        self._progs_lock = threading.Lock()
        try:
            for spec in image.maps.values():
                self.map_fds[spec.name] = sysbpf.map_create(spec.type, spec.key_size, spec.value_size,
                                                            spec.max_entries, name=spec.name, flags=spec.flags)
        except sysbpf.BPFError as exc:
            self.close()
            raise EnvError(f"could not create the program's maps: {exc}") from None

    # -- maps ------------------------------------------------------------------------------------
    def map(self, name: str) -> "Map":
        return Map(self.image.maps[name], self.map_fds[name])

    # -- programs ----------------------------------------------------------------------------------
    def has_prog(self, name: str) -> bool:
        return name in self.image.progs

    def insns(self, name: str) -> bytes:
        """Ready-to-load instructions (for backends that load one program per target, like fentry)."""
        if name not in self.image.progs:
            raise EnvError(f"the compiled program has no entry {name}")
        return link(self.image.progs[name], self.map_fds)

    def prog_fd(self, name: str, prog_type: int, expected_attach_type: int = 0) -> int:
        """The program `name` loaded for `prog_type` (once per process and type)."""
        key = (name, prog_type, expected_attach_type)
        found = self._progs.get(key)
        if found is not None:
            return found
        try:
            fd = sysbpf.prog_load(prog_type, self.insns(name), expected_attach_type=expected_attach_type,
                                  license=self.image.license, name=name[:15], log_size=1 << 22)
        except sysbpf.BPFError as exc:
            raise EnvError(refusal(name, exc, self.fields)) from None
        # loaded outside the lock (the verifier may take a while; the tracepoint backend loads in
        # parallel); two threads loading the same one keep the first
        with self._progs_lock:
            found = self._progs.setdefault(key, fd)
        if found != fd:
            os.close(fd)
        return found

    def close(self) -> None:
        for fd in list(self._progs.values()) + list(self.map_fds.values()):
            try:
                os.close(fd)
            except OSError:
                pass
        self._progs.clear()
        self.map_fds.clear()


def refusal(name: str, exc: sysbpf.BPFError, fields: bool) -> str:
    """One line for a program the verifier refused."""
    import errno

    why = str(exc).splitlines()[0]
    hint = ""
    if exc.errno == errno.E2BIG or "too large" in (exc.log or "") or "too complex" in (exc.log or ""):
        hint = ("; this kernel's verifier finds the program too complex"
                + (" with the field reader: drop --field/-s, or use a newer kernel (6.12 accepts it)"
                   if fields else ""))
    return f"the kernel refused BPF program {name}: {why}{hint}"


class Map:
    """Byte-level access to one map of a BPFObject."""

    def __init__(self, spec: MapSpec, fd: int):
        self.spec = spec
        self.fd = fd

    def _percpu_size(self) -> int:
        return ((self.spec.value_size + 7) // 8 * 8) * sysbpf.possible_cpus()

    def update(self, key: bytes, value: bytes) -> None:
        sysbpf.map_update(self.fd, key, value)

    def lookup(self, key: bytes) -> bytes | None:
        if self.spec.type in sysbpf.PERCPU_MAP_TYPES:
            return sysbpf.map_lookup(self.fd, key, self._percpu_size())
        return sysbpf.map_lookup(self.fd, key, self.spec.value_size)

    def percpu_u64(self, key: bytes) -> list[int]:
        raw = self.lookup(key) or b""
        step = (self.spec.value_size + 7) // 8 * 8
        return [struct.unpack_from("<Q", raw, i)[0] for i in range(0, len(raw), step)]

    def clear(self) -> int:
        """Delete every entry (of a hash map); returns how many there were."""
        percpu = self.spec.type in sysbpf.PERCPU_MAP_TYPES
        done = sysbpf.map_delete_all(self.fd, self.spec.key_size,
                                     self._percpu_size() if percpu else self.spec.value_size)
        if done is not None:
            return done
        keys = sysbpf.map_keys(self.fd, self.spec.key_size)
        return sum(sysbpf.map_delete(self.fd, k) for k in keys)
