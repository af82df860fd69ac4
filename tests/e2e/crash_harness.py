"""crash_harness — agents that stream events across broker crashes, and the checks
made afterwards (used by test_crash.py and test_crash_loop.py).

  StreamAgent     a thread acting as a store-and-forward school agent: keeps every
                  event until acked, resends after RESEND_AFTER or a hello_required,
                  says hello again after a broker restart; records every ack
  verify_acked    resends every acked id: each must be duplicate:true with the
                  original event and case (nothing acknowledged was lost)
  check_cases     one case per (child, type), event ids unique (nothing stored twice)
  wait_progress   waits until the streams got N more acks
"""

import threading
import time

import zmq

import carehub_harness as h

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

    def __init__(self, name, endpoint, rng, window=8, rate=60.0, report_share=0.25,
                 unique_reports=False):
        """report_share of the events are mandatory reports, the rest absences; with
        unique_reports each report is about a child of its own (a case, an assignment
        and its deadline per report), otherwise children repeat (events join cases)."""
        super().__init__(name=f"stream-{name}", daemon=True)
        self.report_share = report_share
        self.unique_reports = unique_reports
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
        if self.rng.random() >= self.report_share:
            msg = h.event_msg("absence", h.absence_body(child, consecutive_days=self.rng.randint(1, 9)), mid)
        else:
            if self.unique_reports:
                child = f"R-{self.agent}-{self._n}"
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


def verify_acked(endpoint, streams, timeout=60.0):
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


def check_cases(streams):
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


def wait_progress(streams, since, at_least, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(s.n_acked() for s in streams) - since >= at_least:
            return True
        if any(s.errors for s in streams):
            return False
        time.sleep(0.02)
    return False
