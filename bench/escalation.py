#!/usr/bin/python3
"""bench/escalation.py — escalation timing and idle CPU of carehubd (docs/bench.md,
"Escalation timing").

Acceptance item: "10,000 open assignments with staggered deadlines: every escalation
fires once, within 1 s of its due time; the broker uses no CPU between deadlines."

What it does, on the real clock (no --test-clock):

  1. starts a webhook receiver (threaded http.server on 127.0.0.1:<ephemeral>, HTTP/1.1
     keep-alive, answers 200 at once) that records the arrival time of every POST;
  2. starts bin/carehubd with a temporary config: one `reporter` agent, agency `police`
     (its desk agent is configured but never connects, so nothing is acknowledged),
     one webhook channel to the receiver, and one workflow
     `mandatory_report → police, ack_within A, escalate: [{after: 0s, notify: [channel]}]`;
     heartbeat 60 s and redeliver_every 1 h, so those timers stay far off;
  3. intake: sends N mandatory_report events with distinct child ids, paced evenly over
     SPREAD seconds (open loop), so N cases, N assignments and N deadlines
     ack_by = receive time + A, staggered over SPREAD seconds;
  4. quiet window: from 1 s after the last ack until 0.5 s before the first deadline can
     fall due (the first event was sent at T0, so no ack_by is earlier than T0 + A);
     measures the broker's CPU there (utime+stime from /proc/PID/stat, all threads) and
     how often its threads ran (context switches, /proc/PID/task/*/status);
  5. firing window: until every assignment has its `assignment.overdue` webhook (or the
     wait is given up), then 2 s more to catch late duplicates (the "after" window);
  6. stops the broker with SIGTERM (it must exit 0) and reports.

Fails (exit 1) when: an escalation is missing or came more than once (deduplicated by
webhook-id first, then counted per assignment), one arrived more than --max-late-ms
after its ack_by (or before it), a signature does not verify, the broker used more than
--quiet-cpu-max CPU seconds, or its threads were switched in more than
--quiet-wakeups-max times, in the quiet window; or when the run itself went wrong (the
broker did not start, died, refused events, joined them into fewer cases, did not exit 0
on SIGTERM). Exit 2 on a usage error.

Usage (from the project root, after `make`):
    /usr/bin/python3 bench/escalation.py                      # 10,000 over 10 s (~35 s)
    /usr/bin/python3 bench/escalation.py --n 1000 --spread 2  # quick
Environment: CAREHUBD (default bin/carehubd), BENCH_TMPDIR (default /var/tmp).
"""

import argparse
import calendar
import http.server
import json
import os
import re
import sys
import threading
import time

import benchlib
from benchlib import Fail

REPORTER = "bench-reporter"
CHANNEL = "bench-overdue"
SETTLE_S = 1.0          # after the last ack, before the quiet window starts
MARGIN_S = 0.5          # quiet window ends this long before the first possible deadline
AFTER_S = 2.0           # after the last escalation arrived: late duplicates, idle again
GIVE_UP_S = 10.0        # after the last possible deadline (+ max lateness): stop waiting
ACK_WAIT_S = 15.0       # after the last send: events still unanswered fail the intake


say = benchlib.sayer("escalation")


# ---------------------------------------------------------------------------
# The webhook receiver

class Receiver:
    def __init__(self):
        self.records = []  # (arrival ms, webhook-id, timestamp, signature, body); append is atomic
        records = self.records

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: curl reuses its connections

            def do_POST(self):
                arrival = time.time() * 1000.0
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n > 0 else b""
                self.send_response_only(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                records.append((arrival, self.headers.get("webhook-id"),
                                self.headers.get("webhook-timestamp"),
                                self.headers.get("webhook-signature"), body))

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

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------
# The broker's CPU

def cpu_sample(pid):
    """(utime+stime seconds, on-CPU ns from schedstat or None, context switches or None),
    summed over the broker's threads."""
    cpu = benchlib.cpu_seconds(pid)
    ns, switches = 0, 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            ns = None if ns == 0 else ns
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        switches += int(line.split()[1])
        except (OSError, ValueError):
            pass
    return cpu, ns, switches


class Window:
    def __init__(self, name, pid):
        self.name, self.pid = name, pid
        self.t0 = time.time()
        self.s0 = cpu_sample(pid)

    def end(self):
        self.t1 = time.time()
        s1 = cpu_sample(self.pid)
        self.secs = self.t1 - self.t0
        self.cpu = s1[0] - self.s0[0]
        self.oncpu_ms = (s1[1] - self.s0[1]) / 1e6 if s1[1] is not None and self.s0[1] is not None else None
        self.switches = s1[2] - self.s0[2]
        return self

    def line(self, label, limit=None, switch_limit=None):
        pct = 100.0 * self.cpu / self.secs if self.secs > 0 else 0.0
        extra = []
        if self.oncpu_ms is not None:
            extra.append(f"on-CPU {self.oncpu_ms:.1f} ms")
        extra.append(f"{self.switches} context switches"
                     + (f" (limit {switch_limit})" if switch_limit is not None else ""))
        lim = f"; limit {limit:.3f} s" if limit is not None else ""
        return (f"  {label:<52} {self.secs:5.1f} s  CPU {self.cpu:6.3f} s ({pct:4.1f}% of a CPU{lim})"
                f"  [{', '.join(extra)}]")


# ---------------------------------------------------------------------------
# Helpers

def pct(sorted_vals, p):
    """Nearest-rank percentile of a sorted list."""
    if not sorted_vals:
        return float("nan")
    k = max(1, -(-len(sorted_vals) * p // 100))
    return sorted_vals[int(k) - 1]


LOG_FIRED = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z INFO +assign: (\S+) overdue: "
                       r"escalation step 1 fired")


def fired_times(log_path):
    """assignment -> ms of the broker's 'escalation step 1 fired' log record (informational)."""
    out = {}
    try:
        with open(log_path, errors="replace") as f:
            for line in f:
                m = LOG_FIRED.match(line)
                if m:
                    secs = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
                    out.setdefault(m.group(3), secs * 1000 + int(m.group(2)))
    except OSError:
        pass
    return out


def yaml_config(data_dir, url, secret, ack_within_ms):
    return benchlib.broker_yaml("escalation.py", data_dir) + f"""privacy: off
agents:
  - id: {REPORTER}
    role: reporter
  - id: bench-police-desk
    role: agency
    agency: police
agencies:
  - id: police
    name: police
  - id: civil_affairs
    name: civil affairs
channels:
  - id: {CHANNEL}
    kind: webhook
    url: "{url}"
    secret: "{secret}"
    timeout: 5s
workflows:
  - name: bench-escalation
    match:
      type: mandatory_report
    assign:
      - agency: police
        ack_within: {ack_within_ms}ms
        escalate:
          - after: 0s
            notify: [{CHANNEL}]
"""


# ---------------------------------------------------------------------------
# The run

def intake(endpoint, n, spread, nonce):
    """Send n events paced over `spread` seconds; return (first send wall s, last ack wall s,
    {event id: case}, nacks)."""
    sock = benchlib.dealer(endpoint)
    try:
        benchlib.hello(sock, {"v": 1, "op": "hello", "id": "hello-1", "agent": REPORTER,
                              "software": "carehub-bench-escalation/1"}, "no welcome within 5 s", "hello refused: ")

        cases, nacks = {}, []
        interval = spread / n
        t0 = time.monotonic()
        first_send = last_ack = None
        sent = 0
        now = t0
        while len(cases) + len(nacks) < n:
            now = time.monotonic()
            while sent < n and t0 + sent * interval <= now:
                eid = f"{nonce}-{sent}"
                body = {
                    "reporter": {"organisation": "carehub bench"},
                    "harm": "neglect",
                    "description": "Escalation benchmark: the police do not acknowledge this report.",
                    "child": {"id": f"esc-{nonce}-{sent}", "name": "bench child"},
                }
                sock.send(benchlib.pack({"v": 1, "op": "event", "id": eid, "type": "mandatory_report",
                                         "at": int(time.time() * 1000), "body": body}))
                if first_send is None:
                    first_send = time.time()
                sent += 1
            if sent < n:
                wait_ms = max(0, int((t0 + sent * interval - time.monotonic()) * 1000))
            else:
                if now > t0 + spread + ACK_WAIT_S:
                    raise Fail(f"{n - len(cases) - len(nacks)} events unanswered {ACK_WAIT_S:.0f} s "
                               "after the last was sent")
                wait_ms = 100
            if sock.poll(wait_ms):
                last_ack = benchlib.take_replies(sock, cases, nacks)[1] or last_ack
        return first_send, last_ack, cases, nacks, sock
    except BaseException:
        sock.close()
        raise


def run(args):
    carehubd = benchlib.binary("CAREHUBD", "bin/carehubd")
    benchlib.need_binaries((carehubd,), "make")
    ack_within = args.ack_within
    ack_within_ms = int(round(ack_within * 1000))

    tmp = benchlib.bench_tmp("carehub-escalation.")
    receiver = broker = sock = None
    try:
        receiver = Receiver()
        secret = benchlib.new_secret()
        url = f"http://127.0.0.1:{receiver.port}/overdue"
        conf = tmp / "carehub.yaml"
        conf.write_text(yaml_config(tmp / "data", url, secret, ack_within_ms))
        broker = benchlib.Broker(carehubd, tmp, need_metrics=False, ready_timeout=10, stop_timeout=10,
                                 preexec_fn=None)
        broker.start(conf)
        endpoint, pid, alive = broker.endpoint, broker.pid, broker.alive
        say(f"carehubd ready on {endpoint} (pid {pid}); receiver on {url}")

        # ---- intake
        say(f"intake: {args.n} mandatory_report events over {args.spread:g} s, ack_within {ack_within:g} s")
        nonce = f"{int(time.time())}-{os.getpid()}"
        w_intake = Window("intake", pid)
        first_send, last_ack, cases, nacks, sock = intake(endpoint, args.n, args.spread, nonce)
        w_intake.end()
        alive("intake")
        if nacks:
            raise Fail(f"{len(nacks)} events refused; first: {nacks[0]}")
        distinct = set(cases.values())
        if len(distinct) != args.n:
            raise Fail(f"{args.n} events with distinct child ids made {len(distinct)} cases, "
                       f"not {args.n}")
        intake_secs = last_ack - first_send

        # ---- quiet window: open assignments, no deadline due, heartbeat and redelivery far off
        q_start = last_ack + SETTLE_S
        q_end = first_send + ack_within - MARGIN_S
        if q_end - q_start < 1.0:
            raise Fail(f"the intake took {intake_secs:.1f} s, leaving no quiet window before the "
                       f"first deadline: raise --ack-within")
        time.sleep(max(0.0, q_start - time.time()))
        alive("the quiet window")
        early = len(receiver.records)
        say(f"quiet window: {q_end - q_start:.1f} s")
        w_quiet = Window("quiet", pid)
        time.sleep(max(0.0, q_end - time.time()))
        w_quiet.end()
        alive("the quiet window")
        in_quiet = len(receiver.records) - early

        # ---- firing window: until every assignment has been notified, or give up
        say("firing window: waiting for the escalations")
        w_fire = Window("firing", pid)
        give_up = last_ack + ack_within + args.max_late_ms / 1000.0 + GIVE_UP_S
        seen_ids, k = set(), 0
        done_at = None
        while time.time() < give_up:
            upto = len(receiver.records)
            seen_ids.update(r[1] for r in receiver.records[k:upto])
            k = upto
            # complete once n distinct webhook-ids arrived (checked per assignment below)
            if len(seen_ids) >= args.n:
                done_at = time.time()
                break
            if broker.proc.poll() is not None:
                break
            time.sleep(0.05)
        w_fire.end()
        alive("the firing window")
        w_after = Window("after", pid)
        time.sleep(AFTER_S)
        w_after.end()
        alive("the window after the last escalation")

        # ---- stop: SIGTERM, exit 0 within 10 s
        sock.close()
        sock = None
        broker.stop()

        # ---- analysis
        records = list(receiver.records)
        key = benchlib.secret_key(secret)
        first_by_id = {}
        bad_sig = 0
        for arrival, wid, ts, sig, body in records:
            if not benchlib.verify(key, wid, ts, sig, body):
                bad_sig += 1
            if wid not in first_by_id or arrival < first_by_id[wid][0]:
                first_by_id[wid] = (arrival, body)
        per_assignment = {}  # assignment -> [(arrival, ack_by, case, level)]
        other_types = {}
        for wid, (arrival, body) in first_by_id.items():
            try:
                msg = json.loads(body)
                data = msg["data"]
            except (ValueError, KeyError, TypeError):
                other_types["<unreadable>"] = other_types.get("<unreadable>", 0) + 1
                continue
            if msg.get("type") != "assignment.overdue":
                other_types[msg.get("type")] = other_types.get(msg.get("type"), 0) + 1
                continue
            per_assignment.setdefault(data.get("assignment"), []).append(
                (arrival, data.get("ack_by"), data.get("case"), data.get("level")))
        notified_cases = {}
        for a, lst in per_assignment.items():
            for _, _, case, _ in lst:
                notified_cases.setdefault(case, set()).add(a)
        missing = distinct - set(notified_cases)
        stray = set(notified_cases) - distinct
        multi_assign = [c for c, s in notified_cases.items() if len(s) > 1]
        duplicated = {a: len(lst) for a, lst in per_assignment.items() if len(lst) > 1}
        once = sum(1 for lst in per_assignment.values() if len(lst) == 1)
        bad_level = sum(1 for lst in per_assignment.values() for x in lst if x[3] != 1)
        late = sorted(min(x[0] for x in lst) - lst[0][1] for lst in per_assignment.values()
                      if isinstance(lst[0][1], int))
        fired = fired_times(broker.log_path)
        fire_late = sorted(fired[a] - lst[0][1] for a, lst in per_assignment.items()
                           if a in fired and isinstance(lst[0][1], int))
        too_late = sum(1 for x in late if x > args.max_late_ms)
        too_early = sum(1 for x in late if x < 0)
        ack_bys = sorted(lst[0][1] for lst in per_assignment.values() if isinstance(lst[0][1], int))

        # ---- report
        print()
        print(f"carehub escalation bench: {args.n} assignments, intake over {args.spread:g} s, "
              f"ack_within {ack_within:g} s, one step (after 0 s) to one webhook channel")
        print(f"intake: {len(cases)} events acked in {intake_secs:.2f} s, {len(distinct)} cases, "
              f"{len(nacks)} nacks")
        if ack_bys:
            print(f"deadlines: {len(ack_bys)} ack_by values over {(ack_bys[-1] - ack_bys[0]) / 1000:.2f} s "
                  f"({len(set(ack_bys))} distinct ms)")
        print(f"escalations: {len(per_assignment)} assignments notified; {once} exactly once, "
              f"{len(missing)} cases missing, {len(duplicated)} assignments notified more than once; "
              f"{len(records)} POSTs, {len(first_by_id)} distinct webhook-ids "
              f"({len(records) - len(first_by_id)} retries)")
        if done_at is None:
            print(f"  gave up waiting {GIVE_UP_S:.0f} s after the last possible deadline")
        if stray or multi_assign or other_types or bad_level:
            print(f"  unexpected: {len(stray)} cases not from this intake, {len(multi_assign)} cases with "
                  f"more than one assignment, other types {other_types}, {bad_level} with level != 1")
        print(f"signatures: {len(records) - bad_sig} of {len(records)} verify")
        if late:
            print(f"lateness, arrival at the receiver - ack_by: p50 {pct(late, 50):.0f} ms  "
                  f"p99 {pct(late, 99):.0f} ms  max {late[-1]:.0f} ms  min {late[0]:.0f} ms  "
                  f"(limit 0..{args.max_late_ms:.0f} ms; {too_late} late, {too_early} early)")
        if fire_late:
            print(f"  of which in the broker, 'fired' log record - ack_by: p50 {pct(fire_late, 50):.0f} ms  "
                  f"p99 {pct(fire_late, 99):.0f} ms  max {fire_late[-1]:.0f} ms  "
                  f"({len(fire_late)} records; informational)")
        print(f"broker CPU, utime+stime of pid {pid} (/proc/PID/stat, all threads, {benchlib.CLK_TCK} ticks/s):")
        print(w_intake.line("intake (informational)"))
        print(w_quiet.line("quiet: open assignments, no deadline due", args.quiet_cpu_max,
                           args.quiet_wakeups_max))
        print(w_fire.line("firing: deadlines falling due, webhooks (info.)"))
        print(w_after.line("after the last escalation (informational)"))
        if in_quiet or early:
            print(f"  {early + in_quiet} webhooks arrived before the first deadline")

        problems = []
        if missing:
            problems.append(f"{len(missing)} assignments never escalated (e.g. case {sorted(missing)[0]})")
        if duplicated:
            a, c = next(iter(duplicated.items()))
            problems.append(f"{len(duplicated)} assignments escalated more than once (e.g. {a}: {c} times)")
        if stray or multi_assign or bad_level or other_types:
            problems.append("unexpected notices (see above)")
        if too_late:
            problems.append(f"{too_late} escalations arrived more than {args.max_late_ms:.0f} ms after ack_by "
                            f"(max {late[-1]:.0f} ms)")
        if too_early:
            problems.append(f"{too_early} escalations arrived before their ack_by (min {late[0]:.0f} ms)")
        if bad_sig:
            problems.append(f"{bad_sig} webhook signatures do not verify")
        if w_quiet.cpu > args.quiet_cpu_max:
            problems.append(f"the broker used {w_quiet.cpu:.3f} s of CPU in the quiet window "
                            f"(limit {args.quiet_cpu_max:.3f} s)")
        if w_quiet.switches > args.quiet_wakeups_max:
            problems.append(f"the broker's threads were switched in {w_quiet.switches} times in the quiet "
                            f"window (limit {args.quiet_wakeups_max}): something wakes it between deadlines")
        if problems:
            for p in problems:
                print(f"FAIL: {p}")
            return 1
        print("PASS: every escalation fired once, within "
              f"{args.max_late_ms:.0f} ms of its due time; quiet window: CPU {w_quiet.cpu:.3f} s, "
              f"{w_quiet.switches} context switches")
        return 0
    finally:
        if sock is not None:
            sock.close()
        if broker is not None:
            broker.kill()
        if receiver is not None:
            receiver.close()
        benchlib.drop_tmp(tmp, args.keep, say, " (config, data, carehubd.log)")


def main():
    p = argparse.ArgumentParser(description="Escalation timing and idle CPU of carehubd (docs/bench.md).")
    p.add_argument("--n", type=int, default=10000, help="assignments (events, cases) (default 10000)")
    p.add_argument("--spread", type=float, default=10.0,
                   help="seconds over which the events are sent, so the deadlines spread as much (default 10)")
    p.add_argument("--ack-within", type=float, default=None,
                   help="the workflow's ack_within in seconds (default spread + 10)")
    p.add_argument("--max-late-ms", type=float, default=1000.0,
                   help="most an escalation may arrive after its ack_by (default 1000)")
    p.add_argument("--quiet-cpu-max", type=float, default=0.05,
                   help="most CPU seconds the broker may use in the quiet window (default 0.05)")
    p.add_argument("--quiet-wakeups-max", type=int, default=10,
                   help="most context switches of the broker's threads in the quiet window (default 10)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (config, data, log)")
    args = p.parse_args()
    if args.n < 1 or args.spread <= 0:
        p.error("--n must be >= 1 and --spread > 0")
    if args.ack_within is None:
        args.ack_within = args.spread + 10.0
    # The quiet window needs the intake (spread), its last acks (settle) and a margin.
    if args.ack_within - args.spread - SETTLE_S - MARGIN_S < 2.0:
        p.error(f"--ack-within {args.ack_within:g} leaves no quiet window of 2 s after an intake "
                f"of {args.spread:g} s (it must be >= spread + 3.5)")
    return benchlib.run_main(run, args, say)


if __name__ == "__main__":
    sys.exit(main())
