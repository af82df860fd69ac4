"""`carehub report --html` as the people in Binhai open it (issue 14, items 4 and 5):
rendered by headless Chromium (`--dump-dom`), the page's text has the Chinese
headings, the agencies' configured names (滨海新区公安局, not `police`) and the
times in broker.timezone (an event at 12:00Z reads 20:00, Asia/Shanghai); with
--lang en the headings are English and the names and local times stay.

Chromium is the Debian package `chromium` (in `make deps-test`, which `make check` runs). Without it this test
skips on a developer's machine and FAILS in CI (CI=true): the acceptance check must
not quietly stop running there.

The program: $CAREHUB_BIN_DIR/carehub (make e2e sets build/san/bin), else <repo>/bin/carehub.
"""

import os
import subprocess
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest

import carehub_harness as h
from routing_harness import (CLOCK_AGENT, clock, make_clock_broker,  # noqa: F401
                             routing_config, send_event)

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("CAREHUB_BIN_DIR") or REPO / "bin")
CAREHUB = BIN_DIR / "carehub"
CHROMIUM = "/usr/bin/chromium"

# 2027-03-01 12:00:00Z is 2027-03-01 20:00 in Asia/Shanghai (UTC+08:00 all year)
T0 = int(datetime(2027, 3, 1, 12, 0, tzinfo=timezone.utc).timestamp() * 1000)
POLICE = next(a["name"] for a in h.AGENCIES if a["id"] == "police")
WORKFLOWS = [{"name": "reports", "match": {"type": "mandatory_report"},
              "assign": [{"agency": "police", "ack_within": "1h"}]},
             {"name": "online", "match": {"type": "online_risk"},
              "assign": [{"agency": "education", "ack_within": "10m"}]}]


@pytest.fixture(scope="module")
def chromium():
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    why = f"{CHROMIUM} is not installed (Debian package chromium, in `make deps-test`, which `make check` runs)"
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(f"{why}: CI must render the HTML report", pytrace=False)
    pytest.skip(why)


class _Text(HTMLParser):
    """The text a reader sees: every text node outside <style>, <script> and <title>."""

    def __init__(self):
        super().__init__()
        self.parts, self.skip = [], 0

    def handle_starttag(self, tag, attrs):
        if tag in ("style", "script", "title"):
            self.skip += 1

    def handle_endtag(self, tag):
        if tag in ("style", "script", "title") and self.skip:
            self.skip -= 1

    def handle_data(self, data):
        if not self.skip and data.strip():
            self.parts.append(data.strip())


def rendered_text(chromium, page, tmp_path):
    """Open the page in headless Chromium and return the rendered DOM's text parts."""
    r = subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", "--no-first-run",
                        f"--user-data-dir={tmp_path / 'chromium-profile'}",
                        "--dump-dom", page.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "<body" in r.stdout, \
        f"chromium --dump-dom failed (exit {r.returncode}): {r.stderr[-2000:]}"
    p = _Text()
    p.feed(r.stdout)
    return p.parts


def run(b, *args, lang=None):
    env = dict(os.environ)
    env.pop("CAREHUB_LANG", None)        # the default: Chinese
    if lang is not None:
        env["CAREHUB_LANG"] = lang
    r = subprocess.run([str(CAREHUB), "-b", b.endpoint, "-a", "supervisor-01", "--wait", "10"]
                       + [str(a) for a in args], capture_output=True, text=True, timeout=60,
                       env=env)
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture
def scenario(make_clock_broker, tmp_path, connect):
    """A broker in Asia/Shanghai on the virtual clock at 12:00Z, one report (police,
    named in the config) and one online risk (education, no name configured)."""
    cfg = routing_config(tmp_path / "b", workflows=WORKFLOWS, broker={"timezone": "Asia/Shanghai"})
    b = make_clock_broker(config=cfg, name="b")
    assert clock(connect(b, login=CLOCK_AGENT), set=T0) == T0
    send_event(connect(b, login="reporter-01"), "mandatory_report", h.mandatory_report_body())
    send_event(connect(b, login="monitor-01"), "online_risk", h.online_risk_body())
    return b


def test_rendered_report_is_chinese_with_names_and_local_times(scenario, chromium, tmp_path):
    page = tmp_path / "report.html"
    run(scenario, "report", "--html", page, "--since", "2027-03-01T11:30:00Z")
    text = rendered_text(chromium, page, tmp_path)
    joined = "\n".join(text)
    # Chinese headings: the page's title heading, the table's columns, the chart
    assert "各单位响应情况" in text, joined
    for col in ("单位", "派发任务", "签收", "办结", "按时签收率", "按时办结率", "逾期未签收"):
        assert col in text, (col, joined)
    assert "按时签收率（%）" in text, joined
    assert "Response per agency" not in joined and "assignments" not in joined, joined
    assert "acknowledgement" not in text and "resolution" not in text, joined
    # the agency's configured name, in the table and the chart; an agency without a
    # name keeps its id
    assert text.count(POLICE) >= 2 and "police" not in text, joined
    assert "education" in text, joined
    # local time: the figures' time 12:00Z as 20:00 in Asia/Shanghai, the zone named,
    # and --since 11:30Z as 19:30
    assert any("2027-03-01 20:00:00 +08:00" in t and "(Asia/Shanghai)" in t for t in text), joined
    assert "2027-03-01 19:30:00 +08:00" in joined, joined
    assert "12:00:00" not in joined, joined


def test_rendered_report_in_english_keeps_names_and_local_times(scenario, chromium, tmp_path):
    page = tmp_path / "report-en.html"
    run(scenario, "--lang", "en", "report", "--html", page)
    text = rendered_text(chromium, page, tmp_path)
    joined = "\n".join(text)
    assert "Response per agency" in text and "on time %" in text, joined
    assert "各单位响应情况" not in joined, joined
    assert POLICE in text and "2027-03-01 20:00:00 +08:00 (Asia/Shanghai)" in joined, joined
    # CAREHUB_LANG=en says the same as --lang en; --lang wins over it
    run(scenario, "report", "--html", page, lang="en")
    assert "Response per agency" in rendered_text(chromium, page, tmp_path)
    run(scenario, "--lang", "zh", "report", "--html", page, lang="en")
    assert "各单位响应情况" in rendered_text(chromium, page, tmp_path)
