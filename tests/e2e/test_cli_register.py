"""bin/carehub register and sample --register (docs/register.md; PROTOCOL §9, the child
register; spec/register-wire.md for the broker's answers).

Two halves:
  * against a stand-in broker (a ZeroMQ ROUTER in this file that says welcome and answers
    the register queries with fixed rows): the table's headings and totals, the CSV, the
    JSON, the HTML page and its chart, the spot check's lines, the options sent, the
    usage errors — figures exact, no broker needed;
  * against the real carehubd with rhythms on the virtual clock: directors enrol children
    and record contacts and home visits; the table, CSV, JSON and HTML show what was sent
    (and no child's name anywhere); the spot check is reproducible and in the trail.

The program: $CAREHUB_BIN_DIR/carehub (make e2e sets build/san/bin), else <repo>/bin/carehub.
"""

import csv
import io
import json
import os
import re
import subprocess
import threading
from pathlib import Path

import msgpack
import pytest
import zmq

import carehub_harness as h
from carehub_harness import uid
from routing_harness import clock, make_clock_broker, routing_config  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("CAREHUB_BIN_DIR") or REPO / "bin")
CAREHUB = BIN_DIR / "carehub"

HEADINGS = ["村/社区", "儿童主任", "在册儿童", "本期已联系", "本期已走访", "联系逾期", "走访逾期",
            "联系覆盖率", "走访覆盖率", "高风险"]
CSV_HEADER = ["村/社区", "儿童主任", "在册儿童", "本期已联系", "本期已走访", "联系逾期", "走访逾期",
              "联系覆盖率(%)", "走访覆盖率(%)", "高风险"]
KEYS = ["children", "contacted", "visited", "contact_overdue", "visit_overdue"]
DAY = 86_400_000


@pytest.fixture(scope="module", autouse=True)
def _carehub_built():
    if not (CAREHUB.is_file() and os.access(CAREHUB, os.X_OK)):
        pytest.fail(f"{CAREHUB} not found: build it (make) or set CAREHUB_BIN_DIR", pytrace=False)


def run(endpoint, agent, *args, timeout=60):
    cmd = [str(CAREHUB)]
    if endpoint is not None:
        cmd += ["-b", endpoint, "-a", agent, "--wait", "10"]
    cmd += [str(a) for a in args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "TZ": "Asia/Shanghai", "CAREHUB_LANG": "zh"})
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr
    return r


def ok(r):
    assert r.returncode == 0, f"exit {r.returncode}\n--- stdout ---\n{r.stdout}\n--- stderr ---\n{r.stderr}"
    return r


def one_json(r):
    lines = [ln for ln in ok(r).stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stdout
    return json.loads(lines[0])


def table_rows(text):
    """The table's lines split on runs of two blanks or more: header, rows, totals."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert lines[0].startswith("儿童主任走访覆盖情况"), text
    return [re.split(r"\s{2,}", ln.strip()) for ln in lines[1:]]


def pct(a, b):
    return f"{100 * a / b:.1f}" if b else "-"


def read_csv(text):
    assert text.startswith("\ufeff"), "the CSV starts with a byte order mark (Excel reads UTF-8)"
    return list(csv.reader(io.StringIO(text[1:])))


def svg_bar_widths(html):
    """The chart's bars in order: (fill, width)."""
    return [(m.group(2), float(m.group(1))) for m in
            re.finditer(r'<rect x="\d+" y="\d+" width="([\d.]+)" height="\d+" fill="(#[0-9a-f]+)"><title>',
                        html)]


def check_self_contained(html):
    assert "<script" not in html.lower() and "javascript:" not in html.lower(), html
    assert not re.search(r'\b(src|href)\s*=', html), "no external assets: no src or href at all"
    assert "@import" not in html and "url(" not in html, html
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")


# ---------------------------------------------------------------------------------
# a stand-in broker: welcome, and fixed answers to the register queries

class FakeBroker:
    def __init__(self, answers):
        self.answers = answers          # what -> dict (without v, op, id) or ("nack", code)
        self.queries = []
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.stop = False
        self.t = threading.Thread(target=self._serve, daemon=True)
        self.t.start()

    def _serve(self):
        while not self.stop:
            if not self.sock.poll(100):
                continue
            ident, frame = self.sock.recv_multipart()
            m = msgpack.unpackb(frame, raw=False)
            if m.get("op") == "hello":
                out = {"v": 1, "op": "welcome", "id": m["id"], "agent": m["agent"],
                       "role": "supervisor", "heartbeat_ms": 5000}
            elif m.get("op") == "query":
                self.queries.append(m)
                a = self.answers.get(m.get("what"))
                if isinstance(a, tuple):
                    out = {"v": 1, "op": "nack", "id": m["id"], "ref": m["id"], "code": a[1],
                           "error": "refused by the stand-in"}
                else:
                    out = {"v": 1, "op": "result", "id": m["id"], "what": m["what"], **a}
            else:
                continue
            self.sock.send_multipart([ident, msgpack.packb(out, use_bin_type=True)])

    def close(self):
        self.stop = True
        self.t.join(2)
        self.sock.close(0)


NOW = 1_796_054_400_000   # 2026-12-01 00:00 +08:00, the broker's `now`
ROWS = [
    {"village": "东风社区", "director": "director-dongfeng-01", "children": 4, "contacted": 3,
     "visited": 1, "contact_overdue": 1, "visit_overdue": 2, "elevated": 1},
    {"village": "新河村", "director": "director-xinhe-01", "children": 6, "contacted": 5,
     "visited": 2, "contact_overdue": 0, "visit_overdue": 1, "elevated": 2},
    {"village": "新河村", "director": "director-xinhe-02", "children": 2, "contacted": 0,
     "visited": 0, "contact_overdue": 2, "visit_overdue": 0, "elevated": 0},
    {"village": "=HYPERLINK(\"x\")", "director": "director-z", "children": 0, "contacted": 0,
     "visited": 0, "contact_overdue": 0, "visit_overdue": 0, "elevated": 0},
]
SAMPLE = {"now": NOW, "population": 12, "rows": [
    {"entry": "rg-0123456789abcdef01234567", "village": "新河村", "director": "director-xinhe-01",
     "risk": "elevated", "category": ["left_behind", "in_difficulty"], "active": True,
     "enrolled": NOW - 40 * DAY, "last_contact": NOW - 20 * DAY, "contact_due": NOW - 6 * DAY,
     "visit_due": NOW + 10 * DAY, "cases": ["case-0000000011", "case-0000000012"]},
    {"entry": "rg-fedcba9876543210fedcba98", "village": "东风社区", "director": "director-dongfeng-01",
     "risk": "normal", "category": ["orphan"], "active": False, "enrolled": NOW - 400 * DAY,
     "cases": ["case-0000000020"]},
]}


@pytest.fixture
def fake():
    made = []

    def factory(answers):
        f = FakeBroker(answers)
        made.append(f)
        return f

    yield factory
    for f in made:
        f.close()


def test_table_headings_rows_and_totals(fake):
    f = fake({"register": {"now": NOW, "rows": ROWS}})
    r = ok(run(f.endpoint, "supervisor-01", "register"))
    assert f.queries[-1]["what"] == "register" and "village" not in f.queries[-1]
    assert "2026-12-01" in r.stdout.splitlines()[0], r.stdout
    head, *rows = table_rows(r.stdout)
    assert head == HEADINGS, head
    assert len(rows) == len(ROWS) + 1, rows
    for got, want in zip(rows, ROWS):
        assert got[0] == want["village"] and got[1] == want["director"], got
        assert [int(x) for x in got[2:7]] == [want[k] for k in KEYS], got
        assert got[7] == (pct(want["contacted"], want["children"]) + "%" if want["children"] else "-")
        assert got[8] == (pct(want["visited"], want["children"]) + "%" if want["children"] else "-")
        assert int(got[9]) == want["elevated"]
    tot = rows[-1]
    assert tot[0] == "合计" and tot[1] == "4 人", tot
    sums = [sum(x[k] for x in ROWS) for k in KEYS]
    assert [int(x) for x in tot[2:7]] == sums, tot
    assert tot[7] == pct(sums[1], sums[0]) + "%" and tot[8] == pct(sums[2], sums[0]) + "%", tot
    assert int(tot[9]) == 3
    # the columns line up in a terminal: a CJK character takes two columns
    widths = set()
    for ln in r.stdout.splitlines()[1:]:
        w = sum(2 if "\u2e80" <= ch <= "\ua4cf" or "\uff00" <= ch <= "\uff60" else 1 for ch in ln.rstrip())
        widths.add(w)
    assert len(widths) == 1, r.stdout


def test_filters_are_sent_and_shown(fake):
    f = fake({"register": {"now": NOW, "rows": ROWS[1:3]}})
    r = ok(run(f.endpoint, "supervisor-01", "register", "--village", "新河村"))
    assert f.queries[-1]["village"] == "新河村" and "director" not in f.queries[-1]
    assert "（村/社区：新河村）" in r.stdout.splitlines()[0], r.stdout
    ok(run(f.endpoint, "supervisor-01", "register", "--director", "director-xinhe-02", "--json"))
    assert f.queries[-1]["director"] == "director-xinhe-02" and "village" not in f.queries[-1]


def test_empty_register(fake):
    f = fake({"register": {"now": NOW, "rows": []}})
    r = ok(run(f.endpoint, "supervisor-01", "register"))
    assert "（无在册儿童）" in r.stdout, r.stdout
    assert read_csv(ok(run(f.endpoint, "supervisor-01", "register", "--csv")).stdout) == [CSV_HEADER]


def test_without_elevated(fake):
    """`elevated` is an extension: a broker without it gives "-" (text) and "" (CSV)."""
    rows = [{k: v for k, v in r.items() if k != "elevated"} for r in ROWS[:2]]
    f = fake({"register": {"now": NOW, "rows": rows}})
    head, *lines = table_rows(ok(run(f.endpoint, "supervisor-01", "register")).stdout)
    assert head == HEADINGS and [ln[9] for ln in lines] == ["-", "-", "-"], lines
    _, *got = read_csv(ok(run(f.endpoint, "supervisor-01", "register", "--csv")).stdout)
    assert [r[9] for r in got] == ["", ""], got


def test_malformed_answer_is_65(fake):
    f = fake({"register": {"now": NOW, "rows": [{"village": "新河村", "children": -1}]}})
    r = run(f.endpoint, "supervisor-01", "register")
    assert r.returncode == 65 and "row 1" in r.stderr and r.stdout == "", r


def test_json_is_the_brokers_answer(fake):
    f = fake({"register": {"now": NOW, "rows": ROWS}})
    doc = one_json(run(f.endpoint, "supervisor-01", "register", "--json"))
    assert doc == {"what": "register", "now": NOW, "rows": ROWS}, doc


def test_csv(fake):
    f = fake({"register": {"now": NOW, "rows": ROWS}})
    r = ok(run(f.endpoint, "supervisor-01", "register", "--csv"))
    head, *rows = read_csv(r.stdout)
    assert head == CSV_HEADER
    assert len(rows) == len(ROWS), rows    # one row per village and director, no totals
    for got, want in zip(rows, ROWS):
        v = want["village"]
        assert got[0] == ("'" + v if v[0] in "=+-@" else v), got   # no formula in a spreadsheet
        assert got[1] == want["director"]
        assert [int(x) for x in got[2:7]] == [want[k] for k in KEYS]
        want_c = pct(want["contacted"], want["children"]) if want["children"] else ""
        want_v = pct(want["visited"], want["children"]) if want["children"] else ""
        assert got[7:] == [want_c.replace("-", ""), want_v.replace("-", ""), str(want["elevated"])], got


def test_html_page_and_chart(fake, tmp_path):
    f = fake({"register": {"now": NOW, "rows": ROWS}})
    page = tmp_path / "register.html"
    r = ok(run(f.endpoint, "supervisor-01", "register", "--html", page))
    assert r.stdout == "" and str(page) in r.stderr
    html = page.read_text(encoding="utf-8")
    check_self_contained(html)
    assert re.search(r"<title>儿童主任走访覆盖情况 2026-12-01</title>", html), html[:400]
    assert "<h1>儿童主任走访覆盖情况</h1>" in html
    for hd in HEADINGS:
        assert f"<th>{hd}</th>" in html or f'<th class="t">{hd}</th>' in html, hd
    assert "=HYPERLINK(&quot;x&quot;)" in html and '=HYPERLINK("x")' not in html
    assert "<th class=\"t\">合计</th>" in html
    # the chart: per village (新河村's two directors summed), contacted/children then
    # visited/children, bars of 460 px at 100 %
    bars = svg_bar_widths(html)
    villages = {}
    for row in ROWS:
        v = villages.setdefault(row["village"], [0, 0, 0])
        v[0] += row["children"]
        v[1] += row["contacted"]
        v[2] += row["visited"]
    want = []
    for ch, c, vis in villages.values():
        want += [("#1565c0", round(460 * c / ch, 1) if ch else 0.0),
                 ("#2e7d32", round(460 * vis / ch, 1) if ch else 0.0)]
    assert bars == want, bars
    assert "62.5%（5/8）" in html and "25.0%（2/8）" in html, "新河村: 5 of 8 contacted, 2 of 8 visited"


def test_table_and_html_in_english_with_lang_en(fake, tmp_path):
    """--lang en (issue 14 item 5): the same figures under English headings; the times
    keep the zone (TZ=Asia/Shanghai here, the stand-in's welcome names none)."""
    f = fake({"register": {"now": NOW, "rows": ROWS}})
    r = ok(run(f.endpoint, "supervisor-01", "--lang", "en", "register"))
    first = r.stdout.splitlines()[0]
    assert first.startswith("Child directors' contacts and home visits  at 2026-12-01 ") \
        and first.endswith("+08:00 (Asia/Shanghai)"), r.stdout
    head = r.stdout.splitlines()[1]
    for hd in ("village", "director", "children", "contacted", "visited", "contact overdue",
               "visit overdue", "contact coverage", "visit coverage", "elevated"):
        assert hd in head, (hd, head)
    assert not any(hd in r.stdout for hd in HEADINGS), r.stdout
    assert r.stdout.splitlines()[-1].startswith("total "), r.stdout
    page = tmp_path / "register-en.html"
    ok(run(f.endpoint, "supervisor-01", "--lang", "en", "register", "--html", page))
    html = page.read_text(encoding="utf-8")
    check_self_contained(html)
    assert '<html lang="en">' in html and "<h1>Child directors' contacts and home visits</h1>" in html
    assert "<th>contact coverage</th>" in html and "<h2>Notes</h2>" in html, html
    assert "62.5% (5/8)" in html and "儿童主任走访覆盖情况" not in html, html


def test_refused_is_65(fake):
    f = fake({"register": ("nack", "forbidden"), "register_sample": ("nack", "forbidden")})
    r = run(f.endpoint, "police-desk", "register")
    assert r.returncode == 65 and "forbidden" in r.stderr and r.stdout == "", r
    r = run(f.endpoint, "police-desk", "sample", "--register")
    assert r.returncode == 65 and "forbidden" in r.stderr, r


def test_sample_register_lines(fake):
    f = fake({"register_sample": SAMPLE})
    r = ok(run(f.endpoint, "supervisor-01", "sample", "--register", "--n", "5", "--seed", "2026 抽查",
               "--village", "新河村"))
    q = f.queries[-1]
    assert (q["what"], q["n"], q["seed"], q["village"]) == ("register_sample", 5, "2026 抽查", "新河村"), q
    out = r.stdout
    assert out.startswith("register spot check: 2 of 12 entries, seed 2026 抽查 "), out
    assert "sample --register --n 5 --seed '2026 抽查' --village '新河村'" in out, out
    assert "rg-0123456789abcdef01234567  新河村  director director-xinhe-01  risk elevated  " \
           "left_behind,in_difficulty" in out, out
    # times in local time (TZ=Asia/Shanghai here), a due time past `now` marked
    assert "enrolled:        2026-10-22 00:00:00 +08:00" in out, out
    assert re.search(r"contact due:     2026-11-25 00:00:00 \+08:00  OVERDUE", out), out
    assert re.search(r"home visit due:  2026-12-11 00:00:00 \+08:00\n", out), out
    assert "last home visit: - (none recorded)" in out
    assert "case-0000000011,case-0000000012  (read them: carehub case CASE)" in out
    assert "(left the register)" in out and out.count("[ ] ") == 8
    doc = one_json(run(f.endpoint, "supervisor-01", "sample", "--register", "--seed", "7", "--json"))
    assert f.queries[-1]["n"] == 10 and "village" not in f.queries[-1]
    assert doc["seed"] == "7" and doc["population"] == 12 and doc["n"] == 2 and doc["now"] == NOW
    for got, want in zip(doc["entries"], SAMPLE["rows"]):
        assert got.pop("check") and got == want
    # no seed: this year's, sent explicitly so that the redraw line names it
    ok(run(f.endpoint, "supervisor-01", "sample", "--register"))
    assert re.fullmatch(r"20\d\d", f.queries[-1]["seed"]), f.queries[-1]


def test_usage_errors():
    r = run(None, None, "register", "--help")
    assert r.returncode == 0 and "在册儿童" in r.stdout and "--village" in r.stdout
    assert "--register" in run(None, None, "sample", "--help").stdout
    for args, word in ((["register", "--csv", "--json"], "one of"),
                       (["register", "--n", "3"], "--n"),
                       (["register", "--seed", "3"], "--seed"),
                       (["register", "--director", "bad id!"], "--director"),
                       (["register", "--village", ""], "--village"),
                       (["register", "--village", "村" * 201], "--village"),
                       (["sample", "--village", "新河村"], "--register"),
                       (["sample", "--register", "--n", "101"], "1 to 100"),
                       (["sample", "--register", "--seed", "x" * 129], "128"),
                       (["cases", "--village", "x"], "--village")):
        r = run(None, None, "-a", "supervisor-01", "-b", "tcp://127.0.0.1:9", "--wait", "1", *args)
        assert r.returncode == 64 and word in r.stderr, (args, r.returncode, r.stderr)


# ---------------------------------------------------------------------------------
# against carehubd: rhythms on the virtual clock, directors, events

RHYTHMS = [
    {"name": "elevated", "match": {"body.risk": "elevated"}, "contact_every": "14d",
     "visit_every": "30d", "remind_before": "2d"},
    {"name": "default", "match": {}, "contact_every": "30d", "visit_every": "90d",
     "remind_before": "3d"},
]
DIRECTORS = [{"id": "director-xinhe-01", "role": "director"},
             {"id": "director-dongfeng-01", "role": "director"}]
WORKFLOWS = [{"name": "register", "match": {"type": "enrolment"}, "assign": []},
             {"name": "visits", "match": {"type": "visit"}, "assign": []},
             {"name": "missed-visit", "match": {"type": "visit_overdue"},
              "assign": [{"agency": "civil_affairs", "ack_within": "2d"}]}]


def request(agent, msg):
    """A request whose answer may come after director pushes (reminder): those are kept."""
    msg = dict(msg, v=1, id=msg.get("id") or agent.new_id())
    agent.send(msg)
    while True:
        r = agent.recv_reply()
        assert r is not None, f"no answer to {h.summarize(msg)}"
        if r.get("op") in ("reminder",) and r.get("id") != msg["id"]:
            agent.pushes.append(r)
            continue
        return r


def send(agent, type, body, at):
    mid = uid("ev")
    r = request(agent, {"op": "event", "id": mid, "type": type, "at": at, "body": body})
    h.assert_ack(r, mid)


def enrol(agent, child, village, at, risk="normal", active=True, name=None):
    send(agent, "enrolment", {"child": {"id": child, "name": name or f"孩子{child[-4:]}",
                                        "category": ["left_behind"]},
                              "village": village, "risk": risk, "active": active}, at)


def visit(agent, child, kind, at, date="2026-11-02"):
    send(agent, "visit", {"child": {"id": child}, "kind": kind, "date": date,
                          "method": "in_person" if kind == "home_visit" else "phone"}, at)


@pytest.fixture
def register_broker(make_clock_broker, tmp_path, connect):
    cfg = routing_config(tmp_path / "b", workflows=WORKFLOWS, agents=DIRECTORS)
    cfg["rhythms"] = RHYTHMS
    b = make_clock_broker(config=cfg, name="b")
    sup = connect(b, login="supervisor-01")
    t0 = clock(sup, set=h.now_ms() + 60_000)
    return b, sup, t0


CANARY = "CANARY王小明"


def scenario(b, sup, t0, connect):
    """新河村 (director-xinhe-01): c1 contacted by phone, c2 visited at home, c3 elevated
    with nothing, c4 left the register; 东风社区 (director-dongfeng-01): c5 with nothing.
    Then 20 days on: c3's 14-day contact is past due. Returns the child ids."""
    xin = connect(b, login="director-xinhe-01")
    dong = connect(b, login="director-dongfeng-01")
    c = [uid("child") for _ in range(5)]
    enrol(xin, c[0], "新河村", t0, name=CANARY)
    enrol(xin, c[1], "新河村", t0)
    enrol(xin, c[2], "新河村", t0, risk="elevated")
    enrol(xin, c[3], "新河村", t0)
    enrol(xin, c[3], "新河村", t0, active=False)
    enrol(dong, c[4], "东风社区", t0)
    visit(xin, c[0], "contact", t0)
    visit(xin, c[1], "home_visit", t0)
    clock(sup, advance=20 * DAY)
    return c


WANT_20D = [
    {"village": "东风社区", "director": "director-dongfeng-01", "children": 1, "contacted": 0,
     "visited": 0, "contact_overdue": 0, "visit_overdue": 0},
    {"village": "新河村", "director": "director-xinhe-01", "children": 3, "contacted": 2,
     "visited": 1, "contact_overdue": 1, "visit_overdue": 0},
]


def test_register_figures_from_events(register_broker, connect, tmp_path):
    b, sup, t0 = register_broker
    children = scenario(b, sup, t0, connect)
    doc = one_json(run(b.endpoint, "supervisor-01", "register", "--json"))
    assert doc["what"] == "register" and doc["now"] == t0 + 20 * DAY, doc
    rows = [{k: v for k, v in r.items() if k != "elevated"} for r in doc["rows"]]
    assert rows == WANT_20D, doc["rows"]
    if "elevated" in doc["rows"][0]:
        assert [r["elevated"] for r in doc["rows"]] == [0, 1]

    text = ok(run(b.endpoint, "supervisor-01", "register")).stdout
    head, *lines = table_rows(text)
    assert head[:9] == HEADINGS[:9]
    assert [ln[:7] for ln in lines] == [
        ["东风社区", "director-dongfeng-01", "1", "0", "0", "0", "0"],
        ["新河村", "director-xinhe-01", "3", "2", "1", "1", "0"],
        ["合计", "2 人", "4", "2", "1", "1", "0"]], text
    assert [ln[7:9] for ln in lines] == [["0.0%", "0.0%"], ["66.7%", "33.3%"], ["50.0%", "25.0%"]]

    head, *rows = read_csv(ok(run(b.endpoint, "supervisor-01", "register", "--csv")).stdout)
    assert head == CSV_HEADER
    assert [r[:9] for r in rows] == [["东风社区", "director-dongfeng-01", "1", "0", "0", "0", "0", "0.0", "0.0"],
                                     ["新河村", "director-xinhe-01", "3", "2", "1", "1", "0", "66.7", "33.3"]]

    page = tmp_path / "r.html"
    ok(run(b.endpoint, "supervisor-01", "register", "--html", page))
    html = page.read_text(encoding="utf-8")
    check_self_contained(html)
    assert "66.7%（2/3）" in html and "33.3%（1/3）" in html and "0.0%（0/1）" in html

    one = one_json(run(b.endpoint, "supervisor-01", "register", "--village", "东风社区", "--json"))
    assert [r["village"] for r in one["rows"]] == ["东风社区"], one
    one = one_json(run(b.endpoint, "supervisor-01", "register", "--director", "director-xinhe-01",
                       "--json"))
    assert [r["director"] for r in one["rows"]] == ["director-xinhe-01"], one

    # no child's name, no child id in any output
    outs = [text, html, json.dumps(doc, ensure_ascii=False),
            ok(run(b.endpoint, "supervisor-01", "register", "--csv")).stdout,
            ok(run(b.endpoint, "supervisor-01", "sample", "--register", "--n", "10")).stdout,
            ok(run(b.endpoint, "supervisor-01", "sample", "--register", "--json")).stdout]
    for out in outs:
        assert CANARY not in out and "孩子" not in out
        assert not any(c in out for c in children), out

    # a director or an agency may not read the register
    assert run(b.endpoint, "director-xinhe-01", "register").returncode == 65
    assert run(b.endpoint, "police-desk", "sample", "--register").returncode == 65


def test_register_after_the_visit_falls_due(register_broker, connect):
    """35 days on: the contacts of c1, c2 (a home visit is a contact), c3 and c5 are past due;
    c3's 30-day home visit too; c2's home visit still counts (90 days)."""
    b, sup, t0 = register_broker
    scenario(b, sup, t0, connect)
    clock(sup, advance=15 * DAY)
    doc = one_json(run(b.endpoint, "supervisor-01", "register", "--json"))
    rows = [{k: v for k, v in r.items() if k != "elevated"} for r in doc["rows"]]
    assert rows == [
        {"village": "东风社区", "director": "director-dongfeng-01", "children": 1, "contacted": 0,
         "visited": 0, "contact_overdue": 1, "visit_overdue": 0},
        {"village": "新河村", "director": "director-xinhe-01", "children": 3, "contacted": 0,
         "visited": 1, "contact_overdue": 3, "visit_overdue": 1}], doc
    head, *lines = table_rows(ok(run(b.endpoint, "supervisor-01", "register")).stdout)
    assert lines[-1][:9] == ["合计", "2 人", "4", "0", "1", "4", "1", "0.0%", "25.0%"], lines


def trail_records(b, case):
    out = ok(run(b.endpoint, "supervisor-01", "trail", case, "--json")).stdout
    return [json.loads(ln) for ln in out.splitlines() if ln.strip()]


def test_register_sample_reproducible_and_in_the_trail(register_broker, connect):
    b, sup, t0 = register_broker
    xin = connect(b, login="director-xinhe-01")
    kids = [uid("child") for _ in range(8)]
    for i, k in enumerate(kids):
        enrol(xin, k, "新河村" if i % 2 else "东风社区", t0, name=f"{CANARY}{i}")
    visit(xin, kids[0], "home_visit", t0)
    clock(sup, advance=DAY)

    def draw(seed, *extra):
        doc = one_json(run(b.endpoint, "supervisor-01", "sample", "--register", "--n", "3",
                           "--seed", seed, "--json", *extra))
        assert doc["seed"] == seed and doc["n"] == len(doc["entries"]), doc
        for e in doc["entries"]:
            assert re.fullmatch(r"rg-[0-9a-f]{24}", e["entry"]), e
            assert e["category"] == ["left_behind"] and e["risk"] == "normal" and e["cases"], e
            assert e["enrolled"] == t0 and "contact_due" in e and "visit_due" in e, e
            assert e["check"]
        return doc

    a, again, other = draw("2026"), draw("2026"), draw("2027")
    assert a["population"] == 8 and a["n"] == 3
    assert [e["entry"] for e in a["entries"]] == [e["entry"] for e in again["entries"]]
    assert len({e["entry"] for e in a["entries"]}) == 3
    assert [e["entry"] for e in a["entries"]] != [e["entry"] for e in other["entries"]]
    vil = draw("2026", "--village", "新河村")
    assert vil["population"] == 4 and {e["village"] for e in vil["entries"]} == {"新河村"}, vil
    text = ok(run(b.endpoint, "supervisor-01", "sample", "--register", "--n", "3", "--seed", "2026")).stdout
    assert text.startswith("register spot check: 3 of 8 entries, seed 2026"), text
    assert all(e["entry"] in text for e in a["entries"]), text
    assert CANARY not in text and not any(k in text for k in kids), text
    # the entry that had a home visit: its visit case is among its cases and can be read
    cases = [c for e in a["entries"] + other["entries"] for c in e["cases"]]
    assert all(re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", c) for c in cases)
    # each drawn entry is a trail record with the supervisor as the actor, on its enrolment
    # case (the first of its cases), naming the entry; one more at each draw
    def drawn(entry, case):
        return [r for r in trail_records(b, case) if r.get("actor") == "supervisor-01"
                and r.get("kind") == "register_read" and r.get("ref") == entry]

    e = a["entries"][0]
    before = len(drawn(e["entry"], e["cases"][0]))
    assert before >= 3, trail_records(b, e["cases"][0])   # the draws "2026" above, and the text one
    draw("2026")
    assert len(drawn(e["entry"], e["cases"][0])) == before + 1
