"""Routing and assignments: workflows (CONFIG.md), `case` delivery, case_ack and
case_update (PROTOCOL §5), outcomes to the reporters (§6).

Tests of workflow matching write their own configuration and run their own
broker; the tests of delivery, case_ack/case_update and outcomes share one
broker with the standard workflows (CHILD_IN_DANGER, REPORT_TO_POLICE), each on
its own case (a fresh child id), filtering pushes by case. Brokers run with the
virtual clock (`--test-clock`). The tests talk to them as outside agents would:
agency desks (role agency) that receive `case` pushes, schools and reporters
that send events and receive outcomes.
"""

import time

import pytest

import carehub_harness as h
from carehub_harness import assert_nack, uid
from routing_harness import (  # noqa: F401  (fixtures)
    ClockBroker, assert_assignment_ack, case_ack, case_update, check_case_msg, critical_report,
    make_clock_broker, no_push, pushes, routing_config, send_event, wait_push,
)

MIN = 60_000
HOUR = 3_600_000

CHILD_IN_DANGER = {
    "name": "child-in-danger",
    "match": {"type": "mandatory_report", "severity": "critical"},
    "assign": [
        {"agency": "police", "ack_within": "15m"},
        {"agency": "civil_affairs", "ack_within": "1h"},
        {"agency": "education", "ack_within": "30m"},
    ],
}
REPORT_TO_POLICE = {"name": "report", "match": {"type": "mandatory_report"},
                    "assign": [{"agency": "police", "ack_within": "1h"}]}


def of(case):
    """Predicate: a push about this case (a shared broker also re-delivers other tests'
    pending assignments after a hello)."""
    return lambda m: m.get("case") == case


@pytest.fixture(scope="module")
def shared(tmp_path_factory, carehub_bin):
    """One broker for the tests that need only the standard workflows: each of them
    works on its own case (a fresh child id) and filters pushes by case."""
    workdir = tmp_path_factory.mktemp("routing-shared")
    cfg = routing_config(workdir, workflows=[CHILD_IN_DANGER, REPORT_TO_POLICE])
    b = ClockBroker(workdir, config=cfg, name="carehubd(routing-shared)")
    b.start()
    yield b
    problems = b.finish()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def sb(shared):
    """The shared broker, checked alive after the test."""
    if shared not in h.CURRENT_BROKERS:
        h.CURRENT_BROKERS.append(shared)
    assert shared.running(), f"the shared broker is not running:\n{shared.log_tail()}"
    yield shared
    if not shared.running():
        shared.expect_clean_exit = False
        pytest.fail(f"carehubd died during this test\n{shared.log_tail()}", pytrace=False)


def start(make_clock_broker, tmp_path, workflows, **kw):
    cfg = routing_config(tmp_path / "b", workflows=workflows, **kw)
    return make_clock_broker(config=cfg, name="b")


def desks(connect, broker, *names):
    return [connect(broker, login=n) for n in names]


# ---------------------------------------------------------------- workflows

def test_critical_report_fans_out_to_police_civil_affairs_education(sb, connect):
    b = sb
    police, police2, civil, edu, health = desks(connect, b, "police-desk", "police-desk-2",
                                                "civil-desk", "edu-desk", "health-desk")
    rep = connect(b, login="reporter-01")
    body = critical_report(uid("child"))
    at = h.now_ms() - 5000
    mid, ev, case = send_event(rep, "mandatory_report", body, at=at)

    got = {}
    for desk, agency, within in ((police, "police", 15 * MIN), (civil, "civil_affairs", HOUR),
                                 (edu, "education", 30 * MIN)):
        m = wait_push(desk, "case", of(case), what=f"assignment for {agency}")
        check_case_msg(m, case=case, agency=agency, type="mandatory_report", severity="critical",
                       n_events=1, events_total=1)
        e = m["events"][0]
        assert e["event"] == ev and e["type"] == "mandatory_report" and e["at"] == at, e
        assert e["body"] == body, f"the event body came back changed: {e['body']!r} != {body!r}"
        assert m["ack_by"] - m["opened"] == within, \
            f"{agency}: ack_by - opened = {m['ack_by'] - m['opened']} ms, expected ack_within {within} ms"
        got[agency] = m
    ids = {m["id"] for m in got.values()}
    assert len(ids) == 3, f"each agency needs its own assignment id: {ids}"
    assert ev not in ids and case not in ids
    assert len({m["opened"] for m in got.values()}) == 1, "opened is the case's, the same for all"
    # every connected desk of an agency receives it
    m2 = wait_push(police2, "case", of(case), what="second police desk")
    assert m2["id"] == got["police"]["id"], (m2, got["police"])
    # one assignment each, nothing more
    for d in (police, police2, civil, edu):
        no_push(d, "case", of(case), wait=0.2, why="one case push per assignment")
    no_push(health, "case", of(case), wait=0.05, why="health is in no workflow")


def test_first_matching_workflow_only(make_clock_broker, tmp_path, connect):
    wfs = [{"name": "w1", "match": {"type": "absence"}, "assign": [{"agency": "education"}]},
           {"name": "w2", "match": {"type": "absence"}, "assign": [{"agency": "police"}]}]
    b = start(make_clock_broker, tmp_path, wfs)
    edu, police, civil = desks(connect, b, "edu-desk", "police-desk", "civil-desk")
    school = connect(b, login="school-0042")
    _, _, case = send_event(school, "absence", h.absence_body())
    check_case_msg(wait_push(edu), case=case, agency="education", type="absence", severity="normal")
    no_push(police, wait=0.4, why="w2 matches too, but w1 matched first without continue")
    no_push(civil, wait=0.1, why="a workflow matched: no fallback")


def test_continue_applies_following_matching_workflows(make_clock_broker, tmp_path, connect):
    wfs = [
        {"name": "w1", "match": {"type": "absence"}, "continue": True,
         "assign": [{"agency": "education", "ack_within": "2h"}]},
        {"name": "w2-online", "match": {"type": "online_risk"}, "assign": [{"agency": "health"}]},
        {"name": "w3", "match": {"type": "absence", "body.reason": "unexplained"},
         "assign": [{"agency": "police"}, {"agency": "education", "ack_within": "5m"}]},
        {"name": "w4", "match": {"type": "absence"}, "assign": [{"agency": "court"}]},
    ]
    b = start(make_clock_broker, tmp_path, wfs)
    edu, police, court, health, civil = desks(connect, b, "edu-desk", "police-desk", "court-desk",
                                              "health-desk", "civil-desk")
    school = connect(b, login="school-0042")
    _, _, case = send_event(school, "absence", h.absence_body())
    m_edu = check_case_msg(wait_push(edu), case=case, agency="education")
    check_case_msg(wait_push(police), case=case, agency="police")
    no_push(edu, wait=0.4, why="education is named by w1 and w3: one assignment per agency")
    assert m_edu["ack_by"] - m_edu["opened"] == 2 * HOUR, \
        "the first workflow that names an agency sets its deadline"
    no_push(court, wait=0.1, why="w3 has no continue: w4 does not apply")
    no_push(health, wait=0.1, why="w2 does not match")
    no_push(civil, wait=0.1, why="workflows matched: no fallback")


def test_no_match_goes_to_fallback_agency(make_clock_broker, tmp_path, connect):
    wfs = [{"name": "online", "match": {"type": "online_risk"}, "assign": [{"agency": "health"}]}]
    b = start(make_clock_broker, tmp_path, wfs,
              broker={"fallback_agency": "court", "default_ack_within": "2h"})
    court, civil, health = desks(connect, b, "court-desk", "civil-desk", "health-desk")
    school = connect(b, login="school-0042")
    _, ev, case = send_event(school, "absence", h.absence_body())
    m = check_case_msg(wait_push(court), case=case, agency="court", type="absence", n_events=1)
    assert m["events"][0]["event"] == ev
    assert m["ack_by"] - m["opened"] == 2 * HOUR, "fallback assignments get default_ack_within"
    no_push(civil, wait=0.3, why="fallback_agency is court")
    no_push(health, wait=0.1)


def test_event_without_child_id_opens_own_case_and_falls_back(make_clock_broker, tmp_path, connect):
    b = start(make_clock_broker, tmp_path, [])
    civil = connect(b, login="civil-desk")
    mon = connect(b, login="monitor-01")
    _, _, c1 = send_event(mon, "online_risk", h.online_risk_body())
    _, _, c2 = send_event(mon, "online_risk", h.online_risk_body())
    assert c1 != c2, "an event without child.id opens a case of its own"
    got = {wait_push(civil)["case"], wait_push(civil)["case"]}
    assert got == {c1, c2}


def test_assign_empty_records_case_without_assignment(make_clock_broker, tmp_path, connect):
    wfs = [{"name": "first-day", "match": {"type": "absence", "body.consecutive_days": "<3"},
            "assign": []}]
    b = start(make_clock_broker, tmp_path, wfs)
    civil, edu, police = desks(connect, b, "civil-desk", "edu-desk", "police-desk")
    school = connect(b, login="school-0042")
    _, ev, case = send_event(school, "absence", h.absence_body(consecutive_days=1))
    assert case and ev
    for d in (civil, edu, police):
        no_push(d, wait=0.3, why="assign: [] records the case without assigning it (and no fallback)")


def test_severity_match_uses_default_normal(make_clock_broker, tmp_path, connect):
    """PROTOCOL §8: severity defaults to normal, so an event without one is a normal
    event for `match: {severity: normal}` (CONFIG.md workflows)."""
    wfs = [{"name": "normal", "match": {"type": "absence", "severity": "normal"},
            "assign": [{"agency": "education"}]}]
    b = start(make_clock_broker, tmp_path, wfs)
    edu, civil = desks(connect, b, "edu-desk", "civil-desk")
    school = connect(b, login="school-0042")
    body = h.absence_body()
    assert "severity" not in body
    _, _, case = send_event(school, "absence", body)
    fell_back = pushes(civil, wait=0.5)
    got = pushes(edu, wait=0.1)
    assert got and not fell_back, (
        f"an absence without `severity` (default normal, PROTOCOL §8) did not match "
        f"`severity: normal`: education got {len(got)} case push(es), the fallback agency got "
        f"{[m['agency'] for m in fell_back]}")
    check_case_msg(got[0], case=case, severity="normal")


def test_absence_run_one_case_per_child(make_clock_broker, tmp_path, connect):
    wfs = [
        {"name": "first-days", "match": {"type": "absence", "body.consecutive_days": "<3"},
         "assign": []},
        {"name": "long-absence", "match": {"type": "absence", "body.consecutive_days": ">=3"},
         "continue": True, "assign": [{"agency": "education", "ack_within": "1d"}]},
        {"name": "very-long", "match": {"type": "absence", "body.consecutive_days": ">=5"},
         "assign": [{"agency": "police", "ack_within": "1d"}, {"agency": "education"}]},
    ]
    b = start(make_clock_broker, tmp_path, wfs)
    edu, police, civil = desks(connect, b, "edu-desk", "police-desk", "civil-desk")
    school = connect(b, login="school-0042")
    child = uid("child")

    _, ev1, case = send_event(school, "absence", h.absence_body(child, consecutive_days=1,
                                                                  date="2025-03-03", severity="high"))
    no_push(edu, wait=0.3, why="day 1: assign: []")
    _, ev3, case3 = send_event(school, "absence", h.absence_body(child, consecutive_days=3,
                                                                   date="2025-03-05", severity="low"))
    assert case3 == case, "absences of one child join one case (one child, one case)"
    m = check_case_msg(wait_push(edu, what="day 3"), case=case, agency="education", type="absence",
                       severity="high", events_total=2, n_events=2)
    assert [e["event"] for e in m["events"]] == [ev1, ev3], "events: the case's events, newest last"
    a_edu = m["id"]
    no_push(police, wait=0.2, why="day 3 is not >=5")

    # day 5: police comes in; education (not acknowledged) sees the case again, same assignment
    _, ev5, case5 = send_event(school, "absence", h.absence_body(child, consecutive_days=5,
                                                                   date="2025-03-07"))
    assert case5 == case
    m5 = check_case_msg(wait_push(edu, what="day 5 re-delivery"), case=case, events_total=3)
    assert m5["id"] == a_edu, "an agency gets one assignment per case; a new event re-delivers it"
    assert [e["event"] for e in m5["events"]] == [ev1, ev3, ev5]
    mp = check_case_msg(wait_push(police, what="day 5"), case=case, agency="police", events_total=3)
    no_push(edu, wait=0.3, why="one push for day 5")

    # acknowledged: a further day brings nothing new to education or police
    for desk, a in ((edu, a_edu), (police, mp["id"])):
        mid, r = case_ack(desk, a)
        assert_assignment_ack(r, mid, a, case)
    send_event(school, "absence", h.absence_body(child, consecutive_days=6, date="2025-03-08"))
    no_push(edu, wait=0.4, why="acknowledged, and education already has its assignment")
    no_push(police, wait=0.1, why="acknowledged, and police already has its assignment")
    no_push(civil, wait=0.1, why="the case has assignments: no fallback")


def test_events_limited_by_max_message_bytes(make_clock_broker, tmp_path, connect):
    limit = 16384
    wfs = [{"name": "all", "match": {"type": "absence"}, "assign": [{"agency": "education"}]}]
    b = start(make_clock_broker, tmp_path, wfs, broker={"max_message_bytes": limit})
    edu = connect(b, login="edu-desk")
    school = connect(b, login="school-0042")
    child = uid("child")
    evs = []
    for i in range(7):
        _, ev, _ = send_event(school, "absence", h.absence_body(child, consecutive_days=i + 1,
                                                                  note=f"{i}" + "x" * 3000))
        evs.append(ev)
    edu.pushes.clear()
    # a fresh connection: the pending assignment on hello, as one frame we can measure
    d2 = connect(b)
    d2.login("edu-desk")
    frames = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not frames:
        if d2.sock.poll(200):
            raw = d2.sock.recv()
            msg = h.unpack(raw)
            if msg.get("op") == "case":
                frames.append((raw, msg))
    assert frames, "no case pushed after hello"
    raw, m = frames[0]
    assert len(raw) <= limit, f"case push is {len(raw)} bytes, over max_message_bytes {limit}"
    check_case_msg(m, events_total=7)
    got = [e["event"] for e in m["events"]]
    assert 1 <= len(got) < 7, f"{len(got)} events of ~3 KB cannot fit in {limit} bytes"
    assert got == evs[-len(got):], "events holds the newest events, newest last"


# ---------------------------------------------------------------- delivery

def test_redelivered_after_hello_until_acknowledged(sb, connect):
    b = sb
    police, civil = desks(connect, b, "police-desk", "civil-desk")
    rep = connect(b, login="reporter-01")
    _, _, case = send_event(rep, "mandatory_report", critical_report(uid("child")))
    a_pol = wait_push(police, "case", of(case))["id"]
    a_civ = wait_push(civil, "case", of(case))["id"]
    mid, r = case_ack(civil, a_civ)
    assert_assignment_ack(r, mid, a_civ, case)
    police.close()
    civil.close()

    p2 = connect(b, login="police-desk")
    m = check_case_msg(wait_push(p2, "case", of(case), what="re-delivery after hello"), case=case,
                       agency="police")
    assert m["id"] == a_pol
    c2 = connect(b, login="civil-desk")
    no_push(c2, "case", of(case), wait=0.3, why="civil_affairs acknowledged its assignment")
    # hello again on the same connection: delivered again
    p2.login("police-desk")
    assert wait_push(p2, "case", of(case), what="second hello")["id"] == a_pol


def test_redelivered_when_new_event_joins(sb, connect):
    b = sb
    police, civil, edu = desks(connect, b, "police-desk", "civil-desk", "edu-desk")
    rep = connect(b, login="reporter-01")
    school = connect(b, login="school-0042")
    child = uid("child")
    _, ev1, case = send_event(rep, "mandatory_report", critical_report(child))
    a = {d.agent: wait_push(d, "case", of(case))["id"] for d in (police, civil, edu)}
    mid, r = case_ack(edu, a["edu-desk"])
    assert_assignment_ack(r, mid, a["edu-desk"], case)

    _, ev2, case2 = send_event(school, "mandatory_report", h.mandatory_report_body(child))
    assert case2 == case, "a second report about the same child joins the case"
    for d in (police, civil):
        m = check_case_msg(wait_push(d, "case", of(case), what="new event joined"), case=case,
                           events_total=2,
                           severity="critical")
        assert m["id"] == a[d.agent]
        assert [e["event"] for e in m["events"]] == [ev1, ev2]
    no_push(edu, "case", of(case), wait=0.3, why="education acknowledged")


def test_redeliver_every(make_clock_broker, tmp_path, connect):
    b = start(make_clock_broker, tmp_path, [CHILD_IN_DANGER], broker={"redeliver_every": "1s"})
    police, civil = desks(connect, b, "police-desk", "civil-desk")
    rep = connect(b, login="reporter-01")
    send_event(rep, "mandatory_report", critical_report(uid("child")))
    a_pol = wait_push(police)["id"]
    a_civ = wait_push(civil)["id"]
    case_ack(civil, a_civ)
    again = wait_push(police, timeout=3.0, what="redeliver_every: 1s")
    assert again["id"] == a_pol
    got = pushes(civil, wait=1.5)
    assert not got, f"an acknowledged assignment is not re-delivered: {got}"


def test_pending_assignments_and_outcomes_after_broker_restart(make_clock_broker, tmp_path, connect):
    b = start(make_clock_broker, tmp_path, [CHILD_IN_DANGER, REPORT_TO_POLICE])
    police, civil = desks(connect, b, "police-desk", "civil-desk")
    rep = connect(b, login="reporter-01")
    _, ev, case = send_event(rep, "mandatory_report", critical_report(uid("child")))
    first = wait_push(police, "case", of(case))
    a_civ = wait_push(civil, "case", of(case))["id"]
    case_ack(civil, a_civ)
    # a second case, resolved; its outcome not yet confirmed by the reporter
    ref2, ev2, case2 = send_event(rep, "mandatory_report", h.mandatory_report_body(uid("child")))
    a2 = wait_push(police, "case", of(case2))["id"]
    mid, r = case_update(police, a2, "resolved", note="settled")
    assert_assignment_ack(r, mid, a2, case2)
    o = wait_push(rep, "outcome", of(case2))
    for a in (police, civil, rep):
        a.close()
    rc = b.restart()
    assert rc == 0, f"SIGTERM exit code {rc}"
    p2 = connect(b, login="police-desk")
    m = check_case_msg(wait_push(p2, "case", of(case), what="pending after restart"), case=case,
                       agency="police", events_total=1)
    assert m["id"] == first["id"] and m["ack_by"] == first["ack_by"] and m["opened"] == first["opened"]
    assert m["events"] == first["events"]
    no_push(p2, "case", of(case2), wait=0.1, why="resolved")
    c2 = connect(b, login="civil-desk")
    no_push(c2, "case", of(case), wait=0.3, why="acknowledged before the restart")
    r2 = connect(b, login="reporter-01")
    again = outcome_check(wait_push(r2, "outcome", of(case2), what="outcome after restart"), ev=ev2,
                          ref=ref2, case=case2, note="settled")
    assert again["id"] == o["id"]


# ---------------------------------------------------------------- case_ack / case_update

@pytest.fixture
def fanned(sb, connect):
    """A critical report assigned to police, civil_affairs and education; their desks
    connected; returns a namespace."""
    b = sb
    police, civil, edu, court = desks(connect, b, "police-desk", "civil-desk", "edu-desk",
                                      "court-desk")
    rep = connect(b, login="reporter-01")
    mid, ev, case = send_event(rep, "mandatory_report", critical_report(uid("child")))

    class NS:
        pass
    ns = NS()
    ns.b, ns.police, ns.civil, ns.edu, ns.court, ns.rep = b, police, civil, edu, court, rep
    ns.mid, ns.ev, ns.case = mid, ev, case
    ns.a = {"police": wait_push(police, "case", of(case))["id"],
            "civil_affairs": wait_push(civil, "case", of(case))["id"],
            "education": wait_push(edu, "case", of(case))["id"]}
    return ns


def test_case_ack_twice_is_acked_both_times(fanned):
    a = fanned.a["police"]
    for _ in range(2):
        mid, r = case_ack(fanned.police, a, by="officer-7")
        assert_assignment_ack(r, mid, a, fanned.case)
    # the same message id resent (a retry) is fine too
    mid, r = case_ack(fanned.police, a, id="ack-retry-1")
    assert_assignment_ack(r, mid, a, fanned.case)
    mid, r = case_ack(fanned.police, a, id="ack-retry-1")
    assert_assignment_ack(r, mid, a, fanned.case)


def test_case_update_progress_then_resolved(fanned):
    a = fanned.a["police"]
    for status in ("in_progress", "in_progress", "resolved", "resolved"):
        mid, r = case_update(fanned.police, a, status, note=f"{status} note")
        assert_assignment_ack(r, mid, a, fanned.case)
    mid, r = case_update(fanned.police, a, "in_progress")
    assert_nack(r, "conflict", id=mid)


@pytest.mark.parametrize("final", ["resolved", "referred", "declined"])
def test_final_status_retry_acked_change_conflict(fanned, final):
    a = fanned.a["education"]
    to = "court" if final == "referred" else None
    mid, r = case_update(fanned.edu, a, final, note="first", to=to)
    assert_assignment_ack(r, mid, a, fanned.case)
    mid, r = case_update(fanned.edu, a, final, note="first", to=to)
    assert_assignment_ack(r, mid, a, fanned.case)   # the same final status again: a retry
    for other in ("resolved", "referred", "declined", "in_progress"):
        if other == final:
            continue
        mid, r = case_update(fanned.edu, a, other, note="changed",
                             to="procuratorate" if other == "referred" else None)
        assert_nack(r, "conflict", id=mid)


def test_in_progress_implies_acknowledgement(fanned):
    a = fanned.a["police"]
    mid, r = case_update(fanned.police, a, "in_progress", note="on our way")
    assert_assignment_ack(r, mid, a, fanned.case)
    fanned.police.login("police-desk")
    no_push(fanned.police, "case", of(fanned.case), wait=0.3,
            why="in_progress implies the acknowledgement: no re-delivery")


def test_other_agency_assignment_forbidden(fanned):
    a = fanned.a["civil_affairs"]
    mid, r = case_ack(fanned.police, a)
    assert_nack(r, "forbidden", id=mid)
    mid, r = case_update(fanned.police, a, "resolved", note="not ours to close")
    assert_nack(r, "forbidden", id=mid)
    # and nothing changed: civil_affairs still has it open
    fanned.civil.login("civil-desk")
    assert wait_push(fanned.civil, "case", of(fanned.case))["id"] == a


def test_unknown_assignment_not_found(fanned):
    mid, r = case_ack(fanned.police, "no-such-assignment")
    assert_nack(r, "not_found", id=mid)
    mid, r = case_update(fanned.police, "no-such-assignment", "in_progress")
    assert_nack(r, "not_found", id=mid)


@pytest.mark.parametrize("agent", ["school-0042", "reporter-01", "monitor-01", "supervisor-01"])
def test_non_agency_case_ack_forbidden(fanned, connect, agent):
    a = connect(fanned.b, login=agent)
    mid, r = case_ack(a, fanned.a["police"])
    assert_nack(r, "forbidden", id=mid)
    mid, r = case_update(a, fanned.a["police"], "resolved")
    assert_nack(r, "forbidden", id=mid)


def test_referred_creates_assignment_for_target(fanned):
    a = fanned.a["police"]
    mid, r = case_update(fanned.police, a, "referred", note="guardianship: court", to="court")
    assert_assignment_ack(r, mid, a, fanned.case)
    m = check_case_msg(wait_push(fanned.court, "case", of(fanned.case), what="referral"), case=fanned.case, agency="court",
                       type="mandatory_report", severity="critical", events_total=1)
    assert m["id"] not in fanned.a.values(), "a referral is a new assignment"
    mid, r = case_ack(fanned.court, m["id"])
    assert_assignment_ack(r, mid, m["id"], fanned.case)


def test_referred_without_valid_target_refused(fanned):
    a = fanned.a["police"]
    mid = uid("upd")
    r = fanned.police.request({"v": 1, "op": "case_update", "id": mid, "assignment": a,
                               "status": "referred", "note": "no target"})
    assert_nack(r, None, codes={"invalid", "malformed"}, id=mid)
    mid, r = case_update(fanned.police, a, "referred", to="no_such_agency")
    assert_nack(r, None, codes={"invalid", "not_found"}, id=mid)
    # still open and changeable
    mid, r = case_update(fanned.police, a, "in_progress")
    assert_assignment_ack(r, mid, a, fanned.case)


def test_declined_goes_to_fallback_which_cannot_decline(sb, connect):
    b = sb
    police, civil, court = desks(connect, b, "police-desk", "civil-desk", "court-desk")
    rep = connect(b, login="reporter-01")
    _, _, case = send_event(rep, "mandatory_report", h.mandatory_report_body(uid("child")))
    a = wait_push(police, "case", of(case))["id"]
    no_push(civil, "case", of(case), wait=0.2)
    mid, r = case_update(police, a, "declined", note="not a police matter")
    assert_assignment_ack(r, mid, a, case)
    m = check_case_msg(wait_push(civil, "case", of(case), what="declined -> fallback"), case=case,
                       agency="civil_affairs")
    assert m["id"] != a
    mid, r = case_update(civil, m["id"], "declined", note="nor ours")
    assert_nack(r, "conflict", id=mid)
    mid, r = case_update(civil, m["id"], "referred", note="to court", to="court")
    assert_assignment_ack(r, mid, m["id"], case)
    wait_push(court, "case", of(case), what="fallback referred")


# ---------------------------------------------------------------- outcomes

def outcome_check(o, *, ev, ref, case, note):
    assert o.get("v") == 1 and o.get("op") == "outcome", o
    assert isinstance(o.get("id"), str) and h.ID_RE.match(o["id"]), o
    assert o.get("event") == ev, f"outcome event {o.get('event')!r}, expected {ev!r}: {o!r}"
    assert o.get("ref") == ref, f"outcome ref {o.get('ref')!r}, expected the agent's own id {ref!r}: {o!r}"
    assert o.get("case") == case, o
    assert o.get("status") == "resolved", o
    assert o.get("note") == note, f"outcome note {o.get('note')!r}, expected {note!r}"
    return o


def test_outcome_to_every_reporter_until_received(sb, connect):
    b = sb
    police = connect(b, login="police-desk")
    rep = connect(b, login="reporter-01")
    school = connect(b, login="school-0042")
    child = uid("child")
    ref1, ev1, case = send_event(rep, "mandatory_report", h.mandatory_report_body(child))
    ref2, ev2, case2 = send_event(school, "mandatory_report", h.mandatory_report_body(child))
    assert case2 == case
    a = wait_push(police, "case", of(case))["id"]
    mid, r = case_update(police, a, "in_progress", note="visiting")
    assert_assignment_ack(r, mid, a, case)
    no_push(rep, "outcome", of(case), wait=0.3, why="not resolved yet")
    note = "Child placed with grandparents; guardian warned."
    mid, r = case_update(police, a, "resolved", note=note)
    assert_assignment_ack(r, mid, a, case)

    o1 = outcome_check(wait_push(rep, "outcome", of(case)), ev=ev1, ref=ref1, case=case, note=note)
    o2 = outcome_check(wait_push(school, "outcome", of(case)), ev=ev2, ref=ref2, case=case, note=note)
    no_push(rep, "outcome", of(case), wait=0.2, why="one outcome per event")

    # not confirmed: again after every hello (reporter); confirmed: never again (school)
    school.send({"v": 1, "op": "received", "id": o2["id"]})
    assert school.recv_reply(0.3) is None, "`received` gets no reply"
    rep.close()
    rep2 = connect(b, login="reporter-01")
    again = outcome_check(wait_push(rep2, "outcome", of(case), what="after hello"), ev=ev1, ref=ref1, case=case,
                          note=note)
    assert again["id"] == o1["id"], "the same outcome (same id) is re-sent"
    rep2.login("reporter-01")
    wait_push(rep2, "outcome", of(case), what="after a second hello")
    rep2.send({"v": 1, "op": "received", "id": again["id"]})
    assert rep2.recv_reply(0.3) is None, "`received` gets no reply"
    rep2.login("reporter-01")
    no_push(rep2, "outcome", of(case), wait=0.3, why="received")
    school.login("school-0042")
    no_push(school, "outcome", of(case), wait=0.1, why="received")


def test_outcome_only_when_every_assignment_final(fanned):
    ns = fanned
    mid, r = case_update(ns.police, ns.a["police"], "resolved", note="police: done")
    assert_assignment_ack(r, mid, ns.a["police"], ns.case)
    no_push(ns.rep, "outcome", of(ns.case), wait=0.2, why="civil_affairs and education are still open")
    mid, r = case_update(ns.edu, ns.a["education"], "referred", note="to court", to="court")
    assert_assignment_ack(r, mid, ns.a["education"], ns.case)
    a_court = wait_push(ns.court, "case", of(ns.case))["id"]
    mid, r = case_update(ns.civil, ns.a["civil_affairs"], "resolved", note="civil: done")
    assert_assignment_ack(r, mid, ns.a["civil_affairs"], ns.case)
    no_push(ns.rep, "outcome", of(ns.case), wait=0.2, why="the court's assignment is still open")
    mid, r = case_update(ns.court, a_court, "resolved", note="court: protection order")
    assert_assignment_ack(r, mid, a_court, ns.case)
    o = wait_push(ns.rep, "outcome", of(ns.case), what="every assignment final")
    outcome_check(o, ev=ns.ev, ref=ns.mid, case=ns.case, note="court: protection order")


def test_new_event_after_resolution_opens_new_case(sb, connect):
    b = sb
    police = connect(b, login="police-desk")
    rep = connect(b, login="reporter-01")
    child = uid("child")
    _, _, case = send_event(rep, "mandatory_report", h.mandatory_report_body(child))
    a = wait_push(police, "case", of(case))["id"]
    mid, r = case_update(police, a, "resolved", note="done")
    assert_assignment_ack(r, mid, a, case)
    wait_push(rep, "outcome", of(case))
    _, ev2, case2 = send_event(rep, "mandatory_report", h.mandatory_report_body(child))
    assert case2 != case, "a resolved case takes no new events: the same child gets a new case"
    m = check_case_msg(wait_push(police, "case", of(case2), what="new case"), case=case2, agency="police",
                       events_total=1)
    assert m["id"] != a and m["events"][0]["event"] == ev2


def test_each_event_of_a_reporter_gets_its_outcome(sb, connect):
    police = connect(sb, login="police-desk")
    rep = connect(sb, login="reporter-01")
    child = uid("child")
    ref1, ev1, case = send_event(rep, "mandatory_report", h.mandatory_report_body(child))
    ref2, ev2, case2 = send_event(rep, "mandatory_report", h.mandatory_report_body(child))
    assert case2 == case
    a = wait_push(police, "case", of(case))["id"]
    mid, r = case_update(police, a, "resolved", note="both reports handled")
    assert_assignment_ack(r, mid, a, case)
    got = sorted((wait_push(rep, "outcome", of(case)), wait_push(rep, "outcome", of(case))),
                 key=lambda o: o["event"])
    want = sorted(((ev1, ref1), (ev2, ref2)))
    for o, (ev, ref) in zip(got, want):
        outcome_check(o, ev=ev, ref=ref, case=case, note="both reports handled")
    assert got[0]["id"] != got[1]["id"], "one outcome (own id) per event"
    for o in got:
        rep.send({"v": 1, "op": "received", "id": o["id"]})
    rep.login("reporter-01")
    no_push(rep, "outcome", of(case), wait=0.3, why="both received")


def test_duplicate_event_routes_nothing_twice(sb, connect):
    police = connect(sb, login="police-desk")
    rep = connect(sb, login="reporter-01")
    body = h.mandatory_report_body(uid("child"))
    mid, ev, case = send_event(rep, "mandatory_report", body)
    first = wait_push(police, "case", of(case))
    h.assert_ack(rep.event("mandatory_report", body, id=mid), mid, duplicate=True)
    for m in pushes(police, "case", of(case), wait=0.3):
        assert m["id"] == first["id"] and m["events_total"] == 1, \
            f"a retried event is not routed again: {h.summarize(m, 300)}"


def test_referral_to_own_agency_does_not_strand_the_case(sb, connect):
    """`referred` means "a new assignment for `to`" (PROTOCOL §5). Referring a case to
    one's own agency cannot make one (one assignment per agency per case; docs/protocol.md:
    "the referral is recorded; no second assignment"); acking it anyway leaves the case
    with no open assignment: never resolved, nobody handling it, the reporter never told
    (§6). Refuse it, or make the assignment."""
    police = connect(sb, login="police-desk")
    rep = connect(sb, login="reporter-01")
    _, _, case = send_event(rep, "mandatory_report", h.mandatory_report_body(uid("child")))
    a = wait_push(police, "case", of(case))["id"]
    mid, r = case_update(police, a, "referred", note="to ourselves", to="police")
    if r.get("op") == "nack":
        assert_nack(r, None, codes={"invalid", "conflict"}, id=mid)
        return
    assert_assignment_ack(r, mid, a, case)
    new = pushes(police, "case", lambda m: m.get("case") == case and m["id"] != a, wait=0.5)
    assert new, (f"referred to police was acknowledged, but no new assignment was made: case {case} "
                 f"now has no open assignment (it can never be resolved and its reporter is never "
                 f"told); refuse a referral to an agency that cannot get a new assignment")


def test_declined_after_fallback_referred_goes_to_fallback_again(sb, connect):
    """declined: "the case goes to the fallback agency" (PROTOCOL §5) — also when the
    fallback agency already had its turn and referred the case on. docs/protocol.md
    decides "the case stays with that assignment", but that assignment is final: every
    assignment is final, none resolved, so the case is open forever and nobody has it."""
    police, civil, court = desks(connect, sb, "police-desk", "civil-desk", "court-desk")
    rep = connect(sb, login="reporter-01")
    _, _, case = send_event(rep, "mandatory_report", h.mandatory_report_body(uid("child")))
    a_pol = wait_push(police, "case", of(case))["id"]
    mid, r = case_update(police, a_pol, "declined", note="not police")
    assert_assignment_ack(r, mid, a_pol, case)
    a_civ = wait_push(civil, "case", of(case))["id"]
    mid, r = case_update(civil, a_civ, "referred", note="court should decide", to="court")
    assert_assignment_ack(r, mid, a_civ, case)
    a_court = wait_push(court, "case", of(case))["id"]
    mid, r = case_update(court, a_court, "declined", note="no proceedings")
    assert_assignment_ack(r, mid, a_court, case)
    got = pushes(civil, "case", of(case), wait=0.5)
    assert got, (f"court declined case {case}, but the fallback agency (civil_affairs) was not given "
                 f"the case again (its earlier assignment is final): every assignment of the case is "
                 f"now final and none resolved, so nobody handles it and the reporter is never told")


def test_referral_to_agency_whose_part_is_final_is_not_dropped(fanned):
    """education resolved its part; police then refers the case to education. PROTOCOL §5:
    `referred` makes "a new assignment for that agency". If the broker will not make a
    second one (one per agency per case; docs/protocol.md: "the referral is recorded; no
    second assignment"), it must refuse the referral rather than ack it and drop it:
    education is never told, and once the rest is final the case resolves with the
    referral's note as the outcome told to the reporter."""
    ns = fanned
    mid, r = case_update(ns.edu, ns.a["education"], "resolved", note="back at school")
    assert_assignment_ack(r, mid, ns.a["education"], ns.case)
    mid, r = case_update(ns.police, ns.a["police"], "referred", note="education should follow up",
                         to="education")
    if r.get("op") == "nack":
        assert_nack(r, None, codes={"invalid", "conflict"}, id=mid)
        return
    assert_assignment_ack(r, mid, ns.a["police"], ns.case)
    new = pushes(ns.edu, "case", lambda m: m.get("case") == ns.case and m["id"] != ns.a["education"],
                 wait=0.5)
    assert new, ("the referral to education was acknowledged but no assignment was made for "
                 "education (its earlier one is final): the referral is silently dropped")
