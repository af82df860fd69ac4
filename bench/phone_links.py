#!/usr/bin/python3
"""bench/phone_links.py — 1,000 phone links followed at once, and what it does to intake
(docs/bench.md, "Phone links"; issue 15).

Item: "1,000 concurrent link requests do not hold intake for more than one turn (a
benchmark figure, not a timed test)."

What it does (real clock, release build, data under $BENCH_TMPDIR):

  1. starts bin/carehubd: agency police with an SMS channel (`can_acknowledge: true`, one
     recipient) whose gateway is a receiver in this script, broker.http on 127.0.0.1:0,
     metrics on; one workflow mandatory_report -> police, ack_within 1h;
  2. N (default 1,000) mandatory reports from one reporter: N open assignments, N texts,
     each with its link <url>/a/<token>;
  3. a probe reporter sends one event at a time (closed loop, one in flight) for the whole
     run and records each event -> ack latency: the intake as a school would see it;
  4. N sockets connect to the listener; after BASELINE_S more of probing, each sends
     `POST /a/<token>` at once (all requests written before any answer is read); every
     answer must be 200 "已确认" (acknowledged);
  5. figures: the probe's latencies before and during the links (p50/p99/max), the turns
     (commits) the links took and the longest of them (carehub_commit_seconds: from the
     transaction's begin to its commit, the ops included; the histogram's bucket bound).
     The bound: an event that arrives while a turn is being written waits for the rest
     of that turn and for its own (the loop reads the next batch while the writer
     writes): at most two turns, whatever else is in them. The links are ops in the same
     turns as the intake, so with them an event still waits for at most two turns, only
     longer ones; had the links held intake for a turn of their own, it would wait three.
     Target: the probe's worst latency during the links <= 2 x the longest commit + the
     probe's p99 before. Printed as met / NOT met (exit 1 for it only with --enforce).
  6. checks: every link answered 200 "已确认" (an answer comes after the turn's commit:
     N assignments acknowledged on disk), the broker exits 0 on SIGTERM.

Usage (from the project root, after `make all`):
    /usr/bin/python3 bench/phone_links.py            # 1,000 links
    /usr/bin/python3 bench/phone_links.py --n 200
Environment: CAREHUBD (default bin/carehubd), BENCH_TMPDIR (default /var/tmp).
"""

import argparse
import http.server
import json
import os
import re
import resource
import socket
import sys
import threading
import time

import benchlib
from benchlib import Fail, pack

say = benchlib.sayer("phone_links")
PHONE = "+8613800000099"
LINK = re.compile(r"http://127\.0\.0\.1:(\d+)(/a/[A-Za-z0-9_-]{43})")
BASELINE_S = 2.0


class Gateway(http.server.ThreadingHTTPServer):
    """The SMS gateway: keeps the link of every case.assigned text."""
    daemon_threads = True

    def __init__(self):
        self.links = {}
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), GatewayHandler)


class GatewayHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        try:
            d = json.loads(body)["data"]
        except (ValueError, KeyError):
            return
        m = LINK.search(d.get("text", ""))
        if m:
            with self.server.lock:
                self.server.links[d.get("assignment")] = (int(m.group(1)), m.group(2))


def config_text(data_dir, gateway_port, secret):
    return benchlib.broker_yaml("phone_links.py", data_dir, extra=[
        "metrics: 127.0.0.1:0", "http: {listen: 127.0.0.1:0}"]) + f"""privacy: off
agents:
  - {{id: reporter-bench, role: reporter}}
  - {{id: probe-bench, role: reporter}}
channels:
  - id: duty-sms
    kind: sms
    url: http://127.0.0.1:{gateway_port}/sms
    secret: {secret}
    to: ["{PHONE}"]
    can_acknowledge: true
    concurrency: 64
agencies:
  - {{id: police, name: 滨海新区公安局, channels: [duty-sms]}}
  - {{id: civil_affairs, name: civil affairs}}
workflows:
  - name: bench-links
    match: {{type: mandatory_report}}
    assign:
      - agency: police
        ack_within: 1h
"""


def report(sock, eid, child):
    body = {"reporter": {"organisation": "carehub bench"}, "harm": "neglect",
            "description": "Phone link benchmark.", "child": {"id": child, "name": "bench child"}}
    sock.send(pack({"v": 1, "op": "event", "id": eid, "type": "mandatory_report",
                    "at": int(time.time() * 1000), "body": body}))


def hello(sock, agent):
    benchlib.hello(sock, {"v": 1, "op": "hello", "id": "h-" + agent, "agent": agent,
                          "software": "carehub-bench-phone/1"},
                   f"no welcome for {agent}", f"hello of {agent} refused: ")


def intake(endpoint, n, nonce):
    sock = benchlib.dealer(endpoint)
    try:
        hello(sock, "reporter-bench")
        cases, nacks, sent, inflight = {}, [], 0, 0
        t0 = time.monotonic()
        while len(cases) < n:
            if time.monotonic() - t0 > 120:
                raise Fail(f"intake: {n - len(cases)} events unanswered after 120 s")
            while sent < n and inflight < 256:
                report(sock, f"{nonce}-{sent}", f"link-{nonce}-{sent}")
                sent += 1
                inflight += 1
            if sock.poll(200):
                inflight -= benchlib.take_replies(sock, cases, nacks)[0]
                if nacks:
                    raise Fail(f"intake: event refused: {nacks[0]}")
        return cases
    finally:
        sock.close()


class Probe(threading.Thread):
    """One event at a time; (send time, latency s) of each."""

    def __init__(self, endpoint, nonce):
        super().__init__(daemon=True)
        self.endpoint, self.nonce = endpoint, nonce
        self.samples, self.stop_flag, self.error = [], threading.Event(), None

    def run(self):
        import msgpack
        sock = benchlib.dealer(self.endpoint)
        try:
            hello(sock, "probe-bench")
            k = 0
            while not self.stop_flag.is_set():
                t0 = time.monotonic()
                report(sock, f"p-{self.nonce}-{k}", f"probe-{self.nonce}-{k}")
                while True:
                    if not sock.poll(10000):
                        raise Fail("probe: no ack within 10 s")
                    m = msgpack.unpackb(sock.recv(), raw=False)
                    if m.get("op") == "ping":
                        sock.send(pack({"v": 1, "op": "pong", "id": m.get("id")}))
                        continue
                    if m.get("id") == f"p-{self.nonce}-{k}":
                        if m.get("op") != "ack":
                            raise Fail(f"probe: event refused: {m}")
                        break
                self.samples.append((t0, time.monotonic() - t0))
                k += 1
                time.sleep(0.002)
        except Exception as e:  # noqa: BLE001
            self.error = e
        finally:
            sock.close()


def connect_all(links):
    """A connection to the listener for every link: [(socket, path)]."""
    return [(socket.create_connection(("127.0.0.1", port), timeout=60), path) for port, path in links]


def post_all(socks):
    """POST every link at once: write all the requests, then read all the answers.
    [(status, body)], and the times of the first write and the last answer."""
    t0 = time.monotonic()
    for s, path in socks:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
                  f"Connection: close\r\n\r\n".encode())
    out = []
    for s, _ in socks:
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.") else 0
        out.append((status, body.decode(errors="replace")))
    return out, t0, time.monotonic()


def commit_hist(m):
    return {k: v for k, v in m.items() if k.startswith("carehub_commit_seconds_bucket")}


def longest_commit(m0, m1):
    """The smallest bucket bound holding every commit between two scrapes (seconds)."""
    h0, h1 = commit_hist(m0), commit_hist(m1)
    total = m1.get("carehub_commit_seconds_count", 0) - m0.get("carehub_commit_seconds_count", 0)
    bounds = []
    for k, v in h1.items():
        le = re.search(r'le="([^"]+)"', k).group(1)
        bounds.append((float("inf") if le == "+Inf" else float(le), v - h0.get(k, 0)))
    for le, n in sorted(bounds):
        if n >= total:
            return le, int(total)
    return float("inf"), int(total)


def run(args):
    # N sockets here and N connections in the broker (which inherits the limit)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 2 * args.n + 256))
    if want < args.n + 64:
        raise Fail(f"the open-file limit ({hard}) is too low for {args.n} links; raise it (ulimit -n)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    carehubd = benchlib.binary("CAREHUBD", "bin/carehubd")
    benchlib.need_binaries((carehubd,), "make all")
    tmp, fstype = benchlib.run_tmp("carehub-phone.", say)
    gw = Gateway()
    threading.Thread(target=gw.serve_forever, daemon=True).start()
    broker = benchlib.Broker(carehubd, tmp)
    try:
        conf = tmp / "carehub.yaml"
        conf.write_text(config_text(tmp / "data", gw.server_address[1], benchlib.new_secret()))
        broker.start(conf)
        say(f"carehubd ready on {broker.endpoint} (pid {broker.pid}); data on {fstype} under {tmp}")
        nonce = f"{int(time.time())}-{os.getpid()}"
        intake(broker.endpoint, args.n, nonce)
        limit = time.monotonic() + 60
        while len(gw.links) < args.n and time.monotonic() < limit:
            time.sleep(0.05)
        if len(gw.links) < args.n:
            raise Fail(f"{len(gw.links)} of {args.n} texts with a link reached the gateway in 60 s")
        say(f"{args.n} open assignments, {len(gw.links)} texts with a link")

        probe = Probe(broker.endpoint, nonce)
        probe.start()
        socks = connect_all(list(gw.links.values()))
        time.sleep(BASELINE_S)
        m0 = broker.metrics()
        answers, t0, t1 = post_all(socks)
        m1 = broker.metrics()
        time.sleep(0.5)
        probe.stop_flag.set()
        probe.join(15)
        if probe.error:
            raise Fail(f"probe: {probe.error}")
        broker.alive("the links")
        ok = sum(1 for st, body in answers if st == 200 and "已确认" in body)
        broker.stop()

        before = sorted(lat for t, lat in probe.samples if t < t0)
        during = sorted(lat for t, lat in probe.samples if t0 <= t <= t1 or t + lat >= t0 and t < t0)
        if not before or not during:
            raise Fail(f"the probe has {len(before)} samples before and {len(during)} during the links")
        longest, turns = longest_commit(m0, m1)
        p50b, p99b = benchlib.pct(before, 0.5), benchlib.pct(before, 0.99)
        bound = 2 * longest + p99b
        res = {
            "links": args.n, "acknowledged": ok, "links_s": round(t1 - t0, 3),
            "links_per_s": round(args.n / (t1 - t0)),
            "probe_before_ms": {"n": len(before), "p50": round(p50b * 1e3, 2),
                                "p99": round(benchlib.pct(before, 0.99) * 1e3, 2),
                                "max": round(before[-1] * 1e3, 2)},
            "probe_during_ms": {"n": len(during), "p50": round(benchlib.pct(during, 0.5) * 1e3, 2),
                                "p99": round(benchlib.pct(during, 0.99) * 1e3, 2),
                                "max": round(during[-1] * 1e3, 2)},
            "turns_during": turns, "longest_commit_ms_le": round(longest * 1e3, 2),
            "bound_ms": round(bound * 1e3, 2), "met": during[-1] <= bound,
        }
        print(json.dumps(res, ensure_ascii=False))
        problems = []
        if ok != args.n:
            problems.append(f"{args.n - ok} links not acknowledged: "
                            f"{[a for a in answers if a[0] != 200][:3]}")
        if problems:
            raise Fail("; ".join(problems))
        met = during[-1] <= bound
        say(f"{args.n} links acknowledged in {t1 - t0:.2f} s ({args.n / (t1 - t0):.0f}/s) over {turns} turns; "
            f"probe before p50 {p50b * 1e3:.1f} ms max {before[-1] * 1e3:.1f} ms, during max "
            f"{during[-1] * 1e3:.1f} ms <= bound {bound * 1e3:.1f} ms (2 x longest commit <= "
            f"{longest * 1e3:.1f} ms + probe p99 before): {'met' if met else 'NOT met'}")
        return 1 if (args.enforce and not met) else 0
    finally:
        broker.kill()
        gw.shutdown()
        benchlib.drop_tmp(tmp, args.keep, say)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="links followed at once (default 1000)")
    ap.add_argument("--enforce", action="store_true", help="exit 1 when the target is not met")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    return benchlib.run_main(run, args, say, "phone_links")


if __name__ == "__main__":
    sys.exit(main())
