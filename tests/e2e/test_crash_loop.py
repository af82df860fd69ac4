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

test_crash_loop_storm_with_desks runs the same loop during a storm of escalations
with agency desks acknowledging (issue 10, item 7; described above it below).

CAREHUB_CRASH_SEED replays a run. The figures are printed (pytest -s) and
written to $CAREHUB_CRASH_REPORT (a JSON file) when set.
"""

import json
import os
import random
import threading
import time

import carehub_harness as h
from carehub_harness import uid
from crash_harness import SCHOOLS, DeskAgent, StreamAgent, check_cases, verify_acked, wait_progress
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
        why = verify_py(secret, r, now=r.wall)      # long runs: as checked on arrival
        assert not why, f"a notice does not verify ({why}): {r!r}"
        body = r.json
        assert body.get("type") == "assignment.overdue", f"unexpected notice {body!r}"
        d = body["data"]
        slot = got.setdefault((d["assignment"], d["level"]), {})
        slot[r.webhook_id] = slot.get(r.webhook_id, 0) + 1
    return got



def kill_and_restart(b, streams, rng, kills):
    """SIGKILL the broker, note how many events were acked then, restart it on its data."""
    b.kill9()
    kills.append(sum(s.n_acked() for s in streams))
    time.sleep(rng.uniform(0.0, 0.3))
    b.restart(same_endpoints=True)


def finish_streams(streams, seed):
    """After the last restart: the streams make progress, stop generating, and every
    event they sent is acked within 30 s."""
    before = sum(s.n_acked() for s in streams)
    assert wait_progress(streams, before, 20, timeout=20), f"[seed {seed}] no progress after the last restart"
    for s in streams:
        s.generate = False
    deadline = time.monotonic() + 30
    for s in streams:
        s.join(max(0.1, deadline - time.monotonic()))
    stuck = {s.agent: sorted(s.pending)[:5] for s in streams if s.is_alive()}
    assert not stuck, f"[seed {seed}] events never acked after the last restart: {stuck}"

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
            kill_and_restart(b, streams, rng, kills)
        finish_streams(streams, seed)
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


# ---------------------------------------------------------------------------
# The crash loop during a storm, with desks acknowledging (issue 10, item 7).
#
# Reporters send mandatory reports in waves (STORM_WAVE per reporter every
# STORM_PERIOD s, each about a new child: a case, a police assignment and its
# deadline each), so that hundreds of escalation steps fall due within a second
# or two (and more pile up while the broker is down: they all fire at restart).
# Two police desks are connected the whole time: they take the `case` pushes and,
# for two thirds of the assignments (half of those at both desks: the second is an
# ack of an acknowledged assignment), send case_ack, case_update in_progress or
# case_update resolved after a random delay that lands before step 1, between the
# steps or after step 2; unanswered ops are re-sent after a restart. Reporters
# confirm the outcomes of resolved cases. Two schools stream absences. Half of the
# kills wait for notices to be arriving (mid-storm). Of the assignments no desk
# acknowledges in time, half (up to STORM_KEEP_OPEN) stay open to the end; the
# others are resolved by a desk a moment after their last step fell due, so the
# open pile re-pushed after every hello stays bounded (storm_planner). Afterwards:
#   - events: nothing acknowledged lost, nothing stored twice (as above); each
#     acked report has exactly one police assignment;
#   - every assignment a desk got an `ack` for is acknowledged in the store, in the
#     state asked for, with acked_at no later than that ack; every other one is open;
#   - escalations: the steps the receiver got for an assignment are exactly 1..level
#     of the store, each under exactly one webhook-id (repeats of that id are
#     counted); an assignment never acknowledged fired both steps; no step fired
#     whose due time is after the ack's commit (acked_at), nor one due after the
#     moment a desk held the broker's `ack` (the client's own clock);
#   - `carehubd verify --data` on the killed store: intact.

STORM_WAVE = int(os.environ.get("CAREHUB_STORM_WAVE", "50"))
STORM_PERIOD = 2.0
STORM_ACK_WITHIN_MS = 1500
STORM_STEPS_MS = (0, 700)
STORM_REPORTERS = ["reporter-01", "reporter-02", "reporter-03"]
STORM_DESKS = ["police-desk", "police-desk-2"]
STORM_KEEP_OPEN = 300


def storm_config(workdir, rx, secret):
    wf = [{"name": "reports", "match": {"type": "mandatory_report"},
           "assign": [{"agency": "police", "ack_within": f"{STORM_ACK_WITHIN_MS}ms",
                       "escalate": [{"after": f"{ms}ms", "notify": ["duty"]} for ms in STORM_STEPS_MS]}]}]
    return routing_config(workdir, workflows=wf, agents=[{"id": "reporter-03", "role": "reporter"}],
                          channels=[webhook_channel("duty", rx.url("/duty"), secret)],
                          broker={"map_size": "64K", "map_max": "256M"})


def storm_planner(seed):
    """What the desks do to each assignment, decided once (when the first desk sees
    it) and shared by both:
      - 1/3 case_ack, 1/6 in_progress, 1/6 resolved ("timely"): half of them by both
        desks (the second is an ack of an acknowledged assignment), the rest by one;
        each desk acts 0-2.6 s after the push: before step 1, between the steps or
        after step 2;
      - 1/3 never acknowledged in time: half kept open to the end (at most
        STORM_KEEP_OPEN), the rest ("late") resolved by one desk 0.3-1.5 s after their
        last step fell due, so that the open pile, re-pushed after every hello, stays
        bounded.
    Returns (plans: assignment -> (kind, what, desks), decider(desk, rng))."""
    lock, plans, kept = threading.Lock(), {}, []

    def plan(aid):
        with lock:
            if aid not in plans:
                rng = random.Random(f"{seed}:{aid}")
                r, who = rng.random(), rng.random()
                one = [STORM_DESKS[who >= 0.75]]
                if r < 1 / 3:
                    if who < 0.5 and len(kept) < STORM_KEEP_OPEN:
                        kept.append(aid)
                        plans[aid] = ("open", None, [])
                    else:
                        plans[aid] = ("late", ("case_update", "resolved"), one)
                else:
                    what = (("case_ack",) if r < 2 / 3 else
                            ("case_update", "in_progress" if r < 5 / 6 else "resolved"))
                    plans[aid] = ("timely", what, STORM_DESKS if who < 0.5 else one)
            return plans[aid]

    def decider(desk, rng):
        def decide(aid, push):
            kind, what, desks = plan(aid)
            if desk not in desks:
                return None
            if kind == "late":
                last_due = push["ack_by"] + STORM_STEPS_MS[-1]
                return what, (last_due - h.now_ms()) / 1000 + rng.uniform(0.3, 1.5)
            return what, rng.uniform(0.0, 2.6)
        return decide

    return plans, decider


def peak_within(times, window_ms):
    """The most of `times` (ms) inside any window of window_ms."""
    times, best, j = sorted(times), 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window_ms:
            j += 1
        best = max(best, i - j + 1)
    return best


def test_crash_loop_storm_with_desks(make_clock_broker, receiver, connect, tmp_path):  # noqa: F811
    seed = int(os.environ.get("CAREHUB_CRASH_SEED", random.randrange(2 ** 32)))
    rng = random.Random(seed)
    secret = new_secret()
    b = make_clock_broker(config=storm_config(tmp_path / "b", receiver, secret), name="b",
                          test_clock=False)
    schools = [StreamAgent(s, b.endpoint, random.Random(rng.random()), window=16, rate=40.0,
                           report_share=0.0) for s in SCHOOLS[:2]]
    reporters = [StreamAgent(r, b.endpoint, random.Random(rng.random()), window=64,
                             report_share=1.0, unique_reports=True, burst=(STORM_WAVE, STORM_PERIOD),
                             confirm_outcomes=True) for r in STORM_REPORTERS]
    streams = schools + reporters
    plans, decider = storm_planner(seed)
    desks = [DeskAgent(d, b.endpoint, decider(d, random.Random(rng.random()))) for d in STORM_DESKS]

    t0 = time.monotonic()
    for a in desks + streams:
        a.start()

    def last_notice_age():
        reqs = receiver.requests
        return time.monotonic() - reqs[-1].t if reqs else 1e9

    kills, mid_storm, desk_ops_in_flight = [], 0, 0
    try:
        for cycle in range(CYCLES):
            before = sum(s.n_acked() for s in streams)
            assert wait_progress(streams, before, rng.randint(1, 40), timeout=20), \
                (f"[seed {seed}] no progress before kill {cycle + 1}: "
                 f"{[s.errors[:3] for s in streams + desks]}\n{b.log_tail()}")
            if rng.random() < 0.5:                     # aim at a storm: notices arriving
                until = time.monotonic() + 2 * STORM_PERIOD
                while last_notice_age() > 0.05 and time.monotonic() < until:
                    time.sleep(0.01)
                time.sleep(rng.uniform(0.0, 0.2))
            else:
                time.sleep(rng.uniform(0.0, 0.5))
            mid_storm += last_notice_age() < 0.1
            desk_ops_in_flight += sum(d.in_flight() for d in desks)
            kill_and_restart(b, streams, rng, kills)
        finish_streams(streams, seed)
        # the desks get the last pushes and finish what they started, then take up nothing new
        time.sleep(0.5)
        for d in desks:
            d.accept = False
        deadline = time.monotonic() + 30
        while any(d.busy() for d in desks) and time.monotonic() < deadline:
            time.sleep(0.05)
        busy = {d.agent: (len(d.scheduled), sorted(d.pending)[:5]) for d in desks if d.busy()}
        assert not busy, f"[seed {seed}] desk ops never answered after the last restart: {busy}"
    finally:
        for a in streams + desks:
            a.halt = True
        for a in streams + desks:
            a.join(5)
    errors = [e for a in streams + desks for e in a.errors]
    assert not errors, f"[seed {seed}] agent errors:\n" + "\n".join(errors[:20])

    # Every step has fallen due and been delivered: the receiver holds levels 1..level
    # of every police assignment, and every open one reached its last step.
    sup = connect(b, login=CLOCK_AGENT)
    assignments, _ = query_all_assignments(sup)
    police = [a for a in assignments if a["agency"] == "police"]
    last_due = max(a["ack_by"] for a in police) + STORM_STEPS_MS[-1]
    while time.time() * 1000 < last_due + 300:
        time.sleep(0.1)
    deadline = time.monotonic() + 30
    while True:
        assignments, _ = query_all_assignments(sup)
        police = {a["id"]: a for a in assignments if a["agency"] == "police"}
        want = {(aid, k) for aid, a in police.items() for k in range(1, (a.get("level") or 0) + 1)}
        settled = all(a["state"] != "open" or a.get("level") == len(STORM_STEPS_MS) for a in police.values())
        if (settled and want <= set(overdue_notices(receiver, secret))) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    time.sleep(1.0)                       # late doubles would come now

    # One more kill with nothing in flight, then: nothing acknowledged lost or doubled.
    b.kill9()
    b.restart(same_endpoints=True)
    acked = sum(len(s.acked) for s in streams)
    failures = verify_acked(b.endpoint, streams)
    assert not failures, (f"[seed {seed}] {len(failures)} of {acked} acked events not intact "
                          f"(acked totals at kills: {kills}):\n" + "\n".join(failures[:20]))
    problems = check_cases(streams)
    assert not problems, f"[seed {seed}] events stored twice or cases split:\n" + "\n".join(problems[:20])

    sup = connect(b, login=CLOCK_AGENT)
    assignments, _ = query_all_assignments(sup)
    police = {a["id"]: a for a in assignments if a["agency"] == "police"}
    report_cases = [ec[1] for s in reporters for ec in s.acked.values()]
    by_case = {}
    for a in police.values():
        by_case.setdefault(a["case"], []).append(a["id"])
    assert len(police) == len(report_cases) and set(by_case) == set(report_cases), \
        (f"[seed {seed}] {len(report_cases)} acked reports but {len(police)} police assignments "
         f"({len(set(report_cases) - set(by_case))} reports without one)")
    doubled = {c: ids for c, ids in by_case.items() if len(ids) != 1}
    assert not doubled, f"[seed {seed}] cases with more than one police assignment: {list(doubled.items())[:5]}"

    # What the desks were answered: the first `ack` of any desk bounds the commit.
    confirmed = {}
    for d in desks:
        for aid, x in d.done.items():
            c = confirmed.setdefault(aid, dict(x))
            c["acked"] = min(c["acked"], x["acked"])
            c["sent"] = min(c["sent"], x["sent"])
            assert c["op"] == x["op"], f"[seed {seed}] desks did different things to {aid}: {c} / {x}"
    both = sum(1 for aid in confirmed if all(aid in d.done for d in desks))
    late = sum(1 for aid in confirmed if plans.get(aid, ("?",))[0] == "late")
    state_of = {"case_ack": "acknowledged", "in_progress": "in_progress", "resolved": "resolved"}
    wrong = []
    for aid, c in confirmed.items():
        a = police.get(aid)
        if a is None:
            wrong.append(f"{aid}: acked to a desk but no such police assignment")
        elif a["state"] != state_of[c["op"]] or not a.get("acked_at") or a["acked_at"] > c["acked"]:
            wrong.append(f"{aid}: desk sent {c['op']} at {c['sent']}, broker acked at {c['acked']}; "
                         f"store: state {a['state']}, acked_at {a.get('acked_at')}")
    for aid, a in police.items():
        if aid not in confirmed and a["state"] != "open":
            wrong.append(f"{aid}: no desk acked it, but the store says {a['state']} (acked_at {a.get('acked_at')})")
    assert not wrong, (f"[seed {seed}] {len(wrong)} assignments whose acknowledgement is not what the desks "
                       f"were told:\n" + "\n".join(wrong[:20]))

    # Escalations.
    got = overdue_notices(receiver, secret)
    unexpected = sorted(k for k in got if k[0] not in police or k[1] not in range(1, len(STORM_STEPS_MS) + 1))
    assert not unexpected, f"[seed {seed}] overdue notices for unknown steps: {unexpected[:10]}"
    twice = {k: v for k, v in got.items() if len(v) != 1}
    assert not twice, (f"[seed {seed}] {len(twice)} escalation steps fired more than once "
                       f"(distinct webhook-ids): {list(twice.items())[:5]}")
    repeats = sum(n - 1 for v in got.values() for n in v.values())
    bad, must, suppressed, raced_fired, raced_quiet, late_fired, all_due, fired_due = [], 0, 0, 0, 0, 0, [], []
    for aid, a in police.items():
        level = a.get("level") or 0
        fired = {k for (x, k) in got if x == aid}
        if fired != set(range(1, level + 1)):
            bad.append(f"{aid}: store level {level}, the receiver got steps {sorted(fired)}")
        c = confirmed.get(aid)
        for k, after in enumerate(STORM_STEPS_MS, 1):
            due = a["ack_by"] + after
            all_due.append(due)
            if k in fired:
                fired_due.append(due)
            if c is None:
                must += 1
                if k not in fired:
                    bad.append(f"{aid}: never acknowledged, step {k} (due {due}) never reached the receiver")
            elif due > a["acked_at"] or due > c["acked"]:
                suppressed += 1
                if k in fired:
                    bad.append(f"{aid}: step {k} due {due} fired although acknowledged before it "
                               f"(acked_at {a['acked_at']}, desk held the ack at {c['acked']})")
            elif k in fired:
                raced_fired += 1
                late_fired += plans[aid][0] == "late"
            else:
                raced_quiet += 1
    assert not bad, f"[seed {seed}] {len(bad)} escalation problems:\n" + "\n".join(bad[:20])

    # How late the first copy of each notice came (wall clock, from the step's due time).
    first = {}
    for rq in receiver.at("/duty"):
        if rq.status == 200:
            d = rq.json["data"]
            first.setdefault((d["assignment"], d["level"]), rq.wall * 1000)
    lags = sorted(t - police[aid]["ack_by"] - STORM_STEPS_MS[k - 1] for (aid, k), t in first.items())

    # The trail of the killed store verifies.
    b.kill9()
    r = h.run_bin(["verify", "--data", str(b.config["broker"]["data_dir"])], timeout=300)
    assert r.returncode == 0 and "intact" in r.stdout, \
        f"[seed {seed}] verify after {CYCLES} kills:\n{r.stdout}{r.stderr}"
    b.expect_clean_exit = False

    stale = sum(len(d.stale_pushes) for d in desks)
    assert not stale, (f"[seed {seed}] {stale} `case` pushes of assignments the same desk had an ack "
                       f"for: {[d.stale_pushes[:5] for d in desks]}")
    figures = {"seed": seed, "cycles": CYCLES, "kills_mid_storm": mid_storm,
               "desk_ops_in_flight_at_kills": desk_ops_in_flight,
               "acked": acked, "reports": len(report_cases), "lost": 0, "duplicated": 0,
               "assignments_acked": len(confirmed), "acked_by_both_desks": both,
               "assignments_open": len(police) - len(confirmed),
               "assignments_resolved_after_last_step": late,
               "steps_fired_before_those_resolutions": late_fired,
               "steps_due_unacked": must, "steps_fired": len(got),
               "steps_due_after_ack_not_fired": suppressed,
               "steps_raced_ack_fired": raced_fired, "steps_raced_ack_not_fired": raced_quiet,
               "storm_peak_steps_due_in_1s": peak_within(all_due, 1000),
               "storm_peak_steps_fired_due_in_1s": peak_within(fired_due, 1000),
               "notice_redeliveries_same_id": repeats,
               "notice_late_s_p50_p99_max": [round(lags[int(q * (len(lags) - 1))] / 1000, 2)
                                             for q in (0.5, 0.99, 1)] if lags else None,
               "outcomes_confirmed": sum(len(s.outcomes) for s in reporters),
               "duplicates_seen_while_streaming": sum(s.duplicates_seen for s in streams),
               "seconds": round(time.monotonic() - t0, 1), "verify": r.stdout.strip()}
    print(f"\ncrash loop (storm, desks): {json.dumps(figures, ensure_ascii=False)}")
    if os.environ.get("CAREHUB_CRASH_REPORT"):
        path = os.environ["CAREHUB_CRASH_REPORT"]
        root, ext = os.path.splitext(path)
        with open(f"{root}-storm{ext or '.json'}", "w") as f:
            json.dump(figures, f, indent=1, ensure_ascii=False)
