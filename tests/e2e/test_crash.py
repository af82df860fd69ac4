"""Durability: the broker acks only after commit (PROTOCOL §4).

Agents stream events concurrently, each as a store-and-forward agent would:
keep every event until acked, resend after a timeout or a hello_required,
say hello again after a broker restart. The test kill -9s the broker at random
moments and restarts it on the same data_dir (and port). Afterwards every
acked (agent, id) must still be known: a resend gets duplicate:true with the
original event and case.
"""

import os
import random
import time

import carehub_harness as h
from carehub_harness import assert_ack, uid
from crash_harness import SCHOOLS, StreamAgent, check_cases, crash_overrides, verify_acked, wait_progress


def test_acked_event_survives_kill9(make_broker, connect):
    b = make_broker()
    a = connect(b, login="school-0042")
    mid = uid("ev")
    msg = h.event_msg("absence", h.absence_body(), mid)
    evc = assert_ack(a.request(msg), mid)
    b.kill9()                                   # right after the ack
    b.expect_clean_exit = False
    b.restart(same_endpoints=False)
    b.expect_clean_exit = True
    a2 = connect(b, login="school-0042")
    assert assert_ack(a2.request(msg), mid, duplicate=True) == evc


def test_kill9_while_streaming(make_broker):
    seed = int(os.environ.get("CAREHUB_CRASH_SEED", random.randrange(2 ** 32)))
    rng = random.Random(seed)
    b = make_broker(overrides=crash_overrides())
    streams = [StreamAgent(s, b.endpoint, random.Random(rng.random()), window=16, rate=100.0)
               for s in SCHOOLS]
    t0 = time.monotonic()
    for s in streams:
        s.start()
    try:
        kills = []
        for cycle in range(3):
            before = sum(s.n_acked() for s in streams)
            assert wait_progress(streams, before, 40, timeout=15), \
                (f"[seed {seed}] no progress before kill {cycle + 1}: "
                 f"{[s.errors[:3] for s in streams]}")
            time.sleep(rng.uniform(0.2, 2.0))
            b.kill9()
            kills.append(sum(s.n_acked() for s in streams))
            time.sleep(rng.uniform(0.05, 0.4))
            b.restart(same_endpoints=True)
        before = sum(s.n_acked() for s in streams)
        assert wait_progress(streams, before, 20, timeout=15), f"[seed {seed}] no progress after the last restart"
        for s in streams:
            s.generate = False
        deadline = time.monotonic() + 20
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

    # One more kill -9 with nothing in flight: every ack so far was committed.
    b.kill9()
    b.expect_clean_exit = False
    b.restart(same_endpoints=True)
    b.expect_clean_exit = True
    total = sum(len(s.acked) for s in streams)
    failures = verify_acked(b.endpoint, streams)
    assert not failures, (f"[seed {seed}] {len(failures)} of {total} acked events not intact after "
                          f"kill -9 (acked totals at kills: {kills}):\n" + "\n".join(failures[:20]))
    problems = check_cases(streams)
    assert not problems, f"[seed {seed}] case grouping broken across crashes:\n" + "\n".join(problems[:20])
    assert total >= 200, f"[seed {seed}] only {total} events acked: the test did not exercise much"
    print(f"[seed {seed}] acked {total} events; acked totals at the kills: {kills}; "
          f"duplicates seen while streaming: {sum(s.duplicates_seen for s in streams)}; "
          f"hellos: {[s.hellos for s in streams]}")
    assert time.monotonic() - t0 < 90, "the crash test is too slow"


def test_sigterm_while_streaming(make_broker):
    """SIGTERM finishes the batch in hand, acks it and exits 0; every ack survives."""
    b = make_broker(overrides=crash_overrides())
    streams = [StreamAgent(s, b.endpoint, random.Random(i)) for i, s in enumerate(SCHOOLS[:2])]
    for s in streams:
        s.start()
    try:
        assert wait_progress(streams, 0, 30, timeout=15), [s.errors[:3] for s in streams]
        rc = b.stop()
        assert rc == 0, f"SIGTERM under load: exit code {rc}"
        time.sleep(0.3)            # let replies sent before exit arrive
    finally:
        for s in streams:
            s.halt = True
        for s in streams:
            s.join(5)
    errors = [e for s in streams for e in s.errors]
    assert not errors, "\n".join(errors[:20])
    b.restart(same_endpoints=True)
    failures = verify_acked(b.endpoint, streams)
    assert not failures, "\n".join(failures[:20])
