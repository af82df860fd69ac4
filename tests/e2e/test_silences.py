"""Silences (shared/PROTOCOL.md §10, docs/protocol.md "Silences"): a supervisor
holds back the assignments and notices of matching events for a while.

Refusals (every danger form, missing fields, too long, other roles), the effect on a
silenced absence (stored and acknowledged, no assignment, no webhook, `silenced` in
the case file), the end of a silence (expired, or `ends` passed on the test clock),
a restart, the trail records, and the supervisors' CLI (`carehub silence`).
"""
import json
import os
import subprocess
from pathlib import Path

import lmdb
import msgpack
import pytest

import carehub_harness as h
from carehub_harness import assert_nack, uid
from routing_harness import (  # noqa: F401  (fixtures)
    clock, make_clock_broker, new_secret, no_push, receiver, routing_config, send_event,
    wait_push, webhook_channel,
)

MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
DANGER = "a child in danger is never silenced"

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("CAREHUB_BIN_DIR") or REPO / "bin")
CAREHUB = BIN_DIR / "carehub"

WORKFLOWS = [
    {"name": "reports", "match": {"type": "mandatory_report"},
     "assign": [{"agency": "police", "ack_within": "1h"}]},
    {"name": "absence", "match": {"type": "absence"},
     "assign": [{"agency": "education", "ack_within": "1d"}]},
    {"name": "online", "match": {"type": "online_risk"},
     "assign": [{"agency": "police", "ack_within": "1h"}]},
]


def start(make_clock_broker, tmp_path, receiver=None):
    channels, agencies = None, None
    if receiver is not None:
        channels = [webhook_channel("edu-hook", receiver.url("/edu"), new_secret())]
        agencies = [{"id": "education", "channels": ["edu-hook"]}]
    cfg = routing_config(tmp_path / "b", workflows=WORKFLOWS, channels=channels, agencies=agencies)
    return make_clock_broker(config=cfg, name="b")


def silence(agent, match, ends=None, reason="school trip", starts=None, now=None, **extra):
    msg = {"v": 1, "op": "silence", "id": agent.new_id(), "match": match}
    if ends is not None:
        msg["ends"] = ends
    elif now is not None:
        msg["ends"] = now + HOUR
    if reason is not None:
        msg["reason"] = reason
    if starts is not None:
        msg["starts"] = starts
    msg.update(extra)
    return msg, agent.request(msg)


def silence_ok(agent, match, **kw):
    msg, r = silence(agent, match, **kw)
    assert r.get("op") == "ack" and r.get("id") == msg["id"], r
    assert isinstance(r.get("silence"), str) and r["silence"].startswith("sil-"), r
    return r["silence"]


def expire(agent, sid):
    return agent.request({"v": 1, "op": "silence_expire", "id": agent.new_id(), "silence": sid})


def query(agent, what, **kw):
    msg = {"v": 1, "op": "query", "id": agent.new_id(), "what": what}
    msg.update(kw)
    r = agent.request(msg)
    assert r.get("op") == "result", r
    return r


def case_events(sup, case):
    return query(sup, "case", case=case)["events"]


def absence(school, child=None):
    return send_event(school, "absence", h.absence_body(child or uid("child")))


def read_db(data_dir, name):
    env = lmdb.open(str(data_dir), max_dbs=32, readonly=True, lock=False)
    try:
        db = env.open_db(name.encode(), create=False)
        with env.begin(db=db) as t:
            return [(k, msgpack.unpackb(v, raw=False)) for k, v in t.cursor()]
    finally:
        env.close()


# ---------------------------------------------------------------- refusals

def test_refused_forms(make_clock_broker, tmp_path, connect):
    b = start(make_clock_broker, tmp_path)
    sup = connect(b, login="supervisor-01")
    now = clock(sup)
    dangerous = [
        {"type": "mandatory_report"},
        {"type": ["absence", "mandatory_report"]},
        {"type": "online_risk"},
        {"type": ["absence", "online_risk"]},
        {"type": "online_risk", "body.risk": ">=0"},
        {"type": "online_risk", "body.risk": ["cyberbullying", "gambling", "other", "suicide"]},
    ] + [{"type": "online_risk", "body.risk": r} for r in
         ("self_harm", "suicide", "grooming", "sexual_content")] + \
        [{"type": "online_risk", "body.risk": ["doxxing", r]} for r in
         ("self_harm", "suicide", "grooming", "sexual_content")]
    for m in dangerous:
        msg, r = silence(sup, m, now=now)
        assert_nack(r, "invalid", id=msg["id"], field="/match")
        assert DANGER in r.get("error", ""), (m, r)

    # match.type is required; keys and values as a workflow's
    for m in ({}, {"severity": "low"}, {"body.consecutive_days": ">=3"}, {"type": ""},
              {"type": "absence", "colour": "red"}, {"type": "absence", "severity": "urgent"},
              {"type": "absence", "severity": ">=1"}, {"type": "absence", "body.x": []},
              {"type": "absence", "body.x": ["<3"]}, {"type": "absence", "body.x": ">=abc"}):
        msg, r = silence(sup, m, now=now)
        assert_nack(r, "invalid", id=msg["id"], field="/match")
    msg, r = silence(sup, {"type": "absence"}, reason=None, now=now)
    assert_nack(r, "invalid", id=msg["id"], field="/reason")
    msg, r = silence(sup, {"type": "absence"}, reason="", now=now)
    assert_nack(r, "invalid", id=msg["id"], field="/reason")
    msg, r = silence(sup, {"type": "absence"})                          # no ends
    assert_nack(r, "invalid", id=msg["id"], field="/ends")
    msg, r = silence(sup, {"type": "absence"}, ends=now + 90 * DAY + 1)
    assert_nack(r, "invalid", id=msg["id"], field="/ends")
    msg, r = silence(sup, {"type": "absence"}, starts=now + DAY, ends=now + DAY)
    assert_nack(r, "invalid", id=msg["id"], field="/ends")
    msg, r = silence(sup, {"type": "absence"}, starts=now + DAY, ends=now + 91 * DAY + 1)
    assert_nack(r, "invalid", id=msg["id"], field="/ends")
    msg, r = silence(sup, {"type": "absence"}, starts="tomorrow", ends=now + HOUR)
    assert_nack(r, "invalid", id=msg["id"], field="/starts")

    # exactly 90 days, from a later start, is accepted; so is a safe online_risk
    silence_ok(sup, {"type": "absence"}, starts=now + DAY, ends=now + 91 * DAY)
    silence_ok(sup, {"type": "online_risk", "body.risk": ["cyberbullying", "doxxing"]}, now=now)
    silence_ok(sup, {"type": ["absence", "online_risk"], "body.risk": "gambling",
                     "severity": ["low", "normal"], "body.consecutive_days": "<3"}, now=now)

    # only supervisors
    for login in ("school-0042", "police-desk", "reporter-01", "monitor-01"):
        a = connect(b, login=login)
        msg, r = silence(a, {"type": "absence"}, now=now)
        assert_nack(r, "forbidden", id=msg["id"])
        r = expire(a, "sil-000001")
        assert_nack(r, "forbidden")
        r = a.request({"v": 1, "op": "query", "id": a.new_id(), "what": "silences"})
        assert_nack(r, "forbidden")

    # expire: unknown, malformed
    assert_nack(expire(sup, "sil-999999"), "not_found", field="/silence")
    r = sup.request({"v": 1, "op": "silence_expire", "id": sup.new_id()})
    assert_nack(r, "invalid", field="/silence")

    listed = query(sup, "silences")["silences"]
    assert [s["id"] for s in listed] == ["sil-000001", "sil-000002", "sil-000003"], listed


def test_danger_events_never_held_even_by_a_wide_silence(make_clock_broker, tmp_path, connect):
    """A silence on absence leaves a mandatory_report and an online_risk routed."""
    b = start(make_clock_broker, tmp_path)
    sup = connect(b, login="supervisor-01")
    police = connect(b, login="police-desk")
    rep = connect(b, login="reporter-01")
    mon = connect(b, login="monitor-01")
    now = clock(sup)
    sid = silence_ok(sup, {"type": ["absence", "online_risk"], "body.risk": "gambling"}, now=now)
    _, _, case = send_event(rep, "mandatory_report", h.mandatory_report_body(uid("child")))
    wait_push(police, "case", lambda m: m.get("case") == case)
    _, _, case2 = send_event(mon, "online_risk", h.online_risk_body(risk="suicide"))
    wait_push(police, "case", lambda m: m.get("case") == case2)
    _, _, case3 = send_event(mon, "online_risk", h.online_risk_body(risk="gambling"))
    no_push(police, "case", lambda m: m.get("case") == case3, why="gambling is silenced")
    ev3 = case_events(sup, case3)
    assert ev3[0].get("silenced") == sid, ev3
    assert "silenced" not in case_events(sup, case)[0]


# ---------------------------------------------------------------- the effect

def test_silenced_absence_no_assignment_no_notice_then_expire(make_clock_broker, tmp_path, connect,
                                                              receiver):
    b = start(make_clock_broker, tmp_path, receiver)
    sup = connect(b, login="supervisor-01")
    edu = connect(b, login="edu-desk")
    civil = connect(b, login="civil-desk")
    school = connect(b, login="school-0042")
    now = clock(sup)

    # before: an absence is assigned and the channel told
    _, _, case0 = absence(school)
    wait_push(edu, "case", lambda m: m.get("case") == case0)
    receiver.wait("/edu", 1, timeout=5)
    n_before = len(receiver.at("/edu"))

    sid = silence_ok(sup, {"type": "absence", "body.reason": ["unexplained", "sick"]}, now=now,
                     reason="校外研学：全年级外出")
    child = uid("child")
    _, ev, case = absence(school, child)
    _, ev2, case_b = absence(school, child)                  # a second day joins the case
    assert case_b == case
    no_push(edu, "case", lambda m: m.get("case") == case, wait=0.5, why="the absence is silenced")
    no_push(civil, "case", lambda m: m.get("case") == case, wait=0.05, why="no fallback either")
    assert not receiver.quiet("/edu", 0.3), "no notice for a silenced event"
    assert len(receiver.at("/edu")) == n_before

    events = case_events(sup, case)
    assert [e["id"] for e in events] == [ev, ev2]
    assert all(e.get("silenced") == sid for e in events), events
    q = query(sup, "case", case=case)
    assert not q.get("assignments"), q
    assert "silenced" not in case_events(sup, case0)[0]

    # another reason is not matched: routed as usual
    _, _, case_other = send_event(school, "absence", h.absence_body(uid("child"), reason="family"))
    wait_push(edu, "case", lambda m: m.get("case") == case_other)

    listed = query(sup, "silences")["silences"]
    s = [x for x in listed if x["id"] == sid][0]
    assert s["match"] == {"type": "absence", "body.reason": ["unexplained", "sick"]}, s
    assert s["reason"] == "校外研学：全年级外出" and s["author"] == "supervisor-01", s
    assert s["starts"] == now and s["ends"] == now + HOUR and s["created"] == now, s
    assert "expired" not in s

    r = expire(sup, sid)
    assert r.get("op") == "ack" and r.get("silence") == sid, r
    r = expire(sup, sid)                                    # again: a retry
    assert r.get("op") == "ack" and r.get("silence") == sid, r
    s = [x for x in query(sup, "silences")["silences"] if x["id"] == sid][0]
    assert s["expired"] == now, s

    # nothing fires for the silenced case; the next absence routes as usual
    no_push(edu, "case", lambda m: m.get("case") == case, wait=0.3, why="nothing fires at the end")
    _, _, case2 = absence(school)
    wait_push(edu, "case", lambda m: m.get("case") == case2)
    receiver.wait("/edu", n_before + 2, timeout=5)
    clock(sup, advance=2 * HOUR)
    no_push(edu, "case", lambda m: m.get("case") == case, wait=0.3, why="nothing fires later")
    assert "silenced" not in case_events(sup, case2)[0]


def test_silenced_event_joining_an_assigned_case_tells_nobody(make_clock_broker, tmp_path,
                                                              connect, receiver):
    """A held event of a case that already has an open assignment joins it, but the
    desk is not pushed the case again and no notice leaves."""
    b = start(make_clock_broker, tmp_path, receiver)
    sup = connect(b, login="supervisor-01")
    edu = connect(b, login="edu-desk")
    school = connect(b, login="school-0042")
    now = clock(sup)
    child = uid("child")
    _, ev1, case = absence(school, child)
    first = wait_push(edu, "case", lambda m: m.get("case") == case)
    receiver.wait("/edu", 1, timeout=5)
    sid = silence_ok(sup, {"type": "absence"}, now=now)
    _, ev2, case2 = absence(school, child)
    assert case2 == case
    no_push(edu, "case", lambda m: m.get("case") == case, why="a held event pushes nothing")
    assert not receiver.quiet("/edu", 0.3)
    events = case_events(sup, case)
    assert [(e["id"], e.get("silenced")) for e in events] == [(ev1, None), (ev2, sid)], events
    q = query(sup, "case", case=case)
    assert [a["id"] for a in q["assignments"]] == [first["id"]], q["assignments"]
    # the assignment itself goes on: its desk still acknowledges it
    r = edu.request({"v": 1, "op": "case_ack", "id": edu.new_id(), "assignment": first["id"],
                     "by": "officer-1"})
    assert r.get("op") == "ack", r


def test_silence_holds_by_receive_time_until_ends(make_clock_broker, tmp_path, connect):
    b = start(make_clock_broker, tmp_path)
    sup = connect(b, login="supervisor-01")
    edu = connect(b, login="edu-desk")
    school = connect(b, login="school-0042")
    now = clock(sup)
    sid = silence_ok(sup, {"type": "absence"}, starts=now + 10 * MIN, ends=now + 30 * MIN)

    _, _, c1 = absence(school)                              # before starts: routed
    wait_push(edu, "case", lambda m: m.get("case") == c1)
    clock(sup, advance=10 * MIN)                            # at starts: held
    # `at` far in the past or future does not matter: the receive time does
    _, _, c2 = send_event(school, "absence", h.absence_body(uid("child")), at=now - 5 * DAY)
    no_push(edu, "case", lambda m: m.get("case") == c2, why="held from starts")
    assert case_events(sup, c2)[0].get("silenced") == sid
    clock(sup, advance=20 * MIN - 1)                        # 1 ms before ends: held
    _, _, c3 = absence(school)
    no_push(edu, "case", lambda m: m.get("case") == c3, why="held until ends")
    clock(sup, advance=1)                                   # at ends: over
    _, _, c4 = send_event(school, "absence", h.absence_body(uid("child")), at=now + 10 * MIN)
    wait_push(edu, "case", lambda m: m.get("case") == c4)
    assert "silenced" not in case_events(sup, c4)[0]
    no_push(edu, "case", lambda m: m.get("case") in (c2, c3), wait=0.3,
            why="nothing fires for what was held when the silence ends")


def test_restart_keeps_silences_and_trail_records(make_clock_broker, tmp_path, connect):
    b = start(make_clock_broker, tmp_path)
    sup = connect(b, login="supervisor-01")
    now = clock(sup)
    sid = silence_ok(sup, {"type": "absence"}, ends=now + 2 * HOUR, reason="春游")
    sid2 = silence_ok(sup, {"type": "absence", "severity": "low"}, ends=now + 2 * HOUR,
                      reason="holiday")
    assert expire(sup, sid2).get("op") == "ack"
    b.restart()
    sup = connect(b, login="supervisor-01")
    edu = connect(b, login="edu-desk")
    school = connect(b, login="school-0042")
    clock(sup, set=now + MIN)
    listed = query(sup, "silences")["silences"]
    assert [s["id"] for s in listed] == [sid, sid2] and "expired" in listed[1], listed
    _, _, case = absence(school)
    no_push(edu, "case", lambda m: m.get("case") == case, why="the silence survived the restart")
    assert case_events(sup, case)[0].get("silenced") == sid
    sid3 = silence_ok(sup, {"type": "absence"}, now=now + MIN)
    assert sid3 == "sil-000003", "ids go on after a restart"
    r = sup.request({"v": 1, "op": "query", "id": sup.new_id(), "what": "verify"})
    assert r.get("op") == "result" and r.get("intact") is True, r.get("problem")
    b.stop()

    trail = [rec for _, rec in read_db(b.workdir / "data", "trail")]
    made = [r for r in trail if r["kind"] == "silence_created"]
    ended = [r for r in trail if r["kind"] == "silence_expired"]
    assert [(r["obj"], r["actor"], r["ref"], r["db"]) for r in made] == [
        (sid, "supervisor-01", "春游", "silences"), (sid2, "supervisor-01", "holiday", "silences"),
        (sid3, "supervisor-01", "school trip", "silences")], made
    assert [(r["obj"], r["actor"], r["ref"]) for r in ended] == [(sid2, "supervisor-01", "holiday")]
    assert any(r["kind"] == "read" and r["ref"] == "silences" for r in trail)
    stored = dict(read_db(b.workdir / "data", "silences"))
    assert set(stored) == {sid.encode(), sid2.encode(), sid3.encode()}
    ev = [rec for _, rec in read_db(b.workdir / "data", "events") if rec.get("silenced")]
    assert [e["silenced"] for e in ev] == [sid]


# ---------------------------------------------------------------- the CLI

def cli(b, agent, *args):
    cmd = [str(CAREHUB), "-b", b.endpoint, "-a", agent, "--wait", "10"] + [str(a) for a in args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr
    return r


def test_cli_silence_add_list_expire(make_clock_broker, tmp_path, connect):
    if not (CAREHUB.is_file() and os.access(CAREHUB, os.X_OK)):
        pytest.fail(f"{CAREHUB} not found: build it or set CAREHUB_BIN_DIR", pytrace=False)
    b = start(make_clock_broker, tmp_path)
    sup = connect(b, login="supervisor-01")
    edu = connect(b, login="edu-desk")
    school = connect(b, login="school-0042")
    now = clock(sup)

    r = cli(b, "supervisor-01", "silence", "add", "--type", "absence", "--match",
            "body.reason=unexplained,sick", "--match", "body.consecutive_days=<3", "--for", "2h",
            "--reason", "秋游 autumn outing")
    assert r.returncode == 0, r.stderr
    sid = r.stdout.strip()
    assert sid == "sil-000001", r.stdout
    r = cli(b, "supervisor-01", "silence", "add", "--type", "online_risk", "--match",
            "body.risk=gambling", "--starts", str(now + HOUR), "--ends", str(now + 3 * HOUR),
            "--reason", "game week", "--json")
    assert r.returncode == 0, r.stderr
    ack = json.loads(r.stdout)
    assert ack["op"] == "ack" and ack["silence"] == "sil-000002", ack

    # refused by the broker: exit 65 with the reason
    r = cli(b, "supervisor-01", "silence", "add", "--type", "online_risk", "--for", "1h",
            "--reason", "x")
    assert r.returncode == 65 and DANGER in r.stderr, (r.returncode, r.stderr)
    r = cli(b, "supervisor-01", "silence", "add", "--type", "absence,mandatory_report", "--for",
            "1h", "--reason", "x")
    assert r.returncode == 65 and DANGER in r.stderr, (r.returncode, r.stderr)
    r = cli(b, "supervisor-01", "silence", "add", "--type", "absence", "--for", "91d",
            "--reason", "x")
    assert r.returncode == 65 and "90 days" in r.stderr, (r.returncode, r.stderr)
    r = cli(b, "police-desk", "silence", "add", "--type", "absence", "--for", "1h", "--reason", "x")
    assert r.returncode == 65 and "forbidden" in r.stderr, r.stderr
    # usage errors, before anything is sent
    for args in (["silence"], ["silence", "add", "--type", "absence", "--for", "1h"],
                 ["silence", "add", "--type", "absence", "--reason", "x"],
                 ["silence", "add", "--type", "absence", "--reason", "x", "--for", "1h",
                  "--ends", "now"],
                 ["silence", "add", "--type", "absence", "--reason", "x", "--for", "soon"],
                 ["silence", "add", "--type", "absence", "--reason", "x", "--for", "1h",
                  "--match", "severity"],
                 ["silence", "list", "--reason", "x"], ["silence", "expire"],
                 ["silence", "expire", "bad id"], ["silence", "mute"]):
        r = cli(b, "supervisor-01", *args)
        assert r.returncode == 64, (args, r.returncode, r.stderr)

    # the silence works
    _, _, case = send_event(school, "absence", h.absence_body(uid("child")))
    no_push(edu, "case", lambda m: m.get("case") == case, why="silenced from the CLI")
    assert case_events(sup, case)[0].get("silenced") == sid
    r = cli(b, "supervisor-01", "case", case)
    assert r.returncode == 0 and f"silenced={sid}" in r.stdout, (r.stdout, r.stderr)

    r = cli(b, "supervisor-01", "silence", "list", "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(ln) for ln in r.stdout.splitlines() if ln.strip()]
    assert [x["id"] for x in rows] == [sid, "sil-000002"], rows
    assert rows[0]["match"] == {"type": "absence", "body.reason": ["unexplained", "sick"],
                                "body.consecutive_days": "<3"}, rows[0]
    assert rows[0]["reason"] == "秋游 autumn outing" and rows[0]["author"] == "supervisor-01"
    assert rows[1]["starts"] == now + HOUR and rows[1]["ends"] == now + 3 * HOUR, rows[1]
    assert abs(rows[0]["ends"] - rows[0]["starts"] - 2 * HOUR) < 60_000, rows[0]
    r = cli(b, "supervisor-01", "silence", "list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:2] == ["ID", "STATE"], lines
    assert lines[1].split()[:2] == [sid, "active"] and "秋游 autumn outing" in lines[1], lines
    assert lines[2].split()[:2] == ["sil-000002", "pending"], lines

    r = cli(b, "supervisor-01", "silence", "expire", sid)
    assert r.returncode == 0 and r.stdout.strip() == f"{sid} expired", (r.stdout, r.stderr)
    r = cli(b, "supervisor-01", "silence", "expire", "sil-000404")
    assert r.returncode == 65 and "not_found" in r.stderr, r.stderr
    r = cli(b, "supervisor-01", "silence", "list")
    assert r.stdout.splitlines()[1].split()[:2] == [sid, "expired"], r.stdout
    _, _, case2 = send_event(school, "absence", h.absence_body(uid("child")))
    wait_push(edu, "case", lambda m: m.get("case") == case2)
