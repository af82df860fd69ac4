"""Webhooks and escalation (PROTOCOL §7, CONFIG.md channels/escalate/webhook_allow).

The broker runs with `--test-clock` (docs/protocol.md): deadlines, escalation
steps, retry scheduling and max_age follow the virtual clock that the tests
move with the `test_clock` op; curl's per-request timeout and the
webhook-timestamp header are real time. A scripted HTTP receiver on 127.0.0.1
records every request; every request a test receives is checked against §7
(POST, application/json, {type, timestamp, data}, webhook-id/-timestamp/
-signature) and its signature verified twice: in Python and with the Standard
Webhooks reference implementation (npm `standardwebhooks`; `make deps`
installs it).
"""

import re
import time

import pytest

import carehub_harness as h
from carehub_harness import uid
from routing_harness import (  # noqa: F401  (fixtures)
    CLOCK_AGENT, Reply, assert_all_verify, assert_verifiers_reject_tampered, case_ack, case_update,
    check_webhook, clock, critical_report, make_clock_broker, new_secret, receiver, routing_config,
    send_event, wait_push, webhook_channel,
)

PROMPT = 1.0        # a webhook due now must arrive within this (real seconds)


class Setup:
    """A broker with channels on one receiver; secrets by path for verification."""

    def __init__(self, make_clock_broker, tmp_path, receiver, connect, *, channels, workflows,
                 agencies=None, broker=None, desks=("police-desk",)):
        self.rx = receiver
        self.secret = {}
        chans = []
        for ch in channels:
            ch = dict(ch)
            path = ch.pop("path")
            ch["url"] = receiver.url(path)
            ch.setdefault("secret", new_secret())
            self.secret[path] = ch["secret"]
            chans.append(ch)
        cfg = routing_config(tmp_path / "b", workflows=workflows, channels=chans, agencies=agencies,
                             broker=broker)
        self.b = make_clock_broker(config=cfg, name="b")
        self.connect = connect
        self.clk = connect(self.b, login=CLOCK_AGENT)
        self.desk = {d: connect(self.b, login=d) for d in desks}
        self.rep = connect(self.b, login="reporter-01")

    def advance(self, ms):
        return clock(self.clk, advance=ms)

    def now(self):
        return clock(self.clk)

    def report(self, body=None):
        body = body or critical_report(uid("child"))
        return send_event(self.rep, "mandatory_report", body)

    def verify_all(self):
        """Every request received so far: §7 shape, and both signature checks."""
        items = []
        for r in list(self.rx.requests):
            assert r.path in self.secret, f"request to an unconfigured path: {r!r}"
            check_webhook(r, self.secret[r.path])
            items.append((self.secret[r.path], r))
        assert_all_verify(items)
        return items


def overdue_for(assignment, level=None):
    def pred(r):
        try:
            b = r.json
        except Exception:  # noqa: BLE001
            return False
        d = b.get("data", {})
        return (b.get("type") == "assignment.overdue" and d.get("assignment") == assignment
                and (level is None or d.get("level") == level))
    return pred


def of_type(t):
    def pred(r):
        try:
            return r.json.get("type") == t
        except Exception:  # noqa: BLE001
            return False
    return pred


def next_wall_second():
    """Sleep until the real Unix second changes (webhook-timestamp is in seconds)."""
    s = int(time.time())
    while int(time.time()) == s:
        time.sleep(0.02)


# ---------------------------------------------------------------- escalation

def test_overdue_fires_promptly_after_deadline_only_when_unacknowledged(make_clock_broker, tmp_path,
                                                                        receiver, connect):
    wf = [{"name": "danger", "match": {"type": "mandatory_report"},
           "assign": [{"agency": "police", "ack_within": "1s",
                       "escalate": [{"after": "0s", "notify": ["duty-hook"]}]},
                      {"agency": "education", "ack_within": "1s",
                       "escalate": [{"after": "0s", "notify": ["duty-hook"]}]}]}]
    s = Setup(make_clock_broker, tmp_path, receiver, connect, workflows=wf,
              channels=[{"id": "duty-hook", "path": "/duty"}], desks=("police-desk", "edu-desk"))
    _, _, case = s.report()
    mp = wait_push(s.desk["police-desk"])
    me = wait_push(s.desk["edu-desk"])
    mid, r = case_ack(s.desk["edu-desk"], me["id"])
    assert r.get("op") == "ack", r

    assert not receiver.quiet("/duty", 0.3), "nothing is overdue yet"
    s.advance(500)
    assert not receiver.quiet("/duty", 0.3), "half-way to the deadline: nothing is overdue yet"
    s.advance(501)                                  # 1 ms past ack_by
    t0 = time.monotonic()
    got = receiver.wait("/duty", 1, timeout=PROMPT, pred=overdue_for(mp["id"]))
    assert got[0].t - t0 <= PROMPT
    body = check_webhook(got[0], s.secret["/duty"], type="assignment.overdue")
    d = body["data"]
    want = {"case": case, "assignment": mp["id"], "agency": "police",
            "event_type": "mandatory_report", "severity": "critical", "ack_by": mp["ack_by"],
            "level": 1}
    for k, v in want.items():
        assert d.get(k) == v, f"assignment.overdue data.{k} is {d.get(k)!r}, expected {v!r}: {d!r}"

    # far past: the single step fired once; the acknowledged assignment never escalates
    s.advance(3_600_000)
    later = receiver.quiet("/duty", 0.5)
    assert not later, f"no more notices expected: {later!r}"
    assert len(receiver.at("/duty")) == 1, receiver.requests
    assert not [r for r in receiver.requests if overdue_for(me["id"])(r)], \
        "an acknowledged assignment must not escalate"
    s.verify_all()


def test_two_steps_fire_in_order_each_once(make_clock_broker, tmp_path, receiver, connect):
    wf = [{"name": "danger", "match": {"type": "mandatory_report"},
           "assign": [{"agency": "police", "ack_within": "1s",
                       "escalate": [{"after": "0s", "notify": ["duty-hook"]},
                                    {"after": "10m", "notify": ["duty-hook", "chief-hook"]}]}]}]
    s = Setup(make_clock_broker, tmp_path, receiver, connect, workflows=wf,
              channels=[{"id": "duty-hook", "path": "/duty"}, {"id": "chief-hook", "path": "/chief"}])
    _, _, case = s.report()
    a = wait_push(s.desk["police-desk"])["id"]

    s.advance(1000)
    receiver.wait("/duty", 1, timeout=PROMPT, pred=overdue_for(a, 1))
    assert not receiver.quiet("/chief", 0.2), "step 2 is not due yet"
    s.advance(10 * 60_000 - 1)                      # 1 ms before step 2
    assert not receiver.quiet("/duty", 0.3, pred=overdue_for(a)), "step 2 is not due yet"
    s.advance(1)
    receiver.wait("/duty", 1, timeout=PROMPT, pred=overdue_for(a, 2))
    receiver.wait("/chief", 1, timeout=PROMPT, pred=overdue_for(a, 2))

    # a second case, and the clock jumps past both of its steps at once
    _, _, case2 = s.report()
    a2 = wait_push(s.desk["police-desk"], "case", lambda m: m["case"] == case2)["id"]
    s.advance(24 * 3_600_000)
    receiver.wait("/duty", 2, timeout=PROMPT, pred=overdue_for(a2))
    receiver.wait("/chief", 1, timeout=PROMPT, pred=overdue_for(a2))
    s.advance(24 * 3_600_000)
    time.sleep(0.5)

    for assignment in (a, a2):
        duty = [r.json["data"]["level"] for r in receiver.at("/duty") if overdue_for(assignment)(r)]
        chief = [r.json["data"]["level"] for r in receiver.at("/chief") if overdue_for(assignment)(r)]
        assert sorted(duty) == [1, 2], f"{assignment}: duty-hook got levels {duty}, expected 1 and 2 once each"
        assert chief == [2], f"{assignment}: chief-hook got levels {chief}, expected [2]"
    ids = [r.webhook_id for r in receiver.requests]
    assert len(ids) == len(set(ids)), "each notice has its own webhook-id (no retries here)"
    s.verify_all()


def test_acknowledged_or_in_progress_never_escalates(make_clock_broker, tmp_path, receiver, connect):
    wf = [{"name": "danger", "match": {"type": "mandatory_report"},
           "assign": [{"agency": "police", "ack_within": "1s",
                       "escalate": [{"after": "0s", "notify": ["duty-hook"]},
                                    {"after": "1m", "notify": ["duty-hook"]}]}]}]
    s = Setup(make_clock_broker, tmp_path, receiver, connect, workflows=wf,
              channels=[{"id": "duty-hook", "path": "/duty"}])
    _, _, c1 = s.report()
    a1 = wait_push(s.desk["police-desk"], "case", lambda m: m["case"] == c1)["id"]
    _, _, c2 = s.report()
    a2 = wait_push(s.desk["police-desk"], "case", lambda m: m["case"] == c2)["id"]
    _, r = case_ack(s.desk["police-desk"], a1)
    assert r.get("op") == "ack", r
    _, r = case_update(s.desk["police-desk"], a2, "in_progress", note="on it")
    assert r.get("op") == "ack", r
    s.advance(3_600_000)
    got = receiver.quiet("/duty", 0.7)
    assert not got, f"acknowledged (or in_progress, which implies it) must not escalate: {got!r}"


def test_escalation_stops_once_acknowledged_between_steps(make_clock_broker, tmp_path, receiver,
                                                          connect):
    wf = [{"name": "danger", "match": {"type": "mandatory_report"},
           "assign": [{"agency": "police", "ack_within": "1s",
                       "escalate": [{"after": "0s", "notify": ["duty-hook"]},
                                    {"after": "5m", "notify": ["duty-hook"]}]}]}]
    s = Setup(make_clock_broker, tmp_path, receiver, connect, workflows=wf,
              channels=[{"id": "duty-hook", "path": "/duty"}])
    s.report()
    a = wait_push(s.desk["police-desk"])["id"]
    s.advance(2000)
    receiver.wait("/duty", 1, timeout=PROMPT, pred=overdue_for(a, 1))
    _, r = case_ack(s.desk["police-desk"], a, by="late officer")
    assert r.get("op") == "ack", r
    s.advance(3_600_000)
    assert not receiver.quiet("/duty", 0.5), "acknowledged after step 1: step 2 must not fire"
    s.verify_all()


# ---------------------------------------------------------------- case.assigned, SMS

def test_case_assigned_and_resolved_to_agency_channels(make_clock_broker, tmp_path, receiver, connect):
    wf = [{"name": "danger", "match": {"type": "mandatory_report"},
           "assign": [{"agency": "police", "ack_within": "15m"}]}]
    s = Setup(make_clock_broker, tmp_path, receiver, connect, workflows=wf,
              channels=[{"id": "police-hook", "path": "/police"}, {"id": "court-hook", "path": "/court"}],
              agencies=[{"id": "police", "name": "滨海新区公安局", "channels": ["police-hook"]},
                        {"id": "court", "channels": ["court-hook"]}],
              desks=("police-desk", "court-desk"))
    _, _, case = s.report()
    m = wait_push(s.desk["police-desk"])
    got = receiver.wait("/police", 1, timeout=PROMPT, pred=of_type("case.assigned"))
    d = check_webhook(got[0], s.secret["/police"], type="case.assigned")["data"]
    assert d.get("case") == case, f"case.assigned data names case {d.get('case')!r}, expected {case!r}: {d!r}"
    assert d.get("assignment") == m["id"], f"case.assigned data.assignment {d.get('assignment')!r}: {d!r}"
    assert d.get("agency") == "police", d
    assert not receiver.at("/court"), "court has no assignment yet"

    # a referral is a new assignment: the court's channel is told
    _, r = case_update(s.desk["police-desk"], m["id"], "referred", note="court", to="court")
    assert r.get("op") == "ack", r
    mc = wait_push(s.desk["court-desk"])
    got = receiver.wait("/court", 1, timeout=PROMPT, pred=of_type("case.assigned"))
    d = check_webhook(got[0], s.secret["/court"], type="case.assigned")["data"]
    assert d.get("case") == case and d.get("assignment") == mc["id"] and d.get("agency") == "court", d

    _, r = case_update(s.desk["court-desk"], mc["id"], "resolved", note="done")
    assert r.get("op") == "ack", r
    for path in ("/court", "/police"):
        got = receiver.wait(path, 1, timeout=PROMPT, pred=of_type("case.resolved"))
        d = check_webhook(got[0], s.secret[path], type="case.resolved")["data"]
        assert d.get("case") == case, d
    time.sleep(0.2)
    assert len(receiver.requests) == 4, f"one case.assigned and one case.resolved each: {receiver.requests!r}"
    s.verify_all()
    assert_verifiers_reject_tampered(s.secret["/police"], receiver.at("/police")[0])


def test_sms_one_message_per_recipient_without_child_data(make_clock_broker, tmp_path, receiver,
                                                          connect):
    to = ["+8613800000001", "+8613800000002", "+8613800000003"]
    wf = [{"name": "danger", "match": {"type": "mandatory_report"},
           "assign": [{"agency": "police", "ack_within": "1s",
                       "escalate": [{"after": "0s", "notify": ["duty-sms"]}]}]}]
    s = Setup(make_clock_broker, tmp_path, receiver, connect, workflows=wf,
              channels=[{"id": "duty-sms", "kind": "sms", "path": "/sms", "to": to}],
              agencies=[{"id": "police", "channels": ["duty-sms"]}])
    name, child_id = "CanaryName李小龙", "CANARYID-" + uid("k")[2:]
    body = critical_report(child_id)
    body["child"]["name"] = name
    body["child"]["guardian"] = {"name": "GuardianCanary王", "phone": "+8613999999999"}
    _, _, case = s.report(body)
    a = wait_push(s.desk["police-desk"])
    assigned = receiver.wait("/sms", 3, timeout=PROMPT, pred=of_type("case.assigned"))
    s.advance(1001)
    overdue = receiver.wait("/sms", 3, timeout=PROMPT, pred=overdue_for(a["id"], 1))
    time.sleep(0.3)
    for kind, reqs in (("case.assigned", assigned), ("assignment.overdue", overdue)):
        reqs = [r for r in receiver.at("/sms") if of_type(kind)(r)]
        assert len(reqs) == len(to), f"{kind}: {len(reqs)} SMS requests, expected one per recipient ({len(to)})"
        datas = [check_webhook(r, s.secret["/sms"], type=kind)["data"] for r in reqs]
        assert sorted(d.get("to") for d in datas) == sorted(to), f"{kind}: data.to {[d.get('to') for d in datas]}"
        assert len({r.webhook_id for r in reqs}) == len(to), f"{kind}: each SMS has its own webhook-id"
        for r, d in zip(reqs, datas):
            assert isinstance(d.get("text"), str) and d["text"].strip(), f"{kind}: SMS without text: {d!r}"
            for secret in (name, child_id, "GuardianCanary", "+8613999999999"):
                assert secret not in d["text"], f"{kind}: SMS text carries child data {secret!r}: {d['text']!r}"
                assert secret not in r.body.decode("utf-8"), \
                    f"{kind}: SMS request carries child data {secret!r}: {r.body[:400]!r}"
            assert d.get("case") == case, d
        if kind == "assignment.overdue":
            for d in datas:   # the same data as a webhook would carry, plus to and text
                assert d.get("level") == 1 and d.get("assignment") == a["id"] and \
                    d.get("agency") == "police" and d.get("ack_by") == a["ack_by"], d
    s.verify_all()


def test_sms_text_names_case_agency_and_lateness(make_clock_broker, tmp_path, receiver, connect):
    """Issue 12: the SMS `text` is what the person on duty reads. An escalation's names the
    case, the agency (its configured name) and how long the assignment is overdue
    (docs/protocol.md: "a Chinese text naming case, agency and how long overdue — never the
    child"); the case.assigned one names case and agency. Two cases, so that a text naming
    the wrong case or a fixed lateness fails."""
    to = ["+8613800000011", "+8613800000012"]
    police_name = next(a["name"] for a in h.AGENCIES if a["id"] == "police")
    civil_name = next(a["name"] for a in h.AGENCIES if a["id"] == "civil_affairs")
    wf = [{"name": "danger", "match": {"type": "mandatory_report"},
           "assign": [{"agency": "police", "ack_within": "1h",
                       "escalate": [{"after": "90m", "notify": ["duty-sms"]}]}]}]
    s = Setup(make_clock_broker, tmp_path, receiver, connect, workflows=wf,
              channels=[{"id": "duty-sms", "kind": "sms", "path": "/sms", "to": to}],
              agencies=[{"id": "police", "name": police_name, "channels": ["duty-sms"]}])
    canaries = []
    cases = []
    for i in range(2):
        body = critical_report("CANARYID-" + uid("k")[2:])
        body["child"]["name"] = f"CanaryName{i}李小龙"
        body["description"] = f"CanaryDescription{i}: the child has been alone for days."
        canaries += [body["child"]["id"], body["child"]["name"], "CanaryDescription"]
        _, _, case = s.report(body)
        a = wait_push(s.desk["police-desk"], pred=lambda m, c=case: m["case"] == c)
        cases.append((case, a))
        if i == 0:
            s.advance(10 * 60_000)              # the second case is 10 minutes younger

    def texts(pred):
        reqs = receiver.wait("/sms", len(to) * len(cases), timeout=PROMPT, pred=pred)
        out = {}
        for r in reqs:
            d = check_webhook(r, s.secret["/sms"])["data"]
            for c in canaries:
                assert c not in d["text"] and c not in r.body.decode("utf-8"), \
                    f"the SMS carries child data {c!r}: {d['text']!r}"
            out.setdefault(d["case"], set()).add(d["text"])
        return out

    assigned = texts(of_type("case.assigned"))
    for case, _ in cases:
        assert len(assigned[case]) == 1, f"one text per notice, the same for each recipient: {assigned}"
        text = next(iter(assigned[case]))
        assert case in text, f"case.assigned SMS does not name case {case}: {text!r}"
        assert police_name in text, f"case.assigned SMS does not name the agency {police_name}: {text!r}"
        assert civil_name not in text, text
        other = cases[1][0] if case == cases[0][0] else cases[0][0]
        assert other not in text, f"the SMS about {case} names {other}: {text!r}"

    # first case: ack_by was 1h after t0, now t0 + 10 min; its step is due at ack_by + 90 min.
    # Move to ack_by(first) + 107 min: the first is 107 min overdue, the second 97 min.
    s.advance((60 + 107 - 10) * 60_000)
    overdue = texts(of_type("assignment.overdue"))
    for (case, a), late in zip(cases, (107, 97)):
        assert len(overdue[case]) == 1, overdue
        text = next(iter(overdue[case]))
        assert case in text, f"the escalation SMS does not name case {case}: {text!r}"
        assert police_name in text, f"the escalation SMS does not name the agency {police_name}: {text!r}"
        assert re.search(rf"(?<!\d){late}\s*分钟", text), \
            f"the escalation SMS about {case} does not say it is {late} minutes overdue: {text!r}"
    s.verify_all()


# ---------------------------------------------------------------- retries

def hook_setup(make_clock_broker, tmp_path, receiver, connect, script, **chan):
    """police gets case.assigned on /hook (scripted); fallback channel /ops."""
    receiver.script("/hook", script)
    ch = {"id": "hook", "path": "/hook", "fallback": "ops"}
    ch.update(chan)
    wf = [{"name": "danger", "match": {"type": "mandatory_report"},
           "assign": [{"agency": "police", "ack_within": "1d"}]}]
    return Setup(make_clock_broker, tmp_path, receiver, connect, workflows=wf,
                 channels=[ch, {"id": "ops", "path": "/ops"}],
                 agencies=[{"id": "police", "channels": ["hook"]}])


def test_retry_500_500_200_same_id_fresh_signatures(make_clock_broker, tmp_path, receiver, connect):
    s = hook_setup(make_clock_broker, tmp_path, receiver, connect, [500, 500, 200])
    s.report()
    receiver.answered("/hook", 1, timeout=PROMPT)
    assert not receiver.quiet("/hook", 0.3), "the retry waits for its backoff (virtual clock)"
    next_wall_second()
    s.advance(2000)                                 # "the first retry within 2 s"
    receiver.answered("/hook", 2, timeout=PROMPT)
    next_wall_second()
    s.advance(5000)                                 # doubling: about 2 s
    receiver.answered("/hook", 3, timeout=PROMPT)
    s.advance(3_600_000)
    time.sleep(0.4)
    reqs = receiver.at("/hook")
    assert [r.status for r in reqs] == [500, 500, 200], reqs
    assert len({r.webhook_id for r in reqs}) == 1, f"webhook-id must stay across retries: {reqs!r}"
    ts = [r.headers.get("webhook-timestamp") for r in reqs]
    assert len(set(ts)) == 3, f"each attempt carries its own webhook-timestamp: {ts}"
    sigs = [r.headers.get("webhook-signature") for r in reqs]
    assert len(set(sigs)) == 3, f"each attempt carries its own signature: {sigs}"
    assert len({r.body for r in reqs}) == 1, "the message (body) is the same on every attempt"
    assert not receiver.at("/ops"), "delivered: the fallback is not told"
    s.verify_all()


def test_always_500_fails_at_max_age_and_fallback_is_told(make_clock_broker, tmp_path, receiver,
                                                          connect):
    s = hook_setup(make_clock_broker, tmp_path, receiver, connect, [500], max_age="30s")
    _, _, case = s.report()
    first = receiver.answered("/hook", 1, timeout=PROMPT)[0]
    for step in (2000, 4000, 8000):                 # t = 2 s, 6 s, 14 s: still retrying
        n = len(receiver.at("/hook"))
        s.advance(step)
        receiver.answered("/hook", n + 1, timeout=PROMPT)
    s.advance(5000)                                 # t = 19 s
    time.sleep(0.3)
    assert not receiver.at("/ops"), "before max_age the delivery has not failed"
    s.advance(12_000)                               # t = 31 s: past max_age
    s.advance(60_000)
    told = receiver.wait("/ops", 1, timeout=PROMPT)
    body = check_webhook(told[0], s.secret["/ops"], type="webhook.failed")
    d = body["data"]
    assert d.get("case") == case, f"webhook.failed data names case {d.get('case')!r}: {d!r}"
    assert d.get("webhook_id") == first.webhook_id or first.webhook_id in told[0].body.decode(), \
        f"webhook.failed does not say which message failed ({first.webhook_id}): {d!r}"
    n = len(receiver.at("/hook"))
    s.advance(24 * 3_600_000)
    assert not receiver.quiet("/hook", 0.5), "failed for good: no attempt after max_age"
    assert len(receiver.at("/ops")) == 1, "the fallback is told once"
    assert len({r.webhook_id for r in receiver.at("/hook")}) == 1
    assert n >= 4
    s.verify_all()


def test_410_gone_stops_after_one_attempt(make_clock_broker, tmp_path, receiver, connect):
    s = hook_setup(make_clock_broker, tmp_path, receiver, connect, [410])
    s.report()
    receiver.answered("/hook", 1, timeout=PROMPT)
    for _ in range(3):
        s.advance(700_000)
    time.sleep(0.5)
    assert len(receiver.at("/hook")) == 1, f"410 Gone: one attempt only, got {receiver.at('/hook')!r}"
    s.verify_all()


def test_redirect_is_not_followed(make_clock_broker, tmp_path, receiver, connect):
    s = hook_setup(make_clock_broker, tmp_path, receiver, connect,
                   [Reply(307, headers={"Location": receiver.url("/elsewhere")}), 200])
    s.report()
    receiver.answered("/hook", 1, timeout=PROMPT, settle=0.3)
    assert not receiver.at("/elsewhere"), "a redirect must not be followed (SSRF)"
    s.advance(2000)
    receiver.wait("/hook", 2, timeout=PROMPT)      # a 3xx is not delivery: retried
    assert not receiver.at("/elsewhere")
    s.verify_all()


def test_retry_after_is_honoured(make_clock_broker, tmp_path, receiver, connect):
    s = hook_setup(make_clock_broker, tmp_path, receiver, connect,
                   [Reply(503, headers={"Retry-After": "30"}), 200])
    s.report()
    receiver.answered("/hook", 1, timeout=PROMPT)
    s.advance(10_000)
    assert not receiver.quiet("/hook", 0.4), "Retry-After: 30 asks for 30 s"
    s.advance(21_000)
    receiver.wait("/hook", 2, timeout=PROMPT)
    s.verify_all()


def test_backoff_is_capped_at_ten_minutes(make_clock_broker, tmp_path, receiver, connect):
    s = hook_setup(make_clock_broker, tmp_path, receiver, connect, [500], max_age="24h")
    s.report()
    receiver.answered("/hook", 1, timeout=PROMPT, settle=0.05)
    # doubling from ~1 s passes 10 minutes after ~10 retries; every 601 s there is one more
    for i in range(2, 16):
        s.advance(601_000)
        receiver.answered("/hook", i, timeout=PROMPT, settle=0.05)
    assert len(receiver.at("/hook")) == 15
    assert not receiver.at("/ops")
    s.verify_all()


def test_no_answer_within_timeout_is_retried(make_clock_broker, tmp_path, receiver, connect):
    s = hook_setup(make_clock_broker, tmp_path, receiver, connect, [Reply(hang=True), 200],
                   timeout="1s")
    s.report()
    first = receiver.wait("/hook", 1, timeout=PROMPT)[0]
    time.sleep(1.3)                                 # the channel's timeout is real time
    s.advance(2000)
    got = receiver.answered("/hook", 1, timeout=PROMPT, settle=0)
    assert len(receiver.at("/hook")) == 2 and got[0].webhook_id == first.webhook_id, receiver.requests
    assert got[0].status == 200
    s.verify_all()


def test_never_answering_receiver_fails_at_max_age_and_fallback_is_told(make_clock_broker, tmp_path,
                                                                        receiver, connect):
    """Issue acceptance: a receiver that never answers gets a recorded failure at
    max_age, and the channel's fallback is told. Each attempt waits for the
    channel's `timeout` (real time); max_age is on the test clock."""
    s = hook_setup(make_clock_broker, tmp_path, receiver, connect, [Reply(hang=True)],
                   timeout="1s", max_age="10s")
    _, _, case = s.report()
    first = receiver.wait("/hook", 1, timeout=PROMPT)[0]
    time.sleep(1.3)                                 # attempt 1 times out (real time)
    assert not receiver.at("/ops"), "not failed before max_age"
    s.advance(60_000)                               # far past max_age: one last attempt, then give up
    told = receiver.wait("/ops", 1, timeout=5.0)
    body = check_webhook(told[0], s.secret["/ops"], type="webhook.failed")
    assert body["data"].get("case") == case
    assert body["data"].get("webhook_id") == first.webhook_id, body
    assert "timeout" in body["data"].get("error", "").lower() or \
        "timed out" in body["data"].get("error", "").lower(), body["data"]
    n = len(receiver.at("/hook"))
    s.advance(3_600_000)
    time.sleep(0.5)
    assert len(receiver.at("/hook")) == n, "given up: no attempt after the failure"
    assert {r.webhook_id for r in receiver.at("/hook")} == {first.webhook_id}


# ---------------------------------------------------------------- crash safety

def escalation_setup(make_clock_broker, tmp_path, receiver, connect, ack_within="2s"):
    wf = [{"name": "danger", "match": {"type": "mandatory_report"},
           "assign": [{"agency": "police", "ack_within": ack_within,
                       "escalate": [{"after": "0s", "notify": ["duty-hook"]}]}]}]
    return Setup(make_clock_broker, tmp_path, receiver, connect, workflows=wf,
                 channels=[{"id": "duty-hook", "path": "/duty"}])


def test_kill9_before_deadline_escalates_once_after_restart(make_clock_broker, tmp_path, receiver,
                                                            connect):
    s = escalation_setup(make_clock_broker, tmp_path, receiver, connect)
    _, _, case = s.report()
    m = wait_push(s.desk["police-desk"])
    a = m["id"]
    s.b.kill9()
    # the deadline passes while the broker is down (virtual time restarts at real time)
    while time.time() * 1000 < m["ack_by"] + 200:
        time.sleep(0.05)
    s.b.restart()
    got = receiver.wait("/duty", 1, timeout=2.0, pred=overdue_for(a, 1))
    clk = connect(s.b, login=CLOCK_AGENT)
    clock(clk, advance=24 * 3_600_000)
    time.sleep(0.5)
    s.b.restart()                                   # and once more, gracefully
    clk = connect(s.b, login=CLOCK_AGENT)
    clock(clk, advance=24 * 3_600_000)
    time.sleep(0.5)
    reqs = [r for r in receiver.requests if overdue_for(a)(r)]
    assert len(reqs) == 1, f"the escalation must fire exactly once across restarts: {reqs!r}"
    assert got[0].json["data"]["case"] == case
    s.verify_all()


def test_kill9_after_step_fired_delivers_same_notice(make_clock_broker, tmp_path, receiver, connect):
    """The step fired and its notice failed once; kill -9 before the retry: after the
    restart the notice is delivered (same webhook-id) and the step does not fire again."""
    receiver.script("/duty", [500, 200])
    s = escalation_setup(make_clock_broker, tmp_path, receiver, connect, ack_within="1h")
    s.report()
    a = wait_push(s.desk["police-desk"])["id"]
    s.advance(3_600_001)
    first = receiver.answered("/duty", 1, timeout=PROMPT, settle=0.2)[0]
    assert overdue_for(a, 1)(first), first
    s.b.kill9()
    s.b.restart()
    receiver.wait("/duty", 2, timeout=2.0)
    clk = connect(s.b, login=CLOCK_AGENT)
    clock(clk, advance=24 * 3_600_000)              # the restarted clock: far past everything
    time.sleep(0.5)
    reqs = receiver.at("/duty")
    assert {r.webhook_id for r in reqs} == {first.webhook_id}, \
        f"after the restart the pending notice is resent with its webhook-id, and the step is not " \
        f"fired again: {reqs!r}"
    assert reqs[-1].status == 200
    s.verify_all()


# ---------------------------------------------------------------- isolation

def test_slow_receiver_delays_neither_other_channels_nor_intake(make_clock_broker, tmp_path, receiver,
                                                                connect):
    receiver.script("/slow", [Reply(200, delay=10.0)])
    wf = [{"name": "danger", "match": {"type": "mandatory_report"},
           "assign": [{"agency": "police", "ack_within": "1d"}]}]
    s = Setup(make_clock_broker, tmp_path, receiver, connect, workflows=wf,
              channels=[{"id": "slow", "path": "/slow", "timeout": "30s"},
                        {"id": "fast", "path": "/fast"}],
              agencies=[{"id": "police", "channels": ["slow", "fast"]}])
    n = 10                                          # more than a channel's parallel transfers
    slowest_ack = slowest_hook = 0.0
    for i in range(n):
        t0 = time.monotonic()
        _, _, case = s.report(h.mandatory_report_body(uid("child")))
        t_ack = time.monotonic() - t0
        receiver.wait("/fast", 1, timeout=PROMPT,
                      pred=lambda r, c=case: r.json["data"].get("case") == c)
        slowest_ack = max(slowest_ack, t_ack)
        slowest_hook = max(slowest_hook, time.monotonic() - t0)
        wait_push(s.desk["police-desk"], "case", lambda m, c=case: m["case"] == c, timeout=PROMPT)
    assert slowest_ack < 1.0, f"event acks took up to {slowest_ack:.2f}s while a receiver hangs"
    assert slowest_hook < PROMPT, f"another channel's webhook took {slowest_hook:.2f}s"
    assert receiver.at("/slow"), "the slow receiver was tried"
    assert all(r.status is None for r in receiver.at("/slow")), "the slow receiver has not answered yet"
    s.verify_all()


# ---------------------------------------------------------------- SSRF

def check_config_with_url(tmp_path, url, allow=("127.0.0.0/8",), kind="webhook"):
    cfg = h.base_config(tmp_path)
    if allow is not None:
        cfg["broker"]["webhook_allow"] = list(allow)
    ch = {"id": "ext-hook", "kind": kind, "url": url, "secret": new_secret()}
    if kind == "sms":
        ch["to"] = ["+8613800000000"]
    cfg["channels"] = [ch]
    path = tmp_path / "ssrf.yaml"
    path.write_text(h.to_yaml(cfg), encoding="utf-8")
    line = next(i + 1 for i, ln in enumerate(path.read_text().splitlines()) if "url:" in ln)
    r = h.run_bin(["--check-config", "-c", str(path)])
    return r, path, line


@pytest.mark.parametrize("url,addr", [
    ("http://10.0.0.1/x", "10.0.0.1"),
    ("http://0x0a000001/x", "10.0.0.1"),          # hex
    ("http://167772161/x", "10.0.0.1"),           # one decimal number
    ("http://012.0.0.1/x", "10.0.0.1"),           # octal part
    ("http://10.1/x", "10.0.0.1"),                # short form
    ("http://[::ffff:10.0.0.1]/x", "10.0.0.1"),   # IPv4-mapped IPv6
    ("http://169.254.169.254/latest/meta-data", "169.254.169.254"),
    ("http://[::1]:9100/x", "::1"),               # loopback, but IPv6 is not allowed
    ("http://127.0.0.1@10.0.0.1/x", "10.0.0.1"),  # userinfo trick
    ("http://0/x", "0.0.0.0"),
])
def test_ssrf_url_outside_webhook_allow_refused(tmp_path, carehub_bin, url, addr):
    for kind in ("webhook", "sms"):
        r, path, line = check_config_with_url(tmp_path, url, kind=kind)
        out = r.stdout + r.stderr
        assert r.returncode != 0, f"--check-config accepted {kind} url {url} outside webhook_allow:\n{out}"
        assert f"{path}:{line}:" in out, f"the refusal does not name {path}:{line}:\n{out}"
        assert "webhook_allow" in out, f"the refusal does not mention webhook_allow:\n{out}"
        assert addr in out, f"the refusal does not name the address {addr} that {url} reaches:\n{out}"


def test_ssrf_no_webhook_allow_means_none(tmp_path, carehub_bin):
    r, path, line = check_config_with_url(tmp_path, "http://127.0.0.1:9100/x", allow=None)
    out = r.stdout + r.stderr
    assert r.returncode != 0, f"without webhook_allow no channel url is allowed:\n{out}"
    assert f"{path}:{line}:" in out and "webhook_allow" in out, out


@pytest.mark.parametrize("url", ["http://127.0.0.1:9100/x", "http://0x7f000001:9100/x",
                                 "http://127.1:9100/x"])
def test_ssrf_loopback_spellings_inside_allow_accepted(tmp_path, carehub_bin, url):
    r, _, _ = check_config_with_url(tmp_path, url)
    assert r.returncode == 0, f"{url} is 127.0.0.1, inside 127.0.0.0/8:\n{r.stdout}{r.stderr}"


def test_oddly_spelled_allowed_url_delivers(make_clock_broker, tmp_path, receiver, connect):
    """http://0x7f000001:PORT/ is 127.0.0.1: accepted at load and at every connection."""
    wf = [{"name": "danger", "match": {"type": "mandatory_report"},
           "assign": [{"agency": "police", "ack_within": "1d"}]}]
    secret = new_secret()
    cfg = routing_config(tmp_path / "b", workflows=wf, agencies=[{"id": "police", "channels": ["hex"]}],
                         channels=[webhook_channel("hex", f"http://0x7f000001:{receiver.port}/hex",
                                                   secret)])
    b = make_clock_broker(config=cfg, name="b")
    rep = connect(b, login="reporter-01")
    send_event(rep, "mandatory_report", critical_report(uid("child")))
    got = receiver.wait("/hex", 1, timeout=PROMPT)
    check_webhook(got[0], secret, type="case.assigned")
    assert_all_verify([(secret, got[0])])
