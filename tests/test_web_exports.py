"""The function->layer table and the Chrome trace-event export (what Perfetto's JSON importer needs)."""
import json
import re

import pytest

from ipft_web.web import exports, layers
from web_fixtures import AUTH, SAMPLE, load_journeys, make_app, recordings, wait_for, wait_session_state


@pytest.mark.parametrize("func, layer", [
    ("ip_rcv", "ipv4"), ("ip_local_deliver", "ipv4"), ("__ip_local_out", "ipv4"), ("ip6_output", "ipv6"),
    ("ipv6_rcv", "ipv6"), ("nf_hook_slow", "netfilter"), ("ipt_do_table", "netfilter"), ("nft_do_chain", "netfilter"),
    ("tcp_v4_rcv", "tcp"), ("__tcp_transmit_skb", "tcp"), ("udp_rcv", "udp"), ("__udp4_lib_rcv", "udp"),
    ("icmp_rcv", "icmp"), ("icmpv6_echo_reply", "icmp"), ("br_handle_frame", "bridge"), ("tcf_classify", "tc"),
    ("sch_direct_xmit", "tc"), ("pfifo_fast_enqueue", "tc"), ("__dev_queue_xmit", "device"),
    ("loopback_xmit", "device"), ("__netif_receive_skb_core", "device"), ("net:net_dev_queue", "device"),
    ("net:netif_receive_skb", "device"), ("skb:kfree_skb", "skb"), ("skb:consume_skb", "skb"),
    ("kfree_skbmem", "skb"), ("consume_skb", "skb"), ("kfree_skb_reason", "skb"), ("skb_release_data", "skb"),
    ("sock_def_readable", "socket"), ("skb_copy_datagram_iter", "socket"), ("qdisc:qdisc_dequeue", "tc"),
    ("tcp:tcp_retransmit_skb", "tcp"), ("skb:skb_copy_datagram_iovec", "socket"),
    ("net:netif_rx_entry", "device"), ("icmp:icmp_send", "icmp"), ("tcp:tcp_probe", "tcp"), ("something_else", "other"),
])
def test_layers(func, layer):
    assert layers.load().classify(func) == layer


def test_layer_rules_are_portable_to_javascript():
    data = json.loads(layers.default_path().read_text())
    ids = {x["id"] for x in data["layers"]}
    for rule in data["rules"]:
        assert rule["layer"] in ids
        re.compile(rule["match"])
        # constructs JavaScript's RegExp reads differently or not at all
        assert not re.search(r"\(\?P|\(\?<|\\A|\\Z|\(\?[aiLmsux]", rule["match"]), rule["match"]
    assert all(re.fullmatch(r"#[0-9a-f]{6}", x["color"]) for x in data["layers"])


def test_every_function_of_the_sample_has_a_real_layer():
    table = layers.load()
    funcs = {h["func"] for j in load_journeys(SAMPLE) for h in j["hits"]}
    assert {f for f in funcs if table.classify(f) == "other"} == set()


def _trace(journeys):
    session = {"id": 3, "config": {"mark": 0xDEADBEEF, "mask": 0xFFFFFFFF}}
    text = "".join(exports.chrome_trace(lambda: iter(journeys), layers.load(), session))
    return json.loads(text)


@pytest.mark.parametrize("recording", recordings(), ids=lambda p: p.name)
def test_chrome_trace_shape(recording):
    journeys = load_journeys(recording)
    trace = _trace(journeys)
    events = trace["traceEvents"]
    table = layers.load()
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names == {x["label"] for x in table.layers}
    slices = [e for e in events if e["ph"] == "X"]
    assert len(slices) == sum(len(j["hits"]) for j in journeys)
    # one track per layer, and a track's slices never overlap (Perfetto would misnest them)
    by_tid = {}
    for e in slices:
        assert e["tid"] == table.ids.index(e["cat"]) + 1
        by_tid.setdefault(e["tid"], []).append((e["ts"], e["dur"]))
    for spans in by_tid.values():
        spans.sort()
        for (t0, d0), (t1, _) in zip(spans, spans[1:]):
            assert t0 + d0 <= t1 + 1e-6
    # flows: a chain per journey, out from the first hit, in to the last, both in between
    chains = {}
    for e in slices:
        if "bind_id" in e:
            chains.setdefault(e["bind_id"], []).append(e)
    multi = [j for j in journeys if len(j["hits"]) > 1]
    assert len(chains) == len(multi)
    for chain in chains.values():
        chain.sort(key=lambda e: e["args"]["hit"])
        assert chain[0].get("flow_out") and not chain[0].get("flow_in")
        assert chain[-1].get("flow_in") and not chain[-1].get("flow_out")
        assert all(e.get("flow_in") and e.get("flow_out") for e in chain[1:-1])
    drops = [e for e in events if e["ph"] == "i"]
    assert len(drops) == sum(1 for j in journeys if j["drop_reason"])
    assert min(e["ts"] for e in slices) == 0
    assert trace["displayTimeUnit"] == "ns"


def test_chrome_trace_of_overlapping_packets_on_one_track():
    # two packets interleaved in the same layer: slices get clipped, never overlap
    def j(jid, start, funcs):
        return {"id": jid, "skb": "0x1", "mark": 1, "tuple": None, "start_ns": start, "duration_ns": 3000,
                "hits": [{"func": f, "kind": "kprobe", "t_ns": i * 1000, "cpu": 0, "len": 1, "mark": 1,
                          "ifindex": 1, "dev": "lo", "netns": 1} for i, f in enumerate(funcs)],
                "drop_reason": None, "drop_func": None, "end": "freed"}
    trace = _trace([j(1, 0, ["ip_rcv", "ip_rcv_finish", "ip_local_deliver"]),
                    j(2, 500, ["ip_rcv", "ip_rcv_finish", "ip_local_deliver"])])
    spans = sorted((e["ts"], e["dur"]) for e in trace["traceEvents"] if e["ph"] == "X")
    assert spans == [(0.0, 0.5), (0.5, 0.5), (1.0, 0.5), (1.5, 0.5), (2.0, 0.0), (2.5, 0.0)]


def test_export_route(tmp_path):
    app, _ = make_app(tmp_path)
    c = app.test_client()
    sid = c.post("/api/sessions", json={"mark": "0xdeadbeef"}, headers=AUTH).json["id"]
    wait_for(lambda: c.get(f"/api/sessions/{sid}", headers=AUTH).json["journeys"] == 13, what="journeys")
    c.post(f"/api/sessions/{sid}/stop", headers=AUTH)
    wait_session_state(c, sid, ("stopped",))
    r = c.get(f"/api/sessions/{sid}/export.trace.json", headers=AUTH)
    assert r.status_code == 200 and "attachment" in r.headers["Content-Disposition"]
    trace = json.loads(r.data)
    assert trace["otherData"]["session"] == sid
    process = [e for e in trace["traceEvents"] if e["name"] == "process_name"][0]
    assert process["args"]["name"] == f"ipft-web session {sid} (mark 0xdeadbeef/0xffffffff)"
