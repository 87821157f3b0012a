"""A rule made through /api/marks marks a ping, and `ipft` traces exactly those packets.

Meant for the guest kernels (kprobes); the ping and the rule live in a throwaway network namespace.
Run: vng --disable-kvm -r /boot/vmlinuz-6.12.117+deb12-amd64 -m 3G --cpus 2 -- \
       "cd /work/main && IPFT_IN_GUEST=1 .venv/bin/python -m pytest -q tests/test_marks_guest.py"
"""
import json
import os
import selectors
import subprocess
import sys
import time

import pytest
from flask import Flask

from ipft_web.marks import api, listing
from ipft_web.marks.registry import REGISTRY
from test_marks_fixtures import needs_root_netns, netns, sh  # noqa: F401 (fixture)

pytestmark = [
    pytest.mark.guest,
    pytest.mark.skipif(os.environ.get("IPFT_IN_GUEST") != "1", reason="guest kernels only (IPFT_IN_GUEST=1)"),
    needs_root_netns,
]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARK = "0xdeadbeef"
REGEX = r"^(ip_|__ip_|icmp_|raw_|ping_|__dev_queue_xmit|dev_hard_start_xmit|netif_|__netif_|" \
        r"kfree_skb|consume_skb|net:|skb:)"
READY_TIMEOUT = float(os.environ.get("IPFT_READY_TIMEOUT", "600"))


def _wait_ready(proc) -> str:
    """Read stderr until `tracing N functions (BACKEND)`; returns that line."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + READY_TIMEOUT
    seen = []
    while time.monotonic() < deadline:
        if not sel.select(timeout=1):
            if proc.poll() is not None:
                break
            continue
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith("tracing ") and " functions (" in line:
            return line.strip()
    raise AssertionError("ipft did not get ready:\n" + "".join(seen[-20:]))


def test_api_rule_marks_a_traced_ping(netns):
    app = Flask(__name__)
    app.register_blueprint(api.bp)
    client = app.test_client()
    body = {"direction": "tx", "proto": "icmp", "dst": "127.0.0.2", "mark": MARK, "netns": netns}
    r = client.post("/api/marks", data=json.dumps(body), content_type="application/json")
    if r.status_code == 409:   # e.g. a guest kernel without xt_MARK/xt_comment: nft then
        r = client.post("/api/marks", data=json.dumps(dict(body, tool="nft")), content_type="application/json")
    assert r.status_code == 201, r.get_json()
    rule = r.get_json()
    proc = subprocess.Popen([sys.executable, "-m", "ipft_web.cli", "-m", MARK, "-o", "json", "--duration", "6",
                             "-r", REGEX], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = _wait_ready(proc)
        sh("ping", "-c", "3", "-i", "0.2", "-W", "1", "127.0.0.2", ns=netns)
        sh("ping", "-c", "2", "-i", "0.2", "-W", "1", "127.0.0.3", ns=netns)     # not marked
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        client.delete(f"/api/marks/{rule['id']}")
        REGISTRY.remove_all()
    assert proc.returncode == 0, err
    journeys = [json.loads(line) for line in out.splitlines() if line.strip()]
    ours = [j for j in journeys if (j.get("tuple") or {}).get("dst") == "127.0.0.2"]
    print(f"\n{ready}; {len(journeys)} journeys; functions of the first: "
          f"{[h['func'] for h in ours[0]['hits']] if ours else None}")
    assert len(ours) >= 3, journeys
    for j in ours:
        assert j["mark"] == int(MARK, 16)
        assert j["tuple"]["proto"] == "icmp" and j["hits"] and all("func" in h for h in j["hits"])
    requests = [j for j in ours if j["tuple"].get("icmp_type") == 8]
    assert len(requests) == 3
    assert not any((j.get("tuple") or {}).get("dst") == "127.0.0.3" for j in journeys)
    assert listing.list_tagged(netns) == []
