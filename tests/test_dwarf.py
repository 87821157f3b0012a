"""ipft_web.kernel.dwarf on tests/data/fake_skb.c compiled here (gcc -g), checked against the
answers expected from C and, where pahole is installed, against the BTF of the same object."""
import shutil
import subprocess
from pathlib import Path

import pytest

from ipft_web.errors import EnvError
from ipft_web.kernel.btf import read_btf
from ipft_web.kernel.dwarf import load_dwarf

SRC = Path(__file__).parent / "data" / "fake_skb.c"
pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


def compile_obj(tmp_path, *flags, name="fake.o") -> Path:
    out = tmp_path / name
    subprocess.run(["gcc", *flags, "-c", str(SRC), "-o", str(out)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def obj(tmp_path_factory):
    return compile_obj(tmp_path_factory.mktemp("dwarf"), "-g", "-O2")


@pytest.fixture(scope="module")
def db(obj):
    return load_dwarf(obj)


EXPECTED = {  # member path -> (offset, size, bit_offset, bit_size, kind, type_name, target_struct)
    "next": (0, 8, 0, 0, "ptr", "struct sk_buff *", "sk_buff"),
    "dev": (16, 8, 0, 0, "ptr", "struct net_device *", "net_device"),
    "dev_scratch": (16, 8, 0, 0, "int", "long unsigned int", None),
    "rbnode": (0, 4, 0, 0, "int", "int", None),
    "sk": (24, 8, 0, 0, "ptr", "struct sock *", "sock"),
    "len": (32, 4, 0, 0, "int", "unsigned int", None),
    "pkt_type": (36, 1, 0, 3, "int", "__u8", None),
    "ignore_df": (36, 1, 3, 1, "int", "__u8", None),
    "cloned": (36, 1, 4, 1, "int", "__u8", None),
    "flags": (36, 2, 5, 9, "int", "__u16", None),
    "more": (38, 2, 0, 7, "int", "__u16", None),
    "mark": (40, 4, 0, 0, "int", "__u32", None),
    "network_header": (44, 2, 0, 0, "int", "__u16", None),
    "transport_header": (46, 2, 0, 0, "int", "__u16", None),
    "head": (48, 8, 0, 0, "ptr", "unsigned char *", None),
    "cb": (56, 48, 0, 0, "array", "char[48]", None),
    "matrix": (104, 24, 0, 0, "array", "int[2][3]", None),
    "destructor": (128, 8, 0, 0, "ptr", "void (*)(struct sk_buff *)", None),
    "cp": (144, 8, 0, 0, "ptr", "char *const", None),
}


@pytest.mark.parametrize("path", sorted(EXPECTED))
def test_sk_buff_members(db, path):
    m = db.struct_member("sk_buff", path)
    assert (m.offset, m.size, m.bit_offset, m.bit_size, m.kind, m.type_name, m.target_struct) == EXPECTED[path]


def test_paths_through_structs(db):
    assert db.struct_member("sock", "__sk_common.skc_net.net").offset == 8
    assert db.struct_member("sock", "__sk_common.skc_net.net").target_struct == "net"
    assert db.struct_member("sock", "__sk_common.skc_net").kind == "struct"
    assert db.struct_member("net", "ns.inum").offset == 8
    assert db.struct_member("net_device", "nd_net.net").offset == 24
    assert db.struct_member("net_device", "name").type_name == "char[16]"
    assert db.struct_size("sk_buff") == 152 and db.has_struct("sk_buff") and not db.has_struct("nope")
    assert db.struct_members("sk_buff")[:5] == ["next", "prev", "dev", "dev_scratch", "rbnode"]
    with pytest.raises(KeyError, match="mark"):
        db.struct_member("sk_buff", "nope")
    with pytest.raises(KeyError):
        db.struct_member("sk_buff", "len.x")


def test_functions(db):
    funcs = {f.name: f for f in db.functions()}
    assert {"first", "third", "via_typedef", "via_typedef2", "helper", "no_skb", "uses", "sixth"} <= set(funcs)
    assert [p.name for p in funcs["third"].params] == ["a", "b", "skb"]
    assert funcs["third"].params[2].type_name == "const struct sk_buff *"
    assert funcs["via_typedef"].params[1].type_name == "cskb_p"
    assert funcs["via_typedef"].params[1].struct_ptr == "sk_buff"
    assert funcs["via_typedef2"].params[0].struct_ptr == "sk_buff"
    assert funcs["no_skb"].params[-1].name == "..."
    # helper is static and reached through an abstract origin; params keep declaration order
    assert [(p.name, p.struct_ptr) for p in funcs["helper"].params] == [("sk", "sock"), ("skb", "sk_buff")]
    positions = {name: pos for name, _m, pos in db.functions_with_struct_ptr("sk_buff")}
    assert positions == {"first": 1, "third": 3, "via_typedef": 2, "via_typedef2": 1, "helper": 2,
                         "uses": 2, "sixth": 6}
    assert db.func_params("first")[0].type_name == "struct sk_buff *"


def test_enums_and_typedefs(db):
    assert db.enum("skb_drop_reason") == {"SKB_NOT_DROPPED_YET": 0, "SKB_CONSUMED": 1,
                                          "SKB_DROP_REASON_NOT_SPECIFIED": 2,
                                          "SKB_DROP_REASON_NETFILTER_DROP": 7, "SKB_DROP_REASON_MAX": 8}
    assert db.enum("neg") == {"NEG_A": -5, "NEG_B": 3}
    assert db.enum_name("skb_drop_reason", 7) == "SKB_DROP_REASON_NETFILTER_DROP"
    params = db.typedef_func_params("btf_trace_kfree_skb")
    assert [p.type_name for p in params] == ["void *", "struct sk_buff *", "void *", "enum skb_drop_reason"]
    assert "btf_trace_net_dev_queue" in db.typedef_names("btf_trace_")


@pytest.mark.parametrize("flags", [["-g", "-O0"], ["-gdwarf-4", "-O2"], ["-gdwarf-2", "-gstrict-dwarf", "-O2"]])
def test_other_dwarf_versions_same_answers(tmp_path, db, flags):
    other = load_dwarf(compile_obj(tmp_path, *flags))
    for struct_name in ("sk_buff", "sock", "net", "net_device"):
        for member in db.struct_members(struct_name):
            assert other.struct_member(struct_name, member) == db.struct_member(struct_name, member)
    assert sorted(other.functions_with_struct_ptr("sk_buff")) == sorted(db.functions_with_struct_ptr("sk_buff"))
    assert other.enum("neg") == db.enum("neg")


@pytest.mark.skipif(shutil.which("pahole") is None, reason="needs pahole to make BTF")
def test_same_answers_as_btf(tmp_path, db, obj):
    btf_obj = tmp_path / "btf.o"
    shutil.copy(obj, btf_obj)
    res = subprocess.run(["pahole", "-J", str(btf_obj)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"pahole -J failed: {res.stderr.strip()[:200]}")
    btf = read_btf(btf_obj)
    for struct_name in ("sk_buff", "sock", "net", "net_device", "sock_common"):
        assert btf.struct_members(struct_name) == db.struct_members(struct_name)
        assert btf.struct_size(struct_name) == db.struct_size(struct_name)
        for member in db.struct_members(struct_name):
            ours, theirs = db.struct_member(struct_name, member), btf.struct_member(struct_name, member)
            if member == "matrix":  # pahole flattens int[2][3] into int[6]
                ours = ours.__class__(**{**ours.__dict__, "type_name": theirs.type_name})
            assert ours == theirs, member
    btf_funcs = {f.name: f for f in btf.functions()}
    for f in db.functions():
        if f.name in btf_funcs:  # pahole leaves some static functions out
            assert f.params == btf_funcs[f.name].params, f.name
    assert set(btf.functions_with_struct_ptr("sk_buff")) <= set(db.functions_with_struct_ptr("sk_buff"))
    for enum in ("skb_drop_reason", "neg"):
        assert btf.enum(enum) == db.enum(enum)
    for tp in ("btf_trace_kfree_skb", "btf_trace_qdisc_dequeue"):
        assert btf.typedef_func_params(tp) == db.typedef_func_params(tp)


def test_bad_inputs_are_one_line_env_errors(tmp_path):
    text = tmp_path / "text"
    text.write_text("not an elf\n")
    no_debug = compile_obj(tmp_path, "-O2", name="nodebug.o")
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x7fELF" + bytes(range(256)) * 4)
    for path, match in ((tmp_path / "missing", "no such file"), (text, "not an ELF"),
                        (no_debug, "no DWARF"), (garbage, "garbage")):
        with pytest.raises(EnvError, match=match) as exc:
            load_dwarf(path)
        assert "\n" not in str(exc.value)


def test_cache_roundtrip(tmp_path, obj, db):
    cache_dirs = (str(tmp_path / "cache"),)
    first = load_dwarf(obj, cache_dirs=cache_dirs, cache_min_seconds=0)
    files = list((tmp_path / "cache" / "dwarf").glob("*.json"))
    assert len(files) == 1
    again = load_dwarf(obj, cache_dirs=cache_dirs, cache_min_seconds=0)
    for struct_name in ("sk_buff", "sock", "net"):
        for member in db.struct_members(struct_name):
            assert again.struct_member(struct_name, member) == first.struct_member(struct_name, member)
    assert list(again.functions()) == list(first.functions())
    assert again.enum("neg") == first.enum("neg")
    assert again.typedef_func_params("btf_trace_kfree_skb") == first.typedef_func_params("btf_trace_kfree_skb")
    # a damaged cache file is ignored, not trusted
    files[0].write_text('{"format": 1, "kinds": ["void", 5]}')
    assert list(load_dwarf(obj, cache_dirs=cache_dirs, cache_min_seconds=3600).functions()) == list(first.functions())


def test_fast_reads_are_not_cached(tmp_path, obj):
    load_dwarf(obj, cache_dirs=(str(tmp_path / "cache"),))
    assert not (tmp_path / "cache" / "dwarf").exists() or not any((tmp_path / "cache" / "dwarf").iterdir())


# -- a real kernel module's DWARF against the same kernel's BTF ------------------------------------
KMOD_A = """
#include <linux/module.h>
#include <linux/skbuff.h>
#include <linux/netdevice.h>
#include <net/sock.h>
int ipft_probe_len(struct sk_buff *skb) { return skb->len + skb->dev->ifindex; }
EXPORT_SYMBOL(ipft_probe_len);
MODULE_LICENSE("GPL");
"""
KMOD_B = """
#include <linux/skbuff.h>
#include <net/sock.h>
#include <net/net_namespace.h>
int ipft_probe_net(int a, const struct sock *sk, struct sk_buff *skb)
{
	return a + sock_net(sk)->ns.inum + skb->mark;
}
"""


def _kernel_with_headers_and_vmlinuz():
    for rel in ("6.1.0-56-amd64",):
        build = Path("/lib/modules") / rel / "build"
        vmlinuz = Path("/boot") / f"vmlinuz-{rel}"
        if (build / "Makefile").exists() and vmlinuz.exists():
            return build, vmlinuz
    return None


@pytest.mark.skipif(_kernel_with_headers_and_vmlinuz() is None or shutil.which("make") is None,
                    reason="needs the 6.1.0-56-amd64 headers, its /boot/vmlinuz and make")
def test_real_module_dwarf_matches_kernel_btf(tmp_path):
    import lzma
    build, vmlinuz = _kernel_with_headers_and_vmlinuz()
    (tmp_path / "ipft_a.c").write_text(KMOD_A)
    (tmp_path / "ipft_b.c").write_text(KMOD_B)
    (tmp_path / "Makefile").write_text("obj-m := ipftprobe.o\nipftprobe-y := ipft_a.o ipft_b.o\n")
    res = subprocess.run(["make", "-C", str(build), f"M={tmp_path}", "modules"], capture_output=True, text=True,
                         timeout=600)
    ko = tmp_path / "ipftprobe.ko"
    if res.returncode != 0 or not ko.exists():
        pytest.skip(f"module build failed: {(res.stderr or res.stdout).strip()[-300:]}")
    data = vmlinuz.read_bytes()
    at = data.find(b"\xfd7zXZ\x00")
    if at < 0:
        pytest.skip("vmlinuz is not xz-compressed")
    elf = tmp_path / "vmlinux"
    elf.write_bytes(lzma.LZMADecompressor().decompress(data[at:]))
    kernel = read_btf(elf)
    db = load_dwarf(ko, cache=False)
    compared = 0
    for struct_name in ("sk_buff", "net_device", "sock", "sock_common", "net", "task_struct", "page"):
        assert db.has_struct(struct_name), struct_name
        for member in db.struct_members(struct_name):
            assert db.struct_member(struct_name, member) == kernel.struct_member(struct_name, member), \
                f"{struct_name}.{member}"
            compared += 1
    assert compared > 500
    for struct_name, path in (("sock", "__sk_common.skc_net.net"), ("net", "ns.inum"), ("net_device", "nd_net.net")):
        assert db.struct_member(struct_name, path) == kernel.struct_member(struct_name, path)
    positions = {name: pos for name, _m, pos in db.functions_with_struct_ptr("sk_buff")}
    assert positions["ipft_probe_len"] == 1 and positions["ipft_probe_net"] == 3
    # two CUs include the same headers: each named struct is recorded once
    assert len(db._lookup("struct", "sk_buff")) == 1
