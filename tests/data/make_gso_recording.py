#!/usr/bin/env python3
"""Records tests/data/recording-host-gso.jsonl: a real trace (host kernel, tracepoint backend, as root)
of the GSO scenario of tests/test_fields_trace.py with the `gso` field script plus a few fields, for
the dashboard's field columns and chart in the browser tests (replayed there, no root needed).

    sudo .venv/bin/python tests/data/make_gso_recording.py
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from ipft_testlib import IpftFactory, NetnsFactory  # noqa: E402
from test_fields_trace import MARK, gso_pair, send  # noqa: E402

OUT = os.path.join(HERE, "recording-host-gso.jsonl")
KEEP = 40   # journeys kept: the ones with fields, super-packets first


def main() -> int:
    netns, ipft = NetnsFactory(), IpftFactory()
    try:
        a, b = gso_pair(netns)
        h = ipft("-m", hex(MARK), "-b", "tracepoint", "-o", "json", "--idle-timeout", "0.5",
                 "-s", "gso", "--field", "skb->dev->name", "--field", "iph->daddr")
        send(a, b)
        h.wait_for(lambda j: any((x.get("fields") or {}).get("shinfo->gso_segs", 0) > 1 for x in j["hits"]))
        res = h.stop()
        assert res.returncode == 0, res
    finally:
        ipft.cleanup()
        netns.cleanup()
    journeys = [j for j in res.journeys if any(x.get("fields") for x in j["hits"])]
    journeys.sort(key=lambda j: -max((x.get("fields") or {}).get("shinfo->gso_segs") or 0 for x in j["hits"]))
    journeys = sorted(journeys[:KEEP], key=lambda j: j["start_ns"])
    with open(OUT, "w") as f:
        for i, j in enumerate(journeys, 1):
            j["id"] = i
            f.write(json.dumps(j, separators=(",", ":")) + "\n")
    print(f"{OUT}: {len(journeys)} journeys")
    return 0


if __name__ == "__main__":
    sys.exit(main())
