"""Journey assembly, without a kernel: hits in, Journey JSON out."""
from ipft_web.journeys import Assembler, Hit


def hit(skb, ts, func, end=None, kind="kprobe", **kw):
    base = dict(skb=skb, ts=ts, func=func, kind=kind, cpu=0, len=84, mark=0xDEADBEEF, ifindex=1,
                dev="lo", netns=4026531840, tuple=None, end=end)
    base.update(kw)
    return Hit(**base)


def test_journey_ends_when_skb_freed():
    out = []
    a = Assembler(out.append, free_traced=True)
    t = {"family": "ipv4", "proto": "icmp", "src": "127.0.0.1", "dst": "127.0.0.2",
         "sport": None, "dport": None, "icmp_type": 8, "icmp_code": 0}
    a.feed(hit(1, 100, "ip_output", tuple=t))
    a.feed(hit(2, 150, "ip_rcv"))           # another packet interleaved
    a.feed(hit(1, 200, "ip_rcv"))
    a.feed(hit(1, 300, "skb:consume_skb", end="freeing", kind="tracepoint"))
    assert out == []                        # still open: kfree_skbmem is traced
    a.feed(hit(1, 400, "kfree_skbmem", end="free"))
    assert len(out) == 1
    j = out[0]
    assert [h["func"] for h in j["hits"]] == ["ip_output", "ip_rcv", "skb:consume_skb", "kfree_skbmem"]
    assert [h["t_ns"] for h in j["hits"]] == [0, 100, 200, 300]
    assert j["duration_ns"] == 300 and j["end"] == "freed" and j["skb"] == "0x1"
    assert j["tuple"]["dst"] == "127.0.0.2" and j["drop_reason"] is None
    a.flush()
    assert out[1]["end"] == "exit" and out[1]["hits"][0]["func"] == "ip_rcv"


def test_tracepoint_backend_ends_at_consume():
    out = []
    a = Assembler(out.append, free_traced=False)
    a.feed(hit(1, 1, "net:net_dev_queue", kind="tracepoint"))
    a.feed(hit(1, 2, "skb:kfree_skb", end="freeing", kind="tracepoint",
               drop_reason="NETFILTER_DROP", drop_func="nf_hook_slow"))
    assert out[0]["drop_reason"] == "NETFILTER_DROP" and out[0]["drop_func"] == "nf_hook_slow"


def test_reused_address_starts_new_journey():
    out = []
    a = Assembler(out.append, free_traced=True)
    a.feed(hit(1, 1, "ip_rcv"))
    a.feed(hit(1, 2, "skb:consume_skb", end="freeing", kind="tracepoint"))
    a.feed(hit(1, 3, "skb_release_data"))     # free path: same journey
    a.feed(hit(1, 4, "__dev_queue_xmit"))     # a new packet in the recycled skb
    assert len(out) == 1 and len(out[0]["hits"]) == 3
    assert out[0]["id"] != 0
    a.flush()
    assert out[1]["hits"][0]["func"] == "__dev_queue_xmit"


def test_idle_timeout_and_bounds():
    out = []
    a = Assembler(out.append, idle_timeout=1.0, max_open=2, max_hits=3)
    a.feed(hit(1, 0, "a"))
    a.feed(hit(2, 0, "a"))
    a.feed(hit(3, 0, "a"))                    # evicts skb 1
    assert out[0]["end"] == "evicted" and out[0]["skb"] == "0x1"
    for i in range(5):
        a.feed(hit(2, i, "b"))
    a.tick(now_ns=int(2e9))
    ends = sorted(j["end"] for j in out)
    assert ends == ["evicted", "timeout", "timeout"]
    two = [j for j in out if j["skb"] == "0x2"][0]
    assert len(two["hits"]) == 3 and two["truncated_hits"] == 3


def test_reused_skb_split_by_ip_id_without_free_tracing():
    out = []
    a = Assembler(out.append, free_traced=False)
    a.feed(hit(1, 1, "net:net_dev_queue", kind="tracepoint", ip_id=7))
    a.feed(hit(1, 2, "net:netif_receive_skb", kind="tracepoint", ip_id=7))
    a.feed(hit(1, 3, "net:net_dev_queue", kind="tracepoint", ip_id=8))
    assert len(out) == 1 and out[0]["end"] == "reused" and len(out[0]["hits"]) == 2


def test_hits_held_in_all_open_journeys_are_bounded():
    """A flood of long-lived skbs (nothing freed): the oldest journeys go out first, the hits held stay
    under the bound, and nothing is lost silently (each evicted journey is emitted as such)."""
    out = []
    a = Assembler(out.append, max_open=10_000, max_hits=100, max_open_hits=1_000)
    for skb in range(200):
        for k in range(10):
            a.feed(hit(skb, skb * 100 + k, f"f{k}"))
        assert a.open_hits <= 1_000
    assert all(j["end"] == "evicted" for j in out)
    assert [j["skb"] for j in out] == [f"0x{i:x}" for i in range(len(out))]     # oldest first
    assert sum(len(j["hits"]) for j in out) + a.open_hits == 200 * 10
    a.flush()
    assert a.open_hits == 0 and len(out) == 200
