"""PROTOCOL §10 working days, end to end: `Nwd` deadlines on the official 2026 calendar
(config/calendar-cn-2026.yaml) in Asia/Shanghai, on the broker's test clock. The test
clock only moves forward from the wall clock, so the dates are the year end (no 2027
holidays are known: the weekend of 2027-01-02/03 still does not work): the
acknowledgement deadline of a workflow step (`ack_within: 1wd`) and of the fallback
(`default_ack_within: 2wd`), and quiet close (`quiet_close: 1wd`). The arithmetic on the
whole 2026 calendar is tests/unit/test_calendar.c."""

import calendar as pycal
import os

import pytest
import yaml

import carehub_harness as h
from carehub_harness import uid
from routing_harness import (CLOCK_AGENT, check_case_msg, clock, critical_report,  # noqa: F401
                             make_clock_broker, new_secret, receiver, routing_config, send_event,
                             wait_push)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def shanghai(y, mo, d, hh, mi, s=0):
    """Epoch ms of a local time in Asia/Shanghai (UTC+08:00 all year)."""
    return (pycal.timegm((y, mo, d, hh, mi, s)) - 8 * 3600) * 1000


WORKFLOWS = [
    {"name": "first-days", "match": {"type": "absence", "body.consecutive_days": "<3"},
     "assign": []},
    {"name": "long", "match": {"type": "absence"},
     "assign": [{"agency": "education", "ack_within": "1wd"}]},
]


def start(make_clock_broker, tmp_path, workflows=WORKFLOWS, channels=None):
    if h.now_ms() > shanghai(2026, 12, 31, 12, 0):
        pytest.skip("the test clock cannot go back to 2026-12-31 (it starts at the wall clock)")
    with open(os.path.join(ROOT, "config", "calendar-cn-2026.yaml"), encoding="utf-8") as f:
        cal = yaml.safe_load(f)["calendar"]
    cfg = routing_config(tmp_path / "b", workflows=workflows, channels=channels,
                         broker={"timezone": "Asia/Shanghai", "default_ack_within": "2wd",
                                 "quiet_close": "1wd"})
    cfg["calendar"] = cal
    return make_clock_broker(config=cfg, name="b")


def test_ack_by_in_working_days(make_clock_broker, tmp_path, connect):
    b = start(make_clock_broker, tmp_path)
    clk = connect(b, login=CLOCK_AGENT)
    now = clock(clk, set=shanghai(2026, 12, 31, 17, 0))      # Thursday
    school = connect(b, login="school-0042")
    edu = connect(b, login="edu-desk")
    _, _, case = send_event(school, "absence", h.absence_body(uid("child"), consecutive_days=3))
    m = wait_push(edu, "case", lambda m: m.get("case") == case, what="the education assignment")
    assert m["opened"] == now
    assert m["ack_by"] == shanghai(2027, 1, 1, 17, 0), \
        f"ack_within 1wd from Thu 12-31 17:00 is Fri 2027-01-01 17:00 (+08:00): got {m['ack_by']}"

    rep = connect(b, login="reporter-01")
    civil = connect(b, login="civil-desk")
    _, _, case2 = send_event(rep, "mandatory_report", critical_report(uid("child")))
    m2 = wait_push(civil, "case", lambda m: m.get("case") == case2, what="the fallback assignment")
    assert m2["ack_by"] == shanghai(2027, 1, 4, 17, 0), \
        f"default_ack_within 2wd from Thu 12-31 17:00 is Mon 2027-01-04 17:00: got {m2['ack_by']}"

    clock(clk, set=shanghai(2027, 1, 2, 11, 0))               # Saturday: counts from Monday 09:00
    _, _, case3 = send_event(school, "absence", h.absence_body(uid("child"), consecutive_days=3))
    m3 = wait_push(edu, "case", lambda m: m.get("case") == case3, what="the Saturday assignment")
    assert m3["ack_by"] == shanghai(2027, 1, 5, 9, 0), \
        f"ack_within 1wd from Sat 2027-01-02 11:00 is Tue 01-05 09:00: got {m3['ack_by']}"


def test_quiet_close_in_working_days(make_clock_broker, tmp_path, connect):
    b = start(make_clock_broker, tmp_path)
    clk = connect(b, login=CLOCK_AGENT)
    clock(clk, set=shanghai(2027, 1, 1, 10, 0))               # Friday
    school = connect(b, login="school-0042")
    child = uid("child")
    _, _, case1 = send_event(school, "absence", h.absence_body(child, consecutive_days=1))
    clock(clk, set=shanghai(2027, 1, 4, 9, 59))               # 3 days later, 1 working day
    _, _, same = send_event(school, "absence", h.absence_body(child, consecutive_days=1))
    assert same == case1, "quiet_close 1wd from Fri 10:00 is Mon 10:00: the case is still open"
    clock(clk, set=shanghai(2027, 1, 5, 10, 0))               # 1wd after Mon 09:59 has passed
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
    clock(clk, set=shanghai(2027, 1, 1, 17, 0))               # Friday
    rep = connect(b, login="reporter-01")
    police = connect(b, login="police-desk")
    _, _, case = send_event(rep, "mandatory_report", critical_report(uid("child")))
    m = wait_push(police, "case", lambda m: m.get("case") == case, what="the police assignment")
    assert m["ack_by"] == shanghai(2027, 1, 1, 18, 0)

    def overdue(r):
        try:
            return r.json.get("type") == "assignment.overdue"
        except Exception:  # noqa: BLE001
            return False
    clock(clk, set=shanghai(2027, 1, 4, 17, 59))              # Monday, before the step
    receiver.quiet("/duty", 0.5)
    assert not [r for r in receiver.requests if overdue(r)], \
        "after: 1wd from Fri 18:00 is Mon 18:00: nothing may escalate over the weekend"
    clock(clk, set=shanghai(2027, 1, 4, 18, 0, 1))
    got = receiver.wait("/duty", 1, timeout=5.0, pred=overdue)
    assert got[0].json["data"]["assignment"] == m["id"]


def test_register_rhythm_in_working_days(make_clock_broker, tmp_path, connect):
    """contact_every: 2wd and remind_before: 1wd (§9 with §10): enrolled Thu 12-31 10:00,
    the contact is due Mon 2027-01-04 10:00 (not Sat 01-02), the reminder comes Fri 01-01
    10:00 (one working day before the due date, at its time of day)."""
    import register_harness as rh
    from routing_harness import pushes
    if h.now_ms() > shanghai(2026, 12, 31, 9, 0):
        pytest.skip("the test clock cannot go back to 2026-12-31 (it starts at the wall clock)")
    with open(os.path.join(ROOT, "config", "calendar-cn-2026.yaml"), encoding="utf-8") as f:
        cal = yaml.safe_load(f)["calendar"]
    cfg = rh.register_config(tmp_path / "b",
                             rhythms=[rh.rhythm(contact="2wd", visit="30d", remind="1wd")],
                             broker={"timezone": "Asia/Shanghai"})
    cfg["calendar"] = cal
    b = make_clock_broker(config=cfg, name="b")
    clk = rh.Clock(connect(b, login=CLOCK_AGENT))
    sup = connect(b, login="supervisor-02")
    a = connect(b, login=rh.DIRECTORS[0])
    t0 = clk.to(shanghai(2026, 12, 31, 10, 0))                # Thursday
    child = uid("RC")
    rh.enrol(a, child, "CANARY-儿童-" + uid("n"), "新河村", t0)
    due = shanghai(2027, 1, 4, 10, 0)
    clk.to(shanghai(2027, 1, 1, 9, 59))
    assert pushes(a, op="reminder", wait=rh.SETTLE) == [], "the reminder is Fri 10:00, not before"
    clk.to(shanghai(2027, 1, 1, 10, 0, 1))
    m = wait_push(a, op="reminder", timeout=rh.PROMPT, what="1wd before the contact")
    assert (m.get("child"), m.get("kind"), m.get("due")) == (child, "contact", due), m
    clk.to(shanghai(2027, 1, 2, 10, 0, 1))                    # 2 calendar days: not yet due
    assert rh.settled_overdue(sup, child) == [], "contact_every 2wd over a weekend is Monday"
    clk.to(shanghai(2027, 1, 4, 10, 0, 1))
    evs = rh.wait_overdue(sup, 1, child=child, why="the contact is due Mon 2027-01-04 10:00")
    assert [(e["body"]["kind"], e["body"]["due"]) for e in evs] == [("contact", due)], rh.summary(evs)
