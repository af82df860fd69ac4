"""The second deadline (PROTOCOL §10, §12; CONFIG.md `resolve_within`,
`escalate_unresolved`).

Once acknowledged, an assignment whose workflow step has `resolve_within` must
reach a final status (resolved, referred, declined) by `resolve_by`; otherwise its
`escalate_unresolved` steps fire, as `assignment.overdue` notices with
`stage:"resolve"` and `resolve_by`. Notices of the acknowledgement deadline carry
`stage:"ack"`. The `case` message carries `resolve_by` once set (the broker pushes
it once more after the acknowledgement), the case file and the assignment records
show it. Every webhook here is verified with the Standard Webhooks reference
implementation as well as in Python (Setup.verify_all).

The broker runs on the virtual clock (`--test-clock`): no sleeps for deadlines.
"""

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import carehub_harness as h
from carehub_harness import uid
from routing_harness import (  # noqa: F401  (fixtures)
    case_ack, case_update, check_webhook, make_clock_broker, no_push, receiver, wait_push,
)
from test_webhooks import PROMPT, Setup, of_type, overdue_for

MIN = 60_000
HOUR = 60 * MIN


def resolve_wf(resolve_within="2h", steps=None, ack_within="1h", ack_steps=None):
    a = {"agency": "police", "ack_within": ack_within, "resolve_within": resolve_within}
    if steps is not None:
        a["escalate_unresolved"] = steps
    if ack_steps is not None:
        a["escalate"] = ack_steps
    return [{"name": "report", "match": {"type": "mandatory_report"}, "assign": [a]}]


def stage_of(r):
    return r.json["data"].get("stage")


def case_file(s, case):
    sup = s.clk  # supervisor-01: the clock agent is a supervisor
    r = sup.request({"v": 1, "op": "query", "id": uid("q"), "what": "case", "case": case})
    assert r.get("op") == "result", r
    return r


def assignment_in(result, assignment):
    for a in result.get("assignments", []):
        if a.get("id") == assignment:
            return a
    raise AssertionError(f"assignment {assignment} not in the case file: {h.summarize(result, 600)}")


def test_resolve_stage_fires_after_resolve_by_in_order_each_once(make_clock_broker, tmp_path,
                                                                  receiver, connect):
    wf = resolve_wf("2h", steps=[{"after": "0s", "notify": ["duty-hook"]},
                                 {"after": "30m", "notify": ["duty-hook", "chief-hook"]}],
                    ack_steps=[{"after": "0s", "notify": ["duty-hook"]}])
    s = Setup(make_clock_broker, tmp_path, receiver, connect, workflows=wf,
              channels=[{"id": "duty-hook", "path": "/duty"}, {"id": "chief-hook", "path": "/chief"}])
    _, _, case = s.report()
    m = wait_push(s.desk["police-desk"], pred=lambda m: m["case"] == case)
    a = m["id"]
    assert "resolve_by" not in m, f"no resolve_by before the acknowledgement: {m!r}"

    s.advance(10 * MIN)
    t_ack = s.now()
    _, r = case_ack(s.desk["police-desk"], a)
    assert r.get("op") == "ack", r
    resolve_by = t_ack + 2 * HOUR
    # the case message again, now carrying the second deadline
    m2 = wait_push(s.desk["police-desk"], pred=lambda m: m["id"] == a, what="case with resolve_by")
    assert m2.get("resolve_by") == resolve_by, f"resolve_by {m2.get('resolve_by')} != ack + 2h {resolve_by}"
    assert m2.get("ack_by") == m["ack_by"], m2
    a_rec = assignment_in(case_file(s, case), a)
    assert a_rec.get("resolve_by") == resolve_by and a_rec.get("final_at") == 0, a_rec

    # the acknowledgement came in time: no stage "ack" notice ever; 1 ms before resolve_by nothing
    s.advance(resolve_by - 1 - s.now())
    assert not receiver.quiet("/duty", 0.4, pred=overdue_for(a)), "nothing is due before resolve_by"
    s.advance(1)
    (r1,) = receiver.wait("/duty", 1, timeout=PROMPT, pred=overdue_for(a, 1))
    d = r1.json["data"]
    assert d["stage"] == "resolve" and d["resolve_by"] == resolve_by, d
    assert d["ack_by"] == m["ack_by"] and d["agency"] == "police" and d["case"] == case, d
    assert not receiver.quiet("/chief", 0.2), "step 2 is not due yet"

    s.advance(30 * MIN - 1)
    assert not receiver.quiet("/duty", 0.3, pred=lambda r: overdue_for(a, 2)(r)), "step 2 not yet"
    s.advance(1)
    receiver.wait("/duty", 1, timeout=PROMPT, pred=overdue_for(a, 2))
    receiver.wait("/chief", 1, timeout=PROMPT, pred=overdue_for(a, 2))
    s.advance(48 * HOUR)
    receiver.quiet("/duty", 0.4)

    duty = [(stage_of(r), r.json["data"]["level"]) for r in receiver.at("/duty") if overdue_for(a)(r)]
    chief = [(stage_of(r), r.json["data"]["level"]) for r in receiver.at("/chief") if overdue_for(a)(r)]
    assert sorted(duty) == [("resolve", 1), ("resolve", 2)], duty
    assert chief == [("resolve", 2)], chief
    s.verify_all()   # every notice, both verifiers (the reference one included)

    # the trail/records: the levels fired are on the assignment
    a_rec = assignment_in(case_file(s, case), a)
    assert a_rec.get("resolve_level") == 2 and a_rec.get("level") == 0, a_rec


def test_ack_stage_notices_say_stage_ack_and_carry_no_resolve_by(make_clock_broker, tmp_path,
                                                                   receiver, connect):
    wf = resolve_wf("1h", steps=[{"after": "0s", "notify": ["duty-hook"]}],
                    ack_within="1s", ack_steps=[{"after": "0s", "notify": ["duty-hook"]}])
    s = Setup(make_clock_broker, tmp_path, receiver, connect, workflows=wf,
              channels=[{"id": "duty-hook", "path": "/duty"}])
    _, _, case = s.report()
    a = wait_push(s.desk["police-desk"], pred=lambda m: m["case"] == case)["id"]
    s.advance(1000)
    (r,) = receiver.wait("/duty", 1, timeout=PROMPT, pred=overdue_for(a, 1))
    assert r.json["data"]["stage"] == "ack" and "resolve_by" not in r.json["data"], r.json
    # acknowledged late: the second deadline counts from the acknowledgement
    s.advance(5 * MIN)
    t_ack = s.now()
    _, rep = case_ack(s.desk["police-desk"], a)
    assert rep.get("op") == "ack", rep
    s.advance(HOUR)
    (r2,) = receiver.wait("/duty", 1, timeout=PROMPT,
                          pred=lambda r: overdue_for(a)(r) and stage_of(r) == "resolve")
    assert r2.json["data"]["resolve_by"] == t_ack + HOUR and r2.json["data"]["level"] == 1, r2.json
    s.verify_all()


def test_resolved_referred_or_declined_in_time_never_escalates(make_clock_broker, tmp_path,
                                                               receiver, connect):
    wf = resolve_wf("2h", steps=[{"after": "0s", "notify": ["duty-hook"]},
                                 {"after": "1h", "notify": ["duty-hook"]}])
    s = Setup(make_clock_broker, tmp_path, receiver, connect, workflows=wf,
              channels=[{"id": "duty-hook", "path": "/duty"}])
    desk = s.desk["police-desk"]
    finals = ["resolved", "referred", "declined", None]   # None: left acknowledged (the control)
    ids = []
    for final in finals:
        _, _, case = s.report()
        a = wait_push(desk, pred=lambda m, c=case: m["case"] == c)["id"]
        if final == "resolved":   # by way of in_progress, which also starts the deadline
            _, r = case_update(desk, a, "in_progress", note="on it")
        else:
            _, r = case_ack(desk, a)
        assert r.get("op") == "ack", r
        ids.append((final, case, a))
    s.advance(2 * HOUR - 1)      # 1 ms before every resolve_by
    for final, case, a in ids:
        if final is None:
            continue
        kw = {"to": "education"} if final == "referred" else {}
        _, r = case_update(desk, a, final, note="done", **kw)
        assert r.get("op") == "ack", r
    s.advance(72 * HOUR)
    receiver.quiet("/duty", 0.6)
    fired = {}
    for r in receiver.at("/duty"):
        d = r.json.get("data", {})
        if r.json.get("type") == "assignment.overdue" and d.get("stage") == "resolve":
            fired.setdefault(d["assignment"], []).append(d["level"])
    control = ids[-1][2]
    assert sorted(fired.get(control, [])) == [1, 2], \
        f"the control (acknowledged, never final) must escalate at both steps: {fired}"
    for final, case, a in ids[:-1]:
        assert a not in fired, f"{final} 1 ms before resolve_by: it must never escalate, got {fired[a]}"
        rec = assignment_in(case_file(s, case), a)
        assert rec["state"] == final and rec["final_at"] == rec["resolve_by"] - 1, rec
    s.verify_all()


def test_resolve_sms_names_the_deadline_in_local_time(make_clock_broker, tmp_path, receiver, connect):
    """SMS texts show broker.timezone: case.assigned the ack deadline, the resolve
    escalation resolve_by, as month, day and minute in Asia/Shanghai."""
    to = ["+8613800000021"]
    police_name = next(a["name"] for a in h.AGENCIES if a["id"] == "police")
    wf = resolve_wf("3h", steps=[{"after": "15m", "notify": ["duty-sms"]}])
    s = Setup(make_clock_broker, tmp_path, receiver, connect, workflows=wf,
              channels=[{"id": "duty-sms", "kind": "sms", "path": "/sms", "to": to}],
              agencies=[{"id": "police", "name": police_name, "channels": ["duty-sms"]}],
              broker={"timezone": "Asia/Shanghai"})
    _, _, case = s.report()
    m = wait_push(s.desk["police-desk"], pred=lambda m: m["case"] == case)

    def local(ms):
        t = datetime.fromtimestamp(ms / 1000, tz=timezone.utc).astimezone(ZoneInfo("Asia/Shanghai"))
        return f"{t.month}月{t.day}日 {t.hour:02d}:{t.minute:02d}"

    (ra,) = receiver.wait("/sms", 1, timeout=PROMPT, pred=of_type("case.assigned"))
    text = check_webhook(ra, s.secret["/sms"])["data"]["text"]
    assert local(m["ack_by"]) in text and "UTC" not in text, \
        f"case.assigned SMS should give the ack deadline {local(m['ack_by'])} (Asia/Shanghai): {text!r}"
    t_ack = s.now()
    _, r = case_ack(s.desk["police-desk"], m["id"])
    assert r.get("op") == "ack", r
    s.advance(3 * HOUR + 20 * MIN)
    (ro,) = receiver.wait("/sms", 1, timeout=PROMPT, pred=of_type("assignment.overdue"))
    d = check_webhook(ro, s.secret["/sms"])["data"]
    assert d["stage"] == "resolve" and d["resolve_by"] == t_ack + 3 * HOUR, d
    assert local(d["resolve_by"]) in d["text"] and case in d["text"] and police_name in d["text"], d["text"]
    assert "办结" in d["text"], f"the resolve escalation says it is about resolving: {d['text']!r}"
    assert "20 分钟" in d["text"], f"overdue by 20 minutes: {d['text']!r}"
    s.verify_all()


def test_without_resolve_within_nothing_changes(make_clock_broker, tmp_path, receiver, connect):
    """A step without resolve_within: no resolve_by anywhere, no second push after the
    acknowledgement, no stage-resolve notice however long it stays open."""
    wf = [{"name": "report", "match": {"type": "mandatory_report"},
           "assign": [{"agency": "police", "ack_within": "1h",
                       "escalate": [{"after": "0s", "notify": ["duty-hook"]}]}]}]
    s = Setup(make_clock_broker, tmp_path, receiver, connect, workflows=wf,
              channels=[{"id": "duty-hook", "path": "/duty"}])
    _, _, case = s.report()
    a = wait_push(s.desk["police-desk"], pred=lambda m: m["case"] == case)["id"]
    _, r = case_ack(s.desk["police-desk"], a)
    assert r.get("op") == "ack", r
    no_push(s.desk["police-desk"], "case", lambda m: m["id"] == a, wait=0.5,
            why="acknowledged without resolve_within")
    s.advance(30 * 24 * HOUR)
    assert not receiver.quiet("/duty", 0.5, pred=overdue_for(a))
    rec = assignment_in(case_file(s, case), a)
    assert rec["resolve_by"] == 0 and rec["resolve_level"] == 0, rec


def test_config_refuses_escalate_unresolved_without_resolve_within(tmp_path):
    cfg = h.base_config(tmp_path / "c")
    cfg["channels"] = [{"id": "duty-hook", "kind": "webhook", "url": "http://127.0.0.1:9/x",
                        "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}]
    cfg["broker"]["webhook_allow"] = ["127.0.0.0/8"]
    cfg["workflows"] = [{"name": "report", "match": {"type": "mandatory_report"},
                         "assign": [{"agency": "police", "ack_within": "1h",
                                     "escalate_unresolved": [{"after": "0s", "notify": ["duty-hook"]}]}]}]
    path = tmp_path / "c.yaml"
    path.write_text(h.to_yaml(cfg))
    r = h.run_bin(["--check-config", "-c", str(path)])
    assert r.returncode != 0, r
    assert "escalate_unresolved needs resolve_within" in r.stderr, r.stderr
    cfg["workflows"][0]["assign"][0]["resolve_within"] = "0s"
    path.write_text(h.to_yaml(cfg))
    r = h.run_bin(["--check-config", "-c", str(path)])
    assert r.returncode != 0 and "resolve_within" in r.stderr, r.stderr
    cfg["workflows"][0]["assign"][0]["resolve_within"] = "5d"
    path.write_text(h.to_yaml(cfg))
    r = h.run_bin(["--check-config", "-c", str(path)])
    assert r.returncode == 0, r.stderr


def test_report_counts_the_second_deadline(make_clock_broker, tmp_path, receiver, connect):
    """`carehub report` per agency: resolve due / on time / % and time to resolve
    p50/p90 (from the acknowledgement to the final status), and escalations of both
    stages — a scripted scenario on the virtual clock, the figures counted by hand:
      A acknowledged at T, resolved at T+1h (in time, 60 min);
      B acknowledged at T, resolved at T+3h (1 h late, 180 min; its resolve step fired);
      C acknowledged at T, never final (past resolve_by at T+2h; its step fired);
      D acknowledged at T+3h (resolve_by T+5h: not yet due)."""
    import test_carehub_cli as cli
    wf = resolve_wf("2h", steps=[{"after": "0s", "notify": ["duty-hook"]}])
    s = Setup(make_clock_broker, tmp_path, receiver, connect, workflows=wf,
              channels=[{"id": "duty-hook", "path": "/duty"}])
    desk = s.desk["police-desk"]

    def new_acked():
        _, _, case = s.report()
        a = wait_push(desk, pred=lambda m: m["case"] == case)["id"]
        _, r = case_ack(desk, a)
        assert r.get("op") == "ack", r
        return case, a

    (_, a), (b_case, b), (_, c) = new_acked(), new_acked(), new_acked()
    s.advance(HOUR)
    assert case_update(desk, a, "resolved", note="done")[1].get("op") == "ack"
    s.advance(2 * HOUR)
    late = receiver.wait("/duty", 2, timeout=PROMPT, pred=lambda r: stage_of(r) == "resolve")
    assert sorted(r.json["data"]["assignment"] for r in late) == sorted([b, c]), \
        "B and C went past resolve_by: one resolve-stage notice each (the precondition)"
    assert case_update(desk, b, "resolved", note="late")[1].get("op") == "ack"
    new_acked()   # D

    (doc,) = cli.json_lines(cli.run(s.b, "supervisor-01", "report", "--json"))
    (p,) = doc["agencies"]
    assert (p["agency"], p["assignments"], p["due"], p["on_time"]) == ("police", 4, 4, 4), p
    assert (p["resolve_due"], p["resolve_on_time"], p["resolve_on_time_pct"]) == (3, 1, 33.3), p
    assert (p["resolve_p50_min"], p["resolve_p90_min"]) == (60.0, 180.0), p
    assert p["escalations"] == 2, f"B's and C's resolve steps: {p}"
    csv = cli.ok(cli.run(s.b, "supervisor-01", "report", "--csv")).stdout.splitlines()
    assert csv[0].endswith(",resolve_due,resolve_on_time,resolve_on_time_pct,resolve_p50_min,"
                           "resolve_p90_min"), csv[0]
    assert csv[1].startswith("police,4,4,4,100.0,") and csv[1].endswith(",3,1,33.3,60.0,180.0"), csv
    text = cli.ok(cli.run(s.b, "supervisor-01", "report")).stdout
    assert "RES p50" in text and "33.3%" in text and "180.0m" in text, text
    html = tmp_path / "r.html"
    cli.ok(cli.run(s.b, "supervisor-01", "report", "--html", html))
    page = html.read_text()
    assert "resolve p90 (min)" in page and "<td>33.3%</td><td>60.0</td><td>180.0</td>" in page, page

    # the case file shows resolve_by and final_at as local times, not as milliseconds
    out = cli.ok(cli.run(s.b, "supervisor-01", "case", b_case)).stdout
    line = next(ln for ln in out.splitlines() if f"id={b}" in ln)
    assert "resolve_by=" in line and "final_at=" in line and "resolve_level=1" in line, out
    assert str(assignment_in(case_file(s, b_case), b)["resolve_by"]) not in line, line
