"""The kernel view kept for the boot (ipft_web/kernel/snapshot.py) and the view made from it.

Unit tests use made-up snapshots and made-up /proc files; the root tests read this machine's
kernel: a second process loads what the first stored, and says the same things."""
from __future__ import annotations

import array
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ipft_web.errors import EnvError
from ipft_web.kernel import snapshot
from ipft_web.kernel.catalog import CatalogEntry
from ipft_web.kernel.kallsyms import SymbolTable
from ipft_web.kernel.view import KernelView
from ipft_web.program import Tracepoint

from ipft_testlib import ipft_argv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sample(key: str = "k" * 64) -> snapshot.Snapshot:
    return snapshot.Snapshot(
        functions=[CatalogEntry("ip_rcv", None, 1), CatalogEntry("mod_xmit", "veth", 2, True)],
        extra={"kfree_skbmem": CatalogEntry("kfree_skbmem", None, 1)},
        catalog_source="available_filter_functions",
        tracepoints=[Tracepoint(name="kfree_skb", group="skb", arg=0), Tracepoint(name="net_dev_queue", group="net", arg=0)],
        kfree_skb_args={"skb": 0, "location": 1, "reason": 2},
        offsets={"OFF_SKB_MARK": 164, "OFF_SKB_LEN": 112}, offsets_error=None,
        reasons={2: "NOT_SPECIFIED", 5: "NETFILTER_DROP"},
        btf_ids={"ip_rcv": 88244, "kfree_skbmem": 1234},
        addresses={"ip_rcv": [0xffffffff81000100], "mod_xmit": [0xffffffffc0001000, 0xffffffffc0002000],
                   "kfree_skbmem": [0xffffffff81000400]},
        has_addresses=True,
        symbols=SymbolTable(array.array("Q", [0xffffffff81000100, 0xffffffff81000400, 0xffffffffc0001000]),
                            ["ip_rcv", "kfree_skbmem", "mod_xmit"]),
        key=key)


def round_trip(snap):
    return snapshot.from_json(json.loads(json.dumps(snapshot.to_json(snap))), snap.key)


def test_json_round_trip():
    a, b = sample(), round_trip(sample())
    for name in ("functions", "extra", "catalog_source", "tracepoints", "kfree_skb_args", "offsets", "reasons",
                 "btf_ids", "addresses", "has_addresses", "key"):
        assert getattr(a, name) == getattr(b, name), name
    table = snapshot.symbols_from_json(json.loads(json.dumps(snapshot.symbols_to_json(a.symbols, a.key))), a.key)
    assert list(table.addrs) == list(a.symbols.addrs) and table.names == a.symbols.names


def test_a_type_info_without_a_field_is_kept_as_its_error():
    snap = sample()
    snap.offsets, snap.offsets_error = None, "kernel type info has no sk_buff.mark"
    view = KernelView(round_trip(snap))
    with pytest.raises(EnvError, match="sk_buff.mark"):
        view.offsets()


def damaged(edit):
    doc = json.loads(json.dumps(snapshot.to_json(sample())))
    edit(doc)
    return doc


@pytest.mark.parametrize("edit", [
    lambda d: d.update(format=snapshot.FORMAT + 1),
    lambda d: d.update(key="j" * 64),
    lambda d: d.update(functions="x"),
    lambda d: d["functions"].append(["a b", None, 1, False]),           # not a symbol name
    lambda d: d["functions"].append(["x", "../m", 1, False]),           # not a module name
    lambda d: d["functions"].append(["x", None, 1.5, False]),
    lambda d: d["functions"].append(["x", None, 1, 0]),
    lambda d: d["functions"].append(["x", None, 1]),
    lambda d: d["tracepoints"].append(["t", "g", -1]),
    lambda d: d["tracepoints"].append(["t;", "g", 0]),
    lambda d: d["kfree_skb_args"].update(reason="2"),
    lambda d: d["kfree_skb_args"].update({"A B": 1}),
    lambda d: d["offsets"].update(OFF_SKB_MARK=-4),
    lambda d: d["offsets"].update({"-DX=1 -include /etc/shadow": 4}),  # offsets become compiler flags
    lambda d: d.update(offsets=None),                                   # and no error said why
    lambda d: d["reasons"].append([7, "A\nB"]),
    lambda d: d["btf_ids"].update(ip_rcv=0),
    lambda d: d["addresses"].update(ip_rcv=[]),
    lambda d: d["addresses"].update(ip_rcv=["0xffff"]),
    lambda d: d.update(has_addresses=1),
    lambda d: d.update(entry_offsets={"ip_rcv": 65}),
    lambda d: d.update(relative={"ip_rcv": [["", 1 << 32]]}),
    lambda d: d.update(relative={"ip_rcv": [["../x", 4]]}),
    lambda d: d.update(relative={"ip_rcv": [["", "4"]]}),
    lambda d: d.update(relative={"ip_rcv": []}),
    lambda d: d.update(symbols={}),                                     # the old format
])
def test_json_damage_is_refused(edit):
    with pytest.raises((ValueError, TypeError)):
        snapshot.from_json(damaged(edit), "k" * 64)


@pytest.mark.parametrize("edit", [
    lambda d: d.update(addrs="!!!"),
    lambda d: d.update(addrs="AAAA"),                                   # 3 bytes
    lambda d: d.update(names="a\nb"),                                   # 2 names, 3 addresses
    lambda d: d.update(extra="x"),
    lambda d: d.update(key="j" * 64),
    lambda d: d.update(format=snapshot.FORMAT + 1),
])
def test_symbols_damage_is_refused(edit):
    doc = json.loads(json.dumps(snapshot.symbols_to_json(sample().symbols, "k" * 64)))
    edit(doc)
    with pytest.raises((ValueError, TypeError)):
        snapshot.symbols_from_json(doc, "k" * 64)


def test_symbols_out_of_order_are_refused():
    doc = snapshot.symbols_to_json(SymbolTable(array.array("Q", [3, 2, 1]), ["a", "b", "c"]), "k" * 64)
    with pytest.raises(ValueError, match="order"):
        snapshot.symbols_from_json(doc, "k" * 64)


def test_a_stored_view_reads_its_symbols_only_when_asked(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("IPFT_CACHE_DIR", str(tmp_path / "c"))
    snapshot.save(sample())
    table = tmp_path / "c" / "kernel" / ("k" * 64 + snapshot.SYMBOLS_SUFFIX)
    assert table.exists()
    view = KernelView(snapshot.load("k" * 64))
    assert isinstance(view.snap.symbols, snapshot.StoredSymbols), "not read with the view"
    assert view.symbol(0xffffffffc0001004) == "mod_xmit"
    table.write_text("{damaged")
    from ipft_web.kernel.kallsyms import Kallsyms
    view = KernelView(snapshot.load("k" * 64), syms=Kallsyms("ffffffff81000100 T from_kallsyms\n"))
    assert view.symbol(0xffffffff81000104) == "from_kallsyms", "a damaged table: kallsyms instead"
    assert "ignoring the stored kernel symbols" in caplog.text


# -- the key ---------------------------------------------------------------------------------------
@pytest.fixture
def proc(tmp_path, monkeypatch):
    """Made-up /proc files for the key."""
    files = {"boot": tmp_path / "boot_id", "modules": tmp_path / "modules"}
    files["boot"].write_text("0a1b\n")
    files["modules"].write_text("veth 40960 0 - Live 0xffffffffc0a00000\nbridge 311296 1 br_netfilter, Live 0xffffffffc0b00000\n")
    monkeypatch.setattr(snapshot, "BOOT_ID", str(files["boot"]))
    monkeypatch.setattr(snapshot, "MODULES", str(files["modules"]))
    return files


def test_key_follows_the_boot_and_the_modules(proc):
    first = snapshot.key()
    assert first and first == snapshot.key()
    proc["modules"].write_text("veth 40960 3 - Live 0xffffffffc0a00000\nbridge 311296 0 br_netfilter, Live 0xffffffffc0b00000\n")
    assert snapshot.key() == first, "a module's use count is not part of the key"
    proc["modules"].write_text("veth 40960 0 - Live 0xffffffffc0c00000\nbridge 311296 1 br_netfilter, Live 0xffffffffc0b00000\n")
    moved = snapshot.key()
    assert moved != first, "a module loaded again elsewhere"
    proc["modules"].write_text("veth 40960 0 - Live 0xffffffffc0c00000\n")
    assert snapshot.key() not in (first, moved), "a module gone"
    proc["boot"].write_text("ffff\n")
    assert snapshot.key() not in (first, moved), "another boot"


def test_no_boot_id_no_snapshot(proc, tmp_path, monkeypatch):
    proc["boot"].unlink()
    assert snapshot.key() is None
    monkeypatch.setenv("IPFT_CACHE_DIR", str(tmp_path / "c"))
    assert snapshot.load(None) is None


def test_key_follows_what_can_be_read(proc, tmp_path, monkeypatch):
    listed = tmp_path / "available_filter_functions"
    monkeypatch.setattr(snapshot, "READABLE", (str(listed),))
    before = snapshot.key()
    listed.write_text("ip_rcv\n")
    assert snapshot.key() != before, "tracefs mounted after the first run: the catalog's source changes"


@pytest.fixture
def btf_dir(tmp_path, monkeypatch, proc):
    """A made-up /sys/kernel/btf and tracing lists for the build key."""
    root = tmp_path / "btf"
    root.mkdir()
    (root / "vmlinux").write_bytes(b"vmlinux types")
    (root / "veth").write_bytes(b"veth types")
    monkeypatch.setattr(snapshot, "SYS_BTF", str(root))
    lists = (tmp_path / "available_filter_functions", tmp_path / "none", tmp_path / "blacklist")
    monkeypatch.setattr(snapshot, "READABLE", tuple(map(str, lists)))
    notes = tmp_path / "notes"
    notes.mkdir()
    monkeypatch.setattr(snapshot, "KERNEL_NOTES", str(notes / "vmlinux"))
    monkeypatch.setattr(snapshot, "MODULE_NOTES", str(notes) + "/{}")
    return {"root": root, "ftrace": lists[0], "blacklist": lists[2], "notes": notes, **proc}


def note(build_id: bytes, kind: int = 3, name: bytes = b"GNU\0") -> bytes:
    pad = lambda b: b + b"\0" * (-len(b) % 4)   # noqa: E731
    return (len(name).to_bytes(4, "little") + len(build_id).to_bytes(4, "little") + kind.to_bytes(4, "little")
            + pad(name) + pad(build_id))


def test_build_id_is_read_from_elf_notes(tmp_path):
    f = tmp_path / "notes"
    f.write_bytes(note(b"\x06\0\0\0", kind=6, name=b"Linux\0") + note(bytes(range(20))))
    assert snapshot._build_id(str(f)) == bytes(range(20)).hex()
    f.write_bytes(note(bytes(range(20)))[:-4])
    assert snapshot._build_id(str(f)) is None, "cut short"
    f.write_bytes(note(bytes(range(20)), kind=1))
    assert snapshot._build_id(str(f)) is None, "not a build id"
    assert snapshot._build_id(str(tmp_path / "absent")) is None
    if os.access("/sys/kernel/notes", os.R_OK):
        assert len(snapshot._build_id("/sys/kernel/notes") or "") >= 16, "this kernel's"


def test_build_key_names_the_builds_by_their_ids(btf_dir):
    notes = btf_dir["notes"]
    for name, bid in (("vmlinux", b"k" * 20), ("veth", b"v" * 20), ("bridge", b"b" * 20)):
        (notes / name).write_bytes(note(bid))
    btf_dir["ftrace"].write_text("")
    btf_dir["blacklist"].write_text("")
    first = snapshot.build_key()
    assert first and first == snapshot.build_key()
    btf_dir["boot"].write_text("ffff\n")
    btf_dir["modules"].write_text("veth 40960 0 - Live 0xffffffffc0c00000\nbridge 311296 1 br_netfilter, Live 0xffffffffc0d00000\n")
    btf_dir["blacklist"].write_text("0xffffffff81000000-0xffffffff81000010\tdo_int3\n")
    btf_dir["ftrace"].write_text("ip_rcv\n")
    assert snapshot.build_key() == first, "another boot, modules elsewhere: the same builds, nothing else read"
    (notes / "veth").write_bytes(note(b"w" * 20))
    rebuilt = snapshot.build_key()
    assert rebuilt != first, "a module rebuilt"
    (notes / "vmlinux").write_bytes(note(b"K" * 20))
    assert snapshot.build_key() not in (first, rebuilt), "another kernel build"
    (notes / "bridge").unlink()
    content = snapshot.build_key()
    (btf_dir["root"] / "veth").write_bytes(b"veth types, rebuilt")
    assert snapshot.build_key() != content, "a module without a build id: the content of the type info decides"


def test_build_key_follows_the_type_info_not_the_boot(btf_dir):
    first = snapshot.build_key()
    assert first and first == snapshot.build_key()
    btf_dir["boot"].write_text("ffff\n")
    btf_dir["modules"].write_text("veth 40960 0 - Live 0xffffffffc0c00000\nbridge 311296 1 br_netfilter, Live 0xffffffffc0d00000\n")
    assert snapshot.build_key() == first, "another boot, modules at other addresses: the same build"
    (btf_dir["root"] / "veth").write_bytes(b"veth types, rebuilt")
    rebuilt = snapshot.build_key()
    assert rebuilt != first, "a module's type info changed"
    btf_dir["modules"].write_text("veth 40960 0 - Live 0xffffffffc0c00000\n")
    gone = snapshot.build_key()
    assert gone not in (first, rebuilt), "a module gone"
    btf_dir["ftrace"].write_text("ip_rcv\n")
    listed = snapshot.build_key()
    assert listed != gone, "ftrace's list readable now"
    btf_dir["ftrace"].write_text("ip_rcv\nudp_rcv\n")
    assert snapshot.build_key() != listed, "ftrace's list says something else"
    btf_dir["blacklist"].write_text("0xffffffff81000000-0xffffffff81000010\tdo_int3\n")
    black = snapshot.build_key()
    btf_dir["blacklist"].write_text("0xffffffffa1000000-0xffffffffa1000010\tdo_int3\n")
    assert snapshot.build_key() == black, "the blacklist's addresses move at each boot; its names count"
    (btf_dir["root"] / "vmlinux").unlink()
    assert snapshot.build_key() is None, "no vmlinux BTF: nothing kept for later boots"


def test_a_build_part_keeps_no_address_and_takes_this_boots(tmp_path, monkeypatch):
    from ipft_web.kernel.kallsyms import Kallsyms
    part = snapshot.build_part(sample(), "b" * 64)
    assert part.addresses == {} and not part.has_addresses and len(part.symbols) == 0 and part.key == "b" * 64
    monkeypatch.setenv("IPFT_CACHE_DIR", str(tmp_path / "c"))
    assert snapshot.save(part, sub=snapshot.BUILD_SUBDIR).parent == tmp_path / "c" / "kernel-build"
    back = snapshot.load("b" * 64, snapshot.BUILD_SUBDIR)
    assert back is not None and back.functions == sample().functions and back.btf_ids == sample().btf_ids
    assert snapshot.load("b" * 64) is None, "boot snapshots and build parts are kept apart"
    syms = Kallsyms("ffffffff82000100 T ip_rcv\nffffffff82000400 t kfree_skbmem\n"
                    "ffffffffc1001000 t mod_xmit\t[veth]\nffffffffc1002000 t mod_xmit\t[veth]\n"
                    "ffffffff82000500 T unrelated\n")
    snap = snapshot.with_addresses(back, syms, "k" * 64)
    assert snap.addresses == {"ip_rcv": [0xffffffff82000100], "kfree_skbmem": [0xffffffff82000400],
                              "mod_xmit": [0xffffffffc1001000, 0xffffffffc1002000]}
    assert snap.has_addresses and snap.symbols is None and snap.key == "k" * 64
    view = KernelView(snap, syms=syms)
    assert view.symbol(0xffffffff82000504) == "unrelated", "symbolized from this boot's kallsyms"
    assert view.addresses("mod_xmit") == [0xffffffffc1001000, 0xffffffffc1002000]


def test_entry_offsets_need_every_name_at_one_distance():
    addresses = {"ip_rcv": [0xffffffff82000100], "mod_xmit": [0xffffffffc1002000, 0xffffffffc1001000]}
    ftrace = {"ip_rcv": [0xffffffff82000104], "mod_xmit": [0xffffffffc1001004, 0xffffffffc1002004], "x": [1]}
    assert snapshot.entry_offsets(addresses, ftrace) == {"ip_rcv": 4, "mod_xmit": 4}
    assert snapshot.entry_offsets(addresses, dict(ftrace, ip_rcv=[0xffffffff82000100])) == {"ip_rcv": 0, "mod_xmit": 4}
    assert snapshot.entry_offsets(addresses, dict(ftrace, ip_rcv=[])) is None, "a name ftrace lacks"
    assert snapshot.entry_offsets(addresses, dict(ftrace, mod_xmit=[0xffffffffc1001004])) is None, "twins counted"
    assert snapshot.entry_offsets(addresses, dict(ftrace, mod_xmit=[0xffffffffc1001000, 0xffffffffc1002004])) is None
    assert snapshot.entry_offsets(addresses, dict(ftrace, ip_rcv=[0xffffffff82000000])) is None, "before the symbol"
    assert snapshot.entry_offsets(addresses, dict(ftrace, ip_rcv=[0xffffffff82000200])) is None, "too far"
    assert snapshot.entry_offsets(addresses, None) is None and snapshot.entry_offsets({}, ftrace) is None


def test_a_later_boot_takes_its_addresses_from_ftrace(tmp_path, monkeypatch):
    from ipft_web.kernel import kallsyms
    snap = sample()
    snap.entry_offsets = {"ip_rcv": 4, "mod_xmit": 0, "kfree_skbmem": 4}
    part = round_trip(snapshot.build_part(snap, "b" * 64))
    assert part.entry_offsets == snap.entry_offsets and part.addresses == {}
    tracing = tmp_path / "tracing"
    tracing.mkdir()
    (tracing / "available_filter_functions_addrs").write_text(
        "ffffffff92000104 ip_rcv\nffffffff92000404 kfree_skbmem\nffffffff92000504 other\n"
        "ffffffffd1002000 mod_xmit [veth]\nffffffffd1001000 mod_xmit [veth]\n")
    ftrace = kallsyms.read_ftrace_addresses((str(tmp_path / "none"), str(tracing)))
    assert ftrace["mod_xmit"] == [0xffffffffd1002000, 0xffffffffd1001000] and ftrace["other"] == [0xffffffff92000504]
    later = snapshot.with_ftrace_addresses(part, ftrace, "n" * 64)
    assert later.addresses == {"ip_rcv": [0xffffffff92000100], "kfree_skbmem": [0xffffffff92000400],
                               "mod_xmit": [0xffffffffd1001000, 0xffffffffd1002000]}
    assert later.has_addresses and later.symbols is None and later.key == "n" * 64
    del ftrace["kfree_skbmem"]
    assert snapshot.with_ftrace_addresses(part, ftrace, "n" * 64) is None, "a name missing: kallsyms decides"
    assert snapshot.with_ftrace_addresses(snapshot.build_part(sample(), "b" * 64), ftrace, "n" * 64) is None
    assert kallsyms.read_ftrace_addresses((str(tmp_path / "none"),)) is None


def test_a_later_boot_moves_each_object_by_its_text_base(tmp_path):
    from ipft_web.kernel import kallsyms
    syms = kallsyms.Kallsyms("ffffffff81000100 T ip_rcv\nffffffffc0001000 t mod_xmit\t[veth]\n"
                             "ffffffffc0002000 t mod_xmit\t[veth]\nffffffff81000400 t kfree_skbmem\n")
    placed = syms.placed_of(["ip_rcv", "mod_xmit", "kfree_skbmem", "absent"])
    assert placed["mod_xmit"] == [(0xffffffffc0001000, "veth"), (0xffffffffc0002000, "veth")]
    rel = snapshot.relative_addresses(placed, {"": 0xffffffff81000000, "veth": 0xffffffffc0000800})
    assert rel == {"ip_rcv": [["", 0x100]], "mod_xmit": [["veth", 0x800], ["veth", 0x1800]],
                   "kfree_skbmem": [["", 0x400]]}
    assert snapshot.relative_addresses(placed, {"": 0xffffffff81000000}) is None, "a module without its base"
    assert snapshot.relative_addresses(placed, None) is None
    snap = sample()
    snap.relative = rel
    part = round_trip(snapshot.build_part(snap, "b" * 64))
    assert part.relative == rel and part.addresses == {}
    assert snapshot.relative_objects(part) == {"", "veth"}
    later = snapshot.with_relative_addresses(part, {"": 0xffffffff9a000000, "veth": 0xffffffffd0100800}, "n" * 64)
    assert later.addresses == {"ip_rcv": [0xffffffff9a000100], "kfree_skbmem": [0xffffffff9a000400],
                               "mod_xmit": [0xffffffffd0101000, 0xffffffffd0102000]}
    assert later.has_addresses and later.symbols is None and later.key == "n" * 64
    assert snapshot.with_relative_addresses(part, {"": 0xffffffff9a000000}, "n" * 64) is None
    assert snapshot.with_relative_addresses(snapshot.build_part(sample(), "b" * 64), {"": 1}, "n" * 64) is None

    # this boot's bases: _text from the head of kallsyms, a module's .text from sysfs
    (tmp_path / "kallsyms").write_text("0000000000000000 A fixed_percpu_data\nffffffff9a000000 T _stext\n"
                                       "ffffffff9a000000 T _text\n")
    (tmp_path / "veth").mkdir()
    (tmp_path / "veth" / "text").write_text("0xffffffffd0100800\n")
    module_text = str(tmp_path / "{}" / "text")
    read = lambda mods, **kw: kallsyms.read_text_bases(mods, str(tmp_path / "kallsyms"), module_text, **kw)  # noqa: E731
    assert read({"", "veth"}) == {"": 0xffffffff9a000000, "veth": 0xffffffffd0100800}
    assert read({"veth", "gone"}) is None, "a module that is not loaded"
    assert read({"../../etc"}) is None, "not a module name"
    (tmp_path / "veth" / "text").write_text("0x0000000000000000\n")
    assert read({"veth"}) is None, "hidden (kptr_restrict)"
    (tmp_path / "kallsyms").write_text("0000000000000000 T _text\n")
    assert read(set()) is None, "hidden"


def test_derived_addresses_kallsyms_contradicts_are_replaced_and_the_part_dropped(tmp_path, monkeypatch, caplog):
    from ipft_web.kernel import kallsyms
    snap = sample()
    snap.relative = {"ip_rcv": [["", 0x100]], "mod_xmit": [["veth", 0x800], ["veth", 0x1800]],
                     "kfree_skbmem": [["", 0x400]]}
    monkeypatch.setenv("IPFT_CACHE_DIR", str(tmp_path / "c"))
    snapshot.save(snapshot.build_part(snap, "b" * 64), sub=snapshot.BUILD_SUBDIR)
    monkeypatch.setattr(kallsyms, "read_text_bases", lambda mods: {"": 0xffffffff9a000000, "veth": 0xffffffffd0100800})
    read = []
    monkeypatch.setattr(kallsyms, "load", lambda: read.append(1) or kallsyms.Kallsyms(
        "ffffffff9a000100 T ip_rcv\nffffffff9a000400 t kfree_skbmem\n"
        "ffffffffd0101000 t mod_xmit\t[veth]\nffffffffd0102000 t mod_xmit\t[veth]\n"))
    view = KernelView._from_build("d" * 64, "b" * 64)
    assert view._derived == "text bases" and view.addresses("mod_xmit") == [0xffffffffd0101000, 0xffffffffd0102000]
    assert not read, "kallsyms is not read on the way to tracing"
    view.store()
    assert read and snapshot.load("b" * 64, snapshot.BUILD_SUBDIR) is not None, "all agreed: the part stays"
    assert snapshot.load("d" * 64).addresses == view.snap.addresses

    monkeypatch.setattr(kallsyms, "read_text_bases", lambda mods: {"": 0xffffffff9a000000, "veth": 0xffffffffd0200800})
    view = KernelView._from_build("e" * 64, "b" * 64)
    with caplog.at_level("WARNING"):
        view.store()
    assert "2 function addresses taken from text bases differ from kallsyms" not in caplog.text
    assert "1 function addresses taken from text bases differ from kallsyms (mod_xmit)" in caplog.text
    assert view.addresses("mod_xmit") == [0xffffffffd0101000, 0xffffffffd0102000], "kallsyms' kept"
    assert snapshot.load("b" * 64, snapshot.BUILD_SUBDIR) is None, "the part is dropped"
    assert snapshot.load("e" * 64).addresses["mod_xmit"] == [0xffffffffd0101000, 0xffffffffd0102000]


def test_a_view_from_ftrace_reads_kallsyms_only_when_asked_a_symbol(tmp_path, monkeypatch):
    from ipft_web.kernel import kallsyms
    snap = sample()
    snap.entry_offsets = {"ip_rcv": 4, "mod_xmit": 0, "kfree_skbmem": 4}
    monkeypatch.setenv("IPFT_CACHE_DIR", str(tmp_path / "c"))
    snapshot.save(snapshot.build_part(snap, "b" * 64), sub=snapshot.BUILD_SUBDIR)
    monkeypatch.setattr(kallsyms, "read_ftrace_addresses", lambda: {
        "ip_rcv": [0xffffffff92000104], "kfree_skbmem": [0xffffffff92000404],
        "mod_xmit": [0xffffffffd1001000, 0xffffffffd1002000]})
    read = []
    monkeypatch.setattr(kallsyms, "load", lambda: read.append(1) or kallsyms.Kallsyms(
        "ffffffff92000100 T ip_rcv\nffffffff92000400 t kfree_skbmem\nffffffff92000600 T unrelated\n"))
    view = KernelView._from_build("d" * 64, "b" * 64)
    assert view.addresses("ip_rcv") == [0xffffffff92000100] and not read
    assert view.symbol(0xffffffff92000604) == "unrelated" and read == [1]
    view.store()
    back = snapshot.load("d" * 64)
    assert back.addresses == view.snap.addresses and back.entry_offsets == snap.entry_offsets
    assert back.symbols.load().symbolize(0xffffffff92000104) == "ip_rcv"


# -- on disk ---------------------------------------------------------------------------------------
def test_store_and_load(tmp_path, monkeypatch):
    monkeypatch.setenv("IPFT_CACHE_DIR", str(tmp_path / "c"))
    path = snapshot.save(sample())
    assert path and path.parent == tmp_path / "c" / "kernel"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700" and oct(path.stat().st_mode & 0o777) == "0o600"
    back = snapshot.load("k" * 64)
    assert back is not None and back.functions == sample().functions
    assert snapshot.load("j" * 64) is None


def test_off_means_off(monkeypatch):
    monkeypatch.setenv("IPFT_CACHE_DIR", "off")
    assert snapshot.save(sample()) is None and snapshot.load("k" * 64) is None


def test_untrusted_or_damaged_files_are_ignored(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("IPFT_CACHE_DIR", str(tmp_path / "c"))
    path = snapshot.save(sample())
    os.chmod(path, 0o666)
    assert snapshot.load("k" * 64) is None
    os.chmod(path, 0o600)
    os.chmod(path.parent, 0o777)
    assert snapshot.load("k" * 64) is None
    assert "writable by nobody else" in caplog.text
    os.chmod(path.parent, 0o700)
    os.symlink(path, path.parent / f"{'j' * 64}.json")
    assert snapshot.load("j" * 64) is None
    path.write_text("[1, 2]")
    assert snapshot.load("k" * 64) is None
    path.write_text("{not json")
    assert snapshot.load("k" * 64) is None
    assert "ignoring the stored kernel view" in caplog.text


@pytest.mark.root
def test_a_file_of_another_user_is_not_trusted(tmp_path, monkeypatch):
    monkeypatch.setenv("IPFT_CACHE_DIR", str(tmp_path / "c"))
    path = snapshot.save(sample())
    os.chown(path, 65534, 65534)
    assert snapshot.load("k" * 64) is None


def test_only_the_newest_are_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("IPFT_CACHE_DIR", str(tmp_path / "c"))
    for i in range(snapshot.KEEP + 2):
        p = snapshot.save(sample(f"{i:064d}"))
        os.utime(p, (1000 + i, 1000 + i))
    assert len(list((tmp_path / "c" / "kernel").glob(snapshot.SNAPSHOT_GLOB))) == snapshot.KEEP
    assert len(list((tmp_path / "c" / "kernel").glob("*.symbols.json"))) == snapshot.KEEP, "tables go with them"
    assert snapshot.load(f"{0:064d}") is None and snapshot.load(f"{snapshot.KEEP + 1:064d}") is not None


# -- the view over a snapshot ----------------------------------------------------------------------
def test_view_over_a_snapshot_answers_without_type_info(tmp_path, monkeypatch):
    monkeypatch.setenv("IPFT_CACHE_DIR", str(tmp_path / "c"))
    snapshot.save(sample())
    view = KernelView(snapshot.load("k" * 64))
    assert view.stored
    assert [f.name for f in view.skb_functions()] == ["ip_rcv", "mod_xmit"]
    assert view.function("kfree_skbmem").pos == 1 and view.function("nope") is None
    assert view.addresses("mod_xmit") == [0xffffffffc0001000, 0xffffffffc0002000]
    assert view.symbol(0xffffffff81000100 + 0x20) == "ip_rcv" and view.symbol(0xffffffffc0001004) == "mod_xmit"
    assert view.btf_target("ip_rcv") == (88244, 0)
    assert view.btf_target("mod_xmit") is None, "module functions: no vmlinux BTF id"
    assert view.drop_reason(5) == "NETFILTER_DROP" and view.drop_reason(99) == "REASON_99"
    assert view.offsets() == {"OFF_SKB_MARK": 164, "OFF_SKB_LEN": 112}
    assert view.catalog_source == "available_filter_functions"
    assert [t.label for t in view.tracepoints] == ["skb:kfree_skb", "net:net_dev_queue"]
    assert view._typedb is None, "nothing above needed type info"

    loaded = []
    from ipft_web.kernel import btf
    monkeypatch.setattr(btf, "load_kernel_btf", lambda modules=True: loaded.append(modules) or "types")
    assert view.typedb == "types" and view.typedb == "types" and loaded == [True], "read once, on first use"


def test_a_view_read_in_this_process_is_stored_after_tracing_starts(tmp_path, monkeypatch):
    """Sorting every symbol and writing them waits for store_soon() (the tracer calls it once attached)
    or the process's exit; it goes where the cache was when the kernel was read."""
    from ipft_web.kernel import btf, catalog, kallsyms
    from ipft_web.kernel import view as view_mod
    table = sample().symbols
    sorts = []

    class Syms:
        def symbol_table(self):
            sorts.append(1)
            return table

    monkeypatch.setattr(btf, "load_kernel_btf", lambda modules=True: "types")
    monkeypatch.setattr(kallsyms, "load", Syms)
    monkeypatch.setattr(catalog, "Catalog", lambda typedb, syms: None)
    unsorted = sample()
    unsorted.symbols = None
    monkeypatch.setattr(view_mod, "read_snapshot", lambda typedb, syms, cat, key: unsorted)
    registered = []
    monkeypatch.setattr(view_mod.atexit, "register", registered.append)
    monkeypatch.setenv("IPFT_CACHE_DIR", str(tmp_path / "then"))

    view = KernelView._read(None, "k" * 64)
    assert not (tmp_path / "then").exists() and not sorts, "nothing sorted or written on the way to tracing"
    assert registered == [view.store], "stored at exit at the latest"
    assert view.symbol(0xffffffff81000104) == "ip_rcv" and sorts == [1]
    monkeypatch.setenv("IPFT_CACHE_DIR", str(tmp_path / "now"))
    view.store_soon()
    view._saver.join(timeout=30)
    view.store()   # at exit: already done
    assert not (tmp_path / "now").exists()
    monkeypatch.setenv("IPFT_CACHE_DIR", str(tmp_path / "then"))
    stored = snapshot.load("k" * 64)
    assert stored is not None and stored.symbols.load().names == table.names
    assert len(list((tmp_path / "then" / "kernel").glob(snapshot.SNAPSHOT_GLOB))) == 1


def test_a_cache_that_cannot_be_written_costs_nothing_but_the_next_start(tmp_path):
    (tmp_path / "file").write_text("")
    view = KernelView(sample(), typedb="types", syms=object())
    view._unsaved, view._store_base = True, tmp_path / "file"   # a file where the directory should be
    view.store()
    assert not view._unsaved


# -- with this machine's kernel ----------------------------------------------------------------------
PROBE = r"""
import json, sys, time
from ipft_web.kernel.view import KernelView
v = KernelView.load()
fs = v.skb_functions()
name = "ip_rcv" if v.function("ip_rcv") else fs[0].name
a = v.addresses(name)
print(json.dumps({"stored": v.stored, "kallsyms_read": v._syms is not None, "name": name, "functions": [[f.name, f.module, f.pos, f.duplicate] for f in fs],
                  "tracepoints": [t.label for t in v.tracepoints], "offsets": v.offsets(),
                  "kfree": str(v.function("kfree_skbmem")), "addresses": a,
                  "every_address": {f.name: sorted(v.addresses(f.name)) for f in fs},
                  "symbol": v.symbol(a[0] + 1) if a else None, "btf": v.btf_target(name),
                  "reason": v.drop_reason(2), "source": v.catalog_source,
                  "typedb_loaded": v._typedb is not None, "seconds": v.load_seconds, "derived": v._derived}))
"""


@pytest.mark.root
def test_a_second_process_loads_the_same_view(tmp_path):
    env = dict(os.environ, IPFT_CACHE_DIR=str(tmp_path / "c"))

    def probe():
        out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True,
                             timeout=900)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    first, second = probe(), probe()
    for p in (tmp_path / "c" / "kernel").glob("*.json"):   # as after a reboot: the build part stays
        p.unlink()
    third = probe()
    assert not first["stored"] and first["typedb_loaded"]
    assert second["stored"] and not second["typedb_loaded"], "the second process read no type info"
    assert third["stored"] and not third["typedb_loaded"], "nor did one of a later boot"
    if first["addresses"]:   # kallsyms shows addresses (root): the text bases give a later boot's
        assert third["derived"] == "text bases" and not third["kallsyms_read"], third["derived"]
    how = third["derived"] or "kallsyms"
    seconds = [doc.pop("seconds") for doc in (first, second, third)]
    for doc in (first, second, third):
        doc.pop("stored"), doc.pop("typedb_loaded"), doc.pop("kallsyms_read"), doc.pop("derived")
    assert first == second == third
    assert first["functions"] and first["addresses"] and first["symbol"] == first["name"]
    assert len(list((tmp_path / "c" / "kernel").glob(snapshot.SNAPSHOT_GLOB))) == 1, "the third stored this boot's again"
    print(f"\nkernel view: read {seconds[0]:.2f} s, from the boot's snapshot {seconds[1]:.2f} s, "
          f"from the kernel's {seconds[2]:.2f} s (addresses from {how})")


@pytest.mark.root
def test_cli_says_when_the_view_comes_from_the_boot_cache():
    # The test run's cache (conftest), so the program is not compiled again; its kernel views go.
    # Two functions (or, on the host, the tracepoint of one): kprobes on every skb function would
    # cost minutes to attach and detach under emulation.
    cache = os.environ["IPFT_CACHE_DIR"]
    snapshot.clear()
    argv = ipft_argv() + ["-m", "0x7e57", "--duration", "0.3", "-v", "-r", "^(ip_rcv|netif_receive_skb)$"]
    runs = [subprocess.run(argv, capture_output=True, text=True, timeout=900) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr
    assert "kernel view loaded from this boot's cache" not in runs[0].stderr
    assert "kernel view loaded from this boot's cache" in runs[1].stderr
    assert len(list((Path(cache) / "kernel").glob(snapshot.SNAPSHOT_GLOB))) == 1
