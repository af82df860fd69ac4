"""crash_harness — agents that stream events across broker crashes, and the checks
made afterwards (used by test_crash.py and test_crash_loop.py).

  StreamAgent     a thread acting as a store-and-forward school agent: keeps every
                  event until acked, resends after RESEND_AFTER or a hello_required,
                  says hello again after a broker restart; records every ack; a
                  steady rate or waves (burst=); optionally confirms outcomes
  DeskAgent       a thread acting as an agency desk: takes `case` pushes, acknowledges
                  (case_ack / case_update) the assignments its decide() picks, when it
                  says; keeps each op until answered, says hello again after a restart
  verify_acked    resends every acked id: each must be duplicate:true with the
                  original event and case (nothing acknowledged was lost)
  check_cases     one case per (child, type), event ids unique (nothing stored twice)
  wait_progress   waits until the streams got N more acks
"""

import heapq
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
                 unique_reports=False, burst=None, confirm_outcomes=False):
        """report_share of the events are mandatory reports, the rest absences; with
        unique_reports each report is about a child of its own (a case, an assignment
        and its deadline per report), otherwise children repeat (events join cases).
        burst=(n, seconds): instead of a steady rate, a wave of n new events every
        `seconds` (sent as fast as the window allows), so their deadlines fall due
        together. confirm_outcomes: answer each `outcome` push with `received`."""
        super().__init__(name=f"stream-{name}", daemon=True)
        self.burst = burst
        self.confirm_outcomes = confirm_outcomes
        self.outcomes = {}            # outcome id -> event id (the agent's own ref)
        self._quota = 0
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
                if not need_hello and self.burst:
                    if self.generate and now >= next_gen:
                        self._quota = min(self._quota + self.burst[0], 2 * self.burst[0])  # a new wave
                        next_gen = max(next_gen + self.burst[1], now)
                    while self.generate and self._quota > 0 and len(self.pending) < self.window:
                        mid = self._new_event()
                        self._send(sock, self.messages[mid])
                        self.pending[mid] = now
                        self._quota -= 1
                if not need_hello:
                    while (self.generate and not self.burst and len(self.pending) < self.window
                           and now >= next_gen):
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
        elif op == "outcome":
            if self.confirm_outcomes:
                self.outcomes[msg.get("id")] = msg.get("ref")
                self._send(sock, {"v": 1, "op": "received", "id": msg.get("id")})
        elif op == "case":
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


DESK_PING_EVERY = 0.5


class DeskAgent(threading.Thread):
    """An agency desk connected the whole time (a thread).

    Says hello, and again after a restart: it pings every DESK_PING_EVERY, and a
    `hello_required` answer (to anything) means the broker lost its session. Takes
    every `case` push; for an assignment seen the first time, `decide(assignment,
    push)` says what to do and when: None (nothing), or (what, delay) with what
    ("case_ack",) or ("case_update", status) and delay in seconds from now. One op
    per assignment and desk. Every op is kept until answered `ack` (re-sent after
    RESEND_AFTER and after each welcome). Records per assignment the first send and
    the first `ack` (wall ms): the ack was committed at or before that moment
    (PROTOCOL §5, docs/architecture.md). A `case` push of an assignment this desk
    held an ack for (more than 0.5 s before) is recorded in stale_pushes."""

    def __init__(self, name, endpoint, decide):
        super().__init__(name=f"desk-{name}", daemon=True)
        self.agent = name
        self.endpoint = endpoint
        self.decide = decide
        self.seen = {}                # assignment -> {case, ack_by, first: wall ms}
        self.plan = {}                # assignment -> what this desk does to it
        self.scheduled = []           # heap of (mono due, assignment)
        self.ops = {}                 # msg id -> (assignment, message)
        self.pending = {}             # msg id -> last send (mono)
        self.done = {}                # assignment -> {op, sent: wall ms, acked: wall ms, case}
        self.stale_pushes = []
        self.pushes = 0
        self.replies = 0
        self.errors = []
        self.hellos = 0
        self.accept = True            # cleared: new assignments are not taken in hand
        self.halt = False
        self._n = 0
        self._lock = threading.Lock()

    def busy(self):
        with self._lock:
            return bool(self.scheduled or self.pending)

    def in_flight(self):
        with self._lock:
            return len(self.pending)

    def _op(self, aid, what):
        self._n += 1
        mid = f"{self.agent}-a{self._n}"
        if what[0] == "case_ack":
            msg = {"v": 1, "op": "case_ack", "id": mid, "assignment": aid, "by": f"officer-{self.agent}"}
        else:
            msg = {"v": 1, "op": "case_update", "id": mid, "assignment": aid, "status": what[1],
                   "note": f"{what[1]} by {self.agent}"}
        return mid, msg

    def run(self):
        sock = h.context().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint)
        need_hello, hello_id, hello_sent, last_ping = True, None, 0.0, 0.0
        try:
            while not self.halt:
                now = time.monotonic()
                if need_hello and now - hello_sent > HELLO_RETRY:
                    self.hellos += 1
                    hello_id = f"{self.agent}-h{self.hellos}"
                    StreamAgent._send(sock, {"v": 1, "op": "hello", "id": hello_id, "agent": self.agent,
                                             "software": "e2e-crash-desk"})
                    hello_sent = now
                if not need_hello:
                    if now - last_ping > DESK_PING_EVERY:
                        self._n += 1
                        StreamAgent._send(sock, {"v": 1, "op": "ping", "id": f"{self.agent}-p{self._n}"})
                        last_ping = now
                    with self._lock:
                        while self.scheduled and self.scheduled[0][0] <= now:
                            _, aid = heapq.heappop(self.scheduled)
                            mid, msg = self._op(aid, self.plan[aid])
                            self.ops[mid] = (aid, msg)
                            self.done[aid] = {"op": msg.get("status", "case_ack"), "sent": h.now_ms(),
                                              "acked": None, "case": self.seen[aid]["case"]}
                            StreamAgent._send(sock, msg)
                            self.pending[mid] = now
                        for mid, t in list(self.pending.items()):
                            if now - t > RESEND_AFTER:
                                StreamAgent._send(sock, self.ops[mid][1])
                                self.pending[mid] = now
                if not sock.poll(20):
                    continue
                while sock.poll(0):
                    raw = sock.recv()
                    try:
                        msg = h.unpack(raw)
                    except Exception as e:  # noqa: BLE001
                        self.errors.append(f"undecodable frame {raw[:40]!r}: {e}")
                        continue
                    op = msg.get("op")
                    if op == "welcome" and msg.get("id") == hello_id:
                        need_hello = False
                        with self._lock:
                            t = time.monotonic()
                            for mid in self.pending:              # resend everything unanswered
                                StreamAgent._send(sock, self.ops[mid][1])
                                self.pending[mid] = t
                    elif op == "nack" and msg.get("code") == "hello_required":
                        if not need_hello:
                            need_hello, hello_sent = True, 0.0
                    else:
                        with self._lock:
                            self._handle(sock, msg)
        except Exception as e:  # noqa: BLE001
            self.errors.append(f"{type(e).__name__}: {e}")
        finally:
            sock.close(0)

    def _handle(self, sock, msg):
        op = msg.get("op")
        if op == "ping":
            StreamAgent._send(sock, {"v": 1, "op": "pong", "id": msg.get("id")})
        elif op in ("pong", "welcome"):
            pass
        elif op == "case":
            self.pushes += 1
            aid = msg.get("id")
            if not (isinstance(aid, str) and isinstance(msg.get("case"), str) and h.is_uint(msg.get("ack_by"))):
                self.errors.append(f"{self.agent}: bad case push {h.summarize(msg)}")
                return
            d = self.done.get(aid)
            if d and d["acked"] is not None and h.now_ms() - d["acked"] > 500:
                self.stale_pushes.append(aid)
            if aid in self.seen:
                if self.seen[aid]["case"] != msg["case"] or self.seen[aid]["ack_by"] != msg["ack_by"]:
                    self.errors.append(f"{self.agent}: {aid} pushed as {self.seen[aid]} and now "
                                       f"{h.summarize(msg)}")
                return
            self.seen[aid] = {"case": msg["case"], "ack_by": msg["ack_by"], "first": h.now_ms()}
            todo = self.decide(aid, msg) if self.accept else None
            if todo is not None:
                self.plan[aid] = todo[0]
                heapq.heappush(self.scheduled, (time.monotonic() + max(0.0, todo[1]), aid))
        elif op == "ack":
            mid = msg.get("id")
            if mid not in self.ops:
                self.errors.append(f"{self.agent}: ack for an id never sent: {h.summarize(msg)}")
                return
            aid = self.ops[mid][0]
            if msg.get("assignment") != aid or msg.get("case") != self.seen[aid]["case"]:
                self.errors.append(f"{self.agent}: {mid} about {aid} ({self.seen[aid]['case']}) "
                                   f"answered {h.summarize(msg)}")
            self.replies += 1
            if self.pending.pop(mid, None) is not None and self.done[aid]["acked"] is None:
                self.done[aid]["acked"] = h.now_ms()
        elif op == "nack":
            if msg.get("code") == "unavailable":
                return                                   # stays pending; resent later
            self.errors.append(f"{self.agent}: unexpected nack {h.summarize(msg, 400)}")
        else:
            self.errors.append(f"{self.agent}: unexpected message {h.summarize(msg)}")
