#!/usr/bin/python3
"""bench/storm.py — escalation storm under intake load (docs/bench.md, "Escalation storm";
issue 10).

Item: "10,000 deadlines falling due within 5 s while intake runs at half its maximum: each
escalation webhook exactly once, lateness p50/p99/max after due, intake rate during the
storm against before it."
Targets (printed as met / NOT met; exit 1 for them only with --enforce):
  lateness p99 <= 1 s and max <= 2 s after due; intake during the storm >= 50 % of its
  storm-free rate.

What it does (real clock, release build, data under $BENCH_TMPDIR):

  1. receiver: a small single-threaded HTTP/1.1 server (selectors, keep-alive; this script
     run with --serve-receiver, in its own process so that its CPU is its own) on
     127.0.0.1:<ephemeral>. It answers every POST 200 at once and records arrival time,
     headers and body; signatures are verified after the run. Its capacity is calibrated
     first (8 keep-alive connections x 1 request in flight; the broker itself opens up to
     the channel's concurrency, 64 by default) and its CPU is reported for the storm: it must not be the limit;
  2. broker: carehubd with a temporary config: school agents bench-school-0..3 (loadgen),
     one `reporter`, agency `police` (its desk never connects: nothing is acknowledged),
     one webhook channel to the receiver, workflows `absence -> assign: []` and
     `mandatory_report -> police, ack_within A, escalate: [{after: 0s, notify: [channel]}]`;
     heartbeat 60 s, redeliver_every 1 h, metrics on 127.0.0.1, privacy off;
  3. probe: bin/loadgen in closed loop (4 agents x 64 in flight, absences) for a few
     seconds: its events/s is the intake maximum (skipped with --rate);
  4. background intake: bin/loadgen --rate <max x 0.5> --interval 1 (open loop, absences,
     4 agents x 256 in flight at most) for the whole run; one JSON line a second;
  5. after PRE seconds of storm-free intake, N mandatory_report events (distinct children)
     from the reporter, paced evenly over SPREAD seconds: N assignments whose deadlines
     (ack_by = receive time + A) fall due within about SPREAD seconds, A after;
  6. storm-free gap until the first deadline, then the storm: wait until N distinct
     `assignment.overdue` notices arrived (or give up GIVE_UP s after the last deadline),
     AFTER seconds more for late duplicates; then loadgen is stopped (SIGINT), the
     receiver dumps its records, the broker gets SIGTERM and must exit 0.

Lateness = first arrival at the receiver (deduplicated by webhook-id) - data.ack_by of the
notice (the step fires `after: 0s`, so ack_by is its due time). Informational: the broker's
'escalation step 1 fired' log record - ack_by (its own part). Intake: loadgen's per-second
acked events/s; "before" = the storm-free seconds (before the reports and between their
last ack and the first deadline), "during" = the seconds from the first deadline to the
last escalation's arrival (weighted by overlap).

Exit 1 on correctness failures: an escalation missing or more than once (per assignment,
after dedupe by webhook-id), one before its due time, a bad signature, unexpected notices,
loadgen failing (nack, duplicate, unanswered event), the reports refused or joined, the
broker not starting or not exiting 0. Exit 2 on a usage error.

Usage (from the project root, after `make all bin/loadgen`):
    /usr/bin/python3 bench/storm.py              # 10,000 over 5 s, ack_within 15 s (~1-2 min)
    /usr/bin/python3 bench/storm.py --quick      # 2,000 over 2 s, ack_within 8 s
Environment: CAREHUBD (default bin/carehubd), LOADGEN (default bin/loadgen), BENCH_TMPDIR
(default /var/tmp). Needs only Debian's python3 with python3-zmq and python3-msgpack.
"""

import argparse
import calendar
import json
import os
import pickle
import queue
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import benchlib
from benchlib import Fail, die_with_parent, finite, hist_add, pct, proc_cpu

REPORTER = "bench-reporter"
CHANNEL = "bench-storm"
AGENTS = 4                   # loadgen's school agents
PROBE_INFLIGHT = 64          # closed-loop probe, like make bench and soak.py
OPEN_INFLIGHT = 256          # open loop: most in flight per agent
WARMUP_S = 1.0
ACK_WAIT_S = 30.0            # after the last report was sent: all must be acked
STOP_TIMEOUT_S = 30.0
SEND_TICK_S = 0.005          # the reports go out in small bursts every 5 ms
TARGET_P99_MS = 1000.0
TARGET_MAX_MS = 2000.0
TARGET_INTAKE_RATIO = 0.5
WORST_WINDOW = 5             # intake during the storm: the worst this many consecutive seconds
RESP_200 = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


say = benchlib.sayer("storm")


# ---------------------------------------------------------------------------
# The receiver process (storm.py --serve-receiver OUT)

def serve_receiver(out_path):
    """Single-threaded HTTP/1.1 server: answers every POST 200 at once, keep-alive, records
    (arrival s, head bytes, body bytes). Prints 'port N', then every 0.1 s
    's <wall> <posts> <distinct webhook-ids> <cpu s>'. On EOF of stdin: pickles the
    records to OUT, prints 'done' and exits."""
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1024)
    lsock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(lsock, selectors.EVENT_READ, None)
    sel.register(sys.stdin.fileno(), selectors.EVENT_READ, "stdin")
    out = sys.stdout
    out.write(f"port {lsock.getsockname()[1]}\n")
    out.flush()
    records, seen = [], set()
    bufs, continued = {}, set()
    next_status = time.time()
    running = True
    while running:
        for key, _ in sel.select(0.05):
            if key.data is None:
                while True:
                    try:
                        c, _ = lsock.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    bufs[c.fileno()] = bytearray()
                    sel.register(c, selectors.EVENT_READ, c)
                continue
            if key.data == "stdin":
                if not os.read(sys.stdin.fileno(), 4096):
                    running = False
                continue
            c = key.data
            fd = c.fileno()
            try:
                data = c.recv(262144)
            except (ConnectionError, OSError):
                data = b""
            if not data:
                sel.unregister(c)
                c.close()
                bufs.pop(fd, None)
                continued.discard(fd)
                continue
            now = time.time()
            buf = bufs[fd]
            buf += data
            reply = b""
            close = False
            while True:
                he = buf.find(b"\r\n\r\n")
                if he < 0:
                    break
                head = bytes(buf[:he])
                hl = head.lower()
                i = hl.find(b"\r\ncontent-length:")
                cl = 0
                if i >= 0:
                    j = hl.find(b"\r\n", i + 2)
                    cl = int(hl[i + 17:j if j >= 0 else len(hl)].strip() or 0)
                total = he + 4 + cl
                if len(buf) < total:
                    if fd not in continued and b"\r\nexpect: 100-continue" in hl:
                        continued.add(fd)
                        reply += b"HTTP/1.1 100 Continue\r\n\r\n"
                    break
                body = bytes(buf[he + 4:total])
                del buf[:total]
                continued.discard(fd)
                records.append((now, head, body))
                i = hl.find(b"\r\nwebhook-id:")
                if i >= 0:
                    j = hl.find(b"\r\n", i + 2)
                    seen.add(head[i + 13:j if j >= 0 else len(head)].strip())
                reply += RESP_200
                if b"\r\nconnection: close" in hl:
                    close = True
            if reply:
                try:
                    c.sendall(reply)
                except OSError:
                    close = True
            if close:
                sel.unregister(c)
                c.close()
                bufs.pop(fd, None)
                continued.discard(fd)
        now = time.time()
        if now >= next_status:
            out.write(f"s {now:.4f} {len(records)} {len(seen)} {time.process_time():.4f}\n")
            out.flush()
            next_status = now + 0.1
    with open(out_path, "wb") as f:
        pickle.dump(records, f, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(f"s {time.time():.4f} {len(records)} {len(seen)} {time.process_time():.4f}\ndone\n")
    out.flush()


class Receiver:
    """The receiver process, seen from here."""

    def __init__(self, tmp):
        self.out_path = tmp / "receiver.pickle"
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve-receiver",
                                      str(self.out_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     preexec_fn=die_with_parent)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("port "):
            raise Fail(f"the receiver did not start ({line!r})")
        self.port = int(line.split()[1])
        self.pid = self.proc.pid
        self.lock = threading.Lock()
        self.status = []          # (wall, posts, distinct, cpu)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for raw in self.proc.stdout:
            p = raw.decode().split()
            if p and p[0] == "s" and len(p) == 5:
                with self.lock:
                    self.status.append((float(p[1]), int(p[2]), int(p[3]), float(p[4])))
            elif p == ["done"]:
                self.done.set()
        self.done.set()

    def latest(self):
        with self.lock:
            return self.status[-1] if self.status else (time.time(), 0, 0, 0.0)

    def cpu_at(self, wall):
        """The receiver's CPU seconds at a wall time (the status line at or before it)."""
        with self.lock:
            best = self.status[0] if self.status else (0, 0, 0, 0.0)
            for s in self.status:
                if s[0] <= wall:
                    best = s
                else:
                    break
            return best[0], best[3]

    def finish(self):
        """Stop it and load its records: [(arrival s, head, body)]."""
        if self.proc.poll() is None:
            self.proc.stdin.close()
            if not self.done.wait(30):
                raise Fail("the receiver did not dump its records within 30 s")
        try:
            rc = self.proc.wait(10)
            with open(self.out_path, "rb") as f:
                return pickle.load(f)
        except (OSError, EOFError, pickle.UnpicklingError, subprocess.TimeoutExpired) as e:
            raise Fail(f"the receiver failed (exit {self.proc.poll()}): {e}")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def calibrate_receiver(port, rounds=3, seconds=0.5):
    """The best of `rounds` measurements (the machine may be shared: the least disturbed)."""
    return max(calibrate_once(port, seconds) for _ in range(rounds))


def calibrate_once(port, seconds=0.5, conns=8, warmup=0.2):
    """POSTs/s the receiver answers with `conns` keep-alive connections of one request in
    flight each (the broker's most per channel is 8), after `warmup` s. The client here is
    Python too, so this is a lower bound of the receiver's capacity."""
    body = (b'{"data":{"ack_by":1795864333000,"agency":"police","assignment":"a-000001","case":"c-000001",'
            b'"event_type":"mandatory_report","level":1,"severity":"normal","stage":"ack"},'
            b'"timestamp":"2026-11-28T10:00:00Z","type":"assignment.overdue"}')
    req = (b"POST /calibrate HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: carehubd\r\nAccept: */*\r\n"
           b"Content-Type: application/json\r\nwebhook-timestamp: 1795864333\r\n"
           b"webhook-signature: v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n"
           + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(conns):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)
        sel.register(s, selectors.EVENT_READ, s)
    n = 0
    t_warm = time.monotonic()
    t0 = t_warm + warmup
    end = t0 + seconds
    for s in socks:
        s.sendall(req)
    while True:
        now = time.monotonic()
        if now >= end:
            break
        for key, _ in sel.select(0.5):
            s = key.data
            data = s.recv(65536)
            if not data:
                raise Fail("the receiver closed a calibration connection")
            k = data.count(b"HTTP/1.1 200")
            if now >= t0:
                n += k
            if k:
                s.sendall(req * k)
    secs = time.monotonic() - t0
    for s in socks:
        s.close()
    return n / secs


# ---------------------------------------------------------------------------
# The broker and loadgen

def config_text(data_dir, url, secret, ack_within_ms):
    schools = "\n".join(f"  - {{id: bench-school-{i}, role: school}}" for i in range(AGENTS))
    return benchlib.broker_yaml("storm.py", data_dir, extra=["metrics: 127.0.0.1:0"]) + f"""privacy: off
agents:
{schools}
  - {{id: {REPORTER}, role: reporter}}
  - {{id: bench-police-desk, role: agency, agency: police}}
agencies:
  - {{id: police, name: police}}
  - {{id: civil_affairs, name: civil affairs}}
channels:
  - {{id: {CHANNEL}, kind: webhook, url: "{url}", secret: "{secret}", timeout: 5s}}
workflows:
  - name: bench-absence
    match: {{type: absence}}
    assign: []
  - name: bench-storm
    match: {{type: mandatory_report}}
    assign:
      - agency: police
        ack_within: {ack_within_ms}ms
        escalate:
          - {{after: 0s, notify: [{CHANNEL}]}}
"""


class Broker(benchlib.Broker):
    """carehubd (benchlib.Broker); without a metrics address, metrics() is {}."""

    def __init__(self, carehubd, workdir):
        super().__init__(carehubd, workdir, need_metrics=False, stop_timeout=STOP_TIMEOUT_S)


class Loadgen(benchlib.Loadgen):
    """bin/loadgen --json; its stdout lines are timestamped on arrival (wall s), and the
    broker's CPU is sampled with each: the queue holds (wall, broker cpu s, item)."""

    def __init__(self, loadgen, endpoint, args_list, err_path, broker_pid):
        self.broker_pid = broker_pid
        super().__init__(loadgen, endpoint, args_list, err_path)

    def item(self, raw):
        wall = time.time()
        cpu = proc_cpu(self.broker_pid)
        return wall, cpu, benchlib.parse_line(raw)

    def collect(self, timeout):
        """Every line until loadgen's stdout closes (bounded)."""
        out = []
        limit = time.monotonic() + timeout
        while time.monotonic() < limit:
            try:
                x = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if x is None:
                return out, True
            out.append(x)
        return out, False

    def interrupt(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)   # ends the window, reports


# ---------------------------------------------------------------------------
# The reports

def send_reports(endpoint, n, spread, nonce, alive):
    """n mandatory_report events, paced evenly over `spread` s (bursts every SEND_TICK_S).
    Returns (first send wall, last send wall, last ack wall, {event id: case}, socket)."""
    pack = benchlib.pack
    sock = benchlib.dealer(endpoint, unbounded=True)
    try:
        benchlib.hello(sock, {"v": 1, "op": "hello", "id": "hello-1", "agent": REPORTER,
                              "software": "carehub-bench-storm/1"},
                       "the reporter got no welcome within 5 s", "the reporter's hello was refused: ")
        cases, nacks = {}, []
        t0 = time.monotonic()
        first = last_send = last_ack = None
        sent = 0
        while len(cases) + len(nacks) < n:
            now = time.monotonic()
            due_n = n if spread <= 0 else min(n, int((now - t0) / spread * n) + 1)
            while sent < due_n:
                body = {"reporter": {"organisation": "carehub bench"}, "harm": "neglect",
                        "description": "Storm benchmark: the police do not acknowledge this report.",
                        "child": {"id": f"storm-{nonce}-{sent}", "name": "bench child"}}
                sock.send(pack({"v": 1, "op": "event", "id": f"{nonce}-{sent}", "type": "mandatory_report",
                                "at": int(time.time() * 1000), "body": body}))
                if first is None:
                    first = time.time()
                sent += 1
                if sent == n:
                    last_send = time.time()
            if sent >= n and now > t0 + spread + ACK_WAIT_S:
                raise Fail(f"{n - len(cases) - len(nacks)} reports unanswered {ACK_WAIT_S:.0f} s after the "
                           "last was sent")
            if sock.poll(int(SEND_TICK_S * 1000) if sent < n else 100):
                last_ack = benchlib.take_replies(sock, cases, nacks, "report")[1] or last_ack
            elif sent >= n:
                alive("the reports' acks")
        if nacks:
            raise Fail(f"{len(nacks)} reports refused; first: {nacks[0]}")
        return first, last_send, last_ack, cases, sock
    except BaseException:
        sock.close()
        raise


# ---------------------------------------------------------------------------
# Figures

def hist_pct(hists, q):
    """Nearest-rank percentile (ms) of loadgen's histograms merged."""
    total = {}
    for h in hists:
        hist_add(total, h)
    return benchlib.hist_pct(total, q)


def header(head, name):
    """A header's value from a raw request head (bytes), or None."""
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == name:
            return v.strip().decode("latin-1")
    return None


LOG_TS = r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z INFO +assign: "
LOG_MADE = re.compile(LOG_TS + r"(\S+) made: case (\S+) to \S+, ack by (\d+)")
LOG_FIRED = re.compile(LOG_TS + r"(\S+) overdue: escalation step 1 fired")


def log_times(log_path):
    """From the broker's log: {assignment: (case, ack_by ms)} ('made' records) and
    {assignment: ms of its 'escalation step 1 fired' record}."""
    made, fired = {}, {}
    try:
        with open(log_path, errors="replace") as f:
            for line in f:
                if " assign: " not in line:
                    continue
                m = LOG_FIRED.match(line)
                if m:
                    secs = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
                    fired.setdefault(m.group(3), secs * 1000 + int(m.group(2)))
                    continue
                m = LOG_MADE.match(line)
                if m:
                    made[m.group(3)] = (m.group(4), int(m.group(5)))
    except OSError:
        pass
    return made, fired


def overlap(a0, a1, b0, b1):
    return max(0.0, min(a1, b1) - max(a0, b0))


# ---------------------------------------------------------------------------
# The run

def run(args):
    import msgpack  # noqa: F401  (the reports need both: fail here when they are missing)
    import zmq  # noqa: F401

    benchlib.need_binaries((args.carehubd, args.loadgen), "make all bin/loadgen")
    tmp, fstype = benchlib.run_tmp("carehub-storm.", say)
    receiver = broker = lg = rsock = None
    t_start = time.monotonic()
    try:
        # ---- receiver and its capacity
        receiver = Receiver(tmp)
        cal = calibrate_receiver(receiver.port)
        say(f"receiver on 127.0.0.1:{receiver.port} (pid {receiver.pid}): calibration {cal:.0f} POSTs/s "
            f"(best of 3 x 0.5 s, 8 connections x 1 in flight; a lower bound)")
        secret = benchlib.new_secret()
        url = f"http://127.0.0.1:{receiver.port}/overdue"
        a_ms = int(round(args.ack_within * 1000))
        conf = tmp / "carehub.yaml"
        conf.write_text(config_text(tmp / "data", url, secret, a_ms))
        broker = Broker(args.carehubd, tmp)
        broker.start(conf)
        say(f"carehubd ready on {broker.endpoint} (pid {broker.pid}); data on {fstype} under {tmp}")

        # ---- probe
        rate = args.rate
        probe = None
        if rate is None:
            say(f"probe: loadgen closed loop, {AGENTS} agents x {PROBE_INFLIGHT} in flight, {args.probe_seconds:g} s")
            p = Loadgen(args.loadgen, broker.endpoint,
                        ["-n", str(AGENTS), "-w", str(PROBE_INFLIGHT), "-t", f"{args.probe_seconds:g}",
                         "--warmup", "1"], tmp / "probe.err", broker.pid)
            lines, closed = p.collect(args.probe_seconds + 30)
            rc = p.proc.wait(10) if closed else None
            p.kill()
            broker.alive("the probe")
            final = lines[-1][2] if lines else {}
            if rc != 0 or "events_per_s" not in final:
                raise Fail(f"the probe's loadgen failed (exit {rc}):\n{p.stderr_text()}")
            probe = final
            rate = final["events_per_s"] * args.fraction
            say(f"probe: {final['events_per_s']:.0f} events/s (p99 {final['p99_ms']:.1f} ms); "
                f"intake during the run: {rate:.0f} events/s")
            time.sleep(1.0)

        # ---- background intake for the whole run
        long_s = args.pre + args.spread + ACK_WAIT_S + args.ack_within + args.give_up + 60
        lg = Loadgen(args.loadgen, broker.endpoint,
                     ["-n", str(AGENTS), "-w", str(OPEN_INFLIGHT), "-t", f"{long_s:g}", "--warmup", f"{WARMUP_S:g}",
                      "--rate", f"{rate:.1f}", "--interval", "1"], tmp / "loadgen.err", broker.pid)
        say(f"intake: loadgen open loop at {rate:.0f} events/s, one line a second; "
            f"{args.pre:g} s storm-free before the reports")
        intervals = []                                # (wall at arrival, broker cpu, item)

        def pump(until_wall):
            """Gather loadgen lines until a wall time (bounded by it), watching the broker."""
            while True:
                left = until_wall - time.time()
                if left <= 0:
                    return
                try:
                    x = lg.lines.get(timeout=min(0.2, left))
                except queue.Empty:
                    x = False
                if x is None:
                    raise Fail(f"loadgen ended early (exit {lg.proc.wait()}):\n{lg.stderr_text()}")
                if x:
                    intervals.append(x)
                broker.alive("the run")

        pump(time.time() + WARMUP_S + args.pre + 0.5)
        if not intervals:
            raise Fail("loadgen printed no interval within its warm-up and the storm-free start")

        # ---- the reports
        nonce = f"{int(time.time())}-{os.getpid()}"
        say(f"reports: {args.n} mandatory_report events over {args.spread:g} s, ack_within {args.ack_within:g} s, "
            "one escalation step (after 0 s)")
        box = {}

        def sender():
            try:
                box["r"] = send_reports(broker.endpoint, args.n, args.spread, nonce, broker.alive)
            except BaseException as e:  # reported below
                box["e"] = e
        th = threading.Thread(target=sender, daemon=True)
        th.start()
        while th.is_alive():
            pump(time.time() + 0.2)
        if "e" in box:
            raise box["e"]
        first_send, last_send, last_ack, cases, rsock = box["r"]
        distinct = set(cases.values())
        if len(distinct) != args.n:
            raise Fail(f"{args.n} reports with distinct child ids made {len(distinct)} cases")
        say(f"reports: {args.n} sent in {last_send - first_send:.2f} s, all acked "
            f"{last_ack - first_send:.2f} s after the first; waiting for the deadlines")

        # ---- the storm
        earliest_due = first_send + args.ack_within
        latest_due = last_ack + args.ack_within
        give_up = latest_due + args.give_up
        storm_done = None
        while time.time() < give_up:
            pump(time.time() + 0.2)
            st = receiver.latest()
            if st[2] >= args.n:
                storm_done = time.time()
                break
        if storm_done is None:
            say(f"gave up waiting {args.give_up:g} s after the last deadline: {receiver.latest()[2]} of {args.n} "
                "notices arrived")
        stopped_at = time.time()
        pump(time.time() + args.after)
        m_end = broker.metrics()
        lg.interrupt()
        rest, closed = lg.collect(15)
        intervals.extend(x for x in rest)
        lg_rc = lg.proc.wait(10) if closed else None
        lg.kill()
        broker.alive("the run")
        recv_stopped = time.time()          # nothing that arrives after this is counted
        records = [r for r in receiver.finish() if not r[1].startswith(b"POST /calibrate ")]
        rsock.close()
        rsock = None
        broker.stop()
        say(f"broker stopped (exit 0); took {time.monotonic() - t_start:.0f} s")

        # ---- analysis: escalations
        key = benchlib.secret_key(secret)
        first_by_id, bad_sig = {}, 0
        for arrival, head, body in records:
            wid = header(head, b"webhook-id")
            if not benchlib.verify(key, wid, header(head, b"webhook-timestamp"), header(head, b"webhook-signature"), body):
                bad_sig += 1
            if wid not in first_by_id or arrival < first_by_id[wid][0]:
                first_by_id[wid] = (arrival, body)
        per_assignment, other = {}, {}
        for wid, (arrival, body) in first_by_id.items():
            try:
                msg = json.loads(body)
                data = msg["data"]
            except (ValueError, KeyError, TypeError):
                other["<unreadable>"] = other.get("<unreadable>", 0) + 1
                continue
            if msg.get("type") != "assignment.overdue":
                other[msg.get("type")] = other.get(msg.get("type"), 0) + 1
                continue
            per_assignment.setdefault(data.get("assignment"), []).append(
                (arrival * 1000.0, data.get("ack_by"), data.get("case"), data.get("level")))
        made, fired = log_times(broker.log_path)       # assignment -> (case, ack_by); -> fired ms
        notified_cases = {}
        for a, lst in per_assignment.items():
            for x in lst:
                notified_cases.setdefault(x[2], set()).add(a)
        missing = distinct - set(notified_cases)
        stray = set(notified_cases) - distinct
        multi_assign = [c for c, st_ in notified_cases.items() if len(st_) > 1]
        duplicated = {a: len(lst) for a, lst in per_assignment.items() if len(lst) > 1}
        once = sum(1 for lst in per_assignment.values() if len(lst) == 1)
        bad_level = sum(1 for lst in per_assignment.values() for x in lst if x[3] != 1)
        firsts = {a: min(lst) for a, lst in per_assignment.items() if isinstance(lst[0][1], int)}
        arrivals = sorted(x[0] for x in firsts.values())
        # the due times of all N (from the broker's log: 'made ... ack by'), the notified ones' from the notice
        due = {a: ab for a, (c, ab) in made.items() if c in distinct}
        due.update({a: x[1] for a, x in firsts.items()})
        ack_bys = sorted(due.values())
        stopped_ms = recv_stopped * 1000.0
        # lateness of every assignment; one not notified when the bench stopped waiting is
        # censored: at least stopped - ack_by (figures that include one are lower bounds)
        censored = [stopped_ms - due[a] for a in due if a not in firsts]
        late_c = sorted([(x[0] - x[1], False) for x in firsts.values()] + [(v, True) for v in censored]
                        + [(float("inf"), True)] * max(0, len(missing) - len(censored)))
        late = [v for v, _ in late_c]
        early = sum(1 for v in late if v < 0)
        fire_late = sorted(fired[a] - due[a] for a in due if a in fired)
        fired_n = sum(1 for a in due if a in fired)

        # ---- analysis: intake intervals on the wall clock
        ivs = [(w, c, it) for (w, c, it) in intervals if "interval" in it]
        final = next((it for (_, _, it) in reversed(intervals) if "interval" not in it), None)
        if not ivs:
            raise Fail("loadgen printed no interval lines")
        offs = sorted(w - it["t"] for (w, _, it) in ivs)
        w0 = offs[len(offs) // 2]                    # wall time of loadgen's window start
        rows = []
        prev_cpu = None
        for (w, c, it) in ivs:
            e = w0 + it["t"]
            s_ = e - it["seconds"]
            cpu_pct = 100.0 * (c - prev_cpu[1]) / (w - prev_cpu[0]) if prev_cpu and w > prev_cpu[0] else float("nan")
            prev_cpu = (w, c)
            rows.append({"start": s_, "end": e, "it": it, "broker_cpu_pct": cpu_pct})
        storm_t0 = ack_bys[0] / 1000.0 if ack_bys else earliest_due
        storm_t1 = stopped_at if missing else max(arrivals[-1] / 1000.0 if arrivals else latest_due,
                                                  ack_bys[-1] / 1000.0 if ack_bys else latest_due)
        storm_t1 = max(storm_t1, storm_t0 + 0.001)
        for r in rows:
            if r["end"] <= first_send:
                r["phase"] = "pre"
            elif r["start"] >= last_ack + 1.0 and r["end"] <= storm_t0:
                r["phase"] = "gap"
            elif r["end"] <= storm_t0:
                r["phase"] = "reports"
            elif overlap(r["start"], r["end"], storm_t0, storm_t1) > 0:
                r["phase"] = "storm"
            else:
                r["phase"] = "after"
            a0, a1 = r["start"] * 1000.0, r["end"] * 1000.0
            r["escalations"] = sum(1 for x in arrivals if a0 <= x < a1)
            rc0, rc1 = receiver.cpu_at(r["start"]), receiver.cpu_at(r["end"])
            r["receiver_cpu_pct"] = 100.0 * (rc1[1] - rc0[1]) / (rc1[0] - rc0[0]) if rc1[0] > rc0[0] else 0.0

        def rate_of(sel):
            secs = sum(r["it"]["seconds"] for r in sel)
            return sum(r["it"]["acked"] for r in sel) / secs if secs else float("nan")

        before_rows = [r for r in rows if r["phase"] in ("pre", "gap") and r["it"]["seconds"] >= 0.5]
        storm_rows = [r for r in rows if r["phase"] == "storm"]
        after_rows = [r for r in rows if r["phase"] == "after" and r["it"]["seconds"] >= 0.5]
        before_rate, after_rate = rate_of(before_rows), rate_of(after_rows)
        # during: the mean over the storm window (each interval weighted by its overlap), and the
        # worst WORST_WINDOW consecutive seconds of it (judged: an open loop catches up after a
        # stall, so the mean of a long storm hides how far intake fell)
        wsum = asum = 0.0
        for r in storm_rows:
            ov = overlap(r["start"], r["end"], storm_t0, storm_t1)
            wsum += ov
            asum += r["it"]["acked"] * ov / r["it"]["seconds"] if r["it"]["seconds"] > 0 else 0.0
        mean_rate = asum / wsum if wsum > 0 else float("nan")
        full = [r for r in storm_rows if r["it"]["seconds"] >= 0.5]
        k = min(WORST_WINDOW, len(full))
        worst_rate, worst_at = float("nan"), None
        for i in range(len(full) - k + 1 if k else 0):
            v = rate_of(full[i:i + k])
            if worst_at is None or v < worst_rate:
                worst_rate, worst_at = v, full[i]["start"] - w0
        ratio = worst_rate / before_rate if before_rate == before_rate and before_rate > 0 else float("nan")
        mean_ratio = mean_rate / before_rate if before_rate == before_rate and before_rate > 0 else float("nan")
        storm_backlog = max((r["it"]["max_backlog"] for r in storm_rows), default=0)
        rcpu0, rcpu1 = receiver.cpu_at(storm_t0), receiver.cpu_at(storm_t1 + 1.0)
        recv_storm_cpu = rcpu1[1] - rcpu0[1]
        recv_storm_pct = 100.0 * recv_storm_cpu / (rcpu1[0] - rcpu0[0]) if rcpu1[0] > rcpu0[0] else float("nan")
        posts_total = len(records)
        storm_posts = sum(1 for r in records if rcpu0[0] <= r[0] < rcpu1[0])
        us_per_post = 1e6 * recv_storm_cpu / storm_posts if storm_posts else float("nan")
        recv_rate = (len(arrivals) - 1) / ((arrivals[-1] - arrivals[0]) / 1000.0) \
            if len(arrivals) > 1 and arrivals[-1] > arrivals[0] else float("nan")

        # ---- report
        p50, p99 = pct(late, 0.50), pct(late, 0.99)
        lmax = late[-1] if late else float("nan")
        lower = bool(missing)   # the not-arrived count at their lower bound: every figure is one
        met_p99 = bool(late) and p99 <= TARGET_P99_MS
        met_max = bool(late) and lmax <= TARGET_MAX_MS
        met_intake = ratio == ratio and ratio >= TARGET_INTAKE_RATIO
        verdict = lambda ok: "met" if ok else "NOT met"  # noqa: E731

        def ms(v):
            if v == float("inf"):
                return "not arrived"
            if lower:
                return f">= {v:.0f} ms (lower bound: {len(missing)} not arrived)"
            return f"{v:.0f} ms" if v == v else "n/a"

        def num(v, fmt="{:.0f}"):
            return fmt.format(v) if v == v else "n/a"
        print()
        print(f"carehub escalation storm: {args.n} reports over {args.spread:g} s, ack_within {args.ack_within:g} s, "
              f"one escalation step (after 0 s) to one webhook channel; intake {rate:.0f} events/s open loop "
              + (f"({args.fraction:g} x the probe's {probe['events_per_s']:.0f})" if probe else "(--rate)")
              + f"; data on {fstype}")
        print()
        print(f"{'t s':>6} {'phase':<8} {'intake/s':>8} {'p99 ms':>8} {'backlog':>7} {'escal.':>6} "
              f"{'broker%':>7} {'recv%':>5}")
        for r in rows:
            it = r["it"]
            print(f"{r['end'] - w0:6.1f} {r['phase']:<8} {it['events_per_s']:8.0f} {it['p99_ms']:8.1f} "
                  f"{it['max_backlog']:7d} {r['escalations']:6d} {num(r['broker_cpu_pct']):>7} "
                  f"{r['receiver_cpu_pct']:5.0f}")
        print("  (intake/s: loadgen's acked events/s; backlog: most events due and not yet sent; escal.: "
              "escalations first arriving; broker%, recv%: CPU of one core)")
        print()
        L = 30
        print(f"  {'deadlines':<{L}} {len(ack_bys)} ack_by values over "
              f"{num((ack_bys[-1] - ack_bys[0]) / 1000 if ack_bys else float('nan'), '{:.2f}')} s; the first "
              f"{storm_t0 - last_ack:.1f} s after the last report's ack")
        print(f"  {'escalations':<{L}} {len(per_assignment)} assignments notified: {once} exactly once, "
              f"{len(missing)} missing, {len(duplicated)} more than once; {posts_total} POSTs, "
              f"{len(first_by_id)} webhook-ids ({posts_total - len(first_by_id)} retries)")
        print(f"  {'':<{L}} fired in the broker (log) {fired_n} of {len(due)}; received at {num(recv_rate)}/s "
              f"(first to last arrival)")
        print(f"  {'signatures':<{L}} {posts_total - bad_sig} of {posts_total} verify")
        print(f"  {'lateness, arrival - ack_by':<{L}} p50 {ms(p50)}  p99 {ms(p99)}  max {ms(lmax)}  "
              f"min {late[0]:.0f} ms" if late else "")
        if fire_late:
            print(f"  {'  of which in the broker':<{L}} 'fired' log record - ack_by: p50 {pct(fire_late, 0.5):.0f} ms  "
                  f"p99 {pct(fire_late, 0.99):.0f} ms  max {fire_late[-1]:.0f} ms (informational)")
        print(f"  {'storm window':<{L}} {storm_t1 - storm_t0:.1f} s (first ack_by -> last escalation arrival"
              + (", or the bench gave up)" if missing else ")"))
        print(f"  {'intake before (storm-free)':<{L}} {num(before_rate)} events/s over {len(before_rows)} s "
              f"(p99 {num(hist_pct([r['it']['hist'] for r in before_rows], 0.99), '{:.1f}')} ms)")
        print(f"  {'intake during the storm':<{L}} worst {k} s: {num(worst_rate)} events/s"
              + (f" (from t = {worst_at:.0f} s)" if worst_at is not None else "")
              + f", {num(ratio * 100)} % of before; mean over the storm {num(mean_rate)} events/s "
              f"({num(mean_ratio * 100)} %); p99 {num(hist_pct([r['it']['hist'] for r in storm_rows], 0.99), '{:.1f}')} "
              f"ms; most events due and not sent {storm_backlog}")
        print(f"  {'intake after':<{L}} {num(after_rate)} events/s over {len(after_rows)} s")
        print(f"  {'receiver':<{L}} calibrated >= {cal:.0f} POSTs/s; during the storm {num(recv_storm_pct)} % of one "
              f"CPU, {num(us_per_post)} us CPU per POST ({storm_posts} POSTs)")
        att_ok = m_end.get('carehub_webhook_attempts_total{result="ok"}', float("nan"))
        att_err = m_end.get('carehub_webhook_attempts_total{result="error"}', 0.0)
        print(f"  {'broker metrics at the end':<{L}} escalations fired "
              f"{num(m_end.get('carehub_escalations_total', float('nan')))}, webhook attempts ok {num(att_ok)} / "
              f"error {num(att_err)}, outbox {num(m_end.get('carehub_notices_pending', float('nan')))}")
        if final:
            print(f"  {'loadgen':<{L}} {final.get('sent')} sent, {final.get('acked')} acked in the window, "
                  f"{final.get('nacked')} nacks, {final.get('unanswered')} unanswered, exit {lg_rc}")
        print()
        print(f"  target lateness p99 <= {TARGET_P99_MS:.0f} ms: {verdict(met_p99)} ({ms(p99)})")
        print(f"  target lateness max <= {TARGET_MAX_MS:.0f} ms: {verdict(met_max)} ({ms(lmax)})")
        print(f"  target intake during >= {TARGET_INTAKE_RATIO:.0%} of before (worst {k} s of the storm): "
              f"{verdict(met_intake)} ({num(ratio * 100)} %)")
        recv_limit = recv_storm_pct == recv_storm_pct and recv_storm_pct > 70
        print(f"  the receiver {'MAY HAVE BEEN the limit' if recv_limit else 'was not the limit'}: "
              f"{num(recv_storm_pct)} % of one CPU during the storm; it answers >= {cal:.0f} POSTs/s and "
              f"received {num(recv_rate)} escalations/s")

        problems = []
        if missing:
            queued = m_end.get("carehub_notices_pending", 0.0)
            problems.append(f"{len(missing)} assignments' escalations had not arrived {args.give_up:g} s after the last "
                            f"deadline (the broker's log shows {fired_n} of {len(due)} fired; its outbox held "
                            f"{queued:.0f} notices): raise --give-up to wait longer")
        if duplicated:
            a, c = next(iter(duplicated.items()))
            problems.append(f"{len(duplicated)} assignments escalated more than once (e.g. {a}: {c} times)")
        if stray or multi_assign or bad_level or other:
            problems.append(f"unexpected notices: {len(stray)} of other cases, {len(multi_assign)} cases with more "
                            f"than one assignment, {bad_level} with level != 1, other types {other}")
        if early:
            problems.append(f"{early} escalations arrived before their due time (min {late[0]:.0f} ms)")
        if bad_sig:
            problems.append(f"{bad_sig} webhook signatures do not verify")
        if lg_rc != 0 or not final or final.get("nacked") or final.get("duplicates") or final.get("unanswered"):
            problems.append(f"loadgen failed (exit {lg_rc}): {lg.stderr_text().strip()[-500:]}")
        for p in problems:
            print(f"FAIL: {p}")
        if not problems:
            print(f"PASS: {args.n} escalations, each exactly once, signatures verified; targets: lateness p99 "
                  f"{verdict(met_p99)}, max {verdict(met_max)}, intake {verdict(met_intake)}")
        summary = {
            "bench": "storm", "pass": not problems, "problems": problems, "n": args.n, "spread_s": args.spread,
            "ack_within_s": args.ack_within, "fs": fstype, "probe_events_per_s": probe["events_per_s"] if probe else None,
            "intake_rate": rate, "deadline_spread_s": (ack_bys[-1] - ack_bys[0]) / 1000 if ack_bys else None,
            "notified": len(per_assignment), "exactly_once": once, "missing": len(missing),
            "duplicated": len(duplicated), "posts": posts_total, "bad_signatures": bad_sig,
            "lateness_p50_ms": p50, "lateness_p99_ms": p99, "lateness_max_ms": lmax,
            "lateness_min_ms": late[0] if late else None,
            "lateness_lower_bounds": bool(missing),
            "fired_p50_ms": pct(fire_late, 0.5), "fired_p99_ms": pct(fire_late, 0.99),
            "fired_max_ms": fire_late[-1] if fire_late else None, "received_per_s": recv_rate,
            "storm_window_s": storm_t1 - storm_t0, "intake_before": before_rate,
            "intake_during_worst": worst_rate, "intake_during_worst_seconds": k, "intake_ratio": ratio,
            "intake_during_mean": mean_rate, "intake_mean_ratio": mean_ratio, "intake_after": after_rate,
            "storm_max_backlog": storm_backlog,
            "target_p99_met": met_p99, "target_max_met": met_max, "target_intake_met": met_intake,
            "receiver_calibrated_posts_per_s": cal, "receiver_storm_cpu_pct": recv_storm_pct,
            "receiver_us_per_post": us_per_post, "gave_up": storm_done is None,
        }
        print(json.dumps(finite(summary), separators=(",", ":"), allow_nan=False))
        if problems:
            return 1
        if args.enforce and not (met_p99 and met_max and met_intake):
            return 1
        return 0
    finally:
        if rsock is not None:
            rsock.close()
        if lg is not None:
            lg.kill()
        if broker is not None:
            broker.kill()
        if receiver is not None:
            receiver.kill()
        benchlib.drop_tmp(tmp, args.keep, say, " (config, data, carehubd.log, receiver records)")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-receiver":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        serve_receiver(sys.argv[2])
        return 0
    p = argparse.ArgumentParser(description="Escalation storm under intake load (docs/bench.md).")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 2,000 reports over 2 s, ack_within 8 s, 2 s probe, 2 s storm-free start")
    p.add_argument("--n", type=int, default=None, help="reports = assignments = deadlines (default 10000)")
    p.add_argument("--spread", type=float, default=None, help="seconds over which they are sent (default 5)")
    p.add_argument("--ack-within", type=float, default=None,
                   help="the workflow's ack_within, s (default 15: 10 s storm-free between the last report "
                        "and the first deadline)")
    p.add_argument("--probe-seconds", type=float, default=None, help="closed-loop probe, s (default 5)")
    p.add_argument("--rate", type=float, default=None, help="intake events/s; skips the probe")
    p.add_argument("--fraction", type=float, default=0.5, help="intake rate / probed maximum (default 0.5)")
    p.add_argument("--pre", type=float, default=None, help="storm-free intake before the reports, s (default 4)")
    p.add_argument("--give-up", type=float, default=None,
                   help="stop waiting for escalations this long after the last deadline, s (default 180; "
                        "--quick 60)")
    p.add_argument("--after", type=float, default=3.0, help="seconds after the last escalation (default 3)")
    p.add_argument("--enforce", action="store_true", help="exit 1 when a target is not met")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args()
    q = args.quick
    args.n = args.n if args.n is not None else (2000 if q else 10000)
    args.spread = args.spread if args.spread is not None else (2.0 if q else 5.0)
    args.ack_within = args.ack_within if args.ack_within is not None else (8.0 if q else 15.0)
    args.probe_seconds = args.probe_seconds if args.probe_seconds is not None else (2.0 if q else 5.0)
    args.pre = args.pre if args.pre is not None else (2.0 if q else 4.0)
    args.give_up = args.give_up if args.give_up is not None else (60.0 if q else 180.0)
    if (args.n < 1 or args.spread < 0 or args.ack_within < args.spread + 2 or args.probe_seconds <= 0
            or args.pre < 1 or args.give_up <= 0 or args.after < 0 or not 0 < args.fraction <= 1
            or (args.rate is not None and args.rate < 1)):
        p.error("a setting is out of range (--ack-within must be at least --spread + 2)")
    args.carehubd = benchlib.binary("CAREHUBD", "bin/carehubd")
    args.loadgen = benchlib.binary("LOADGEN", "bin/loadgen")
    return benchlib.run_main(run, args, say, "storm")


if __name__ == "__main__":
    sys.exit(main())
