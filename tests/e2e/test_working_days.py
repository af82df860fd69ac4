"""PROTOCOL §10 working days, end to end: `Nwd` deadlines in Asia/Shanghai on the broker's
test clock: the acknowledgement deadline of a workflow step (`ack_within: 1wd`) and of the
fallback (`default_ack_within: 2wd`), quiet close (`quiet_close: 1wd`), an escalation
step (`after: 1wd`) and a register rhythm (`contact_every: 2wd`, `remind_before: 1wd`).

The test clock only moves forward from the wall clock, so the week used is the next one
that starts at least two days from now: day(0) is its Thursday. The calendar here is a
synthetic test calendar (Monday to Friday from 09:00, no holiday in that week), not an
official one: the arithmetic on the official 2026 calendar (holidays, 调休 days) is the
table of tests/unit/test_calendar.c, and config/calendar-cn-2026.yaml is checked there."""

import calendar as pycal
import datetime
import os


import carehub_harness as h
from carehub_harness import uid
from routing_harness import (CLOCK_AGENT, check_case_msg, clock, critical_report,  # noqa: F401
                             make_clock_broker, new_secret, receiver, routing_config, send_event,
                             wait_push)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def shanghai(y, mo, d, hh, mi, s=0):
    """Epoch ms of a local time in Asia/Shanghai (UTC+08:00 all year)."""
    return (pycal.timegm((y, mo, d, hh, mi, s)) - 8 * 3600) * 1000


def _base_thursday():
    """The local date (Asia/Shanghai) of the first Thursday at least two days from now."""
    today = datetime.datetime.fromtimestamp(h.now_ms() / 1000 + 8 * 3600,
                                            datetime.timezone.utc).date()
    d = today + datetime.timedelta(days=2)
    return d + datetime.timedelta(days=(3 - d.weekday()) % 7)


BASE = _base_thursday()


def day(n, hh, mi, s=0):
    """Epoch ms of hh:mi:s local time n days after the base Thursday (day(1): Friday,
    day(2), day(3): the weekend, day(4): Monday)."""
    d = BASE + datetime.timedelta(days=n)
    return shanghai(d.year, d.month, d.day, hh, mi, s)


# Monday to Friday from 09:00; the one holiday is weeks after the test's week (a list
# the loader checks, not one that changes the week's arithmetic).
TEST_CALENDAR = {"workdays": ["mon", "tue", "wed", "thu", "fri"], "workday_start": "09:00",
                 "holidays": [str(BASE + datetime.timedelta(days=60))]}


WORKFLOWS = [
    {"name": "first-days", "match": {"type": "absence", "body.consecutive_days": "<3"},
     "assign": []},
    {"name": "long", "match": {"type": "absence"},
     "assign": [{"agency": "education", "ack_within": "1wd"}]},
]


def start(make_clock_broker, tmp_path, workflows=WORKFLOWS, channels=None):
    cal = dict(TEST_CALENDAR)
    cfg = routing_config(tmp_path / "b", workflows=workflows, channels=channels,
                         broker={"timezone": "Asia/Shanghai", "default_ack_within": "2wd",
                                 "quiet_close": "1wd"})
    cfg["calendar"] = cal
    return make_clock_broker(config=cfg, name="b")


def test_ack_by_in_working_days(make_clock_broker, tmp_path, connect):
    b = start(make_clock_broker, tmp_path)
    clk = connect(b, login=CLOCK_AGENT)
    now = clock(clk, set=day(0, 17, 0))      # Thursday
    school = connect(b, login="school-0042")
    edu = connect(b, login="edu-desk")
    _, _, case = send_event(school, "absence", h.absence_body(uid("child"), consecutive_days=3))
    m = wait_push(edu, "case", lambda m: m.get("case") == case, what="the education assignment")
    assert m["opened"] == now
    assert m["ack_by"] == day(1, 17, 0), \
        f"ack_within 1wd from Thu day 0 17:00 is Fri day 1 17:00 (+08:00): got {m['ack_by']}"

    rep = connect(b, login="reporter-01")
    civil = connect(b, login="civil-desk")
    _, _, case2 = send_event(rep, "mandatory_report", critical_report(uid("child")))
    m2 = wait_push(civil, "case", lambda m: m.get("case") == case2, what="the fallback assignment")
    assert m2["ack_by"] == day(4, 17, 0), \
        f"default_ack_within 2wd from Thu day 0 17:00 is Mon day 4 17:00: got {m2['ack_by']}"

    clock(clk, set=day(2, 11, 0))               # Saturday: counts from Monday 09:00
    _, _, case3 = send_event(school, "absence", h.absence_body(uid("child"), consecutive_days=3))
    m3 = wait_push(edu, "case", lambda m: m.get("case") == case3, what="the Saturday assignment")
    assert m3["ack_by"] == day(5, 9, 0), \
        f"ack_within 1wd from Sat day 2 11:00 is Tue day 5 09:00: got {m3['ack_by']}"


def test_quiet_close_in_working_days(make_clock_broker, tmp_path, connect):
    b = start(make_clock_broker, tmp_path)
    clk = connect(b, login=CLOCK_AGENT)
    clock(clk, set=day(1, 10, 0))               # Friday
    school = connect(b, login="school-0042")
    child = uid("child")
    _, _, case1 = send_event(school, "absence", h.absence_body(child, consecutive_days=1))
    clock(clk, set=day(4, 9, 59))               # 3 days later, 1 working day
    _, _, same = send_event(school, "absence", h.absence_body(child, consecutive_days=1))
    assert same == case1, "quiet_close 1wd from Fri 10:00 is Mon 10:00: the case is still open"
    clock(clk, set=day(5, 10, 0))               # 1wd after Mon 09:59 has passed
    _, _, new = send_event(school, "absence", h.absence_body(child, consecutive_days=1))
    assert new != case1, "1wd after Mon 09:59 (Tue 09:59) the quiet case closed"


def test_escalation_after_in_working_days(make_clock_broker, tmp_path, receiver, connect):
    """An escalation step `after: 1wd` counts from ack_by: Fri 18:00 -> Mon 18:00."""
    wf = [{"name": "report", "match": {"type": "mandatory_report"},
           "assign": [{"agency": "police", "ack_within": "1h",
                       "escalate": [{"after": "1wd", "notify": ["duty-hook"]}]}]}]
    ch = [{"id": "duty-hook", "url": receiver.url("/duty"), "secret": new_secret()}]
    b = start(make_clock_broker, tmp_path, workflows=wf, channels=ch)
    clk = connect(b, login=CLOCK_AGENT)
    clock(clk, set=day(1, 17, 0))               # Friday
    rep = connect(b, login="reporter-01")
    police = connect(b, login="police-desk")
    _, _, case = send_event(rep, "mandatory_report", critical_report(uid("child")))
    m = wait_push(police, "case", lambda m: m.get("case") == case, what="the police assignment")
    assert m["ack_by"] == day(1, 18, 0)

    def overdue(r):
        try:
            return r.json.get("type") == "assignment.overdue"
        except Exception:  # noqa: BLE001
            return False
    clock(clk, set=day(4, 17, 59))              # Monday, before the step
    receiver.quiet("/duty", 0.5)
    assert not [r for r in receiver.requests if overdue(r)], \
        "after: 1wd from Fri 18:00 is Mon 18:00: nothing may escalate over the weekend"
    clock(clk, set=day(4, 18, 0, 1))
    got = receiver.wait("/duty", 1, timeout=5.0, pred=overdue)
    assert got[0].json["data"]["assignment"] == m["id"]


def test_resolve_within_and_escalate_unresolved_in_working_days(make_clock_broker, tmp_path,
                                                                receiver, connect):
    """`resolve_within: 1wd` counts from the acknowledgement (Thu 17:00 -> Fri 17:00) and
    an `escalate_unresolved` step `after: 1wd` from resolve_by (Fri 17:00 -> Mon 17:00):
    nothing fires over the weekend, the step fires Monday with stage "resolve"."""
    wf = [{"name": "report", "match": {"type": "mandatory_report"},
           "assign": [{"agency": "police", "ack_within": "1h", "resolve_within": "1wd",
                       "escalate_unresolved": [{"after": "1wd", "notify": ["duty-hook"]}]}]}]
    ch = [{"id": "duty-hook", "url": receiver.url("/duty"), "secret": new_secret()}]
    b = start(make_clock_broker, tmp_path, workflows=wf, channels=ch)
    clk = connect(b, login=CLOCK_AGENT)
    clock(clk, set=day(0, 17, 0))               # Thursday
    rep = connect(b, login="reporter-01")
    police = connect(b, login="police-desk")
    _, _, case = send_event(rep, "mandatory_report", critical_report(uid("child")))
    m = wait_push(police, "case", lambda m: m.get("case") == case, what="the police assignment")
    r = police.request({"v": 1, "op": "case_ack", "id": uid("ack"), "assignment": m["id"],
                        "by": "officer-1"})
    assert r.get("op") == "ack", r
    m2 = wait_push(police, "case", lambda x: x.get("id") == m["id"], what="the case with resolve_by")
    assert m2["resolve_by"] == day(1, 17, 0), (m2["resolve_by"], day(1, 17, 0))

    def overdue(r):
        try:
            return r.json.get("type") == "assignment.overdue"
        except Exception:  # noqa: BLE001
            return False
    clock(clk, set=day(4, 16, 59))              # Monday, before the step
    receiver.quiet("/duty", 0.5)
    assert not [r for r in receiver.requests if overdue(r)], \
        "after: 1wd from resolve_by Fri 17:00 is Mon 17:00: nothing may escalate over the weekend"
    clock(clk, set=day(4, 17, 0, 1))
    got = receiver.wait("/duty", 1, timeout=5.0, pred=overdue)
    d = got[0].json["data"]
    assert d["assignment"] == m["id"] and d["stage"] == "resolve" and d["resolve_by"] == day(1, 17, 0), d


def test_register_rhythm_in_working_days(make_clock_broker, tmp_path, connect):
    """contact_every: 2wd and remind_before: 1wd (§9 with §10): enrolled Thu day 0 10:00,
    the contact is due Mon day 4 10:00 (not Sat day 2), the reminder comes Fri day 1
    10:00 (one working day before the due date, at its time of day)."""
    import register_harness as rh
    from routing_harness import pushes
    cal = dict(TEST_CALENDAR)
    cfg = rh.register_config(tmp_path / "b",
                             rhythms=[rh.rhythm(contact="2wd", visit="30d", remind="1wd")],
                             broker={"timezone": "Asia/Shanghai"})
    cfg["calendar"] = cal
    b = make_clock_broker(config=cfg, name="b")
    clk = rh.Clock(connect(b, login=CLOCK_AGENT))
    sup = connect(b, login="supervisor-02")
    a = connect(b, login=rh.DIRECTORS[0])
    t0 = clk.to(day(0, 10, 0))                # Thursday
    child = uid("RC")
    rh.enrol(a, child, "CANARY-儿童-" + uid("n"), "新河村", t0)
    due = day(4, 10, 0)
    clk.to(day(1, 9, 59))
    assert pushes(a, op="reminder", wait=rh.SETTLE) == [], "the reminder is Fri 10:00, not before"
    clk.to(day(1, 10, 0, 1))
    m = wait_push(a, op="reminder", timeout=rh.PROMPT, what="1wd before the contact")
    assert (m.get("child"), m.get("kind"), m.get("due")) == (child, "contact", due), m
    clk.to(day(2, 10, 0, 1))                    # 2 calendar days: not yet due
    assert rh.settled_overdue(sup, child) == [], "contact_every 2wd over a weekend is Monday"
    clk.to(day(4, 10, 0, 1))
    evs = rh.wait_overdue(sup, 1, child=child, why="the contact is due Mon day 4 10:00")
    assert [(e["body"]["kind"], e["body"]["due"]) for e in evs] == [("contact", due)], rh.summary(evs)
