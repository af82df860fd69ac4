#!/usr/bin/python3
"""bench/desks.py — agency replies: desks acknowledging their assignments as fast as they can
(docs/bench.md, "Agency replies"; issue 10).

Item: "desks acknowledging 10,000 assignments as fast as they can: acks/s."
Target: at least 10,000 acks/s (printed as met / NOT met; exit 1 for it only with --enforce).

What it does (real clock, release build, data under $BENCH_TMPDIR):

  0. calibration (skip with --no-calibrate): bin/desk against a null broker in this script
     (a ROUTER that pushes N prebuilt `case` messages on hello and answers every case_ack
     at once, storing nothing): the acks/s the client itself reaches, with the same desks
     and window. It is printed next to the broker's figure;
  1. starts bin/carehubd with a temporary config: one `reporter` agent, agency `police` with
     DESKS desk agents `bench-desk-<i>` (role agency), no channels, one workflow
     `mandatory_report -> police, ack_within 1h` (nothing falls due during the run),
     heartbeat 60 s and redeliver_every 1 h (no re-delivery round during the run),
     broker.peer_queue large enough for N pushes (see below), metrics on 127.0.0.1;
  2. intake: N mandatory_report events with distinct child ids from the reporter (closed
     loop, 256 in flight): N cases, N open assignments. Every event must be acked and the
     acks must name N distinct cases;
  3. the desks: bin/desk (bench/desk.c) connects DESKS DEALERs, says hello (the broker
     pushes every unacknowledged assignment of the agency: PROTOCOL §5), collects the N
     `case` pushes, then sends `case_ack` for each, INFLIGHT in flight per desk. acks/s is
     measured from the first case_ack sent to the ack that completes the N; p50/p99/max of
     case_ack -> ack. bin/desk also reports its own CPU over that window (and the broker's),
     and how full its window of case_acks was: a full window and a desk far from 100 % of a
     CPU mean the broker, not the client, is the limit;
  4. checks: every assignment acked exactly once, no nack, no stray reply; the acked
     assignments belong to exactly the N cases of the intake; the broker's own counters
     (carehub_nacks_total unchanged, carehub_assignments_overdue 0); a fresh hello of
     bench-desk-0 afterwards gets no `case` push (nothing is left unacknowledged);
  5. SIGTERM: the broker must exit 0.

broker.peer_queue: on hello the broker pushes every pending assignment in one turn. With the
default queue of 4096 messages per peer, pushes beyond what libzmq has moved to the socket by
then are deferred to the next re-delivery round (counted in carehub_pushes_deferred_total).
The bench sets peer_queue to 2 x N + 1024 so that the N pushes reach the desk at once; the
deferred count is printed anyway (--peer-queue 0 keeps the broker's default).

Exit 1 on correctness failures (missing or duplicate acks, nacks, stray replies, a push left
after the acks, broker did not start or did not exit 0); exit 2 on a usage error.

Usage (from the project root, after `make all bin/desk`):
    /usr/bin/python3 bench/desks.py                  # 10,000 assignments, 1 desk x 512 in flight
    /usr/bin/python3 bench/desks.py --quick          # 2,000 assignments
    /usr/bin/python3 bench/desks.py --desks 4 --inflight 256
Environment: CAREHUBD (default bin/carehubd), DESK (default bin/desk), BENCH_TMPDIR
(default /var/tmp). Needs only Debian's python3 with python3-zmq and python3-msgpack.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time

import msgpack
import zmq

import benchlib
from benchlib import Fail, die_with_parent, finite, log_tail, msum, pack, proc_cpu

REPORTER = "bench-reporter"
DESK_PREFIX = "bench-desk-"
TARGET_ACKS_PER_S = 10000.0
INTAKE_INFLIGHT = 256
INTAKE_TIMEOUT_S = 120.0     # the whole intake
STOP_TIMEOUT_S = 30.0
REHELLO_WAIT_S = 1.0


say = benchlib.sayer("desks")


def config_text(args, data_dir):
    desks = "\n".join(f"  - {{id: {DESK_PREFIX}{i}, role: agency, agency: police}}" for i in range(args.desks))
    pq = f"  peer_queue: {args.peer_queue}\n" if args.peer_queue else ""  # in broker:
    return benchlib.broker_yaml("desks.py", data_dir, webhook_allow=False,
                                extra=["metrics: 127.0.0.1:0"]) + f"""{pq}privacy: off
agents:
  - {{id: {REPORTER}, role: reporter}}
{desks}
agencies:
  - {{id: police, name: police}}
  - {{id: civil_affairs, name: civil affairs}}
workflows:
  - name: bench-desks
    match: {{type: mandatory_report}}
    assign:
      - agency: police
        ack_within: 1h
"""


class Broker(benchlib.Broker):
    """carehubd (benchlib.Broker), stopped within STOP_TIMEOUT_S of SIGTERM."""

    def __init__(self, carehubd, workdir):
        super().__init__(carehubd, workdir, stop_timeout=STOP_TIMEOUT_S)


def hello(sock, agent, hid):
    sock.send(pack({"v": 1, "op": "hello", "id": hid, "agent": agent, "software": "carehub-bench-desks/1"}))
    limit = time.monotonic() + 5
    while time.monotonic() < limit:
        if sock.poll(100):
            m = msgpack.unpackb(sock.recv(), raw=False)
            if m.get("id") == hid:
                if m.get("op") != "welcome":
                    raise Fail(f"hello of {agent} refused: {m}")
                return
    raise Fail(f"no welcome for {agent} within 5 s")


def intake(endpoint, n, nonce):
    """n mandatory_report events, closed loop; returns ({event id: case}, seconds)."""
    sock = benchlib.dealer(endpoint)
    try:
        hello(sock, REPORTER, "hello-1")
        cases, nacks, sent, inflight = {}, [], 0, 0
        t0 = time.monotonic()
        while len(cases) < n:
            if time.monotonic() - t0 > INTAKE_TIMEOUT_S:
                raise Fail(f"intake: {n - len(cases)} events unanswered after {INTAKE_TIMEOUT_S:.0f} s")
            while sent < n and inflight < INTAKE_INFLIGHT:
                body = {"reporter": {"organisation": "carehub bench"}, "harm": "neglect",
                        "description": "Desk benchmark: the police acknowledge this report.",
                        "child": {"id": f"desk-{nonce}-{sent}", "name": "bench child"}}
                sock.send(pack({"v": 1, "op": "event", "id": f"{nonce}-{sent}", "type": "mandatory_report",
                                "at": int(time.time() * 1000), "body": body}))
                sent += 1
                inflight += 1
            if not sock.poll(200):
                continue
            inflight -= benchlib.take_replies(sock, cases, nacks)[0]
            if nacks:
                raise Fail(f"intake: event refused: {nacks[0]}")
        return cases, time.monotonic() - t0
    finally:
        sock.close()


def rehello(endpoint):
    """A fresh hello of bench-desk-0: the `case` pushes that follow within REHELLO_WAIT_S."""
    sock = benchlib.dealer(endpoint)
    try:
        sock.send(pack({"v": 1, "op": "hello", "id": "rehello", "agent": f"{DESK_PREFIX}0",
                        "software": "carehub-bench-desks/1"}))
        pushes, welcomed = 0, False
        limit = time.monotonic() + 5
        until = None
        while time.monotonic() < (until or limit):
            if not sock.poll(50):
                continue
            m = msgpack.unpackb(sock.recv(), raw=False)
            if m.get("op") == "welcome" and m.get("id") == "rehello":
                welcomed = True
                until = time.monotonic() + REHELLO_WAIT_S
            elif m.get("op") == "case":
                pushes += 1
            elif m.get("op") == "ping":
                sock.send(pack({"v": 1, "op": "pong", "id": m.get("id")}))
        if not welcomed:
            raise Fail("the re-hello of bench-desk-0 got no welcome")
        return pushes
    finally:
        sock.close()


class NullBroker(threading.Thread):
    """Calibration: a ROUTER on 127.0.0.1 that answers hello with welcome and N `case` pushes
    (prebuilt), and every case_ack with an ack at once, storing nothing. bin/desk's acks/s
    against it is what the client itself can do (a lower bound: this Python loop may be
    the limit)."""

    def __init__(self, n):
        super().__init__(daemon=True)
        self.n = n
        self.stop_ev = threading.Event()
        self.error = None
        ctx = zmq.Context.instance()
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        now = int(time.time() * 1000)
        ev = {"event": "e", "type": "mandatory_report", "at": now,
              "body": {"reporter": {"organisation": "carehub bench"}, "harm": "neglect",
                       "description": "Desk benchmark: the police acknowledge this report.",
                       "child": {"id": "x", "name": "bench child"}}}
        self.cases = [pack({"v": 1, "op": "case", "id": f"na-{i}", "case": f"nc-{i}", "agency": "police",
                            "type": "mandatory_report", "severity": "normal", "opened": now,
                            "ack_by": now + 3600000, "events": [ev], "events_total": 1})
                      for i in range(n)]

    def run(self):
        sock = self.sock
        try:
            while not self.stop_ev.is_set():
                if not sock.poll(50):
                    continue
                while True:
                    try:
                        rid, frame = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    m = msgpack.unpackb(frame, raw=False)
                    op = m.get("op")
                    if op == "case_ack":
                        a = m.get("assignment", "")
                        sock.send_multipart([rid, pack({"v": 1, "op": "ack", "id": m.get("id"), "assignment": a,
                                                        "case": "nc-" + a[3:]})])
                    elif op == "hello":
                        sock.send_multipart([rid, pack({"v": 1, "op": "welcome", "id": m.get("id"),
                                                        "agent": m.get("agent"), "role": "agency",
                                                        "heartbeat_ms": 60000})])
                        for c in self.cases:
                            sock.send_multipart([rid, c])
        except Exception as e:
            self.error = e
        finally:
            sock.close()


def calibrate(args, tmp):
    """bin/desk against the NullBroker: the client's own capacity."""
    nb = NullBroker(args.n)
    nb.start()
    try:
        cmd = [str(args.desk), "-b", nb.endpoint, "--expect", str(args.n), "-n", str(args.desks),
               "-w", str(args.inflight), "--prefix", DESK_PREFIX, "--timeout", "60", "--after", "0.2", "--json"]
        with open(tmp / "calibrate.err", "wb") as err:
            r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, timeout=90,
                               preexec_fn=die_with_parent)
        lines = [ln for ln in r.stdout.decode(errors="replace").splitlines() if ln.startswith("{")]
        if r.returncode != 0 or not lines:
            raise Fail(f"the calibration run of bin/desk failed (exit {r.returncode}):\n"
                       + log_tail(tmp / "calibrate.err"))
        return json.loads(lines[-1])
    finally:
        nb.stop_ev.set()
        nb.join(5)


def run(args):
    benchlib.need_binaries((args.carehubd, args.desk), "make all bin/desk")
    tmp, fstype = benchlib.run_tmp("carehub-desks.", say)
    broker = desk_proc = None
    try:
        cal = None
        if not args.no_calibrate:
            say(f"calibration: bin/desk against a null broker (answers at once, stores nothing), {args.n} assignments")
            cal = calibrate(args, tmp)
            say(f"calibration: {cal['acks_per_s']:.0f} acks/s, desk CPU {cal['desk_cpu_pct']:.0f} % of one CPU, "
                f"window {cal['window_fill_pct']:.0f} % full")
        conf = tmp / "carehub.yaml"
        conf.write_text(config_text(args, tmp / "data"))
        broker = Broker(args.carehubd, tmp)
        broker.start(conf)
        say(f"carehubd ready on {broker.endpoint} (pid {broker.pid}), metrics {broker.metrics_url}; "
            f"data on {fstype} under {tmp}")

        # ---- intake: N open assignments
        nonce = f"{int(time.time())}-{os.getpid()}"
        say(f"intake: {args.n} mandatory_report events (distinct children), {INTAKE_INFLIGHT} in flight")
        cases, intake_s = intake(broker.endpoint, args.n, nonce)
        broker.alive("the intake")
        distinct = set(cases.values())
        if len(distinct) != args.n:
            raise Fail(f"{args.n} events with distinct child ids made {len(distinct)} cases")
        m0 = broker.metrics()
        if m0.get("carehub_assignments_open") != args.n:
            raise Fail(f"carehub_assignments_open is {m0.get('carehub_assignments_open')}, not {args.n}")
        say(f"intake: {args.n} events acked in {intake_s:.2f} s ({args.n / intake_s:.0f}/s); "
            f"{args.n} open assignments")

        # ---- the desks
        out_file = tmp / "desk.out"
        err_file = tmp / "desk.err"
        cmd = [str(args.desk), "-b", broker.endpoint, "--expect", str(args.n), "-n", str(args.desks),
               "-w", str(args.inflight), "--prefix", DESK_PREFIX, "--timeout", f"{args.timeout:g}",
               "--after", "0.5", "--broker-pid", str(broker.pid), "--out", str(out_file), "--json"]
        if args.ack_on_arrival:
            cmd.append("--ack-on-arrival")
        say(f"desks: {' '.join(cmd[:1] + ['…'] + cmd[3:])}")
        c0 = proc_cpu(broker.pid)
        t0 = time.monotonic()
        with open(err_file, "wb") as err:
            desk_proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                         preexec_fn=die_with_parent)
            try:
                out, _ = desk_proc.communicate(timeout=args.timeout + 15)
            except subprocess.TimeoutExpired:
                desk_proc.kill()
                desk_proc.communicate()
                raise Fail(f"bin/desk did not finish within {args.timeout + 15:.0f} s")
            # rusage of the child, whole run (informational)
        wall = time.monotonic() - t0
        c1 = proc_cpu(broker.pid)
        desk_rc = desk_proc.returncode
        desk_proc = None
        sys.stderr.write("".join("    " + ln + "\n" for ln in err_file.read_text(errors="replace").splitlines()))
        broker.alive("the desks' run")
        lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.startswith("{")]
        if not lines:
            raise Fail(f"bin/desk printed no result (exit {desk_rc})\n" + log_tail(broker.log_path))
        d = json.loads(lines[-1])
        m1 = broker.metrics()

        # ---- checks
        rows = []
        if out_file.exists():
            for ln in out_file.read_text().splitlines():
                p = ln.split()
                if len(p) == 5:
                    rows.append((p[0], p[1], int(p[2]), int(p[3]), int(p[4])))
        acked_cases = {r[1] for r in rows if r[2] == 1 and r[3] == 0}
        left = rehello(broker.endpoint)
        broker.alive("the re-hello")
        m2 = broker.metrics()
        broker.stop()

        problems = []
        if desk_rc != 0:
            problems.append(f"bin/desk failed (exit {desk_rc}): see its messages above")
        if d["acked_once"] != args.n:
            problems.append(f"{d['acked_once']} of {args.n} assignments acked exactly once "
                            f"({d['never_answered']} never answered, {d['acked_more_than_once']} more than once)")
        if d["nacked"] or d["refused"]:
            problems.append(f"{d['nacked']} nacks: {d['nack_codes']}")
        if d["duplicate_acks"] or d["stray_replies"] or d["mismatched"]:
            problems.append(f"{d['duplicate_acks']} duplicate acks, {d['stray_replies']} stray replies, "
                            f"{d['mismatched']} acks naming another assignment")
        if d["known"] != args.n:
            problems.append(f"the desks were pushed {d['known']} distinct assignments, not {args.n}")
        if acked_cases != distinct:
            problems.append(f"the acked assignments' cases differ from the intake's: "
                            f"{len(distinct - acked_cases)} missing, {len(acked_cases - distinct)} foreign")
        nacks_broker = msum(m2, "carehub_nacks_total") - msum(m0, "carehub_nacks_total")
        if nacks_broker:
            problems.append(f"the broker counted {nacks_broker:.0f} nacks (carehub_nacks_total)")
        if left:
            problems.append(f"a fresh hello of {DESK_PREFIX}0 was still pushed {left} assignments")
        if m2.get("carehub_assignments_overdue", 0):
            problems.append(f"{m2.get('carehub_assignments_overdue'):.0f} assignments overdue")

        # ---- report
        acks = d["acked"]
        deferred = m1.get("carehub_pushes_deferred_total", 0)
        dropped = m1.get("carehub_replies_dropped_total", 0)
        met = d["acks_per_s"] >= args.target
        rus = resource.getrusage(resource.RUSAGE_CHILDREN)
        print()
        print(f"carehub agency-replies bench: {args.n} open assignments of one agency, "
              f"{args.desks} desk agent{'s' if args.desks != 1 else ''} x {args.inflight} case_acks in flight "
              f"({'acknowledging on arrival' if args.ack_on_arrival else 'pushes collected first'}); "
              f"data on {fstype}")
        rows_out = [
            ("intake (setup)", f"{args.n} events acked in {intake_s:.2f} s ({args.n / intake_s:.0f} events/s)"),
            ("hello -> welcome", f"{d['welcome_ms']:.1f} ms"),
            ("hello -> first / all pushes", f"{d['first_push_ms']:.1f} ms / {d['all_pushed_ms']:.1f} ms "
                                            f"({d['pushes']} pushes, {d['repeats']} repeats; "
                                            f"{deferred:.0f} deferred by the broker; "
                                            f"{d['pushes'] / max(1e-9, (d['all_pushed_ms'] - d['first_push_ms']) / 1000):.0f} "
                                            f"pushes/s; informational)"),
            ("acks", f"{acks} in {d['seconds']:.3f} s (first case_ack sent -> last ack received)"),
            ("acks/s", f"{d['acks_per_s']:.0f}   target >= {args.target:.0f}: {'met' if met else 'NOT met'}"),
            ("case_ack -> ack latency", f"p50 {d['p50_ms']:.2f} ms   p99 {d['p99_ms']:.2f} ms   max {d['max_ms']:.2f} ms"),
            ("exactly once", f"{d['acked_once']} of {args.n}; never answered {d['never_answered']}, "
                             f"more than once {d['acked_more_than_once']}, nacks {d['nacked']}, "
                             f"stray {d['stray_replies']}"),
            ("cases", f"{len(acked_cases & distinct)} of {len(distinct)} intake cases acked"),
            ("after: fresh hello", f"{left} assignments pushed (0 expected)"),
            ("desk client CPU", f"{d['desk_cpu_s']:.3f} s = {d['desk_cpu_pct']:.1f} % of one CPU over the window "
                                f"(whole run {d['desk_cpu_total_s']:.3f} s)"),
            ("desk window", f"{d['avg_inflight']:.0f} of {args.inflight * args.desks} case_acks in flight on "
                            f"average ({d['window_fill_pct']:.0f} % full)"),
            ("broker CPU", f"{d['broker_cpu_s']:.2f} s = {d['broker_cpu_pct']:.0f} % of one CPU over the window "
                           f"(/proc, all threads; {c1 - c0:.2f} s over the desks' whole run)"),
            ("broker writes", f"{d['broker_write_syscalls']} write syscalls, "
                              f"{d['broker_write_bytes'] / 1048576:.1f} MiB over the window "
                              f"({d['broker_write_syscalls'] / acks if acks else float('nan'):.1f} syscalls, "
                              f"{d['broker_write_bytes'] / 1024 / acks if acks else float('nan'):.1f} KiB per ack; "
                              f"/proc/PID/io syscw, wchar)"),
            ("replies dropped", f"{dropped:.0f} (carehub_replies_dropped_total)"),
        ]
        w = max(len(k) for k, _ in rows_out)
        for k, v in rows_out:
            print(f"  {k:<{w}}  {v}")
        if cal:
            print(f"  {'client capacity':<{w}}  {cal['acks_per_s']:.0f} acks/s against a null broker (calibration, same "
                  f"desks and window; desk CPU {cal['desk_cpu_pct']:.0f} % of one CPU; a lower bound: the null broker "
                  f"is Python)")
        client_ok = d["desk_cpu_pct"] < 70 and d["window_fill_pct"] > 50 and \
            (cal is None or cal["acks_per_s"] > 2 * d["acks_per_s"])
        bottleneck = "broker" if client_ok else \
            ("desk client" if d["desk_cpu_pct"] >= 90 or (cal and cal["acks_per_s"] < 1.2 * d["acks_per_s"])
             else "unclear")
        print(f"  {'limit':<{w}}  {bottleneck}: the desk used {d['desk_cpu_pct']:.0f} % of a CPU while its window was "
              f"{d['window_fill_pct']:.0f} % full"
              + (f"; it can do {cal['acks_per_s'] / max(1.0, d['acks_per_s']):.0f} x the measured rate" if cal else ""))
        for p in problems:
            print(f"FAIL: {p}")
        if not problems:
            print(f"PASS: {args.n} assignments acknowledged exactly once, no nacks; "
                  f"{d['acks_per_s']:.0f} acks/s (target {args.target:.0f}: {'met' if met else 'NOT met'})")
        summary = {
            "bench": "desks", "pass": not problems, "problems": problems, "n": args.n, "desks": args.desks,
            "inflight": args.inflight, "ack_on_arrival": args.ack_on_arrival, "fs": fstype,
            "acks_per_s": d["acks_per_s"], "target_acks_per_s": args.target, "target_met": met,
            "seconds": d["seconds"], "p50_ms": d["p50_ms"], "p99_ms": d["p99_ms"], "max_ms": d["max_ms"],
            "acked_once": d["acked_once"], "nacks": d["nacked"], "duplicate_acks": d["duplicate_acks"],
            "left_after": left, "desk_cpu_pct": d["desk_cpu_pct"], "desk_window_fill_pct": d["window_fill_pct"],
            "broker_cpu_pct": d["broker_cpu_pct"], "broker_write_syscalls": d["broker_write_syscalls"],
            "broker_write_syscalls_per_ack": d["broker_write_syscalls"] / acks if acks else None,
            "broker_write_kib_per_ack": d["broker_write_bytes"] / 1024 / acks if acks else None,
            "pushes_deferred": deferred, "all_pushes_ms": d["all_pushed_ms"], "intake_s": intake_s,
            "limit": bottleneck, "client_capacity_acks_per_s": cal["acks_per_s"] if cal else None,
            "client_capacity_cpu_pct": cal["desk_cpu_pct"] if cal else None, "children_cpu_s": rus.ru_utime + rus.ru_stime, "wall_s": wall,
        }
        print(json.dumps(finite(summary), separators=(",", ":"), allow_nan=False))
        if problems:
            return 1
        if args.enforce and not met:
            return 1
        return 0
    finally:
        if desk_proc is not None and desk_proc.poll() is None:
            desk_proc.kill()
            desk_proc.wait()
        if broker is not None:
            broker.kill()
        benchlib.drop_tmp(tmp, args.keep, say, " (config, data, carehubd.log, desk.out)")


def main():
    p = argparse.ArgumentParser(description="Agency replies: desks acknowledging N assignments (docs/bench.md).")
    p.add_argument("--n", type=int, default=None, help="open assignments to acknowledge (default 10000; --quick 2000)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 2,000 assignments")
    p.add_argument("--desks", type=int, default=1, help="desk agents of the agency (default 1)")
    p.add_argument("--inflight", type=int, default=512, help="case_acks in flight per desk (default 512)")
    p.add_argument("--ack-on-arrival", action="store_true",
                   help="acknowledge each push as it arrives instead of collecting them first")
    p.add_argument("--peer-queue", type=int, default=None,
                   help="broker.peer_queue (default 2 x N + 1024; 0: the broker's default)")
    p.add_argument("--target", type=float, default=TARGET_ACKS_PER_S, help="acks/s target (default 10000)")
    p.add_argument("--enforce", action="store_true", help="exit 1 when the target is not met")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="most seconds bin/desk may run, pushes included (default 300)")
    p.add_argument("--no-calibrate", action="store_true",
                   help="skip the calibration run of bin/desk against a null broker")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args()
    if args.n is None:
        args.n = 2000 if args.quick else 10000
    if args.n < 1 or args.desks < 1 or args.desks > 256 or args.inflight < 1 or args.timeout <= 0:
        p.error("a setting is out of range")
    if args.peer_queue is None:
        args.peer_queue = min(1000000, 2 * args.n + 1024)
    if args.peer_queue and not 16 <= args.peer_queue <= 1000000:
        p.error("--peer-queue must be 0 or 16..1000000")
    args.carehubd = benchlib.binary("CAREHUBD", "bin/carehubd")
    args.desk = benchlib.binary("DESK", "bin/desk")
    return benchlib.run_main(run, args, say, "desks")


if __name__ == "__main__":
    sys.exit(main())
