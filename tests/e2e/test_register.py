"""Issue 13 acceptance: the child register and the directors' visit rhythm (PROTOCOL §9,
§12; CONFIG "Additions of 2026-12"; DOMAIN.md duty 5; the project's wire notes for the
register, spec/register-wire.md).

Every broker here runs on the virtual clock (`--test-clock`): due times, reminders and
overdue events fall due when a test moves the clock, never on sleeps. Events carry `at`
on that clock (the broker clamps `at` to its receive time, so `at` in the virtual past
is a contact made then). visit_overdue events are read back as a supervisor would
(query what:"cases" type visit_overdue, then each case file), so "exactly once" means
exactly once in the store.
"""

import re
import time

import pytest

import carehub_harness as h
from carehub_harness import assert_nack, uid
from register_harness import (DAY, DIRECTORS, HOUR, MINUTE, PROMPT, SECOND, SETTLE, Clock,
                              enrol, enrolment_body, of_kind, overdue_events,
                              overdue_workflow, q, register_config, result, rhythm, send,
                              settled_overdue, summary, visit, visit_body, wait_overdue)
from routing_harness import (  # noqa: F401  (fixtures)
    CLOCK_AGENT, check_webhook, make_clock_broker, new_secret, pushes, receiver, sms_channel,
    wait_push, webhook_channel,
)

DIR_A, DIR_B = DIRECTORS
SUP = "supervisor-02"           # reads (CLOCK_AGENT, supervisor-01, moves the clock)


def start(make_clock_broker, tmp_path, name="b", **kw):
    kw.setdefault("rhythms", [rhythm(contact="1d", visit="3d", remind="0s")])
    cfg = register_config(tmp_path / name, **kw)
    return make_clock_broker(config=cfg, name=name)


class World:
    """A started broker with a clock, a supervisor and two directors connected."""

    def __init__(self, make_clock_broker, tmp_path, connect, name="b", **kw):
        self.b = start(make_clock_broker, tmp_path, name=name, **kw)
        self.connect = connect
        self.reconnect()

    def reconnect(self):
        c = self.connect
        self.clk = Clock(c(self.b, login=CLOCK_AGENT))
        self.sup = c(self.b, login=SUP)
        self.a = c(self.b, login=DIR_A)
        self.bdir = c(self.b, login=DIR_B)

    def overdue(self, child=None):
        return overdue_events(self.sup, child)


def new_child(prefix="RC"):
    return uid(prefix), "CANARY-儿童-" + uid("n")


def body_keys_ok(e):
    extra = set(e["body"]) - {"child", "village", "director", "kind", "due", "last", "severity",
                              "note"}
    assert not extra, f"visit_overdue body has fields the schema does not know: {e['body']!r}"
    assert set(e["body"]["child"]) == {"id"}, \
        f"visit_overdue names the child by id only (schema overdue_child): {e['body']!r}"


def assert_overdue(e, child, kind, due, village, director, last=None):
    """One visit_overdue event as §9 says: recorded by agent `broker`, body
    {child:{id}, village, director, kind, due, last?}."""
    body_keys_ok(e)
    b = e["body"]
    got = (e.get("type"), e.get("agent"), b["child"].get("id"), b.get("kind"), b.get("due"),
           b.get("village"), b.get("director"), b.get("last"))
    want = ("visit_overdue", "broker", child, kind, due, village, director, last)
    assert got == want, f"visit_overdue event (type, agent, child, kind, due, village, director, " \
                        f"last) is {got}, expected {want}: {h.summarize(e, 600)}"
    if last is None:
        assert "last" not in b, f"`last` must be absent when nothing was recorded: {b!r}"


# ============================================================================
# §9 from a Python agent: roles and schemas

def test_director_enrols_ack_after_commit_and_retry_is_duplicate(make_clock_broker, tmp_path,
                                                                 connect):
    w = World(make_clock_broker, tmp_path, connect)
    child, name = new_child()
    mid = uid("enr")
    msg = h.event_msg("enrolment", enrolment_body(child, name, "新河村", risk="elevated",
                                                  risk_reasons=["parent_disabled"],
                                                  note="祖母照看"), mid, at=w.clk.now)
    first = h.assert_ack(w.a.request(msg), mid)
    again = h.assert_ack(w.a.request(msg), mid, duplicate=True)
    assert again == first, f"a retry of an enrolment got {again}, the first ack said {first}"
    # the ack came after the commit: kill -9 at once, the retry is still a duplicate
    w.b.kill9()
    w.b.expect_clean_exit = False
    w.b.restart(same_endpoints=False)
    w.b.expect_clean_exit = True
    w.reconnect()
    assert h.assert_ack(w.a.request(msg), mid, duplicate=True) == first, \
        "an acknowledged enrolment was lost by kill -9 right after its ack"
    # the director visits: both visits join the child's visit case, not the enrolment's
    _, ev1, vcase = visit(w.a, child, "contact", w.clk.now, method="phone")
    _, ev2, vcase2 = visit(w.a, child, "home_visit", w.clk.now, method="in_person",
                           findings="家中一切正常", needs=["education"])
    assert vcase2 == vcase and ev2 != ev1, "two visits of one child must join one case (§9, §8)"
    assert vcase != first[1], "a visit joined the enrolment's case (join is per type)"
    evs = [e["id"] for e in result(q(w.sup, what="case", case=vcase), "case")["events"]]
    assert evs == [ev1, ev2], f"the visit case holds {evs}, expected {[ev1, ev2]}"
    enr = result(q(w.sup, what="case", case=first[1]), "case")
    assert [e["id"] for e in enr["events"]] == [first[0]] and enr["events"][0]["agent"] == DIR_A
    assert enr["events"][0]["body"]["child"]["name"] == name
    # a director is a mandated reporter too
    _, _, rcase = send(w.a, "mandatory_report", h.mandatory_report_body(child), w.clk.now)
    assert rcase not in (vcase, first[1])


ROLE_REFUSALS = [
    # agent, type, body factory
    ("school-0042", "enrolment", lambda c: enrolment_body(c, "张三", "新河村")),
    ("school-0042", "visit", lambda c: visit_body(c)),
    ("reporter-01", "enrolment", lambda c: enrolment_body(c, "张三", "新河村")),
    ("monitor-01", "visit", lambda c: visit_body(c)),
    ("police-desk", "visit", lambda c: visit_body(c)),
    (SUP, "enrolment", lambda c: enrolment_body(c, "张三", "新河村")),
    (SUP, "visit", lambda c: visit_body(c)),
    (DIR_A, "absence", lambda c: h.absence_body(c)),
    (DIR_A, "online_risk", lambda c: h.online_risk_body()),
]
OVERDUE_BODY = {"child": {"id": "RC-x"}, "village": "新河村", "director": DIR_A,
                "kind": "contact", "due": 1796140800000}


def test_refusals_by_role(make_clock_broker, tmp_path, connect):
    w = World(make_clock_broker, tmp_path, connect)
    child, _ = new_child()
    for agent, type_, make in ROLE_REFUSALS:
        a = connect(w.b, login=agent)
        mid = uid("bad")
        r = a.event(type_, make(child), id=mid, at=w.clk.now)
        assert r.get("code") == "forbidden", \
            f"{agent} sending {type_}: expected nack forbidden, got {h.summarize(r, 300)}"
        assert_nack(r, "forbidden", id=mid)
    # nobody may send visit_overdue: only the broker records it
    for agent in (DIR_A, DIR_B, "school-0042", "reporter-01", "monitor-01", "police-desk", SUP,
                  CLOCK_AGENT):
        a = connect(w.b, login=agent)
        mid = uid("bad")
        r = a.event("visit_overdue", dict(OVERDUE_BODY), id=mid, at=w.clk.now)
        assert r.get("code") == "forbidden", \
            f"{agent} sending visit_overdue: expected nack forbidden, got {h.summarize(r, 300)}"
        assert_nack(r, "forbidden", id=mid)
    # nothing was stored for any of them: no case exists but none
    for t in ("enrolment", "visit", "visit_overdue", "absence", "online_risk"):
        cs = result(q(w.sup, what="cases", type=t), "cases")["cases"]
        assert cs == [], f"a refused {t} was stored: {cs}"
    # and the refused child has no register entry
    rows = result(q(w.sup, what="register"), "register")["rows"]
    assert rows == [], f"refused enrolments made register rows: {rows}"


def _mut(body, path, value):
    cur = body
    keys = path.split("/")
    for k in keys[:-1]:
        cur = cur[k]
    if value is h.DELETE:
        del cur[keys[-1]]
    else:
        cur[keys[-1]] = value
    return body


E = lambda: enrolment_body("RC-1", "王芳", "新河村")    # noqa: E731
V = lambda: visit_body("RC-1", "home_visit")            # noqa: E731

INVALID = [
    ("enrolment-without-village", "enrolment", lambda: _mut(E(), "village", h.DELETE), "/body/village"),
    ("enrolment-village-empty", "enrolment", lambda: _mut(E(), "village", ""), "/body/village"),
    ("enrolment-category-empty", "enrolment", lambda: _mut(E(), "child/category", []),
     "/body/child/category"),
    ("enrolment-category-missing", "enrolment", lambda: _mut(E(), "child/category", h.DELETE),
     "/body/child/category"),
    ("enrolment-child-id-missing", "enrolment", lambda: _mut(E(), "child/id", h.DELETE), "/body/child/id"),
    ("enrolment-child-name-missing", "enrolment", lambda: _mut(E(), "child/name", h.DELETE),
     "/body/child/name"),
    ("enrolment-risk-bad", "enrolment", lambda: _mut(E(), "risk", "high"), "/body/risk"),
    ("enrolment-risk-reason-bad", "enrolment", lambda: _mut(E(), "risk_reasons", ["poor"]),
     "/body/risk_reasons/0"),
    ("enrolment-active-string", "enrolment", lambda: _mut(E(), "active", "no"), "/body/active"),
    ("enrolment-misspelt-vilage", "enrolment",
     lambda: {**{k: v for k, v in E().items() if k != "village"}, "vilage": "新河村"},
     {"/body/vilage", "/body/village"}),
    ("enrolment-misspelt-risk_reason", "enrolment", lambda: _mut(E(), "risk_reason", ["other"]),
     "/body/risk_reason"),
    ("visit-unknown-kind", "visit", lambda: _mut(V(), "kind", "phone_call"), "/body/kind"),
    ("visit-kind-missing", "visit", lambda: _mut(V(), "kind", h.DELETE), "/body/kind"),
    ("visit-date-missing", "visit", lambda: _mut(V(), "date", h.DELETE), "/body/date"),
    ("visit-date-bad", "visit", lambda: _mut(V(), "date", "2026-02-30"), "/body/date"),
    ("visit-child-id-missing", "visit", lambda: _mut(V(), "child", {"name": "王芳"}), "/body/child/id"),
    ("visit-method-bad", "visit", lambda: _mut(V(), "method", "letter"), "/body/method"),
    ("visit-concern-string", "visit", lambda: _mut(V(), "concern", "yes"), "/body/concern"),
    ("visit-need-bad", "visit", lambda: _mut(V(), "needs", ["money"]), "/body/needs/0"),
    ("visit-findings-4001", "visit", lambda: _mut(V(), "findings", "f" * 4001), "/body/findings"),
    ("visit-misspelt-findigns", "visit", lambda: _mut(V(), "findigns", "ok"), "/body/findigns"),
    ("visit-child-misspelt-nmae", "visit", lambda: _mut(V(), "child", {"id": "RC-1", "nmae": "x"}),
     "/body/child/nmae"),
]


def test_refusals_by_schema(make_clock_broker, tmp_path, connect):
    w = World(make_clock_broker, tmp_path, connect)
    bad = []
    for name, type_, make, field in INVALID:
        mid = uid("bad")
        r = w.a.event(type_, make(), id=mid, at=w.clk.now)
        want = field if isinstance(field, set) else {field}
        if r.get("op") != "nack" or r.get("code") != "invalid" or r.get("field") not in want \
                or r.get("id") != mid:
            bad.append(f"{name}: expected nack invalid field {sorted(want)}, got {h.summarize(r, 300)}")
        else:
            assert_nack(r, "invalid", id=mid)
    assert not bad, "schema refusals:\n" + "\n".join(bad)
    for t in ("enrolment", "visit"):
        assert result(q(w.sup, what="cases", type=t), "cases")["cases"] == [], \
            f"a refused {t} was stored"
    # the valid forms are accepted (so the refusals above are about the field named)
    send(w.a, "enrolment", E(), w.clk.now)
    send(w.a, "visit", V(), w.clk.now)
    send(w.a, "visit", visit_body("RC-1", "contact", child={"id": "RC-1", "name": "王芳"}), w.clk.now)


# ============================================================================
# The rhythm: visit_overdue events

RHYTHM = [rhythm(contact="1d", visit="3d", remind="6h")]


def hook_setup(receiver, agency="education"):
    secret = new_secret()
    channels = [webhook_channel("edu-hook", receiver.url("/edu"), secret)]
    agencies = [{"id": agency, "channels": ["edu-hook"]}]
    return secret, channels, agencies


def test_overdue_recorded_once_routed_and_again_each_period(make_clock_broker, tmp_path, connect,
                                                             receiver):
    secret, channels, agencies = hook_setup(receiver)
    wf = overdue_workflow("education", ack_within="2h")
    wf["assign"][0]["escalate"] = [{"after": "0s", "notify": ["edu-hook"]}]
    w = World(make_clock_broker, tmp_path, connect, rhythms=RHYTHM, overdue=wf,
              channels=channels, agencies=agencies)
    child, name = new_child()
    t0 = w.clk.now
    _, _, ecase = enrol(w.a, child, name, "新河村", t0)
    w.clk.to(t0 + DAY - MINUTE)
    assert settled_overdue(w.sup) == [], "a minute before the contact is due nothing is overdue"
    w.clk.to(t0 + DAY + SECOND)
    evs = wait_overdue(w.sup, 1, why="the contact fell due a second ago")
    assert len(evs) == 1, f"one due time passed: exactly one visit_overdue, got {summary(evs)}"
    assert_overdue(evs[0], child, "contact", t0 + DAY, "新河村", DIR_A)
    ocase = evs[0]["case"]
    assert ocase != ecase
    # routed by the workflow to education: one assignment, a case.assigned notice
    cs = [c for c in result(q(w.sup, what="cases", type="visit_overdue"), "cases")["cases"]]
    assert [c["id"] for c in cs] == [ocase], cs
    assert [a["agency"] for a in cs[0]["assignments"]] == ["education"], \
        f"the visit_overdue case is assigned to {cs[0]['assignments']}, the workflow says education"
    got = receiver.wait("/edu", 1, timeout=PROMPT)
    bodies = [check_webhook(r, secret) for r in got]
    assigned = [b_ for b_ in bodies if b_["type"] == "case.assigned"]
    assert len(assigned) == 1, f"one case.assigned to education's channel, got {bodies}"
    d = assigned[0]["data"]
    assert d.get("event_type") == "visit_overdue" and d.get("case") == ocase and \
        d.get("agency") == "education", f"case.assigned data {d!r} (§12: event_type visit_overdue)"
    for r in receiver.requests:
        raw = r.body.decode("utf-8")
        assert child not in raw and name not in raw, f"a notice names the child: {raw}"
    # nothing more until the next period
    w.clk.to(t0 + 2 * DAY - MINUTE)
    evs = settled_overdue(w.sup)
    assert len(evs) == 1, f"the next contact overdue is one period later: {summary(evs)}"
    w.clk.to(t0 + 2 * DAY + SECOND)
    evs = wait_overdue(w.sup, 2, why="still no contact one period later")
    assert len(evs) == 2, summary(evs)
    assert_overdue(evs[1], child, "contact", t0 + 2 * DAY, "新河村", DIR_A)
    assert evs[1]["case"] == ocase, "the child's second visit_overdue joins its open overdue case"
    # the home visit falls due at 3 d, with the third contact
    w.clk.to(t0 + 3 * DAY + SECOND)
    evs = wait_overdue(w.sup, 4, why="contact and home visit at 3 d")
    assert len(evs) == 4, summary(evs)
    contact, home = of_kind(evs, "contact"), of_kind(evs, "home_visit")
    assert [e["body"]["due"] for e in contact] == [t0 + DAY, t0 + 2 * DAY, t0 + 3 * DAY], summary(evs)
    assert len(home) == 1, summary(evs)
    assert_overdue(home[0], child, "home_visit", t0 + 3 * DAY, "新河村", DIR_A)
    # not acknowledged within 2 h: the escalation step fired once (§12: event_type visit_overdue)
    late = [r.json for r in receiver.at("/edu") if r.json["type"] == "assignment.overdue"]
    assert len(late) == 1, f"one escalation step, fired once: {late}"
    d = late[0]["data"]
    assert d.get("event_type") == "visit_overdue" and d.get("case") == ocase and d.get("level") == 1 \
        and d.get("agency") == "education", f"assignment.overdue data {d!r}"
    assert len([r for r in receiver.at("/edu") if r.json["type"] == "case.assigned"]) == 1, \
        "the later overdue events joined the case: no second assignment"
    for r in receiver.requests:
        raw = r.body.decode("utf-8")
        assert child not in raw and name not in raw, f"a notice names the child: {raw}"


def test_overdue_without_workflow_goes_to_fallback_agency(make_clock_broker, tmp_path, connect):
    w = World(make_clock_broker, tmp_path, connect, rhythms=RHYTHM, overdue=None)
    civil = connect(w.b, login="civil-desk")
    child, name = new_child()
    t0 = w.clk.now
    enrol(w.a, child, name, "新河村", t0)
    w.clk.to(t0 + DAY + SECOND)
    evs = wait_overdue(w.sup, 1)
    assert len(evs) == 1, summary(evs)
    cs = result(q(w.sup, what="cases", type="visit_overdue"), "cases")["cases"]
    assert len(cs) == 1 and [a["agency"] for a in cs[0]["assignments"]] == ["civil_affairs"], \
        f"without a workflow for visit_overdue it goes to fallback_agency civil_affairs: {cs}"
    m = wait_push(civil, pred=lambda m: m.get("case") == cs[0]["id"], timeout=PROMPT)
    assert m["type"] == "visit_overdue" and m["agency"] == "civil_affairs", h.summarize(m, 400)
    # the enrolment itself was only recorded (assign: []): the fallback got the overdue only
    all_cases = result(q(w.sup, what="cases", agency="civil_affairs"), "cases")["cases"]
    assert [c["type"] for c in all_cases] == ["visit_overdue"], all_cases


def test_visit_before_due_moves_it(make_clock_broker, tmp_path, connect):
    w = World(make_clock_broker, tmp_path, connect, rhythms=RHYTHM, overdue=overdue_workflow())
    child, name = new_child()
    t0 = w.clk.now
    enrol(w.a, child, name, "新河村", t0)
    w.clk.to(t0 + 12 * HOUR)
    visit(w.a, child, "contact", w.clk.now)
    w.clk.to(t0 + DAY + SECOND)
    assert settled_overdue(w.sup) == [], \
        "a contact at 12 h moved the contact due time to 1.5 d: nothing is overdue at 1 d"
    w.clk.to(t0 + DAY + 12 * HOUR + SECOND)
    evs = wait_overdue(w.sup, 1, why="contact due at visit + 1 d")
    assert len(evs) == 1, summary(evs)
    assert_overdue(evs[0], child, "contact", t0 + DAY + 12 * HOUR, "新河村", DIR_A,
                   last=t0 + 12 * HOUR)
    # a home visit at 2 d (also a contact): home visit due 5 d (not 3 d), contact 3 d
    w.clk.to(t0 + 2 * DAY)
    visit(w.a, child, "home_visit", w.clk.now)
    w.clk.to(t0 + 3 * DAY - MINUTE)
    evs = settled_overdue(w.sup)
    assert summary(evs) == [(child, "contact", t0 + DAY + 12 * HOUR, t0 + 12 * HOUR)], \
        f"a home visit at 2 d is also a contact (due 3 d); the 2.5 d contact overdue must not come: {summary(evs)}"
    w.clk.to(t0 + 3 * DAY + SECOND)
    evs = wait_overdue(w.sup, 2)
    assert len(evs) == 2 and of_kind(evs, "home_visit") == [], \
        f"at 3 d: the contact is overdue, the home visit (moved to 5 d) not: {summary(evs)}"
    assert_overdue(evs[1], child, "contact", t0 + 3 * DAY, "新河村", DIR_A, last=t0 + 2 * DAY)
    w.clk.to(t0 + 5 * DAY + SECOND)
    evs = wait_overdue(w.sup, 5, why="contacts at 4 d and 5 d, home visit at 5 d")
    home = of_kind(evs, "home_visit")
    assert len(evs) == 5 and len(home) == 1, summary(evs)
    assert_overdue(home[0], child, "home_visit", t0 + 5 * DAY, "新河村", DIR_A, last=t0 + 2 * DAY)


def test_visit_after_overdue_stops_the_next_one(make_clock_broker, tmp_path, connect):
    w = World(make_clock_broker, tmp_path, connect, rhythms=RHYTHM, overdue=overdue_workflow())
    child, name = new_child()
    t0 = w.clk.now
    enrol(w.a, child, name, "新河村", t0)
    w.clk.to(t0 + DAY + SECOND)
    assert len(wait_overdue(w.sup, 1)) == 1
    w.clk.to(t0 + DAY + HOUR)
    visit(w.a, child, "contact", w.clk.now, method="video")
    w.clk.to(t0 + 2 * DAY + SECOND)
    evs = settled_overdue(w.sup)
    assert len(evs) == 1, f"a contact after the overdue stops the next one at 2 d: {summary(evs)}"
    w.clk.to(t0 + 2 * DAY + HOUR + SECOND)
    evs = wait_overdue(w.sup, 2, why="due one period after the contact")
    assert len(evs) == 2, summary(evs)
    assert_overdue(evs[1], child, "contact", t0 + 2 * DAY + HOUR, "新河村", DIR_A,
                   last=t0 + DAY + HOUR)


def test_visit_edge_cases_of_the_wire_notes(make_clock_broker, tmp_path, connect):
    """spec/register-wire.md: a visit before the child's enrolment has no register effect;
    a visit by another director counts (the entry's director stays); an older visit never
    moves a due time back; `at` in the future is clamped to the receive time."""
    w = World(make_clock_broker, tmp_path, connect, rhythms=RHYTHM, overdue=overdue_workflow())
    early, e_name = new_child()            # visited before its enrolment
    other, o_name = new_child()            # visited by director-b, then an older visit
    future, f_name = new_child()           # a visit dated 5 days ahead
    t0 = w.clk.now
    visit(w.a, early, "home_visit", t0)
    w.clk.to(t0 + HOUR)
    enrol(w.a, early, e_name, "新河村", w.clk.now)
    enrol(w.a, other, o_name, "新河村", w.clk.now)
    enrol(w.a, future, f_name, "新河村", w.clk.now)
    w.clk.to(t0 + 6 * HOUR)
    visit(w.bdir, other, "contact", w.clk.now)
    w.clk.to(t0 + 12 * HOUR)
    visit(w.a, other, "contact", t0 + 2 * HOUR)              # older than the newest: no effect
    visit(w.a, future, "contact", t0 + 12 * HOUR + 5 * DAY)   # counts as now (t0 + 12 h)
    w.clk.to(t0 + DAY + HOUR + SECOND)
    evs = wait_overdue(w.sup, 1, why="the early child's contact: its enrolment + 1 d")
    assert summary(evs) == [(early, "contact", t0 + HOUR + DAY, None)], \
        f"a visit before the enrolment has no register effect: {summary(evs)}"
    w.clk.to(t0 + DAY + 6 * HOUR + SECOND)
    evs = wait_overdue(w.sup, 2, child=None, why="director-b's contact at 6 h counts")
    got = [e for e in evs if e["body"]["child"]["id"] == other]
    assert len(got) == 1, summary(evs)
    assert_overdue(got[0], other, "contact", t0 + DAY + 6 * HOUR, "新河村", DIR_A, last=t0 + 6 * HOUR)
    w.clk.to(t0 + DAY + 12 * HOUR + SECOND)
    evs = wait_overdue(w.sup, 3, why="a contact dated in the future counts from its receipt")
    got = [e for e in evs if e["body"]["child"]["id"] == future]
    assert len(got) == 1, summary(evs)
    assert_overdue(got[0], future, "contact", t0 + DAY + 12 * HOUR, "新河村", DIR_A, last=t0 + 12 * HOUR)
    assert len(evs) == 3, summary(evs)


def test_visit_dated_before_the_enrolment_does_not_move_its_due_time_back(make_clock_broker, tmp_path,
                                                                         connect):
    """The enrolment starts the count (§9); a contact dated before it is older than what the
    rhythm counts from, and an older visit never moves a due time back (register-wire)."""
    w = World(make_clock_broker, tmp_path, connect, rhythms=RHYTHM, overdue=overdue_workflow())
    child, name = new_child()
    t0 = w.clk.now
    w.clk.to(t0 + 12 * HOUR)
    enrol(w.a, child, name, "新河村", w.clk.now)
    visit(w.a, child, "contact", t0 + HOUR)                 # made before the file was opened
    w.clk.to(t0 + DAY + 2 * HOUR)
    evs = settled_overdue(w.sup)
    assert evs == [], (f"a contact dated 11 h before the enrolment moved the due time back from "
                       f"enrolment + 1 d to contact + 1 d: {summary(evs)}")
    w.clk.to(t0 + DAY + 12 * HOUR + SECOND)
    evs = wait_overdue(w.sup, 1)
    assert [(k, d) for _, k, d, _ in summary(evs)] == [("contact", t0 + DAY + 12 * HOUR)], summary(evs)


def test_inactive_stops_rhythm_and_reactivation_counts_afresh(make_clock_broker, tmp_path, connect):
    w = World(make_clock_broker, tmp_path, connect, rhythms=RHYTHM, overdue=overdue_workflow())
    child, name = new_child()
    other, oname = new_child()
    t0 = w.clk.now
    enrol(w.a, child, name, "新河村", t0)
    enrol(w.a, other, oname, "新河村", t0)          # a control child: its rhythm goes on
    w.clk.to(t0 + 6 * HOUR)
    visit(w.a, child, "contact", w.clk.now)
    w.clk.to(t0 + 12 * HOUR)
    enrol(w.a, child, name, "新河村", w.clk.now, active=False, note="随父母迁往外地")
    w.clk.to(t0 + 4 * DAY - HOUR)
    evs = wait_overdue(w.sup, 4, why="the control child: contacts 1-3 d, home visit 3 d")
    assert [e for e in evs if e["body"]["child"]["id"] == child] == [], \
        f"an inactive child has no rhythm: {summary(evs)}"
    assert len(evs) == 4, summary(evs)
    # active again: counting afresh from this enrolment (not from the 6 h contact, nor
    # from the first enrolment)
    t1 = w.clk.now
    enrol(w.a, child, name, "新河村", t1, active=True)
    assert settled_overdue(w.sup, child) == [], \
        "re-activation counts afresh: nothing is overdue at the moment of re-activation"
    w.clk.to(t1 + DAY - MINUTE)
    assert settled_overdue(w.sup, child) == [], "nothing due before re-activation + 1 d"
    w.clk.to(t1 + DAY + SECOND)
    evs = wait_overdue(w.sup, 1, child=child)
    assert len(evs) == 1 and evs[0]["body"]["kind"] == "contact" and \
        evs[0]["body"]["due"] == t1 + DAY, \
        f"after re-activation the contact is due 1 d later ({t1 + DAY}): {summary(evs)}"
    body_keys_ok(evs[0])


def test_new_enrolment_does_not_move_due_times(make_clock_broker, tmp_path, connect):
    w = World(make_clock_broker, tmp_path, connect, rhythms=RHYTHM, overdue=overdue_workflow())
    child, name = new_child()
    t0 = w.clk.now
    enrol(w.a, child, name, "新河村", t0)
    w.clk.to(t0 + 20 * HOUR)
    # an update of the entry (another village, another director): the due times stay
    enrol(w.bdir, child, name, "东风村", w.clk.now, category=["left_behind", "in_difficulty"])
    w.clk.to(t0 + DAY + SECOND)
    evs = wait_overdue(w.sup, 1, why="an updated entry keeps its due times (due 1 d, not 1 d 20 h)")
    assert len(evs) == 1, summary(evs)
    # the event describes the entry as it is now: the newest enrolment's village and director
    assert_overdue(evs[0], child, "contact", t0 + DAY, "东风村", DIR_B)


def test_elevated_risk_uses_the_elevated_rule(make_clock_broker, tmp_path, connect):
    rhythms = [rhythm("elevated", {"body.risk": "elevated"}, contact="6h", visit="1d", remind="0s"),
               rhythm("default", {}, contact="1d", visit="3d", remind="0s")]
    w = World(make_clock_broker, tmp_path, connect, rhythms=rhythms, overdue=overdue_workflow())
    hi, hname = new_child()
    lo, lname = new_child()
    t0 = w.clk.now
    enrol(w.a, hi, hname, "新河村", t0, risk="elevated", risk_reasons=["psych_or_behaviour"])
    enrol(w.a, lo, lname, "新河村", t0, risk="normal")
    w.clk.to(t0 + 6 * HOUR + SECOND)
    evs = wait_overdue(w.sup, 1, why="the elevated child's contact is due every 6 h")
    assert summary(evs) == [(hi, "contact", t0 + 6 * HOUR, None)], summary(evs)
    w.clk.to(t0 + DAY + SECOND)
    evs = wait_overdue(w.sup, 6, why="elevated: contacts 6/12/18/24 h and home visit 1 d; normal: contact 1 d")
    assert len(of_kind([e for e in evs if e["body"]["child"]["id"] == hi], "contact")) == 4, summary(evs)
    assert len(of_kind([e for e in evs if e["body"]["child"]["id"] == hi], "home_visit")) == 1, summary(evs)
    assert summary([e for e in evs if e["body"]["child"]["id"] == lo]) == [(lo, "contact", t0 + DAY, None)], \
        summary(evs)
    assert len(evs) == 6, summary(evs)


# ============================================================================
# Reminders to the director

def reminders(agent, wait=SETTLE):
    return pushes(agent, op="reminder", wait=wait)


def check_reminder(m, child, kind, due):
    assert m.get("v") == 1 and isinstance(m.get("id"), str) and h.ID_RE.match(m["id"]), m
    got = (m.get("child"), m.get("kind"), m.get("due"))
    assert got == (child, kind, due), f"reminder (child, kind, due) is {got}, expected {(child, kind, due)}: {m!r}"
    return m


def test_reminder_before_due_resent_after_hello_until_received(make_clock_broker, tmp_path, connect):
    w = World(make_clock_broker, tmp_path, connect, rhythms=RHYTHM, overdue=overdue_workflow())
    child, name = new_child()
    t0 = w.clk.now
    enrol(w.a, child, name, "新河村", t0)
    w.clk.to(t0 + 18 * HOUR - MINUTE)
    assert reminders(w.a) == [], "the contact is due in 6 h 1 min: no reminder yet (remind_before 6h)"
    w.clk.to(t0 + 18 * HOUR + SECOND)
    m = check_reminder(wait_push(w.a, op="reminder", timeout=PROMPT, what="6 h before the contact"),
                       child, "contact", t0 + DAY)
    assert reminders(w.bdir) == [], "the reminder goes to the child's director only"
    assert reminders(w.a) == [], "one reminder, not a stream of them"
    # not confirmed: re-sent after each hello (the same reminder, the same id)
    w.a.login(DIR_A)
    again = check_reminder(wait_push(w.a, op="reminder", timeout=PROMPT, what="after a hello"),
                           child, "contact", t0 + DAY)
    assert again["id"] == m["id"], f"a re-sent reminder keeps its id: {m['id']} then {again['id']}"
    other = connect(w.b, login=DIR_A)              # a new connection of the same director
    check_reminder(wait_push(other, op="reminder", timeout=PROMPT, what="after a hello on a new "
                             "connection"), child, "contact", t0 + DAY)
    reminders(w.a, wait=0.3)                       # whatever the new hello sent here too
    other.send({"v": 1, "op": "received", "id": m["id"]})
    assert reminders(other) == [], "`received` gets no reply and no push"
    w.a.login(DIR_A)
    assert reminders(w.a) == [], "a received reminder is not sent again after a hello"
    # the home visit's reminder at 3 d - 6 h
    w.clk.to(t0 + 2 * DAY + 18 * HOUR + SECOND)
    got = reminders(w.a, wait=PROMPT)
    kinds = sorted((r["kind"], r["due"]) for r in got)
    assert ("home_visit", t0 + 3 * DAY) in kinds, \
        f"the home visit is due at 3 d: reminded 6 h before; got {got}"
    assert [r for r in got if r["child"] != child] == [], got


def test_visit_withdraws_the_reminder(make_clock_broker, tmp_path, connect):
    w = World(make_clock_broker, tmp_path, connect, rhythms=RHYTHM, overdue=overdue_workflow())
    child, name = new_child()
    t0 = w.clk.now
    enrol(w.a, child, name, "新河村", t0)
    w.clk.to(t0 + 18 * HOUR + SECOND)
    m = check_reminder(wait_push(w.a, op="reminder", timeout=PROMPT), child, "contact", t0 + DAY)
    visit(w.a, child, "contact", w.clk.now)        # done: the reminder is withdrawn
    w.a.login(DIR_A)
    got = [r for r in reminders(w.a) if r["kind"] == "contact"]
    assert got == [], f"a contact moved the due time: the unconfirmed reminder {m['id']} must not " \
                      f"come again after a hello, got {got}"
    # the next one: 6 h before the new due time (contact + 1 d)
    t1 = w.clk.now
    w.clk.to(t1 + 18 * HOUR + SECOND)
    check_reminder(wait_push(w.a, op="reminder", pred=lambda r: r["kind"] == "contact",
                             timeout=PROMPT), child, "contact", t1 + DAY)


def test_leaving_the_register_withdraws_the_reminder(make_clock_broker, tmp_path, connect):
    """register-wire: reminders are sent while the child is active."""
    w = World(make_clock_broker, tmp_path, connect, rhythms=RHYTHM, overdue=overdue_workflow())
    child, name = new_child()
    t0 = w.clk.now
    enrol(w.a, child, name, "新河村", t0)
    w.clk.to(t0 + 18 * HOUR + SECOND)
    check_reminder(wait_push(w.a, op="reminder", timeout=PROMPT), child, "contact", t0 + DAY)
    enrol(w.a, child, name, "新河村", w.clk.now, active=False)
    w.a.login(DIR_A)
    assert reminders(w.a) == [], "the child left the register: its reminder is not re-sent"
    w.clk.to(t0 + 4 * DAY)
    assert settled_overdue(w.sup) == [] and reminders(w.a) == []


def test_visit_with_concern_is_routed_like_any_event(make_clock_broker, tmp_path, connect):
    """§9: `concern` (a problem found): workflows route it like any event."""
    cfg = register_config(tmp_path / "b", rhythms=RHYTHM, overdue=overdue_workflow())
    cfg["workflows"].insert(0, {"name": "concern", "match": {"type": "visit", "body.concern": True},
                                "assign": [{"agency": "police", "ack_within": "1h"}]})
    b = make_clock_broker(config=cfg, name="b")
    clk = Clock(connect(b, login=CLOCK_AGENT))
    d, police, sup = connect(b, login=DIR_A), connect(b, login="police-desk"), connect(b, login=SUP)
    child, name = new_child()
    enrol(d, child, name, "新河村", clk.now)
    _, _, quiet = visit(d, child, "contact", clk.now)
    other, oname = new_child()
    enrol(d, other, oname, "新河村", clk.now)
    _, _, loud = visit(d, other, "home_visit", clk.now, concern=True, needs=["safety"],
                       findings="孩子身上有伤")
    m = wait_push(police, pred=lambda m: m.get("case") == loud, timeout=PROMPT)
    assert m["type"] == "visit" and m["events"][-1]["body"]["concern"] is True
    cs = {c["id"]: c for c in result(q(sup, what="cases", type="visit"), "cases")["cases"]}
    assert cs[quiet]["assignments"] == [], f"a visit without concern is only recorded: {cs[quiet]}"
    assert [a["agency"] for a in cs[loud]["assignments"]] == ["police"], cs[loud]


def test_no_reminders_with_remind_before_0s(make_clock_broker, tmp_path, connect):
    rhythms = [rhythm(contact="1d", visit="3d", remind="0s")]
    w = World(make_clock_broker, tmp_path, connect, rhythms=rhythms, overdue=overdue_workflow())
    child, name = new_child()
    t0 = w.clk.now
    enrol(w.a, child, name, "新河村", t0)
    w.clk.to(t0 + 3 * DAY + SECOND)
    evs = wait_overdue(w.sup, 4)                   # the rhythm runs (contacts 1-3 d, home 3 d)...
    assert len(evs) == 4, summary(evs)
    assert reminders(w.a) == [], "remind_before 0s: no reminders"        # ...but reminds nobody
    w.a.login(DIR_A)
    assert reminders(w.a) == [], "remind_before 0s: no reminders, not even after a hello"


# ============================================================================
# Crashes and restarts

def test_kill9_around_due_time_records_the_overdue_once(make_clock_broker, tmp_path, connect):
    w = World(make_clock_broker, tmp_path, connect, rhythms=RHYTHM, overdue=overdue_workflow())
    t0 = w.clk.now
    children = [new_child() for _ in range(6)]
    for c, n in children:
        enrol(w.a, c, n, "新河村", t0)
    for cycle, (kill_at, delay) in enumerate(((t0 + DAY + SECOND, 0.0), (t0 + 2 * DAY + SECOND, 0.02),
                                              (t0 + 3 * DAY - HOUR, 0.05))):
        w.clk.to(kill_at)                       # just past a due time...
        if delay:
            time.sleep(delay)
        w.b.kill9()                             # ...and kill -9 at once
        w.b.expect_clean_exit = False
        w.b.restart(same_endpoints=True)
        w.b.expect_clean_exit = True
        w.reconnect()                           # the virtual clock starts again from real time
        w.clk.to(kill_at)
        want = len(children) * (cycle + 1 if cycle < 2 else 2)
        evs = wait_overdue(w.sup, want, why=f"cycle {cycle + 1}: after kill -9 and restart")
        per = {}
        for e in evs:
            per.setdefault((e["body"]["child"]["id"], e["body"]["kind"], e["body"]["due"]), []).append(e["id"])
        twice = {k: v for k, v in per.items() if len(v) > 1}
        assert not twice, f"cycle {cycle + 1}: overdue events recorded twice across kill -9: {twice}"
        assert len(evs) == want, f"cycle {cycle + 1}: {len(evs)} overdue events, expected {want}: {summary(evs)}"
        dues = sorted({e["body"]["due"] for e in evs})
        assert dues == [t0 + DAY, t0 + 2 * DAY][:min(cycle + 1, 2)], dues
    w.clk.to(t0 + 3 * DAY - MINUTE)
    assert len(settled_overdue(w.sup)) == 2 * len(children)


def test_restart_with_changed_rhythm_recomputes_due_times(make_clock_broker, tmp_path, connect):
    rhythms = [rhythm(contact="3d", visit="2d", remind="0s")]
    w = World(make_clock_broker, tmp_path, connect, rhythms=rhythms, overdue=overdue_workflow())
    child, name = new_child()
    gone, gname = new_child()                       # inactive: no due times, before or after
    t0 = w.clk.now
    enrol(w.a, child, name, "新河村", t0)
    enrol(w.a, gone, gname, "新河村", t0)
    w.clk.to(t0 + 12 * HOUR)
    enrol(w.a, gone, gname, "新河村", w.clk.now, active=False)
    assert settled_overdue(w.sup) == []
    # contact shortened 3 d -> 1 d, home visit lengthened 2 d -> 5 d
    w.b.restart(overrides={"rhythms": [rhythm(contact="1d", visit="5d", remind="0s")]})
    w.reconnect()
    w.clk.to(t0 + DAY + SECOND)
    evs = wait_overdue(w.sup, 1, why="contact_every shortened to 1 d: due at enrolment + 1 d")
    assert summary(evs) == [(child, "contact", t0 + DAY, None)], summary(evs)
    w.clk.to(t0 + 2 * DAY + SECOND)
    evs = wait_overdue(w.sup, 2)
    assert of_kind(evs, "home_visit") == [], \
        f"visit_every lengthened to 5 d: no home-visit overdue at the old 2 d: {summary(evs)}"
    assert len(evs) == 2, summary(evs)
    assert gone not in {e["body"]["child"]["id"] for e in evs}, \
        f"recomputing the due times at start revived an inactive child's rhythm: {summary(evs)}"
    rows = result(q(w.sup, what="register"), "register")["rows"]
    assert [r["children"] for r in rows] == [1], rows


# ============================================================================
# Figures: register, register_due, register_sample, on one register of 50 children

VILLAGES = [("一村", DIR_A), ("二村", DIR_A), ("二村", DIR_B), ("三村", DIR_B)]
FIG_RHYTHMS = [rhythm("elevated", {"body.risk": "elevated"}, contact="5d", visit="15d", remind="0s"),
               rhythm("default", {}, contact="10d", visit="30d", remind="0s")]
EVERY = {"elevated": (5 * DAY, 15 * DAY), "normal": (10 * DAY, 30 * DAY)}
CATS = [["left_behind"], ["in_difficulty"], ["left_behind", "disabled"], ["orphan"], ["unattended"]]


class Kid:
    def __init__(self, i):
        self.i = i
        self.id = f"FIG-{i:03d}-{uid('c')[2:10]}"
        self.name = f"CANARY-图-{i}-{uid('n')[2:]}"
        self.village, self.director = VILLAGES[i % 4]
        self.risk = "elevated" if i % 7 == 3 else "normal"
        self.category = CATS[i % 5]
        self.active = True
        self.enrolled = None
        self.contacts = []          # times of contacts and home visits
        self.visits = []            # times of home visits
        self.enrol_case = None
        self.visit_case = None

    def due(self, kind):
        c_every, v_every = EVERY[self.risk]
        if kind == "contact":
            return (max(self.contacts) if self.contacts else self.enrolled) + c_every
        return (max(self.visits) if self.visits else self.enrolled) + v_every

    def last(self, kind):
        xs = self.contacts if kind == "contact" else self.visits
        return max(xs) if xs else None

    def every(self, kind):
        return EVERY[self.risk][0 if kind == "contact" else 1]

    def overdue(self, kind, now):
        return self.due(kind) < now

    def within(self, kind, now):
        last = self.last(kind)
        return last is not None and last > now - self.every(kind)


def due_ok(kid, kind, due, now):
    """The due time a reader is shown: the one the rhythm gives (last or enrolment + every);
    for one already past, also one a fired overdue rolled it to (+ k periods, still past)."""
    base = kid.due(kind)
    if due == base:
        return True
    k, rem = divmod(due - base, kid.every(kind)) if due > base else (0, 1)
    return rem == 0 and k >= 1 and due < now


@pytest.fixture(scope="module")
def fig(tmp_path_factory, carehub_bin):
    """One broker, 50 register entries in 3 villages of 2 directors (4 rows): contacts and
    home visits at 8, 19 and 22 d, some overdue, elevated ones, one made inactive at 3 d,
    one enrolled a minute before the figures are read at 25 d."""
    from routing_harness import ClockBroker
    workdir = tmp_path_factory.mktemp("register-figures")
    cfg = register_config(workdir, rhythms=FIG_RHYTHMS,
                          overdue={"name": "missed", "match": {"type": "visit_overdue"}, "assign": []})
    b = ClockBroker(workdir, config=cfg, name="carehubd(register-figures)")
    agents = []

    def login(who):
        a = h.Agent(b.endpoint, timeout=15)
        agents.append(a)
        a.login(who)
        return a

    problems = []
    try:
        b.start()
        clk = Clock(login(CLOCK_AGENT))
        dirs = {DIR_A: login(DIR_A), DIR_B: login(DIR_B)}
        t0 = clk.now
        kids = [Kid(i) for i in range(50)]

        def do_enrol(k, at, **kw):
            _, _, k.enrol_case = enrol(dirs[k.director], k.id, k.name, k.village, at, risk=k.risk,
                                       category=k.category, **kw)

        def do_visit(k, kind, at):
            _, _, k.visit_case = visit(dirs[k.director], k.id, kind, at,
                                       findings=f"走访记录 {k.name}")
            k.contacts.append(at)
            if kind == "home_visit":
                k.visits.append(at)

        for k in kids[:49]:
            do_enrol(k, t0)
            k.enrolled = t0
        clk.to(t0 + 3 * DAY)
        inactive = kids[48]
        do_enrol(inactive, clk.now, active=False)
        inactive.active = False
        inactive.deactivated = clk.now
        clk.to(t0 + 8 * DAY)
        for k in kids[:48]:
            if k.i % 5 == 0:
                do_visit(k, "home_visit", clk.now)
            elif k.i % 3 == 0:
                do_visit(k, "contact", clk.now)
        clk.to(t0 + 19 * DAY)
        for k in kids[:48]:
            if k.i % 4 == 1:
                do_visit(k, "contact", clk.now)
        clk.to(t0 + 22 * DAY)
        for k in kids[:48]:
            if k.i % 6 == 2:
                do_visit(k, "contact", clk.now)
            if k.i % 9 == 4:
                do_visit(k, "home_visit", clk.now)
        final = t0 + 25 * DAY
        clk.to(final - MINUTE)
        newest = kids[49]
        do_enrol(newest, clk.now)
        newest.enrolled = clk.now
        clk.to(final)
        time.sleep(2 * SETTLE)                  # let the overdue events of the jumps be recorded
        # the scenario keeps away from boundaries (a minute either way changes no count)
        for k in kids:
            if not k.active:
                continue
            for kind in ("contact", "home_visit"):
                assert abs(k.due(kind) - final) > 30 * SECOND, (k.i, kind)
                if k.last(kind) is not None:
                    assert abs(k.last(kind) - (final - k.every(kind))) > HOUR, (k.i, kind)

        class F:
            pass
        f = F()
        f.broker, f.kids, f.t0, f.final, f.clk = b, kids, t0, final, clk
        f.checkpoints = [t0 + 3 * DAY, t0 + 8 * DAY, t0 + 19 * DAY, t0 + 22 * DAY, final - MINUTE, final]
        f.login = login
        f.sup = login(SUP)
        f.dirs = dirs
        yield f
    finally:
        for a in agents:
            a.close()
        problems += b.finish()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def hand_rows(kids, now, village=None, director=None):
    rows = {}
    for k in kids:
        if not k.active or (village and k.village != village) or (director and k.director != director):
            continue
        r = rows.setdefault((k.village, k.director), {
            "village": k.village, "director": k.director, "children": 0, "contacted": 0,
            "visited": 0, "contact_overdue": 0, "visit_overdue": 0, "elevated": 0})
        r["children"] += 1
        r["contacted"] += k.within("contact", now)
        r["visited"] += k.within("home_visit", now)
        r["contact_overdue"] += k.overdue("contact", now)
        r["visit_overdue"] += k.overdue("home_visit", now)
        r["elevated"] += k.risk == "elevated"
    return [rows[key] for key in sorted(rows)]


FIG_KEYS = ("village", "director", "children", "contacted", "visited", "contact_overdue",
            "visit_overdue")


def no_child_data(reply, kids, what):
    raw = repr(reply)
    packed = h.pack(reply)
    for k in kids:
        assert k.id not in raw and k.id.encode() not in packed, f"{what} names child id {k.id}: {raw[:600]}"
        assert k.name not in raw and k.name.encode() not in packed, f"{what} names a child: {raw[:600]}"


def test_register_figures_equal_a_hand_count(fig):
    r = result(q(fig.sup, what="register"), "register")
    assert r.get("now") == fig.final, f"register `now` {r.get('now')}, the clock says {fig.final}"
    want = hand_rows(fig.kids, fig.final)
    got = [{k: row.get(k) for k in FIG_KEYS} for row in r["rows"]]
    assert got == [{k: w[k] for k in FIG_KEYS} for w in want], \
        "register rows differ from the hand count:\n" + "\n".join(
            f"  got  {g}\n  want {w_}" for g, w_ in zip(got, want)) + f"\n(all rows: {r['rows']})"
    # extension of spec/register-wire.md
    assert [row.get("elevated") for row in r["rows"]] == [w["elevated"] for w in want], r["rows"]
    assert sum(row["children"] for row in r["rows"]) == 49, "49 active children (one left the register)"
    no_child_data(r, fig.kids, "the register figures")
    # the preconditions of a meaningful count
    flat = {k: sum(w[k] for w in want) for k in FIG_KEYS[2:]}
    assert all(v > 0 for v in flat.values()), flat


def test_register_filters(fig):
    for kw in ({"village": "二村"}, {"director": DIR_B}, {"village": "二村", "director": DIR_A},
               {"village": "无此村"}):
        r = result(q(fig.sup, what="register", **kw), "register")
        want = hand_rows(fig.kids, fig.final, **kw)
        got = [{k: row.get(k) for k in FIG_KEYS} for row in r["rows"]]
        assert got == [{k: w[k] for k in FIG_KEYS} for w in want], f"register {kw}: {got} != {want}"


def test_register_forbidden_to_non_supervisors(fig):
    for who in (DIR_A, "school-0042", "reporter-01", "monitor-01", "police-desk", "civil-desk"):
        a = fig.login(who)
        assert_nack(q(a, what="register"), "forbidden")
        assert_nack(q(a, what="register_sample", n=3), "forbidden")


def test_register_due_lists_the_directors_own_children(fig):
    now, within = fig.final, 7 * DAY
    for d in (DIR_A, DIR_B):
        s0 = trail_seq(fig.sup)
        r = result(q(fig.dirs[d], what="register_due"), "register_due")
        assert trail_seq(fig.sup) - s0 >= 2, "the read of register_due is recorded in the trail"
        assert r.get("now") == now, r.get("now")
        want = {}
        for k in fig.kids:
            if k.director != d or not k.active:
                continue
            for kind in ("contact", "home_visit"):
                if k.due(kind) <= now + within:
                    want[(k.id, kind)] = k
        rows = r["rows"]
        got = {(row["child"], row["kind"]): row for row in rows}
        assert len(got) == len(rows), f"{d}: a (child, kind) listed twice: {rows}"
        assert set(got) == set(want), (
            f"{d}: register_due lists {len(got)} (child, kind), the hand count {len(want)}; "
            f"missing {sorted(set(want) - set(got))[:6]}, extra {sorted(set(got) - set(want))[:6]}")
        for key, k in want.items():
            row, kind = got[key], key[1]
            assert row["name"] == k.name and row["village"] == k.village, row
            assert row["overdue"] is k.overdue(kind, now), f"{d}: {row} (due {k.due(kind)}, now {now})"
            assert due_ok(k, kind, row["due"], now), f"{d}: {row}: due should be {k.due(kind)}"
            assert row.get("last") == k.last(kind), f"{d}: {row}: last should be {k.last(kind)}"
        dues = [row["due"] for row in rows]
        assert dues == sorted(dues), f"{d}: register_due rows not sorted by due: {dues}"
        assert [row["overdue"] for row in rows] == sorted((row["overdue"] for row in rows), reverse=True), \
            f"{d}: overdue rows first"
    for who in (SUP, "school-0042", "police-desk"):
        assert_nack(q(fig.login(who) if who != SUP else fig.sup, what="register_due"), "forbidden")


def fired(kids, checkpoints):
    """(child, kind, due, last) of every visit_overdue the rhythm fires: the clock moved to
    each checkpoint, everything due by then fired (and again each period), then the
    visits made at that checkpoint moved the base."""
    out = set()
    for k in kids:
        if k.enrolled is None:
            continue
        deact = None if k.active else k.deactivated
        for kind in ("contact", "home_visit"):
            xs = k.contacts if kind == "contact" else k.visits
            last, due = None, k.enrolled + k.every(kind)
            for t in checkpoints:
                if t < k.enrolled:
                    continue
                while due <= t and (deact is None or due < deact):
                    assert due != t, (k.i, kind, due)
                    out.add((k.id, kind, due, last))
                    due += k.every(kind)
                for x in xs:
                    if x == t:
                        last, due = x, x + k.every(kind)
    return out


def test_register_overdue_events_of_many_children_each_once(fig):
    sup = fig.sup
    evs = overdue_events(sup)
    got = [(e["body"]["child"]["id"], e["body"]["kind"], e["body"]["due"], e["body"].get("last"))
           for e in evs]
    assert len(got) == len(set(got)), \
        f"visit_overdue recorded twice: {sorted(x for x in got if got.count(x) > 1)[:6]}"
    want = fired(fig.kids, fig.checkpoints)
    assert len(want) > 40, f"the scenario fires only {len(want)} overdue events"
    assert set(got) == want, (f"{len(got)} visit_overdue events, the rhythm fires {len(want)}; "
                              f"missing {sorted(want - set(got))[:5]}, extra {sorted(set(got) - want)[:5]}")
    for e in evs:
        k = [k for k in fig.kids if k.id == e["body"]["child"]["id"]][0]
        assert e["agent"] == "broker" and e["body"]["village"] == k.village and \
            e["body"]["director"] == k.director, h.summarize(e, 400)


def trail_seq(sup):
    return result(q(sup, what="trail_head"), "trail_head")["seq"]


def test_register_sample_is_seeded_and_in_the_trail(fig):
    by_case = {k.enrol_case: k for k in fig.kids}
    s0 = trail_seq(fig.sup)
    r1 = result(q(fig.sup, what="register_sample", n=5, seed="抽查-2026"), "register_sample")
    s1 = trail_seq(fig.sup)
    assert s1 - s0 >= 5 + 1, \
        f"each drawn entry is a trail record: the trail grew by {s1 - s0} over a sample of 5"
    reader = fig.login("supervisor-01")             # another supervisor reads the trails

    def sup_records(case):
        t = result(q(reader, what="trail", case=case), "trail")
        return [r for r in t["records"] if r.get("actor") == SUP]

    drawn = {by_case[c] for x in r1["rows"] for c in x["cases"] if c in by_case}
    assert len(drawn) == 5, r1["rows"]
    for k in drawn:
        assert sup_records(k.enrol_case), \
            f"the drawn entry of child {k.i} has no trail record with the supervisor as actor"
    undrawn = [k for k in fig.kids if k not in drawn][:3]
    for k in undrawn:
        assert not sup_records(k.enrol_case), f"child {k.i} was not drawn, yet its trail has a record"
    r2 = result(q(fig.sup, what="register_sample", n=5, seed="抽查-2026"), "register_sample")
    assert [x["entry"] for x in r1["rows"]] == [x["entry"] for x in r2["rows"]], \
        "the same seed on the same register must draw the same sample"
    assert r1["population"] == 50, f"population {r1['population']}: 50 entries (active or not)"
    assert len(r1["rows"]) == 5 and len({x["entry"] for x in r1["rows"]}) == 5, r1["rows"]
    draws = {tuple(x["entry"] for x in result(q(fig.sup, what="register_sample", n=5, seed=s),
                                                "register_sample")["rows"])
             for s in ("a", "b", "c", "d")}
    assert len(draws) > 1, "four seeds drew the same five entries: the seed changes nothing"
    big = result(q(fig.sup, what="register_sample", n=100, seed="x"), "register_sample")
    assert len(big["rows"]) == 50, "n above the population draws every entry"
    for row in big["rows"]:
        assert re.fullmatch(r"rg-[0-9a-f]{24}", row["entry"]), row
        ks = [by_case[c] for c in row.get("cases", []) if c in by_case]
        assert len(ks) == 1, f"a sample row names the enrolment case of one child: {row}"
        k = ks[0]
        got = (row["village"], row["director"], row["risk"], sorted(row["category"]), row["active"])
        want = (k.village, k.director, k.risk, sorted(k.category), k.active)
        assert got == want, f"sample row {row} of child {k.i}: {got} != {want}"
        if k.visit_case:
            assert k.visit_case in row["cases"], f"the newest visit case is listed: {row}"
        assert row.get("last_contact") == k.last("contact"), (row, k.last("contact"))
        assert row.get("last_visit") == k.last("home_visit"), (row, k.last("home_visit"))
    no_child_data(big, fig.kids, "the register sample")
    # filters
    v = result(q(fig.sup, what="register_sample", n=100, village="三村", seed="x"), "register_sample")
    assert v["population"] == sum(k.village == "三村" for k in fig.kids) == len(v["rows"]), v
    assert {row["village"] for row in v["rows"]} == {"三村"}
    d = result(q(fig.sup, what="register_sample", n=100, director=DIR_A, seed="x"), "register_sample")
    assert d["population"] == sum(k.director == DIR_A for k in fig.kids), d["population"]
    assert {row["director"] for row in d["rows"]} == {DIR_A}


def test_register_sample_due_times_agree_with_register_due(fig):
    """spec/register-wire.md is silent on what contact_due / visit_due of a sample row are;
    this test holds them to what the rest of the register says: the rhythm's due time
    (last or enrolment + period), as register_due's `due` and the figures' overdue counts
    read it. An overdue child must not look, in a spot check, as if due in the future."""
    by_case = {k.enrol_case: k for k in fig.kids}
    big = result(q(fig.sup, what="register_sample", n=100, seed="x"), "register_sample")
    bad = []
    for row in big["rows"]:
        k = [by_case[c] for c in row.get("cases", []) if c in by_case][0]
        if not k.active:
            continue
        for kind, field in (("contact", "contact_due"), ("home_visit", "visit_due")):
            if not due_ok(k, kind, row.get(field), fig.final):
                bad.append(f"child {k.i} ({k.risk}, last {kind} {k.last(kind)}): {field} "
                           f"{row.get(field)}, the rhythm says {k.due(kind)} "
                           f"({'overdue' if k.overdue(kind, fig.final) else 'not overdue'} at {fig.final})")
    assert not bad, f"{len(bad)} sample due time(s) disagree with the rhythm:\n" + "\n".join(bad[:10])


# ============================================================================
# Privacy: a canary child is in clear nowhere

def _needles(values):
    """label -> [the whole value (UTF-8), its random hex token]."""
    out = {}
    for label, v in values.items():
        tok = re.search(r"([0-9a-f]{12,32})$", v).group(1)
        out[label] = [v.encode("utf-8"), tok.encode()]
    return out


def _hits(data, needles):
    return sorted(label for label, ns in needles.items() if any(n in data for n in ns))


def _search_tree(root, needles):
    found = []
    for p in sorted(root.rglob("*")):
        if p.is_file():
            hs = _hits(p.read_bytes(), needles)
            if hs:
                found.append((str(p), hs))
    return found


@pytest.mark.parametrize("privacy", ["key_file", "off"])
def test_canary_child_is_in_clear_nowhere(make_clock_broker, tmp_path, connect, receiver, privacy):
    """With privacy.key_file: no canary in the data files, the log, the figures, the
    notices. With `privacy: off` (the control): the data files hold them in clear, so the
    search finds what it looks for; the log, figures and notices still hold none."""
    import os
    secret = new_secret()
    sms_secret = new_secret()
    channels = [webhook_channel("edu-hook", receiver.url("/edu"), secret),
                sms_channel("edu-sms", receiver.url("/sms"), sms_secret, ["+8613800000001"])]
    agencies = [{"id": "education", "channels": ["edu-hook", "edu-sms"]}]
    key = tmp_path / "data.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    cfg = register_config(tmp_path / "p", rhythms=RHYTHM, overdue=overdue_workflow("education"),
                          channels=channels, agencies=agencies,
                          workflows=[{"name": "director-reports", "match": {"type": "mandatory_report"},
                                      "assign": [{"agency": "education", "ack_within": "1h"}]}])
    cfg["privacy"] = {"key_file": str(key)} if privacy == "key_file" else h.Bare("off")
    b = make_clock_broker(config=cfg, name="p")
    clk = Clock(connect(b, login=CLOCK_AGENT))
    sup, d = connect(b, login=SUP), connect(b, login=DIR_A)
    tok = lambda: uid("t")[2:]                               # noqa: E731
    v = {"name": f"CANARY-名字-{tok()}", "child_id": f"CANARYID-{tok()}",
         "guardian": f"CANARY-监护人-{tok()}", "phone": f"CANARYPH{tok()}",
         "findings": f"CANARY-FINDINGS 爷爷腿脚不便 {tok()}", "note": f"CANARY-NOTE 父母在外务工 {tok()}",
         "desc": f"CANARY-DESC 孩子独自在家 {tok()}"}
    needles = _needles(v)
    t0 = clk.now
    child = {"id": v["child_id"], "name": v["name"], "category": ["left_behind"], "gender": "female",
             "guardian": {"name": v["guardian"], "relation": "grandfather", "phone": v["phone"]}}
    send(d, "enrolment", {"child": child, "village": "新河村", "note": v["note"]}, t0)
    clk.to(t0 + 2 * HOUR)
    send(d, "visit", visit_body(v["child_id"], "contact", child={"id": v["child_id"], "name": v["name"]},
                                findings=v["findings"], note=v["note"], method="phone"), clk.now)
    send(d, "mandatory_report", h.mandatory_report_body(None, child=dict(child), description=v["desc"]),
         clk.now)
    clk.to(t0 + 2 * HOUR + DAY + SECOND)
    evs = wait_overdue(sup, 1)
    assert len(evs) == 1, summary(evs)
    # the broker opens the sealed bodies for a supervisor (so they were stored, and sealed)
    assert evs[0]["body"]["child"]["id"] == v["child_id"]
    receiver.wait("/edu", 2, timeout=PROMPT)        # case.assigned: the report, the overdue
    receiver.wait("/sms", 2, timeout=PROMPT)
    time.sleep(SETTLE)
    for r in receiver.requests:
        sec = secret if r.path == "/edu" else sms_secret
        body = check_webhook(r, sec)
        assert not _hits(r.body, needles), \
            f"a notice ({body['type']}, {r.path}) carries {_hits(r.body, needles)}: {r.body[:600]!r}"
    assert {r.json["data"].get("event_type") for r in receiver.requests} >= {"visit_overdue"}
    for what, kw in (("register", {}), ("register_sample", {"n": 10, "seed": "s"})):
        r = result(q(sup, what=what, **kw), what)
        assert not _hits(h.pack(r), needles) and not _hits(repr(r).encode(), needles), \
            f"{what} carries {_hits(h.pack(r), needles)}: {r!r}"
    data = b.workdir / "data"
    assert b.stop() == 0
    found = _search_tree(data, needles)
    if privacy == "off":
        labels = {lab for _, labs in found for lab in labs}
        assert labels >= {"name", "findings", "guardian", "child_id"}, \
            f"control: with privacy off the data files hold the canaries in clear, found {found}"
    else:
        assert not found, f"the child's data in clear under data_dir with privacy.key_file set: {found}"
    log = b.all_logs().encode("utf-8", "replace")
    assert log.strip(), "no log at all"
    assert not _hits(log, needles), f"the broker's log holds {_hits(log, needles)}"


# ============================================================================
# More of the rhythm: durability of a visit, reminders across a crash, a new director,
# a child no rule matches, query parameters

def test_visit_acked_before_kill9_moves_the_due_time(make_clock_broker, tmp_path, connect):
    w = World(make_clock_broker, tmp_path, connect, rhythms=RHYTHM, overdue=overdue_workflow())
    child, name = new_child()
    t0 = w.clk.now
    enrol(w.a, child, name, "新河村", t0)
    w.clk.to(t0 + 12 * HOUR)
    visit(w.a, child, "home_visit", w.clk.now)
    w.b.kill9()                                    # right after the ack
    w.b.expect_clean_exit = False
    w.b.restart(same_endpoints=True)
    w.b.expect_clean_exit = True
    w.reconnect()
    w.clk.to(t0 + DAY + SECOND)
    assert settled_overdue(w.sup) == [], "the acknowledged home visit at 12 h was lost by kill -9"
    w.clk.to(t0 + DAY + 12 * HOUR + SECOND)
    evs = wait_overdue(w.sup, 1)
    assert summary(evs) == [(child, "contact", t0 + DAY + 12 * HOUR, t0 + 12 * HOUR)], summary(evs)


def test_reminder_survives_kill9_and_goes_to_the_new_director(make_clock_broker, tmp_path, connect):
    w = World(make_clock_broker, tmp_path, connect, rhythms=RHYTHM, overdue=overdue_workflow())
    child, name = new_child()
    moved, mname = new_child()
    t0 = w.clk.now
    enrol(w.a, child, name, "新河村", t0)
    enrol(w.a, moved, mname, "新河村", t0)
    w.clk.to(t0 + HOUR)
    enrol(w.bdir, moved, mname, "东风村", w.clk.now)     # director-b keeps this file now
    w.a.close()                                        # director-a is not connected...
    w.clk.to(t0 + 18 * HOUR + SECOND)
    m = check_reminder(wait_push(w.bdir, op="reminder", timeout=PROMPT,
                                 what="the new director's child"), moved, "contact", t0 + DAY)
    time.sleep(SETTLE)
    w.b.kill9()
    w.b.expect_clean_exit = False
    w.b.restart(same_endpoints=True)
    w.b.expect_clean_exit = True
    w.reconnect()                                      # ...and says hello after the crash
    got = reminders(w.a, wait=PROMPT)
    assert [(r["child"], r["kind"], r["due"]) for r in got] == [(child, "contact", t0 + DAY)], \
        f"director-a, connecting after the reminder time and a kill -9, gets its child's reminder " \
        f"(and not the child it no longer keeps): {got}"
    again = [r for r in reminders(w.bdir, wait=0.3)]
    assert [(r["id"], r["child"]) for r in again] == [(m["id"], moved)], \
        f"director-b's unconfirmed reminder is re-sent after its hello following the crash: {again}"


def test_child_no_rule_matches_has_no_rhythm(make_clock_broker, tmp_path, connect):
    rhythms = [rhythm("orphans", {"body.child.category": "orphan"}, contact="1d", visit="3d", remind="6h")]
    w = World(make_clock_broker, tmp_path, connect, rhythms=rhythms, overdue=overdue_workflow())
    ruled, rname = new_child()
    free, fname = new_child()
    t0 = w.clk.now
    enrol(w.a, ruled, rname, "新河村", t0, category=["left_behind", "orphan"])
    enrol(w.a, free, fname, "新河村", t0, category=["left_behind"])
    w.clk.to(t0 + 4 * DAY)
    evs = wait_overdue(w.sup, 5)
    assert {e["body"]["child"]["id"] for e in evs} == {ruled}, \
        f"a child no rhythm matches has no due times: {summary(evs)}"
    w.a.login(DIR_A)
    assert free not in {r["child"] for r in reminders(w.a)}, "a reminder for a child without rhythm"
    r = result(q(w.sup, what="register"), "register")
    assert [{k: row[k] for k in FIG_KEYS} for row in r["rows"]] == [
        {"village": "新河村", "director": DIR_A, "children": 2, "contacted": 0, "visited": 0,
         "contact_overdue": 1, "visit_overdue": 1}], r["rows"]
    due = result(q(w.a, what="register_due"), "register_due")["rows"]
    assert {row["child"] for row in due} == {ruled}, due


def test_register_query_parameters(make_clock_broker, tmp_path, connect):
    w = World(make_clock_broker, tmp_path, connect, rhythms=RHYTHM, overdue=overdue_workflow())
    child, name = new_child()
    t0 = w.clk.now
    enrol(w.a, child, name, "新河村", t0)
    for n in (0, 101, -1, "5"):
        assert_nack(q(w.sup, what="register_sample", n=n), "invalid", field="/n")
    assert_nack(q(w.a, what="register_due", within=-1), "invalid", field="/within")
    rows = result(q(w.a, what="register_due", within=12 * HOUR), "register_due")["rows"]
    assert rows == [], f"nothing is due within 12 h of the enrolment: {rows}"
    rows = result(q(w.a, what="register_due", within=DAY), "register_due")["rows"]
    assert [(r["child"], r["kind"], r["due"], r["overdue"]) for r in rows] == \
        [(child, "contact", t0 + DAY, False)], rows
    assert "last" not in rows[0], rows
    assert result(q(w.bdir, what="register_due"), "register_due")["rows"] == [], \
        "director-b sees none of director-a's children"
    assert result(q(w.sup, what="register_sample", seed="s"), "register_sample")["population"] == 1


def test_risk_changed_by_an_update_keeps_the_due_times_in_every_read(make_clock_broker, tmp_path,
                                                                      connect):
    """§9: a new enrolment updates the entry but does not move the due times (only visits
    do). When the update changes the rule (risk normal <-> elevated), the overdue events
    keep the due times already set (the broker does so), and the figures and
    register_due must say the same: a home visit not due until 72 h is not overdue at
    36 h, and a contact whose overdue event fired at 6 h is overdue."""
    rhythms = [rhythm("elevated", {"body.risk": "elevated"}, contact="6h", visit="1d", remind="0s"),
               rhythm("default", {}, contact="1d", visit="3d", remind="0s")]
    w = World(make_clock_broker, tmp_path, connect, rhythms=rhythms, overdue=overdue_workflow())
    up, uname = new_child()        # normal, raised to elevated at 2 h
    down, dname = new_child()      # elevated, lowered to normal at 2 h
    t0 = w.clk.now
    enrol(w.a, up, uname, "上村", t0, risk="normal")
    enrol(w.a, down, dname, "下村", t0, risk="elevated")
    w.clk.to(t0 + 2 * HOUR)
    enrol(w.a, up, uname, "上村", w.clk.now, risk="elevated", risk_reasons=["child_disabled"])
    enrol(w.a, down, dname, "下村", w.clk.now, risk="normal")
    w.clk.to(t0 + 7 * HOUR)
    evs = wait_overdue(w.sup, 1, why="the lowered child's contact stays due at 6 h")
    assert summary(evs) == [(down, "contact", t0 + 6 * HOUR, None)], summary(evs)

    def fig_rows():
        rows = result(q(w.sup, what="register"), "register")["rows"]
        return {row["village"]: (row["contact_overdue"], row["visit_overdue"]) for row in rows}

    def due_rows():
        rows = result(q(w.a, what="register_due"), "register_due")["rows"]
        return {(r["child"], r["kind"]): (r["due"], r["overdue"]) for r in rows}

    assert fig_rows() == {"上村": (0, 0), "下村": (1, 0)}, \
        (f"at 7 h (contact_overdue, visit_overdue) per village: the raised child's contact is due "
         f"at 24 h (not overdue), the lowered child's contact fell due at 6 h (its overdue event "
         f"was recorded): {fig_rows()}")
    d = due_rows()
    assert d.get((up, "contact")) == (t0 + DAY, False) and d.get((down, "contact"), (0, 0))[1] is True, \
        f"register_due at 7 h: raised child's contact due at 24 h, not overdue; lowered child's overdue: {d}"
    w.clk.to(t0 + 36 * HOUR + SECOND)
    evs = wait_overdue(w.sup, 1, child=up)
    assert of_kind(evs, "home_visit") == [], \
        f"the raised child's home visit stays due at 72 h: {summary(evs)}"
    assert fig_rows()["上村"] == (1, 0), \
        f"at 36 h the raised child's home visit is due at 72 h, not overdue: {fig_rows()}"
    due, late = due_rows()[(up, "home_visit")]
    assert (due, late) == (t0 + 3 * DAY, False), \
        f"register_due at 36 h: the raised child's home visit is due at 72 h ({t0 + 3 * DAY}), not " \
        f"overdue; it says due {due} ({(due - t0) / HOUR:.0f} h), overdue {late}"
    w.clk.to(t0 + 3 * DAY + SECOND)
    evs = wait_overdue(w.sup, 1, child=up)
    assert len(of_kind(evs, "home_visit")) == 1 and of_kind(evs, "home_visit")[0]["body"]["due"] == t0 + 3 * DAY


def test_restart_without_rhythms_stops_every_rhythm(make_clock_broker, tmp_path, connect):
    """CONFIG: a child no rule matches has no rhythm; with the `rhythms` key gone at a
    restart, no rule matches anyone: no overdue, no reminder; the children still count."""
    w = World(make_clock_broker, tmp_path, connect, rhythms=RHYTHM, overdue=overdue_workflow())
    child, name = new_child()
    t0 = w.clk.now
    enrol(w.a, child, name, "新河村", t0)
    w.clk.to(t0 + HOUR)
    del w.b.config["rhythms"]
    w.b.restart()
    w.reconnect()
    w.clk.to(t0 + 4 * DAY)
    assert settled_overdue(w.sup) == [], "no rhythms configured: nothing falls due"
    w.a.login(DIR_A)
    assert reminders(w.a) == []
    rows = result(q(w.sup, what="register"), "register")["rows"]
    assert [(r["children"], r["contact_overdue"], r["visit_overdue"]) for r in rows] == [(1, 0, 0)], rows


def test_store_verifies_after_register_activity_and_kill9(make_clock_broker, tmp_path, connect):
    """The register's entries and timers are part of what `verify` walks (online, and
    `carehubd verify --data` on the stopped store)."""
    w = World(make_clock_broker, tmp_path, connect, rhythms=RHYTHM, overdue=overdue_workflow())
    t0 = w.clk.now
    kids = [new_child() for _ in range(4)]
    for c, n in kids:
        enrol(w.a, c, n, "新河村", t0)
    w.clk.to(t0 + 12 * HOUR)
    visit(w.a, kids[0][0], "home_visit", w.clk.now)
    enrol(w.a, kids[1][0], kids[1][1], "新河村", w.clk.now, active=False)
    w.clk.to(t0 + DAY + SECOND)
    w.b.kill9()
    w.b.expect_clean_exit = False
    w.b.restart(same_endpoints=True)
    w.b.expect_clean_exit = True
    w.reconnect()
    w.clk.to(t0 + DAY + SECOND)
    assert len(wait_overdue(w.sup, 2)) == 2          # kids 2 and 3: their contacts
    v = result(q(w.sup, what="verify"), "verify")
    assert v["intact"] is True and v["problem"] == "", v
    assert w.b.stop() == 0
    r = h.run_bin(["verify", "--data", str(w.b.workdir / "data")], timeout=60)
    assert r.returncode == 0 and "intact" in r.stdout, f"verify exited {r.returncode}:\n{r.stdout}{r.stderr}"
