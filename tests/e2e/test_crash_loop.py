"""The crash loop (issue 6): kill -9 at random moments, many times, while four
school agents stream events and escalations fall due.

Set-up: one broker on the real clock (no test clock: it does not survive a
kill). Four school agents stream absences and mandatory reports (each report
about a child of its own, so each makes a case, a police assignment and a
deadline); the police desk never connects, so every report is escalated: step 1
at ack_by, step 2 one second later, both to a webhook receiver. The broker is
SIGKILLed CAREHUB_CRASH_CYCLES times (20 in `make check`, 200 in `make soak`)
at random moments — mid-batch, mid-grow of the map (it starts at 64 KiB), mid
webhook — and restarted on the same data directory and port.

Afterwards, with a last kill -9 and restart:
  - acknowledged events lost: 0 — every acked id re-sent is duplicate:true with
    its original event and case (crash_harness.verify_acked);
  - events stored twice: 0 — event ids unique, one case per (child, type);
  - escalations: every step that fell due (ack_by + after <= now, per the
    `assignments` query) reached the receiver under exactly one webhook-id, and
    no other overdue notice exists. A notice whose delivery was in flight at a
    kill may be delivered again under its same webhook-id (at-least-once with an
    idempotency key, Standard Webhooks); those repeats are counted and reported;
  - the case index lists each acked event of a case once (a sample of 40 cases);
  - `carehubd verify --data` on the killed store: the trail is intact.

CAREHUB_CRASH_SEED replays a run. The figures are printed (pytest -s) and
written to $CAREHUB_CRASH_REPORT (a JSON file) when set.
"""

import json
import os
import random
import time

import carehub_harness as h
from carehub_harness import uid
from crash_harness import SCHOOLS, StreamAgent, check_cases, verify_acked, wait_progress
from routing_harness import (CLOCK_AGENT, make_clock_broker, new_secret, receiver,  # noqa: F401
                             routing_config, verify_py, webhook_channel)

CYCLES = int(os.environ.get("CAREHUB_CRASH_CYCLES", "20"))
STEP2_AFTER_MS = 1000


def loop_config(workdir, rx, secret):
    wf = [{"name": "reports", "match": {"type": "mandatory_report"},
           "assign": [{"agency": "police", "ack_within": "1s",
                       "escalate": [{"after": "0s", "notify": ["duty"]},
                                    {"after": f"{STEP2_AFTER_MS}ms", "notify": ["duty"]}]}]}]
    extra = [{"id": s, "role": "school"} for s in SCHOOLS if s not in ("school-0042", "school-0043")]
    return routing_config(workdir, workflows=wf, agents=extra,
                          channels=[webhook_channel("duty", rx.url("/duty"), secret)],
                          # a tiny initial map: the store grows while being killed
                          broker={"map_size": "64K", "map_max": "256M"})


def query_all_assignments(agent):
    out, after = [], None
    while True:
        req = {"v": 1, "op": "query", "id": uid("q"), "what": "assignments", "limit": 1000}
        if after:
            req["after"] = after
        r = agent.request(req, timeout=30)
        assert r.get("op") == "result", f"assignments query refused: {h.summarize(r)}"
        out += r["assignments"]
        after = r.get("next")
        if not after:
            return out, r["now"]


def overdue_notices(rx, secret):
    """{(assignment, level): {webhook-id: deliveries}} of the overdue notices received."""
    got = {}
    for r in list(rx.at("/duty")):
        if r.status != 200:
            continue
        why = verify_py(secret, r)
        assert not why, f"a notice does not verify ({why}): {r!r}"
        body = r.json
        assert body.get("type") == "assignment.overdue", f"unexpected notice {body!r}"
        d = body["data"]
        slot = got.setdefault((d["assignment"], d["level"]), {})
        slot[r.webhook_id] = slot.get(r.webhook_id, 0) + 1
    return got


def test_crash_loop(make_clock_broker, receiver, connect, tmp_path):  # noqa: F811
    seed = int(os.environ.get("CAREHUB_CRASH_SEED", random.randrange(2 ** 32)))
    rng = random.Random(seed)
    secret = new_secret()
    b = make_clock_broker(config=loop_config(tmp_path / "b", receiver, secret), name="b",
                          test_clock=False)
    streams = [StreamAgent(s, b.endpoint, random.Random(rng.random()), window=16, rate=80.0,
                           report_share=0.15, unique_reports=True) for s in SCHOOLS]
    t0 = time.monotonic()
    for s in streams:
        s.start()
    kills = []
    try:
        for cycle in range(CYCLES):
            before = sum(s.n_acked() for s in streams)
            assert wait_progress(streams, before, rng.randint(1, 40), timeout=20), \
                (f"[seed {seed}] no progress before kill {cycle + 1}: "
                 f"{[s.errors[:3] for s in streams]}\n{b.log_tail()}")
            time.sleep(rng.uniform(0.0, 0.5))
            b.kill9()
            kills.append(sum(s.n_acked() for s in streams))
            time.sleep(rng.uniform(0.0, 0.3))
            b.restart(same_endpoints=True)
        before = sum(s.n_acked() for s in streams)
        assert wait_progress(streams, before, 20, timeout=20), f"[seed {seed}] no progress after the last restart"
        for s in streams:
            s.generate = False
        deadline = time.monotonic() + 30
        for s in streams:
            s.join(max(0.1, deadline - time.monotonic()))
        stuck = {s.agent: sorted(s.pending)[:5] for s in streams if s.is_alive()}
        assert not stuck, f"[seed {seed}] events never acked after the last restart: {stuck}"
    finally:
        for s in streams:
            s.halt = True
        for s in streams:
            s.join(5)
    errors = [e for s in streams for e in s.errors]
    assert not errors, f"[seed {seed}] agent errors:\n" + "\n".join(errors[:20])

    # One more kill with nothing in flight, then: nothing acknowledged lost or doubled.
    b.kill9()
    b.restart(same_endpoints=True)
    acked = sum(len(s.acked) for s in streams)
    failures = verify_acked(b.endpoint, streams)
    assert not failures, (f"[seed {seed}] {len(failures)} of {acked} acked events not intact "
                          f"(acked totals at kills: {kills}):\n" + "\n".join(failures[:20]))
    problems = check_cases(streams)
    assert not problems, f"[seed {seed}] events stored twice or cases split:\n" + "\n".join(problems[:20])

    # The case index (case_events, written in bulk behind the events) lists every acked
    # event of a case exactly once after the kills.
    sup = connect(b, login=CLOCK_AGENT)
    by_case = {}
    for s in streams:
        for ev, case in s.acked.values():
            by_case.setdefault(case, []).append(ev)
    sample = rng.sample(sorted(by_case), min(40, len(by_case)))
    for case in sample:
        r = sup.request({"v": 1, "op": "query", "id": uid("q"), "what": "case", "case": case}, timeout=30)
        assert r.get("op") == "result", f"[seed {seed}] query case {case}: {h.summarize(r)}"
        listed = [e["id"] for e in r["events"]]
        assert len(listed) == len(set(listed)), f"[seed {seed}] {case} lists an event twice: {listed}"
        assert set(listed) == set(by_case[case]), \
            f"[seed {seed}] {case} lists {sorted(listed)}, acked {sorted(by_case[case])}"

    # Escalations: wait until every step has fallen due, then each fired exactly once.
    assignments, now = query_all_assignments(sup)
    police = {a["id"]: a for a in assignments if a["agency"] == "police"}
    reports = sum(1 for s in streams for m in (s.messages[mid] for mid in s.acked)
                  if m["type"] == "mandatory_report")
    assert len(police) == reports, (f"[seed {seed}] {reports} acked reports but {len(police)} "
                                    f"police assignments")
    last_due = max(a["ack_by"] for a in police.values()) + STEP2_AFTER_MS
    while time.time() * 1000 < last_due + 300:
        time.sleep(0.1)
    due = {(aid, lvl) for aid in police for lvl in (1, 2)}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = overdue_notices(receiver, secret)
        if due <= set(got):
            break
        time.sleep(0.2)
    time.sleep(1.0)                       # late doubles would come now
    got = overdue_notices(receiver, secret)
    missing = sorted(due - set(got))
    unexpected = sorted(set(got) - due)
    twice = {k: v for k, v in got.items() if len(v) != 1}
    repeats = sum(n - 1 for v in got.values() for n in v.values())
    assert not missing, f"[seed {seed}] {len(missing)} of {len(due)} due escalations never fired: {missing[:10]}"
    assert not unexpected, f"[seed {seed}] overdue notices for unknown steps: {unexpected[:10]}"
    assert not twice, (f"[seed {seed}] {len(twice)} escalation steps fired more than once "
                       f"(distinct webhook-ids): {list(twice.items())[:5]}")
    assignments, _ = query_all_assignments(sup)
    levels = {a["id"]: a.get("level") for a in assignments if a["agency"] == "police"}
    assert set(levels.values()) == {2}, f"[seed {seed}] assignment levels after all steps: {levels}"

    # The trail of the killed store verifies.
    b.kill9()
    r = h.run_bin(["verify", "--data", str(b.config["broker"]["data_dir"])], timeout=300)
    assert r.returncode == 0 and "intact" in r.stdout, \
        f"[seed {seed}] verify after {CYCLES} kills:\n{r.stdout}{r.stderr}"
    b.expect_clean_exit = False

    figures = {"seed": seed, "cycles": CYCLES, "acked": acked, "lost": 0, "duplicated": 0,
               "escalation_steps_due": len(due), "escalations_fired_once": len(got),
               "notice_redeliveries_same_id": repeats,
               "duplicates_seen_while_streaming": sum(s.duplicates_seen for s in streams),
               "seconds": round(time.monotonic() - t0, 1), "verify": r.stdout.strip()}
    print(f"\ncrash loop: {json.dumps(figures, ensure_ascii=False)}")
    if os.environ.get("CAREHUB_CRASH_REPORT"):
        with open(os.environ["CAREHUB_CRASH_REPORT"], "w") as f:
            json.dump(figures, f, indent=1, ensure_ascii=False)
