#!/usr/bin/python3
"""bench/egress.py — intake to signed webhook: carehubd against Prometheus Alertmanager
(docs/bench.md, "Egress: carehubd against Alertmanager").

Both servers get N new items from 4 clients and must tell the same minimal C HTTP
receiver (bin/receiver, bench/receiver.c: answers 200 at once) about each one:

  Alertmanager  N alerts, each with its own labels, POSTed to /api/v2/alerts; the route
                has group_by ['...'], group_wait 0s, group_interval 1h, send_resolved
                false, so every alert is its own group and its own notification: one
                webhook POST per alert.
  carehubd      N mandatory_report events, each about a child never seen before, so N
                new cases; the workflow assigns each to the agency `police`, whose
                `channels:` hold one webhook channel to the receiver, so every new
                assignment makes one signed `case.assigned` webhook (docs/webhooks.md).
                The police desk agent is configured but never connects.

Rounds alternate (Alertmanager, carehubd, Alertmanager, carehubd, ...), each with a
fresh server, data directory and receiver. A round is timed from the first send of
any client to the arrival of the N-th POST at the receiver (both CLOCK_REALTIME ms):
notifications/s = N / that time. The peak RSS is the server's VmHWM
(/proc/PID/status) read after the last notice arrived; the largest RssAnon seen by a
10 Hz sampler and the server's CPU time (utime+stime) are shown too.

Clients: 4 processes, started and connected before the clock starts, each with its
share of N prepared in advance.
  - carehubd: one DEALER per client (agents bench-school-0..3, role school), 64 events
    in flight each (closed loop: a new event as soon as an ack frees a slot). Every
    ack means the event and its case are durably committed (synced LMDB).
  - Alertmanager: one keep-alive HTTP connection per client, one POST in flight, each
    POST a batch of --am-batch alerts (default 64). 64 matches the 64 events in flight
    per carehubd client, and is what Prometheus itself does (it sends alerts to
    Alertmanager in batches of up to 64). One alert per POST would mostly measure the
    Python client. Alertmanager keeps alerts in memory only (no sync per POST).

Correctness (exit 1 when any fails): each server starts and stays up; carehubd acks
every event (no nack, no duplicate:true) into N distinct cases and exits 0 on SIGTERM;
the receiver gets every notice — every carehubd webhook-id and every Alertmanager
alert (its `bench_id` label) — at least once (duplicates are counted and shown); every
Alertmanager notification holds exactly one alert (sampled); a sample of carehubd's
webhooks (every N/200-th and the first) verifies as Standard Webhooks with the
channel's secret and is a `case.assigned` about one of the acked cases.

Targets (issue 10): ratio carehubd/Alertmanager notifications/s >= 1.0, and carehubd's
peak RSS <= 1/3 of Alertmanager's. Printed as "met"/"NOT met"; they change the exit
status only with --enforce (exit 3 when one is not met).

Alertmanager: /usr/bin/prometheus-alertmanager (Debian's prometheus-alertmanager,
0.25 on bookworm). When it is missing the bench installs it as root with
`apt-get update` and `apt-get install -y --no-install-recommends
prometheus-alertmanager`; not as root it prints that command and exits 1. It runs on
127.0.0.1:<free port> with clustering off and a temporary storage directory.

Usage (from the project root, after `make all bin/receiver`):
    /usr/bin/python3 bench/egress.py                 # N = 40,000, 2 rounds each
    /usr/bin/python3 bench/egress.py --quick         # N = 2,000, 1 round each
    /usr/bin/python3 bench/egress.py --n 10000 --rounds 3 --enforce
Environment: CAREHUBD (default bin/carehubd), RECEIVER (default bin/receiver),
ALERTMANAGER (default /usr/bin/prometheus-alertmanager), BENCH_TMPDIR (default /var/tmp).
Output: the table on stdout, then one JSON summary line (last line of stdout);
progress on stderr. Exit 0 ok, 1 correctness failure, 2 usage, 3 target missed (--enforce).
"""

import argparse
import http.client
import json
import multiprocessing
import os
import select
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import benchlib
from benchlib import Fail, binary, free_port, proc_cpu

AM_DEFAULT = "/usr/bin/prometheus-alertmanager"
APT_CMDS = [["apt-get", "update"],
            ["apt-get", "install", "-y", "--no-install-recommends", "prometheus-alertmanager"]]
MIB = 1024 * 1024
CHANNEL = "bench-assigned"
AGENCY = "police"
CLIENTS = 4
READY_TIMEOUT_S = 20.0     # a server or the clients getting ready
STOP_TIMEOUT_S = 10.0      # SIGTERM to exit
SETTLE_S = 1.0             # after the N-th notice: late duplicates
POLL_S = 0.02              # receiver /stats polling while waiting for the notices


say = benchlib.sayer("egress")


# ---------------------------------------------------------------------------
# Small helpers

def proc_mem(pid):
    """VmHWM, VmRSS, RssAnon in bytes (0 when unreadable)."""
    out = {"VmHWM": 0, "VmRSS": 0, "RssAnon": 0}
    try:
        benchlib.proc_status_bytes(pid, tuple(out), out)
    except (OSError, ValueError, IndexError):
        pass
    return out


def http_get(port, path, timeout=2.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def log_tail(path, n=15):
    return benchlib.log_tail(path, n)


def stop_process(proc, name, timeout=STOP_TIMEOUT_S):
    """SIGTERM, wait; SIGKILL after timeout. Returns the exit status (None if killed)."""
    if proc is None:
        return None
    return benchlib.terminate(proc, timeout,
                              lambda: say(f"{name} did not exit within {timeout:.0f} s of SIGTERM: killed"))


class Sampler:
    """Largest RssAnon and VmRSS of a process, sampled at 10 Hz."""

    def __init__(self, pid):
        self.pid = pid
        self.max_anon = self.max_rss = 0
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop_ev.is_set():
            m = proc_mem(self.pid)
            self.max_anon = max(self.max_anon, m["RssAnon"])
            self.max_rss = max(self.max_rss, m["VmRSS"])
            self.stop_ev.wait(0.1)

    def stop(self):
        self.stop_ev.set()
        self.thread.join(2)


# ---------------------------------------------------------------------------
# The receiver (bench/receiver.c)

class Receiver:
    def __init__(self, exe, tmp, n, key=None, every=100, life_s=3600):
        self.ids_path = tmp / "receiver.ids"
        self.sample_path = tmp / "receiver.samples"
        self.err_path = tmp / "receiver.err"
        cmd = [str(exe), "-n", str(n), "-i", str(self.ids_path), "-s", str(self.sample_path),
               "-e", str(every), "-t", str(int(life_s))]
        if key:
            cmd += ["-k", key]
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=err)
        r, _, _ = select.select([self.proc.stdout], [], [], 5.0)
        line = self.proc.stdout.readline() if r else b""
        try:
            self.port = int(line.strip())
        except ValueError:
            self.close()
            raise Fail(f"the receiver did not print its port within 5 s\n{log_tail(self.err_path)}")

    def stats(self):
        status, body = http_get(self.port, "/stats")
        if status != 200:
            raise Fail(f"receiver /stats answered {status}")
        return json.loads(body)

    def close(self):
        rc = stop_process(self.proc, "the receiver", 5)
        if self.proc.stdout:
            self.proc.stdout.close()
        return rc

    def ids(self):
        """[(webhook-id, body key)] per POST, in arrival order."""
        out = []
        with open(self.ids_path, "rb") as f:
            for line in f:
                wid, _, key = line.rstrip(b"\n").decode("utf-8", "replace").partition("\t")
                out.append((wid, key))
        return out

    def samples(self):
        """[(n, webhook-id, timestamp, signature, body bytes)]."""
        out = []
        with open(self.sample_path, "rb") as f:
            data = f.read()
        i = 0
        while i < len(data):
            eol = data.index(b"\n", i)
            parts = data[i:eol].decode("utf-8", "replace").split("\t")
            if len(parts) != 6 or parts[0] != "S":
                raise Fail(f"sample file: unreadable record at byte {i}")
            blen = int(parts[5])
            body = data[eol + 1:eol + 1 + blen]
            out.append((int(parts[1]), parts[2], parts[3], parts[4], body))
            i = eol + 1 + blen + 1
        return out


def wait_notices(receiver, n, server, server_name, timeout_s):
    """Poll the receiver until it has n POSTs (or timeout / the server died);
    then wait SETTLE_S for late duplicates. Returns (stats at the n-th, stats after)."""
    limit = time.monotonic() + timeout_s
    st = receiver.stats()
    while st["posts"] < n:
        if server.poll() is not None:
            raise Fail(f"{server_name} exited (status {server.returncode}) with {st['posts']} of "
                       f"{n} notices delivered")
        if time.monotonic() > limit:
            return st, st
        time.sleep(POLL_S)
        st = receiver.stats()
    time.sleep(SETTLE_S)
    return st, receiver.stats()


# ---------------------------------------------------------------------------
# Clients (forked processes; the parent never touches ZeroMQ)

def carehub_client(idx, endpoint, n, inflight, nonce, conn, go, wait_s):
    import zmq
    res = {"client": idx, "acked": 0, "nacks": 0, "first_nacks": [], "dups": 0, "cases": [],
           "first": None, "last": None, "error": None, "unanswered": 0}
    readied = False
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        agent = f"bench-school-{idx}"
        benchlib.hello(sock, {"v": 1, "op": "hello", "id": f"hello-{idx}", "agent": agent,
                              "software": "carehub-bench-egress/1"},
                       f"{agent}: no welcome within 5 s", f"{agent}: hello refused: ", RuntimeError)
        at = int(time.time() * 1000)
        msgs = []
        for i in range(n):
            body = {
                "reporter": {"organisation": "carehub bench"},
                "harm": "neglect",
                "description": "Egress benchmark: a mandatory report about a new child.",
                "child": {"id": f"eg-{nonce}-{idx}-{i}", "name": "Bench Child"},
            }
            msgs.append(benchlib.pack({"v": 1, "op": "event", "id": f"{nonce}-{idx}-{i}",
                                       "type": "mandatory_report", "at": at, "body": body}))
        conn.send("ready")
        readied = True
        if not go.wait(60):
            raise RuntimeError("no go within 60 s")
        sent = done = in_flight = 0
        cases = res["cases"]

        def on_ack(m):
            nonlocal done, in_flight
            done += 1
            in_flight -= 1
            if m.get("duplicate"):
                res["dups"] += 1
            else:
                res["acked"] += 1
                cases.append(m.get("case"))

        def on_nack(m):
            nonlocal done, in_flight
            done += 1
            in_flight -= 1
            res["nacks"] += 1
            if len(res["first_nacks"]) < 3:
                res["first_nacks"].append({k: m.get(k) for k in ("id", "code", "error")})
        res["first"] = time.time()
        limit = time.monotonic() + wait_s
        while done < n:
            while in_flight < inflight and sent < n:
                sock.send(msgs[sent])
                sent += 1
                in_flight += 1
            if not sock.poll(100):
                if time.monotonic() > limit:
                    res["unanswered"] = n - done
                    break
                continue
            benchlib.drain_replies(sock, on_ack, on_nack)
        res["last"] = time.time()
    except Exception as e:  # reported to the parent, which fails the round
        res["error"] = f"{type(e).__name__}: {e}"
        if not readied:
            conn.send("ready")  # never leave the parent waiting
    finally:
        sock.close()
        ctx.term()
    conn.send(res)


def am_alert_id(nonce, idx, i):
    return f"am-{nonce}-{idx}-{i}"


def am_client(idx, port, n, batch, nonce, conn, go, wait_s):
    res = {"client": idx, "acked": 0, "posts": 0, "errors": 0, "first_errors": [], "first": None,
           "last": None, "error": None}
    readied = False
    hc = http.client.HTTPConnection("127.0.0.1", port, timeout=wait_s)
    try:
        bodies = []
        for b in range(0, n, batch):
            alerts = [{"labels": {"alertname": "CarehubBenchNewCase", "bench_id": am_alert_id(nonce, idx, i),
                                  "agency": AGENCY, "severity": "high"},
                       "annotations": {"summary": "Egress benchmark: a new case about a new child."}}
                      for i in range(b, min(n, b + batch))]
            bodies.append((len(alerts), json.dumps(alerts).encode()))
        hc.connect()
        conn.send("ready")
        readied = True
        if not go.wait(60):
            raise RuntimeError("no go within 60 s")
        headers = {"Content-Type": "application/json"}
        res["first"] = time.time()
        for count, body in bodies:
            hc.request("POST", "/api/v2/alerts", body, headers)
            r = hc.getresponse()
            text = r.read()
            res["posts"] += 1
            if r.status == 200:
                res["acked"] += count
            else:
                res["errors"] += 1
                if len(res["first_errors"]) < 3:
                    res["first_errors"].append(f"HTTP {r.status}: {text[:200]!r}")
        res["last"] = time.time()
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
        if not readied:
            conn.send("ready")  # never leave the parent waiting
    finally:
        hc.close()
    conn.send(res)


class Clients:
    """CLIENTS forked processes running fn(idx, *args, share, ..., conn, go, wait_s)."""

    def __init__(self, fn, n, make_args, wait_s):
        ctx = multiprocessing.get_context("fork")
        self.go = ctx.Event()
        self.procs, self.conns = [], []
        self.wait_s = wait_s
        base, extra = divmod(n, CLIENTS)
        self.shares = [base + (1 if i < extra else 0) for i in range(CLIENTS)]
        for i in range(CLIENTS):
            parent_end, child_end = ctx.Pipe()
            p = ctx.Process(target=fn, args=(i,) + make_args(i, self.shares[i]) + (child_end, self.go, wait_s),
                            daemon=True)
            p.start()
            child_end.close()
            self.procs.append(p)
            self.conns.append(parent_end)

    def wait_ready(self):
        limit = time.monotonic() + READY_TIMEOUT_S + 30
        for c in self.conns:
            left = limit - time.monotonic()
            if left <= 0 or not c.poll(left):
                raise Fail("the clients did not get ready in time")
            c.recv()

    def start(self):
        self.go.set()

    def results(self):
        limit = time.monotonic() + self.wait_s + 30
        out = []
        for c in self.conns:
            left = limit - time.monotonic()
            if left <= 0 or not c.poll(left):
                raise Fail("a client did not report in time")
            out.append(c.recv())
        for r in out:
            if r.get("error"):
                raise Fail(f"client {r['client']}: {r['error']}")
        return out

    def close(self):
        for p in self.procs:
            p.join(2)
            if p.is_alive():
                p.kill()
                p.join(2)
        for c in self.conns:
            c.close()


# ---------------------------------------------------------------------------
# Signatures (Standard Webhooks, as docs/webhooks.md)

def verify(secret, wid, ts, sig, body):
    """benchlib.verify; the receiver writes '-' for a header that was missing."""
    if "-" in (wid, ts, sig):
        return False
    return benchlib.verify(benchlib.secret_key(secret), wid, ts, sig, body)


# ---------------------------------------------------------------------------
# Rounds

def am_config(url):
    return f"""# written by bench/egress.py: every alert its own group, one notification each
global:
  resolve_timeout: 1h
route:
  receiver: bench
  group_by: ['...']
  group_wait: 0s
  group_interval: 1h
  repeat_interval: 24h
receivers:
  - name: bench
    webhook_configs:
      - url: "{url}"
        send_resolved: false
        max_alerts: 0
"""


def carehub_config(data_dir, url, secret):
    agents = "\n".join(f"  - id: bench-school-{i}\n    role: school" for i in range(CLIENTS))
    return benchlib.broker_yaml("egress.py", data_dir) + f"""privacy: off
agents:
{agents}
  - id: bench-police-desk
    role: agency
    agency: {AGENCY}
agencies:
  - id: {AGENCY}
    name: police
    channels: [{CHANNEL}]
  - id: civil_affairs
    name: civil affairs
channels:
  - id: {CHANNEL}
    kind: webhook
    url: "{url}"
    secret: "{secret}"
    timeout: 5s
workflows:
  - name: bench-new-case
    match:
      type: mandatory_report
    assign:
      - agency: {AGENCY}
        ack_within: 1d
"""


def finish_round(name, k, n, t0, st_n, st_after, pid, cpu0, sampler, intake_end):
    mem = proc_mem(pid)
    sampler.stop()
    end_ms = st_n["target_ms"]
    secs = (end_ms - t0 * 1000.0) / 1000.0 if end_ms else float("nan")
    return {
        "server": name, "round": k, "n": n,
        "seconds": secs,
        "notifications_per_s": n / secs if end_ms and secs > 0 else 0.0,
        "intake_s": intake_end - t0,
        "intake_per_s": n / (intake_end - t0) if intake_end > t0 else 0.0,
        "first_notice_ms": st_n["first_ms"] - t0 * 1000.0 if st_n["first_ms"] else None,
        "vmhwm": mem["VmHWM"], "rss_end": mem["VmRSS"],
        "max_anon": max(sampler.max_anon, mem["RssAnon"]),
        "cpu_s": proc_cpu(pid) - cpu0,
        "posts": st_after["posts"], "posts_at_n": st_n["posts"],
        "connections": st_after["accepted"], "max_open": st_after["max_open"],
        "bad_http": st_after["bad"] + st_after["other"],
        "pid": pid,
    }


def final_stats(res, receiver):
    """The receiver's counts once the server has stopped: every POST it ever made."""
    st = receiver.stats()
    res.update(posts=st["posts"], connections=st["accepted"], max_open=st["max_open"],
               bad_http=st["bad"] + st["other"])
    return st


def end_round(args, tmp, clients, server, server_name, receiver, kept):
    """The end of a round, whatever happened: the clients, the server and the receiver
    stopped, the temporary directory removed (kept with --keep: 'kept <tmp><kept>')."""
    if clients is not None:
        clients.close()
    stop_process(server, server_name)
    if receiver is not None:
        receiver.close()
    benchlib.drop_tmp(tmp, args.keep, say, kept)


def round_alertmanager(args, k, tools):
    n = args.n
    tmp = benchlib.bench_tmp("carehub-egress-am.")
    receiver = am = clients = None
    log_path = tmp / "alertmanager.log"
    try:
        receiver = Receiver(tools["receiver"], tmp, n, key="bench_id", every=args.sample_every)
        conf = tmp / "alertmanager.yml"
        conf.write_text(am_config(f"http://127.0.0.1:{receiver.port}/alertmanager"))
        port = free_port()
        with open(log_path, "wb") as log:
            am = subprocess.Popen([str(tools["alertmanager"]), f"--config.file={conf}",
                                   f"--storage.path={tmp / 'am-data'}",
                                   f"--web.listen-address=127.0.0.1:{port}",
                                   "--cluster.listen-address=", "--log.level=warn"],
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                  cwd=str(tmp))
        limit = time.monotonic() + READY_TIMEOUT_S
        while True:
            if am.poll() is not None:
                raise Fail(f"Alertmanager exited with status {am.returncode} before it was ready\n"
                           + log_tail(log_path))
            try:
                if http_get(port, "/-/ready", 1.0)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > limit:
                raise Fail(f"Alertmanager not ready after {READY_TIMEOUT_S:.0f} s\n" + log_tail(log_path))
            time.sleep(0.05)
        say(f"round {k}: Alertmanager ready on 127.0.0.1:{port} (pid {am.pid}); receiver on "
            f"127.0.0.1:{receiver.port}")

        nonce = f"{int(time.time())}-{os.getpid()}-{k}"
        clients = Clients(am_client, n, lambda i, share: (port, share, args.am_batch, nonce), args.wait)
        clients.wait_ready()
        cpu0 = proc_cpu(am.pid)
        sampler = Sampler(am.pid)
        t_go = time.time()
        clients.start()
        results = clients.results()
        t0 = min(r["first"] for r in results if r["first"]) if results else t_go
        intake_end = max(r["last"] for r in results if r["last"])
        errors = sum(r["errors"] for r in results)
        if errors:
            firsts = [e for r in results for e in r["first_errors"]]
            raise Fail(f"Alertmanager refused {errors} POSTs of alerts; first: {firsts[:1]}")
        st_n, st_after = wait_notices(receiver, n, am, "Alertmanager", args.wait)
        res = finish_round("alertmanager", k, n, t0, st_n, st_after, am.pid, cpu0, sampler, intake_end)
        rc = stop_process(am, "Alertmanager")
        res["exit"] = rc
        am = None
        st_after = final_stats(res, receiver)
        receiver.close()

        # ---- correctness: every alert notified, one alert per notification
        problems = []
        expected = {am_alert_id(nonce, i, j) for i, share in enumerate(clients.shares) for j in range(share)}
        seen = {}
        for _, key in receiver.ids():
            seen[key] = seen.get(key, 0) + 1
        missing = expected - set(seen)
        stray = set(seen) - expected
        res["distinct"] = len(set(seen) & expected)
        res["dupes"] = sum(c - 1 for key, c in seen.items() if key in expected)
        res["missing"] = len(missing)
        if missing:
            problems.append(f"{len(missing)} of {n} alerts never notified (e.g. {sorted(missing)[0]}); "
                            f"{st_after['posts']} POSTs arrived")
        if stray:
            problems.append(f"{len(stray)} notifications not about an alert of this round "
                            f"(e.g. {sorted(stray)[0]!r})")
        batched = unreadable = 0
        samples = receiver.samples()
        for _, _, _, _, body in samples:
            try:
                msg = json.loads(body)
                if len(msg["alerts"]) != 1 or msg["alerts"][0]["status"] != "firing":
                    batched += 1
            except (ValueError, KeyError, TypeError, IndexError):
                unreadable += 1
        res["samples"] = len(samples)
        if batched or unreadable:
            problems.append(f"of {len(samples)} sampled notifications, {batched} did not hold exactly one "
                            f"firing alert and {unreadable} were unreadable")
        if rc not in (0, None):
            say(f"round {k}: Alertmanager exited with status {rc} after SIGTERM (not judged)")
        res["problems"] = problems
        return res
    finally:
        end_round(args, tmp, clients, am, "Alertmanager", receiver, "")


def round_carehubd(args, k, tools):
    n = args.n
    tmp = benchlib.bench_tmp("carehub-egress.")
    receiver = broker = clients = None
    log_path = tmp / "carehubd.log"
    try:
        receiver = Receiver(tools["receiver"], tmp, n, every=args.sample_every)
        secret = benchlib.new_secret()
        conf = tmp / "carehub.yaml"
        conf.write_text(carehub_config(tmp / "data", f"http://127.0.0.1:{receiver.port}/assigned", secret))
        ready = tmp / "carehubd.ready"
        broker = benchlib.spawn_carehubd(tools["carehubd"], conf, tmp, log_path, ready, preexec_fn=None)
        endpoint = benchlib.wait_ready(broker, ready, log_path, READY_TIMEOUT_S, tail=15)
        say(f"round {k}: carehubd ready on {endpoint} (pid {broker.pid}); receiver on 127.0.0.1:{receiver.port}")

        nonce = f"{int(time.time())}-{os.getpid()}-{k}"
        clients = Clients(carehub_client, n, lambda i, share: (endpoint, share, args.inflight, nonce), args.wait)
        clients.wait_ready()
        cpu0 = proc_cpu(broker.pid)
        sampler = Sampler(broker.pid)
        clients.start()
        results = clients.results()
        t0 = min(r["first"] for r in results)
        intake_end = max(r["last"] for r in results)
        problems = []
        nacks = sum(r["nacks"] for r in results)
        dups = sum(r["dups"] for r in results)
        unanswered = sum(r["unanswered"] for r in results)
        if nacks or dups or unanswered:
            firsts = [x for r in results for x in r["first_nacks"]]
            raise Fail(f"carehubd: {nacks} nacks, {dups} acks with duplicate:true, {unanswered} events "
                       f"unanswered; first nack: {firsts[:1]}")
        cases = set(c for r in results for c in r["cases"])
        if len(cases) != n:
            problems.append(f"{n} events about new children made {len(cases)} cases, not {n}")
        st_n, st_after = wait_notices(receiver, n, broker, "carehubd", args.wait)
        res = finish_round("carehubd", k, n, t0, st_n, st_after, broker.pid, cpu0, sampler, intake_end)
        rc = stop_process(broker, "carehubd")
        broker = None
        res["exit"] = rc
        if rc != 0:
            problems.append(f"carehubd exited with status {rc} after SIGTERM\n" + log_tail(log_path))
        st_after = final_stats(res, receiver)
        receiver.close()

        # ---- correctness: every notice once per webhook-id, signatures, content
        seen = {}
        no_id = 0
        for wid, _ in receiver.ids():
            if wid == "-":
                no_id += 1
            else:
                seen[wid] = seen.get(wid, 0) + 1
        res["distinct"] = len(seen)
        res["dupes"] = sum(c - 1 for c in seen.values())
        res["missing"] = max(0, n - len(seen))
        if len(seen) < n:
            problems.append(f"{n - len(seen)} of {n} notices missing: {len(seen)} distinct webhook-ids in "
                            f"{st_after['posts']} POSTs (waited {args.wait:.0f} s)")
        if len(seen) > n:
            problems.append(f"{len(seen) - n} more distinct webhook-ids than cases")
        if no_id:
            problems.append(f"{no_id} POSTs without a webhook-id")
        samples = receiver.samples()
        bad_sig = wrong = 0
        now = time.time()
        for _, wid, ts, sig, body in samples:
            if not verify(secret, wid, ts, sig, body) or abs(now - int(ts if ts.isdigit() else 0)) > 300:
                bad_sig += 1
                continue
            try:
                msg = json.loads(body)
                d = msg["data"]
                if msg["type"] != "case.assigned" or d["case"] not in cases or d["agency"] != AGENCY:
                    wrong += 1
            except (ValueError, KeyError, TypeError):
                wrong += 1
        res["samples"] = len(samples)
        res["bad_sig"] = bad_sig
        if bad_sig:
            problems.append(f"{bad_sig} of {len(samples)} sampled webhooks do not verify (signature or timestamp)")
        if wrong:
            problems.append(f"{wrong} of {len(samples)} sampled webhooks are not a case.assigned about an acked case")
        if not samples:
            problems.append("no webhook was sampled")
        res["problems"] = problems
        return res
    finally:
        end_round(args, tmp, clients, broker, "carehubd", receiver, " (configs, data, logs, receiver files)")


# ---------------------------------------------------------------------------
# Setup

def ensure_alertmanager(path):
    if os.access(path, os.X_OK):
        return
    cmd = " && ".join(" ".join(c) for c in APT_CMDS)
    if str(path) != AM_DEFAULT:
        raise Fail(f"ALERTMANAGER={path} is not an executable file")
    if os.geteuid() != 0:
        say(f"{path} is missing; install it as root with:\n    {cmd}")
        raise Fail("Alertmanager is not installed")
    say(f"{path} is missing; installing: {cmd}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for c in APT_CMDS:
        try:
            r = subprocess.run(c, stdin=subprocess.DEVNULL, stdout=sys.stderr, stderr=sys.stderr, env=env,
                               timeout=900)
        except subprocess.TimeoutExpired:
            raise Fail(f"`{' '.join(c)}` took more than 15 minutes")
        if r.returncode != 0:
            raise Fail(f"`{' '.join(c)}` failed with status {r.returncode}")
    if not os.access(path, os.X_OK):
        raise Fail(f"{path} still missing after the install")


def am_version(path):
    try:
        r = subprocess.run([str(path), "--version"], stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=10, text=True)
        for line in (r.stdout + r.stderr).splitlines():
            if "version" in line:
                return line.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "unknown version"


# ---------------------------------------------------------------------------
# Report

def mib(b):
    return b / MIB


def report(args, rounds, amv):
    am = [r for r in rounds if r["server"] == "alertmanager"]
    ch = [r for r in rounds if r["server"] == "carehubd"]
    print()
    print(f"carehub egress bench: intake -> webhook, N = {args.n:,} new items from {CLIENTS} clients, "
          f"{args.rounds} round(s) each, alternating")
    print(f"  alertmanager: {amv}; {args.am_batch} alert(s) per POST, one POST in flight per client; "
          "one notification per alert")
    print(f"  carehubd: {args.inflight} mandatory_report events in flight per agent, each a new case, "
          "one case.assigned webhook each")
    print("  timed from the first send to the receiver's N-th POST (CLOCK_REALTIME); RSS from /proc/PID/status")
    print()
    hdr = (f"{'round':>5}  {'server':<12} {'notif/s':>9} {'seconds':>8} {'intake/s':>9} {'1st notice':>10} "
           f"{'VmHWM':>9} {'max anon':>9} {'CPU s':>7} {'POSTs':>7} {'dupes':>5} {'conns':>6}")
    print(hdr)
    print("-" * len(hdr))
    for r in rounds:
        first = f"{r['first_notice_ms']:.0f} ms" if r["first_notice_ms"] is not None else "-"
        print(f"{r['round']:>5}  {r['server']:<12} {r['notifications_per_s']:9.0f} {r['seconds']:8.2f} "
              f"{r['intake_per_s']:9.0f} {first:>10} {mib(r['vmhwm']):7.1f}Mi {mib(r['max_anon']):7.1f}Mi "
              f"{r['cpu_s']:7.2f} {r['posts']:7d} {r.get('dupes', 0):5d} {r['connections']:6d}")
    for r in rounds:
        line = (f"  round {r['round']} {r['server']}: {r.get('distinct', 0)} of {r['n']} notices arrived "
                f"({r.get('missing', 0)} missing, {r.get('dupes', 0)} duplicates, {r['posts']} POSTs on "
                f"{r['connections']} connections, at most {r['max_open']} open)")
        if r["server"] == "carehubd":
            line += (f"; {r.get('samples', 0) - r.get('bad_sig', 0)} of {r.get('samples', 0)} sampled "
                     "signatures verify")
        else:
            line += f"; {r.get('samples', 0)} sampled notifications checked to hold one alert"
        print(line)
    print()
    am_rate = statistics.median(r["notifications_per_s"] for r in am) if am else 0.0
    ch_rate = statistics.median(r["notifications_per_s"] for r in ch) if ch else 0.0
    am_rss = max((r["vmhwm"] for r in am), default=0)
    ch_rss = max((r["vmhwm"] for r in ch), default=0)
    ratio = ch_rate / am_rate if am_rate > 0 and ch else float("nan")
    rss_ratio = ch_rss / am_rss if am_rss > 0 and ch else float("nan")
    print(f"notifications/s (median of rounds): alertmanager {am_rate:,.0f}   carehubd {ch_rate:,.0f}   "
          f"ratio carehubd/alertmanager {ratio:.2f}")
    print(f"peak RSS (largest VmHWM of the rounds): alertmanager {mib(am_rss):.1f} MiB   carehubd "
          f"{mib(ch_rss):.1f} MiB   ratio carehubd/alertmanager {rss_ratio:.2f}")
    am_cpu = statistics.median(r["cpu_s"] for r in am) * 1000 / args.n * 1000 if am else 0.0
    ch_cpu = statistics.median(r["cpu_s"] for r in ch) * 1000 / args.n * 1000 if ch else 0.0
    print(f"server CPU per 1,000 notices (median): alertmanager {am_cpu:.0f} ms   carehubd {ch_cpu:.0f} ms")
    met_rate = ratio >= 1.0
    met_rss = rss_ratio <= 1.0 / 3.0
    if am and ch:
        print(f"target ratio >= 1.0: {'met' if met_rate else 'NOT met'} ({ratio:.2f})")
        print(f"target carehubd peak RSS <= 1/3 of Alertmanager's: {'met' if met_rss else 'NOT met'} "
              f"({mib(ch_rss):.1f} vs {mib(am_rss) / 3:.1f} MiB)")
    else:
        print("targets: not judged (one server only)")
    return {"alertmanager": am_rate, "carehubd": ch_rate, "ratio": ratio, "am_rss": am_rss, "ch_rss": ch_rss,
            "rss_ratio": rss_ratio, "met_rate": met_rate, "met_rss": met_rss}


def main():
    p = argparse.ArgumentParser(description="Intake -> signed webhook: carehubd against Alertmanager "
                                            "(docs/bench.md).")
    p.add_argument("--n", type=int, default=None, help="items (alerts, events) per round (default 40000)")
    p.add_argument("--rounds", type=int, default=None, help="rounds of each server, alternating (default 2)")
    p.add_argument("--quick", action="store_true", help="smoke test: N = 2000, 1 round each")
    p.add_argument("--inflight", type=int, default=64, help="carehubd events in flight per client (default 64)")
    p.add_argument("--am-batch", type=int, default=64, help="alerts per POST to Alertmanager (default 64)")
    p.add_argument("--wait", type=float, default=None,
                   help="seconds to wait for the acks and for the notices (default 60 + N/100)")
    p.add_argument("--only", choices=["alertmanager", "carehubd"], help="run one server only (no ratio)")
    p.add_argument("--enforce", action="store_true", help="exit 3 when a target is not met")
    p.add_argument("--keep", action="store_true", help="keep the temporary directories")
    args = p.parse_args()
    if args.n is None:
        args.n = 2000 if args.quick else 40000
    if args.rounds is None:
        args.rounds = 1 if args.quick else 2
    if args.n < CLIENTS or args.rounds < 1 or args.inflight < 1 or args.am_batch < 1:
        p.error(f"--n must be >= {CLIENTS}; --rounds, --inflight, --am-batch >= 1")
    if args.wait is None:
        args.wait = 60.0 + args.n / 100.0
    args.sample_every = max(1, args.n // 200)
    benchlib.exit_on(signal.SIGTERM)

    tools = {"carehubd": binary("CAREHUBD", "bin/carehubd"), "receiver": binary("RECEIVER", "bin/receiver"),
             "alertmanager": Path(os.environ.get("ALERTMANAGER", AM_DEFAULT))}
    rounds = []
    try:
        for name in ("carehubd", "receiver"):
            if not os.access(tools[name], os.X_OK):
                raise Fail(f"{tools[name]} is missing: build it first (make all bin/receiver)")
        amv = "not run"
        if args.only != "carehubd":
            ensure_alertmanager(tools["alertmanager"])
            amv = am_version(tools["alertmanager"])
            if "0.25" not in amv:
                say(f"note: the comparison is specified against Alertmanager 0.25; this is {amv}")
        order = [s for s in ("alertmanager", "carehubd") if args.only in (None, s)]
        for k in range(1, args.rounds + 1):
            for name in order:
                say(f"round {k}: {name}, N = {args.n}")
                fn = round_alertmanager if name == "alertmanager" else round_carehubd
                r = fn(args, k, tools)
                say(f"round {k}: {name}: {r['notifications_per_s']:.0f} notifications/s, "
                    f"VmHWM {mib(r['vmhwm']):.1f} MiB")
                rounds.append(r)
                if r["problems"]:
                    break
            if any(r["problems"] for r in rounds):
                break
    except Fail as e:
        say(f"FAIL: {e}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130

    s = report(args, rounds, amv)
    problems = [(r["server"], r["round"], pr) for r in rounds for pr in r["problems"]]
    for server, k, pr in problems:
        print(f"FAIL: round {k}, {server}: {pr}")
    summary = {
        "bench": "egress", "n": args.n, "rounds": args.rounds, "clients": CLIENTS,
        "carehubd_inflight": args.inflight, "am_batch": args.am_batch, "alertmanager_version": amv,
        "alertmanager": {"notifications_per_s": [round(r["notifications_per_s"], 1) for r in rounds
                                                 if r["server"] == "alertmanager"],
                         "median": round(s["alertmanager"], 1), "peak_rss_bytes": s["am_rss"]},
        "carehubd": {"notifications_per_s": [round(r["notifications_per_s"], 1) for r in rounds
                                             if r["server"] == "carehubd"],
                     "median": round(s["carehubd"], 1), "peak_rss_bytes": s["ch_rss"]},
        "ratio": round(s["ratio"], 3) if s["ratio"] == s["ratio"] else None,
        "rss_ratio": round(s["rss_ratio"], 3) if s["rss_ratio"] == s["rss_ratio"] else None,
        "targets": ({"ratio_ge_1": s["met_rate"], "rss_le_third": s["met_rss"]} if args.only is None
                    else None),
        "correct": not problems,
    }
    print(json.dumps(summary, separators=(",", ":")))
    if problems:
        return 1
    if args.enforce and args.only is None and not (s["met_rate"] and s["met_rss"]):
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
