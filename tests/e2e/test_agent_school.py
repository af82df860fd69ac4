"""carehub-school: a school's attendance export (CSV) → `absence` events.

The program is run as a school would run it, against a real broker; the tests
check what the broker stored by talking to it as outside agents (a Python
school agent re-sending the program's event ids, an agency desk).

  * the same export sent twice makes no second event: every event of the
    second run comes back duplicate:true, with the ids of the first, also
    from a fresh spool given the school's id key (--id-key);
  * the event id is "abs:" + BLAKE2b-240 of school NUL student NUL date, keyed
    with the school's id key (SPOOL/school-id.key, made 0600 on the first run;
    documented in docs/agents.md): a tool holding the key can compute it, and no
    one without it can find the student from the id (issue 12, finding 2);
  * bad rows are reported with FILE:LINE and skipped; the good ones are sent;
    the exit code is 65;
  * a broker that is down: exit 75, the events stay in the spool and go out
    on the next run;
  * an outcome pushed to the school is kept in SPOOL/outcomes.jsonl.

Programs: $CAREHUB_BIN_DIR (make e2e: build/san/bin) or <repo>/bin.
"""

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

import carehub_harness as h
from routing_harness import case_update, routing_config, wait_push

SCHOOL = "滨海新区第一小学"
HEADER = ("student_id,name,gender,birth_date,date,status,reason,consecutive_days,"
          "guardian_contacted,period,guardian_name,guardian_phone,category")


# --------------------------------------------------------------------------
# running the program

def bin_dir():
    return Path(os.environ.get("CAREHUB_BIN_DIR") or h.REPO / "bin")


def prog(name):
    p = bin_dir() / name
    if not (p.is_file() and os.access(p, os.X_OK)):
        pytest.fail(f"{p} not found: build it (make, or make san-build) or set CAREHUB_BIN_DIR",
                    pytrace=False)
    return str(p)


def run(name, *args, timeout=60, input=None, env=None):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([prog(name)] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout, input=input, env=e)
    for m in h.SANITIZER_MARKERS:
        assert m not in p.stderr, f"{name}: sanitizer report:\n{p.stderr[-6000:]}"
    return p


def json_lines(text):
    return [json.loads(ln) for ln in text.splitlines() if ln.strip()]


def school(broker_or_ep, spool, *args, agent="school-0042", **kw):
    ep = broker_or_ep.endpoint if isinstance(broker_or_ep, h.Broker) else broker_or_ep
    return run("carehub-school", "-b", ep, "-a", agent, "--spool", spool, *args, **kw)


def id_key(spool):
    """The school's id key carehub-school made in its spool (32 bytes, mode 0600)."""
    p = Path(spool) / "school-id.key"
    assert p.stat().st_mode & 0o777 == 0o600, oct(p.stat().st_mode)
    key = p.read_bytes()
    assert len(key) == 32, len(key)
    return key


def abs_key(school_name, student, date, key):
    d = hashlib.blake2b(f"{school_name}\0{student}\0{date}".encode(), digest_size=30,
                        key=key).hexdigest()
    return "abs:" + d


def write_csv(path, rows, header=HEADER, bom=False, newline="\r\n"):
    text = newline.join([header] + rows) + newline
    data = text.encode("utf-8")
    if bom:
        data = b"\xef\xbb\xbf" + data
    Path(path).write_bytes(data)
    return path


GOOD_ROWS = [
    "S-001,李明,male,2015-01-01,2025-03-03,absent,unexplained,1,no,full_day,李华,+86 22 5555 0101,left_behind",
    "S-002,王芳,female,2015-02-01,2025-03-03,present,,,,,,,",
    '"S-003","Zhang, Wei",male,2014-05-05,2025-03-03,absent,sick,3,yes,morning,,,"left_behind;disabled"',
    "S-004,赵丽,,,2025-03-03,absent,,2,,,,,",
    "S-005,刘洋,male,2014-01-05,2025-03-03,late,,,,,,,",
]
ABSENT = [("S-001", 2), ("S-003", 4), ("S-004", 5)]   # (student, line)


def check_acks(out, duplicate, key):
    lines = json_lines(out)
    assert len(lines) == len(ABSENT), out
    by_student = {ln["student_id"]: ln for ln in lines}
    assert set(by_student) == {s for s, _ in ABSENT}, lines
    for student, line in ABSENT:
        ln = by_student[student]
        assert ln["status"] == "acknowledged", ln
        assert ln["line"] == line, ln
        assert ln["date"] == "2025-03-03"
        assert ln["id"] == abs_key(SCHOOL, student, "2025-03-03", key), ln
        assert ln["duplicate"] is duplicate, ln
        assert h.ID_RE.match(ln["event"]) and h.ID_RE.match(ln["case"]), ln
    return by_student


# --------------------------------------------------------------------------

def test_help_and_usage(tmp_path):
    p = run("carehub-school", "--help")
    assert p.returncode == 0, p.stderr
    assert "student_id" in p.stdout and "consecutive_days" in p.stdout and "--school" in p.stdout
    p = run("carehub-school", "-b", "tcp://127.0.0.1:1", "-a", "school-0042", "x.csv")
    assert p.returncode == 64 and "--school" in p.stderr, p
    p = run("carehub-school", "--school", SCHOOL, "x.csv", env={"CAREHUB_AGENT": ""})
    assert p.returncode == 64 and "-a" in p.stderr, p
    p = run("carehub-school", "--school", SCHOOL, "--bogus")
    assert p.returncode == 64
    p = run("carehub-school", "-b", "tcp://127.0.0.1:1", "-a", "school-0042", "--school", SCHOOL,
            "--spool", tmp_path / "s", tmp_path / "missing.csv")
    assert p.returncode == 66 and "missing.csv" in p.stderr, p


def test_same_export_twice_makes_no_duplicates(make_broker, connect, tmp_path):
    b = make_broker()
    csv = write_csv(tmp_path / "attendance.csv", GOOD_ROWS, bom=True)

    first = school(b, tmp_path / "spool", "--school", SCHOOL, "--json", csv)
    assert first.returncode == 0, first.stderr
    key = id_key(tmp_path / "spool")
    assert "made the school's id key" in first.stderr, first.stderr
    acks1 = check_acks(first.stdout, duplicate=False, key=key)
    assert len({a["event"] for a in acks1.values()}) == 3, "three distinct events"
    assert len({a["case"] for a in acks1.values()}) == 3, "one case per child"
    assert "3 absent row(s) read, 2 present or late, 0 bad" in first.stderr

    # Again, same spool: everything comes back duplicate, same ids.
    second = school(b, tmp_path / "spool", "--school", SCHOOL, "--json", csv)
    assert second.returncode == 0, second.stderr
    acks2 = check_acks(second.stdout, duplicate=True, key=key)
    assert "made the school's id key" not in second.stderr, second.stderr
    for s in acks1:
        assert (acks2[s]["event"], acks2[s]["case"]) == (acks1[s]["event"], acks1[s]["case"])

    # Again from another machine (a fresh spool) given the school's key: the same ids.
    third = school(b, tmp_path / "spool-2", "--school", SCHOOL, "--json",
                   "--id-key", tmp_path / "spool" / "school-id.key", csv)
    assert third.returncode == 0, third.stderr
    acks3 = check_acks(third.stdout, duplicate=True, key=key)
    for s in acks1:
        assert acks3[s]["event"] == acks1[s]["event"]

    # Readable output says the same.
    fourth = school(b, tmp_path / "spool", "--school", SCHOOL, csv)
    assert fourth.returncode == 0, fourth.stderr
    assert sum(ln.endswith("  already sent") for ln in fourth.stdout.splitlines()) == 3, fourth.stdout
    assert "李明" not in fourth.stdout + fourth.stderr, "the output never names the pupil"

    # The broker holds exactly these three: re-sending the ids as the same school
    # gets the same events back as duplicates.
    a = connect(b, login="school-0042")
    for student, _ in ABSENT:
        mid = abs_key(SCHOOL, student, "2025-03-03", key)
        r = a.event("absence", h.absence_body(student), id=mid)
        ev, case = h.assert_ack(r, mid, duplicate=True)
        assert (ev, case) == (acks1[student]["event"], acks1[student]["case"])


def test_id_key_school_own_secret(make_broker, tmp_path):
    """The id does not give the student away: two schools (two keys) get different
    ids for the same school name, student and day, and the unkeyed hash a stranger
    could compute by trying student ids is not the id. Lost key: the days sent
    again are new events (what docs/agents.md warns of); a key with loose mode or
    of the wrong size is refused with the fix."""
    b = make_broker()
    csv = write_csv(tmp_path / "a.csv", GOOD_ROWS)
    one = school(b, tmp_path / "spool-a", "--school", SCHOOL, "--json", csv)
    two = school(b, tmp_path / "spool-b", "--school", SCHOOL, "--json", csv)
    assert one.returncode == 0 and two.returncode == 0, (one.stderr, two.stderr)
    ids_one = {ln["student_id"]: ln["id"] for ln in json_lines(one.stdout)}
    ids_two = {ln["student_id"]: ln["id"] for ln in json_lines(two.stdout)}
    for student, _ in ABSENT:
        unkeyed = "abs:" + hashlib.blake2b(f"{SCHOOL}\0{student}\0{'2025-03-03'}".encode(),
                                           digest_size=30).hexdigest()
        assert ids_one[student] != unkeyed and ids_two[student] != unkeyed
        assert ids_one[student] != ids_two[student]
    # the second spool's key is another: its events were new, not duplicates
    assert all(ln["duplicate"] is False for ln in json_lines(two.stdout)), two.stdout
    # a key others may read: refused, with the chmod
    k = tmp_path / "spool-a" / "school-id.key"
    k.chmod(0o644)
    p = school(b, tmp_path / "spool-a", "--school", SCHOOL, "--json", csv)
    assert p.returncode == 66 and f"chmod 600 {k}" in p.stderr, (p.returncode, p.stderr)
    k.chmod(0o600)
    short = tmp_path / "short.key"
    short.write_bytes(b"0123456789")
    short.chmod(0o600)
    p = school(b, tmp_path / "spool-a", "--school", SCHOOL, "--id-key", short, csv)
    assert p.returncode == 66 and "holds 10 bytes, not the 32" in p.stderr, (p.returncode, p.stderr)
    missing = tmp_path / "missing.key"
    p = school(b, tmp_path / "spool-a", "--school", SCHOOL, "--id-key", missing, csv)
    assert p.returncode == 66 and "does not exist" in p.stderr and not missing.exists(), p.stderr


def test_body_fields_reach_the_agency(make_broker, connect, tmp_path):
    name = "carehubd-routed"
    cfg = routing_config(tmp_path / name, workflows=[
        {"name": "absence", "match": {"type": "absence"},
         "assign": [{"agency": "education", "ack_within": "1d"}]}])
    b = make_broker(config=cfg, name=name)
    csv = write_csv(tmp_path / "a.csv", GOOD_ROWS[:3], newline="\n")
    p = school(b, tmp_path / "spool", "--school", SCHOOL, "--json", csv)
    assert p.returncode == 0, p.stderr
    acks = {ln["student_id"]: ln for ln in json_lines(p.stdout)}

    desk = connect(b, login="edu-desk")
    m = wait_push(desk, "case", pred=lambda m: m["case"] == acks["S-003"]["case"])
    body = m["events"][-1]["body"]
    assert body == {
        "school": SCHOOL, "date": "2025-03-03", "reason": "sick", "consecutive_days": 3,
        "period": "morning", "guardian_contacted": True, "severity": "normal",
        "child": {"id": "S-003", "name": "Zhang, Wei", "gender": "male", "birth_date": "2014-05-05",
                  "category": ["left_behind", "disabled"]},
    }, body
    m = wait_push(desk, "case", pred=lambda m: m["case"] == acks["S-001"]["case"])
    child = m["events"][-1]["body"]["child"]
    assert child["guardian"] == {"name": "李华", "phone": "+86 22 5555 0101"}, child
    assert m["events"][-1]["body"]["guardian_contacted"] is False


def test_bad_rows_are_reported_and_skipped(make_broker, tmp_path):
    b = make_broker()
    rows = [
        "B-01,甲,male,2015-01-01,2025-03-03,absent,unexplained,1,no,,,,",      # 2 good
        "B-02,乙,male,2015-13-01,2025-03-03,absent,unexplained,1,no,,,,",      # 3 birth_date
        "B-03,丙,male,,2025-02-30,absent,unexplained,1,no,,,,",                 # 4 date
        "B-04,丁,male,,2025-03-03,gone,unexplained,1,no,,,,",                   # 5 status
        "B-05,戊,male,,2025-03-03,absent,bored,1,no,,,,",                       # 6 reason
        "B-06,己,male,,2025-03-03,absent,sick,,no,,,,",                         # 7 days empty
        "B-07,庚,male,,2025-03-03,absent,sick,0,no,,,,",                        # 8 days < 1
        'B-08,辛 "x",male,,2025-03-03,absent,sick,1,no,,,,',                    # 9 stray quote
        "B-09,壬,male,,2025-03-03,absent,sick,1,no,,,",                         # 10 field count
        "B-01,甲,male,2015-01-01,2025-03-03,absent,sick,2,no,,,,",              # 11 same pupil+day
        "B-10,癸,male,,2025-03-03,absent,sick,1,maybe,,,,",                     # 12 guardian_contacted
        "B-11,子,male,,2025-03-03,absent,sick,1,no,all_day,,,",                 # 13 period
        "B-12,丑,male,,2025-03-03,absent,sick,1,no,,,,rich",                    # 14 category
        ",寅,male,,2025-03-03,absent,sick,1,no,,,,",                            # 15 no student_id
        "B-13,,male,,2025-03-03,absent,sick,1,no,,,,",                          # 16 no name
        "B-14,卯,male,,2025-03-03,ABSENT,Family,1,YES,,,,",                     # 17 good (case)
        "",                                                                     # 18 blank: skipped
        "B-15,辰,alien,,2025-03-03,absent,sick,1,no,,,,",                       # 19 gender
        '"B-16,巳,male,,2025-03-03,absent,sick,1,no,,,,',                       # 20 open quote to EOF
    ]
    path = tmp_path / "bad.csv"
    write_csv(path, rows, newline="\n")
    # an invalid UTF-8 row (GBK bytes), inserted before the last one
    data = path.read_bytes().replace(b"\n\"B-16", b"\nB-17,\xc0\xee,male,,2025-03-03,absent,sick,1,no,,,,\n\"B-16")
    path.write_bytes(data)
    p = school(b, tmp_path / "spool", "--school", SCHOOL, "--json", path)
    assert p.returncode == 65, (p.stdout, p.stderr)
    err = p.stderr
    expect = {3: "birth_date", 4: "date", 5: "status", 6: "reason", 7: "consecutive_days",
              8: "consecutive_days", 9: "quote", 10: "fields", 11: "already absent",
              12: "guardian_contacted", 13: "period", 14: "category", 15: "student_id",
              16: "name", 19: "gender", 20: "UTF-8", 21: "not closed"}
    for line, word in expect.items():
        hit = [ln for ln in err.splitlines() if ln.startswith(f"{path}:{line}:")]
        assert hit, f"no report for line {line} in:\n{err}"
        assert word in hit[0], f"line {line}: expected {word!r} in {hit[0]!r}"
    assert f"{path}:2:" not in err and f"{path}:17:" not in err, err
    acks = json_lines(p.stdout)
    assert sorted(a["student_id"] for a in acks) == ["B-01", "B-14"], acks
    assert all(a["status"] == "acknowledged" and a["duplicate"] is False for a in acks)
    assert "2 absent row(s) read, 0 present or late, 17 bad" in err, err

    # --check reports the same rows without a broker and sends nothing.
    c = run("carehub-school", "--check", "--school", SCHOOL, path)
    assert c.returncode == 65
    assert c.stdout.strip().endswith("(checked only; nothing sent)"), c.stdout
    for line in expect:
        assert f"{path}:{line}:" in c.stderr


def test_header_problems(make_broker, tmp_path):
    b = make_broker()
    no_status = write_csv(tmp_path / "h1.csv", ["X-1,甲,2025-03-03,sick,1"],
                          header="student_id,name,date,reason,consecutive_days")
    p = school(b, tmp_path / "spool", "--school", SCHOOL, no_status)
    assert p.returncode == 65 and "no status column" in p.stderr, p.stderr

    extra = write_csv(tmp_path / "h2.csv", ["X-2,甲,2025-03-03,absent,sick,1,3A"],
                      header="Student ID,Name,Date,Status,Reason,Consecutive-Days,class")
    p = school(b, tmp_path / "spool", "--school", SCHOOL, extra)
    assert p.returncode == 65 and "unknown column 'class'" in p.stderr, p.stderr
    assert "acknowledged: 0 new" in p.stdout, "nothing is sent from a file with a bad header"

    p = school(b, tmp_path / "spool", "--school", SCHOOL, "--allow-extra-columns", "--json", extra)
    assert p.returncode == 0, p.stderr
    (ack,) = json_lines(p.stdout)
    assert ack["student_id"] == "X-2" and ack["duplicate"] is False

    semi = write_csv(tmp_path / "h3.csv", ["X-3;甲;2025-03-03;absent;sick;1"],
                     header="student_id;name;date;status;reason;consecutive_days")
    p = school(b, tmp_path / "spool", "--school", SCHOOL, "--separator", ";", "--json", semi)
    assert p.returncode == 0, p.stderr
    assert json_lines(p.stdout)[0]["student_id"] == "X-3"

    empty = tmp_path / "empty.csv"
    empty.write_text("")
    p = school(b, tmp_path / "spool", "--school", SCHOOL, empty)
    assert p.returncode == 65 and "empty" in p.stderr


def test_broker_down_events_stay_in_spool(make_broker, tmp_path):
    port = h.free_port()
    ep = f"tcp://127.0.0.1:{port}"
    csv = write_csv(tmp_path / "a.csv", GOOD_ROWS)
    p = school(ep, tmp_path / "spool", "--school", SCHOOL, "--json", "--wait", "1", csv)
    assert p.returncode == 75, (p.stdout, p.stderr)
    assert "3 event(s) not acknowledged (no answer for 1 s" in p.stderr and "spool" in p.stderr, p.stderr
    assert p.stdout == ""

    b = make_broker(overrides={"broker": {"listen": [ep]}})
    # A later export without absences: the spool still delivers the three from before.
    later = write_csv(tmp_path / "b.csv", ["S-002,王芳,female,2015-02-01,2025-03-04,present,,,,,,,"])
    p = school(b, tmp_path / "spool", "--school", SCHOOL, "--json", later)
    assert p.returncode == 0, p.stderr
    acks = json_lines(p.stdout)
    key = id_key(tmp_path / "spool")
    assert sorted(a["id"] for a in acks) == sorted(abs_key(SCHOOL, s, "2025-03-03", key) for s, _ in ABSENT)
    assert all(a["duplicate"] is False and a["earlier_run"] is True for a in acks), acks
    # the spool remembers where each event came from
    assert sorted((a["file"], a["line"], a["student_id"]) for a in acks) == \
        sorted((str(csv), line, s) for s, line in ABSENT), acks
    # and the first file again: duplicates only
    p = school(b, tmp_path / "spool", "--school", SCHOOL, "--json", csv)
    assert p.returncode == 0
    check_acks(p.stdout, duplicate=True, key=key)


def test_outcome_to_the_school_is_kept(make_broker, connect, tmp_path):
    name = "carehubd-routed"
    cfg = routing_config(tmp_path / name, workflows=[
        {"name": "absence", "match": {"type": "absence"},
         "assign": [{"agency": "education", "ack_within": "1d"}]}])
    b = make_broker(config=cfg, name=name)
    csv = write_csv(tmp_path / "a.csv", [GOOD_ROWS[0]])
    p = school(b, tmp_path / "spool", "--school", SCHOOL, "--json", csv)
    assert p.returncode == 0, p.stderr
    (ack,) = json_lines(p.stdout)

    desk = connect(b, login="edu-desk")
    m = wait_push(desk, "case", pred=lambda m: m["case"] == ack["case"])
    _, r = case_update(desk, m["id"], "resolved", note="the family moved; pupil enrolled elsewhere")
    assert r.get("op") == "ack", r

    # The next run receives the outcome after its hello and keeps it.
    p = school(b, tmp_path / "spool", "--school", SCHOOL, "--json", "--wait", "2", csv)
    assert p.returncode == 0, p.stderr
    log = tmp_path / "spool" / "outcomes.jsonl"
    assert log.exists(), p.stderr
    (o,) = json_lines(log.read_text())
    assert o["op"] == "outcome" and o["ref"] == ack["id"] and o["case"] == ack["case"], o
    assert o["status"] == "resolved" and o["note"].startswith("the family moved"), o
    assert isinstance(o["received_at"], int)
    assert "outcome of case" in p.stderr, p.stderr


def test_garbage_never_crashes(tmp_path):
    """Random bytes, mutated exports, huge fields and records: the reader reports
    and goes on (exit 0 or 65), never crashes (the suite runs it under ASan/UBSan)."""
    import random
    rnd = random.Random(4180)
    good = (HEADER + "\n" + "\n".join(GOOD_ROWS) + "\n").encode()
    inputs = [
        b"", b"\n\n\n", b'"', b'""', b'"\n', b"\xef\xbb\xbf", b"\xef\xbb", b"\x00" * 10,
        (HEADER + "\n").encode() + b"A" * 3_000_000 + b"\n",               # one huge field
        (HEADER + "\n").encode() + b"," * 100_000 + b"\n",                 # too many fields
        (HEADER + "\n").encode() + b'"' + b"x\n" * 200_000,                 # quote never closed
        (HEADER + "\n").encode() + ("S,n,,,2025-03-03,absent,sick,1,,,,," + "x" * 20_000 + "\n").encode(),
        HEADER.encode() + b"\r\r\r\n\r\n",
    ]
    for _ in range(25):
        inputs.append(bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 400))))
    for _ in range(40):
        b = bytearray(good)
        for _ in range(rnd.randrange(1, 12)):
            i = rnd.randrange(len(b))
            b[i] = rnd.choice(b'",\r\n\x00\xff;' + bytes([rnd.randrange(256)]))
        inputs.append(bytes(b))
    for i, data in enumerate(inputs):
        path = tmp_path / f"g{i}.csv"
        path.write_bytes(data)
        p = run("carehub-school", "--check", "--school", SCHOOL, path, timeout=60)
        assert p.returncode in (0, 65), (i, data[:200], p.returncode, p.stderr[-2000:])



# --------------------------------------------------------------------------
# Exports as Chinese spreadsheet programs save them (issue 14): Chinese headers
# and values, GB18030/GBK or UTF-8 with a byte order mark, CRLF, a trailing
# empty line. docs/agents.md, "Chinese exports".

ZH_HEADER = "学号,姓名,性别,出生日期,班级,日期,出勤状态,缺勤原因,连续缺勤天数,联系监护人,时段,监护人,监护人电话,类别"
ZH_ROWS = [
    "S-001,李明,男,2015-01-01,三年级二班,2025-03-03,缺勤,无故,1,否,全天,李华,+86 22 5555 0101,留守儿童",
    "S-002,王芳,女,2015-02-01,三年级二班,2025-03-03,出勤,,,,,,,",
    "S-003,张伟,男,2014-05-05,三年级二班,2025-03-03,病假,,3,是,上午,,,留守儿童、残疾儿童",
    "S-004,赵丽,,,三年级二班,2025-03-03,迟到,,,,,,,",
    "S-005,刘洋,女,,四年级一班,2025-03-03,缺席,家庭原因,2,,下午,,,",
]
ZH_ABSENT = [("S-001", 2), ("S-003", 4), ("S-005", 6)]


def write_zh(path, encoding, rows=ZH_ROWS, bom=False, header=ZH_HEADER):
    """As a spreadsheet program saves it: CRLF, and a trailing empty line."""
    data = ("\r\n".join([header] + rows) + "\r\n\r\n").encode(encoding)
    if bom:
        data = b"\xef\xbb\xbf" + data
    Path(path).write_bytes(data)
    return path


def check_zh_acks(out, duplicate, key, absent=ZH_ABSENT):
    acks = {ln["student_id"]: ln for ln in json_lines(out)}
    assert sorted(acks) == sorted(s for s, _ in absent), out
    for student, line in absent:
        a = acks[student]
        assert a["status"] == "acknowledged" and a["duplicate"] is duplicate, a
        assert a["line"] == line and a["date"] == "2025-03-03", a
        assert a["id"] == abs_key(SCHOOL, student, "2025-03-03", key), a
    return acks


def routed_broker(make_broker, tmp_path):
    name = "carehubd-routed"
    cfg = routing_config(tmp_path / name, workflows=[
        {"name": "absence", "match": {"type": "absence"},
         "assign": [{"agency": "education", "ack_within": "1d"}]}])
    return make_broker(config=cfg, name=name)


def test_gb18030_export_with_chinese_headers(make_broker, connect, tmp_path):
    b = routed_broker(make_broker, tmp_path)
    gb = write_zh(tmp_path / "考勤.csv", "gb18030")
    with pytest.raises(UnicodeDecodeError):
        gb.read_bytes().decode("utf-8")

    p = school(b, tmp_path / "spool", "--school", SCHOOL, "--json", gb)
    assert p.returncode == 0, p.stderr
    assert "3 absent row(s) read, 2 present or late, 0 bad" in p.stderr, p.stderr
    key = id_key(tmp_path / "spool")
    acks = check_zh_acks(p.stdout, duplicate=False, key=key)
    assert len({a["case"] for a in acks.values()}) == 3

    # what the broker stored, as the education desk receives it
    desk = connect(b, login="edu-desk")
    bodies = {}
    for student in acks:
        m = wait_push(desk, "case", pred=lambda m, c=acks[student]["case"]: m["case"] == c)
        bodies[student] = m["events"][-1]["body"]
    assert bodies["S-001"] == {
        "school": SCHOOL, "date": "2025-03-03", "reason": "unexplained", "consecutive_days": 1,
        "period": "full_day", "guardian_contacted": False, "severity": "normal",
        "child": {"id": "S-001", "name": "李明", "gender": "male", "birth_date": "2015-01-01",
                  "category": ["left_behind"],
                  "guardian": {"name": "李华", "phone": "+86 22 5555 0101"}},
    }, bodies["S-001"]
    # status 病假 with no reason: absent, sick; 、 separates categories
    assert bodies["S-003"] == {
        "school": SCHOOL, "date": "2025-03-03", "reason": "sick", "consecutive_days": 3,
        "period": "morning", "guardian_contacted": True, "severity": "normal",
        "child": {"id": "S-003", "name": "张伟", "gender": "male", "birth_date": "2014-05-05",
                  "category": ["left_behind", "disabled"]},
    }, bodies["S-003"]
    assert bodies["S-005"] == {
        "school": SCHOOL, "date": "2025-03-03", "reason": "family", "consecutive_days": 2,
        "period": "afternoon", "severity": "normal",
        "child": {"id": "S-005", "name": "刘洋", "gender": "female"},
    }, bodies["S-005"]

    # the same file again: nothing new, the same events
    again = school(b, tmp_path / "spool", "--school", SCHOOL, "--json", gb)
    assert again.returncode == 0, again.stderr
    acks2 = check_zh_acks(again.stdout, duplicate=True, key=key)
    for s in acks:
        assert (acks2[s]["event"], acks2[s]["case"]) == (acks[s]["event"], acks[s]["case"])

    # the same export saved as UTF-8 (no byte order mark): the same ids, duplicates
    u8 = write_zh(tmp_path / "考勤-utf8.csv", "utf-8")
    p = school(b, tmp_path / "spool", "--school", SCHOOL, "--json", u8)
    assert p.returncode == 0, p.stderr
    acks3 = check_zh_acks(p.stdout, duplicate=True, key=key)
    for s in acks:
        assert (acks3[s]["id"], acks3[s]["event"]) == (acks[s]["id"], acks[s]["event"])

    # the broker holds each once: re-sent by the same school, all duplicates
    a = connect(b, login="school-0042")
    for student, _ in ZH_ABSENT:
        mid = abs_key(SCHOOL, student, "2025-03-03", key)
        r = a.event("absence", h.absence_body(student), id=mid)
        ev, case = h.assert_ack(r, mid, duplicate=True)
        assert (ev, case) == (acks[student]["event"], acks[student]["case"])


def test_utf8_bom_and_the_encoding_option(make_broker, tmp_path):
    b = make_broker()
    key_file = None
    bom = write_zh(tmp_path / "bom.csv", "utf-8", bom=True)
    gb = write_zh(tmp_path / "gb.csv", "gb18030")
    # the same rows: one spool, so the second file's rows are the first one's
    p = school(b, tmp_path / "spool", "--school", SCHOOL, "--json", bom)
    assert p.returncode == 0, p.stderr
    key_file = tmp_path / "spool" / "school-id.key"
    key = id_key(tmp_path / "spool")
    first = check_zh_acks(p.stdout, duplicate=False, key=key)

    for enc in ("gb18030", "GBK"):
        p = school(b, tmp_path / "spool", "--school", SCHOOL, "--json", "--encoding", enc, gb)
        assert p.returncode == 0, (enc, p.stderr)
        acks = check_zh_acks(p.stdout, duplicate=True, key=key)
        assert all(acks[s]["event"] == first[s]["event"] for s in acks)
    p = school(b, tmp_path / "spool", "--school", SCHOOL, "--json", "--encoding", "utf-8", bom)
    assert p.returncode == 0, p.stderr
    check_zh_acks(p.stdout, duplicate=True, key=key)

    # the wrong encoding given: the header cannot be read, nothing is sent
    p = school(b, tmp_path / "spool", "--school", SCHOOL, "--encoding", "utf-8", gb)
    assert p.returncode == 65, p.stderr
    assert f"{gb}:1: the header line is not UTF-8 (given" in p.stderr, p.stderr
    assert "acknowledged: 0 new, 0 already sent" in p.stdout, p.stdout
    p = school(b, tmp_path / "spool", "--school", SCHOOL, "--encoding", "latin1", gb)
    assert p.returncode == 64 and "utf-8, gb18030 or gbk" in p.stderr, p.stderr
    # a separator that can be the second byte of a GB18030 character is refused
    bar = write_zh(tmp_path / "bar.csv", "gb18030", rows=[r.replace(",", "|") for r in ZH_ROWS],
                   header=ZH_HEADER.replace(",", "|"))
    p = run("carehub-school", "--check", "--school", SCHOOL, "--separator", "|", bar)
    assert p.returncode == 65 and "use , ; or tab" in p.stderr, p.stderr
    # English headers with Chinese values, GBK, semicolons: --check reads them
    semi = write_zh(tmp_path / "semi.csv", "gbk", header=ZH_HEADER.replace(",", ";"),
                    rows=[r.replace(",", ";") for r in ZH_ROWS])
    p = run("carehub-school", "--check", "--school", SCHOOL, "--separator", ";", semi)
    assert p.returncode == 0, p.stderr
    assert "3 absent row(s) read, 2 present or late, 0 bad" in p.stdout, p.stdout
    assert key_file.exists()


def test_undecodable_byte_is_a_row_error(make_broker, tmp_path):
    b = make_broker()
    good = write_zh(tmp_path / "gb.csv", "gb18030").read_bytes()
    # S-003's name (line 4) gets a byte GB18030 has no character for
    bad = good.replace("张伟".encode("gb18030"), b"\x80\xff")
    assert bad != good
    path = tmp_path / "bad.csv"
    path.write_bytes(bad)
    p = school(b, tmp_path / "spool", "--school", SCHOOL, "--json", path)
    assert p.returncode == 65, (p.stdout, p.stderr)
    (hit,) = [ln for ln in p.stderr.splitlines() if ln.startswith(f"{path}:")]
    assert hit.startswith(f"{path}:4: the row is not valid GB18030 (detected): field 2 (姓名)"), hit
    assert "0x80" in hit and hit.endswith("row skipped"), hit
    key = id_key(tmp_path / "spool")
    check_zh_acks(p.stdout, duplicate=False, key=key, absent=[("S-001", 2), ("S-005", 6)])
    assert "2 absent row(s) read, 2 present or late, 1 bad" in p.stderr, p.stderr

    # the fixed file: the rows sent before are duplicates, S-003 is new
    fixed = tmp_path / "fixed.csv"
    fixed.write_bytes(good)
    p = school(b, tmp_path / "spool", "--school", SCHOOL, "--json", fixed)
    assert p.returncode == 0, p.stderr
    acks = {a["student_id"]: a["duplicate"] for a in json_lines(p.stdout)}
    assert acks == {"S-001": True, "S-003": False, "S-005": True}, acks

    # a UTF-8 file (byte order mark) with a stray GBK byte: that row, as UTF-8
    u8 = write_zh(tmp_path / "u8.csv", "utf-8", bom=True).read_bytes()
    u8 = u8.replace("刘洋".encode(), "刘洋".encode("gbk"))
    path = tmp_path / "u8bad.csv"
    path.write_bytes(u8)
    p = run("carehub-school", "--check", "--school", SCHOOL, path)
    assert p.returncode == 65, p.stderr
    (hit,) = [ln for ln in p.stderr.splitlines() if ln.startswith(f"{path}:")]
    assert hit.startswith(f"{path}:6: the row is not valid UTF-8 (detected): field 2 (姓名)"), hit
    assert "--encoding gb18030" in hit, hit
    assert "2 absent row(s) read, 2 present or late, 1 bad" in p.stdout, p.stdout
