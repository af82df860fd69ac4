"""Intake: session (PROTOCOL §3), envelope (§2), events, acks and cases (§4, §8).

Every test drives the real broker over a DEALER as an outside agent would.
"""

import time

import pytest

import carehub_harness as h
from carehub_harness import assert_ack, assert_nack, uid

ROLES = ["school", "reporter", "monitor", "agency", "supervisor"]
TYPES = ["absence", "mandatory_report", "online_risk"]
ALLOWED = {("school", "absence"), ("school", "mandatory_report"),
           ("reporter", "mandatory_report"), ("monitor", "online_risk")}


@pytest.fixture
def school(broker, connect):
    return connect(broker, login="school-0042")


@pytest.fixture
def reporter(broker, connect):
    return connect(broker, login="reporter-01")


@pytest.fixture
def monitor(broker, connect):
    return connect(broker, login="monitor-01")


# ---------------------------------------------------------------- session

@pytest.mark.parametrize("role", ROLES)
def test_hello_welcome(broker, connect, role):
    a = connect(broker)
    agent = h.ROLE_AGENT[role]
    mid = uid("hello")
    w = a.hello(agent, id=mid)
    assert w.get("op") == "welcome", w
    assert w.get("v") == 1 and h.is_uint(w["v"]), w
    assert w.get("id") == mid, w
    assert w.get("agent") == agent, w
    assert w.get("role") == role, w
    assert h.is_uint(w.get("heartbeat_ms")) and w["heartbeat_ms"] == h.HEARTBEAT_MS, \
        f"heartbeat_ms should be the configured heartbeat ({h.HEARTBEAT} = {h.HEARTBEAT_MS}): {w!r}"


def test_hello_unknown_agent_unauthorized(broker, connect):
    a = connect(broker)
    mid = uid("hello")
    assert_nack(a.hello("school-9999", id=mid), "unauthorized", id=mid)
    # a refused hello opens no session
    pid = uid("ping")
    assert_nack(a.ping(id=pid), "hello_required", id=pid)


def test_hello_without_agent_refused(broker, connect):
    a = connect(broker)
    mid = uid("hello")
    r = a.request({"v": 1, "op": "hello", "id": mid, "software": "e2e"})
    assert_nack(r, None, codes={"malformed", "invalid", "unauthorized"}, id=mid)
    assert_nack(a.ping(), "hello_required")


@pytest.mark.parametrize("what", ["event", "ping"])
def test_anything_before_hello_needs_hello(broker, connect, what):
    a = connect(broker)
    mid = uid(what)
    if what == "event":
        msg = h.event_msg("absence", h.absence_body(), mid)
    else:
        msg = {"v": 1, "op": "ping", "id": mid}
    assert_nack(a.request(msg), "hello_required", id=mid)


def test_hello_is_per_connection(broker, connect):
    connect(broker, login="school-0042")
    other = connect(broker)          # same agent, new connection, no hello yet
    mid = uid("ev")
    assert_nack(other.event("absence", h.absence_body(), id=mid), "hello_required", id=mid)


def test_event_refused_for_hello_is_not_stored(broker, connect):
    a = connect(broker)
    mid = uid("ev")
    msg = h.event_msg("absence", h.absence_body(), mid)
    assert_nack(a.request(msg), "hello_required", id=mid)
    a.login("school-0042")
    assert_ack(a.request(msg), mid, duplicate=False)


def test_broker_restart_requires_new_hello(make_broker, connect):
    b = make_broker()
    a = connect(b, login="school-0042")
    mid = uid("ev")
    msg = h.event_msg("absence", h.absence_body(), mid)
    ev, case = assert_ack(a.request(msg), mid)

    rc = b.restart(same_endpoints=True)       # SIGTERM, then the same port again
    assert rc == 0, f"SIGTERM exit code {rc}"

    # The same DEALER reconnects by itself; its session is gone.
    reply = None
    for _ in range(3):
        pid = uid("ping")
        a.send({"v": 1, "op": "ping", "id": pid})
        reply = a.recv_reply(timeout=5)
        if reply is not None:
            break
    assert_nack(reply, "hello_required", id=pid)
    a.login("school-0042")
    pid = uid("ping")
    r = a.ping(id=pid)
    assert r.get("op") == "pong" and r.get("id") == pid, r
    # the event acked before the restart is still there
    assert assert_ack(a.request(msg), mid, duplicate=True) == (ev, case)


def test_ping_pong(broker, connect):
    a = connect(broker, login="monitor-01")
    for _ in range(3):
        pid = uid("ping")
        r = a.ping(id=pid)
        assert r.get("v") == 1 and r.get("op") == "pong" and r.get("id") == pid, r


def test_id_of_64_bytes_is_accepted(broker, connect):
    a = connect(broker, login="monitor-01")
    pid = "a.b:c-D_" * 8
    assert len(pid) == 64
    r = a.ping(id=pid)
    assert r.get("op") == "pong" and r.get("id") == pid, r


def test_broker_pings_an_idle_agent(make_broker, connect):
    b = make_broker(overrides={"broker": {"heartbeat": "500ms"}})
    a = connect(b)
    w = a.login("school-0042")
    assert w.get("heartbeat_ms") == 500, w
    msg = a.recv_msg(timeout=4)     # raw: we want to see the broker's ping
    assert msg is not None, "no ping from the broker within 4 s with heartbeat 500ms"
    assert msg.get("op") == "ping" and msg.get("v") == 1, msg
    assert isinstance(msg.get("id"), str) and h.ID_RE.match(msg["id"]), msg
    a.send({"v": 1, "op": "pong", "id": msg["id"]})
    r = a.ping()       # the session is intact
    assert r.get("op") == "pong", r


def test_hello_stays_valid_after_silence(make_broker, connect):
    """After three heartbeats without traffic the agent is gone for pushes, but
    its hello stays valid (PROTOCOL §3)."""
    b = make_broker(overrides={"broker": {"heartbeat": "200ms"}})
    a = connect(b, login="school-0042")
    pings = []
    end = time.monotonic() + 1.2          # 6 intervals, answering nothing
    while time.monotonic() < end:
        m = a.recv_msg(timeout=max(0.0, end - time.monotonic()))
        if m is not None:
            pings.append(m)
    assert pings and all(m.get("op") == "ping" for m in pings), pings
    mid = uid("ev")
    assert_ack(a.event("absence", h.absence_body(), id=mid), mid)


# ---------------------------------------------------------------- envelope

def _ping(**fields):
    msg = {"v": 1, "op": "ping", "id": uid("env")}
    for k, v in fields.items():
        if v is h.DELETE:
            msg.pop(k)
        else:
            msg[k] = v
    return msg


ENVELOPE_CASES = [
    # (name, message, code, id expectation: "same" | "none" | "any")
    ("v-missing", _ping(v=h.DELETE), "malformed", "same"),
    ("v-string", _ping(v="1"), "malformed", "same"),
    ("v-bool", _ping(v=True), "malformed", "same"),
    ("v-float", _ping(v=1.5), "malformed", "same"),
    ("v-nil", _ping(v=None), "malformed", "same"),
    ("v-list", _ping(v=[1]), "malformed", "same"),
    ("v-2", _ping(v=2), "version", "same"),
    ("v-0", _ping(v=0), "version", "same"),
    ("op-missing", _ping(op=h.DELETE), "malformed", "same"),
    ("op-int", _ping(op=7), "malformed", "same"),
    ("op-nil", _ping(op=None), "malformed", "same"),
    ("op-bin", _ping(op=b"ping"), "malformed", "same"),
    ("op-unknown", _ping(op="frobnicate"), "unknown_op", "same"),
    ("op-wrong-case", _ping(op="PING"), "unknown_op", "same"),
    ("id-missing", _ping(id=h.DELETE), "malformed", "none"),
    ("id-int", _ping(id=42), "malformed", "none"),
    ("id-nil", _ping(id=None), "malformed", "none"),
    ("id-list", _ping(id=["a"]), "malformed", "none"),
    ("id-bin", _ping(id=b"abc"), "malformed", "any"),
    ("id-empty", _ping(id=""), "malformed", "none"),
    ("id-space", _ping(id="a b"), "malformed", "same-or-none"),
    ("id-slash", _ping(id="a/b"), "malformed", "same-or-none"),
    ("id-nonascii", _ping(id="ü"), "malformed", "same-or-none"),
    ("id-nul", _ping(id="a\x00b"), "malformed", "same-or-none"),
    ("id-65-bytes", _ping(id="x" * 65), "malformed", "same-or-none"),
]


@pytest.mark.parametrize("name,msg,code,idrule", ENVELOPE_CASES, ids=[c[0] for c in ENVELOPE_CASES])
def test_envelope_errors(broker, connect, name, msg, code, idrule):
    a = connect(broker, login="monitor-01")
    r = a.request(msg)
    assert_nack(r, code)
    sent = msg.get("id")
    if idrule == "same":
        assert r.get("id") == sent, f"nack should carry the id {sent!r}: {r!r}"
    elif idrule == "none":
        assert "id" not in r, f"nack to a message without a readable id must carry no id: {r!r}"
    elif idrule == "same-or-none":
        assert "id" not in r or r["id"] == sent, r
    # the connection is still usable
    assert a.ping().get("op") == "pong"


# ---------------------------------------------------------------- roles and types

@pytest.mark.parametrize("role", ROLES)
def test_unknown_type_for_every_role(broker, connect, role):
    a = connect(broker, login=h.ROLE_AGENT[role])
    mid = uid("ev")
    assert_nack(a.event("weather_report", h.absence_body(), id=mid), "unknown_type", id=mid)


@pytest.mark.parametrize("role,type", [(r, t) for r in ROLES for t in TYPES])
def test_role_may_send_type(broker, connect, role, type):
    a = connect(broker, login=h.ROLE_AGENT[role])
    mid = uid("ev")
    r = a.event(type, h.valid_body(type, child_id=uid("child")), id=mid)
    if (role, type) in ALLOWED:
        assert_ack(r, mid)
    else:
        assert_nack(r, "forbidden", id=mid)


def test_forbidden_event_is_not_stored(broker, school):
    mid = uid("ev")
    assert_nack(school.event("online_risk", h.online_risk_body(), id=mid), "forbidden", id=mid)
    assert_ack(school.event("absence", h.absence_body(), id=mid), mid, duplicate=False)


# ---------------------------------------------------------------- bodies

def _mut(base, path, value):
    """Copy body and set (or delete, value=DELETE) the value at path ('child/name')."""
    import copy
    body = copy.deepcopy(base)
    keys = path.split("/")
    cur = body
    for k in keys[:-1]:
        cur = cur[k]
    if value is h.DELETE:
        del cur[keys[-1]]
    else:
        cur[keys[-1]] = value
    return body


A, M, O = h.absence_body, h.mandatory_report_body, lambda: h.online_risk_body()

INVALID_CASES = [
    # name, role agent, type, body factory, expected field (str or set)
    ("birth_date-not-a-date", "school-0042", "absence",
     lambda: _mut(A(), "child/birth_date", "2015-13-45"), "/body/child/birth_date"),
    ("birth_date-words", "school-0042", "absence",
     lambda: _mut(A(), "child/birth_date", "yesterday"), "/body/child/birth_date"),
    ("birth_date-int", "school-0042", "absence",
     lambda: _mut(A(), "child/birth_date", 20150101), "/body/child/birth_date"),
    ("date-feb-30", "school-0042", "absence",
     lambda: _mut(A(), "date", "2025-02-30"), "/body/date"),
    ("reason-bad-enum", "school-0042", "absence",
     lambda: _mut(A(), "reason", "bored"), "/body/reason"),
    ("reason-missing", "school-0042", "absence",
     lambda: _mut(A(), "reason", h.DELETE), "/body/reason"),
    ("school-missing", "school-0042", "absence",
     lambda: _mut(A(), "school", h.DELETE), "/body/school"),
    ("date-missing", "school-0042", "absence",
     lambda: _mut(A(), "date", h.DELETE), "/body/date"),
    ("consecutive_days-zero", "school-0042", "absence",
     lambda: _mut(A(), "consecutive_days", 0), "/body/consecutive_days"),
    ("consecutive_days-string", "school-0042", "absence",
     lambda: _mut(A(), "consecutive_days", "3"), "/body/consecutive_days"),
    ("consecutive_days-missing", "school-0042", "absence",
     lambda: _mut(A(), "consecutive_days", h.DELETE), "/body/consecutive_days"),
    ("period-bad-enum", "school-0042", "absence",
     lambda: _mut(A(), "period", "evening"), "/body/period"),
    ("guardian_contacted-string", "school-0042", "absence",
     lambda: _mut(A(), "guardian_contacted", "yes"), "/body/guardian_contacted"),
    ("absence-child-missing", "school-0042", "absence",
     lambda: _mut(A(), "child", h.DELETE), "/body/child"),
    ("absence-child-id-missing", "school-0042", "absence",
     lambda: _mut(A(), "child/id", h.DELETE), "/body/child/id"),
    ("child-name-missing", "school-0042", "absence",
     lambda: _mut(A(), "child/name", h.DELETE), "/body/child/name"),
    ("child-name-int", "school-0042", "absence",
     lambda: _mut(A(), "child/name", 7), "/body/child/name"),
    ("child-not-a-map", "school-0042", "absence",
     lambda: _mut(A(), "child", "李明"), "/body/child"),
    ("severity-bad-enum", "school-0042", "absence",
     lambda: _mut(A(), "severity", "urgent"), "/body/severity"),
    ("gender-bad-enum", "school-0042", "absence",
     lambda: _mut(A(), "child/gender", "boy"), "/body/child/gender"),
    ("category-bad-item", "school-0042", "absence",
     lambda: _mut(A(), "child/category", ["orphan", "rich"]), "/body/child/category/1"),
    ("category-not-a-list", "school-0042", "absence",
     lambda: _mut(A(), "child/category", "orphan"), "/body/child/category"),
    ("guardian-phone-int", "school-0042", "absence",
     lambda: _mut(A(), "child/guardian", {"name": "李强", "phone": 13800000000}), "/body/child/guardian/phone"),
    ("guardian-misspelt", "school-0042", "absence",
     lambda: _mut(A(), "child/guardian", {"nmae": "李强"}), "/body/child/guardian/nmae"),
    ("misspelt-guardian_contactd", "school-0042", "absence",
     lambda: _mut(A(), "guardian_contactd", True), "/body/guardian_contactd"),
    ("misspelt-chlid-absence", "school-0042", "absence",
     lambda: {**{k: v for k, v in A().items() if k != "child"}, "chlid": {"id": "c1", "name": "李明"}},
     {"/body/chlid", "/body/child"}),
    ("child-misspelt-nmae", "school-0042", "absence",
     lambda: _mut(A(), "child/nmae", "x"), {"/body/child/nmae"}),
    ("note-4001-bytes", "school-0042", "absence",
     lambda: _mut(A(), "note", "n" * 4001), "/body/note"),
    ("note-int", "school-0042", "absence",
     lambda: _mut(A(), "note", 5), "/body/note"),
    ("reporter-missing", "reporter-01", "mandatory_report",
     lambda: _mut(M(), "reporter", h.DELETE), "/body/reporter"),
    ("reporter-organisation-missing", "reporter-01", "mandatory_report",
     lambda: _mut(M(), "reporter", {"name": "赵老师"}), "/body/reporter/organisation"),
    ("reporter-misspelt-phnoe", "reporter-01", "mandatory_report",
     lambda: _mut(M(), "reporter", {"organisation": "x", "phnoe": "1"}), "/body/reporter/phnoe"),
    ("harm-bad-enum", "reporter-01", "mandatory_report",
     lambda: _mut(M(), "harm", "theft"), "/body/harm"),
    ("harm-missing", "reporter-01", "mandatory_report",
     lambda: _mut(M(), "harm", h.DELETE), "/body/harm"),
    ("description-empty", "reporter-01", "mandatory_report",
     lambda: _mut(M(), "description", ""), "/body/description"),
    ("description-4001-bytes", "reporter-01", "mandatory_report",
     lambda: _mut(M(), "description", "d" * 4001), "/body/description"),
    ("description-missing", "reporter-01", "mandatory_report",
     lambda: _mut(M(), "description", h.DELETE), "/body/description"),
    ("immediate_danger-string", "reporter-01", "mandatory_report",
     lambda: _mut(M(), "immediate_danger", "true"), "/body/immediate_danger"),
    ("suspected-int", "reporter-01", "mandatory_report",
     lambda: _mut(M(), "suspected", 1), "/body/suspected"),
    ("occurred_at-string", "reporter-01", "mandatory_report",
     lambda: _mut(M(), "occurred_at", "yesterday"), "/body/occurred_at"),
    ("report-child-missing", "reporter-01", "mandatory_report",
     lambda: _mut(M(), "child", h.DELETE), "/body/child"),
    ("report-child-name-missing", "reporter-01", "mandatory_report",
     lambda: _mut(M(), "child", {"id": "c-1"}), "/body/child/name"),
    ("risk-bad-enum", "monitor-01", "online_risk",
     lambda: _mut(O(), "risk", "spam"), "/body/risk"),
    ("risk-missing", "monitor-01", "online_risk",
     lambda: _mut(O(), "risk", h.DELETE), "/body/risk"),
    ("platform-missing", "monitor-01", "online_risk",
     lambda: _mut(O(), "platform", h.DELETE), "/body/platform"),
    ("url-int", "monitor-01", "online_risk",
     lambda: _mut(O(), "url", 42), "/body/url"),
    ("misspelt-chlid-online", "monitor-01", "online_risk",
     lambda: _mut(O(), "chlid", {"name": "张伟"}), "/body/chlid"),
    ("online-child-without-name", "monitor-01", "online_risk",
     lambda: _mut(O(), "child", {"id": "c-2"}), "/body/child/name"),
    ("body-unknown-top-field", "monitor-01", "online_risk",
     lambda: _mut(O(), "colour", "red"), "/body/colour"),
]


@pytest.mark.parametrize("name,agent,type,make,field", INVALID_CASES, ids=[c[0] for c in INVALID_CASES])
def test_invalid_body(broker, connect, name, agent, type, make, field):
    a = connect(broker, login=agent)
    mid = uid("inv")
    r = a.event(type, make(), id=mid)
    assert_nack(r, "invalid", id=mid, field=field)
    # nothing was stored: the same id with a valid body is new
    assert_ack(a.event(type, h.valid_body(type, child_id=uid("child")), id=mid), mid, duplicate=False)


VALID_CASES = [
    ("absence-all-fields", "school-0042", "absence", lambda: h.absence_body(
        severity="high", period="morning", guardian_contacted=False, note="n" * 4000,
        consecutive_days=3, reason="sick",
        child={"id": uid("c"), "name": "李明", "gender": "male", "birth_date": "2016-02-29",
               "category": ["left_behind", "in_difficulty", "orphan", "unattended", "disabled", "other"],
               "jurisdiction": "新河街道", "guardian": {"name": "李强", "relation": "grandfather",
                                                    "phone": "+8613800000000"}})),
    ("absence-note-4000-bytes-multibyte", "school-0042", "absence",
     lambda: h.absence_body(note="中" * 1333 + "a")),
    ("report-description-4000-bytes-multibyte", "reporter-01", "mandatory_report",
     lambda: h.mandatory_report_body(description="危" * 1333 + "b")),
    ("report-all-fields", "reporter-01", "mandatory_report", lambda: h.mandatory_report_body(
        child_id=uid("c"), severity="critical", suspected=True, immediate_danger=True,
        location="新河街道 3 号", occurred_at=h.now_ms() - 3600_000, description="d" * 4000,
        reporter={"organisation": "滨海医院", "name": "赵医生", "role": "doctor", "phone": "022-1234"})),
    ("report-from-school", "school-0042", "mandatory_report", lambda: h.mandatory_report_body()),
    ("online-all-fields", "monitor-01", "online_risk", lambda: h.online_risk_body(
        risk="suicide", severity="critical", url="https://example.org/p/1", account="user1",
        evidence="screenshot 1", description="signals of suicide",
        child={"id": uid("c"), "name": "张伟", "gender": "unknown"})),
    ("online-no-child", "monitor-01", "online_risk", lambda: h.online_risk_body(risk="grooming")),
]


@pytest.mark.parametrize("name,agent,type,make", VALID_CASES, ids=[c[0] for c in VALID_CASES])
def test_valid_body(broker, connect, name, agent, type, make):
    a = connect(broker, login=agent)
    mid = uid("ok")
    assert_ack(a.event(type, make(), id=mid), mid)


@pytest.mark.parametrize("risk", ["cyberbullying", "doxxing", "privacy_leak", "self_harm", "suicide",
                                  "sexual_content", "grooming", "gambling", "addiction", "other"])
def test_every_risk_accepted(broker, monitor, risk):
    mid = uid("risk")
    assert_ack(monitor.event("online_risk", h.online_risk_body(risk=risk), id=mid), mid)


# ---------------------------------------------------------------- acks, retries, cases

def test_ack_and_retry(broker, school):
    mid = uid("ev")
    msg = h.event_msg("absence", h.absence_body(), mid)
    r = school.request(msg)
    ev, case = assert_ack(r, mid, duplicate=False)
    for _ in range(2):
        assert assert_ack(school.request(msg), mid, duplicate=True) == (ev, case)


def test_retry_from_new_connection_is_duplicate(broker, school, connect):
    mid = uid("ev")
    msg = h.event_msg("absence", h.absence_body(), mid)
    first = assert_ack(school.request(msg), mid)
    again = connect(broker, login="school-0042")
    assert assert_ack(again.request(msg), mid, duplicate=True) == first


def test_same_id_other_agent_is_other_event(broker, school, reporter):
    mid = uid("shared")
    body = h.mandatory_report_body(child_id=uid("c"))
    ev1, _ = assert_ack(school.event("mandatory_report", body, id=mid), mid, duplicate=False)
    ev2, _ = assert_ack(reporter.event("mandatory_report", body, id=mid), mid, duplicate=False)
    assert ev1 != ev2
    # each agent's retry maps to its own event
    assert assert_ack(school.event("mandatory_report", body, id=mid), mid, duplicate=True)[0] == ev1
    assert assert_ack(reporter.event("mandatory_report", body, id=mid), mid, duplicate=True)[0] == ev2


def test_events_get_distinct_ids(broker, school):
    evs = set()
    for _ in range(5):
        mid = uid("ev")
        evs.add(assert_ack(school.event("absence", h.absence_body(), id=mid), mid)[0])
    assert len(evs) == 5


def test_same_child_same_type_same_case(broker, school):
    child = uid("child")
    cases, evs = set(), set()
    for day in (3, 4, 5):
        mid = uid("ev")
        ev, case = assert_ack(school.event("absence", h.absence_body(child, date=f"2025-03-0{day}",
                                                                     consecutive_days=day - 2), id=mid), mid)
        cases.add(case)
        evs.add(ev)
    assert len(cases) == 1, f"absences about one child opened several cases: {cases}"
    assert len(evs) == 3


def test_same_child_from_two_agents_same_case(broker, school, reporter):
    child = uid("child")
    m1, m2 = uid("ev"), uid("ev")
    _, c1 = assert_ack(school.event("mandatory_report", h.mandatory_report_body(child), id=m1), m1)
    _, c2 = assert_ack(reporter.event("mandatory_report", h.mandatory_report_body(child), id=m2), m2)
    assert c1 == c2


def test_different_child_different_case(broker, school):
    m1, m2 = uid("ev"), uid("ev")
    _, c1 = assert_ack(school.event("absence", h.absence_body(uid("child")), id=m1), m1)
    _, c2 = assert_ack(school.event("absence", h.absence_body(uid("child")), id=m2), m2)
    assert c1 != c2


def test_same_child_different_type_different_case(broker, school):
    child = uid("child")
    m1, m2 = uid("ev"), uid("ev")
    _, c1 = assert_ack(school.event("absence", h.absence_body(child), id=m1), m1)
    _, c2 = assert_ack(school.event("mandatory_report", h.mandatory_report_body(child), id=m2), m2)
    assert c1 != c2, "an absence and a mandatory report about one child share a case"


def test_online_risk_without_child_is_own_case(broker, monitor):
    cases = set()
    for _ in range(3):
        mid = uid("ev")
        cases.add(assert_ack(monitor.event("online_risk", h.online_risk_body(), id=mid), mid)[1])
    assert len(cases) == 3


def test_child_without_id_is_own_case(broker, reporter):
    cases = set()
    for _ in range(2):
        mid = uid("ev")
        cases.add(assert_ack(reporter.event("mandatory_report", h.mandatory_report_body(), id=mid), mid)[1])
    assert len(cases) == 2


def test_online_risk_same_child_same_case(broker, monitor):
    child = uid("child")
    cases = set()
    for risk in ("cyberbullying", "doxxing"):
        mid = uid("ev")
        body = h.online_risk_body(risk=risk, child={"id": child, "name": "张伟"})
        cases.add(assert_ack(monitor.event("online_risk", body, id=mid), mid)[1])
    assert len(cases) == 1
