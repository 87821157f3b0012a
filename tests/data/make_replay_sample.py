"""Writes tests/data/replay-sample.jsonl: a hand-made (synthetic) recording in the Journey format.

Not a trace of a real kernel: the paths follow the real kernel's call chains (kprobe backend, with
the skb tracepoints the tracer always adds), the timings are plausible, and the set covers every
lane of the UI: ICMP echo and reply over lo, a TCP SYN dropped by netfilter, UDP to a local
socket, an IPv6 ping, and a ping bridged between two network namespaces through veth and a qdisc.

    python tests/data/make_replay_sample.py > tests/data/replay-sample.jsonl
"""
import json
import random
import sys

MARK = 0xDEADBEEF
HOST_NS, NS1, NS2 = 4026531840, 4026532281, 4026532359
rng = random.Random(20240611)

# One step: (function, gap before it in ns, len, (dev, ifindex, netns) or None)
LO = ("lo", 1, HOST_NS)
NO_DEV = (None, 0, HOST_NS)


def ip4_tx(l3=84, first="__ip_local_out"):
    return [(first, 0, l3, NO_DEV), ("nf_hook_slow", 380, l3, NO_DEV), ("ip_output", 900, l3, LO),
            ("nf_hook_slow", 350, l3, LO), ("ip_finish_output", 640, l3, LO),
            ("__ip_finish_output", 230, l3, LO), ("ip_finish_output2", 240, l3, LO)]


def lo_xmit(l3):
    l2 = l3 + 14
    return [("__dev_queue_xmit", 700, l2, LO), ("netdev_core_pick_tx", 760, l2, LO),
            ("validate_xmit_skb", 420, l2, LO), ("dev_hard_start_xmit", 380, l2, LO),
            ("loopback_xmit", 340, l2, LO), ("skb_clone_tx_timestamp", 360, l2, LO),
            ("eth_type_trans", 470, l2, LO), ("netif_rx", 480, l3, LO), ("__netif_rx", 410, l3, LO),
            ("netif_rx_internal", 350, l3, LO), ("enqueue_to_backlog", 440, l3, LO),
            # softirq: process_backlog picks it up
            ("__netif_receive_skb", 5600, l3, LO), ("__netif_receive_skb_one_core", 300, l3, LO),
            ("__netif_receive_skb_core", 290, l3, LO)]


def ip4_rx(l3, l4):
    return [("ip_rcv", 1100, l3, LO), ("ip_rcv_core", 350, l3, LO), ("nf_hook_slow", 550, l3, LO),
            ("ip_rcv_finish", 1100, l3, LO), ("ip_route_input_noref", 400, l3, LO),
            ("ip_local_deliver", 1650, l3, LO), ("nf_hook_slow", 450, l3, LO),
            ("ip_local_deliver_finish", 900, l4, LO), ("ip_protocol_deliver_rcu", 300, l4, LO)]


def free(l, dev=LO, consume=True, gap=800):
    first = [("consume_skb", gap, l, dev), ("skb:consume_skb", 90, l, dev)] if consume else []
    return first + [("skb_release_head_state", 220, l, dev), ("skb_release_data", 300, l, dev),
                    ("kfree_skbmem", 350, l, dev)]


def echo_request(src, dst):
    steps = ip4_tx() + lo_xmit(84) + ip4_rx(84, 64) + [
        ("raw_local_deliver", 300, 64, LO), ("icmp_rcv", 500, 64, LO), ("icmp_echo", 700, 64, LO),
        ("icmp_reply", 400, 64, LO)] + free(64, gap=8300)
    return steps, {"family": "ipv4", "proto": "icmp", "src": src, "dst": dst, "sport": None, "dport": None,
                   "icmp_type": 8, "icmp_code": 0}


def echo_reply(src, dst):
    steps = [("ip_send_skb", 0, 84, NO_DEV)] + ip4_tx(first="ip_local_out")[0:1] + ip4_tx()[1:] + \
        lo_xmit(84) + ip4_rx(84, 64) + [
            ("raw_local_deliver", 300, 64, LO), ("icmp_rcv", 500, 64, LO), ("ping_rcv", 650, 64, LO),
            ("ping_queue_rcv_skb", 380, 64, LO), ("__sock_queue_rcv_skb", 420, 64, LO),
            ("sock_def_readable", 500, 64, LO),
            # the ping process wakes up and reads it
            ("skb_recv_datagram", 24000, 64, LO), ("skb_copy_datagram_iter", 900, 64, LO),
            ("skb_free_datagram", 1400, 64, LO)] + free(64, gap=300)
    return steps, {"family": "ipv4", "proto": "icmp", "src": src, "dst": dst, "sport": None, "dport": None,
                   "icmp_type": 0, "icmp_code": 0}


def tcp_syn_dropped(sport, dport):
    steps = [("__tcp_transmit_skb", 0, 60, NO_DEV), ("__ip_queue_xmit", 900, 60, NO_DEV)] + \
        ip4_tx(60, first="ip_local_out")[0:1] + ip4_tx(60)[1:] + lo_xmit(60) + [
            ("ip_rcv", 1100, 60, LO), ("ip_rcv_core", 350, 60, LO), ("nf_hook_slow", 550, 60, LO),
            ("ip_rcv_finish", 1100, 60, LO), ("ip_route_input_noref", 400, 60, LO),
            ("ip_local_deliver", 1650, 60, LO), ("nf_hook_slow", 450, 60, LO),
            ("kfree_skb_reason", 2300, 60, LO), ("skb:kfree_skb", 120, 60, LO)] + free(60, consume=False)
    return steps, {"family": "ipv4", "proto": "tcp", "src": "127.0.0.1", "dst": "127.0.0.1", "sport": sport,
                   "dport": dport, "icmp_type": None, "icmp_code": None}


def udp_local(sport, dport):
    steps = [("udp_send_skb", 0, 56, NO_DEV), ("ip_send_skb", 600, 56, NO_DEV)] + \
        ip4_tx(56, first="ip_local_out")[0:1] + ip4_tx(56)[1:] + lo_xmit(56) + ip4_rx(56, 36) + [
            ("udp_rcv", 350, 36, LO), ("__udp4_lib_rcv", 300, 36, LO), ("udp_unicast_rcv_skb", 800, 36, LO),
            ("udp_queue_rcv_skb", 300, 36, LO), ("udp_queue_rcv_one_skb", 260, 36, LO),
            ("__udp_enqueue_schedule_skb", 700, 36, LO), ("sock_def_readable", 600, 36, LO),
            ("skb_consume_udp", 17000, 36, LO), ("__consume_stateless_skb", 500, 36, LO),
            ("skb_release_data", 300, 36, LO), ("kfree_skbmem", 350, 36, LO)]
    return steps, {"family": "ipv4", "proto": "udp", "src": "127.0.0.1", "dst": "127.0.0.1", "sport": sport,
                   "dport": dport, "icmp_type": None, "icmp_code": None}


def ping6():
    steps = [("ip6_local_out", 0, 104, NO_DEV), ("__ip6_local_out", 300, 104, NO_DEV),
             ("nf_hook_slow", 420, 104, NO_DEV), ("ip6_output", 900, 104, LO), ("nf_hook_slow", 380, 104, LO),
             ("ip6_finish_output", 600, 104, LO), ("ip6_finish_output2", 320, 104, LO)] + lo_xmit(104) + [
        ("ipv6_rcv", 1000, 104, LO), ("ip6_rcv_core", 380, 104, LO), ("nf_hook_slow", 520, 104, LO),
        ("ip6_rcv_finish", 900, 104, LO), ("ip6_route_input", 500, 104, LO), ("ip6_input", 1500, 104, LO),
        ("nf_hook_slow", 400, 104, LO), ("ip6_input_finish", 800, 64, LO),
        ("ip6_protocol_deliver_rcu", 300, 64, LO), ("icmpv6_rcv", 600, 64, LO),
        ("icmpv6_echo_reply", 800, 64, LO)] + free(64, gap=9000)
    return steps, {"family": "ipv6", "proto": "icmpv6", "src": "::1", "dst": "::1", "sport": None,
                   "dport": None, "icmp_type": 128, "icmp_code": 0}


def bridged_ping():
    v1, bv1 = ("veth1", 5, NS1), ("br-veth1", 6, HOST_NS)
    br, bv2, v2 = ("br0", 4, HOST_NS), ("br-veth2", 8, HOST_NS), ("veth2", 7, NS2)
    tx = [("ip_finish_output2", 0, 84, v1), ("__dev_queue_xmit", 700, 98, v1),
          ("dev_hard_start_xmit", 600, 98, v1), ("veth_xmit", 350, 98, v1), ("__dev_forward_skb", 500, 98, bv1),
          ("eth_type_trans", 400, 98, bv1), ("__netif_rx", 450, 84, bv1), ("enqueue_to_backlog", 380, 84, bv1),
          ("__netif_receive_skb_core", 4800, 84, bv1), ("sch_handle_ingress", 400, 84, bv1),
          ("tcf_classify", 350, 84, bv1), ("br_handle_frame", 700, 84, bv1), ("nf_hook_slow", 500, 84, bv1),
          ("br_handle_frame_finish", 900, 84, bv1), ("br_forward", 1100, 84, bv1),
          ("__br_forward", 300, 84, bv1), ("nf_hook_slow", 400, 84, bv2), ("br_forward_finish", 800, 84, bv2),
          ("br_dev_queue_push_xmit", 400, 98, bv2), ("__dev_queue_xmit", 500, 98, bv2),
          ("pfifo_fast_enqueue", 700, 98, bv2), ("__qdisc_run", 600, 98, bv2),
          ("sch_direct_xmit", 350, 98, bv2), ("dev_hard_start_xmit", 450, 98, bv2),
          ("veth_xmit", 350, 98, bv2), ("__dev_forward_skb", 500, 98, v2), ("eth_type_trans", 400, 98, v2),
          ("__netif_rx", 450, 84, v2), ("__netif_receive_skb_core", 5200, 84, v2), ("ip_rcv", 1000, 84, v2),
          ("ip_rcv_core", 350, 84, v2), ("ip_rcv_finish", 1300, 84, v2), ("ip_local_deliver", 1500, 84, v2),
          ("ip_local_deliver_finish", 800, 64, v2), ("icmp_rcv", 700, 64, v2), ("icmp_echo", 700, 64, v2),
          ("icmp_reply", 400, 64, v2)] + free(64, dev=v2, gap=8800)
    return tx, {"family": "ipv4", "proto": "icmp", "src": "10.99.0.1", "dst": "10.99.0.2", "sport": None,
                "dport": None, "icmp_type": 8, "icmp_code": 0}


def journey(jid, start_ns, cpu, skb, made, end="freed", drop=None, other_cpu=None):
    steps, tup = made
    hits, t = [], 0
    for n, (func, gap, length, dev) in enumerate(steps):
        t += 0 if n == 0 else max(60, int(gap * rng.uniform(0.8, 1.25)))
        name, ifindex, netns = dev
        kind = "tracepoint" if ":" in func else "kprobe"
        hits.append({"func": func, "kind": kind, "t_ns": t, "cpu": cpu, "len": length, "mark": MARK,
                     "ifindex": ifindex, "dev": name, "netns": netns, "skb": skb})
    first_dev = next((h for h in hits if h["ifindex"]), hits[0])
    j = {"id": jid, "skb": skb, "mark": MARK, "tuple": tup, "dev": first_dev["dev"],
         "ifindex": first_dev["ifindex"], "netns": first_dev["netns"], "start_ns": start_ns,
         "duration_ns": t, "hits": hits, "drop_reason": None, "drop_func": None, "end": end}
    if drop:
        j["drop_reason"], j["drop_func"] = drop
    return j


def main(out=sys.stdout):
    t = 8_123_456_789_000
    jid = 0
    skbs = iter(f"0xffff8881{rng.randrange(0x01000000, 0x3fffffff):08x}" for _ in range(1000))
    sample = []
    for seq in range(4):
        sample.append((echo_request("127.0.0.1", "127.0.0.2"), 1, None))
        sample.append((echo_reply("127.0.0.2", "127.0.0.1"), 1, None))
        if seq == 1:
            sample.append((tcp_syn_dropped(41234, 8081), 0, ("NETFILTER_DROP", "nf_hook_slow")))
            sample.append((udp_local(51515, 5353), 0, None))
        if seq == 2:
            sample.append((ping6(), 1, None))
            sample.append((tcp_syn_dropped(41234, 8081), 0, ("NETFILTER_DROP", "nf_hook_slow")))
            sample.append((bridged_ping(), 0, None))
    for made, cpu, drop in sample:
        jid += 1
        j = journey(jid, t, cpu, next(skbs), made, drop=drop)
        out.write(json.dumps(j, separators=(",", ":")) + "\n")
        t += rng.randrange(40_000_000, 300_000_000)


if __name__ == "__main__":
    main()
