#!/usr/bin/python3
"""bench/register.py — the child register at scale (docs/bench.md, "Child register"; issue 13).

Acceptance item (issue 13): with 100,000 registered children the broker is ready within
2 s of start, uses no CPU between due times, and records each overdue contact or home
visit within 1 s of its due time, exactly once.

What it does, on the real clock (no --test-clock), children's data sealed at rest
(privacy.key_file, a fresh key) as in production:

  0. an EMPTY broker: the same config on an empty store, started the same way (its time
     from exec to the first welcome is the start-up baseline). It stays up, idle, and is
     measured over the same quiet window as the loaded broker (the idle baseline);
  1. load: N `enrolment` events from DIRECTORS director agents (one DEALER each, INFLIGHT
     in flight each, closed loop), one per child, villages of 100 children, each village
     kept by one director. The last FAST children are `risk: elevated`; the rhythm rule
     for elevated children has `contact_every PERIOD` (default 300 s), everyone else
     30d / 90d. The elevated children's enrolments carry `at` = due - PERIOD, so their
     contacts fall due at one chosen instant (or evenly over --due-spread s) about
     --quiet s after the restart (the rhythm counts from the enrolment's `at`; only an
     `at` in the future is clamped). Reports the intake rate;
  2. restart: SIGTERM (exit 0, timed), then exec carehubd on the same store, with a
     supervisor's DEALER already connecting to its (fixed) port and its `hello` queued:
     exec -> ready file, and exec -> the first `welcome` (the first answered message).
     Target: ready within 2 s of start;
  3. quiet window: from 1 s after the welcome until 0.5 s before the first due time (no
     due time within the next --quiet s at its start; heartbeat and redelivery set to 1 h).
     utime+stime (/proc/PID/stat), on-CPU ns (schedstat) and context switches of all the
     broker's threads, for the loaded broker and, over the same window, the empty one;
  4. firing: waits until the broker has logged FAST overdue records (or gives up), then
     2 s more (late duplicates). Reads every visit_overdue case back as supervisors
     (what:"cases" type visit_overdue, then what:"case" for each: the events with their
     `received` and body `due`, `kind`, `child`), and checks: exactly one visit_overdue per
     elevated child and kind contact, none for anyone else, lag = received - due in
     0..--max-late-ms ms, and the same for the time the broker logged writing it (its
     `received` is the clock of the turn that wrote it, taken before the turn's work).
     Then what:"register" (informational: its time, and the counts);
  5. SIGTERM both brokers (exit 0).

Fails (exit 1) when a limit is missed (restart > --ready-max s, an overdue missing, twice,
late or early, quiet CPU above --quiet-cpu-max ms per second or more than
--quiet-wakeups-max context switches in the quiet window) or the run went wrong. The
figures are printed either way; JSON with --json. Exit 2 on a usage error.

Usage (from the project root, after `make`):
    /usr/bin/python3 bench/register.py                        # 100,000 children, 10,000 due (~2.5 min)
    /usr/bin/python3 bench/register.py --n 20000 --fast 2000 --quiet 15   # quick
Environment: CAREHUBD (default bin/carehubd), BENCH_TMPDIR (default /var/tmp).
"""

import argparse
import calendar
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import msgpack
import zmq

import benchlib
from benchlib import Fail, pack, pct
from escalation import Window

DIRECTOR = "bench-director-"
SUPERVISOR = "bench-supervisor-"
PER_VILLAGE = 100
SETTLE_S = 1.0            # after the restart's welcome, before the quiet window
MARGIN_S = 0.5            # the quiet window ends this long before the first due time
AFTER_S = 2.0             # after the last overdue: late duplicates
GIVE_UP_S = 20.0          # after the last due time (+ max lateness): stop waiting
RESTART_ALLOW_S = 10.0    # what the plan allows for stop + start before the quiet window
READ_INFLIGHT = 16        # case reads in flight per supervisor
QUERIES_PER_SUPERVISOR = 150   # under the broker's query budget burst of 200

say = benchlib.sayer("register")


# ---------------------------------------------------------------------------
# Config and brokers

def config_text(args, data_dir, port, key_file):
    head = benchlib.broker_yaml("register.py", data_dir, heartbeat="1h", redeliver_every="1h",
                                webhook_allow=False, extra=["metrics: 127.0.0.1:0"])
    head = head.replace('"tcp://127.0.0.1:*"', f'"tcp://127.0.0.1:{port}"')
    agents = [f"  - {{id: {DIRECTOR}{d}, role: director}}" for d in range(args.directors)]
    agents += [f"  - {{id: {SUPERVISOR}{s}, role: supervisor}}" for s in range(args.supervisors)]
    agents.append("  - {id: bench-civil-desk, role: agency, agency: civil_affairs}")
    return head + f"""privacy:
  key_file: "{key_file}"
agents:
""" + "\n".join(agents) + f"""
agencies:
  - id: civil_affairs
    name: civil affairs
rhythms:
  - name: bench-elevated
    match: {{body.risk: elevated}}
    contact_every: {int(args.period)}s
    visit_every: 30d
    remind_before: 0s
  - name: default
    match: {{}}
    contact_every: 30d
    visit_every: 90d
workflows:
  - name: bench-enrolment
    match: {{type: enrolment}}
    assign: []
  - name: bench-missed-visit
    match: {{type: visit_overdue}}
    assign:
      - agency: civil_affairs
        ack_within: 30d
"""


class Started:
    """One carehubd started with a supervisor's hello already queued on its fixed port:
    the times from exec to the ready file and to the first welcome."""

    def __init__(self, carehubd, workdir, name, conf, port, timeout):
        self.broker = benchlib.Broker(carehubd, workdir, name=name, need_metrics=True, stop_timeout=60.0)
        self.port = port
        ready = workdir / f"{name}.ready"
        if ready.exists():
            ready.unlink()
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL, 2)       # ms: retry the connection at once
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 5)
        sock.setsockopt(zmq.IMMEDIATE, 0)           # queue the hello before the connection
        sock.connect(f"tcp://127.0.0.1:{port}")
        self.sock = sock
        t0 = time.monotonic()
        proc = benchlib.spawn_carehubd(carehubd, conf, workdir, self.broker.log_path, ready)
        sock.send(pack({"v": 1, "op": "hello", "id": "hello-restart", "agent": f"{SUPERVISOR}0",
                        "software": "carehub-bench-register/1"}))
        self.t_ready = self.t_welcome = None
        limit = t0 + timeout
        while self.t_ready is None or self.t_welcome is None:
            now = time.monotonic()
            if proc.poll() is not None:
                raise Fail(f"{name} exited with status {proc.returncode} while starting\n"
                           + benchlib.log_tail(self.broker.log_path))
            if now > limit:
                proc.terminate()
                raise Fail(f"{name}: not ready/welcomed {timeout:.0f} s after exec\n"
                           + benchlib.log_tail(self.broker.log_path))
            if self.t_ready is None and ready.exists():
                text = ready.read_text()
                if text.endswith("\n") and text.strip():
                    self.t_ready = time.monotonic() - t0
                    self.broker.endpoint = text.splitlines()[0].strip()
            if self.t_welcome is None and sock.poll(2):
                m = msgpack.unpackb(sock.recv(), raw=False)
                if m.get("op") != "welcome":
                    raise Fail(f"{name}: hello refused: {m}")
                self.t_welcome = time.monotonic() - t0
        self.broker.proc = proc
        self.broker.pid = proc.pid
        m = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)",
                      self.broker.log_path.read_text(errors="replace"))
        if not m:
            raise Fail(f"{name} did not log its metrics address\n" + benchlib.log_tail(self.broker.log_path))
        self.broker.metrics_url = m.group(1)

    def stop(self):
        """SIGTERM; returns the seconds until it exited (status 0 required)."""
        self.sock.close()
        t = time.monotonic()
        self.broker.stop()
        return time.monotonic() - t


def thread_cpu(pid):
    """{"<comm> <tid>": utime+stime s} of each of the broker's threads."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                head, _, rest = f.read().rpartition(")")
            fields = rest.split()
            out[f"{head.partition('(')[2]} {tid}"] = (int(fields[11]) + int(fields[12])) / benchlib.CLK_TCK
        except (OSError, ValueError, IndexError):
            pass
    return out


def thread_delta(a, b):
    """The threads that ran between two thread_cpu readings, busiest first."""
    d = {k: v - a.get(k, 0.0) for k, v in b.items()}
    return sorted(((k, v) for k, v in d.items() if v > 0), key=lambda kv: -kv[1])


# ---------------------------------------------------------------------------
# Load: enrolments from the directors

def child_plan(args):
    """[(child index, village, director, elevated)] in send order: the normal children
    first, then the FAST elevated ones (their due time is fixed when they are sent)."""
    out = []
    for i in range(args.n):
        v = i // PER_VILLAGE
        out.append((i, f"v-{v:05d}" if i < args.n - args.fast else f"fast-{v:05d}", v % args.directors,
                    i >= args.n - args.fast))
    return out


def enrolment(nonce, i, village, elevated, at):
    body = {"child": {"id": f"rg-{nonce}-{i}", "name": f"bench child {i}",
                      "category": ["left_behind"], "jurisdiction": village},
            "village": village}
    if elevated:
        body["risk"] = "elevated"
        body["risk_reasons"] = ["psych_or_behaviour"]
    return {"v": 1, "op": "event", "id": f"en-{nonce}-{i}", "type": "enrolment", "at": at, "body": body}


def load(endpoint, args, nonce, plan_due):
    """Enrol every child; plan_due(rate so far) -> the first due time (ms) of the elevated
    children, called once when the first of them is about to be sent. Returns
    (seconds, acks, latencies ms sorted, due by child index, rate of the normal part)."""
    socks = []
    for d in range(args.directors):
        s = benchlib.dealer(endpoint)
        benchlib.hello(s, {"v": 1, "op": "hello", "id": f"hello-{d}", "agent": f"{DIRECTOR}{d}",
                           "software": "carehub-bench-register/1"},
                       f"{DIRECTOR}{d}: no welcome within 5 s", f"{DIRECTOR}{d}: hello refused: ")
        socks.append(s)
    try:
        queues = [[] for _ in range(args.directors)]
        for c in child_plan(args):
            queues[c[2]].append(c)
        # Normal children of every director first, elevated after, so the phase switch is
        # one moment for all directors.
        for q in queues:
            q.sort(key=lambda c: c[3])
            q.reverse()                          # pop() from the end
        n_normal = args.n - args.fast
        inflight = [dict() for _ in range(args.directors)]   # id -> (send time, elevated)
        due = {}
        lat = []
        acked = nacked = 0
        first_due = None
        t0 = time.monotonic()
        t_normal_done = None
        poller = zmq.Poller()
        for s in socks:
            poller.register(s, zmq.POLLIN)
        deadline = t0 + args.load_timeout
        sent = 0
        while acked < args.n:
            for d, s in enumerate(socks):
                q, fl = queues[d], inflight[d]
                while q and len(fl) < args.inflight:
                    i, village, _, elevated = q[-1]
                    if elevated:
                        if acked < n_normal:
                            break                 # wait for the normal part to finish
                        if first_due is None:
                            t_normal_done = time.monotonic()
                            rate = n_normal / (t_normal_done - t0) if n_normal else 5000.0
                            first_due = plan_due(rate)
                        k = i - n_normal
                        d_ms = first_due + int(args.due_spread * 1000 * k / max(1, args.fast))
                        due[i] = d_ms
                        at = d_ms - int(args.period * 1000)
                    else:
                        at = int(time.time() * 1000)
                    q.pop()
                    m = enrolment(nonce, i, village, elevated, at)
                    s.send(pack(m))
                    fl[m["id"]] = time.monotonic()
                    sent += 1
            for s, _ in poller.poll(100):
                d = socks.index(s)
                while True:
                    try:
                        raw = s.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    m = msgpack.unpackb(raw, raw=False)
                    op = m.get("op")
                    if op == "ping":
                        s.send(pack({"v": 1, "op": "pong", "id": m.get("id")}))
                        continue
                    if op not in ("ack", "nack"):
                        continue                  # reminders etc.: not expected, ignored
                    t_sent = inflight[d].pop(m.get("id"), None)
                    if t_sent is None:
                        continue
                    if op == "nack":
                        nacked += 1
                        raise Fail(f"enrolment {m.get('id')} refused: {m.get('code')}: {m.get('error')} "
                                   f"{m.get('field') or ''}")
                    if m.get("duplicate"):
                        raise Fail(f"ack with duplicate:true for fresh enrolment {m.get('id')}")
                    acked += 1
                    lat.append((time.monotonic() - t_sent) * 1000.0)
            if time.monotonic() > deadline:
                raise Fail(f"load: {acked} of {args.n} enrolments acked after {args.load_timeout:.0f} s")
        secs = time.monotonic() - t0
        normal_rate = n_normal / (t_normal_done - t0) if t_normal_done and n_normal else None
        lat.sort()
        return secs, acked, lat, due, normal_rate
    finally:
        for s in socks:
            s.close()


# ---------------------------------------------------------------------------
# Reading back: supervisors' queries

class Supervisors:
    def __init__(self, endpoint, count):
        self.socks = []
        for k in range(count):
            s = benchlib.dealer(endpoint)
            benchlib.hello(s, {"v": 1, "op": "hello", "id": f"hello-s{k}", "agent": f"{SUPERVISOR}{k}",
                               "software": "carehub-bench-register/1"},
                           f"{SUPERVISOR}{k}: no welcome within 5 s", f"{SUPERVISOR}{k}: hello refused: ")
            self.socks.append(s)
        self.seq = 0

    def close(self):
        for s in self.socks:
            s.close()

    def ask(self, k, q, timeout=60.0):
        """One query on supervisor k, waiting for its answer; retries `unavailable`."""
        s = self.socks[k]
        while True:
            self.seq += 1
            qid = f"q-{self.seq}"
            s.send(pack(dict(q, v=1, op="query", id=qid)))
            limit = time.monotonic() + timeout
            while True:
                left = limit - time.monotonic()
                if left <= 0 or not s.poll(int(left * 1000) + 1):
                    raise Fail(f"query {q} unanswered after {timeout:.0f} s")
                m = msgpack.unpackb(s.recv(), raw=False)
                if m.get("op") == "ping":
                    s.send(pack({"v": 1, "op": "pong", "id": m.get("id")}))
                    continue
                if m.get("id") == qid:
                    break
            if m.get("op") == "nack" and m.get("code") == "unavailable":
                time.sleep(0.2)
                continue
            if m.get("op") != "result":
                raise Fail(f"query {q} refused: {m}")
            return m

    def read_cases(self, case_ids, timeout=300.0):
        """what:"case" for every id, spread over the supervisors, READ_INFLIGHT in flight
        each; every page. Returns {case id: [events]}."""
        todo = list(case_ids)
        todo.reverse()
        out = {c: [] for c in case_ids}
        inflight = [dict() for _ in self.socks]     # qid -> (case, after)
        retry = []
        poller = zmq.Poller()
        for s in self.socks:
            poller.register(s, zmq.POLLIN)
        limit = time.monotonic() + timeout
        pending = len(case_ids)
        while pending:
            for k, s in enumerate(self.socks):
                while len(inflight[k]) < READ_INFLIGHT and (retry or todo):
                    c, after = retry.pop() if retry else (todo.pop(), None)
                    self.seq += 1
                    qid = f"c-{self.seq}"
                    q = {"v": 1, "op": "query", "id": qid, "what": "case", "case": c}
                    if after:
                        q["after"] = after
                    s.send(pack(q))
                    inflight[k][qid] = (c, after)
            if time.monotonic() > limit:
                raise Fail(f"reading the cases back: {pending} of {len(case_ids)} left after {timeout:.0f} s")
            for s, _ in poller.poll(200):
                k = self.socks.index(s)
                while True:
                    try:
                        raw = s.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    m = msgpack.unpackb(raw, raw=False)
                    if m.get("op") == "ping":
                        s.send(pack({"v": 1, "op": "pong", "id": m.get("id")}))
                        continue
                    item = inflight[k].pop(m.get("id"), None)
                    if item is None:
                        continue
                    if m.get("op") == "nack" and m.get("code") == "unavailable":
                        retry.append(item)
                        time.sleep(0.05)
                        continue
                    if m.get("op") != "result":
                        raise Fail(f"case {item[0]} refused: {m}")
                    out[item[0]].extend(m.get("events") or [])
                    if m.get("next"):
                        retry.append((item[0], m["next"]))
                    else:
                        pending -= 1
        return out


def list_cases(sup, type_):
    """Every case of `type_` ({id: opened}) through what:"cases" pages of 1000."""
    out, after = {}, None
    while True:
        q = {"what": "cases", "type": type_, "limit": 1000}
        if after:
            q["after"] = after
        m = sup.ask(0, q)
        for c in m.get("cases") or []:
            out[c["id"]] = c
        after = m.get("next")
        if not after:
            return out


LOG_OVERDUE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z INFO +register: (\S+) of a child .* "
                         r"overdue since (\d+): (\S+) (recorded|\(recorded before\))")


class LogOverdue:
    """The broker's 'register: <kind> of a child ... overdue since <due>: <event> recorded'
    log records, read as the log grows: [(log ms, due ms, kind, event id, new?)]."""

    def __init__(self, path):
        self.path, self.offset, self.records, self.rest = path, 0, [], b""

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return len(self.records)
        self.offset += len(data)
        data = self.rest + data
        lines = data.split(b"\n")
        self.rest = lines.pop()
        for ln in lines:
            m = LOG_OVERDUE.match(ln.decode(errors="replace"))
            if m:
                secs = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
                self.records.append((secs * 1000 + int(m.group(2)), int(m.group(4)), m.group(3), m.group(5),
                                     m.group(6) == "recorded"))
        return len(self.records)


def overdue_count(broker, base=None):
    """visit_overdue events counted by the broker's metrics: its own label, else the growth
    of type="other" since `base` (that label's value before the firing); None unreadable."""
    try:
        m = broker.metrics()
    except OSError:
        return None
    v = m.get('carehub_events_total{type="visit_overdue"}')
    if v is not None:
        return int(v)
    o = m.get('carehub_events_total{type="other"}')
    if base is None:
        return o
    return None if o is None else int(o - base)


# ---------------------------------------------------------------------------
# The run

def run(args):
    carehubd = benchlib.binary("CAREHUBD", "bin/carehubd")
    benchlib.need_binaries((carehubd,), "make")
    tmp, fstype = benchlib.run_tmp("carehub-register.", say)
    empty = loaded = None
    sup = None
    res = {"bench": "register", "n": args.n, "fast": args.fast, "directors": args.directors,
           "inflight": args.inflight, "period_s": args.period, "due_spread_s": args.due_spread,
           "fs": fstype, "loadavg_start": os.getloadavg()}
    try:
        key = tmp / "data.key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, os.urandom(32))
        os.close(fd)
        port_e, port_l = benchlib.free_port(), benchlib.free_port()
        conf_e, conf_l = tmp / "empty.yaml", tmp / "register.yaml"
        conf_e.write_text(config_text(args, tmp / "empty-data", port_e, key))
        conf_l.write_text(config_text(args, tmp / "data", port_l, key))

        # ---- 0. the empty broker: start-up baseline, stays up for the idle baseline
        empty = Started(carehubd, tmp, "empty", conf_e, port_e, args.start_timeout)
        say(f"empty register: ready file {empty.t_ready * 1000:.0f} ms, welcome "
            f"{empty.t_welcome * 1000:.0f} ms after exec (pid {empty.broker.pid})")

        # ---- 1. load
        loaded = Started(carehubd, tmp, "carehubd", conf_l, port_l, args.start_timeout)
        pid = loaded.broker.pid
        say(f"carehubd on a fresh store: welcome {loaded.t_welcome * 1000:.0f} ms after exec (pid {pid})")
        nonce = f"{int(time.time())}-{os.getpid()}"
        plan = {}

        def plan_due(rate):
            # The elevated children are sent now, then stop, restart, the quiet window.
            t = time.time() + args.fast / max(rate, 100.0) * 1.5 + RESTART_ALLOW_S + SETTLE_S + args.quiet
            plan["first_due"] = int(t * 1000)
            say(f"load: normal children at {rate:.0f}/s; the {args.fast} elevated children fall due from "
                f"{time.strftime('%H:%M:%S', time.localtime(t))} over {args.due_spread:g} s")
            return plan["first_due"]

        say(f"load: {args.n} enrolments from {args.directors} directors x {args.inflight} in flight")
        w_load = Window("load", pid)
        secs, acked, lat, due, normal_rate = load(loaded.broker.endpoint, args, nonce, plan_due)
        w_load.end()
        loaded.broker.alive("the load")
        res["load"] = {"seconds": secs, "acked": acked, "events_per_s": acked / secs,
                       "normal_events_per_s": normal_rate, "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99),
                       "max_ms": lat[-1] if lat else None, "cpu_s": w_load.cpu}
        say(f"load: {acked} acked in {secs:.1f} s = {acked / secs:.0f}/s "
            f"(p50 {pct(lat, 0.5):.1f} ms, p99 {pct(lat, 0.99):.1f} ms); broker CPU {w_load.cpu:.1f} s")
        first_due = plan["first_due"]
        last_due = max(due.values()) if due else first_due
        try:
            res["data_bytes"] = sum(f.stat().st_size for f in (tmp / "data").iterdir())
        except OSError:
            pass

        # ---- 2. restart on that store
        stop_s = loaded.stop()
        time.sleep(0.2)
        loaded = Started(carehubd, tmp, "carehubd", conf_l, port_l, args.start_timeout)
        pid = loaded.broker.pid
        res["stop_s"] = stop_s
        res["restart"] = {"ready_file_s": loaded.t_ready, "welcome_s": loaded.t_welcome,
                          "ratio_to_limit": loaded.t_welcome / args.ready_max,
                          "empty_ready_file_s": empty.t_ready, "empty_welcome_s": empty.t_welcome}
        say(f"restart with {args.n} children: stop {stop_s:.2f} s; ready file {loaded.t_ready:.3f} s, "
            f"welcome {loaded.t_welcome:.3f} s after exec (limit {args.ready_max:g} s; pid {pid})")

        # ---- 3. quiet window, both brokers
        q_start = time.time() + SETTLE_S
        q_end = first_due / 1000.0 - MARGIN_S
        if q_end - q_start < args.min_quiet:
            raise Fail(f"only {q_end - q_start:.1f} s left for the quiet window before the first due time "
                       f"(the restart took {loaded.t_welcome:.1f} s): raise --quiet")
        time.sleep(max(0.0, q_start - time.time()))
        say(f"quiet window: {q_end - q_start:.1f} s; no due time before its end + {MARGIN_S:g} s")
        w_quiet = Window("quiet", pid)
        w_empty = Window("quiet-empty", empty.broker.pid)
        time.sleep(max(0.0, q_end - time.time()))
        w_quiet.end()
        w_empty.end()
        loaded.broker.alive("the quiet window")
        empty.broker.alive("the quiet window")

        # ---- 4. firing
        say("firing: waiting for the overdue contacts")
        base = overdue_count(loaded.broker)
        log = LogOverdue(loaded.broker.log_path)
        log.poll()
        log.records.clear()
        w_fire = Window("firing", pid)
        th_fire0 = thread_cpu(pid)
        give_up = last_due / 1000.0 + args.max_late_ms / 1000.0 + GIVE_UP_S
        counted = None
        while time.time() < give_up:
            loaded.broker.alive("the firing window")
            # done when the log holds FAST new overdue records (the metrics may not count the
            # broker's own events)
            if time.time() > last_due / 1000.0 and log.poll() >= args.fast:
                break
            time.sleep(0.1)
        th_fire = thread_delta(th_fire0, thread_cpu(pid))
        counted = overdue_count(loaded.broker, base)
        w_fire.end()
        w_after = Window("after", pid)
        time.sleep(AFTER_S)
        w_after.end()
        log.poll()
        loaded.broker.alive("the window after the overdue contacts")

        # read back
        t = time.monotonic()
        # supervisor 0 lists; each reads at most QUERIES_PER_SUPERVISOR cases, inside its budget
        n_sup = max(1, min(args.supervisors, 1 + -(-args.fast // QUERIES_PER_SUPERVISOR)))
        sup = Supervisors(loaded.broker.endpoint, n_sup)
        listed = list_cases(sup, "visit_overdue")
        t_list = time.monotonic() - t
        t = time.monotonic()
        files = sup.read_cases(sorted(listed))
        t_read = time.monotonic() - t
        t = time.monotonic()
        try:
            reg = sup.ask(0, {"what": "register"})
        except Fail as e:                   # informational: reported, not a failure
            reg = {"refused": str(e)}
        t_reg = time.monotonic() - t
        say(f"read back: {len(listed)} visit_overdue cases listed in {t_list:.2f} s, read in {t_read:.1f} s "
            f"({n_sup} supervisors); what:\"register\" answered in {t_reg * 1000:.0f} ms")

        # ---- 5. stop
        sup.close()
        sup = None
        res["stop_after_s"] = loaded.stop()
        empty.stop()

        # ---- analysis
        child_of = {f"rg-{nonce}-{i}": i for i in due}
        per = {}            # (child id, kind) -> [(received, due)]
        stray, wrong_agent, other_type = [], 0, 0
        for c, evs in files.items():
            for e in evs:
                if e.get("type") != "visit_overdue":
                    other_type += 1
                    continue
                if e.get("agent") != "broker":
                    wrong_agent += 1
                b = e.get("body") or {}
                cid = (b.get("child") or {}).get("id")
                per.setdefault((cid, b.get("kind")), []).append((e.get("received"), b.get("due"), c))
        events = sum(len(v) for v in per.values())
        expected = {(f"rg-{nonce}-{i}", "contact") for i in due}
        missing = expected - set(per)
        stray = set(per) - expected
        twice = {k: len(v) for k, v in per.items() if len(v) > 1}
        wrong_due = sum(1 for (cid, kind), v in per.items() if cid in child_of and kind == "contact"
                        for r, d, _ in v if d != due[child_of[cid]])
        lags = sorted(r - d for v in per.values() for r, d, _ in v if isinstance(r, int) and isinstance(d, int))
        late = sum(1 for x in lags if x > args.max_late_ms)
        early = sum(1 for x in lags if x < 0)
        log_lags = sorted(lm - d for lm, d, _, _, new in log.records if new)
        log_before = sum(1 for r in log.records if not r[4])
        rows = reg.get("rows") or []
        reg_children = sum(r.get("children", 0) for r in rows)
        reg_contact_overdue = sum(r.get("contact_overdue", 0) for r in rows)
        reg_visit_overdue = sum(r.get("visit_overdue", 0) for r in rows)

        res["overdue"] = {"expected": len(expected), "events": events, "cases": len(listed),
                          "missing": len(missing), "more_than_once": len(twice), "stray": len(stray),
                          "wrong_due": wrong_due, "wrong_agent": wrong_agent, "other_types": other_type,
                          "metrics_count": counted,
                          "lag_ms": {"p50": pct(lags, 0.5), "p99": pct(lags, 0.99),
                                     "max": lags[-1] if lags else None, "min": lags[0] if lags else None},
                          "late": late, "early": early,
                          "log_records": len(log_lags), "log_recorded_before": log_before,
                          "log_lag_ms": {"p50": pct(log_lags, 0.5), "p99": pct(log_lags, 0.99),
                                         "max": log_lags[-1] if log_lags else None}}
        res["quiet"] = {"seconds": w_quiet.secs, "cpu_s": w_quiet.cpu, "oncpu_ms": w_quiet.oncpu_ms,
                        "switches": w_quiet.switches, "cpu_ms_per_s": 1000 * w_quiet.cpu / w_quiet.secs,
                        "empty_cpu_s": w_empty.cpu, "empty_oncpu_ms": w_empty.oncpu_ms,
                        "empty_switches": w_empty.switches,
                        "empty_cpu_ms_per_s": 1000 * w_empty.cpu / w_empty.secs}
        res["firing"] = {"seconds": w_fire.secs, "cpu_s": w_fire.cpu, "threads": dict(th_fire), "after_cpu_s": w_after.cpu,
                         "after_switches": w_after.switches}
        res["read_back"] = {"list_s": t_list, "read_s": t_read, "supervisors": n_sup, "register_query_ms": t_reg * 1000,
                            "register_rows": len(rows), "register_children": reg_children,
                            "register_contact_overdue": reg_contact_overdue,
                            "register_visit_overdue": reg_visit_overdue}
        res["loadavg_end"] = os.getloadavg()

        # ---- report
        ld, rs, od = res["load"], res["restart"], res["overdue"]
        print()
        print(f"carehub register bench: {args.n} children ({args.fast} elevated, contact every {args.period:g} s), "
              f"{args.directors} directors x {args.inflight} in flight, privacy on, data on {fstype}; "
              f"load average {res['loadavg_start'][0]:.2f} at start, {res['loadavg_end'][0]:.2f} at end")
        print(f"load: {ld['acked']} enrolments acked in {ld['seconds']:.1f} s: {ld['events_per_s']:.0f} events/s "
              f"(p50 {ld['p50_ms']:.1f} ms, p99 {ld['p99_ms']:.1f} ms, max {ld['max_ms']:.1f} ms); "
              f"broker CPU {ld['cpu_s']:.1f} s; store {res.get('data_bytes', 0) / 2**20:.0f} MiB")
        print(f"restart with {args.n} children: exec -> ready file {rs['ready_file_s']:.3f} s, "
              f"exec -> first welcome {rs['welcome_s']:.3f} s: {rs['ratio_to_limit']:.2f} of the {args.ready_max:g} s "
              f"limit  (empty register: {rs['empty_ready_file_s']:.3f} s / {rs['empty_welcome_s']:.3f} s; "
              f"stop after the load {stop_s:.2f} s)")
        print(f"broker CPU, utime+stime (/proc/PID/stat, all threads, {benchlib.CLK_TCK} ticks/s):")
        print(w_load.line("load (informational)"))
        print(w_quiet.line(f"quiet: {args.n} children, nothing due", args.quiet_cpu_max * w_quiet.secs / 1000,
                           args.quiet_wakeups_max))
        print(w_empty.line("  same window, the empty register"))
        print(f"  quiet CPU: {res['quiet']['cpu_ms_per_s']:.2f} ms per s with {args.n} children, "
              f"{res['quiet']['empty_cpu_ms_per_s']:.2f} ms per s empty (limit {args.quiet_cpu_max:g} ms per s)")
        print(w_fire.line("firing: overdue contacts falling due (info.)"))
        print("    by thread: " + ", ".join(f"{k} {v:.2f} s" for k, v in th_fire))
        print(w_after.line("after the last overdue (informational)"))
        print(f"overdue: {od['events']} visit_overdue events in {od['cases']} cases; expected {od['expected']} "
              f"(one per elevated child, kind contact): {od['missing']} missing, {od['more_than_once']} more "
              f"than once, {od['stray']} for another child or kind, {wrong_due} with another due, "
              f"carehub_events_total counted {counted}")
        if lags:
            print(f"lag, received - due: p50 {pct(lags, 0.5)} ms  p99 {pct(lags, 0.99)} ms  max {lags[-1]} ms  "
                  f"min {lags[0]} ms  (limit 0..{args.max_late_ms:.0f} ms; {late} late, {early} early)")
        if "refused" in reg:
            print(f"what:\"register\": {reg['refused']}")
        if log_lags:
            print(f"  written, the broker's 'overdue ... recorded' log record - due (before the turn's commit): "
                  f"p50 {pct(log_lags, 0.5)} ms  p99 {pct(log_lags, 0.99)} ms  max {log_lags[-1]} ms  "
                  f"({len(log_lags)} records, {log_before} 'recorded before'; limit {args.max_late_ms:.0f} ms)")
        print(f"read back: list {t_list:.2f} s, {len(listed)} case files in {t_read:.1f} s by {n_sup} supervisors; "
              f"what:\"register\" {t_reg * 1000:.0f} ms: {len(rows)} rows, {reg_children} children, "
              f"{reg_contact_overdue} contact_overdue, {reg_visit_overdue} visit_overdue")

        problems = []
        if rs["welcome_s"] > args.ready_max:
            problems.append(f"restart with {args.n} children: first welcome {rs['welcome_s']:.3f} s after exec "
                            f"(limit {args.ready_max:g} s)")
        if missing:
            problems.append(f"{len(missing)} overdue contacts never recorded (e.g. {sorted(missing)[0]})")
        if twice:
            k, v = next(iter(twice.items()))
            problems.append(f"{len(twice)} children with more than one overdue of a kind (e.g. {k}: {v})")
        if stray or other_type or wrong_agent or wrong_due:
            problems.append(f"unexpected: {len(stray)} overdue for another child or kind, {other_type} events "
                            f"of another type, {wrong_agent} not by agent broker, {wrong_due} with another due")
        log_late = sum(1 for x in log_lags if x > args.max_late_ms)
        if log_late:
            problems.append(f"{log_late} overdue written (the broker's log record) more than "
                            f"{args.max_late_ms:.0f} ms after due (max {log_lags[-1]} ms)")
        if late:
            problems.append(f"{late} overdue recorded more than {args.max_late_ms:.0f} ms after due "
                            f"(max {lags[-1]} ms)")
        if early:
            problems.append(f"{early} overdue recorded before due (min {lags[0]} ms)")
        if res["quiet"]["cpu_ms_per_s"] > args.quiet_cpu_max:
            problems.append(f"quiet window: {res['quiet']['cpu_ms_per_s']:.2f} ms CPU per s "
                            f"(limit {args.quiet_cpu_max:g})")
        if w_quiet.switches > args.quiet_wakeups_max:
            problems.append(f"quiet window: the broker's threads were switched in {w_quiet.switches} times "
                            f"(limit {args.quiet_wakeups_max}): something wakes it between due times")
        res["pass"] = not problems
        res["problems"] = problems
        if args.json:
            print(json.dumps(benchlib.finite(res)))
        for p in problems:
            print(f"FAIL: {p}")
        if problems:
            return 1
        print(f"PASS: ready {rs['welcome_s']:.3f} s after exec; quiet {res['quiet']['cpu_ms_per_s']:.2f} ms CPU "
              f"per s; {od['expected']} overdue contacts each once, max lag {lags[-1] if lags else 0} ms")
        return 0
    finally:
        if sup is not None:
            sup.close()
        for b in (loaded, empty):
            if b is not None:
                b.sock.close()
                b.broker.kill()
        benchlib.drop_tmp(tmp, args.keep, say, " (configs, data, logs)")


def main():
    p = argparse.ArgumentParser(description="The child register at scale (docs/bench.md, Child register).")
    p.add_argument("--n", type=int, default=100000, help="registered children (default 100000)")
    p.add_argument("--fast", type=int, default=10000,
                   help="elevated children whose contact falls due during the run (default 10000)")
    p.add_argument("--directors", type=int, default=8, help="director agents sending enrolments (default 8)")
    p.add_argument("--inflight", type=int, default=64, help="enrolments in flight per director (default 64)")
    p.add_argument("--supervisors", type=int, default=80,
                   help="most supervisor agents reading the cases back (default 80)")
    p.add_argument("--period", type=float, default=300.0,
                   help="contact_every of the elevated children, s (default 300)")
    p.add_argument("--due-spread", type=float, default=0.0,
                   help="the elevated children's due times spread evenly over this many s (default 0: "
                        "all at one instant)")
    p.add_argument("--quiet", type=float, default=60.0,
                   help="planned quiet window: no due time for this many s after the restart (default 60)")
    p.add_argument("--min-quiet", type=float, default=10.0,
                   help="least quiet window; shorter is a setup failure (default 10)")
    p.add_argument("--ready-max", type=float, default=2.0, help="limit on exec -> first welcome, s (default 2)")
    p.add_argument("--max-late-ms", type=float, default=1000.0,
                   help="limit on received - due of each overdue, ms (default 1000)")
    p.add_argument("--quiet-cpu-max", type=float, default=5.0,
                   help="limit on the quiet window's CPU, ms per s (default 5: 0.5 %% of a CPU)")
    p.add_argument("--quiet-wakeups-max", type=int, default=10,
                   help="most context switches of the broker's threads in the quiet window (default 10)")
    p.add_argument("--start-timeout", type=float, default=120.0, help="give up a start after this many s")
    p.add_argument("--load-timeout", type=float, default=600.0, help="give up the load after this many s")
    p.add_argument("--json", action="store_true", help="also one JSON line with every figure")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args()
    if args.n < 1 or not 0 <= args.fast <= args.n or args.directors < 1 or args.inflight < 1 or args.supervisors < 1:
        p.error("need --n >= 1, 0 <= --fast <= --n, --directors, --inflight, --supervisors >= 1")
    if args.period * 1000 < (args.quiet + RESTART_ALLOW_S + 60) * 1000:
        p.error("--period must exceed --quiet + 70 s (the elevated enrolments' `at` = due - period must "
                "not lie in the future, and no second overdue may fall due during the run)")
    if args.supervisors > 1000:
        p.error("--supervisors at most 1000")
    return benchlib.run_main(run, args, say, bench="register")


if __name__ == "__main__":
    sys.exit(main())
