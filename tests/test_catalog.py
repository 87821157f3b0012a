"""ipft_web.kernel.catalog and kallsyms: on this machine's kernel, and on made-up kernels."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ipft_web.errors import UsageError
from ipft_web.kernel import kallsyms
from ipft_web.kernel.catalog import (SOURCE_FTRACE, SOURCE_KALLSYMS, SOURCE_TYPES, Catalog, CatalogEntry,
                                     SkbTracepoint, compile_regex)
from ipft_web.kernel.kallsyms import Kallsyms

SRC = Path(__file__).parent / "data" / "fake_skb.c"
VMLINUX = Path("/sys/kernel/btf/vmlinux")

KALLSYMS_TEXT = """\
ffffffff81000000 T _stext
ffffffff81000000 T _text
ffffffff81001000 t first
ffffffff81001040 T third
ffffffff81001100 t helper
ffffffff81001200 t helper
ffffffff81001300 d some_data
ffffffff81001400 T via_typedef2
ffffffff81001500 T sixth
ffffffff81001600 T uses
ffffffffc0a00000 t via_typedef\t[fake_mod]
ffffffffc0a00100 t mod_only\t[fake_mod]
"""


@pytest.fixture(scope="module")
def fake_db(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    from ipft_web.kernel.dwarf import load_dwarf
    out = tmp_path_factory.mktemp("cat") / "fake.o"
    subprocess.run(["gcc", "-g", "-O2", "-c", str(SRC), "-o", str(out)], check=True, capture_output=True)
    return load_dwarf(out)


# -- kallsyms ------------------------------------------------------------------------------------
def test_kallsyms_parse():
    k = Kallsyms(KALLSYMS_TEXT)
    assert "first" in k and "some_data" not in k
    assert k.count("helper") == 2 and k.is_duplicate("helper") and not k.is_duplicate("first")
    assert k.duplicates() == {"helper"}
    assert k.module("via_typedef") == "fake_mod" and k.module("first") is None
    assert k.addresses("helper") == [0xffffffff81001100, 0xffffffff81001200]
    assert k.addresses("nope") == []
    assert k.symbolize(0xffffffff81001044) == "third"
    assert k.symbolize(0xffffffff81001040) == "third"
    assert k.symbolize_offset(0xffffffff81001044) == "third+0x4"
    assert k.symbolize(0xffffffffc0a00105) == "mod_only"
    assert k.symbolize(0xffffffff81000010) in ("_stext", "_text")
    assert k.symbolize(0x1000) is None and k.symbolize(0) is None
    assert k.symbolize(0xffffffffc0a00100 + (1 << 30)) is None  # far past the last symbol
    assert len(k) == 11 and k.has_addresses


def test_kallsyms_hidden_addresses():
    k = Kallsyms(re.sub(r"^[0-9a-f]+", "0000000000000000", KALLSYMS_TEXT, flags=re.M))
    assert not k.has_addresses and "first" in k and k.count("helper") == 2
    assert k.addresses("first") == [] and k.symbolize(0xffffffff81001044) is None


def test_kallsyms_unreadable(tmp_path):
    k = kallsyms.load(str(tmp_path / "missing"))
    assert len(k) == 0 and k.symbolize(0xffffffff81000000) is None


def test_kallsyms_host():
    k = kallsyms.load()
    if not len(k):
        pytest.skip("/proc/kallsyms unreadable")
    assert "ip_rcv" in k
    if k.has_addresses:
        addr = k.addresses("ip_rcv")[0]
        assert k.symbolize(addr + 1) == "ip_rcv"


def test_filter_lists(tmp_path):
    t1, t2 = tmp_path / "t1", tmp_path / "t2"
    t1.mkdir()
    t2.mkdir()
    (t2 / "available_filter_functions").write_text("ip_rcv\nfoo [mod]\nfoo [other]\nffffffff81000000 bar\n")
    names, why = kallsyms.read_available_filter_functions((str(t1), str(t2)))
    assert names == {"ip_rcv", "foo", "bar"} and str(t2) in why
    names, why = kallsyms.read_available_filter_functions((str(t1),))
    assert names is None and "does not exist" in why
    (t1 / "available_filter_functions").mkdir()  # unreadable in another way
    names, why = kallsyms.read_available_filter_functions((str(t1),))
    assert names is None and "not readable" in why

    bl = tmp_path / "blacklist"
    bl.write_text("0xffffffff81000000-0xffffffff81000010\tnmi_handle\n0xffffffff81000020-0xffffffff81000030\tdo_int3\n")
    assert kallsyms.read_blacklist(str(bl)) == ({"nmi_handle", "do_int3"}, f"read {bl}")
    names, why = kallsyms.read_blacklist(str(tmp_path / "no" / "kprobes" / "blacklist"))
    assert names is None and "debugfs" in why


def test_filter_list_permission_denied(tmp_path, monkeypatch):
    d = tmp_path / "tr"
    d.mkdir()
    (d / "available_filter_functions").write_text("x\n")

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(kallsyms, "open", denied, raising=False)   # root reads a mode-000 file
    names, why = kallsyms.read_available_filter_functions((str(d),))
    assert names is None and "permission denied" in why


# -- catalog on a made-up kernel -----------------------------------------------------------------
def test_catalog_kallsyms_minus_blacklist(fake_db):
    cat = Catalog(fake_db, Kallsyms(KALLSYMS_TEXT), available=None, blacklist={"sixth"}, events_dirs=())
    assert cat.source == SOURCE_KALLSYMS
    allf = {e.name: e for e in cat.skb_functions()}
    assert {n: e.pos for n, e in allf.items()} == {"first": 1, "third": 3, "via_typedef": 2, "via_typedef2": 1,
                                                   "helper": 2, "uses": 2, "sixth": 6}
    traceable = {e.name: e for e in cat.traceable_skb_functions()}
    assert set(traceable) == {"first", "third", "via_typedef", "via_typedef2", "helper", "uses"}
    assert traceable["helper"].duplicate and not traceable["first"].duplicate
    assert [e.name for e in cat.match("^via_")] == ["via_typedef", "via_typedef2"]
    assert [e.name for e in cat.match(re.compile("third"))] == ["third"]
    assert cat.entry("helper") == CatalogEntry("helper", None, 2, True)
    assert cat.entry("sixth") is None                    # blacklisted
    assert cat.entry("no_skb") is None                   # not in kallsyms
    assert cat.entry("mod_only") is None                 # no type info


def test_catalog_available_filter_functions(fake_db):
    cat = Catalog(fake_db, Kallsyms(KALLSYMS_TEXT), available={"first", "sixth", "no_skb"}, events_dirs=())
    assert cat.source == SOURCE_FTRACE
    assert [e.name for e in cat.traceable] == ["first", "sixth"]
    assert cat.entry("no_skb") == CatalogEntry("no_skb", None, 0, False)
    assert "2 traceable (available_filter_functions)" in cat.describe()


def test_catalog_without_symbols(fake_db):
    cat = Catalog(fake_db, Kallsyms(""), available=None, blacklist=None, events_dirs=())
    assert cat.source == SOURCE_TYPES and len(cat.traceable) == len(cat.skb_functions())


@pytest.mark.parametrize("bad", ["(", "[a-", "*x", "a" * 5000, 42])
def test_bad_regex_is_a_usage_error(fake_db, bad):
    cat = Catalog(fake_db, Kallsyms(KALLSYMS_TEXT), available=None, blacklist=set(), events_dirs=())
    with pytest.raises(UsageError) as exc:
        cat.match(bad)
    assert "\n" not in str(exc.value)


def test_compile_regex_passes_patterns():
    p = re.compile("x")
    assert compile_regex(p) is p and compile_regex("^ip_").search("ip_rcv")


def test_tracepoints(fake_db, tmp_path):
    events = tmp_path / "events"
    (events / "net" / "net_dev_queue").mkdir(parents=True)
    (events / "qdisc" / "qdisc_dequeue").mkdir(parents=True)
    cat = Catalog(fake_db, Kallsyms(KALLSYMS_TEXT), available=None, blacklist=set(),
                  events_dirs=(str(tmp_path / "missing"), str(events)))
    tps = cat.skb_tracepoints()
    assert tps == [SkbTracepoint("net_dev_queue", "net", 0), SkbTracepoint("qdisc_dequeue", "qdisc", 2),
                   SkbTracepoint("kfree_skb", "skb", 0)]  # by label; kfree_skb's group from the built-in table
    assert {t.label for t in tps} == {"skb:kfree_skb", "net:net_dev_queue", "qdisc:qdisc_dequeue"}
    assert cat.kfree_skb_args() == {"skb": 0, "location": 1, "reason": 2}


# -- catalog on this machine ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def host_catalog():
    if not VMLINUX.exists():
        pytest.skip("no /sys/kernel/btf/vmlinux")
    from ipft_web.kernel.btf import load_kernel_btf
    return Catalog(load_kernel_btf(modules=True), kallsyms.load())


def test_host_catalog(host_catalog):
    cat = host_catalog
    assert cat.source in (SOURCE_FTRACE, SOURCE_KALLSYMS)
    assert cat.notes  # says what was read or why not
    funcs = cat.skb_functions()
    assert len(funcs) > 1000
    ip_rcv = cat.entry("ip_rcv")
    assert ip_rcv is not None and ip_rcv.pos == 1 and ip_rcv.module is None
    assert cat.entry("kfree_skbmem").pos == 1
    assert len(cat.traceable_skb_functions()) > 1000
    assert any(e.pos > 5 for e in funcs)  # positions are kept as they are
    assert [e.name for e in cat.match(r"^ip_rcv$")] == ["ip_rcv"]


def test_host_tracepoints(host_catalog):
    tps = {t.name: t for t in host_catalog.skb_tracepoints()}
    assert tps["kfree_skb"].arg == 0 and tps["kfree_skb"].group == "skb"
    assert tps["netif_receive_skb"].label == "net:netif_receive_skb"
    assert tps["consume_skb"].arg == 0
    args = host_catalog.kfree_skb_args()
    assert args["skb"] == 0 and args["location"] == 1 and args["reason"] == 2


def test_host_duplicates_flagged(host_catalog):
    k = host_catalog.kallsyms
    dups = [e for e in host_catalog.skb_functions() if k.count(e.name) > 1]
    assert all(e.duplicate for e in dups)
    assert not any(e.duplicate for e in host_catalog.skb_functions() if k.count(e.name) <= 1)


def test_addresses_of_many_names_in_one_pass():
    k = Kallsyms(KALLSYMS_TEXT)
    names = sorted(k.names())[:3] + ["not_there"]
    assert k.addresses_of(names) == {n: k.addresses(n) for n in names if n in k}
    hidden = Kallsyms(re.sub(r"^[0-9a-f]+", "0000000000000000", KALLSYMS_TEXT, flags=re.M))
    assert hidden.addresses_of(names) == {}


def test_a_list_read_ahead_is_taken_once_and_forgotten(tmp_path):
    """kallsyms.prefetch: the next read takes what the thread read (even if the file changed since),
    the one after reads the file again; forget_prefetched() drops what nobody took."""
    f = tmp_path / "available_filter_functions"
    f.write_text("a\nb\n")
    kallsyms.prefetch([str(f)])
    kallsyms._ahead[str(f)].join()
    f.write_text("c\n")
    assert kallsyms.read_available_filter_functions((str(tmp_path),))[0] == {"a", "b"}
    assert kallsyms.read_available_filter_functions((str(tmp_path),))[0] == {"c"}
    kallsyms.prefetch([str(f)])
    kallsyms.forget_prefetched()
    f.write_text("d\n")
    assert kallsyms.read_available_filter_functions((str(tmp_path),))[0] == {"d"}
    missing = str(tmp_path / "nope" / "available_filter_functions")
    kallsyms.prefetch([missing])
    names, why = kallsyms.read_available_filter_functions((str(tmp_path / "nope"),))
    assert names is None and "does not exist" in why, "the thread's error, as a read now would give it"
