"""Skips are reported and checked (issue 12): at the end of a run every skipped test
is listed with its reason, and a skip whose reason matches no line of
expected_skips.txt fails the run (exit code 1, even when every test passed).
conftest.py imports the hooks below."""

import re
from pathlib import Path

import pytest

ALLOWLIST = Path(__file__).with_name("expected_skips.txt")
_SKIPS = []     # (test id, reason)


def _allowed():
    pats = []
    for line in ALLOWLIST.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            pats.append(re.compile(line))
    return pats


def _reason(report):
    lr = report.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:      # (path, line, "Skipped: reason")
        reason = lr[2]
    else:
        reason = str(lr)
    return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        _SKIPS.append((report.nodeid, _reason(report)))


def pytest_collectreport(report):
    if report.skipped:
        _SKIPS.append((report.nodeid or "(collection)", _reason(report)))


def _unexpected():
    pats = _allowed()
    return [(t, r) for t, r in _SKIPS if not any(p.search(r) for p in pats)]


def pytest_sessionfinish(session, exitstatus):
    if _unexpected() and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if not _SKIPS:
        return
    bad = _unexpected()
    tr = terminalreporter
    tr.section(f"skips ({len(_SKIPS)}; not in {ALLOWLIST.name}: {len(bad)})",
               sep="=", red=bool(bad), yellow=not bad)
    for test, reason in _SKIPS:
        mark = "NOT ALLOWED" if (test, reason) in bad else "allowed"
        tr.line(f"{mark}: {test}: {reason}")
    if bad:
        tr.line(f"{len(bad)} skip(s) not allowed by tests/e2e/{ALLOWLIST.name}: the run fails "
                f"(install what `make deps-test` installs, or allow the reason there, saying why)",
                red=True)
