"""The function backends' bookkeeping, with the kernel calls replaced (the real attaches are the
guest tests in test_tracer_reuse.py and test_kernel_scenarios.py)."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from ipft_web.backends import kprobe, kprobe_multi
from ipft_web.kernel.sysbpf import BPFError


@dataclass
class Fn:
    name: str
    pos: int = 1
    duplicate: bool = False
    module: str | None = None


class FakeMap:
    def __init__(self):
        self.values = {}

    def update(self, key, value):
        self.values[key] = value


class FakeObj:
    def __init__(self):
        self.loaded = []
        self.maps = {}

    def prog_fd(self, name, prog_type, expected_attach_type=0):
        self.loaded.append((name, prog_type, expected_attach_type))
        return 100 + len(self.loaded)

    def map(self, name):
        return self.maps.setdefault(name, FakeMap())

    def free_addr(self):
        import struct
        return struct.unpack("<Q", self.maps["ipft_free_addr"].values[struct.pack("<I", 0)])[0]


ADDRS = {"ip_rcv": [0x1000], "add_grec": [0x2000, 0x3000], "kfree_skbmem": [0x4000], "bad": [0x5000],
         "tcp_v4_rcv": [0x6000], "f4": [0x7000], "f5": [0x8000], "g4": [0x9000], "bad5": [0xA000]}


def links(monkeypatch, refuse=()):
    made = []

    def by_addrs(prog_fd, addrs, cookies=None):
        assert cookies is None or len(cookies) == len(addrs)
        if any(a in refuse for a in addrs):
            raise BPFError(2, "ENOENT (test)")
        made.append(("addrs", list(addrs), prog_fd) + ((list(cookies),) if cookies is not None else ()))
        return 200 + len(made)

    def by_names(prog_fd, names, cookies=None):
        assert cookies is None or len(cookies) == len(names)
        if any(n in refuse for n in names):
            raise BPFError(3, "ESRCH (test)")
        made.append(("names", list(names), prog_fd) + ((list(cookies),) if cookies is not None else ()))
        return 200 + len(made)

    monkeypatch.setattr(kprobe_multi, "link_create_kprobe_multi_addrs", by_addrs)
    monkeypatch.setattr(kprobe_multi, "attach_kprobe_multi", by_names)
    monkeypatch.setattr(kprobe_multi, "close_many", lambda fds: None)
    return made


def test_kprobe_multi_links_every_address_of_a_duplicated_name(monkeypatch):
    made = links(monkeypatch)
    obj = FakeObj()
    b = kprobe_multi.KprobeMultiBackend(obj, lambda n: ADDRS.get(n, []))
    res = b.attach([Fn("ip_rcv"), Fn("add_grec", duplicate=True), Fn("kfree_skbmem"), Fn("tcp_v4_rcv", pos=2)])
    assert res.failed == {} and res.attached == ["add_grec", "ip_rcv", "kfree_skbmem", "tcp_v4_rcv"]
    # the programs of the links there are, loaded for kprobe-multi: kfree_skbmem goes with position 1
    assert sorted(obj.loaded) == [("kprobe_multi_skb_1", 2, 42), ("kprobe_skb_2", 2, 42)]
    fd_of = {name: 100 + i for i, (name, _t, _a) in enumerate(obj.loaded, 1)}
    assert sorted((prog, kind, addrs) for kind, addrs, prog in made) == sorted([
        (fd_of["kprobe_multi_skb_1"], "addrs", [0x2000, 0x3000, 0x1000, 0x4000]),
        (fd_of["kprobe_skb_2"], "addrs", [0x6000])])
    assert obj.free_addr() == 0x4000, "the program tells kfree_skbmem's hits by this address"
    b.detach()
    assert b.links == []


def test_kprobe_multi_makes_four_links_for_five_positions_and_the_free(monkeypatch):
    """Positions 4 and 5 share a link, each function's position in its cookie; 2 and 3 have one each;
    1 takes kfree_skbmem along. Without kfree_skbmem in the set, its address is 0: never a hit's."""
    made = links(monkeypatch)
    obj = FakeObj()
    b = kprobe_multi.KprobeMultiBackend(obj, lambda n: ADDRS.get(n, []))
    res = b.attach([Fn("ip_rcv"), Fn("tcp_v4_rcv", pos=2), Fn("bad", pos=3), Fn("f4", pos=4), Fn("f5", pos=5),
                    Fn("g4", pos=4)])
    assert not res.failed and len(res.attached) == 6
    assert len(made) == len(b.links) == 4
    fd_of = {name: 100 + i for i, (name, _t, _a) in enumerate(obj.loaded, 1)}
    shared = [m for m in made if m[2] == fd_of["kprobe_multi_skb_45"]]
    assert shared == [("addrs", [0x7000, 0x8000, 0x9000], fd_of["kprobe_multi_skb_45"], [4, 5, 4])]
    assert all(len(m) == 3 for m in made if m[2] != fd_of["kprobe_multi_skb_45"]), "no cookie elsewhere"
    assert obj.free_addr() == 0


def test_kprobe_multi_splits_cookies_with_their_functions(monkeypatch):
    made = links(monkeypatch, refuse={0xA000})
    b = kprobe_multi.KprobeMultiBackend(FakeObj(), lambda n: ADDRS.get(n, []))
    res = b.attach([Fn("f4", pos=4), Fn("bad5", pos=5), Fn("f5", pos=5), Fn("g4", pos=4)])
    assert list(res.failed) == ["bad5"]
    got = sorted((a, c) for m in made for a, c in zip(m[1], m[3]))
    assert got == [(0x7000, 4), (0x8000, 5), (0x9000, 4)]


def test_kprobe_multi_free_has_its_own_link_when_addresses_are_hidden(monkeypatch):
    made = links(monkeypatch)
    obj = FakeObj()
    b = kprobe_multi.KprobeMultiBackend(obj, lambda n: [])
    res = b.attach([Fn("ip_rcv"), Fn("kfree_skbmem"), Fn("f5", pos=5)])
    assert res.attached == ["f5", "ip_rcv", "kfree_skbmem"]
    fd_of = {name: 100 + i for i, (name, _t, _a) in enumerate(obj.loaded, 1)}
    assert sorted(m[1:] for m in made) == sorted([
        (["ip_rcv"], fd_of["kprobe_multi_skb_1"]), (["kfree_skbmem"], fd_of["kprobe_free"]),
        (["f5"], fd_of["kprobe_multi_skb_45"], [5])])
    assert obj.free_addr() == 0


def test_kprobe_multi_isolates_an_address_the_kernel_refuses(monkeypatch):
    made = links(monkeypatch, refuse={0x5000})
    b = kprobe_multi.KprobeMultiBackend(FakeObj(), lambda n: ADDRS.get(n, []))
    res = b.attach([Fn("ip_rcv"), Fn("bad"), Fn("tcp_v4_rcv"), Fn("add_grec", duplicate=True)])
    assert list(res.failed) == ["bad"] and "ENOENT" in res.failed["bad"]
    assert sorted(res.attached) == ["add_grec", "ip_rcv", "tcp_v4_rcv"]
    assert sorted(a for _k, addrs, _c in made for a in addrs) == [0x1000, 0x2000, 0x3000, 0x6000]


def test_kprobe_multi_uses_names_when_addresses_are_hidden(monkeypatch):
    made = links(monkeypatch)
    b = kprobe_multi.KprobeMultiBackend(FakeObj(), lambda n: [])
    res = b.attach([Fn("ip_rcv"), Fn("add_grec", duplicate=True)])
    assert res.attached == ["ip_rcv"] and "more than once" in res.failed["add_grec"]
    assert [(kind, names) for kind, names, _prog in made] == [("names", ["ip_rcv"])]


def test_kprobe_probes_a_duplicated_name_at_each_address(monkeypatch):
    opened = []
    monkeypatch.setattr(kprobe, "perf_kprobe_open", lambda name: opened.append(name) or 10 + len(opened))
    monkeypatch.setattr(kprobe, "perf_kprobe_open_addr",
                        lambda addr, label="": opened.append(hex(addr)) or 10 + len(opened))
    monkeypatch.setattr(kprobe, "perf_attach_bpf", lambda fd, prog: None)
    obj = FakeObj()
    b = kprobe.KprobeBackend(obj, lambda n: ADDRS.get(n, []))
    res = b.attach([Fn("ip_rcv"), Fn("add_grec", duplicate=True), Fn("kfree_skbmem")])
    assert res.attached == ["ip_rcv", "add_grec", "kfree_skbmem"] and not res.failed
    assert opened == ["ip_rcv", "0x2000", "0x3000", "kfree_skbmem"]
    assert len(b.fds) == 4
    assert [n for n, _t, _a in obj.loaded] == ["kprobe_skb_1", "kprobe_free"]


def test_kprobe_attach_stops_between_functions_when_cancelled(monkeypatch):
    opened = []
    monkeypatch.setattr(kprobe, "perf_kprobe_open", lambda name: opened.append(name) or 100 + len(opened))
    monkeypatch.setattr(kprobe, "perf_attach_bpf", lambda fd, prog: None)
    b = kprobe.KprobeBackend(FakeObj())
    b.cancelled = lambda: len(opened) >= 10
    res = b.attach([Fn(f"f{i}") for i in range(500)])
    assert 10 <= len(opened) <= 14, "a few functions past the stop, not the rest of the list"
    assert res.attached == opened and b.fds == [101 + i for i in range(len(opened))], "each one kept for detach"


def test_ctrl_c_while_attaching_leaves_a_few_functions_not_the_list(monkeypatch):
    opened = []

    def open_(name):
        opened.append(name)
        if len(opened) == 20:
            raise KeyboardInterrupt   # as if it came while the caller waited
        return 100 + len(opened)
    monkeypatch.setattr(kprobe, "perf_kprobe_open", open_)
    monkeypatch.setattr(kprobe, "perf_attach_bpf", lambda fd, prog: None)
    b = kprobe.KprobeBackend(FakeObj())
    with pytest.raises(KeyboardInterrupt):
        b.attach([Fn(f"f{i}") for i in range(500)])
    assert len(opened) <= 24


def test_kprobe_a_refused_second_address_refuses_the_name(monkeypatch):
    closed = []

    def open_addr(addr, label=""):
        if addr == 0x3000:
            raise BPFError(22, "EINVAL (test)")
        return 50

    monkeypatch.setattr(kprobe, "perf_kprobe_open_addr", open_addr)
    monkeypatch.setattr(kprobe, "perf_attach_bpf", lambda fd, prog: None)
    monkeypatch.setattr(kprobe, "close_many", lambda fds: closed.extend(fds))
    b = kprobe.KprobeBackend(FakeObj(), lambda n: ADDRS.get(n, []))
    res = b.attach([Fn("add_grec", duplicate=True)])
    assert "EINVAL" in res.failed["add_grec"] and closed == [50] and b.fds == []


@pytest.mark.parametrize("n", [1, 7, 64])
def test_kprobe_multi_bisection_attaches_all_but_the_bad(monkeypatch, n):
    names = [f"f{i}" for i in range(n)]
    addrs = {name: [0x10000 + i] for i, name in enumerate(names)}
    bad = {0x10000 + i for i in range(0, n, 5)}
    links(monkeypatch, refuse=bad)
    b = kprobe_multi.KprobeMultiBackend(FakeObj(), lambda name: addrs[name])
    res = b.attach([Fn(name) for name in names])
    assert set(res.failed) == {names[a - 0x10000] for a in bad}
    assert set(res.attached) == set(names) - set(res.failed)


def test_kprobe_multi_does_not_bisect_a_link_refused_as_a_whole(monkeypatch):
    """EOPNOTSUPP (no CONFIG_FPROBE) or EPERM refuse any link: one attempt, an EnvError, not a
    bisection down to every function refused one by one."""
    from ipft_web.errors import EnvError
    tries = []

    def unsupported(prog_fd, addrs, cookies=None):
        tries.append(len(addrs))
        raise BPFError(95, "EOPNOTSUPP (test)")
    monkeypatch.setattr(kprobe_multi, "link_create_kprobe_multi_addrs", unsupported)
    names = [f"f{i}" for i in range(100)]
    b = kprobe_multi.KprobeMultiBackend(FakeObj(), lambda name: [0x10000 + names.index(name)])
    with pytest.raises(EnvError, match="refused the kprobe-multi link"):
        b.attach([Fn(name) for name in names])
    assert tries == [100]


def test_fentry_loads_one_program_per_function_and_counts_refusals(monkeypatch):
    from ipft_web.backends import fentry

    loaded, closed = [], []

    class Obj:
        def insns(self, name):
            return name.encode().ljust(8, b"\0")

    def prog_load(prog_type, insns, expected_attach_type, attach_btf_id, attach_btf_obj_fd, name):
        if attach_btf_id == 666:
            raise BPFError(22, "EINVAL: the verifier says no (test)")
        loaded.append((insns.rstrip(b"\0").decode(), attach_btf_id))
        return 1000 + attach_btf_id

    monkeypatch.setattr(fentry, "prog_load", prog_load)
    monkeypatch.setattr(fentry, "link_create_tracing", lambda fd, attach_type: fd + 1)
    monkeypatch.setattr(fentry, "close_many", lambda fds: closed.extend(fds))
    ids = {"ip_rcv": (11, 0), "tcp_v4_rcv": (12, 0), "refused_fn": (666, 0), "kfree_skbmem": (13, 0)}
    b = fentry.FentryBackend(Obj(), ids.get)
    fns = [Fn("ip_rcv"), Fn("tcp_v4_rcv", pos=2), Fn("refused_fn"), Fn("kfree_skbmem"), Fn("no_btf"),
           Fn("far", pos=7), Fn("in_mod", module="veth")]
    res = b.attach(fns)
    assert res.attached == ["ip_rcv", "tcp_v4_rcv", "kfree_skbmem"]
    assert set(res.failed) == {"refused_fn", "no_btf", "far", "in_mod"}
    assert "verifier says no" in res.failed["refused_fn"] and "vmlinux only" in res.failed["in_mod"]
    assert sorted(loaded) == [("fentry_free", 13), ("fentry_skb_1", 11), ("fentry_skb_2", 12)]
    assert sorted(b.fds) == [1011, 1012, 1012, 1013, 1013, 1014]   # a link and a program per function
    b.detach()
    assert sorted(closed) == [1011, 1012, 1012, 1013, 1013, 1014] and b.fds == []


def test_a_regex_naming_a_tracepoint_without_its_group_selects_it(monkeypatch):
    """-r '^netif_receive_skb$' picks net:netif_receive_skb on the tracepoint backend (the slot was
    chosen by name, and the plan must not then look only at the label)."""
    from types import SimpleNamespace

    from ipft_web.config import TraceConfig
    from ipft_web.program import Tracepoint
    from ipft_web.tracer import Tracer
    kernel = SimpleNamespace(skb_functions=lambda: [], function=lambda name: None,
                             tracepoints=[Tracepoint(name="netif_receive_skb", group="net", arg=0),
                                          Tracepoint(name="kfree_skb", group="skb", arg=0)])
    t = Tracer(TraceConfig(mark=1, regex="^netif_receive_skb$", backend="tracepoint"), lambda j: None)
    monkeypatch.setattr(t, "_candidates", lambda k: ["tracepoint"])
    [(backend, functions, slots)] = t._plans(kernel)
    assert backend == "tracepoint" and functions == [] and slots == [0, 1]


def test_preload_verifies_what_start_would_load():
    """The dashboard's precompile puts the chosen backend's programs through the verifier, so Start
    pays for the links only; a refused one is left for the session to report."""
    from types import SimpleNamespace

    from ipft_web.backends import preload
    from ipft_web.errors import EnvError
    from ipft_web.kernel import sysbpf
    spec = SimpleNamespace(kfree_skb_slot=3, consume_skb_slot=4)
    obj = FakeObj()
    preload("kprobe-multi", obj, spec)
    assert obj.loaded == [("tp_kfree_skb", sysbpf.BPF_PROG_TYPE_RAW_TRACEPOINT, 0),
                          ("tp_consume_skb", sysbpf.BPF_PROG_TYPE_RAW_TRACEPOINT, 0)] + [
        (p, sysbpf.BPF_PROG_TYPE_KPROBE, sysbpf.BPF_TRACE_KPROBE_MULTI) for p in kprobe_multi.PROGRAMS]
    obj = FakeObj()
    preload("kprobe", obj, spec)
    assert sorted(n for n, _t, _a in obj.loaded[2:]) == ["kprobe_free"] + [f"kprobe_skb_{i}" for i in range(1, 6)]

    class Refusing(FakeObj):
        def prog_fd(self, name, prog_type, expected_attach_type=0):
            raise EnvError("the verifier refused it")
    preload("fentry", Refusing(), spec)   # nothing raised; fentry has no program to load ahead
