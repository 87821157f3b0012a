"""Feature probes and the bpf()/perf_event_open() wrappers, against the running kernel.

Host (6.18, no kprobes, fentry refused): raw tracepoints yes, kprobe no, fentry no (EPERM).
The kernel-independent checks also run inside the virtme-ng guests (IPFT_IN_GUEST=1).
"""
import ctypes
import errno
import gc
import os

import pytest

from ipft_web.errors import EnvError
from ipft_web.kernel import features, kprobe_multi, sysbpf

IN_GUEST = os.environ.get("IPFT_IN_GUEST") == "1"
root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
host_only = pytest.mark.skipif(IN_GUEST, reason="host kernel expectations")


@pytest.fixture
def fresh():
    features.clear_cache()
    yield features
    features.clear_cache()


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


# -- no root needed ---------------------------------------------------------------------------
def test_attr_layouts_match_the_kernel_abi():
    assert ctypes.sizeof(sysbpf.ProgLoadAttr) == 120
    assert sysbpf.ProgLoadAttr.expected_attach_type.offset == 68
    assert sysbpf.ProgLoadAttr.attach_btf_id.offset == 108
    assert ctypes.sizeof(sysbpf.LinkCreateAttr) == 48
    assert sysbpf.LinkCreateAttr.u.offset == 16
    assert sysbpf._KprobeMulti.cookies.offset == 24
    assert ctypes.sizeof(sysbpf.PerfEventAttr) == sysbpf.PERF_ATTR_SIZE_VER5
    assert sysbpf.PerfEventAttr.config1.offset == 56
    assert ctypes.sizeof(sysbpf.MapBatchAttr) == 56 and sysbpf.MapBatchAttr.map_fd.offset == 36


def test_instructions():
    assert sysbpf.RETURN_ZERO == bytes.fromhex("b700000000000000" "9500000000000000")
    assert sysbpf.call(173) == bytes.fromhex("85000000ad000000")
    assert sysbpf.insn(0xBF, dst=1, src=6) == bytes.fromhex("bf61000000000000")


def test_errno_names_and_texts():
    assert sysbpf.errno_name(errno.EOPNOTSUPP) == "EOPNOTSUPP"
    assert sysbpf.errno_name(524) == "ENOTSUPP"
    err = sysbpf._fail("BPF_LINK_CREATE", errno.ESRCH, meaning=sysbpf.KPROBE_MULTI_MEANING)
    assert isinstance(err, OSError) and err.errno == errno.ESRCH
    assert "ESRCH" in str(err) and "not traceable" in str(err)


def test_btf_func_ids():
    if not os.access(features.VMLINUX_BTF, os.R_OK):
        pytest.skip("no readable vmlinux BTF")
    ids = features.btf_func_ids(["consume_skb", "no_such_function_ipft"])
    assert set(ids) == {"consume_skb"} and ids["consume_skb"] > 0


def test_kprobe_multi_checks_before_the_syscall():
    with pytest.raises(ValueError, match="twice.*ip_rcv"):
        kprobe_multi.attach_kprobe_multi(-1, ["ip_rcv", "udp_rcv", "ip_rcv"])
    with pytest.raises(ValueError, match="cookies"):
        kprobe_multi.attach_kprobe_multi(-1, ["ip_rcv"], cookies=[1, 2])
    with pytest.raises(ValueError):
        kprobe_multi.attach_kprobe_multi(-1, [])


def test_not_root_is_a_clear_no(fresh, monkeypatch):
    monkeypatch.setattr(features, "is_root", lambda: False)
    answers = features.probe_all()
    assert answers["root"] == {"ok": False, "why": "not running as root"}
    for key in ("bpf", "raw_tracepoint", "kprobe", "kprobe_multi", "fentry", "ringbuf"):
        assert answers[key]["ok"] is False and "root" in answers[key]["why"], key
    assert features.available_backends() == []
    assert features.bpf_usable() is False
    with pytest.raises(EnvError, match="needs root"):
        features.require_bpf()


def test_probe_turns_any_exception_into_a_no(fresh, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("kaboom")
    monkeypatch.setattr(sysbpf, "prog_load", boom)
    monkeypatch.setattr(features, "is_root", lambda: True)
    answers = features.probe_all()
    assert answers["bpf"] == {"ok": False, "why": "RuntimeError: kaboom"}


# -- root: the real kernel ----------------------------------------------------------------------
@root
@pytest.mark.root
def test_probe_all_shape_and_no_fd_leak(fresh):
    gc.collect()  # objects left by earlier tests must not close their fds mid-measurement
    before = open_fds()
    answers = features.probe_all()
    assert open_fds() == before
    expected = {"root", "bpf", "btf", "raw_tracepoint", "kprobe", "kprobe_multi", "fentry", "ringbuf",
                "get_func_ip", "tracepoint"}
    assert set(answers) == expected
    for key, answer in answers.items():
        assert set(answer) == {"ok", "why"}, key
        assert isinstance(answer["ok"], bool)
        assert (answer["why"] is None) == answer["ok"], (key, answer)
    assert answers["bpf"]["ok"] and answers["raw_tracepoint"]["ok"]
    assert answers["tracepoint"] == answers["raw_tracepoint"]
    backends = features.available_backends()
    assert backends == [b for b in features.BACKENDS if answers[b.replace("-", "_")]["ok"]]
    assert backends[-1] == "tracepoint"
    assert features.probe_all() == answers  # cached


@root
@pytest.mark.root
def test_raw_tracepoint_open_for_real():
    prog = sysbpf.prog_load(sysbpf.BPF_PROG_TYPE_RAW_TRACEPOINT)
    try:
        link = sysbpf.raw_tracepoint_open(prog, "kfree_skb")
        os.close(link)
        with pytest.raises(OSError) as info:
            sysbpf.raw_tracepoint_open(prog, "no_such_tracepoint_ipft")
        assert info.value.errno == errno.ENOENT
    finally:
        os.close(prog)


@root
@pytest.mark.root
@pytest.mark.parametrize("map_type", [sysbpf.BPF_MAP_TYPE_LRU_HASH, sysbpf.BPF_MAP_TYPE_PERCPU_HASH])
def test_clearing_a_full_hash_map_takes_a_few_calls(map_type, monkeypatch):
    from ipft_web.bpfobject import Map, MapSpec
    import struct
    spec = MapSpec("t", map_type, 8, 8, 20000)
    m = Map(spec, sysbpf.map_create(map_type, 8, 8, 20000))
    try:
        width = sysbpf.possible_cpus() if map_type == sysbpf.BPF_MAP_TYPE_PERCPU_HASH else 1
        for i in range(9000):
            m.update(struct.pack("<Q", 0xffff888000000000 + 256 * i), struct.pack("<Q", i) * width)
        calls = []
        real = sysbpf.bpf
        monkeypatch.setattr(sysbpf, "bpf", lambda cmd, attr: calls.append(cmd) or real(cmd, attr))
        assert m.clear() == 9000
        assert calls.count(sysbpf.BPF_MAP_LOOKUP_AND_DELETE_BATCH) <= 4 and len(calls) <= 4, calls[:5]
        assert sysbpf.map_keys(m.fd, 8) == [] and m.clear() == 0
    finally:
        os.close(m.fd)


def test_a_kernel_without_batch_operations_clears_key_by_key(monkeypatch):
    from ipft_web.bpfobject import Map, MapSpec
    keys = [b"a" * 8, b"b" * 8]
    monkeypatch.setattr(sysbpf, "bpf", lambda cmd, attr: (_ for _ in ()).throw(sysbpf.BPFError(errno.EINVAL, "no")))
    monkeypatch.setattr(sysbpf, "map_keys", lambda fd, size: list(keys))
    monkeypatch.setattr(sysbpf, "map_delete", lambda fd, k: keys.remove(k) is None)
    assert Map(MapSpec("t", sysbpf.BPF_MAP_TYPE_LRU_HASH, 8, 8, 16), 99).clear() == 2 and keys == []


@pytest.mark.root
def test_prog_load_failure_carries_the_verifier_log():
    with pytest.raises(sysbpf.BPFError) as info:
        sysbpf.prog_load(sysbpf.BPF_PROG_TYPE_KPROBE, sysbpf.call(9999) + sysbpf.RETURN_ZERO)
    assert info.value.errno == errno.EINVAL
    assert "unknown#9999" in info.value.log and "verifier" in str(info.value)


@root
@pytest.mark.root
@host_only
def test_host_answers(fresh):
    assert features.have_raw_tracepoint() is True
    assert features.have_btf() is True
    assert features.have_kprobe() is False
    assert "kprobe PMU missing" in features.probe_all()["kprobe"]["why"]
    assert features.have_fentry() is False
    assert "EPERM" in features.probe_all()["fentry"]["why"]
    assert features.available_backends() == ["tracepoint"]


def test_a_program_past_the_verifiers_limit_is_not_verified_twice(monkeypatch):
    """E2BIG is the verifier giving up after a million instructions: a second pass with a log
    would cost as much again (minutes under emulation) and say nothing more."""
    calls = []

    def refuse(cmd, attr):
        calls.append(attr.log_level)
        raise sysbpf.BPFError(errno.E2BIG, "E2BIG")

    monkeypatch.setattr(sysbpf, "bpf", refuse)
    with pytest.raises(sysbpf.BPFError) as info:
        sysbpf.prog_load(sysbpf.BPF_PROG_TYPE_KPROBE)
    assert calls == [0]
    assert info.value.errno == errno.E2BIG and "too large or too complex" in str(info.value)
    from ipft_web.bpfobject import refusal
    assert "drop --field" in refusal("kprobe_skb_1", info.value, fields=True)
