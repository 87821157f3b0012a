#!/usr/bin/env python3
"""Adds up the test phases of scripts/test.sh.

usage: summarize.py PHASE_DIR...
Each PHASE_DIR holds what one pytest run left: junit.xml, rc (pytest's exit code), pytest.log.
Prints one line per phase (pytest's own summary line) and a last line `total: N passed, M failed,
K skipped`; exits 1 if anything failed. Counted as one failure each: a phase without junit.xml
(crashed, timed out, guest did not boot), pytest exit 5 (no test collected: something that should
have run did not) and any other non-zero exit that the junit file does not explain.
"""
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

SUMMARY = re.compile(r"\b(passed|failed|errors?|skipped|deselected|no tests ran|xfailed|xpassed)\b")


def pytest_line(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "(no pytest output)"
    for line in reversed(lines):
        if SUMMARY.search(line) and re.search(r"\bin [0-9.]+s\b", line):
            return line.strip(" =")
    return lines[-1].strip() if lines else "(empty pytest output)"


def junit_counts(path: Path):
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    tests = failures = errors = skipped = 0
    for s in suites:
        tests += int(s.get("tests", 0))
        failures += int(s.get("failures", 0))
        errors += int(s.get("errors", 0))
        skipped += int(s.get("skipped", 0))
    return tests - failures - errors - skipped, failures + errors, skipped


def main(dirs) -> int:
    total_p = total_f = total_s = 0
    for d in map(Path, dirs):
        name = d.name
        rc_text = (d / "rc").read_text().strip() if (d / "rc").exists() else ""
        rc = int(rc_text) if rc_text.lstrip("-").isdigit() else None
        note = ""
        passed = failed = skipped = 0
        junit = d / "junit.xml"
        if junit.exists():
            try:
                passed, failed, skipped = junit_counts(junit)
            except (ET.ParseError, ValueError) as exc:
                failed, note = 1, f"unreadable junit.xml: {exc}"
        else:
            failed, note = 1, "no junit.xml (crashed, timed out or did not start)"
        if rc == 5:
            failed, note = failed + 1, "pytest collected no test (exit 5): counted as a failure"
        elif rc is None and not note:
            failed, note = failed + 1, "no exit code recorded"
        elif rc not in (None, 0) and failed == 0:
            failed, note = 1, f"pytest exited {rc} without a failed test"
        extra = (d / "note").read_text().strip() if (d / "note").exists() else ""
        print(f"{name}: {pytest_line(d / 'pytest.log')}" + (f"  [{note}]" if note else "")
              + (f"  [{extra}]" if extra else ""))
        total_p, total_f, total_s = total_p + passed, total_f + failed, total_s + skipped
    print(f"total: {total_p} passed, {total_f} failed, {total_s} skipped")
    return 1 if total_f else 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1:]))
