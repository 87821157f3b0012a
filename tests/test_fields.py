"""Field paths, their resolution through the running kernel's BTF, typed decoding, scripts, output."""
import struct
from pathlib import Path

import pytest

from ipft_web.config import TraceConfig
from ipft_web.errors import UsageError
from ipft_web.fields import bpfmap, paths, scripts
from ipft_web.fields.decode import FieldSet
from ipft_web.journeys import Assembler, Hit
from ipft_web.output import format_text

BTF = Path("/sys/kernel/btf/vmlinux")


@pytest.fixture(scope="module")
def typedb():
    if not BTF.exists():
        pytest.skip("no kernel BTF")
    from ipft_web.kernel.btf import load_kernel_btf
    return load_kernel_btf(modules=True)


# -- syntax ---------------------------------------------------------------------------------------
def test_parse_paths_and_formats():
    s = paths.parse(" skb->dev->name ")
    assert (s.name, s.base, s.segments, s.fmt) == ("skb->dev->name", "skb", ("dev", "name"), None)
    s = paths.parse("sk->__sk_common.skc_state:enum=TCP_ESTABLISHED")
    assert s.segments == ("__sk_common.skc_state",) and (s.fmt, s.fmt_arg) == ("enum", "TCP_ESTABLISHED")
    assert paths.parse("tcph->seq:hex").fmt == "hex"


@pytest.mark.parametrize("bad", [
    "", "skb", "skb->", "skb.len", "nope->len", "skb->len;system()", "skb->len:zz", "skb->a..b",
    "skb->len:flags=", "skb->" + "a" * 200, "skb->1x", "skb->len\nskb->mark", "skb->len:enum=a-b", 7, None,
])
def test_parse_refuses(bad):
    with pytest.raises(UsageError) as exc:
        paths.parse(bad)
    assert "\n" not in str(exc.value)


def test_parse_all_limits():
    with pytest.raises(UsageError, match="at most 8"):
        paths.parse_all([f"skb->len:{f}" for f in ("dec",)] * 1 + [f"skb->m{i}" for i in range(8)])
    with pytest.raises(UsageError, match="twice"):
        paths.parse_all(["skb->len", "skb->len:hex"])
    with pytest.raises(UsageError, match="list"):
        paths.parse_all("skb->len")


# -- resolution through BTF -----------------------------------------------------------------------
def test_resolve_chains(typedb):
    skb_dev = typedb.struct_member("sk_buff", "dev").offset
    r = paths.resolve(typedb, paths.parse("skb->dev->name"))
    assert r.base == paths.BASE_SKB and r.derefs == (skb_dev,)
    assert r.off == typedb.struct_member("net_device", "name").offset and r.size == 16
    r = paths.resolve(typedb, paths.parse("shinfo->gso_type"))
    end = typedb.struct_member("sk_buff", "end")
    if end.kind != "ptr":
        assert (r.base, r.base_off, r.derefs) == (paths.BASE_HEAD32, end.offset, ())
    assert r.off == typedb.struct_member("skb_shared_info", "gso_type").offset
    r = paths.resolve(typedb, paths.parse("tcph->syn"))
    assert r.base == paths.BASE_HEAD16 and r.member.bit_size == 1 and r.size == 1
    r = paths.resolve(typedb, paths.parse("sk->sk_socket->file->f_cred->euid.val"))
    assert len(r.derefs) == 4


@pytest.mark.parametrize("bad, words", [
    ("skb->nosuch", ["no member 'nosuch'", "len", "mark"]),
    ("skb->dev->nosuch", ["no member 'nosuch'", "ifindex"]),
    ("skb->len->x", ["not a pointer to a struct"]),
    ("skb->head->x", ["not a pointer to a struct"]),
    ("skb->sk->sk_socket->file->f_cred->user->uid.val", ["at most 4"]),
    ("skb->cb", []),   # 48-byte array: kept, truncated
    ("skb->dev->stats", ["pick one of its members"]),
    ("skb->sk->sk_uid.val:flags=NO_SUCH_ENUMERATOR_ANYWHERE", ["no enum"]),
])
def test_resolve_refuses_with_valid_members(typedb, bad, words):
    spec = paths.parse(bad)
    if not words:
        r = paths.resolve(typedb, spec)
        assert r.truncated and r.size == 16
        return
    with pytest.raises(UsageError) as exc:
        FieldSet(typedb, [paths.resolve(typedb, spec)])
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"field {spec.name}")
    for w in words:
        assert w in msg


# -- decoding -------------------------------------------------------------------------------------
def _area(states, values):
    return bytes(states).ljust(8, b"\0") + b"".join(v.ljust(16, b"\0") for v in values)


def test_decode_types(typedb):
    names = ["skb->len", "shinfo->gso_type", "skb->dev->name", "iph->daddr", "ip6h->saddr", "tcph->seq",
             "tcph->syn", "eth->h_dest", "skb->dev", "skb->mark:hex", "sk->__sk_common.skc_state"]
    fs = FieldSet(typedb, [paths.resolve(typedb, paths.parse(n)) for n in names])
    gso = typedb.struct_member("skb_shared_info", "gso_type")
    from ipft_web.fields import enums
    vals = enums.find(typedb, "SKB_GSO_TCPV4")
    gso_v = vals["SKB_GSO_TCPV4"] | vals["SKB_GSO_TCPV6"]
    syn_byte = 1 << fs.fields[6].member.bit_offset
    raw = [struct.pack("<I", 84), struct.pack("<I", gso_v), b"veth0\0junk", bytes([10, 0, 0, 2]),
           bytes.fromhex("fd000000000000000000000000000001"), struct.pack(">I", 123456),
           bytes([syn_byte]), bytes.fromhex("0a1b2c3d4e5f"), struct.pack("<Q", 0xffff888012345678),
           struct.pack("<I", 0xdeadbeef), bytes([1])]
    # 11 fields are more than the program takes: decode the first 8, then the rest
    fs8 = FieldSet(typedb, fs.fields[:8])
    out = fs8.decode(_area([0] * 8, raw[:8]))
    assert out == {"skb->len": 84, "shinfo->gso_type": "SKB_GSO_TCPV4|SKB_GSO_TCPV6", "skb->dev->name": "veth0",
                   "iph->daddr": "10.0.0.2", "ip6h->saddr": "fd00::1", "tcph->seq": 123456, "tcph->syn": 1,
                   "eth->h_dest": "0a:1b:2c:3d:4e:5f"}
    fs3 = FieldSet(typedb, fs.fields[8:])
    out = fs3.decode(_area([0, 0, 0], raw[8:]))
    assert out == {"skb->dev": "0xffff888012345678", "skb->mark": "0xdeadbeef",
                   "sk->__sk_common.skc_state": "TCP_ESTABLISHED"}
    assert gso.size == 4
    # NULL on the way, unreadable, no header: null
    out = fs3.decode(_area([1, 2, 3], raw[8:]))
    assert out == dict.fromkeys(out, None)
    # events without a field area (kfree_skbmem) carry no fields
    assert fs3.decode(b"") is None
    info = {i["name"]: i for i in fs8.info()}
    assert info["skb->len"]["numeric"] and not info["skb->dev->name"]["numeric"]


class FakeObject:
    """The two maps bpfmap writes, as bpfobject.BPFObject.map() hands them out (bytes in, bytes out)."""

    class Map(dict):
        def __init__(self, value_size):
            super().__init__()
            self.spec = type("Spec", (), {"value_size": value_size})
            self.writes = []

        def update(self, key, value):
            assert len(key) == 4 and len(value) == self.spec.value_size
            self[struct.unpack("<I", key)[0]] = value
            self.writes.append(struct.unpack("<I", key)[0])

    def __init__(self):
        self.maps = {"ipft_fields": self.Map(28), "ipft_nfields": self.Map(4)}

    def map(self, name):
        return self.maps[name]


def test_bpfmap_writes_count_last(typedb):
    fields = paths.resolve_all(typedb, ["skb->len", "skb->dev->name"])
    obj = FakeObject()
    bpfmap.load(obj, fields)
    count, table = obj.maps["ipft_nfields"], obj.maps["ipft_fields"]
    assert struct.unpack("<I", count[0])[0] == 2 and count.writes == [0, 0]   # zeroed first, set last
    base, nderef, size, _pad, base_off, d0, _d1, _d2, _d3, off = struct.unpack("<BBBBiiiiii", table[1])
    assert (base, nderef, size, d0, off) == (0, 1, 16, fields[1].derefs[0], fields[1].off)
    bpfmap.clear(obj)
    assert struct.unpack("<I", count[0])[0] == 0


def test_bpfmap_refuses_a_map_of_another_layout(typedb):
    fields = paths.resolve_all(typedb, ["skb->len"])
    obj = FakeObject()
    obj.maps["ipft_fields"] = FakeObject.Map(24)
    with pytest.raises(ValueError, match="24-byte"):
        bpfmap.load(obj, fields)


# -- output ---------------------------------------------------------------------------------------
def test_journey_and_text_output():
    out = []
    asm = Assembler(out.append)
    base = dict(skb=1, kind="kprobe", cpu=0, len=84, mark=1, ifindex=1, dev="lo", netns=1)
    asm.feed(Hit(ts=10, func="ip_rcv", fields={"skb->len": 84, "skb->dev->name": "my dev"}, **base))
    asm.feed(Hit(ts=20, func="kfree_skbmem", end="free", **base))
    j = out[0]
    assert j["hits"][0]["fields"] == {"skb->len": 84, "skb->dev->name": "my dev"}
    assert "fields" not in j["hits"][1]
    text = format_text(j)
    assert 'ip_rcv  skb->len=84 skb->dev->name="my dev"' in text


def test_no_fields_no_key():
    out = []
    asm = Assembler(out.append)
    asm.feed(Hit(skb=1, ts=1, func="f", kind="kprobe", cpu=0, len=1, mark=1, ifindex=0, dev=None, netns=0,
                 end="free"))
    assert "fields" not in out[0]["hits"][0]


# -- scripts ----------------------------------------------------------------------------------------
def test_shipped_scripts_resolve(typedb):
    names = {s.name for s in scripts.installed()}
    assert {"gso", "tcp", "conntrack", "socket"} <= names
    for s in scripts.installed():
        if s.name == "conntrack" and not typedb.has_struct("nf_conn"):
            continue
        fs = FieldSet(typedb, paths.resolve_all(typedb, s.fields))
        assert len(fs) == len(s.fields)
        if s.chart:
            assert {i["name"]: i for i in fs.info()}[s.chart]["numeric"]


@pytest.fixture
def script_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(scripts, "dirs", lambda: [tmp_path])
    return tmp_path


@pytest.mark.parametrize("text, words", [
    ('fields = ["skb->len"]\nrun = "rm -rf /"\n', "unknown key"),
    ('fields = "skb->len"\n', "non-empty list"),
    ('fields = []\n', "non-empty list"),
    ('fields = ["skb->len"]\nchart = "skb->mark"\n', "chart must be one of its fields"),
    ('fields = ["nope->x"]\n', "unknown base"),
    ("fields = [\n", "not valid TOML"),
    ('fields = [' + ",".join(f'"skb->m{i}"' for i in range(9)) + ']\n', "at most 8"),
])
def test_script_validation(script_dir, text, words):
    (script_dir / "bad.toml").write_text(text)
    with pytest.raises(UsageError, match=words):
        scripts.load("bad")
    assert scripts.installed() == []     # broken scripts are not listed


def test_script_names_and_files(script_dir, tmp_path):
    (script_dir / "mine.toml").write_text('description = "d"\nfields = ["skb->len", "skb->mark:hex"]\n'
                                          'chart = "skb->len"\n')
    s = scripts.load("mine")
    assert s.as_dict() == {"name": "mine", "description": "d", "fields": ["skb->len", "skb->mark:hex"],
                           "chart": "skb->len"}
    for bad in ("../mine", "/etc/passwd", "Mine", "", None, "mine.toml", "a" * 80):
        with pytest.raises(UsageError):
            scripts.load(bad)
    with pytest.raises(UsageError, match="no installed script"):
        scripts.load("other")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(UsageError, match="UTF-8"):
        scripts.load_file(tmp_path / "bin.toml")
    with pytest.raises(UsageError, match="no such file"):
        scripts.resolve_choice(str(tmp_path / "none.toml"))
    cfg = TraceConfig(mark=1, script="mine", fields=["skb->len", "skb->dev->name"])
    assert [s.name for s in cfg.field_specs] == ["skb->len", "skb->mark", "skb->dev->name"]


def test_cli_script_errors_exit_2(script_dir, capsys):
    from ipft_web.cli import main
    assert main(["-m", "1", "-s", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ipft: error: no installed script") and err.count("\n") == 1
    assert main(["-m", "1", "--field", "skb->len:bogus"]) == 2
    assert "bad format" in capsys.readouterr().err
