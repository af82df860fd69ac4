#!/usr/bin/python3
"""bench/soak.py — the soak run of `make soak` (docs/bench.md, "Soak").

Requirement: "30 minutes at half the measured maximum rate with escalations and webhooks
running; report RSS and p99 ack latency at start and end (they must stay flat)."

What it does (real clock, release build, data under $BENCH_TMPDIR):

  1. probe: a fresh carehubd with the soak config below, the webhook receiver and the
     police desk running, and bin/loadgen in closed loop (4 agents x 64 in flight, the
     same mix of events) for SOAK_PROBE_SECONDS: its events/s is the maximum rate. The
     probe's store gives the bytes per event, from which the soak's disk use is
     estimated and checked against the free space before it starts;
  2. soak: another fresh carehubd, receiver and desk; bin/loadgen in open loop at
     SOAK_FRACTION (1/2) of that rate for SOAK_MINUTES, one report per SOAK_SAMPLE_SECONDS
     (a minute). At each report the broker's memory (/proc/PID/status), CPU and metrics
     (broker.metrics) are sampled and a line of the table printed;
  3. settle: the load stops; the desk finishes its last assignments and the webhook outbox
     must drain; then SIGTERM, and the broker must exit 0;
  4. report: start (first two minutes) against end (last two), the flatness criteria,
     counts of webhooks, escalations, acknowledgements and nacks; build/soak/summary.json.

The workload: every event is from a school agent (bench-school-<i>). Most are absences
(workflow `assign: []`: stored, joined to the child's case, no assignment); every
SOAK_MANDATORY_EVERY-th of each agent is a mandatory_report about a new child, which
opens a case and an assignment for `police` with ack_within SOAK_ACK_WITHIN and two
escalation steps: at the deadline a webhook to `soak-duty`, SOAK_ACK_WITHIN later an SMS
(one recipient) through `soak-sms`. The police's own channel `soak-police` gets every
`case.assigned` and `case.resolved`. The desk agent `soak-police-desk` (a DEALER here)
acknowledges SOAK_PROMPT of the assignments before their deadline and the rest only after
both steps have fired, then resolves every one (so the resolved case's outcome goes to
the school: loadgen confirms it). The receiver answers 200, or 500 to SOAK_WEBHOOK_FAIL of
the POSTs so that retries run too, and verifies every signature. Children's data are
sealed at rest (privacy.key_file) unless SOAK_PRIVACY=0.

Fails (exit 1) when the run went wrong (a process did not start or died, loadgen failed:
a nack, a duplicate, an event never answered; the desk got a nack; a signature did not
verify; a notice answered 500 was never delivered; the outbox did not drain; the broker
did not exit 0) or a flatness criterion failed:

  rate   every full interval acked at least SOAK_RATE_MIN (0.9) of the target rate;
  RSS    RssAnon at the end <= SOAK_RSS_FACTOR (1.5) x RssAnon at the start
         + SOAK_RSS_SLACK_MB (20 MiB);
  p99    p99 at the end <= SOAK_P99_FACTOR (3) x p99 at the start, or <= SOAK_P99_FLOOR_MS
         (50 ms).

Start = the first two minutes (at most half the intervals), end = the last two. RSS: the
largest sample of the window. p99: of every ack of the window (the intervals' histograms
merged). RssAnon is the broker's private memory (heap, stacks: where a leak shows);
VmRSS = RssAnon + RssFile also counts the pages of the LMDB file mapped into the broker,
which grow with the store and are page cache the kernel can take back. VmRSS is reported,
not judged.

Environment (defaults): SOAK_MINUTES=30, SOAK_PROBE_SECONDS=10, SOAK_RATE (events/s:
skip the probe), SOAK_FRACTION=0.5, SOAK_SAMPLE_SECONDS=60, SOAK_AGENTS=4,
SOAK_INFLIGHT=256 (per agent, open loop), SOAK_MANDATORY_EVERY=200, SOAK_CHILDREN=1000
(per agent: 4,000 children's absence cases are joined, as in make bench), SOAK_ACK_WITHIN=3
(seconds), SOAK_PROMPT=0.5, SOAK_WEBHOOK_FAIL=0.01, SOAK_PRIVACY=1, SOAK_KEEP=0 (1: keep
the temporary directory), SOAK_RSS_FACTOR=1.5, SOAK_RSS_SLACK_MB=20, SOAK_P99_FACTOR=3,
SOAK_P99_FLOOR_MS=50, SOAK_RATE_MIN=0.9, CAREHUBD=bin/carehubd, BENCH_TMPDIR=/var/tmp.
Each has a command-line option too (--help).

Usage (from the project root, after `make all bin/loadgen`):
    /usr/bin/python3 bench/soak.py                                       # 30 minutes
    SOAK_MINUTES=2 SOAK_PROBE_SECONDS=5 /usr/bin/python3 bench/soak.py   # quick
Needs only Debian's python3 with python3-zmq and python3-msgpack.
"""

import argparse
import heapq
import http.server
import json
import os
import queue
import random
import resource
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import msgpack
import zmq

import benchlib
from benchlib import (ROOT, Fail, Loadgen, finite, hist_add, hist_pct, log_tail, msum, pct, proc_io,
                      proc_status_bytes)

DESK = "soak-police-desk"
MIB = 1024 * 1024
PROBE_INFLIGHT = 64        # the closed-loop probe: like make bench, AGENTS x 64 in flight
WARMUP_S = 2.0             # loadgen's warm-up before the first interval
WINDOW_S = 120.0           # start and end windows: two minutes
SETTLE_MAX_S = 60.0        # after the load: the desk's last work and the outbox must finish
STOP_TIMEOUT_S = 30.0      # SIGTERM -> exit
LOST_MARGIN_S = 30.0       # a notice answered 500 this long before the end must have been redelivered
DISK_MARGIN = 2 * 1024 * MIB
ATTEMPTS_OK = 'carehub_webhook_attempts_total{result="ok"}'
ATTEMPTS_ERROR = 'carehub_webhook_attempts_total{result="error"}'


say = benchlib.sayer("soak")


# ---------------------------------------------------------------------------
# The webhook and SMS-gateway receiver

class Receiver:
    """Threaded HTTP/1.1 server on 127.0.0.1:<ephemeral>. Answers 200 (or 500 to a share
    `fail_ratio` of POSTs), verifies every Standard Webhooks signature and keeps counts;
    the escalations' lateness (first arrival - due time) per sample."""

    def __init__(self, secret, fail_ratio, step_after_ms, seed):
        self.secret_key = benchlib.secret_key(secret)
        self.fail_ratio = fail_ratio
        self.step_after_ms = step_after_ms        # level -> after (ms)
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.posts = self.answered_500 = self.bad_sig = self.unreadable = 0
        self.by_type = {}                          # notice type -> distinct webhook-ids
        self.seen = set()                          # every webhook-id
        self.delivered = set()                     # webhook-ids answered 200 once
        self.failed_first = {}                     # webhook-id answered 500 -> first time (monotonic)
        self.lateness = []                         # ms, overdue notices since the last take()
        recv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                arrival_ms = time.time() * 1000.0
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n > 0 else b""
                status = recv.handle(arrival_ms, self.headers, body)
                self.send_response_only(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, fmt, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.5},
                                       daemon=True)
        self.thread.start()

    def handle(self, arrival_ms, headers, body):
        wid = headers.get("webhook-id")
        ts = headers.get("webhook-timestamp")
        sig = headers.get("webhook-signature") or ""
        ok_sig = benchlib.verify(self.secret_key, wid, ts, sig, body)
        try:
            msg = json.loads(body)
            ntype, data = msg.get("type"), msg.get("data") or {}
        except (ValueError, AttributeError):
            msg, ntype, data = None, None, {}
        with self.lock:
            self.posts += 1
            if not ok_sig:
                self.bad_sig += 1
            if msg is None:
                self.unreadable += 1
            first = wid not in self.seen
            if first:
                self.seen.add(wid)
                self.by_type[ntype] = self.by_type.get(ntype, 0) + 1
                if ntype == "assignment.overdue" and isinstance(data.get("ack_by"), int):
                    after = self.step_after_ms.get(data.get("level"), 0)
                    self.lateness.append(arrival_ms - (data["ack_by"] + after))
            status = 500 if self.rng.random() < self.fail_ratio else 200
            if status == 200:
                self.delivered.add(wid)
            else:
                self.answered_500 += 1
                self.failed_first.setdefault(wid, time.monotonic())
        return status

    def take_lateness(self):
        with self.lock:
            lst, self.lateness = self.lateness, []
        return sorted(lst)

    def snapshot(self):
        with self.lock:
            return {"posts": self.posts, "distinct": len(self.seen), "answered_500": self.answered_500,
                    "bad_signatures": self.bad_sig, "unreadable": self.unreadable,
                    "by_type": dict(self.by_type)}

    def lost(self, older_than):
        """Notices answered 500 before `older_than` (monotonic) and never delivered since."""
        with self.lock:
            return [w for w, t in self.failed_first.items() if t < older_than and w not in self.delivered]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------
# The police desk

class Desk(threading.Thread):
    """Agent `soak-police-desk`: acknowledges a share `prompt` of its assignments before
    the deadline (within the first third of ack_within), the others `late_s` after their
    ack_by (after every escalation step), then resolves each one."""

    def __init__(self, endpoint, ack_within_s, late_s, prompt, seed):
        super().__init__(daemon=True)
        self.endpoint = endpoint
        self.ack_within_s, self.late_s, self.prompt = ack_within_s, late_s, prompt
        self.rng = random.Random(seed)
        self.stop_ev = threading.Event()
        self.welcomed = threading.Event()
        self.error = None
        self.assignments = self.redeliveries = 0
        self.acks_sent = self.acks_ok = self.late_acks = 0
        self.resolves_sent = self.resolves_ok = 0
        self.nacks = []
        self.unexpected = self.pings = 0
        self.lat = []              # ms, request -> reply, since the last take_latency()
        self.known = set()
        self.sched = []            # heap of (due wall s, seq, kind, assignment)
        self.pending = {}          # message id -> (kind, assignment, sent monotonic)
        self.seq = 0
        self.lock = threading.Lock()

    def busy(self):
        return bool(self.sched or self.pending)

    def take_latency(self):
        with self.lock:
            lst, self.lat = self.lat, []
        return sorted(lst)

    def run(self):
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint)
        try:
            self._send(sock, {"v": 1, "op": "hello", "id": "desk-hello", "agent": DESK,
                              "software": "carehub-soak-desk/1"})
            limit = time.monotonic() + 5
            while not self.welcomed.is_set():
                if time.monotonic() > limit or self.stop_ev.is_set():
                    raise Fail("the desk got no welcome within 5 s")
                if sock.poll(100):
                    self._drain(sock)
            while not self.stop_ev.is_set():
                wait = 0.1
                if self.sched:
                    wait = min(wait, max(0.0, self.sched[0][0] - time.time()))
                if sock.poll(int(wait * 1000)):
                    self._drain(sock)
                now = time.time()
                while self.sched and self.sched[0][0] <= now:
                    _, _, kind, aid = heapq.heappop(self.sched)
                    self._request(sock, kind, aid)
        except Exception as e:   # reported by the main thread
            self.error = e
        finally:
            sock.close()

    def _send(self, sock, m):
        sock.send(msgpack.packb(m, use_bin_type=True))

    def _request(self, sock, kind, aid):
        self.seq += 1
        mid = f"d-{self.seq}"
        if kind == "ack":
            m = {"v": 1, "op": "case_ack", "id": mid, "assignment": aid, "by": "soak officer"}
            self.acks_sent += 1
        else:
            m = {"v": 1, "op": "case_update", "id": mid, "assignment": aid, "status": "resolved",
                 "note": "soak: handled"}
            self.resolves_sent += 1
        self.pending[mid] = (kind, aid, time.monotonic())
        self._send(sock, m)

    def _drain(self, sock):
        while True:
            try:
                raw = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                m = msgpack.unpackb(raw, raw=False)
                op = m.get("op")
            except Exception:
                self.unexpected += 1
                continue
            if op == "welcome" and m.get("id") == "desk-hello":
                self.welcomed.set()
            elif op == "case":
                aid = m.get("id")
                if aid in self.known:
                    self.redeliveries += 1
                    continue
                self.known.add(aid)
                self.assignments += 1
                now = time.time()
                if self.rng.random() < self.prompt:
                    due = now + self.rng.uniform(0.0, self.ack_within_s / 3.0)
                else:
                    ack_by = m.get("ack_by")
                    due = (ack_by / 1000.0 if isinstance(ack_by, int) else now + self.ack_within_s) + self.late_s
                    self.late_acks += 1
                heapq.heappush(self.sched, (due, self.seq, "ack", aid))
                self.seq += 1
            elif op == "ack":
                p = self.pending.pop(m.get("id"), None)
                if p is None:
                    self.unexpected += 1
                    continue
                kind, aid, sent = p
                with self.lock:
                    self.lat.append((time.monotonic() - sent) * 1000.0)
                if kind == "ack":
                    self.acks_ok += 1
                    heapq.heappush(self.sched, (time.time() + self.rng.uniform(0.2, 1.0), self.seq,
                                                "resolve", aid))
                    self.seq += 1
                else:
                    self.resolves_ok += 1
            elif op == "nack":
                self.pending.pop(m.get("id"), None)
                if m.get("id") == "desk-hello":
                    self.error = Fail(f"the desk's hello was refused: {m}")
                    self.stop_ev.set()
                if len(self.nacks) < 5:
                    self.nacks.append(m)
                else:
                    self.nacks.append(None)
            elif op == "ping":
                self.pings += 1
                self._send(sock, {"v": 1, "op": "pong", "id": m.get("id")})
            else:
                self.unexpected += 1

    def snapshot(self):
        return {"assignments": self.assignments, "redeliveries": self.redeliveries,
                "acks_sent": self.acks_sent, "acks_ok": self.acks_ok, "late_acks": self.late_acks,
                "resolves_sent": self.resolves_sent, "resolves_ok": self.resolves_ok,
                "nacks": len(self.nacks), "unexpected": self.unexpected}


# ---------------------------------------------------------------------------
# The broker

def config_text(args, data_dir, key_file, url, secret):
    agents = "\n".join(f"  - {{id: bench-school-{i}, role: school}}" for i in range(args.agents))
    privacy = (f"privacy:\n  key_file: \"{key_file}\"\n  retention: 730d" if args.privacy
               else "privacy: off")
    aw = int(round(args.ack_within * 1000))
    return benchlib.broker_yaml("soak.py", data_dir, heartbeat="5s", redeliver_every="10s",
                                extra=["map_max: 1T", "metrics: 127.0.0.1:0"]) + f"""{privacy}
agents:
{agents}
  - {{id: {DESK}, role: agency, agency: police}}
agencies:
  - {{id: police, name: police, channels: [soak-police]}}
  - {{id: civil_affairs, name: civil affairs}}
channels:
  - {{id: soak-police, kind: webhook, url: "{url}/police", secret: "{secret}", timeout: 5s}}
  - {{id: soak-duty, kind: webhook, url: "{url}/duty", secret: "{secret}", timeout: 5s}}
  - {{id: soak-sms, kind: sms, url: "{url}/sms", secret: "{secret}", timeout: 5s, to: ["+8613800000000"]}}
workflows:
  - name: soak-absence
    match: {{type: absence}}
    assign: []
  - name: soak-report
    match: {{type: mandatory_report}}
    assign:
      - agency: police
        ack_within: {aw}ms
        escalate:
          - {{after: 0s, notify: [soak-duty]}}
          - {{after: {aw}ms, notify: [soak-sms]}}
"""


class Broker(benchlib.Broker):
    """carehubd (benchlib.Broker) with its log and ready file named after the run, and
    readings of its memory, writes, CPU and log."""

    def __init__(self, carehubd, workdir, name):
        super().__init__(carehubd, workdir, name, stop_timeout=STOP_TIMEOUT_S)

    def memory(self):
        """VmRSS, RssAnon, RssFile, VmHWM in bytes."""
        return proc_status_bytes(self.pid, ("VmRSS", "RssAnon", "RssFile", "VmHWM"))

    def write_bytes(self):
        """Bytes the broker has passed to write(2)/pwrite(2) (wchar of /proc/PID/io: the
        store's pages and the log; not the sockets), or 0. (write_bytes there counts whole
        page-cache folios when a 4 KiB page in them is dirtied, far more than is written.)"""
        try:
            return proc_io(self.pid).get("wchar", 0)
        except (OSError, ValueError):
            return 0

    def cpu(self):
        return benchlib.cpu_seconds(self.pid)

    def log_problems(self):
        n, first = 0, []
        try:
            with open(self.log_path, errors="replace") as f:
                for line in f:
                    if " WARN " in line or " ERROR " in line:
                        n += 1
                        if len(first) < 5:
                            first.append(line.rstrip())
        except OSError:
            pass
        return n, first


def commit_pct_ms(m0, m1, q):
    """Percentile q of the LMDB write transactions between two scrapes, as the upper bound
    of its carehub_commit_seconds bucket (ms; inf above the last bound; nan without
    commits). q = 1: the bucket of the slowest."""
    pre = 'carehub_commit_seconds_bucket{le="'
    bounds = sorted((float(k[len(pre):-2]), k) for k in m1 if k.startswith(pre))
    total = m1.get("carehub_commit_seconds_count", 0) - m0.get("carehub_commit_seconds_count", 0)
    if total <= 0:
        return float("nan")
    for le, k in bounds:
        if m1[k] - m0.get(k, 0) >= q * total:
            return le * 1000.0
    return float("inf")


def psi_total(kind):
    """Microseconds some task waited for `kind` (io, cpu) on this machine (/proc/pressure);
    None without PSI."""
    try:
        with open(f"/proc/pressure/{kind}") as f:
            for line in f:
                if line.startswith("some"):
                    return int(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def psi_pct(t0, t1, secs):
    return 100.0 * (t1 - t0) / 1e6 / secs if t0 is not None and t1 is not None and secs > 0 else float("nan")


# ---------------------------------------------------------------------------
# Figures

def du_bytes(path):
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(dirpath, f)).st_blocks * 512
            except OSError:
                pass
    return total


# ---------------------------------------------------------------------------
# The two runs

def setup(args, tmp, name, secret, procs):
    """Receiver, broker (fresh data dir) and desk, each put in `procs` as soon as it runs
    (the caller stops them). Returns (receiver, broker, desk, data dir)."""
    step_after = {1: 0, 2: int(round(args.ack_within * 1000))}
    receiver = Receiver(secret, args.webhook_fail, step_after, seed=len(name))
    procs["receiver"] = receiver
    url = f"http://127.0.0.1:{receiver.port}"
    data = tmp / f"{name}-data"
    key = tmp / "data.key"
    if not key.exists():
        key.write_bytes(os.urandom(32))
        key.chmod(0o600)
    conf = tmp / f"{name}.yaml"
    conf.write_text(config_text(args, data, key, url, secret))
    broker = Broker(args.carehubd, tmp, name)
    procs["broker"] = broker
    broker.start(conf)
    desk = Desk(broker.endpoint, args.ack_within, late_s=args.ack_within + 1.0, prompt=args.prompt,
                seed=len(name))
    procs["desk"] = desk
    desk.start()
    if not desk.welcomed.wait(6) or desk.error:
        raise Fail(f"the desk did not connect: {desk.error}")
    say(f"{name}: carehubd ready on {broker.endpoint} (pid {broker.pid}), metrics {broker.metrics_url}, "
        f"receiver on {url}")
    return receiver, broker, desk, data


def probe(args, tmp, secret, procs):
    receiver, broker, desk, data = setup(args, tmp, "probe", secret, procs)
    say(f"probe: loadgen closed loop, {args.agents} agents x {PROBE_INFLIGHT} in flight, "
        f"{args.probe_seconds:g} s, every {args.mandatory_every}th event a mandatory_report")
    lg = Loadgen(args.loadgen, broker.endpoint,
                 ["-n", str(args.agents), "-w", str(PROBE_INFLIGHT), "-t", f"{args.probe_seconds:g}",
                  "--warmup", "1", "--mandatory-every", str(args.mandatory_every),
                  "--children", str(args.children)],
                 tmp / "probe-loadgen.err")
    procs["loadgen"] = lg
    final = None
    while True:
        try:
            item = lg.lines.get(timeout=1)
        except queue.Empty:
            broker.alive("the probe")
            continue
        if item is None:
            break
        final = item
    rc = lg.proc.wait()
    lg.kill()
    procs.pop("loadgen")
    broker.alive("the probe")
    sys.stderr.write("".join("    " + ln + "\n" for ln in lg.stderr_text().splitlines()))
    if rc != 0 or not final or "events_per_s" not in final:
        raise Fail(f"the probe's loadgen failed (exit {rc})\n" + log_tail(broker.log_path))
    m = broker.metrics()
    events = msum(m, "carehub_events_total")
    used = m.get("carehub_lmdb_map_used_bytes") or du_bytes(data)
    desk.stop_ev.set()
    desk.join(5)
    broker.stop()
    receiver.close()
    procs.clear()
    shutil.rmtree(data, ignore_errors=True)
    bpe = used / events if events else 0.0
    say(f"probe: {final['events_per_s']:.0f} events/s (p50 {final['p50_ms']:.2f} ms, p99 "
        f"{final['p99_ms']:.2f} ms); store {used / MIB:.0f} MiB for {events:.0f} events "
        f"({bpe:.0f} bytes/event)")
    return {"events_per_s": final["events_per_s"], "p50_ms": final["p50_ms"], "p99_ms": final["p99_ms"],
            "events": events, "store_bytes": used, "bytes_per_event": bpe, "seconds": args.probe_seconds}


HEADER = (f"{'min':>5} {'ev/s':>7} {'p50ms':>6} {'p99ms':>7} {'maxms':>7} {'blog':>5} "
          f"{'VmRSS':>7} {'anon':>6} {'file':>7} {'cpu%':>5} {'wrMB':>5} {'cmt99':>6} {'cmtmax':>6} {'io%':>4} {'store':>7} "
          f"{'open':>5} {'outbox':>6} {'escal':>7} {'hooks':>7} {'desk':>7} {'escp99':>7}")


def row(s):
    mb = lambda b: f"{b / MIB:.0f}M"   # noqa: E731
    return (f"{s['t'] / 60:5.1f} {s['events_per_s']:7.0f} {s['p50_ms']:6.2f} {s['p99_ms']:7.2f} "
            f"{s['max_ms']:7.1f} {s['max_backlog']:5d} {mb(s['VmRSS']):>7} {mb(s['RssAnon']):>6} "
            f"{mb(s['RssFile']):>7} {s['cpu_pct']:5.1f} {s['write_mb_s']:5.0f} {s['commit_p99_ms']:6.1f} {s['commit_max_ms']:6.0f} "
            f"{s['io_pressure_pct']:4.0f} "
            f"{mb(s['store_bytes']):>7} "
            f"{s['assignments_open']:5.0f} {s['notices_pending']:6.0f} {s['escalations']:7.0f} "
            f"{s['webhooks_distinct']:7d} {s['desk_acks']:7d} "
            f"{s['escalation_late_p99_ms']:7.0f}")


def soak(args, tmp, secret, rate, procs):
    receiver, broker, desk, data = setup(args, tmp, "soak", secret, procs)
    seconds = args.minutes * 60.0
    say(f"soak: loadgen open loop at {rate:.0f} events/s for {args.minutes:g} min "
        f"({args.agents} agents, at most {args.inflight} in flight each), a report every "
        f"{args.sample_seconds:g} s")
    lg = Loadgen(args.loadgen, broker.endpoint,
                 ["-n", str(args.agents), "-w", str(args.inflight), "-t", f"{seconds:g}",
                  "--warmup", f"{WARMUP_S:g}", "--rate", f"{rate:.1f}", "--interval",
                  f"{args.sample_seconds:g}", "--mandatory-every", str(args.mandatory_every),
                  "--children", str(args.children)],
                 tmp / "soak-loadgen.err")
    procs["loadgen"] = lg
    print(HEADER, flush=True)
    samples, final = [], None
    cpu0, t_cpu0 = broker.cpu(), time.monotonic()
    m0, io0, cpsi0, wb0 = broker.metrics(), psi_total("io"), psi_total("cpu"), broker.write_bytes()
    while True:
        try:
            item = lg.lines.get(timeout=1)
        except queue.Empty:
            broker.alive("the soak")
            if desk.error:
                raise Fail(f"the desk failed: {desk.error}")
            continue
        if item is None:
            break
        if "interval" not in item:
            final = item
            continue
        broker.alive("the soak")
        mem = broker.memory()
        cpu1, t_cpu1 = broker.cpu(), time.monotonic()
        m = broker.metrics()
        io1, cpsi1, wb1 = psi_total("io"), psi_total("cpu"), broker.write_bytes()
        r = receiver.snapshot()
        late = receiver.take_lateness()
        dl = desk.take_latency()
        s = {k: item[k] for k in ("interval", "t", "seconds", "sent", "acked", "mandatory", "nacked",
                                  "outcomes", "events_per_s", "p50_ms", "p99_ms", "max_ms", "inflight",
                                  "backlog", "max_backlog")}
        s.update(mem)
        s.update({
            "cpu_pct": 100.0 * (cpu1 - cpu0) / (t_cpu1 - t_cpu0) if t_cpu1 > t_cpu0 else 0.0,
            "write_mb_s": (wb1 - wb0) / MIB / (t_cpu1 - t_cpu0) if t_cpu1 > t_cpu0 else 0.0,
            "write_kb_per_event": (wb1 - wb0) / 1024 / max(1, item["acked"]),
            "commit_p99_ms": commit_pct_ms(m0, m, 0.99),
            "commit_max_ms": commit_pct_ms(m0, m, 1.0),
            "io_pressure_pct": psi_pct(io0, io1, t_cpu1 - t_cpu0),
            "cpu_pressure_pct": psi_pct(cpsi0, cpsi1, t_cpu1 - t_cpu0),
            "store_bytes": m.get("carehub_lmdb_map_used_bytes", 0.0),
            "events_total": msum(m, "carehub_events_total"),
            "nacks_total": msum(m, "carehub_nacks_total"),
            "escalations": m.get("carehub_escalations_total", 0.0),
            "webhook_attempts_ok": m.get(ATTEMPTS_OK, 0.0),
            "webhook_attempts_error": m.get(ATTEMPTS_ERROR, 0.0),
            "webhook_failures": m.get("carehub_webhook_failures_total", 0.0),
            "assignments_open": m.get("carehub_assignments_open", 0.0),
            "assignments_overdue": m.get("carehub_assignments_overdue", 0.0),
            "notices_pending": m.get("carehub_notices_pending", 0.0),
            "webhooks_posts": r["posts"], "webhooks_distinct": r["distinct"],
            "answered_500": r["answered_500"], "bad_signatures": r["bad_signatures"],
            "desk_assignments": desk.assignments, "desk_acks": desk.acks_ok,
            "desk_resolves": desk.resolves_ok, "desk_nacks": len(desk.nacks),
            "desk_p99_ms": pct(dl, 0.99),
            "escalations_arrived": len(late),
            "escalation_late_p50_ms": pct(late, 0.50), "escalation_late_p99_ms": pct(late, 0.99),
            "escalation_late_max_ms": late[-1] if late else float("nan"),
        })
        cpu0, t_cpu0, m0, io0, cpsi0, wb0 = cpu1, t_cpu1, m, io1, cpsi1, wb1
        s["hist"] = item["hist"]
        samples.append(s)
        print(row(s), flush=True)
    rc = lg.proc.wait()
    lg.kill()
    procs.pop("loadgen")
    broker.alive("the soak")
    err = lg.stderr_text()
    sys.stderr.write("".join("    " + ln + "\n" for ln in err.splitlines()))

    # ---- settle: the desk's last acks and resolutions, the outbox drains
    say("load stopped: waiting for the desk's last assignments and the webhook outbox")
    t_end = time.monotonic()
    settled, m = False, {}
    while time.monotonic() - t_end < SETTLE_MAX_S:
        broker.alive("the settle")
        m = broker.metrics()
        if (not desk.busy() and m.get("carehub_notices_pending", 1) == 0
                and m.get("carehub_assignments_open", 1) == 0):
            settled = True
            break
        time.sleep(0.5)
    settle_s = time.monotonic() - t_end
    desk.stop_ev.set()
    desk.join(5)
    mem_end = broker.memory()
    lost = receiver.lost(time.monotonic() - LOST_MARGIN_S)
    broker.stop()
    receiver.close()
    procs.clear()
    log_n, log_first = broker.log_problems()
    store_end = du_bytes(data)
    return {"samples": samples, "final": final, "loadgen_rc": rc, "loadgen_stderr": err,
            "settled": settled, "settle_s": settle_s, "metrics_end": m, "mem_end": mem_end,
            "receiver": receiver.snapshot(), "lost": lost, "desk": desk.snapshot(),
            "desk_nacks": [n for n in desk.nacks if n], "log_problems": log_n, "log_first": log_first,
            "store_end_bytes": store_end, "log_path": str(broker.log_path)}


# ---------------------------------------------------------------------------
# Verdict

def judge(args, rate, res):
    samples = [s for s in res["samples"] if s["seconds"] >= 0.9 * args.sample_seconds]
    problems = []
    out = {"samples_full": len(samples)}
    if not samples:
        problems.append("no full interval was measured")
        return problems, out
    k = max(1, min(int(round(WINDOW_S / args.sample_seconds)), len(samples) // 2 or 1))
    start, end = samples[:k], samples[-k:]

    def window(ss):
        h = {}
        for s in ss:
            hist_add(h, s["hist"])
        return {"minutes": [round(ss[0]["t"] - ss[0]["seconds"]) / 60, ss[-1]["t"] / 60],
                "RssAnon": max(s["RssAnon"] for s in ss), "VmRSS": max(s["VmRSS"] for s in ss),
                "RssFile": max(s["RssFile"] for s in ss),
                "p50_ms": hist_pct(h, 0.50), "p99_ms": hist_pct(h, 0.99),
                "max_ms": max(s["max_ms"] for s in ss),
                "events_per_s": sum(s["acked"] for s in ss) / sum(s["seconds"] for s in ss),
                "cpu_pct": sum(s["cpu_pct"] for s in ss) / len(ss),
                "commit_p99_ms": max(s["commit_p99_ms"] for s in ss),
                "write_mb_s": sum(s["write_mb_s"] for s in ss) / len(ss),
                "write_kb_per_event": sum(s["write_kb_per_event"] for s in ss) / len(ss),
                "commit_max_ms": max(s["commit_max_ms"] for s in ss),
                "io_pressure_pct": sum(s["io_pressure_pct"] for s in ss) / len(ss),
                "cpu_pressure_pct": sum(s["cpu_pressure_pct"] for s in ss) / len(ss),
                "store_bytes": ss[-1]["store_bytes"],
                "notices_pending": max(s["notices_pending"] for s in ss),
                "assignments_open": max(s["assignments_open"] for s in ss)}
    ws, we = window(start), window(end)
    out.update(start=ws, end=we)
    rss_limit = args.rss_factor * ws["RssAnon"] + args.rss_slack_mb * MIB
    p99_limit = max(args.p99_factor * ws["p99_ms"], args.p99_floor_ms)
    out.update(rss_limit=rss_limit, p99_limit_ms=p99_limit)
    if we["RssAnon"] > rss_limit:
        problems.append(f"RSS grew: RssAnon {we['RssAnon'] / MIB:.1f} MiB at the end > "
                        f"{args.rss_factor:g} x {ws['RssAnon'] / MIB:.1f} MiB at the start + "
                        f"{args.rss_slack_mb:g} MiB = {rss_limit / MIB:.1f} MiB")
    if we["p99_ms"] > p99_limit:
        problems.append(f"p99 grew: {we['p99_ms']:.2f} ms at the end > {args.p99_factor:g} x "
                        f"{ws['p99_ms']:.2f} ms at the start (and > {args.p99_floor_ms:g} ms)")
    slow = [s for s in samples if s["events_per_s"] < args.rate_min * rate]
    if slow:
        problems.append(f"the broker fell behind the load in {len(slow)} interval(s): e.g. minute "
                        f"{slow[0]['t'] / 60:.1f} acked {slow[0]['events_per_s']:.0f} events/s, less than "
                        f"{args.rate_min:g} x {rate:.0f}")
    # the run itself
    if res["loadgen_rc"] != 0:
        problems.append(f"loadgen failed (exit {res['loadgen_rc']}): see its messages above")
    fin = res["final"] or {}
    metric_nacks = msum(res["metrics_end"], "carehub_nacks_total")
    if fin.get("nacked") or metric_nacks or res["desk"]["nacks"]:
        problems.append(f"nacks: loadgen {fin.get('nacked')}, desk {res['desk']['nacks']} "
                        f"(e.g. {res['desk_nacks'][:1]}), broker's carehub_nacks_total {metric_nacks:.0f}")
    rc = res["receiver"]
    if rc["bad_signatures"]:
        problems.append(f"{rc['bad_signatures']} webhook signatures did not verify")
    for t in ("case.assigned", "assignment.overdue", "case.resolved"):
        if not rc["by_type"].get(t):
            problems.append(f"no {t} notice arrived")
    if res["lost"]:
        problems.append(f"{len(res['lost'])} notices answered 500 were never delivered again "
                        f"(e.g. {res['lost'][0]})")
    if not res["settled"]:
        me = res["metrics_end"]
        problems.append(f"not settled {SETTLE_MAX_S:.0f} s after the load stopped: "
                        f"{me.get('carehub_notices_pending')} notices pending, "
                        f"{me.get('carehub_assignments_open')} assignments open")
    if res["desk"]["acks_ok"] == 0:
        problems.append("the desk acknowledged nothing")
    return problems, out


def report(args, rate, probe_res, res, verdict_out, problems):
    samples = res["samples"]
    fin = res["final"] or {}
    rc = res["receiver"]
    me = res["metrics_end"]
    ws, we = verdict_out.get("start"), verdict_out.get("end")
    print()
    print(f"carehub soak: {args.minutes:g} min at {rate:.0f} events/s "
          + (f"({args.fraction:g} of the probe's {probe_res['events_per_s']:.0f})" if probe_res else "(SOAK_RATE)")
          + f", every {args.mandatory_every}th event a mandatory_report; ack_within {args.ack_within:g} s, "
          f"2 escalation steps; {args.prompt:.0%} acknowledged in time; {args.webhook_fail:.0%} of POSTs answered 500")
    if ws and we:
        def line(label, a, b, fmt, unit):
            return f"  {label:<28} {fmt.format(a):>10} {unit:<4} -> {fmt.format(b):>10} {unit}"
        print(f"start (minutes {ws['minutes'][0]:g}-{ws['minutes'][1]:g}) -> "
              f"end (minutes {we['minutes'][0]:g}-{we['minutes'][1]:g}):")
        print(line("RssAnon (judged)", ws["RssAnon"] / MIB, we["RssAnon"] / MIB, "{:.1f}", "MiB")
              + f"   (limit {verdict_out['rss_limit'] / MIB:.1f} MiB)")
        print(line("VmRSS (incl. mapped store)", ws["VmRSS"] / MIB, we["VmRSS"] / MIB, "{:.1f}", "MiB"))
        print(line("p99 ack latency (judged)", ws["p99_ms"], we["p99_ms"], "{:.2f}", "ms")
              + f"   (limit {verdict_out['p99_limit_ms']:.2f} ms)")
        print(line("p50 ack latency", ws["p50_ms"], we["p50_ms"], "{:.2f}", "ms"))
        print(line("max ack latency", ws["max_ms"], we["max_ms"], "{:.1f}", "ms"))
        print(line("acked events/s", ws["events_per_s"], we["events_per_s"], "{:.0f}", ""))
        print(line("broker CPU", ws["cpu_pct"], we["cpu_pct"], "{:.1f}", "%"))
        print(line("written (write syscalls)", ws["write_mb_s"], we["write_mb_s"], "{:.1f}", "MiB/s")
              + f"   ({ws['write_kb_per_event']:.1f} -> {we['write_kb_per_event']:.1f} KiB per event)")
        print(line("commit p99 (worst interval)", ws["commit_p99_ms"], we["commit_p99_ms"], "{:.1f}", "ms")
              + f"   slowest commit <= {ws['commit_max_ms']:.0f} ms -> <= {we['commit_max_ms']:.0f} ms")
        print(line("machine IO / CPU pressure", ws["io_pressure_pct"], we["io_pressure_pct"], "{:.0f}", "%")
              + f"   CPU {ws['cpu_pressure_pct']:.0f} % -> {we['cpu_pressure_pct']:.0f} % "
              "(PSI 'some': time any task waited; other loads on the machine show here)")
        print(line("store (map used)", ws["store_bytes"] / MIB, we["store_bytes"] / MIB, "{:.0f}", "MiB"))
        print(line("open assignments (max)", ws["assignments_open"], we["assignments_open"], "{:.0f}", ""))
        print(line("outbox (max)", ws["notices_pending"], we["notices_pending"], "{:.0f}", ""))
    print(f"events: {fin.get('acked', 0)} acked in the window (loadgen: {fin.get('sent', 0)} sent, "
          f"{fin.get('mandatory', 0)} mandatory_report, {fin.get('outcomes', 0)} outcomes confirmed, "
          f"{fin.get('nacked', 0)} nacks, {fin.get('unanswered', 0)} unanswered, at most "
          f"{fin.get('max_backlog', 0)} due and not yet sent)")
    print(f"escalations: {me.get('carehub_escalations_total', 0):.0f} steps fired (carehub_escalations_total); "
          f"{rc['by_type'].get('assignment.overdue', 0)} overdue notices received")
    late = [s for s in samples if s["escalations_arrived"]]
    if late:
        print(f"  lateness, first arrival - due time, worst minute: p99 "
              f"{max(s['escalation_late_p99_ms'] for s in late):.0f} ms, max "
              f"{max(s['escalation_late_max_ms'] for s in late):.0f} ms (informational)")
    print(f"webhooks: {rc['posts']} POSTs, {rc['distinct']} distinct webhook-ids "
          f"({', '.join(f'{k} {v}' for k, v in sorted(rc['by_type'].items(), key=lambda x: str(x[0])))}); "
          f"{rc['posts'] - rc['bad_signatures']} of {rc['posts']} signatures verify; "
          f"{rc['answered_500']} answered 500, {len(res['lost'])} of those never delivered; "
          f"broker: {me.get(ATTEMPTS_OK, 0):.0f} ok / {me.get(ATTEMPTS_ERROR, 0):.0f} error attempts, "
          f"{me.get('carehub_webhook_failures_total', 0):.0f} given up")
    d = res["desk"]
    print(f"desk: {d['assignments']} assignments ({d['redeliveries']} re-deliveries), {d['acks_ok']} acknowledged "
          f"({d['late_acks']} after the escalations), {d['resolves_ok']} resolved, {d['nacks']} nacks")
    print(f"nacks: loadgen {fin.get('nacked', 0)}, desk {d['nacks']}, "
          f"carehub_nacks_total {msum(me, 'carehub_nacks_total'):.0f}")
    print(f"settled {res['settle_s']:.1f} s after the load: outbox {me.get('carehub_notices_pending', '?')}, "
          f"open assignments {me.get('carehub_assignments_open', '?')}; store on disk "
          f"{res['store_end_bytes'] / MIB:.0f} MiB; broker log: {res['log_problems']} WARN/ERROR lines")
    for ln in res["log_first"]:
        print(f"    {ln}")
    if problems:
        for p in problems:
            print(f"FAIL: {p}")
    else:
        print(f"PASS: RssAnon {ws['RssAnon'] / MIB:.1f} -> {we['RssAnon'] / MIB:.1f} MiB, p99 "
              f"{ws['p99_ms']:.2f} -> {we['p99_ms']:.2f} ms, no nacks, every notice delivered")


def write_summary(args, rate, probe_res, res, verdict_out, problems):
    out_dir = ROOT / "build" / "soak"
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = [{k: v for k, v in s.items() if k != "hist"} for s in (res or {}).get("samples", [])]
    summary = {
        "pass": not problems, "problems": problems,
        "minutes": args.minutes, "rate": rate, "fraction": args.fraction, "probe": probe_res,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "criteria": {"rss": f"RssAnon end <= {args.rss_factor} x start + {args.rss_slack_mb} MiB",
                     "p99": f"p99 end <= max({args.p99_factor} x start, {args.p99_floor_ms} ms)",
                     "rate": f"every full interval acks >= {args.rate_min} x rate"},
        "start": verdict_out.get("start"), "end": verdict_out.get("end"),
        "samples": samples,
    }
    if res:
        summary.update({k: res[k] for k in ("final", "loadgen_rc", "settled", "settle_s", "receiver", "desk",
                                             "log_problems", "store_end_bytes")})
        summary["lost_notices"] = len(res["lost"])
        summary["metrics_end"] = res["metrics_end"]
    path = out_dir / "summary.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(finite(summary), indent=1, default=str, allow_nan=False) + "\n")
    tmp.replace(path)
    say(f"summary: {path.relative_to(ROOT)}")


# ---------------------------------------------------------------------------

def env(name, default, conv=float):
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    try:
        return conv(v)
    except ValueError:
        sys.exit(f"soak: {name}={v!r} is not a number")


def parse_args():
    p = argparse.ArgumentParser(description="carehubd soak run (docs/bench.md, Soak). "
                                "Every option defaults to its SOAK_* environment variable.")
    p.add_argument("--minutes", type=float, default=env("SOAK_MINUTES", 30.0))
    p.add_argument("--probe-seconds", type=float, default=env("SOAK_PROBE_SECONDS", 10.0))
    p.add_argument("--rate", type=float, default=env("SOAK_RATE", None),
                   help="events/s of the soak; skips the probe")
    p.add_argument("--fraction", type=float, default=env("SOAK_FRACTION", 0.5))
    p.add_argument("--sample-seconds", type=float, default=env("SOAK_SAMPLE_SECONDS", 60.0))
    p.add_argument("--agents", type=int, default=env("SOAK_AGENTS", 4, int))
    p.add_argument("--inflight", type=int, default=env("SOAK_INFLIGHT", 256, int))
    p.add_argument("--mandatory-every", type=int, default=env("SOAK_MANDATORY_EVERY", 200, int))
    p.add_argument("--children", type=int, default=env("SOAK_CHILDREN", 1000, int),
                   help="absences of an agent cycle over this many children (loadgen --children)")
    p.add_argument("--ack-within", type=float, default=env("SOAK_ACK_WITHIN", 3.0))
    p.add_argument("--prompt", type=float, default=env("SOAK_PROMPT", 0.5))
    p.add_argument("--webhook-fail", type=float, default=env("SOAK_WEBHOOK_FAIL", 0.01))
    p.add_argument("--privacy", type=int, default=env("SOAK_PRIVACY", 1, int))
    p.add_argument("--keep", type=int, default=env("SOAK_KEEP", 0, int))
    p.add_argument("--rss-factor", type=float, default=env("SOAK_RSS_FACTOR", 1.5))
    p.add_argument("--rss-slack-mb", type=float, default=env("SOAK_RSS_SLACK_MB", 20.0))
    p.add_argument("--p99-factor", type=float, default=env("SOAK_P99_FACTOR", 3.0))
    p.add_argument("--p99-floor-ms", type=float, default=env("SOAK_P99_FLOOR_MS", 50.0))
    p.add_argument("--rate-min", type=float, default=env("SOAK_RATE_MIN", 0.9))
    a = p.parse_args()
    if a.minutes <= 0 or a.probe_seconds <= 0 or a.sample_seconds < 1 or a.agents < 1 or a.inflight < 1 \
            or a.mandatory_every < 1 or a.children < 1 or a.ack_within < 0.5 or not 0 < a.fraction <= 1 \
            or not 0 <= a.prompt <= 1 or not 0 <= a.webhook_fail < 0.5 or (a.rate is not None and a.rate <= 0):
        p.error("a setting is out of range (see --help)")
    a.carehubd = benchlib.binary("CAREHUBD", "bin/carehubd")
    a.loadgen = ROOT / "bin" / "loadgen"
    return a


def main():
    args = parse_args()
    for b in (args.carehubd, args.loadgen):
        if not os.access(b, os.X_OK):
            say(f"FAIL: {b} is missing: build it first (make all bin/loadgen)")
            return 1
    benchlib.exit_on(signal.SIGTERM, signal.SIGHUP)

    tmp, fstype = benchlib.run_tmp("carehub-soak.", say, ", and the store fills memory")
    secret = benchlib.new_secret()
    procs = {}
    probe_res = res = None
    rate = args.rate
    problems, verdict_out = [], {}
    t0 = time.monotonic()
    try:
        if rate is None:
            probe_res = probe(args, tmp, secret, procs)
            rate = probe_res["events_per_s"] * args.fraction
            # disk: the soak's store from the probe's bytes per event, plus a margin
            need = probe_res["bytes_per_event"] * rate * args.minutes * 60 * 1.25
            free = shutil.disk_usage(tmp).free
            say(f"soak rate {rate:.0f} events/s ({args.fraction:g} x {probe_res['events_per_s']:.0f}); "
                f"expected store about {need / 1024 / MIB:.1f} GiB, {free / 1024 / MIB:.1f} GiB free under {tmp.parent}")
            if need > free - DISK_MARGIN:
                raise Fail(f"the soak needs about {need / 1024 / MIB:.1f} GiB under {tmp.parent} and "
                           f"{free / 1024 / MIB:.1f} GiB are free: set BENCH_TMPDIR or lower SOAK_MINUTES")
            time.sleep(1.0)
        res = soak(args, tmp, secret, rate, procs)
        problems, verdict_out = judge(args, rate, res)
        report(args, rate, probe_res, res, verdict_out, problems)
        self_cpu = resource.getrusage(resource.RUSAGE_SELF)
        say(f"took {time.monotonic() - t0:.0f} s; this script used {self_cpu.ru_utime + self_cpu.ru_stime:.1f} s "
            f"of CPU (receiver and desk)")
        return 1 if problems else 0
    except Fail as e:
        problems = [str(e).splitlines()[0]]
        say(f"FAIL: {e}")
        return 1
    except KeyboardInterrupt:
        problems = ["interrupted"]
        say("interrupted")
        return 130
    finally:
        lg = procs.get("loadgen")
        if lg is not None:
            lg.kill()
        desk = procs.get("desk")
        if desk is not None:
            desk.stop_ev.set()
            desk.join(5)
        broker = procs.get("broker")
        if broker is not None:
            broker.kill()
        receiver = procs.get("receiver")
        if receiver is not None:
            receiver.close()
        try:
            write_summary(args, rate, probe_res, res, verdict_out, problems)
        except Exception as e:   # the verdict stands without the file
            say(f"could not write the summary: {e}")
        benchlib.drop_tmp(tmp, args.keep, say, " (configs, data, logs)")


if __name__ == "__main__":
    sys.exit(main())
