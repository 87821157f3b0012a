"""Browser tests: Chromium (Playwright) against a running `ipft-web` on 127.0.0.1.

The tracer is a parameter (`scenario`): by default the replay recordings in tests/data (test mode,
IPFT_WEB_TRACER=replay:PATH); IPFT_WEB_BROWSER_SCENARIOS=name,name picks some. "host" runs the real tracer
(BCC, the host kernel's raw tracepoints) on a ping marked by an iptables rule inside a throwaway
network namespace; it needs root and is marked `root` (scripts/test.sh runs it in the host phase).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field

import pytest

from web_fixtures import HOST_RECORDING, SAMPLE, Server

CHROMIUM = os.environ.get("IPFT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@dataclass
class Scenario:
    name: str
    tracer: str                      # "replay:PATH" or "bcc"
    mark: str = "0xdeadbeef"
    regex: str = ""
    min_journeys: int = 1
    expect_drop: bool = False        # a dropped journey (NETFILTER_DROP) is among them
    lanes: tuple = ()                # lanes the first journey must use
    env: dict = field(default_factory=dict)
    traffic: object = None           # callable(): sends the marked packets (real tracer)
    needs_root: bool = False
    setup: object = None             # callable(request) -> traffic callable, for the real tracer


SCENARIOS = {
    "replay-sample": Scenario("replay-sample", f"replay:{SAMPLE}", min_journeys=13, expect_drop=True,
                              lanes=("netfilter", "IPv4", "device / driver", "skb lifecycle"),
                              env={"IPFT_WEB_REPLAY_SPEED": "4"}),
}
if HOST_RECORDING.is_file():
    SCENARIOS["replay-host"] = Scenario("replay-host", f"replay:{HOST_RECORDING}", min_journeys=23,
                                        expect_drop=True, lanes=("device / driver", "skb lifecycle"),
                                        env={"IPFT_WEB_REPLAY_SPEED": "4"})


def _marked_ping(request):
    """A namespace whose ICMP is marked 0xdeadbeef on output; traffic = 3 pings to 127.0.0.2 in it."""
    ns = request.getfixturevalue("netns")("web")
    ns.iptables("-t", "raw", "-A", "OUTPUT", "-p", "icmp", "-j", "MARK", "--set-mark", "0xdeadbeef")
    return lambda: ns.ping("127.0.0.2", count=3)


SCENARIOS["host"] = Scenario("host", "bcc", min_journeys=3, lanes=("skb lifecycle",), needs_root=True,
                             setup=_marked_ping)


def selected() -> list:
    names = os.environ.get("IPFT_WEB_BROWSER_SCENARIOS")
    names = [n.strip() for n in names.split(",")] if names else list(SCENARIOS)
    return [pytest.param(n, marks=[pytest.mark.root] if n in SCENARIOS and SCENARIOS[n].needs_root else [])
            for n in names]


@pytest.fixture(scope="session")
def chromium():
    if not shutil.which(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(params=selected())
def scenario(request):
    if request.param not in SCENARIOS:
        pytest.skip(f"no browser scenario named {request.param!r}")
    sc = SCENARIOS[request.param]
    if sc.needs_root and os.geteuid() != 0:
        pytest.skip("needs root")
    if sc.setup is not None:
        from dataclasses import replace
        sc = replace(sc, traffic=sc.setup(request))
    return sc


@pytest.fixture
def server(scenario, tmp_path):
    srv = Server(tmp_path, tracer=scenario.tracer, extra_env=scenario.env)
    yield srv
    srv.stop()


class ConsoleLog:
    """Console errors and page errors; CSP violations show up here."""

    def __init__(self, page):
        self.errors = []
        page.on("console", lambda m: m.type == "error" and self.errors.append((m.text, m.location.get("url", ""))))
        page.on("pageerror", lambda e: self.errors.append((str(e), "")))

    def ours(self):
        # static/marks.js (another part) injects a <style>, which our CSP blocks: reported, not ours
        return [e for e in self.errors if not e[1].endswith("/static/marks.js")
                and not (e[1].endswith("/api/marks/preview") or "/api/marks" in e[1])]


@pytest.fixture
def page(chromium):
    context = chromium.new_context(viewport={"width": 1600, "height": 1000})
    pg = context.new_page()
    pg.console_log = ConsoleLog(pg)
    yield pg
    context.close()
