"""ipft_web.kernel.btf against bpftool's reading of the same BTF (vmlinux, modules, a .ko)."""
import lzma
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from ipft_web.errors import EnvError
from ipft_web.kernel import btf as btfmod
from ipft_web.kernel.btf import Btf, BtfError, load_kernel_btf, read_btf
from ipft_web.kernel.typedb import drop_reason_name, short_enum_name

VMLINUX = Path("/sys/kernel/btf/vmlinux")
BPFTOOL = shutil.which("bpftool") or ("/usr/sbin/bpftool" if Path("/usr/sbin/bpftool").exists() else None)
needs_vmlinux = pytest.mark.skipif(not VMLINUX.exists(), reason="no /sys/kernel/btf/vmlinux")
needs_bpftool = pytest.mark.skipif(BPFTOOL is None, reason="bpftool not installed")


def bpftool_raw(path, base=None) -> str:
    cmd = [BPFTOOL, "btf", "dump"]
    if base is not None:
        cmd += ["-B", str(base)]
    cmd += ["file", str(path), "format", "raw"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        pytest.skip(f"bpftool cannot dump {path}: {res.stderr.strip()[:200]}")
    return res.stdout


# -- bpftool's raw format, rebuilt from our decoded records --------------------------------------
_INT_ENC = {0: "(none)", 1: "SIGNED", 2: "CHAR", 4: "BOOL"}
_LINKAGE = {0: "static", 1: "global", 2: "extern"}


def raw_lines(b: Btf, tid: int) -> list[str]:
    t = b.type(tid)
    head = f"[{tid}] {t.kind} '{t.name or '(anon)'}'"
    k = t.kind
    if k == "INT":
        head += (f" size={t.size} bits_offset={t.int_offset} nr_bits={t.int_bits}"
                 f" encoding={_INT_ENC.get(t.int_encoding, '?')}")
    elif k in ("PTR", "CONST", "VOLATILE", "RESTRICT", "TYPEDEF", "TYPE_TAG"):
        head += f" type_id={t.type}"
    elif k == "ARRAY":
        head += f" type_id={t.array[0]} index_type_id={t.array[1]} nr_elems={t.array[2]}"
    elif k in ("STRUCT", "UNION"):
        lines = [head + f" size={t.size} vlen={t.vlen}"]
        for name, mt, bit, bsize in t.members:
            line = f"\t'{name or '(anon)'}' type_id={mt} bits_offset={bit}"
            if bsize:
                line += f" bitfield_size={bsize}"
            lines.append(line)
        return lines
    elif k in ("ENUM", "ENUM64"):
        lines = [head + f" encoding={'SIGNED' if t.kind_flag else 'UNSIGNED'} size={t.size} vlen={t.vlen}"]
        suffix = ("LL" if t.kind_flag else "ULL") if k == "ENUM64" else ""
        lines += [f"\t'{n}' val={v}{suffix}" for n, v in t.values]
        return lines
    elif k == "FWD":
        head += f" fwd_kind={'union' if t.kind_flag else 'struct'}"
    elif k == "FUNC":
        head += f" type_id={t.type} linkage={_LINKAGE.get(t.linkage, '?')}"
    elif k == "FUNC_PROTO":
        lines = [head + f" ret_type_id={t.type} vlen={t.vlen}"]
        lines += [f"\t'{n or '(anon)'}' type_id={pt}" for n, pt in t.params]
        return lines
    elif k == "VAR":
        head += f" type_id={t.type}, linkage={ {0: 'static', 1: 'global', 2: 'extern'}.get(t.linkage, '?')}"
    elif k == "DATASEC":
        lines = [head + f" size={t.size} vlen={t.vlen}"]
        lines += [f"\ttype_id={vt} offset={off} size={sz} (VAR '{b.type(vt).name}')" for vt, off, sz in t.secinfo]
        return lines
    elif k == "FLOAT":
        head += f" size={t.size}"
    elif k == "DECL_TAG":
        head += f" type_id={t.type} component_idx={t.component_idx}"
    return [head]


def compare_dump(b: Btf, text: str):
    expected = text.rstrip("\n").split("\n")
    ours = []
    for tid in b.own_ids():
        ours.extend(raw_lines(b, tid))
    assert len(ours) == len(expected)
    bad = [(o, e) for o, e in zip(ours, expected) if o != e]
    assert not bad, f"{len(bad)} lines differ, first: {bad[:3]}"


# -- an independent reading of bpftool's output, for member offsets and prototypes ---------------
_HEAD = re.compile(r"^\[(\d+)\] (\w+) '([^']*)'(.*)$")


def parse_raw(text: str) -> dict:
    types = {}
    cur = None
    for line in text.splitlines():
        m = _HEAD.match(line)
        if m:
            attrs = dict(re.findall(r"(\w+)=([^\s,]+)", m.group(4)))
            cur = {"kind": m.group(2), "name": m.group(3), "attrs": attrs, "items": []}
            types[int(m.group(1))] = cur
        elif line.startswith("\t") and cur is not None:
            m2 = re.match(r"\t'([^']*)'(.*)$", line)
            if m2:
                cur["items"].append((m2.group(1), dict(re.findall(r"(\w+)=([^\s,]+)", m2.group(2)))))
    return types


class RawIndex:
    def __init__(self, text: str):
        self.types = parse_raw(text)
        self.by_name = {}
        for tid, t in self.types.items():
            self.by_name.setdefault((t["kind"], t["name"]), tid)

    def strip(self, tid):
        while tid and self.types[tid]["kind"] in ("TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"):
            tid = int(self.types[tid]["attrs"]["type_id"])
        return tid

    def find(self, tid, name):
        """Bit offset and type of member `name`, searching anonymous members like C."""
        for mname, a in self.types[tid]["items"]:
            mt, bit = int(a["type_id"]), int(a["bits_offset"])
            if mname == name:
                return bit, mt
            if mname == "(anon)":
                inner = self.strip(mt)
                if self.types[inner]["kind"] in ("STRUCT", "UNION"):
                    got = self.find(inner, name)
                    if got:
                        return bit + got[0], got[1]
        return None

    def offset(self, struct, path):
        tid = self.by_name[("STRUCT", struct)]
        bits = 0
        for part in path.split("."):
            bit, mt = self.find(self.strip(tid), part)
            bits += bit
            tid = mt
        return bits // 8

    def func_params(self, name):
        f = self.types[self.by_name[("FUNC", name)]]
        proto = self.types[int(f["attrs"]["type_id"])]
        return [(n, int(a["type_id"])) for n, a in proto["items"]]


@pytest.fixture(scope="module")
def kernel():
    if not VMLINUX.exists():
        pytest.skip("no /sys/kernel/btf/vmlinux")
    return load_kernel_btf(modules=True)


@pytest.fixture(scope="module")
def raw_text():
    if BPFTOOL is None or not VMLINUX.exists():
        pytest.skip("needs bpftool and /sys/kernel/btf/vmlinux")
    return bpftool_raw(VMLINUX)


@pytest.fixture(scope="module")
def raw(raw_text):
    return RawIndex(raw_text)


# -- vmlinux -----------------------------------------------------------------------------------
def test_type_count_matches_bpftool(kernel, raw):
    assert len(kernel.vmlinux) - 1 == max(raw.types)  # ids 1..N, plus void


def test_every_type_matches_bpftool_dump(kernel, raw_text):
    compare_dump(kernel.vmlinux, raw_text)


SAMPLE = [("sk_buff", "len"), ("sk_buff", "mark"), ("sk_buff", "dev"), ("sk_buff", "head"),
          ("sk_buff", "network_header"), ("sk_buff", "transport_header"), ("sk_buff", "sk"),
          ("net_device", "ifindex"), ("net_device", "name"), ("net_device", "nd_net.net"),
          ("sock", "__sk_common.skc_net"), ("sock", "__sk_common.skc_net.net"), ("net", "ns.inum")]


@pytest.mark.parametrize("struct_name,path", SAMPLE)
def test_member_offsets_match_bpftool(kernel, raw, struct_name, path):
    assert kernel.struct_member(struct_name, path).offset == raw.offset(struct_name, path)


def test_member_details(kernel):
    dev = kernel.struct_member("sk_buff", "dev")
    assert (dev.kind, dev.type_name, dev.target_struct, dev.size) == ("ptr", "struct net_device *", "net_device", 8)
    mark = kernel.struct_member("sk_buff", "mark")
    assert (mark.kind, mark.size, mark.type_name) == ("int", 4, "__u32")
    name = kernel.struct_member("net_device", "name")
    assert (name.kind, name.size, name.type_name) == ("array", 16, "char[16]")
    net = kernel.struct_member("sock", "__sk_common.skc_net.net")
    assert net.target_struct == "net" and net.kind == "ptr"
    assert kernel.struct_member("sock", "__sk_common.skc_net").kind == "struct"
    inum = kernel.struct_member("net", "ns.inum")
    assert inum.size == 4 and inum.kind == "int"
    assert "len" in kernel.struct_members("sk_buff") and "mark" in kernel.struct_members("sk_buff")
    assert kernel.struct_size("sk_buff") >= 200 and kernel.has_struct("sk_buff")
    assert not kernel.has_struct("no_such_struct_xyz")


def test_bitfield(kernel, raw):
    m = kernel.struct_member("sk_buff", "pkt_type")
    assert m.bit_size == 3 and m.size == 1 and m.kind == "int"
    tid = raw.by_name[("STRUCT", "sk_buff")]
    bit, _t = raw.find(tid, "pkt_type")
    assert m.offset * 8 + m.bit_offset == bit


def test_missing_member_lists_valid_ones(kernel):
    with pytest.raises(KeyError) as exc:
        kernel.struct_member("sk_buff", "no_such_member")
    msg = str(exc.value)
    assert "no_such_member" in msg and "mark" in msg and "\n" not in msg
    with pytest.raises(KeyError):
        kernel.struct_member("sk_buff", "len.foo")  # not a struct
    with pytest.raises(KeyError):
        kernel.struct_member("no_such_struct_xyz", "len")
    with pytest.raises(KeyError):
        kernel.struct_member("sk_buff", "")


@pytest.mark.parametrize("func", ["ip_rcv", "icmp_rcv", "__kfree_skb", "kfree_skb_reason", "sk_skb_reason_drop"])
def test_function_prototypes_match_bpftool(kernel, raw, func):
    if ("FUNC", func) not in raw.by_name:
        pytest.skip(f"{func} is not in this kernel's BTF")
    ours = kernel.func_params(func)
    theirs = raw.func_params(func)
    assert [p.name for p in ours] == [n for n, _t in theirs]
    for p, (_n, t) in zip(ours, theirs):
        target = raw.strip(t)
        pointee = raw.strip(int(raw.types[target]["attrs"].get("type_id", 0)))
        is_skb = raw.types[target]["kind"] == "PTR" and pointee and raw.types[pointee]["name"] == "sk_buff"
        assert (p.struct_ptr == "sk_buff") == is_skb


def test_ip_rcv(kernel):
    params = kernel.func_params("ip_rcv")
    assert params[0].type_name == "struct sk_buff *" and params[0].struct_ptr == "sk_buff"
    assert params[1].struct_ptr == "net_device"
    with pytest.raises(KeyError):
        kernel.func_params("no_such_function_xyz")


def test_enum_skb_drop_reason(kernel, raw):
    ours = kernel.enum("skb_drop_reason")
    t = raw.types[raw.by_name[("ENUM", "skb_drop_reason")]]
    assert ours == {n: int(a["val"]) for n, a in t["items"]}
    assert ours["SKB_DROP_REASON_NOT_SPECIFIED"] in (1, 2)  # 1 on 6.1, 2 since SKB_CONSUMED (6.3)
    value = ours["SKB_DROP_REASON_NETFILTER_DROP"]
    assert kernel.enum_name("skb_drop_reason", value) == "SKB_DROP_REASON_NETFILTER_DROP"
    assert drop_reason_name(kernel, value) == "NETFILTER_DROP"
    assert drop_reason_name(kernel, 10**9) is None
    assert short_enum_name("SKB_CONSUMED") == "CONSUMED"
    with pytest.raises(KeyError):
        kernel.enum("no_such_enum_xyz")


def test_raw_tracepoint_prototype(kernel):
    params = kernel.typedef_func_params("btf_trace_kfree_skb")
    assert params[0].type_name == "void *"
    assert params[1].struct_ptr == "sk_buff"
    assert any(p.type_name == "enum skb_drop_reason" for p in params)
    assert "btf_trace_netif_receive_skb" in kernel.typedef_names("btf_trace_")
    with pytest.raises(KeyError):
        kernel.typedef_func_params("btf_trace_no_such_tp_xyz")


def test_functions_and_skb_fast_path_agree(kernel):
    slow = {}
    for f in kernel.functions():
        pos = next((i for i, p in enumerate(f.params, 1) if p.struct_ptr == "sk_buff"), None)
        if pos:
            slow.setdefault((f.name, f.module), pos)
    fast = {}
    for name, module, pos in kernel.functions_with_struct_ptr("sk_buff"):
        fast.setdefault((name, module), pos)
    assert fast == slow and len(fast) > 1000
    assert fast[("ip_rcv", None)] == 1


def test_const_skb_param_counts(kernel):
    # skb_get_hash_perturb / skb_flow_dissect... take const struct sk_buff *: spelled with const.
    consts = [f for f in kernel.functions() if any(p.struct_ptr == "sk_buff" and p.type_name.startswith("const ")
                                                   for p in f.params)]
    assert consts


# -- module split BTF ----------------------------------------------------------------------------
def _loaded_module():
    try:
        return next((p for p in sorted(Path("/sys/kernel/btf").iterdir()) if p.name != "vmlinux"), None)
    except OSError:
        return None


@needs_bpftool
@pytest.mark.skipif(_loaded_module() is None, reason="no module BTF in /sys/kernel/btf")
def test_loaded_module_btf_matches_bpftool(kernel):
    mod = _loaded_module()
    b = kernel.modules[mod.name]
    assert b.start_id == len(kernel.vmlinux)
    compare_dump(b, bpftool_raw(mod, base=VMLINUX))
    funcs = list(b.functions())
    assert all(f.module == mod.name for f in funcs)


def _find_ko():
    for rel in ("6.1.0-56-amd64",) + tuple(sorted(os.listdir("/lib/modules")) if Path("/lib/modules").is_dir() else ()):
        for name in ("kernel/net/key/af_key.ko", "kernel/net/ipv4/udp_tunnel.ko", "kernel/drivers/net/dummy.ko"):
            ko = Path("/lib/modules") / rel / name
            vmlinuz = Path("/boot") / f"vmlinuz-{rel}"
            if ko.exists() and vmlinuz.exists():
                return rel, ko, vmlinuz
    return None


@pytest.fixture(scope="module")
def ko_and_base(tmp_path_factory):
    """A module's .BTF section and its kernel's vmlinux BTF, taken from an xz bzImage in /boot."""
    found = _find_ko()
    if found is None or BPFTOOL is None:
        pytest.skip("needs bpftool, a /boot/vmlinuz-R and an uncompressed .ko of the same R")
    rel, ko, vmlinuz = found
    data = vmlinuz.read_bytes()
    at = data.find(b"\xfd7zXZ\x00")
    if at < 0:
        pytest.skip(f"{vmlinuz} is not xz-compressed")
    try:
        elf = lzma.LZMADecompressor().decompress(data[at:])
    except lzma.LZMAError:
        pytest.skip(f"cannot decompress {vmlinuz}")
    if elf[:4] != b"\x7fELF":
        pytest.skip(f"{vmlinuz} does not hold an ELF vmlinux")
    path = tmp_path_factory.mktemp("kbtf") / f"vmlinux-{rel}"
    path.write_bytes(elf)
    return ko, path


def test_ko_split_btf_matches_bpftool(ko_and_base):
    ko, vmlinux_elf = ko_and_base
    base = read_btf(vmlinux_elf)
    mod = read_btf(ko, base=base, module=ko.stem)
    assert mod.start_id == len(base)
    compare_dump(mod, bpftool_raw(ko, base=vmlinux_elf))
    funcs = list(mod.functions())
    assert funcs and all(f.module == ko.stem for f in funcs)
    # Types of the base are reachable through the module, its own ones first.
    assert mod.struct_member("sk_buff", "len").offset == base.struct_member("sk_buff", "len").offset
    db = btfmod.KernelBtf(base, {ko.stem: mod})
    names = {f.name for f in db.functions() if f.module == ko.stem}
    assert names == {f.name for f in funcs}


# -- hostile input -------------------------------------------------------------------------------
def _small_btf() -> bytes:
    # int, ptr->int, struct s { int a; int *p; }, func_proto(int a) -> int, func f
    strings = b"\0int\0s\0a\0p\0f\0"
    off = {n: strings.index(n.encode() + b"\0") for n in ("int", "s", "a", "p", "f")}
    w = []
    w += [off["int"], 1 << 24, 4, (1 << 24) | 32]                 # [1] INT int size 4 signed
    w += [0, 2 << 24, 1]                                          # [2] PTR -> 1
    w += [off["s"], (4 << 24) | 2, 16, off["a"], 1, 0, off["p"], 2, 64]  # [3] STRUCT s
    w += [0, (13 << 24) | 1, 1, off["a"], 1]                      # [4] FUNC_PROTO (int a) -> int
    w += [off["f"], 12 << 24, 4]                                  # [5] FUNC f
    types = struct.pack(f"<{len(w)}I", *w)
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return hdr + types + strings


def test_small_handmade_btf():
    b = Btf(_small_btf())
    assert b.struct_member("s", "p").type_name == "int *"
    assert b.struct_member("s", "p").offset == 8
    assert [p.name for p in b.func_params("f")] == ["a"]
    assert b.type(1).kind == "INT" and b.type(1).int_bits == 32


@pytest.mark.parametrize("data,match", [
    (b"", "too short"),
    (b"\x00" * 64, "bad magic"),
    (_small_btf()[:40], "truncated"),
    (_small_btf()[:2] + b"\x02" + _small_btf()[3:], "version"),
])
def test_malformed_btf_is_one_clear_error(data, match):
    with pytest.raises(BtfError, match=match) as exc:
        Btf(data, origin="test")
    assert "\n" not in str(exc.value)


def test_unknown_kind():
    data = bytearray(_small_btf())
    struct.pack_into("<I", data, 24 + 4, 31 << 24)  # first type's info: kind 31
    with pytest.raises(BtfError, match="unknown BTF kind"):
        Btf(bytes(data))


def test_fuzzed_btf_never_tracebacks():
    import random
    rnd = random.Random(7)
    good = _small_btf()
    for _ in range(2000):
        data = bytearray(good)
        for _ in range(rnd.randint(1, 4)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        try:
            b = Btf(bytes(data))
        except EnvError:
            continue
        for call in (lambda: b.struct_member("s", "p"), lambda: list(b.functions()),
                     lambda: list(b.functions_with_struct_ptr("s")), lambda: b.struct_members("s"),
                     lambda: [b.type_name(t) for t in b.own_ids()], lambda: b.func_params("f"),
                     lambda: b.enum("s"), lambda: b.typedef_func_params("s")):
            try:
                call()
            except (EnvError, KeyError):
                pass


def test_type_cycles_are_errors_not_hangs():
    data = bytearray(_small_btf())
    # make [2] a TYPEDEF of itself and the struct member p point to it
    struct.pack_into("<III", data, 24 + 16, 1, 8 << 24, 2)
    b = Btf(bytes(data))
    assert b.struct_ptr_target(2) is None
    with pytest.raises(KeyError, match="cycle"):
        b.struct_member("s", "p")
    assert b.type_name(2) == "int"  # a typedef is spelled by its name, cycle or not


def test_elf_without_btf_and_missing_files(tmp_path):
    elf = tmp_path / "x.o"
    src = tmp_path / "x.c"
    src.write_text("int x;\n")
    if shutil.which("gcc") is None:
        pytest.skip("no gcc")
    subprocess.run(["gcc", "-c", str(src), "-o", str(elf)], check=True)
    with pytest.raises(BtfError, match="no .BTF section"):
        read_btf(elf)
    with pytest.raises(BtfError, match="cannot read"):
        read_btf(tmp_path / "missing")
    with pytest.raises(EnvError, match="CONFIG_DEBUG_INFO_BTF"):
        load_kernel_btf(root=tmp_path)


def _blob(words, strings: bytes) -> bytes:
    types = struct.pack(f"<{len(words)}I", *words)
    return struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings)) + types + strings


def _skb_btfs() -> tuple[Btf, Btf]:
    """A base with struct sk_buff behind const, a typedef and pointers, functions taking it at
    several positions (and a word equal to the pointer's id where no param is), and a split BTF on
    it whose prototypes take the base's pointer and a const pointer of its own."""
    names = ("int", "sk_buff", "skbt", "f1", "f2", "f3", "g", "x", "len", "btf_trace_t", "m1", "m2", "other")
    strings = b"\0" + b"\0".join(n.encode() for n in names) + b"\0"
    off = {n: strings.index(b"\0" + n.encode() + b"\0") + 1 for n in names}
    w = []
    w += [off["int"], 1 << 24, 4, (1 << 24) | 32]                    # [1] INT int
    w += [off["sk_buff"], 4 << 24 | 1, 8, off["len"], 1, 0]          # [2] STRUCT sk_buff { int len; }
    w += [0, 10 << 24, 2]                                            # [3] CONST -> 2
    w += [0, 2 << 24, 3]                                             # [4] PTR -> const sk_buff
    w += [off["skbt"], 8 << 24, 2]                                   # [5] TYPEDEF skbt -> sk_buff
    w += [0, 2 << 24, 5]                                             # [6] PTR -> skbt
    w += [0, (13 << 24) | 2, 1, off["x"], 1, off["x"], 4]            # [7] PROTO (int, const sk_buff *)
    w += [off["f1"], 12 << 24, 7]                                    # [8] FUNC f1: pos 2
    w += [0, (13 << 24) | 1, 1, off["x"], 6]                         # [9] PROTO (skbt *)
    w += [off["f2"], 12 << 24, 9]                                    # [10] FUNC f2: pos 1
    w += [off["other"], 4 << 24 | 1, 4, off["x"], 1, 4]              # [11] STRUCT other (bit offset 4 = the ptr id)
    w += [0, (13 << 24) | 1, 4, off["x"], 1]                         # [12] PROTO (int) -> "size" 4
    w += [off["g"], 12 << 24, 12]                                    # [13] FUNC g: none
    w += [0, 2 << 24, 14 + 1]                                        # [14] PTR -> 15
    w += [0, (13 << 24) | 2, 1, 0, 14, off["x"], 6]                  # [15] PROTO (void *, skbt *)
    w += [off["btf_trace_t"], 8 << 24, 14]                           # [16] TYPEDEF btf_trace_t -> ptr -> proto
    w += [off["f3"], 12 << 24, 15]                                   # [17] FUNC f3: pos 2
    base = Btf(_blob(w, strings))
    mstrings = b"\0m1\0m2\0"
    m = {"m1": len(strings) + 1, "m2": len(strings) + 4}
    n = base.next_id                                                 # 18
    mw = []
    mw += [0, (13 << 24) | 1, 1, off["x"], 4]                        # [18] PROTO (const sk_buff *) of the base's ptr
    mw += [m["m1"], 12 << 24, n]                                     # [19] FUNC m1: pos 1
    mw += [0, 10 << 24, 4]                                           # [20] CONST -> base ptr 4
    mw += [m["m2"], 12 << 24, 7]                                     # [21] FUNC m2 of the base's proto 7: pos 2
    mw += [0, (13 << 24) | 3, 1, off["x"], 1, off["x"], 1, off["x"], n + 2]   # [22] PROTO (int, int, const ptr)
    mw += [off["f1"], 12 << 24, n + 4]                               # [23] FUNC f1 (again, module's): pos 3
    return base, Btf(_blob(mw, mstrings), base=base, module="mod")


def test_skb_functions_found_by_columns_match_the_type_walk():
    from ipft_web.kernel.typedb import TypeGraph
    base, mod = _skb_btfs()
    for b in (base, mod):
        ids_fast, ids_slow = {}, {}
        fast = list(b.functions_with_struct_ptr("sk_buff", ids_fast))
        slow = list(TypeGraph.functions_with_struct_ptr(b, "sk_buff", ids_slow))
        assert fast == slow and ids_fast == ids_slow
    assert list(base.functions_with_struct_ptr("sk_buff")) == [("f1", None, 2), ("f2", None, 1), ("f3", None, 2)]
    assert list(mod.functions_with_struct_ptr("sk_buff")) == [("m1", "mod", 1), ("m2", "mod", 2), ("f1", "mod", 3)]
    assert list(base.typedefs_with_struct_ptr("btf_trace_", "sk_buff")) == [("btf_trace_t", 0)]
    assert list(base.functions_with_struct_ptr("other")) == []
