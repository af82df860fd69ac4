"""Metric values against a running broker (issue 12, "tests that can fail"): the exact
figures on /metrics (docs/metrics.md) move as the situation a test drives says they
must, and by nothing else.

  carehub_escalations_total      one per escalation step fired, on the test clock
  carehub_assignments_overdue    open (unacknowledged) assignments past ack_by
  carehub_webhook_failures_total one per notice given up at max_age
  carehub_notices_pending        notices in the outbox, neither delivered nor given up
  carehub_events_total           events stored: counted after the commit, so an event
                                 refused `unavailable` (full map, full disk) is not

Deadlines, retries and max_age run on the injectable test clock (--test-clock);
scrapes are polled only until the broker has acted on what a test did (an effect
is applied after the turn's commit), then the value must stay put.
"""

import re
import time

import carehub_harness as h
from carehub_harness import assert_ack, assert_nack, uid
from routing_harness import (  # noqa: F401  (fixtures)
    CLOCK_AGENT, case_ack, clock, critical_report, make_clock_broker, new_secret, receiver,
    routing_config, send_event, wait_push, webhook_channel)
from test_faults import small_disk  # noqa: F401  (fixture: a 2 MiB tmpfs)

PROMPT = 3.0        # real seconds for the broker to act on a move of the clock

METRICS = {"metrics": "127.0.0.1:0"}


def sample(text, name):
    """The value of sample `name` (with its labels, e.g. 'x{type="absence"}') in text."""
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, f"{name} not on /metrics:\n{text[:3000]}"
    return float(m.group(1))


def settles_at(b, name, want, timeout=PROMPT, stay=0.3):
    """Wait until /metrics shows `name` == want, then check it stays there (a counter
    that overshoots fails here rather than passing on its way up)."""
    deadline = time.monotonic() + timeout
    while True:
        got = sample(b.metrics_text(), name)
        if got == want:
            break
        assert time.monotonic() < deadline, f"{name} is {got:g}, expected {want:g} within {timeout}s"
        time.sleep(0.05)
    time.sleep(stay)
    got = sample(b.metrics_text(), name)
    assert got == want, f"{name} reached {want:g}, then moved on to {got:g}"


def values(b, *names):
    text = b.metrics_text()
    return tuple(sample(text, n) for n in names)


# ---------------------------------------------------------------- escalations, overdue

def test_escalations_and_overdue_follow_the_clock(make_clock_broker, tmp_path, receiver, connect):
    """Two reports to police, ack_within 1h, two escalation steps (at ack_by, and 30 min
    after). Nothing counts before ack_by; at ack_by both first steps fire (2), and past it
    both assignments are overdue; an ack takes one out of the overdue gauge and out of the second
    step, which fires for the other alone (3); nothing more fires however far the clock goes."""
    secret = new_secret()
    wf = [{"name": "danger", "match": {"type": "mandatory_report"},
           "assign": [{"agency": "police", "ack_within": "1h",
                       "escalate": [{"after": "0s", "notify": ["duty"]},
                                    {"after": "30m", "notify": ["duty"]}]}]}]
    cfg = routing_config(tmp_path / "b", workflows=wf, broker=METRICS,
                         channels=[webhook_channel("duty", receiver.url("/duty"), secret)])
    b = make_clock_broker(config=cfg, name="b")
    clk = connect(b, login=CLOCK_AGENT)
    police = connect(b, login="police-desk")
    rep = connect(b, login="reporter-01")
    ids = []
    for _ in range(2):
        send_event(rep, "mandatory_report", critical_report(uid("child")))
        ids.append(wait_push(police)["id"])
    esc, over = "carehub_escalations_total", "carehub_assignments_overdue"
    assert values(b, esc, over) == (0, 0)

    clock(clk, advance=3_600_000 - 1)               # 1 ms before ack_by: nothing is due
    time.sleep(0.3)
    assert values(b, esc, over) == (0, 0), "nothing is due before ack_by"
    assert not receiver.at("/duty")

    clock(clk, advance=1)                           # at ack_by: `after: 0s` is "at the deadline"
    settles_at(b, esc, 2)                           # (docs/config.md): step 1 of both
    receiver.wait("/duty", 2, timeout=PROMPT)
    clock(clk, advance=1)                           # past ack_by: both overdue
    settles_at(b, over, 2)
    assert values(b, esc) == (2,)

    assert case_ack(police, ids[0])[1].get("op") == "ack"
    settles_at(b, over, 1)
    assert values(b, esc) == (2,), "an ack fires no step"

    clock(clk, advance=30 * 60_000)                 # step 2: only the unacknowledged one
    settles_at(b, esc, 3)
    assert values(b, over) == (1,)
    receiver.wait("/duty", 3, timeout=PROMPT)

    clock(clk, advance=7 * 24 * 3_600_000)          # no step 3
    settles_at(b, esc, 3, stay=0.5)
    assert values(b, over) == (1,)
    assert len(receiver.at("/duty")) == 3, receiver.requests


# ---------------------------------------------------------------- webhook failures, pending

def hook_broker(make_clock_broker, tmp_path, receiver, connect, **chan):
    """police gets case.assigned on /hook (scripted by the test); fallback channel /ops."""
    wf = [{"name": "danger", "match": {"type": "mandatory_report"},
           "assign": [{"agency": "police", "ack_within": "1d"}]}]
    hook = webhook_channel("hook", receiver.url("/hook"), new_secret(), fallback="ops", **chan)
    ops = webhook_channel("ops", receiver.url("/ops"), new_secret())
    cfg = routing_config(tmp_path / "b", workflows=wf, broker=METRICS, channels=[hook, ops],
                         agencies=[{"id": "police", "channels": ["hook"]}])
    b = make_clock_broker(config=cfg, name="b")
    return b, connect(b, login=CLOCK_AGENT), connect(b, login="reporter-01")


def test_webhook_failures_count_notices_given_up_at_max_age(make_clock_broker, tmp_path, receiver,
                                                            connect):
    """Two notices to a receiver that answers 500 until max_age (30 s): both pending while
    they are retried, no failure before max_age; past it both are given up (failures 2),
    the fallback is told twice and, once it took them, nothing is pending."""
    receiver.script("/hook", [500])
    b, clk, rep = hook_broker(make_clock_broker, tmp_path, receiver, connect, max_age="30s")
    fail, pend = "carehub_webhook_failures_total", "carehub_notices_pending"
    assert values(b, fail, pend) == (0, 0)
    for _ in range(2):
        send_event(rep, "mandatory_report", critical_report(uid("child")))
    receiver.answered("/hook", 2, timeout=PROMPT)
    assert values(b, fail, pend) == (0, 2)
    for step in (2000, 4000, 8000, 5000):           # t = 2, 6, 14, 19 s: retrying
        clock(clk, advance=step)
        time.sleep(0.2)
        assert values(b, fail, pend) == (0, 2), f"before max_age (t advanced {step} ms)"
    assert not receiver.at("/ops")

    clock(clk, advance=12_000)                      # t = 31 s: past max_age
    clock(clk, advance=60_000)
    receiver.wait("/ops", 2, timeout=PROMPT)
    settles_at(b, fail, 2)
    settles_at(b, pend, 0)
    attempts = len(receiver.at("/hook"))
    clock(clk, advance=24 * 3_600_000)
    settles_at(b, fail, 2, stay=0.5)
    assert values(b, pend) == (0,)
    assert len(receiver.at("/hook")) == attempts, "given up: no attempt after max_age"
    assert len(receiver.at("/ops")) == 2


def test_notices_pending_until_delivered(make_clock_broker, tmp_path, receiver, connect):
    """A notice answered 500 then 200 is pending between the two attempts and not after;
    it is not a failure."""
    receiver.script("/hook", [500, 200])
    b, clk, rep = hook_broker(make_clock_broker, tmp_path, receiver, connect)
    fail, pend = "carehub_webhook_failures_total", "carehub_notices_pending"
    send_event(rep, "mandatory_report", critical_report(uid("child")))
    receiver.answered("/hook", 1, timeout=PROMPT)
    assert values(b, fail, pend) == (0, 1)
    clock(clk, advance=2000)                        # the first retry is due within 2 s
    receiver.answered("/hook", 2, timeout=PROMPT)
    settles_at(b, pend, 0)
    assert values(b, fail) == (0,)
    assert sample(b.metrics_text(), 'carehub_webhook_attempts_total{result="ok"}') == 1
    assert sample(b.metrics_text(), 'carehub_webhook_attempts_total{result="error"}') == 1


# ---------------------------------------------------------------- events_total after the commit

def fill(a, prefix, note_len, limit):
    """Send absences until the store refuses one; returns (acked [(msg, (ev, case))], refused)."""
    acked = []
    for i in range(limit):
        msg = h.event_msg("absence", h.absence_body(uid("child"), note="x" * note_len), f"{prefix}-{i}")
        r = a.request(msg)
        if r.get("op") == "ack":
            acked.append((msg, assert_ack(r, msg["id"])))
            continue
        assert_nack(r, "unavailable", id=msg["id"])
        return acked, msg
    raise AssertionError(f"{limit} events were all stored: the store never filled")


def check_events_counted_after_commit(b, a, prefix, note_len):
    events = 'carehub_events_total{type="absence"}'
    unavailable = 'carehub_nacks_total{code="unavailable"}'
    acked, refused = fill(a, prefix, note_len, 2000)
    assert acked, "the first event was refused: the store should hold some"
    nacked = 1
    for _ in range(3):                              # refused again, and again: still not counted
        refused = h.refused_again(a, refused, lambda n: h.event_msg(
            "absence", h.absence_body(uid("child"), note="x" * note_len), f"{prefix}-more-{n}"), acked)
        nacked += 1
    for msg, evc in acked[-3:]:                     # duplicates are not counted either
        assert assert_ack(a.request(msg), msg["id"], duplicate=True) == evc
    text = b.metrics_text()
    assert sample(text, unavailable) == nacked, "every refusal is a nack unavailable"
    assert sample(text, events) == len(acked), \
        f"carehub_events_total counts {sample(text, events):g} absences, but {len(acked)} were " \
        f"stored and {nacked} refused unavailable: only committed events count"
    return acked


def test_events_total_not_counted_when_the_map_is_full(make_broker, connect):
    """map_max reached: the turn's write fails, the batch is refused unavailable and
    carehub_events_total counts exactly the events acked."""
    b = make_broker(overrides={"broker": {"map_size": "1M", "map_max": "1M", **METRICS}})
    a = connect(b, login="school-0042")
    check_events_counted_after_commit(b, a, "map", 3900)


def test_events_total_not_counted_when_the_commit_fails(make_clock_broker, connect, tmp_path,
                                                        small_disk):
    """A full disk (2 MiB tmpfs): the write transaction is built but its commit fails
    (ENOSPC); the events are refused unavailable and are not counted. Once space returns,
    the refused event is stored and counted once."""
    mnt, resize = small_disk
    cfg = routing_config(tmp_path / "b", broker={"map_size": "64K", "map_max": "1G", **METRICS})
    cfg["broker"]["data_dir"] = str(mnt / "data")
    b = make_clock_broker(config=cfg, name="b", test_clock=False)
    a = connect(b, login="school-0042")
    acked = check_events_counted_after_commit(b, a, "disk", 3000)
    assert "disk full" in b.all_logs(), "the log should say the disk is full"
    resize("64m")
    msg = h.event_msg("absence", h.absence_body(uid("child")), "after-space")
    assert_ack(a.request(msg), msg["id"], duplicate=False)
    assert sample(b.metrics_text(), 'carehub_events_total{type="absence"}') == len(acked) + 1


# ---------------------------------------------------------------- the register (§9)

def test_register_events_counted_by_type_and_overdue_once(make_clock_broker, tmp_path, connect):
    """A director's enrolment and visit count under their own types; the visit_overdue the
    broker records itself counts once per due time, after its commit, and not before."""
    wf = [{"name": "missed", "match": {"type": "visit_overdue"},
           "assign": [{"agency": "civil_affairs", "ack_within": "1d"}]},
          {"name": "records", "match": {"type": ["enrolment", "visit"]}, "assign": []}]
    cfg = routing_config(tmp_path / "b", workflows=wf, broker=METRICS,
                         agents=[{"id": "director-m1", "role": "director"}])
    cfg["rhythms"] = [{"name": "all", "match": {}, "contact_every": "1d", "visit_every": "10d",
                       "remind_before": "0s"}]
    b = make_clock_broker(config=cfg, name="b")
    clk = connect(b, login=CLOCK_AGENT)
    d = connect(b, login="director-m1")
    now = clock(clk)
    kid = uid("child")
    send_event(d, "enrolment", {"child": {"id": kid, "name": "X", "category": ["left_behind"]},
                                "village": "V"}, at=now)
    send_event(d, "visit", {"child": {"id": kid}, "kind": "contact", "date": "2026-12-03"}, at=now)
    names = ['carehub_events_total{type="enrolment"}', 'carehub_events_total{type="visit"}',
             'carehub_events_total{type="visit_overdue"}', 'carehub_events_total{type="other"}']
    assert values(b, *names) == (1, 1, 0, 0)
    clock(clk, advance=86_400_000 - 1)
    time.sleep(0.3)
    assert values(b, *names) == (1, 1, 0, 0), "nothing is due a millisecond before the contact"
    clock(clk, advance=1)
    settles_at(b, names[2], 1)
    clock(clk, advance=86_400_000)                 # one period later, still no contact
    settles_at(b, names[2], 2)
    assert values(b, names[0], names[1], names[3]) == (1, 1, 0)
