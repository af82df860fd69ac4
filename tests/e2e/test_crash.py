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
import threading
import time

import zmq

import carehub_harness as h
from carehub_harness import assert_ack, uid

SCHOOLS = ["school-0042", "school-0043", "school-0044", "school-0045"]
CHILDREN = [f"K-{i}" for i in range(8)]
RESEND_AFTER = 2.0
HELLO_RETRY = 1.0


def crash_overrides():
    agents = [dict(a) for a in h.AGENTS] + [{"id": s, "role": "school"} for s in SCHOOLS[1:]]
    # a tiny initial map: the store grows (resizes its map) while being killed
    return {"agents": agents, "broker": {"map_size": "64K", "map_max": "256M"}}


class StreamAgent(threading.Thread):
    """One school agent streaming events with a window of in-flight ones."""

    def __init__(self, name, endpoint, rng, window=8, rate=60.0):
        super().__init__(name=f"stream-{name}", daemon=True)
        self.agent = name
        self.endpoint = endpoint
        self.rng = rng
        self.window = window
        self.interval = 1.0 / rate
        self.generate = True          # cleared: stop making new events, drain pending
        self.halt = False             # set: leave now
        self.acked = {}               # id -> (event, case)
        self.messages = {}            # id -> message (as first sent)
        self.pending = {}             # id -> last send time
        self.errors = []
        self.duplicates_seen = 0
        self.hellos = 0
        self._n = 0
        self._lock = threading.Lock()

    def n_acked(self):
        with self._lock:
            return len(self.acked)

    def _new_event(self):
        self._n += 1
        mid = f"{self.agent}-e{self._n}"
        child = self.rng.choice(CHILDREN)
        if self.rng.random() < 0.75:
            msg = h.event_msg("absence", h.absence_body(child, consecutive_days=self.rng.randint(1, 9)), mid)
        else:
            msg = h.event_msg("mandatory_report", h.mandatory_report_body(child), mid)
        self.messages[mid] = msg
        return mid

    @staticmethod
    def _send(sock, msg):
        """Never block: while the broker is down a full queue just means resend later."""
        try:
            sock.send(h.pack(msg), zmq.NOBLOCK)
        except zmq.Again:
            pass

    def run(self):
        sock = h.context().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint)
        need_hello, hello_id, hello_sent = True, None, 0.0
        next_gen = time.monotonic()
        try:
            while not self.halt:
                now = time.monotonic()
                if need_hello and now - hello_sent > HELLO_RETRY:
                    self.hellos += 1
                    hello_id = f"{self.agent}-h{self.hellos}"
                    self._send(sock, {"v": 1, "op": "hello", "id": hello_id, "agent": self.agent,
                                      "software": "e2e-crash"})
                    hello_sent = now
                if not need_hello:
                    while self.generate and len(self.pending) < self.window and now >= next_gen:
                        mid = self._new_event()
                        self._send(sock, self.messages[mid])
                        self.pending[mid] = now
                        next_gen += self.interval
                        if next_gen < now - 1:
                            next_gen = now
                    for mid, t in list(self.pending.items()):
                        if now - t > RESEND_AFTER:
                            self._send(sock, self.messages[mid])
                            self.pending[mid] = now
                if not self.generate and not self.pending and not need_hello:
                    return
                if not sock.poll(50):
                    continue
                while sock.poll(0):
                    raw = sock.recv()
                    try:
                        msg = h.unpack(raw)
                    except Exception as e:  # noqa: BLE001
                        self.errors.append(f"undecodable frame {raw[:40]!r}: {e}")
                        continue
                    self._handle(sock, msg, hello_id)
                    if msg.get("op") == "welcome" and msg.get("id") == hello_id:
                        need_hello = False
                        now = time.monotonic()
                        for mid in list(self.pending):          # resend everything unacked
                            self._send(sock, self.messages[mid])
                            self.pending[mid] = now
                    elif msg.get("op") == "nack" and msg.get("code") == "hello_required" and not need_hello:
                        need_hello, hello_sent = True, 0.0
        except Exception as e:  # noqa: BLE001
            self.errors.append(f"{type(e).__name__}: {e}")
        finally:
            sock.close(0)

    def _handle(self, sock, msg, hello_id):
        op = msg.get("op")
        if op == "ping":
            self._send(sock, {"v": 1, "op": "pong", "id": msg.get("id")})
        elif op == "ack":
            mid = msg.get("id")
            if mid not in self.messages:
                self.errors.append(f"ack for an id never sent: {msg!r}")
                return
            got = (msg.get("event"), msg.get("case"))
            if not all(isinstance(x, str) and x for x in got):
                self.errors.append(f"ack without event/case: {msg!r}")
                return
            if msg.get("duplicate") is True:
                self.duplicates_seen += 1
            with self._lock:
                if mid in self.acked:
                    if self.acked[mid] != got:
                        self.errors.append(f"{self.agent}/{mid}: acked as {self.acked[mid]} and later as {got}")
                else:
                    self.acked[mid] = got
            self.pending.pop(mid, None)
        elif op == "nack":
            code = msg.get("code")
            if code in ("hello_required", "unavailable"):
                return                       # stays pending; resent after hello / timeout
            self.errors.append(f"{self.agent}: unexpected nack {msg!r}")
        elif op == "welcome":
            if msg.get("agent") != self.agent:
                self.errors.append(f"welcome names {msg.get('agent')!r}, expected {self.agent!r}")
        elif op in ("case", "outcome"):
            pass
        else:
            self.errors.append(f"{self.agent}: unexpected message {msg!r}")


def _verify(endpoint, streams, timeout=60.0):
    """Resend every acked id from its agent (pipelined); each must be a duplicate
    with the original event and case."""
    failures = []
    for s in streams:
        a = h.Agent(endpoint, timeout=10)
        try:
            a.login(s.agent)
            todo = list(s.acked.items())
            in_flight = {}
            deadline = time.monotonic() + timeout
            i = 0
            while (i < len(todo) or in_flight) and time.monotonic() < deadline:
                while i < len(todo) and len(in_flight) < 64:
                    mid, evc = todo[i]
                    a.send(s.messages[mid])
                    in_flight[mid] = evc
                    i += 1
                r = a.recv_reply(timeout=10)
                if r is None:
                    failures.append(f"{s.agent}: no reply to resends {sorted(in_flight)[:5]}…")
                    break
                mid = r.get("id")
                if mid not in in_flight:
                    failures.append(f"{s.agent}: unexpected reply {h.summarize(r)}")
                    continue
                evc = in_flight.pop(mid)
                if r.get("op") != "ack":
                    failures.append(f"{s.agent}/{mid} acked as {evc} before the crash, now: {h.summarize(r)}")
                elif r.get("duplicate") is not True:
                    failures.append(f"{s.agent}/{mid} acked as {evc} but LOST: resend got {h.summarize(r)}")
                elif (r.get("event"), r.get("case")) != evc:
                    failures.append(f"{s.agent}/{mid} acked as {evc}, resend says "
                                    f"{(r.get('event'), r.get('case'))}")
            if i < len(todo) or in_flight:
                failures.append(f"{s.agent}: verification did not finish ({i}/{len(todo)} sent)")
        finally:
            a.close()
    return failures


def _check_cases(streams):
    """Events about one child and of one type share one case; different
    (child, type) pairs have different cases; event ids are unique."""
    by_key, events = {}, {}
    for s in streams:
        for mid, (ev, case) in s.acked.items():
            m = s.messages[mid]
            key = (m["body"]["child"]["id"], m["type"])
            by_key.setdefault(key, set()).add(case)
            if ev in events:
                return [f"event id {ev} given to both {events[ev]} and {(s.agent, mid)}"]
            events[ev] = (s.agent, mid)
    problems = [f"{key} spread over cases {sorted(c)}" for key, c in by_key.items() if len(c) != 1]
    owners = {}
    for key, cs in by_key.items():
        for c in cs:
            if c in owners and owners[c] != key:
                problems.append(f"case {c} holds both {owners[c]} and {key}")
            owners[c] = key
    return problems


def _wait_progress(streams, since, at_least, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(s.n_acked() for s in streams) - since >= at_least:
            return True
        if any(s.errors for s in streams):
            return False
        time.sleep(0.02)
    return False


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
            assert _wait_progress(streams, before, 40, timeout=15), \
                (f"[seed {seed}] no progress before kill {cycle + 1}: "
                 f"{[s.errors[:3] for s in streams]}")
            time.sleep(rng.uniform(0.2, 2.0))
            b.kill9()
            kills.append(sum(s.n_acked() for s in streams))
            time.sleep(rng.uniform(0.05, 0.4))
            b.restart(same_endpoints=True)
        before = sum(s.n_acked() for s in streams)
        assert _wait_progress(streams, before, 20, timeout=15), f"[seed {seed}] no progress after the last restart"
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
    failures = _verify(b.endpoint, streams)
    assert not failures, (f"[seed {seed}] {len(failures)} of {total} acked events not intact after "
                          f"kill -9 (acked totals at kills: {kills}):\n" + "\n".join(failures[:20]))
    problems = _check_cases(streams)
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
        assert _wait_progress(streams, 0, 30, timeout=15), [s.errors[:3] for s in streams]
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
    failures = _verify(b.endpoint, streams)
    assert not failures, "\n".join(failures[:20])
