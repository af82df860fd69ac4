"""bin/carehub, the supervisors' command line (docs/agents.md "carehub (supervisors)"),
against real brokers: least privilege and the trail of reads, the case file, the
agency's own list, the reproducible spot-check sample, the per-agency report (figures
checked on a scripted scenario on the virtual clock, and the HTML page), verify online
and offline.

The program: $CAREHUB_BIN_DIR/carehub (make e2e sets build/san/bin), else <repo>/bin/carehub.
"""

import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

import carehub_harness as h
from carehub_harness import uid
from routing_harness import (case_ack, clock, make_clock_broker, new_secret,  # noqa: F401
                             receiver, routing_config, send_event, webhook_channel)

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("CAREHUB_BIN_DIR") or REPO / "bin")
CAREHUB = BIN_DIR / "carehub"
CHROMIUM = "/usr/bin/chromium"

WORKFLOWS = [{"name": "reports", "match": {"type": "mandatory_report"},
              "assign": [{"agency": "police", "ack_within": "1h"}]}]


@pytest.fixture(scope="module", autouse=True)
def _carehub_built():
    if not (CAREHUB.is_file() and os.access(CAREHUB, os.X_OK)):
        pytest.fail(f"{CAREHUB} not found: build it (see docs/agents.md) or set CAREHUB_BIN_DIR",
                    pytrace=False)


def run(broker, agent, *args, timeout=60):
    cmd = [str(CAREHUB)]
    if broker is not None:
        cmd += ["-b", broker.endpoint, "-a", agent, "--wait", "10"]
    cmd += [str(a) for a in args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr
    return r


def ok(r):
    assert r.returncode == 0, f"exit {r.returncode}\n--- stdout ---\n{r.stdout}\n--- stderr ---\n{r.stderr}"
    return r


def json_lines(r):
    return [json.loads(ln) for ln in ok(r).stdout.splitlines() if ln.strip()]


def start(make_broker, tmp_path, workflows=WORKFLOWS):
    """A broker with privacy on (bodies sealed on disk) and the routing agents."""
    key = tmp_path / "data.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    cfg = routing_config(tmp_path / "b", workflows=workflows)
    cfg["privacy"] = {"key_file": str(key)}
    b = make_broker(config=cfg, name="b")
    b.data_dir = cfg["broker"]["data_dir"]
    return b


def report(b, connect, name="王芳"):
    rep = connect(b, login="reporter-01")
    _, ev, case = send_event(rep, "mandatory_report", h.mandatory_report_body(
        uid("child"), child={"id": uid("cid"), "name": name}))
    return ev, case


# ---------------------------------------------------------------------------------
# the command line itself

def test_help_and_usage_errors():
    r = run(None, None, "--help")
    assert r.returncode == 0 and "cases" in r.stdout and "Exit:" in r.stdout
    for cmd in ("cases", "case", "trail", "verify", "trail-head", "sample", "report", "stats"):
        r = run(None, None, cmd, "--help")
        assert r.returncode == 0 and cmd in r.stdout, (cmd, r.stdout)
    assert run(None, None).returncode == 64
    assert run(None, None, "nonsense").returncode == 64
    assert run(None, None, "-a", "supervisor-01", "case").returncode == 64
    r = run(None, None, "-a", "supervisor-01", "case", "c1", "--all")
    assert r.returncode == 64 and "--all" in r.stderr
    assert run(None, None, "-a", "supervisor-01", "cases", "--limit", "0").returncode == 64
    assert run(None, None, "-a", "supervisor-01", "report", "--json", "--csv").returncode == 64


def test_no_broker_is_75(tmp_path):
    r = subprocess.run([str(CAREHUB), "-b", "tcp://127.0.0.1:9", "-a", "supervisor-01",
                        "--wait", "1", "stats"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 75 and "no answer" in r.stderr, r


# ---------------------------------------------------------------------------------
# least privilege, the case file, the list

def test_school_is_refused_and_the_refusal_is_in_the_trail(make_broker, tmp_path, connect):
    b = start(make_broker, tmp_path)
    _, case = report(b, connect)
    r = run(b, "school-0042", "case", case)
    assert r.returncode == 65, r
    assert "forbidden" in r.stderr and r.stdout == "", r
    recs = json_lines(run(b, "supervisor-01", "trail", case, "--json"))
    refused = [x for x in recs if x.get("kind") == "read_refused"]
    assert [x["actor"] for x in refused] == ["school-0042"], recs
    assert all(re.fullmatch(r"[0-9a-f]*", x.get("hash", "")) for x in recs), recs
    text = ok(run(b, "supervisor-01", "trail", case)).stdout
    assert re.search(r"read_refused\s+school-0042", text), text
    # the supervisor's trail read is itself in the trail now
    recs = json_lines(run(b, "supervisor-01", "trail", case, "--json"))
    assert any(x["kind"] == "read" and x["actor"] == "supervisor-01" for x in recs), recs


def test_supervisor_case_file_shows_the_child(make_broker, tmp_path, connect):
    b = start(make_broker, tmp_path)
    name = "CANARY-" + uid("n")
    ev, case = report(b, connect, name)
    r = ok(run(b, "supervisor-01", "case", case))
    assert name in r.stdout and ev in r.stdout, r.stdout
    assert re.search(r"滨海新区公安局 \(police\) .*state=open", r.stdout), r.stdout  # name (id)
    (doc,) = json_lines(run(b, "supervisor-01", "case", case, "--json"))
    assert doc["case"]["id"] == case and doc["events"][0]["body"]["child"]["name"] == name
    assert run(b, "supervisor-01", "case", "case-9999999999").returncode == 65


def test_agency_sees_only_its_cases(make_broker, tmp_path, connect):
    b = start(make_broker, tmp_path)
    _, mine = report(b, connect)
    _, _, other = send_event(connect(b, login="school-0042"), "absence", h.absence_body())
    police = [c["id"] for c in json_lines(run(b, "police-desk", "cases", "--all", "--json"))]
    assert mine in police and other not in police, police
    assert run(b, "police-desk", "case", other).returncode == 65
    everything = [c["id"] for c in json_lines(run(b, "supervisor-01", "cases", "--all", "--json"))]
    assert mine in everything and other in everything
    text = ok(run(b, "supervisor-01", "cases", "--type", "absence")).stdout
    assert other in text and mine not in text, text


def test_cases_pages(make_broker, tmp_path, connect):
    b = start(make_broker, tmp_path)
    cases = [report(b, connect, f"孩子{i}")[1] for i in range(5)]
    one = run(b, "supervisor-01", "cases", "--limit", "2", "--json")
    assert [c["id"] for c in json_lines(one)] == cases[:2]
    assert f"--after {cases[1]}" in one.stderr
    page2 = json_lines(run(b, "supervisor-01", "cases", "--limit", "2", "--after", cases[1], "--json"))
    assert [c["id"] for c in page2] == cases[2:4]
    every = json_lines(run(b, "supervisor-01", "cases", "--limit", "2", "--all", "--json"))
    assert [c["id"] for c in every] == cases


# ---------------------------------------------------------------------------------
# sample

def test_sample_is_reproducible(make_broker, tmp_path, connect):
    b = start(make_broker, tmp_path)
    for i in range(12):
        report(b, connect, f"孩子{i}")

    def draw(seed):
        (doc,) = json_lines(run(b, "supervisor-01", "sample", "--n", "3", "--seed", seed, "--json"))
        assert doc["seed"] == seed and doc["population"] == 12 and doc["n"] == 3, doc
        assert all(c["check"] for c in doc["cases"]), doc
        return [c["id"] for c in doc["cases"]]

    a, again, other = draw("7"), draw("7"), draw("8")
    assert a == again and len(set(a)) == 3
    assert a != other
    text = ok(run(b, "supervisor-01", "sample", "--n", "3", "--seed", "7")).stdout
    assert "seed 7" in text and all(x in text for x in a), text
    assert "reporter told the outcome" in text, text


# ---------------------------------------------------------------------------------
# report: a scripted scenario on the virtual clock

MIN = 60_000


def test_report_figures(make_clock_broker, tmp_path, connect, receiver):
    secret = new_secret()
    wf = [{"name": "reports", "match": {"type": "mandatory_report"},
           "assign": [{"agency": "police", "ack_within": "1h",
                       "escalate": [{"after": "0s", "notify": ["duty-hook"]}]}]},
          {"name": "online", "match": {"type": "online_risk"},
           "assign": [{"agency": "education", "ack_within": "10m"}]}]
    cfg = routing_config(tmp_path / "b", workflows=wf,
                         channels=[webhook_channel("duty-hook", receiver.url("/duty"), secret)])
    b = make_clock_broker(config=cfg, name="b")
    sup = connect(b, login="supervisor-01")
    desk = connect(b, login="police-desk")
    rep = connect(b, login="reporter-01")

    def assignment(case):
        r = sup.request({"v": 1, "op": "query", "id": uid("q"), "what": "case", "case": case})
        return r["assignments"][0]["id"]

    _, _, a = send_event(rep, "mandatory_report", h.mandatory_report_body(uid("c")))
    clock(sup, advance=30 * MIN)
    _, r = case_ack(desk, assignment(a))
    assert r.get("op") == "ack", r                      # on time, after 30 min
    _, _, bcase = send_event(rep, "mandatory_report", h.mandatory_report_body(uid("c")))
    clock(sup, advance=120 * MIN)                       # 60 min past its deadline
    receiver.wait("/duty", n=1, timeout=5)              # the escalation step fired
    _, r = case_ack(desk, assignment(bcase))
    assert r.get("op") == "ack", r                      # late, after 120 min
    send_event(connect(b, login="monitor-01"), "online_risk", h.online_risk_body())
    clock(sup, advance=20 * MIN)                        # education: open and overdue

    (doc,) = json_lines(run(b, "supervisor-01", "report", "--json"))
    rows = {x["agency"]: x for x in doc["agencies"]}
    assert set(rows) == {"police", "education"}, doc
    p, e = rows["police"], rows["education"]
    assert (p["assignments"], p["due"], p["on_time"], p["on_time_pct"]) == (2, 2, 1, 50.0), p
    assert (p["ack_p50_min"], p["ack_p90_min"]) == (30.0, 120.0), p
    assert (p["escalations"], p["open_overdue"]) == (1, 0), p
    assert (e["assignments"], e["due"], e["on_time"], e["on_time_pct"]) == (1, 1, 0, 0.0), e
    assert (e["ack_p50_min"], e["ack_p90_min"], e["open_overdue"]) == (None, None, 1), e

    csv = ok(run(b, "supervisor-01", "report", "--csv")).stdout.splitlines()
    assert csv[0].startswith("agency,assignments") and "police,2,2,1,50.0,30.0,120.0,1,0,0,0,,," in csv, csv
    # no resolve_within in these workflows: nothing for the second deadline
    assert (p["resolve_due"], p["resolve_on_time_pct"], p["resolve_p50_min"]) == (0, None, None), p
    text = ok(run(b, "supervisor-01", "report")).stdout
    assert "滨海新区公安局" in text and "50.0%" in text, text   # the agency's configured name
    # --since after everything: no rows
    (none,) = json_lines(run(b, "supervisor-01", "report", "--since", str(h.now_ms() + 10 ** 12),
                             "--json"))
    assert none["agencies"] == []


def _html_report(make_broker, tmp_path, connect):
    wf = WORKFLOWS + [{"name": "online", "match": {"type": "online_risk"},
                       "assign": [{"agency": "education", "ack_within": "10m"}]}]
    b = start(make_broker, tmp_path, workflows=wf)
    report(b, connect)
    send_event(connect(b, login="monitor-01"), "online_risk", h.online_risk_body())
    page = tmp_path / "report.html"
    r = ok(run(b, "supervisor-01", "report", "--html", page))
    return page, page.read_text(encoding="utf-8")


def test_report_html(make_broker, tmp_path, connect):
    page, html = _html_report(make_broker, tmp_path, connect)
    assert html.startswith("<!DOCTYPE html>") and "<table>" in html
    svg = re.search(r"<svg\b.*?</svg>", html, re.S)
    assert svg, html
    assert len(re.findall(r"<rect\b", svg.group(0))) == 2, svg.group(0)
    # agency names from the config (welcome's `agencies`) where one is configured
    assert ">滨海新区公安局<" in html and ">education<" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html), "no external resources"


def _png_pixels_vary(path):
    """Decode an 8-bit RGB/RGBA PNG (no interlace) and tell whether pixels differ
    from the top-left one."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w = 8, b"", 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, hgt, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and ctype in (2, 6) and interlace == 0, (depth, ctype, interlace)
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = w * bpp
    prev = bytearray(stride)
    first, differ = None, 0
    for y in range(hgt):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        for x in range(0, stride, bpp):
            px = bytes(line[x:x + 3])
            if first is None:
                first = px
            elif px != first:
                differ += 1
        prev = line
    return differ


@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                    reason=f"{CHROMIUM} is not installed (Debian package chromium); the HTML "
                           f"report is checked without rendering by test_report_html")
def test_report_html_renders(make_broker, tmp_path, connect):
    page, _ = _html_report(make_broker, tmp_path, connect)
    out = tmp_path / "out.png"
    profile = tmp_path / "chromium-profile"
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                        f"--screenshot={out}", "--window-size=1000,700", page.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert out.is_file(), f"no screenshot (exit {r.returncode}): {r.stderr[-2000:]}"
    assert _png_pixels_vary(out) > 1000, "the rendered page is blank"


# ---------------------------------------------------------------------------------
# verify, online and offline; stats

def test_verify_online_and_offline(make_broker, tmp_path, connect):
    b = start(make_broker, tmp_path)
    _, case = report(b, connect)
    ok(run(b, "supervisor-01", "case", case))
    r = ok(run(b, "supervisor-01", "verify"))
    assert r.stdout.startswith("intact"), r.stdout
    (doc,) = json_lines(run(b, "supervisor-01", "verify", "--json"))
    assert doc["intact"] is True and doc["records"] > 0
    assert run(b, "police-desk", "verify").returncode == 65
    assert b.stop() == 0
    r = ok(run(None, None, "verify", "--data", b.data_dir))
    assert r.stdout.startswith("intact"), r.stdout
    r = run(None, None, "verify", "--data", str(tmp_path / "nothing-here"))
    assert r.returncode == 74, r


def test_trail_head_anchors_an_offline_verify(make_broker, tmp_path, connect):
    """A supervisor takes the head (issue 12, finding 6) and keeps it outside; the trail
    goes on; offline, verify with the data key passes through the anchor, refuses a head
    it does not pass through, and without the key says what it could not check."""
    b = start(make_broker, tmp_path)
    report(b, connect)
    head = ok(run(b, "supervisor-01", "trail-head")).stdout.strip()
    seq, _, hexh = head.partition(":")
    assert seq.isdigit() and int(seq) > 0 and len(hexh) == 64, head
    (doc,) = json_lines(run(b, "supervisor-01", "trail-head", "--json"))
    assert doc["what"] == "trail_head" and doc["seq"] > int(seq), doc  # its own read came after
    assert run(b, "police-desk", "trail-head").returncode == 65
    report(b, connect)
    assert b.stop() == 0
    key = tmp_path / "data.key"
    r = ok(run(None, None, "verify", "--data", b.data_dir, "--data-key", key, "--head", head))
    assert r.stdout.startswith("intact") and f"record {seq}, matches" in r.stdout, r.stdout
    assert "NOT CHECKED" not in r.stdout, r.stdout
    wrong = f"{seq}:{'0' * 64}"
    r = run(None, None, "verify", "--data", b.data_dir, "--data-key", key, "--head", wrong)
    assert r.returncode == 1 and "does not match the anchored head" in r.stdout, (r.returncode, r.stdout)
    r = ok(run(None, None, "verify", "--data", b.data_dir))
    assert "NOT CHECKED: the chain from record 1 on is keyed" in r.stdout, r.stdout
    r = run(None, None, "verify", "--data", b.data_dir, "--head", "12:nothex")
    assert r.returncode == 64 and "SEQ:HEX" in r.stderr, (r.returncode, r.stderr)


def test_stats(make_broker, tmp_path, connect):
    b = start(make_broker, tmp_path)
    report(b, connect)
    report(b, connect)
    send_event(connect(b, login="school-0042"), "absence", h.absence_body())
    (doc,) = json_lines(run(b, "supervisor-01", "stats", "--json"))
    assert doc["cases"] == 3 and doc["cases_by_type"] == {"mandatory_report": 2, "absence": 1}, doc
    assert doc["assignments"] == 3 and doc["assignments_by_state"] == {"open": 3}, doc
    text = ok(run(b, "supervisor-01", "stats")).stdout
    assert "mandatory_report 2" in text, text
