"""ipft_web.logs: logging's loggers where logging is loaded, stderr lines in the CLI's format where not."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

from ipft_web import logs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_the_cli_format_without_loading_logging():
    out = run("import sys\nfrom ipft_web import logs\nlogs.configure(logs.INFO, 'ipft: %(message)s')\n"
              "log = logs.get_logger('ipft_web.x')\n"
              "log.debug('hidden %s', 1); log.info('shown %s and %r', 1, 'two'); log.warning('plain')\n"
              "log.info('%(n)d dict', {'n': 3}); log.error('100%% done')\n"
              "print('enabled', log.isEnabledFor(logs.INFO), log.isEnabledFor(logs.DEBUG))\n"
              "print('logging loaded:', 'logging' in sys.modules)\n")
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == ["ipft: shown 1 and 'two'", "ipft: plain", "ipft: 3 dict", "ipft: 100%% done"]   # as logging: no args, no %
    assert "enabled True False" in out.stdout and "logging loaded: False" in out.stdout


def test_a_warning_level_cli_prints_warnings_only():
    out = run("from ipft_web import logs\nlogs.configure(logs.WARNING, 'ipft: %(message)s')\n"
              "log = logs.get_logger('x')\nlog.info('no'); log.warning('yes')\n")
    assert out.stderr == "ipft: yes\n"


def test_exc_info_goes_through_logging_in_the_same_format():
    out = run("import sys\nfrom ipft_web import logs\nlogs.configure(logs.INFO, 'ipft: %(message)s')\n"
              "log = logs.get_logger('x')\n"
              "try:\n    1 / 0\nexcept ZeroDivisionError:\n    log.exception('failed')\n"
              "log.info('after')\nprint('logging loaded:', 'logging' in sys.modules)\n")
    lines = out.stderr.splitlines()
    assert lines[0] == "ipft: failed" and "ZeroDivisionError" in out.stderr and lines[-1] == "ipft: after"
    assert "logging loaded: True" in out.stdout


def test_without_configure_records_go_to_logging(caplog):
    log = logs.get_logger("ipft_web.test_logs")
    with caplog.at_level(logging.INFO, logger="ipft_web.test_logs"):
        log.info("to %s", "logging")
        log.debug("below")
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("ipft_web.test_logs", logging.INFO, "to logging")]


def test_where_logging_is_loaded_configured_records_go_to_it_too(caplog, monkeypatch):
    monkeypatch.setattr(logs, "_config", {})
    logs.configure(logs.WARNING, "ipft: %(message)s")
    with caplog.at_level(logging.WARNING):
        logs.get_logger("ipft_web.y").warning("seen by %s", "caplog")
    assert "seen by caplog" in caplog.text
