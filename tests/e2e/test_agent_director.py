"""carehub-director: the child director's (儿童主任) program (PROTOCOL §9, issue 13).

The program is run as a director would run it, against a real broker (and, for
the reminder push, also against a small fake broker speaking the wire, so that
libcarehub's `reminder` handling is tested on its own):

  * enrol: a roster CSV → `enrolment` events; the same roster again sends
    nothing new (duplicate:true, the same ids); a changed row is a new event,
    and a row changed back (active, then not, then again) is not mistaken
    for a duplicate; the id is "enr:" + a keyed hash (no child id in it);
  * bad rows are reported as FILE:LINE and skipped, the good ones still go;
    an unknown column is refused with its line and column;
  * visit, from options and from the terminal form (--interactive);
  * reminders pushed by the broker are kept in SPOOL/reminders.jsonl before
    `received` goes back, listed by `reminders`; not confirmed when they cannot
    be kept;
  * due: the children whose contact or visit is due, sorted by due, names on
    stdout only;
  * a canary child name never shows up on stderr or in the program's own
    files (roster state, reminders, outcomes).

Programs: $CAREHUB_BIN_DIR (make e2e: build/san/bin) or <repo>/bin.
"""

import hashlib
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import msgpack
import pytest
import zmq

import carehub_harness as h

DIRECTOR = "director-xinhe-01"
OTHER = "director-xinhe-02"
VILLAGE = "新河村"
CANARY = "金丝雀某某"          # a child's name that must never be logged
HEADER = ("child_id,name,category,gender,birth_date,jurisdiction,guardian_name,"
          "guardian_relation,guardian_phone,risk,risk_reasons,active")
ROWS = [
    f"C-001,{CANARY},left_behind,female,2016-01-01,新河街道,王军,grandfather,+86 22 5555 0101,normal,,yes",
    "C-002,李小明,left_behind;disabled,male,2014-05-05,,,,,elevated,child_disabled|psych_or_behaviour,",
    "C-003,赵丽,in_difficulty,,,,,,,,,",
]


def bin_dir():
    return Path(os.environ.get("CAREHUB_BIN_DIR") or h.REPO / "bin")


def prog():
    p = bin_dir() / "carehub-director"
    if not (p.is_file() and os.access(p, os.X_OK)):
        pytest.fail(f"{p} not found: build it (make, or make san-build) or set CAREHUB_BIN_DIR",
                    pytrace=False)
    return str(p)


def run(*args, timeout=90, input=None, env=None):
    e = dict(os.environ)
    e.pop("CAREHUB_SPOOL", None)
    e.update(env or {})
    p = subprocess.run([prog()] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout, input=input, env=e)
    for m in h.SANITIZER_MARKERS:
        assert m not in p.stderr, f"carehub-director: sanitizer report:\n{p.stderr[-6000:]}"
    assert CANARY not in p.stderr, f"a child's name on stderr:\n{p.stderr}"
    return p


def director(ep, spool, *args, agent=DIRECTOR, **kw):
    ep = ep.endpoint if isinstance(ep, h.Broker) else ep
    return run("-b", ep, "-a", agent, "--spool", spool, *args, **kw)


def json_lines(text):
    return [json.loads(ln) for ln in text.splitlines() if ln.strip()]


def write_csv(path, rows, header=HEADER):
    Path(path).write_text("\n".join([header] + rows) + "\n", encoding="utf-8")
    return path


def register_config(workdir, rhythms=None):
    cfg = h.base_config(workdir)
    cfg["agents"] += [{"id": DIRECTOR, "role": "director"}, {"id": OTHER, "role": "director"}]
    if rhythms is not None:
        cfg["rhythms"] = rhythms
    return cfg


@pytest.fixture
def reg_broker(make_broker, tmp_path):
    return make_broker(config=register_config(tmp_path / "carehubd-reg"), name="carehubd-reg")


def no_names_in_files(spool):
    """The program's own files hold no child's name (the LMDB spool holds the
    outgoing events themselves, as every agent's does)."""
    for f in Path(spool).iterdir():
        if f.name in ("data.mdb", "lock.mdb", "lock"):
            continue
        if f.is_file():
            assert CANARY.encode() not in f.read_bytes(), f"a child's name in {f}"


# --------------------------------------------------------------------------

def test_help_and_usage(tmp_path):
    p = run("--help")
    assert p.returncode == 0, p.stderr
    for word in ("enrol", "visit", "due", "reminders", "child_id", "risk_reasons", "--within"):
        assert word in p.stdout, word
    assert run("-a", DIRECTOR).returncode == 64
    assert run("-a", DIRECTOR, "bogus").returncode == 64
    p = run("-a", DIRECTOR, "--spool", tmp_path / "s", "visit", "C-1")
    assert p.returncode == 64 and "--kind" in p.stderr, p.stderr
    p = run("-a", DIRECTOR, "--spool", tmp_path / "s", "visit", "C-1", "--kind", "chat")
    assert p.returncode == 64 and "is not one of contact|home_visit" in p.stderr, p.stderr
    p = run("-a", DIRECTOR, "--spool", tmp_path / "s", "visit", "C-1", "--kind", "contact",
            "--date", "2999-01-01")
    assert p.returncode == 64 and "after today" in p.stderr, p.stderr
    p = run("-a", DIRECTOR, "--spool", tmp_path / "s", "due", "--within", "forever")
    assert p.returncode == 64 and "--within" in p.stderr, p.stderr
    p = run("-a", DIRECTOR, "--spool", tmp_path / "s", "enrol", tmp_path / "missing.csv")
    assert p.returncode == 66 and "missing.csv" in p.stderr, p.stderr


def test_enrol_twice_sends_nothing_new(reg_broker, connect, tmp_path):
    b = reg_broker
    spool = tmp_path / "spool"
    csv = write_csv(tmp_path / "roster.csv", ROWS)
    first = director(b, spool, "--json", "enrol", "--village", VILLAGE, csv)
    assert first.returncode == 0, first.stderr
    assert "made the director's id key" in first.stderr
    acks = {a["child_id"]: a for a in json_lines(first.stdout)}
    assert set(acks) == {"C-001", "C-002", "C-003"}, first.stdout
    for a in acks.values():
        assert a["status"] == "acknowledged" and a["duplicate"] is False, a
        assert a["type"] == "enrolment" and a["file"] == str(csv)
        assert a["id"].startswith("enr:") and len(a["id"]) == 64, a
        assert "C-00" not in a["id"]
    assert [acks[c]["line"] for c in ("C-001", "C-002", "C-003")] == [2, 3, 4]
    key = (spool / "director-id.key").read_bytes()
    assert len(key) == 32 and (spool / "director-id.key").stat().st_mode & 0o777 == 0o600

    second = director(b, spool, "--json", "enrol", "--village", VILLAGE, csv)
    assert second.returncode == 0, second.stderr
    again = {a["child_id"]: a for a in json_lines(second.stdout)}
    for c, a in again.items():
        assert a["duplicate"] is True, a
        assert (a["id"], a["event"], a["case"]) == (acks[c]["id"], acks[c]["event"], acks[c]["case"])
    assert "3 row(s) read, 0 bad; acknowledged: 0 new, 3 already sent" in second.stderr

    # The broker holds them under these ids: re-sending as the director gets duplicates.
    a = connect(b, login=DIRECTOR)
    body = {"child": {"id": "C-003", "name": "x", "category": ["other"]}, "village": VILLAGE}
    r = a.event("enrolment", body, id=acks["C-003"]["id"])
    assert h.assert_ack(r, acks["C-003"]["id"], duplicate=True)[0] == acks["C-003"]["event"]

    # A changed row is a new enrolment; changed back, it is new again (not a
    # duplicate the broker would ignore), and the same again is a duplicate.
    left = write_csv(tmp_path / "left.csv", [ROWS[0].replace(",yes", ",no")])
    back = write_csv(tmp_path / "back.csv", [ROWS[0]])
    ids = []
    for f, dup in ((left, False), (back, False), (back, True)):
        p = director(b, spool, "--json", "enrol", "--village", VILLAGE, f)
        assert p.returncode == 0, p.stderr
        (ack,) = json_lines(p.stdout)
        assert ack["duplicate"] is dup, (f, ack)
        ids.append(ack["id"])
    assert len({ids[0], ids[1], acks["C-001"]["id"]}) == 3 and ids[1] == ids[2], ids

    # Readable output: row, child id, case, event; never the name.
    p = director(b, spool, "enrol", "--village", VILLAGE, csv)
    assert p.returncode == 0, p.stderr
    assert sum(ln.endswith("  already sent") for ln in p.stdout.splitlines()) == 3, p.stdout
    assert CANARY not in p.stdout
    state = json.loads((spool / "director-roster.json").read_text())
    assert not any(c in json.dumps(state) for c in ("C-001", "C-002", "C-003")), state
    no_names_in_files(spool)


def test_enrolment_body_reaches_the_broker(make_broker, connect, tmp_path):
    """The body the broker stores is the row (read back as a supervisor's case file)."""
    from routing_harness import routing_config, wait_push
    cfg = routing_config(tmp_path / "carehubd-routed", agents=[{"id": DIRECTOR, "role": "director"}],
                         workflows=[{"name": "enrol", "match": {"type": "enrolment"},
                                     "assign": [{"agency": "civil_affairs", "ack_within": "1d"}]}],
                         agencies=[{"id": "civil_affairs"}])
    cfg["agents"].append({"id": "ca-desk", "role": "agency", "agency": "civil_affairs"})
    b = make_broker(config=cfg, name="carehubd-routed")
    csv = write_csv(tmp_path / "roster.csv", ROWS[1:2], header=HEADER + ",village,note")
    csv.write_text(csv.read_text().replace("psych_or_behaviour,\n",
                                           "psych_or_behaviour,,新河村,需要心理辅导\n"))
    p = director(b, tmp_path / "spool", "--json", "enrol", csv)
    assert p.returncode == 0, p.stderr
    (ack,) = json_lines(p.stdout)
    desk = connect(b, login="ca-desk")
    m = wait_push(desk, "case", pred=lambda m: m["case"] == ack["case"])
    body = m["events"][-1]["body"]
    assert body == {
        "child": {"id": "C-002", "name": "李小明", "category": ["left_behind", "disabled"],
                  "gender": "male", "birth_date": "2014-05-05"},
        "village": "新河村", "risk": "elevated",
        "risk_reasons": ["child_disabled", "psych_or_behaviour"], "note": "需要心理辅导",
        "severity": "normal", "active": True,
    }, body


def test_bad_rows_reported_good_rows_sent(reg_broker, tmp_path):
    rows = [
        ROWS[0],                                                   # 2 good
        "C-010,,left_behind,,,,,,,,,",                             # 3 no name
        "C-011,甲,,,,,,,,,,",                                       # 4 no category
        "C-012,乙,rich,,,,,,,,,",                                   # 5 bad category
        "C-013,丙,orphan,alien,,,,,,,,",                            # 6 gender
        "C-014,丁,orphan,,2016-02-30,,,,,,,",                       # 7 birth_date
        "C-015,戊,orphan,,,,,,,high,,",                             # 8 risk
        "C-016,己,orphan,,,,,,,elevated,bored,",                    # 9 risk_reasons
        "C-017,庚,orphan,,,,,,,,,maybe",                            # 10 active
        f"C-001,{CANARY},orphan,,,,,,,,,",                         # 11 same child again
        "C-018,辛,orphan,,,,,,,,",                                  # 12 field count
        ",壬,orphan,,,,,,,,,",                                      # 13 no child_id
        "C-019,癸,orphan,,,,,,,,,",                                 # 14 good
    ]
    csv = write_csv(tmp_path / "bad.csv", rows)
    p = director(reg_broker, tmp_path / "spool", "--json", "enrol", "--village", VILLAGE, csv)
    assert p.returncode == 65, (p.stdout, p.stderr)
    expect = {3: "name", 4: "category", 5: "category", 6: "gender", 7: "birth_date", 8: "risk",
              9: "risk_reasons", 10: "active", 11: "already enrolled", 12: "fields",
              13: "child_id"}
    for line, word in expect.items():
        hit = [ln for ln in p.stderr.splitlines() if ln.startswith(f"{csv}:{line}:")]
        assert hit and word in hit[0], (line, word, p.stderr)
    assert f"{csv}:2:" not in p.stderr and f"{csv}:14:" not in p.stderr, p.stderr
    assert sorted(a["child_id"] for a in json_lines(p.stdout)) == ["C-001", "C-019"], p.stdout
    assert "13 row(s) read, 11 bad; acknowledged: 2 new" in p.stderr, p.stderr

    # a row of another village than --village
    other = write_csv(tmp_path / "v.csv", ["C-020,子,orphan,东村"], header="child_id,name,category,village")
    p = director(reg_broker, tmp_path / "spool", "enrol", "--village", VILLAGE, other)
    assert p.returncode == 65 and f"{other}:2: village '东村' is not the --village" in p.stderr, p.stderr
    # no village at all
    p = director(reg_broker, tmp_path / "spool", "enrol", write_csv(tmp_path / "nv.csv", ROWS[2:]))
    assert p.returncode == 65 and "no village column" in p.stderr, p.stderr


def test_unknown_column_named_with_line_and_column(reg_broker, tmp_path):
    csv = write_csv(tmp_path / "h.csv", ["C-1,甲,orphan,x"], header="Child ID,Name,Category,school")
    p = director(reg_broker, tmp_path / "spool", "enrol", "--village", VILLAGE, csv)
    assert p.returncode == 65, p.stderr
    assert f"{csv}:1: column 4: unknown column 'school'" in p.stderr, p.stderr
    assert "acknowledged: 0 new" in p.stdout, "nothing is sent from a file with a bad header"


def test_visit_and_interactive(reg_broker, connect, tmp_path):
    b = reg_broker
    spool = tmp_path / "spool"
    assert director(b, spool, "enrol", "--village", VILLAGE, write_csv(tmp_path / "r.csv", ROWS)).returncode == 0
    args = ["visit", "C-002", "--kind", "home_visit", "--method", "in_person", "--findings",
            "祖父身体不好；上学正常", "--concern", "--needs", "health,psychological"]
    p = director(b, spool, "--json", *args)
    assert p.returncode == 0, p.stderr
    (ack,) = json_lines(p.stdout)
    assert ack["type"] == "visit" and ack["child_id"] == "C-002" and ack["duplicate"] is False
    assert ack["id"].startswith("vis:")
    # the same visit again: nothing new
    p = director(b, spool, "--json", *args)
    (again,) = json_lines(p.stdout)
    assert again["duplicate"] is True and again["event"] == ack["event"], again

    # the body the broker stored: a supervisor reads the case file
    sup = connect(b, login="supervisor-01")
    r = sup.request({"v": 1, "op": "query", "id": sup.new_id(), "what": "case", "case": ack["case"]})
    assert r.get("op") == "result", r
    bodies = [e.get("body") for e in r.get("events", [])]
    assert any(bd and bd.get("kind") == "home_visit" and bd.get("needs") == ["health", "psychological"]
               and bd.get("concern") is True and bd.get("method") == "in_person"
               and bd["child"] == {"id": "C-002"} for bd in bodies), r

    # the form: child id, kind by number, date (Enter: today), method, findings,
    # concern, needs by numbers, then yes
    answers = "C-003\n1\n\n1\n电话联系，一切正常\nn\n\ny\n"
    p = director(b, spool, "--json", "--interactive", input=answers)
    assert p.returncode == 0, p.stderr
    (ack2,) = json_lines(p.stdout)
    assert ack2["child_id"] == "C-003" and ack2["duplicate"] is False, ack2
    assert "Send it now?" in p.stderr
    # not confirmed: nothing sent
    p = director(b, spool, "interactive", input="C-003\n2\n\n\n\n\n\nn\n")
    assert p.returncode == 64 and "not sent" in p.stderr, p.stderr
    no_names_in_files(spool)


# --------------------------------------------------------------------------
# reminders against a fake broker: libcarehub's handler on its own

class FakeBroker:
    """A ROUTER that welcomes one agent as a director, pushes `reminders` after
    each hello and records the `received` it gets."""

    def __init__(self, reminders):
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.reminders = reminders
        self.received = []
        self.hellos = 0
        self.stop = False
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def send(self, rid, msg):
        self.sock.send_multipart([rid, msgpack.packb(msg, use_bin_type=True)])

    def loop(self):
        while not self.stop:
            if not self.sock.poll(50):
                continue
            rid, frame = self.sock.recv_multipart()
            m = msgpack.unpackb(frame, raw=False)
            op = m.get("op")
            if op == "hello":
                self.hellos += 1
                self.send(rid, {"v": 1, "op": "welcome", "id": m["id"], "agent": m["agent"],
                                "role": "director", "heartbeat_ms": 5000})
                for r in self.reminders:
                    self.send(rid, dict(r, v=1, op="reminder"))
            elif op == "ping":
                self.send(rid, {"v": 1, "op": "pong", "id": m["id"]})
            elif op == "received":
                self.received.append(m["id"])

    def close(self):
        self.stop = True
        self.t.join(5)
        self.sock.close(0)


@pytest.fixture
def fake_broker():
    made = []

    def make(reminders):
        fb = FakeBroker(reminders)
        made.append(fb)
        return fb
    yield make
    for fb in made:
        fb.close()


def test_reminders_kept_then_confirmed(fake_broker, tmp_path):
    due = h.now_ms() + 2 * 86400000
    rems = [{"id": "rm-1", "child": "C-001", "kind": "contact", "due": due},
            {"id": "rm-2", "child": "C-002", "kind": "home_visit", "due": due - 86400000 * 5}]
    fb = fake_broker(rems)
    spool = tmp_path / "spool"
    p = director(fb.endpoint, spool, "reminders", "--wait", "1")
    assert p.returncode == 0, p.stderr
    kept = json_lines((spool / "reminders.jsonl").read_text())
    assert [k["id"] for k in kept] == ["rm-1", "rm-2"], kept
    assert all(isinstance(k["received_at"], int) for k in kept)
    deadline = time.monotonic() + 5
    while sorted(fb.received) != ["rm-1", "rm-2"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(fb.received) == ["rm-1", "rm-2"], fb.received
    lines = p.stdout.splitlines()
    assert len(lines) == 2, p.stdout
    # sorted by due: the past home visit first, then the contact
    assert "past" in lines[0] and "home_visit" in lines[0] and "C-002" in lines[0], lines
    assert "due " in lines[1] and "contact" in lines[1] and "C-001" in lines[1], lines
    assert "received" in lines[1]

    # sent again (a lost `received`): kept once; --local lists without a broker
    fb2 = fake_broker(rems)
    p = director(fb2.endpoint, spool, "--json", "reminders", "--wait", "1")
    assert p.returncode == 0, p.stderr
    assert len(json_lines((spool / "reminders.jsonl").read_text())) == 2
    p = director("tcp://127.0.0.1:1", spool, "--json", "reminders", "--local")
    assert p.returncode == 0, p.stderr
    assert [r["id"] for r in json_lines(p.stdout)] == ["rm-2", "rm-1"], p.stdout


def test_reminder_not_kept_is_not_confirmed(fake_broker, tmp_path):
    fb = fake_broker([{"id": "rm-9", "child": "C-009", "kind": "contact", "due": h.now_ms()}])
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    (spool / "reminders.jsonl").mkdir()          # cannot be appended to
    p = director(fb.endpoint, spool, "reminders", "--wait", "1")
    assert "cannot write the reminder rm-9" in p.stderr, p.stderr
    time.sleep(0.3)
    assert fb.received == [], "a reminder that was not kept must not be confirmed"
    # a reminder without a due time is ignored (and not confirmed)
    fb2 = fake_broker([{"id": "rm-8", "child": "C-008", "kind": "contact"}])
    p = director(fb2.endpoint, tmp_path / "spool2", "reminders", "--wait", "1")
    assert p.returncode == 0, p.stderr
    assert fb2.received == [] and "0 reminder(s)" in p.stderr, p.stderr


# --------------------------------------------------------------------------
# against the broker's register (PROTOCOL §9 and spec/register-wire.md)

# The reminder falls due 2 s after the enrolment (it must come after its base).
RHYTHMS = [{"name": "soon", "match": {}, "contact_every": "1d", "visit_every": "30d",
            "remind_before": "86398s"}]


def test_reminders_from_the_register_and_due(make_broker, tmp_path):
    b = make_broker(config=register_config(tmp_path / "carehubd-reg", rhythms=RHYTHMS),
                    name="carehubd-reg")
    spool = tmp_path / "spool"
    p = director(b, spool, "--json", "enrol", "--village", VILLAGE, write_csv(tmp_path / "r.csv", ROWS))
    assert p.returncode == 0, p.stderr

    # contact_every 1d, remind_before 1d less 2 s: each contact reminder comes at once
    deadline = time.monotonic() + 30
    got = []
    while time.monotonic() < deadline:
        p = director(b, spool, "--json", "reminders", "--wait", "2")
        assert p.returncode == 0, p.stderr
        got = json_lines(p.stdout)
        if {r["child"] for r in got if r["kind"] == "contact"} >= {"C-001", "C-002", "C-003"}:
            break
    kinds = {(r["child"], r["kind"]) for r in got}
    assert {("C-001", "contact"), ("C-002", "contact"), ("C-003", "contact")} <= kinds, got
    for r in got:
        assert r["id"].startswith("rm-") and isinstance(r["due"], int), r

    # due within 7 days: the three contacts, sorted by due, names on stdout only
    p = director(b, spool, "--json", "due")
    assert p.returncode == 0, p.stderr
    rows = json_lines(p.stdout)
    contacts = [r for r in rows if r["kind"] == "contact"]
    assert sorted(r["child"] for r in contacts) == ["C-001", "C-002", "C-003"], rows
    assert [r["due"] for r in rows] == sorted(r["due"] for r in rows)
    assert {r["name"] for r in contacts} == {CANARY, "李小明", "赵丽"}
    p = director(b, spool, "due", "--within", "2d")
    assert p.returncode == 0, p.stderr
    assert CANARY in p.stdout and "C-001" in p.stdout, p.stdout

    # a contact moves C-001's due time out of the next day
    p = director(b, spool, "visit", "C-001", "--kind", "contact", "--method", "phone")
    assert p.returncode == 0, p.stderr
    p = director(b, spool, "--json", "due", "--within", "12h")
    assert p.returncode == 0, p.stderr
    assert "C-001" not in {r["child"] for r in json_lines(p.stdout) if r["kind"] == "contact"}, p.stdout

    # another director sees only their own children (none)
    p = director(b, tmp_path / "spool-other", "--json", "due", agent=OTHER)
    assert p.returncode == 0 and json_lines(p.stdout) == [], (p.stdout, p.stderr)
    # and a school may not ask
    p = director(b, tmp_path / "spool-school", "due", agent="school-0042")
    assert p.returncode == 65 and "forbidden" in p.stderr, p.stderr

    no_names_in_files(spool)
    log = b.log_tail(200000) if hasattr(b, "log_tail") else ""
    assert CANARY not in log, "the broker's log names a child"
