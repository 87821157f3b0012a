"""static/marks.js in Chromium (Playwright), against the real blueprint.

Server and browser both run inside a throwaway network namespace, so the rules the page applies
(without a netns of their own) land in that namespace only.
"""
import json
import os
import shutil
import sys

import pytest

from test_marks_fixtures import needs_root_netns, netns, sh, snapshot  # noqa: F401 (fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [pytest.mark.browser, needs_root_netns,
              pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)")]

SCRIPT = r'''
import json, sys, threading, time
from flask import Flask, send_from_directory
from werkzeug.serving import make_server
from playwright.sync_api import sync_playwright
from ipft_web import resources
from ipft_web.marks import api
from ipft_web.marks.registry import REGISTRY

app = Flask(__name__, static_folder=None)
app.register_blueprint(api.bp)
PAGE = """<!doctype html><html><head><meta charset=utf-8><title>t</title></head><body>
<div id="marks-panel" data-session="s1" data-mark="0xdeadbeef" data-mask="0xffffffff"></div>
<script src="/hook.js"></script><script src="/static/marks.js"></script></body></html>"""
HOOK = """window.traced = []; window.ipftStartTrace = (d) => window.traced.push(d);
document.addEventListener("ipft-marks:trace", (e) => window.traced.push({event: e.detail.mark}));"""
app.add_url_rule("/", "index", lambda: PAGE)
app.add_url_rule("/hook.js", "hook", lambda: (HOOK, 200, {"Content-Type": "text/javascript"}))
# the dashboard's policy (ipft_web/web/app.py): nothing inline, not even styles
app.after_request(lambda resp: (resp.headers.__setitem__("Content-Security-Policy", "default-src 'self'; "
                  "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"), resp)[1])
app.add_url_rule("/static/<path:name>", "static_files",
                 lambda name: send_from_directory(resources.path("static"), name))
server = make_server("127.0.0.1", 0, app, threaded=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{server.server_port}/"


def wait_until(page, js, timeout=20.0):
    """page.wait_for_function evaluates a string, which the CSP forbids; evaluate() goes through CDP."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(js):
        if time.monotonic() > deadline:
            raise TimeoutError(js)
        time.sleep(0.05)


out = {}
try:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=sys.argv[1], args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector(".marks-panel .marks-preset")
        page.click("text=Mark ICMP to 127.0.0.2 and trace")
        page.wait_for_selector(".marks-rule")
        wait_until(page, "window.traced.length >= 2")
        out["rules_ui"] = page.locator(".marks-rule").count()
        out["form_display"] = page.evaluate("getComputedStyle(document.querySelector('.marks-form')).display")
        out["traced"] = page.evaluate("window.traced")
        out["registry"] = [r.to_dict() for r in REGISTRY.list()]
        out["shown"] = page.locator(".marks-rule code").all_inner_texts()
        # a hostile value: the server refuses it, the page says so, nothing is applied
        page.fill("input[name=dst]", "1.1.1.1; reboot")
        page.click("text=Apply rule")
        wait_until(page, "document.querySelector('.marks-error').textContent.length > 0")
        out["error"] = page.inner_text(".marks-error")
        out["after_hostile"] = len(REGISTRY.list())
        # a preview of a valid form shows the exact commands
        page.fill("input[name=dst]", "10.0.0.0/8")
        page.select_option("select[name=proto]", "tcp")
        page.fill("input[name=dport]", "443")
        wait_until(page, "document.querySelector('.marks-preview').textContent.includes('--dport 443')")
        out["preview"] = page.locator(".marks-preview code").all_inner_texts()
        # remove through the list's button
        page.click(".marks-rule .marks-remove")
        page.wait_for_selector(".marks-empty")
        out["after_remove"] = len(REGISTRY.list())
        browser.close()
finally:
    REGISTRY.remove_all()
    server.shutdown()
print(json.dumps(out))
'''


def test_panel_preset_list_remove(netns):
    before = snapshot(netns)
    p = sh(sys.executable, "-c", SCRIPT, CHROMIUM, ns=netns, cwd=ROOT, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["rules_ui"] == 1 and len(out["registry"]) == 1
    assert out["form_display"] == "grid"      # the panel's styles apply under the dashboard's CSP
    rule = out["registry"][0]
    assert rule["session"] == "s1" and rule["spec"]["dst"] == "127.0.0.2" and rule["spec"]["proto"] == "icmp"
    assert out["shown"] == rule["commands"]
    assert out["traced"][0]["mark"] == "0xdeadbeef" and out["traced"][1] == {"event": "0xdeadbeef"}
    assert "dst" in out["error"] and out["after_hostile"] == 1
    assert out["preview"] and "-p tcp -d 10.0.0.0/8 --dport 443" in " ".join(out["preview"])
    assert out["after_remove"] == 0
    assert snapshot(netns) == before or "ipft-web" not in snapshot(netns)
