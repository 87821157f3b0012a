"""The BPF program: bpf/ipft.bpf.c compiled with BCC (or taken from the cache of earlier
compiles, ipft_web/bpfcache.py) and loaded by ipft_web/bpfobject.py.

Every field the program reads is located through the type database (BTF or DWARF) of the
running kernel and written into the program's config map with the mark, as are the skb
tracepoints' argument positions: the compiled program is the same for every kernel. The
generated part of the source is integers only; nothing a user typed ever reaches the C text.
"""
from __future__ import annotations

import mmap
import os
import resource
import struct
import time

from . import bpfcache, resources
from .bpfobject import BPFObject, Image
from .errors import EnvError
from .logs import get_logger
from .records import field, record
from .ringbuf import RingReader

log = get_logger(__name__)

# (macro, struct, member path) for every field the program reads, in the order of the C's
# ipft_config.off[] (bpf/ipft.bpf.c: OFF_* are cfg->off[i]).
FIELDS = (
    ("OFF_SKB_LEN", "sk_buff", "len"),
    ("OFF_SKB_MARK", "sk_buff", "mark"),
    ("OFF_SKB_DEV", "sk_buff", "dev"),
    ("OFF_SKB_SK", "sk_buff", "sk"),
    ("OFF_SKB_HEAD", "sk_buff", "head"),
    ("OFF_SKB_NETWORK_HEADER", "sk_buff", "network_header"),
    ("OFF_DEV_IFINDEX", "net_device", "ifindex"),
    ("OFF_DEV_NAME", "net_device", "name"),
    ("OFF_DEV_ND_NET", "net_device", "nd_net.net"),
    ("OFF_NET_INUM", "net", "ns.inum"),
    ("OFF_SK_NET", "sock", "__sk_common.skc_net.net"),
)

MAX_TP_SLOTS = 48     # bpf/ipft.bpf.c IPFT_MAX_TP_SLOTS
RINGBUF_PAGES = 4096  # 16 MiB: ~140k events between two polls (a marked flood comes in bursts)

KPROBE_POSITIONS = (1, 2, 3, 4, 5)


@record
class Tracepoint:
    """A raw tracepoint with a struct sk_buff * argument."""

    name: str          # "netif_receive_skb"
    group: str | None  # "net"
    arg: int           # index into the raw tracepoint's args[]

    @property
    def label(self) -> str:
        return f"{self.group}:{self.name}" if self.group else self.name


@record
class ProgramSpec:
    """What to compile: the source text, its flags, and the tracepoint slot table."""

    text: str
    cflags: list[str]
    slots: dict[int, Tracepoint] = field(default_factory=dict)  # slot id -> tracepoint
    kfree_skb_slot: int | None = None
    consume_skb_slot: int | None = None


def offsets(typedb) -> dict[str, int]:
    """The byte offset of each field the program reads; EnvError naming what is missing."""
    out = {}
    for macro, struct, path in FIELDS:
        try:
            member = typedb.struct_member(struct, path)
        except KeyError as exc:
            raise EnvError(f"kernel type info has no {struct}.{path} ({exc})") from None
        out[macro] = int(member.offset)
    return out


def build_spec(with_fields: bool = False) -> ProgramSpec:
    """Source text + cflags: the same for every kernel (what differs goes into the config map)."""
    with open(os.path.join(resources.where("bpf"), "ipft.bpf.c")) as f:
        src = f.read()
    cflags = [f"-DIPFT_RINGBUF_PAGES={RINGBUF_PAGES}"]
    cflags.append("-w")  # clang warnings about kernel headers are noise on a user's terminal
    if with_fields:
        cflags.append("-DIPFT_FIELDS=1")
    lines = [src, "", "/* generated: one raw-tracepoint entry per slot */"]
    lines += [f"IPFT_TP_SLOT({slot})" for slot in range(MAX_TP_SLOTS)]
    return ProgramSpec(text="\n".join(lines) + "\n", cflags=cflags)


def with_slots(spec: ProgramSpec, tracepoints: list[Tracepoint]) -> ProgramSpec:
    """`spec` with this kernel's tracepoints in slots: slot i is tracepoints[i] (skb:kfree_skb and
    skb:consume_skb have programs of their own; the others, the slot's tp_slot_N, up to MAX_TP_SLOTS)."""
    out = ProgramSpec(text=spec.text, cflags=list(spec.cflags))
    for slot, tp in enumerate(tracepoints):
        out.slots[slot] = tp
        if tp.name == "kfree_skb":
            out.kfree_skb_slot = slot
        elif tp.name == "consume_skb":
            out.consume_skb_slot = slot
    return out


# ... then 4 bytes of padding and ntracked (u64, 0 when written: the program counts followed skbs in it)
CONFIG = struct.Struct(f"<II{len(FIELDS)}IiiII{MAX_TP_SLOTS}B4xQ")
NTRACKED_AT = CONFIG.size - 8   # ipft_config.ntracked, the last member (u64)


def config_value(mark: int, mask: int, field_offsets: dict[str, int], spec: ProgramSpec,
                 kfree_skb_args: dict | None) -> bytes:
    """struct ipft_config: the mark and mask, the struct offsets (offsets(typedb)), skb:kfree_skb's
    argument positions ({"reason": idx, "location": idx}), and each tracepoint slot's skb argument."""
    args = kfree_skb_args or {}
    tp_arg = [0] * MAX_TP_SLOTS
    for slot, tp in spec.slots.items():
        if slot < MAX_TP_SLOTS:
            tp_arg[slot] = int(tp.arg)
    none = 0xFFFFFFFF   # no slot: no event carries it
    return CONFIG.pack(mark & mask & 0xFFFFFFFF, mask & 0xFFFFFFFF,
                       *(int(field_offsets[macro]) for macro, _s, _p in FIELDS),
                       -1 if args.get("location") is None else int(args["location"]),
                       -1 if args.get("reason") is None else int(args["reason"]),
                       none if spec.kfree_skb_slot is None else spec.kfree_skb_slot,
                       none if spec.consume_skb_slot is None else spec.consume_skb_slot, *tp_arg, 0)


def raise_limits(probes: int) -> None:
    """Each kprobe holds a file descriptor (fentry two); BCC refuses more than 1000 probes by default."""
    os.environ["BCC_PROBE_LIMIT"] = str(max(probes + 100, 1000))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, min(hard, 4 * probes + 1024)) if hard != resource.RLIM_INFINITY else 4 * probes + 1024
    if want > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            log.warning("could not raise the open-file limit to %d", want)


def set_kernel_headers() -> str | None:
    """Point BCC at a header tree; returns a message when it is not the running kernel's own."""
    from .kernel import headers

    path, message = headers.find_headers()
    if path:
        os.environ["BCC_KERNEL_SOURCE"] = str(path)
    return message


def import_bcc():
    try:
        import bcc  # noqa: F401  (Debian's python3-bpfcc)
    except ImportError:
        raise EnvError("the BCC Python module is missing: apt install python3-bpfcc "
                       "(dnf install python3-bcc), and use a venv made with --system-site-packages") from None
    return bcc


def compile_program(spec: ProgramSpec):
    """Compile with BCC; returns the bcc.BPF object. EnvError with BCC's first error line on failure."""
    bcc = import_bcc()
    started = time.monotonic()
    try:
        bpf = bcc.BPF(text=spec.text.encode(), cflags=spec.cflags)
    except Exception as exc:  # BCC raises bare Exception on compile/load failures
        raise EnvError(f"could not compile the BPF program: {str(exc).strip().splitlines()[0]}") from None
    log.info("BPF program compiled in %.2fs", time.monotonic() - started)
    return bpf


def image_for(spec: ProgramSpec) -> tuple[Image, str, str | None]:
    """(image, where it came from, header note) for `spec`: "cache" when this exact compile was
    done before, on this kernel or another; "shipped" when ipft-web came with it (neither BCC nor
    a header tree needed then); else "compiled" now with BCC, and stored (the note says which
    headers, when not the running kernel's own)."""
    digest = bpfcache.key(spec.text, spec.cflags)
    image = bpfcache.load(digest)
    if image is not None:
        log.info("BPF program loaded from the cache (%s)", digest[:12])
        return image, "cache", None
    from . import prebuilt
    image = prebuilt.load(digest, "-DIPFT_FIELDS=1" in spec.cflags)
    if image is not None:
        log.info("BPF program shipped with ipft-web (%s)", digest[:12])
        return image, "shipped", None
    image, note = compile_image(spec)
    bpfcache.save(digest, image)
    return image, "compiled", note


def compile_image(spec: ProgramSpec) -> tuple[Image, str | None]:
    """(the image BCC compiles of `spec`, which headers when not the running kernel's own)."""
    note = set_kernel_headers()
    if note:
        log.info("%s", note)
    bpf = compile_program(spec)
    try:
        return Image.from_bcc(bpf), note
    finally:
        bpf.cleanup()   # BCC's maps and module go; the image holds no fd


def set_filter(prog: "Compiled", mark: int, mask: int) -> None:
    """Write the mark/mask, with this kernel's offsets, into the program's config map."""
    table = prog.obj.map("ipft_config")
    if table.spec.value_size != CONFIG.size:
        raise EnvError(f"the BPF program's config holds {table.spec.value_size} bytes, not {CONFIG.size}: "
                       "a program image of another version")
    table.update(ZERO_KEY, config_value(mark, mask, prog.offsets, prog.spec, prog.kfree_skb_args))


def followed_count(obj: BPFObject) -> int:
    """ipft_config.ntracked: never below the number of skbs in ipft_tracked."""
    value = obj.map("ipft_config").lookup(ZERO_KEY)
    return struct.unpack_from("<Q", value, NTRACKED_AT)[0] if value is not None else 0


def lost_events(obj: BPFObject) -> int:
    """Events the ring buffer could not take, summed over CPUs."""
    return int(sum(obj.map("ipft_lost").percpu_u64(ZERO_KEY)))


ZERO_KEY = struct.pack("<I", 0)


class Compiled:
    """A compiled program kept for the life of the process: compile once, trace many times.

    Nothing the user chooses is compiled in (the mark is in a map, the function set is chosen at
    attach time), so the dashboard compiles before anyone presses Start and every session after
    the first starts with attaching. The ring buffer is opened once; events go to `sink`.
    """

    def __init__(self, spec: ProgramSpec, obj: BPFObject, header_note: str | None, seconds: float,
                 source: str = "compiled", offsets: dict | None = None, kfree_skb_args: dict | None = None):
        self.spec = spec
        self.offsets = offsets or {}             # this kernel's, for the config map (set_filter)
        self.kfree_skb_args = kfree_skb_args
        self.obj = obj
        self.header_note = header_note
        self.seconds = seconds
        self.source = source                     # "cache", "shipped" or "compiled" (image_for)
        self.sink = None
        self.in_use = False
        self.reader = RingReader(obj.map_fds["ipft_events"], RINGBUF_PAGES * mmap.PAGESIZE)

    def _dispatch(self, buf, offset, size):
        sink = self.sink
        if sink is not None:
            sink(buf, offset, size)

    def drain(self, limit: int) -> int:
        """Hand at most `limit` events to the sink; returns how many."""
        return self.reader.consume(self._dispatch, limit)

    def release(self) -> None:
        """After a session (probes detached, so this ends): drain what is left, forget followed skbs."""
        self.reader.consume(self._dispatch)
        self.sink = None
        self.obj.map("ipft_tracked").clear()
        config = self.obj.map("ipft_config")
        value = config.lookup(ZERO_KEY)
        if value is not None:   # ipft_config.ntracked back to 0 with the skbs it counted
            config.update(ZERO_KEY, bytes(value[:NTRACKED_AT]) + bytes(8))
        self.in_use = False


_compiled: dict = {}
_compile_lock = __import__("threading").Lock()


def compiled(kernel, key=None, with_fields: bool = False) -> Compiled:
    """The process's compiled program for this kernel view (compiled on first use).

    Two variants: without and with the per-hit field reader (sessions with --field compile the
    second once; field paths themselves are map contents, never compiled in)."""
    key = (key, bool(with_fields))
    with _compile_lock:
        prog = _compiled.get(key)
        if prog is None:
            field_offsets = kernel.offsets()   # EnvError when the type info lacks a field
            spec = build_spec(with_fields)
            started = time.monotonic()
            image, source, note = image_for(spec)
            prog = Compiled(with_slots(spec, kernel.tracepoints), BPFObject(image, with_fields), note,
                            time.monotonic() - started, source, field_offsets, kernel.kfree_skb_args)
            _compiled[key] = prog
        return prog
