"""The compiled-program image and its on-disk cache (ipft_web/bpfobject.py, ipft_web/bpfcache.py).

Unit tests build images by hand; the root tests compile the real program with BCC, store it,
and trace from what a second process loads without compiling."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import pytest

from ipft_web import bpfcache
from ipft_web.bpfobject import FORMAT, Image, MapSpec, ProgImage, link, unlink
from ipft_web.kernel import sysbpf

from ipft_testlib import IN_GUEST, ipft_argv


def ld_map(fd: int, dst: int = 1) -> bytes:
    """ld_imm64 dst, map fd (two slots)."""
    return (sysbpf.insn(sysbpf.BPF_LD_IMM64, dst, sysbpf.BPF_PSEUDO_MAP_FD, 0, fd)
            + sysbpf.insn(0, 0, 0, 0, 0))


def ld_imm64(value: int, dst: int = 1) -> bytes:
    return sysbpf.insn(sysbpf.BPF_LD_IMM64, dst, 0, 0, value & 0xFFFFFFFF) + sysbpf.insn(0, 0, 0, 0, value >> 32)


def sample_image() -> Image:
    insns = ld_imm64(0x1234_5678_9abc) + ld_map(7) + sysbpf.RETURN_ZERO + ld_map(9, dst=2) + sysbpf.RETURN_ZERO
    prog = unlink(insns, {7: "a", 9: "b"}, "p")
    maps = {"a": MapSpec("a", sysbpf.BPF_MAP_TYPE_ARRAY, 4, 8, 1), "b": MapSpec("b", sysbpf.BPF_MAP_TYPE_RINGBUF, 0, 0, 4096)}
    return Image(maps, {"p": prog}, "GPL")


def test_unlink_and_link_round_trip():
    img = sample_image()
    prog = img.progs["p"]
    assert prog.relocs == [(2, "a"), (6, "b")]
    # the immediates are zeroed in the image, and a plain 64-bit constant is left alone
    assert struct.unpack_from("<i", prog.insns, 2 * 8 + 4)[0] == 0
    assert struct.unpack_from("<I", prog.insns, 4)[0] == 0x56789ABC
    out = link(prog, {"a": 41, "b": 42})
    assert struct.unpack_from("<i", out, 2 * 8 + 4)[0] == 41 and struct.unpack_from("<i", out, 6 * 8 + 4)[0] == 42
    assert out[:16] == prog.insns[:16]


def test_unlink_refuses_an_unknown_map_fd():
    with pytest.raises(Exception, match="map fd 5"):
        unlink(ld_map(5) + sysbpf.RETURN_ZERO, {7: "a"})


def test_json_round_trip():
    img = sample_image()
    back = Image.from_json(json.loads(json.dumps(img.to_json())))
    assert back.maps == img.maps and back.license == "GPL"
    assert back.progs["p"].insns == img.progs["p"].insns and back.progs["p"].relocs == img.progs["p"].relocs


def damaged(edit):
    doc = json.loads(json.dumps(sample_image().to_json()))
    edit(doc)
    return doc


@pytest.mark.parametrize("edit", [
    lambda d: d.update(format=FORMAT + 1),
    lambda d: d.update(maps="x"),
    lambda d: d["maps"][0].update(name="a;b"),
    lambda d: d["maps"][0].update(max_entries=-1),
    lambda d: d["maps"][0].update(extra=1),
    lambda d: d["maps"][0].update(key_size=True),
    lambda d: d["progs"]["p"].update(insns="!!!"),
    lambda d: d["progs"]["p"].update(insns="AAAA"),                        # 3 bytes
    lambda d: d["progs"]["p"]["relocs"].append([0, "a"]),                  # not a map load
    lambda d: d["progs"]["p"]["relocs"].append([2, "nosuchmap"]),
    lambda d: d["progs"]["p"]["relocs"].append([10 ** 6, "a"]),
    lambda d: d["progs"]["p"]["relocs"].append([-1, "a"]),
    lambda d: d.update(license="GPL\n"),
    lambda d: d.update(progs={"../x": {"insns": "", "relocs": []}}),
])
def test_json_damage_is_refused(edit):
    with pytest.raises((ValueError, TypeError)):
        Image.from_json(damaged(edit))


def test_key_follows_what_is_compiled(monkeypatch):
    a = bpfcache.key("text", ["-DX=1"])
    assert a == bpfcache.key("text", ["-DX=1"])
    assert len({a, bpfcache.key("text2", ["-DX=1"]), bpfcache.key("text", ["-DX=2"])}) == 3
    # not the kernel: one image serves every kernel of the machine's architecture
    uname = os.uname()
    monkeypatch.setattr(os, "uname", lambda: os.uname_result(
        (uname.sysname, uname.nodename, "9.9.9-other", "#1 other", uname.machine)))
    assert bpfcache.key("text", ["-DX=1"]) == a
    monkeypatch.setattr(os, "uname", lambda: os.uname_result(
        (uname.sysname, uname.nodename, uname.release, uname.version, "aarch64")))
    assert bpfcache.key("text", ["-DX=1"]) != a


def test_the_program_is_the_same_for_every_kernel():
    """Nothing of the kernel is in what is compiled: its offsets and tracepoint arguments are
    written into the config map (program.config_value), so the spec depends on the variant only."""
    from ipft_web import program
    for fields in (False, True):
        spec = program.build_spec(fields)
        assert "OFF_SKB_MARK=" not in " ".join(spec.cflags) and not spec.slots
        assert spec.text == program.build_spec(fields).text
    src = (program.resources.path("bpf") / "ipft.bpf.c").read_text()
    import re
    in_c = re.findall(r"#define (OFF_[A-Z_]+) \(cfg->off\[(\d+)\]\)", src)
    assert [(m, int(i)) for m, i in in_c] == [(m, i) for i, (m, _s, _p) in enumerate(program.FIELDS)], \
        "bpf/ipft.bpf.c's OFF_* and program.FIELDS in the same order"
    assert f"#define IPFT_N_OFFSETS {len(program.FIELDS)}" in src
    assert f"#define IPFT_MAX_TP_SLOTS {program.MAX_TP_SLOTS}" in src


def test_config_value_carries_the_kernel():
    from ipft_web import program
    tps = [program.Tracepoint(name="netif_receive_skb", group="net", arg=0),
           program.Tracepoint(name="kfree_skb", group="skb", arg=0),
           program.Tracepoint(name="consume_skb", group="skb", arg=0),
           program.Tracepoint(name="br_fdb_add", group="bridge", arg=2)]
    spec = program.with_slots(program.build_spec(), tps)
    assert (spec.kfree_skb_slot, spec.consume_skb_slot) == (1, 2) and spec.slots[3].arg == 2
    offsets = {m: 100 + i for i, (m, _s, _p) in enumerate(program.FIELDS)}
    raw = program.config_value(0xDEADBEEF, 0xFFFF0000, offsets, spec, {"reason": 3, "location": 1})
    v = program.CONFIG.unpack(raw)
    n = len(program.FIELDS)
    assert v[:2] == (0xDEAD0000, 0xFFFF0000)
    assert list(v[2:2 + n]) == [100 + i for i in range(n)]
    assert v[2 + n:6 + n] == (1, 3, 1, 2)
    assert v[6 + n:10 + n] == (0, 0, 0, 2)
    v = program.CONFIG.unpack(program.config_value(1, 0xFFFFFFFF, offsets, program.with_slots(program.build_spec(), []),
                                                   {}))
    assert v[2 + n:6 + n] == (-1, -1, 0xFFFFFFFF, 0xFFFFFFFF), "no kfree_skb arguments, no lifecycle slots"


def test_store_and_load(tmp_path, monkeypatch):
    monkeypatch.setenv("IPFT_CACHE_DIR", str(tmp_path / "c"))
    img = sample_image()
    path = bpfcache.save("k" * 64, img)
    assert path and path.parent == tmp_path / "c"
    assert oct((tmp_path / "c").stat().st_mode & 0o777) == "0o700"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    back = bpfcache.load("k" * 64)
    assert back is not None and back.progs["p"].insns == img.progs["p"].insns
    assert bpfcache.load("j" * 64) is None


def test_off_means_off(tmp_path, monkeypatch):
    for value in ("off", "", "0"):
        monkeypatch.setenv("IPFT_CACHE_DIR", value)
        assert bpfcache.save("k" * 64, sample_image()) is None and bpfcache.load("k" * 64) is None


def test_a_file_renamed_to_another_key_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("IPFT_CACHE_DIR", str(tmp_path))
    path = bpfcache.save("a" * 64, sample_image())
    os.rename(path, tmp_path / f"{'b' * 64}.json")
    assert bpfcache.load("b" * 64) is None


def test_a_damaged_file_is_ignored(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("IPFT_CACHE_DIR", str(tmp_path))
    path = bpfcache.save("a" * 64, sample_image())
    path.write_text("{not json")
    assert bpfcache.load("a" * 64) is None
    assert "ignoring cached program" in caplog.text


def test_writable_by_others_is_not_trusted(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("IPFT_CACHE_DIR", str(tmp_path / "c"))
    path = bpfcache.save("a" * 64, sample_image())
    os.chmod(path, 0o622)
    assert bpfcache.load("a" * 64) is None
    os.chmod(path, 0o600)
    os.chmod(tmp_path / "c", 0o777)
    assert bpfcache.load("a" * 64) is None
    assert bpfcache.save("b" * 64, sample_image()) is None
    assert "writable by nobody else" in caplog.text
    os.chmod(tmp_path / "c", 0o700)
    assert bpfcache.load("a" * 64) is not None


def test_a_symlink_is_not_followed(tmp_path, monkeypatch):
    monkeypatch.setenv("IPFT_CACHE_DIR", str(tmp_path / "c"))
    real = bpfcache.save("a" * 64, sample_image())
    os.symlink(real, tmp_path / "c" / f"{'b' * 64}.json")
    assert bpfcache.load("b" * 64) is None


@pytest.mark.root
def test_a_file_of_another_user_is_not_trusted(tmp_path, monkeypatch):
    monkeypatch.setenv("IPFT_CACHE_DIR", str(tmp_path / "c"))
    path = bpfcache.save("a" * 64, sample_image())
    os.chown(path, 65534, 65534)
    assert bpfcache.load("a" * 64) is None


def test_old_images_are_pruned(tmp_path, monkeypatch):
    monkeypatch.setenv("IPFT_CACHE_DIR", str(tmp_path))
    for i in range(bpfcache.KEEP + 3):
        p = bpfcache.save(f"{i:064d}", sample_image())
        os.utime(p, (1000 + i, 1000 + i))
    bpfcache.save("f" * 64, sample_image())
    assert len(list(tmp_path.glob("*.json"))) == bpfcache.KEEP
    assert bpfcache.load(f"{0:064d}") is None and bpfcache.load("f" * 64) is not None


# -- with the kernel ----------------------------------------------------------------------------
def run_ipft(cache, *args, timeout=900, prebuilt="off"):
    # the cache's own tests: the program shipped with ipft-web is left aside, so the first run compiles
    env = dict(os.environ, IPFT_CACHE_DIR=str(cache), IPFT_PREBUILT=prebuilt)
    return subprocess.run(ipft_argv() + ["-m", "0x7e57", "--duration", "0.5", "-v", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.root
def test_second_run_loads_the_program_without_compiling(tmp_path):
    """First run: BCC compiles and the image is stored. Second run: loaded from the store, and the
    probes attach from it (the program the kernel verifies is the one BCC made).

    In a guest a compile takes minutes: there the run's shared cache (tests/conftest.py) is used,
    which earlier tests have most likely filled, and only the second run is checked."""
    if IN_GUEST:
        cache = os.environ["IPFT_CACHE_DIR"]
        args = ["-r", "^(ip_rcv|icmp_rcv)$"]   # what is attached does not matter here: be quick
        first = run_ipft(cache, *args)
        assert first.returncode == 0, first.stderr
    else:
        cache = tmp_path / "cache"
        args = ["-b", "tracepoint"]
        first = run_ipft(cache, *args)
        assert first.returncode == 0, first.stderr
        assert "BPF program compiled" in first.stderr, first.stderr
        assert len(list(cache.glob("*.json"))) == 1
    second = run_ipft(cache, *args)
    assert second.returncode == 0, second.stderr
    assert "BPF program loaded from the cache" in second.stderr, second.stderr
    assert "tracing " in second.stderr


@pytest.mark.root
@pytest.mark.skipif(IN_GUEST, reason="two compiles: minutes under emulation; the check is the same on any kernel")
def test_a_tampered_image_is_recompiled(tmp_path):
    """An image whose relocation no longer points at a map load is refused, and the run compiles."""
    cache = tmp_path / "cache"
    args = ["-b", "tracepoint"]
    assert run_ipft(cache, *args).returncode == 0
    (path,) = cache.glob("*.json")
    doc = json.loads(path.read_text())
    prog = next(iter(doc["progs"].values()))
    prog["relocs"].append([0, prog["relocs"][0][1]])
    path.write_text(json.dumps(doc))
    again = run_ipft(cache, *args)
    assert again.returncode == 0, again.stderr
    assert "ignoring cached program" in again.stderr and "BPF program compiled" in again.stderr, again.stderr


# -- the program shipped with ipft-web ----------------------------------------------------------
def test_the_shipped_programs_are_those_of_this_source():
    """bpf/prebuilt/ holds the compile of the current bpf/ipft.bpf.c (both variants): after editing
    it, or the flags in program.build_spec, run `sudo python3 -m ipft_web.prebuilt` (BCC needed)."""
    from ipft_web import prebuilt, program
    for fields in (False, True):
        spec = program.build_spec(fields)
        image = prebuilt.load(bpfcache.key(spec.text, spec.cflags), fields)
        assert image is not None, f"{prebuilt.path(fields)} is not the compile of this source: run python3 -m ipft_web.prebuilt"
        assert {"kprobe_skb_1", "kprobe_free", "tp_kfree_skb", "tp_slot_0", f"tp_slot_{program.MAX_TP_SLOTS - 1}",
                "fentry_skb_1"} <= set(image.progs)


def test_a_shipped_program_is_used_only_for_its_own_key(tmp_path, monkeypatch, caplog):
    import gzip
    from ipft_web import prebuilt
    doc = dict(sample_image().to_json(), key="a" * 64)
    target = prebuilt.path(False, root=tmp_path)
    target.write_bytes(gzip.compress(json.dumps(doc).encode()))
    assert prebuilt.load("a" * 64, False, root=tmp_path) is not None
    assert prebuilt.load("b" * 64, False, root=tmp_path) is None, "another key: compiled instead"
    assert prebuilt.load("a" * 64, True, root=tmp_path) is None, "no fields variant there"
    monkeypatch.setenv("IPFT_PREBUILT", "off")
    assert prebuilt.load("a" * 64, False, root=tmp_path) is None
    monkeypatch.delenv("IPFT_PREBUILT")
    doc["progs"] = {"x": {"insns": "!!", "relocs": []}}
    target.write_bytes(gzip.compress(json.dumps(doc).encode()))
    with caplog.at_level("WARNING"):
        assert prebuilt.load("a" * 64, False, root=tmp_path) is None
    assert "ignoring the shipped program" in caplog.text
    target.write_bytes(b"not gzip")
    assert prebuilt.load("a" * 64, False, root=tmp_path) is None


@pytest.mark.root
def test_a_first_run_takes_the_shipped_program_without_bcc(tmp_path):
    """No cache yet: the program shipped with ipft-web is loaded (BCC is not even imported) and traces."""
    probe = ("import sys, runpy; sys.argv = ['ipft'] + sys.argv[1:]\n"
             "try:\n    runpy.run_module('ipft_web.cli', run_name='__main__')\n"
             "finally:\n    sys.stderr.write('bcc imported: %s\\n' % ('bcc' in sys.modules))\n")
    env = dict(os.environ, IPFT_CACHE_DIR=str(tmp_path / "c"))
    args = ["-r", "^(ip_rcv|icmp_rcv)$"] if IN_GUEST else ["-b", "tracepoint"]
    run = subprocess.run([sys.executable, "-c", probe, "-m", "0x7e57", "--duration", "0.5", "-v", *args], env=env,
                         capture_output=True, text=True, timeout=900)
    assert "BPF program shipped with ipft-web, loaded" in run.stderr, run.stderr
    assert "tracing " in run.stderr and "bcc imported: False" in run.stderr, run.stderr
    assert not list((tmp_path / "c").glob("*.json")), "nothing compiled, nothing stored"
