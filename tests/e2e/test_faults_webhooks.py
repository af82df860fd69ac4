"""Fault injection for webhook receivers (PROTOCOL §7, broker/hook.h, docs/webhooks.md).

Every fault a receiver can show, with the test that covers it and the broker's
behaviour asserted (tests in test_webhooks.py are named with that prefix):

| fault | test | broker behaviour asserted |
|---|---|---|
| (a) connection refused (nothing listens on the port) | test_refused_connection_retried_until_max_age_then_delivered_once_up | a failed attempt each time (no request reaches anyone), retried on the backoff; a channel still refused fails at max_age after exactly 4 attempts (max_age 4 s: t=0, 1.25, 3.75 s, and the last one, due right at 4 s, made although the clock reaches it 1 ms late): `webhook.failed` to the fallback (attempts 4, a "connect" error), `notice_failed` in the trail, the failure in the broker's log; a receiver that comes up on the port gets the retry and it is delivered (same webhook-id), `notice_delivered` in the trail |
| (b) hang: accepts, never answers | test_webhooks.py::test_no_answer_within_timeout_is_retried, test_webhooks.py::test_never_answering_receiver_fails_at_max_age_and_fallback_is_told, and here test_hanging_receiver_does_not_hold_up_intake | the attempt ends at the channel's `timeout` (1 s, real time) and the broker hangs up; events are acknowledged while the hanging connection is still open (intake not held up); retried once, right at max_age, then failed: `webhook.failed` (attempts 2, error "timeout"), `notice_failed` in the trail |
| (c) slow answer, shorter than the timeout | test_slow_answers_within_and_over_the_timeout | delivered at the first attempt (one request only, even after the clock passes every retry), `notice_delivered` |
| (c) slow answer, longer than the timeout | test_slow_answers_within_and_over_the_timeout | a timeout: retried (same webhook-id, new timestamp and signature) and delivered by the retry; the fallback is not told |
| (d) 3xx with Location: 307 | test_webhooks.py::test_redirect_is_not_followed | not followed, retried |
| (d) 3xx with Location: 301, 302, 308 | test_redirects_301_302_308_never_followed | never followed (the Location target receives nothing, ever), counted as a failed attempt (`result="error"`) and retried: 301/302 then 200 → delivered under the same webhook-id; a channel always answering 308 fails at max_age after 4 attempts (`webhook.failed`, error "HTTP 308") |
| (e) 4xx: 400, 401, 404; 429 with Retry-After (delta-seconds and HTTP date) | test_4xx_family_retried_429_honours_retry_after | retried (same webhook-id, new timestamp/signature), then 200 → delivered; 400/401/404 retried on the ~1 s backoff; 429 `Retry-After: 5` not before 5 s, 429 with an HTTP date ~6-7 s ahead not before that date |
| (e) 503 with Retry-After: 30 | test_webhooks.py::test_retry_after_is_honoured | not retried before 30 s |
| (f) 5xx then 200: 500, 500, 200 | test_webhooks.py::test_retry_500_500_200_same_id_fresh_signatures | delivered, one webhook-id, fresh timestamps and signatures |
| (f) 5xx then 200: 502, 503, and a mixed 500/502/503 run | test_5xx_family_then_200_delivered_under_one_id | each retried on the backoff until the 200, delivered under one webhook-id with a fresh timestamp and signature per attempt; `notice_delivered`, the fallback not told, no attempt after delivery |
| (f) always 500 | test_webhooks.py::test_always_500_fails_at_max_age_and_fallback_is_told | failed at max_age, fallback told |
| (g) 410 Gone | test_webhooks.py::test_410_gone_stops_after_one_attempt, and here test_410_gives_up_at_once_and_tells_the_fallback | failed at once, without moving the clock (max_age is 24 h): one attempt for a first-answer 410, two for 503-then-410; `webhook.failed` to the fallback (attempts, error "HTTP 410"), `notice_failed` in the trail, no later attempt |
| (h) reset mid-body (status line, part of a declared Content-Length body, then RST) | test_reset_mid_body | the status line decides (docs/webhooks.md: the response body is ignored): 200 + reset → delivered in one attempt; 500 + reset → retried, then delivered (same webhook-id); also an RST before any answer → retried, then delivered |
| (i) close without any answer (FIN after reading the request) | test_close_without_answer | retried, then delivered under the same webhook-id; a receiver that always does so fails at max_age after 4 attempts (`webhook.failed`, error "Empty reply from server") |

Every test also checks that the broker stays up and keeps acknowledging events while
the fault is going on (events that notify no channel, so that the attempt counts stay
exact), and the fixtures fail a test whose broker exits badly or whose sanitizer speaks.

How: the broker runs with `--test-clock`, so retries and max_age move only when a test
moves the clock (`test_clock` op); the number of attempts is read from the broker's
Prometheus endpoint (`carehub_webhook_attempts_total`, incremented when an attempt
has ended, in the same loop turn that schedules its retry), which also counts attempts
that never reach a receiver (refused connections). Channel timeouts are 1 s, the only
real-time waits. Faults that http.server cannot make (refuse, hang with a watch on the
connection, close, reset) come from FaultServer, a small raw-socket server here;
status answers come from routing_harness.Receiver, which also plays the fallback
channel (`/ops`) and the redirect targets.
"""

import email.utils
import re
import socket
import struct
import threading
import time

import pytest

import carehub_harness as h
from carehub_harness import uid
from routing_harness import (  # noqa: F401  (fixtures)
    CLOCK_AGENT, Reply, Request, check_webhook, clock, critical_report, make_clock_broker,
    new_secret, receiver, routing_config, send_event, webhook_channel,
)

# Upper bounds on waits for something that must happen (generous: valgrind);
# QUIET is how long a test watches for something that must not happen.
WAIT = max(4.0, h.REPLY_TIMEOUT)
QUIET = 0.3

# Largest backoff before retry n (hook.h: about 1 s doubling, +25 % jitter): moving the
# clock by these makes exactly one more attempt of a message that keeps failing.
B1, B2, B3 = 1250, 2500, 5000

# With max_age 4 s a message that always fails gets exactly 4 attempts: t = 0, 1.25 s,
# 3.75 s (its retry, 3-5 s later, would pass max_age, so it is moved to max_age) and 4 s.
MAX_AGE_4S = "4s"
TO_MAX_AGE_4S = (B1, B2, 250)

WORKFLOWS = [{"name": "danger", "match": {"type": "mandatory_report"},
              "assign": [{"agency": "police", "ack_within": "1d"}]}]


# ----------------------------------------------------------------------------
# A raw-socket receiver for the faults http.server cannot make

class Act:
    """What FaultServer does with one request.

    kind: "answer"  a whole response (status, headers, body), then close;
          "hang"    nothing, until the broker hangs up (noted) or the server stops;
          "close"   close (FIN) without a byte of answer;
          "reset"   RST (SO_LINGER 0) without a byte of answer;
          "partial" the status line and headers with Content-Length: `declared`, then
                    `sent` bytes of body, then RST."""

    def __init__(self, kind, status=200, headers=None, body=b"ok", declared=1000, sent=100):
        self.kind = kind
        self.status = status
        self.headers = dict(headers or {})
        self.body = body
        self.declared = declared
        self.sent = sent

    def __repr__(self):
        return f"Act({self.kind}, {self.status})"


def as_act(x):
    return x if isinstance(x, Act) else Act("answer", status=int(x))


class FaultServer:
    """An HTTP/1.1 listener on 127.0.0.1 (ephemeral port, or `port`) that reads each
    request whole, records it (routing_harness.Request, plus .act and .peer_closed: the
    monotonic time the broker hung up, for "hang") and then acts per path script."""

    def __init__(self, port=0):
        self.requests = []
        self._scripts = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._conns = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, name="fault-server", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
        for c in list(self._conns):
            try:
                c.close()
            except OSError:
                pass

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path, acts):
        with self._cond:
            self._scripts[path] = [as_act(a) for a in acts]

    def at(self, path):
        with self._cond:
            return [r for r in self.requests if r.path == path]

    def wait(self, path, n=1, timeout=WAIT):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [r for r in self.requests if r.path == path]
                if len(got) >= n:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"fault server: {len(got)} request(s) to {path} within "
                                         f"{timeout}s, expected {n}: {self.requests!r}")
                self._cond.wait(left)

    def _next(self, path):
        s = self._scripts.get(path)
        if not s:
            return Act("answer")
        return s.pop(0) if len(s) > 1 else s[0]

    def _accept(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _read_request(self, conn):
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            buf += chunk
        head, rest = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        raw = []
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            raw.append((k.strip(), v.strip()))
        hdrs = {k.lower(): v for k, v in raw}
        n = int(hdrs.get("content-length") or 0)
        while len(rest) < n:
            chunk = conn.recv(65536)
            if not chunk:
                break
            rest += chunk
        req = Request(method, path, hdrs, rest[:n], time.monotonic(), time.time())
        req.raw_headers = raw
        req.peer_closed = None
        return req

    @staticmethod
    def _rst(conn):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    def _serve(self, conn):
        try:
            conn.settimeout(10)
            req = self._read_request(conn)
            if req is None:
                conn.close()
                return
            with self._cond:
                act = self._next(req.path)
                req.act = act
                self.requests.append(req)
                self._cond.notify_all()
            if act.kind == "hang":
                conn.settimeout(0.01)
                while not self._stop.is_set():
                    try:
                        if conn.recv(4096) == b"":
                            break
                    except socket.timeout:
                        continue
                    except OSError:
                        break
                with self._cond:
                    if not self._stop.is_set():
                        req.peer_closed = time.monotonic()
                    self._cond.notify_all()
                conn.close()
            elif act.kind == "close":
                conn.close()
            elif act.kind == "reset":
                self._rst(conn)
            elif act.kind == "partial":
                head = (f"HTTP/1.1 {act.status} X\r\nContent-Type: text/plain\r\n"
                        f"Content-Length: {act.declared}\r\n\r\n").encode()
                conn.sendall(head + b"x" * act.sent)
                time.sleep(0.2)             # let the head go out before the reset
                self._rst(conn)
            else:
                extra = "".join(f"{k}: {v}\r\n" for k, v in act.headers.items())
                conn.sendall((f"HTTP/1.1 {act.status} X\r\n{extra}Content-Length: {len(act.body)}\r\n"
                              f"Connection: close\r\n\r\n").encode() + act.body)
                with self._cond:
                    req.status = act.status
                    self._cond.notify_all()
                conn.close()
        except OSError:
            try:
                conn.close()
            except OSError:
                pass


@pytest.fixture
def faults():
    s = FaultServer().start()
    yield s
    s.stop()


# ----------------------------------------------------------------------------
# A broker whose police assignments notify the channels under test

class Setup:
    """channels: [{"id", "url", ...}] notified (case.assigned) for every mandatory report;
    each falls back to "ops" on `receiver`'s /ops. Metrics on a free port."""

    def __init__(self, make_clock_broker, tmp_path, receiver, connect, channels):
        self.rx = receiver
        self.secret = {}
        chans = []
        for ch in channels:
            ch = dict(ch)
            ch.setdefault("secret", new_secret())
            ch.setdefault("fallback", "ops")
            ch.setdefault("timeout", "1s")
            self.secret[ch["id"]] = ch["secret"]
            chans.append(ch)
        self.ops_secret = new_secret()
        chans.append(webhook_channel("ops", receiver.url("/ops"), self.ops_secret))
        cfg = routing_config(tmp_path / "b", workflows=WORKFLOWS, channels=chans,
                             agencies=[{"id": "police", "channels": [c["id"] for c in channels]}],
                             broker={"metrics": "127.0.0.1:0"})
        self.b = make_clock_broker(config=cfg, name="b", start=False)
        self.b.env = {"CAREHUB_LOG": "debug"}  # queued_id() reads the per-notice debug line
        self.b.start()
        self.clk = connect(self.b, login=CLOCK_AGENT)        # a supervisor: also reads the trail
        self.rep = connect(self.b, login="reporter-01")
        self.mon = connect(self.b, login="monitor-01")      # sends the intake-check events
        self.metrics_url = self.b.metrics_url(timeout=WAIT)
        self.t0 = None

    # -- clock
    def advance(self, ms):
        return clock(self.clk, advance=ms)

    # -- events
    def report(self):
        """A mandatory report: one case.assigned to every channel under test. Returns the
        case id; self.t0 is the (frozen) clock when the notices were made."""
        self.t0 = clock(self.clk)
        _, _, case = send_event(self.rep, "mandatory_report", critical_report(uid("child")))
        return case

    def intake_ok(self, n=1):
        """The broker is up and acknowledges events at once while webhooks are failing.
        online_risk matches no workflow (it goes to civil_affairs, which has no channel),
        so these events add no webhook attempts. Returns the slowest ack (s)."""
        assert self.b.running(), f"the broker died:\n{self.b.log_tail()}"
        slowest = 0.0
        for _ in range(n):
            t = time.monotonic()
            mid = uid("ev")
            h.assert_ack(self.mon.event("online_risk", h.online_risk_body(), id=mid), mid)
            slowest = max(slowest, time.monotonic() - t)
        r = self.clk.ping()
        assert r.get("op") == "pong", r
        return slowest

    # -- attempts, from the metrics endpoint
    def counts(self):
        with h.NO_PROXY.open(self.metrics_url, timeout=WAIT) as resp:
            text = resp.read().decode()
        got = {}
        for res in ("ok", "error"):
            m = re.search(r'^carehub_webhook_attempts_total\{result="%s"\} (\d+)' % res, text, re.M)
            assert m, f"no carehub_webhook_attempts_total{{result=\"{res}\"}} in:\n{text}"
            got[res] = int(m.group(1))
        return got

    def attempts(self, ok=None, error=None, timeout=WAIT, why=""):
        """Wait until the ended attempts reach these counts (ok: 2xx, error: the rest);
        insist on exactly them. The clock is frozen, so no attempt is made unasked."""
        want = {k: v for k, v in (("ok", ok), ("error", error)) if v is not None}
        why = f" ({why})" if why else ""
        deadline = time.monotonic() + timeout
        while True:
            c = self.counts()
            if all(c[k] >= v for k, v in want.items()):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"webhook attempts ended: {c}, expected {want} within "
                                     f"{timeout}s{why}\n{self.b.log_tail(3000)}")
            time.sleep(0.02)
        time.sleep(0.05)
        c = self.counts()
        assert all(c[k] == v for k, v in want.items()), f"webhook attempts ended: {c}, expected {want}{why}"
        return c

    # -- the case's trail
    def trail(self, case):
        r = self.clk.request({"v": 1, "op": "query", "id": uid("q"), "what": "trail", "case": case})
        assert r.get("op") == "result" and isinstance(r.get("records"), list), r
        return r["records"]

    def notices(self, case, wid):
        """[(kind, actor)] of the trail's notice_* records of webhook `wid` in `case`."""
        return [(r.get("kind"), r.get("actor")) for r in self.trail(case)
                if str(r.get("kind", "")).startswith("notice_") and r.get("ref") == wid]

    def queued_id(self, case, channel):
        """The webhook-id queued for `channel` in `case` (from the broker's log: the trail's
        notice_queued names the id, not the channel)."""
        ids = re.findall(rf"assign: (\S+) queued for channel {re.escape(channel)} "
                         rf"\(case\.assigned, case {re.escape(case)}\)", self.b.log())
        assert len(ids) == 1, f"{channel}: queued notices {ids}:\n{self.b.log_tail()}"
        return ids[0]

    def assert_outcome(self, case, channel, wid, outcome):
        """The trail of `case` holds, for webhook `wid`: notice_queued, then exactly one
        notice_<outcome> (actor: the channel; outcome "delivered" or "failed"), and not
        the other outcome."""
        other = {"delivered": "failed", "failed": "delivered"}[outcome]
        deadline = time.monotonic() + WAIT
        while True:
            got = self.notices(case, wid)
            if ("notice_" + outcome, channel) in got or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        kinds = [k for k, _ in got]
        assert kinds.count("notice_queued") == 1, f"{channel}/{wid}: trail notices {got}"
        assert got.count(("notice_" + outcome, channel)) == 1 and kinds.count("notice_" + outcome) == 1, \
            f"{channel}/{wid}: expected one notice_{outcome} by {channel} in the trail: {got}"
        assert "notice_" + other not in kinds, f"{channel}/{wid}: trail notices {got}"
        assert kinds.index("notice_queued") < kinds.index("notice_" + outcome), got

    def failed_notice(self, channel, case, wid, attempts, error_re):
        """The fallback's webhook.failed for `channel`, and the broker's log line."""
        got = self.rx.wait("/ops", 1, timeout=WAIT,
                           pred=lambda r: r.json.get("data", {}).get("channel") == channel)
        assert len(got) == 1, f"the fallback is told once of {channel}: {got!r}"
        d = check_webhook(got[0], self.ops_secret, type="webhook.failed")["data"]
        want = {"case": case, "channel": channel, "webhook_id": wid, "attempts": attempts}
        for k, v in want.items():
            assert d.get(k) == v, f"webhook.failed data.{k} is {d.get(k)!r}, expected {v!r}: {d!r}"
        assert re.search(error_re, d.get("error", ""), re.I), \
            f"webhook.failed error {d.get('error')!r} does not match {error_re!r}: {d!r}"
        log = self.b.log()
        assert re.search(rf"{re.escape(wid)} to channel {re.escape(channel)} failed for good after "
                         rf"{attempts} attempts .*recorded in case {re.escape(case)}", log), \
            f"no 'failed for good' line for {wid} in the broker's log:\n{self.b.log_tail()}"
        return d

    def fallback_told(self, channel):
        return [r for r in self.rx.at("/ops") if r.json.get("data", {}).get("channel") == channel]


def next_wall_second():
    """Sleep until the real Unix second changes (webhook-timestamp is in seconds), so
    that the next attempt has a new timestamp and so a new signature."""
    s = int(time.time())
    while int(time.time()) == s:
        time.sleep(0.02)


def check_attempts(reqs, secret, statuses=None):
    """Attempts of one message: each a valid §7 request, one webhook-id and body, a new
    webhook-timestamp (increasing) and signature each time. Returns the webhook-id."""
    assert reqs, "no attempt"
    for r in reqs:
        check_webhook(r, secret, type="case.assigned")
    ids = {r.webhook_id for r in reqs}
    assert len(ids) == 1, f"the webhook-id must stay across attempts: {reqs!r}"
    assert len({r.body for r in reqs}) == 1, f"the body is the same on every attempt: {reqs!r}"
    ts = [int(r.headers["webhook-timestamp"]) for r in reqs]
    assert ts == sorted(ts) and len(set(ts)) == len(ts), \
        f"each attempt carries its own, later webhook-timestamp: {ts}"
    sigs = [r.headers["webhook-signature"] for r in reqs]
    assert len(set(sigs)) == len(sigs), f"each attempt carries its own signature: {sigs}"
    if statuses is not None:
        assert [r.status for r in reqs] == statuses, f"answers {[r.status for r in reqs]}, " \
                                                     f"expected {statuses}: {reqs!r}"
    return ids.pop()


# ----------------------------------------------------------------------------
# (a) connection refused

def test_refused_connection_retried_until_max_age_then_delivered_once_up(
        make_clock_broker, tmp_path, receiver, connect):
    down, later = h.free_port(), h.free_port()
    s = Setup(make_clock_broker, tmp_path, receiver, connect, channels=[
        {"id": "down", "url": f"http://127.0.0.1:{down}/hook", "max_age": MAX_AGE_4S},
        {"id": "later", "url": f"http://127.0.0.1:{later}/hook"},
    ])
    case = s.report()
    s.attempts(ok=0, error=2)                           # t = 0: both refused
    assert s.intake_ok(3) < WAIT
    s.advance(B1)                                       # t = 1.25 s
    s.attempts(ok=0, error=4)
    assert not receiver.at("/ops"), "refused connections are retried, not failed, before max_age"

    up = FaultServer(port=later).start()                # the receiver comes up on its port
    try:
        up.script("/hook", [200])
        s.advance(B2)                                   # t = 3.75 s
        got = up.wait("/hook", 1)
        s.attempts(ok=1, error=5)                       # `later` delivered, `down` refused again
        wid_later = check_attempts(got, s.secret["later"], statuses=[200])
        s.assert_outcome(case, "later", wid_later, "delivered")
        assert not s.fallback_told("later")

        assert not receiver.at("/ops"), "not failed before max_age"
        # The last attempt is due right at max_age (t = 4 s). A real loop reaches it at
        # that millisecond or a little after; here 1 ms after: it is still made.
        s.advance(TO_MAX_AGE_4S[2] + 1)
        s.attempts(error=6, why="the last attempt, due at max_age, reached 1 ms late, must be made")
        wid_down = s.queued_id(case, "down")
        s.failed_notice("down", case, wid_down, 4, r"connect|refused")
        s.assert_outcome(case, "down", wid_down, "failed")

        s.advance(24 * 3_600_000)                       # given up (and delivered): nothing more
        time.sleep(QUIET)
        c = s.attempts(error=6)
        assert c["ok"] == 2, f"one delivery to `later` and one webhook.failed to the fallback: {c}"
        assert len(up.at("/hook")) == 1
        assert s.intake_ok() < WAIT
    finally:
        up.stop()


# ----------------------------------------------------------------------------
# (b) hang: accepts and never answers

def test_hanging_receiver_does_not_hold_up_intake(make_clock_broker, tmp_path, receiver, connect,
                                                  faults):
    faults.script("/hang", [Act("hang")])
    s = Setup(make_clock_broker, tmp_path, receiver, connect, channels=[
        {"id": "hang", "url": faults.url("/hang"), "max_age": "2s"}])
    case = s.report()
    first = faults.wait("/hang", 1)[0]
    # while the broker waits on the hanging receiver, an event is acknowledged: the ack
    # arrives while that connection is still open (the broker has not given up on it)
    s.intake_ok()
    with faults._cond:
        assert first.peer_closed is None, \
            "an event's ack came only after the broker gave up on the hanging receiver"
    assert s.intake_ok(3) < WAIT
    s.attempts(ok=0, error=1, timeout=WAIT + 1)          # the channel's timeout: 1 s, real time
    deadline = time.monotonic() + WAIT
    while first.peer_closed is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert first.peer_closed is not None, "the broker did not hang up after its timeout"
    assert not receiver.at("/ops"), "a timeout before max_age is retried, not failed"

    next_wall_second()
    s.advance(2000)                                     # exactly max_age: one last attempt
    faults.wait("/hang", 2)
    assert s.intake_ok(3) < WAIT
    s.attempts(ok=None, error=2, timeout=WAIT + 1)
    wid = check_attempts(faults.at("/hang"), s.secret["hang"])
    s.failed_notice("hang", case, wid, 2, r"timeout|timed out")
    s.assert_outcome(case, "hang", wid, "failed")
    s.advance(24 * 3_600_000)
    time.sleep(QUIET)
    assert len(faults.at("/hang")) == 2, "given up: no attempt after the failure"
    assert s.intake_ok() < WAIT


# ----------------------------------------------------------------------------
# (c) slow answers: within the timeout, and over it

def test_slow_answers_within_and_over_the_timeout(make_clock_broker, tmp_path, receiver, connect):
    receiver.script("/within", [Reply(200, delay=0.4)])
    receiver.script("/over", [Reply(200, delay=2.0), 200])
    s = Setup(make_clock_broker, tmp_path, receiver, connect, channels=[
        {"id": "within", "url": receiver.url("/within")},
        {"id": "over", "url": receiver.url("/over")}])
    case = s.report()
    receiver.wait("/within", 1)
    receiver.wait("/over", 1)
    assert s.intake_ok(3) < WAIT                        # both receivers are still thinking
    s.attempts(ok=1, error=1, timeout=WAIT + 1)          # within: 200 after 0.4 s; over: timeout
    within = receiver.at("/within")
    assert len(within) == 1 and within[0].status == 200, within
    wid_within = check_attempts(within, s.secret["within"], statuses=[200])
    s.assert_outcome(case, "within", wid_within, "delivered")

    s.advance(B1)                                       # the retry of `over` (>= 1 s later: a new second)
    receiver.answered("/over", 1, settle=0)             # the retry answers at once
    s.attempts(ok=2, error=1)
    over = receiver.at("/over")
    assert len(over) == 2, over
    assert over[1].status == 200, over
    wid_over = check_attempts(over, s.secret["over"])
    s.assert_outcome(case, "over", wid_over, "delivered")

    s.advance(24 * 3_600_000)
    time.sleep(QUIET)
    assert len(receiver.at("/within")) == 1, "delivered at the first attempt: never retried"
    assert len(receiver.at("/over")) == 2
    assert not receiver.at("/ops"), "delivered: the fallback is not told"
    assert s.intake_ok() < WAIT


# ----------------------------------------------------------------------------
# (d) 3xx: 301, 302, 308 (307 is in test_webhooks.py)

def test_redirects_301_302_308_never_followed(make_clock_broker, tmp_path, receiver, connect):
    for code in (301, 302):
        receiver.script(f"/r{code}", [Reply(code, headers={"Location": receiver.url(f"/target{code}")}),
                                      200])
    receiver.script("/r308", [Reply(308, headers={"Location": receiver.url("/target308")})])
    s = Setup(make_clock_broker, tmp_path, receiver, connect, channels=[
        {"id": "r301", "url": receiver.url("/r301")},
        {"id": "r302", "url": receiver.url("/r302")},
        {"id": "r308", "url": receiver.url("/r308"), "max_age": MAX_AGE_4S}])

    def targets():
        return [r for r in receiver.requests if r.path.startswith("/target")]

    case = s.report()
    s.attempts(ok=0, error=3)                           # a 3xx is a failed attempt
    assert not targets(), f"a redirect was followed: {targets()!r}"
    assert s.intake_ok() < WAIT

    next_wall_second()
    s.advance(B1)
    s.attempts(ok=2, error=4)                           # 301/302 retried -> 200; 308 again
    for code in (301, 302):
        reqs = receiver.at(f"/r{code}")
        wid = check_attempts(reqs, s.secret[f"r{code}"], statuses=[code, 200])
        s.assert_outcome(case, f"r{code}", wid, "delivered")
    next_wall_second()
    s.advance(B2)                                       # t = 3.75 s
    s.attempts(error=5)
    next_wall_second()
    assert not s.fallback_told("r308"), "not failed before max_age"
    s.advance(TO_MAX_AGE_4S[2])                         # t = 4 s = max_age
    s.attempts(error=6)
    reqs = receiver.at("/r308")
    wid = check_attempts(reqs, s.secret["r308"], statuses=[308] * 4)
    s.failed_notice("r308", case, wid, 4, r"^HTTP 308$")
    s.assert_outcome(case, "r308", wid, "failed")

    s.advance(24 * 3_600_000)
    time.sleep(QUIET)
    assert not targets(), f"a redirect was followed: {targets()!r}"
    assert [len(receiver.at(p)) for p in ("/r301", "/r302", "/r308")] == [2, 2, 4]
    assert not s.fallback_told("r301") and not s.fallback_told("r302")
    assert s.intake_ok() < WAIT


# ----------------------------------------------------------------------------
# (e) 4xx: 400, 401, 404, 429 with Retry-After

def test_4xx_family_retried_429_honours_retry_after(make_clock_broker, tmp_path, receiver, connect):
    chans = [{"id": f"c{code}", "url": receiver.url(f"/c{code}")} for code in (400, 401, 404)]
    chans += [{"id": "c429", "url": receiver.url("/c429")},
              {"id": "c429date", "url": receiver.url("/c429date")}]
    for code in (400, 401, 404):
        receiver.script(f"/c{code}", [code, 200])
    receiver.script("/c429", [Reply(429, headers={"Retry-After": "5"}), 200])
    s = Setup(make_clock_broker, tmp_path, receiver, connect, channels=chans)
    # An HTTP date 6-7 s after the broker's (frozen) clock: the broker reads it against
    # that clock. Scripted before the report; the clock does not move in between.
    now = clock(s.clk)
    when = email.utils.formatdate(now // 1000 + 7, usegmt=True)
    receiver.script("/c429date", [Reply(429, headers={"Retry-After": when}), 200])

    case = s.report()
    assert s.t0 == now
    s.attempts(ok=0, error=5)
    assert s.intake_ok() < WAIT

    next_wall_second()
    s.advance(B1)                                       # t = 1.25 s: 400/401/404 retried
    s.attempts(ok=3, error=5)
    for code in (400, 401, 404):
        wid = check_attempts(receiver.at(f"/c{code}"), s.secret[f"c{code}"], statuses=[code, 200])
        s.assert_outcome(case, f"c{code}", wid, "delivered")
    assert len(receiver.at("/c429")) == 1 and len(receiver.at("/c429date")) == 1, \
        "429 with Retry-After: not retried on the short backoff"

    s.advance(5000 - B1 - 1)                            # t = 4.999 s: Retry-After: 5 not yet
    time.sleep(QUIET)
    assert len(receiver.at("/c429")) == 1, "Retry-After: 5 asks for 5 s"
    s.advance(1)                                        # t = 5 s
    s.attempts(ok=4, error=5)
    wid = check_attempts(receiver.at("/c429"), s.secret["c429"], statuses=[429, 200])
    s.assert_outcome(case, "c429", wid, "delivered")
    assert len(receiver.at("/c429date")) == 1, f"Retry-After: {when} is not due yet"

    s.advance(2000)                                     # t = 7 s: past the date
    s.attempts(ok=5, error=5)
    wid = check_attempts(receiver.at("/c429date"), s.secret["c429date"], statuses=[429, 200])
    s.assert_outcome(case, "c429date", wid, "delivered")

    s.advance(24 * 3_600_000)
    time.sleep(QUIET)
    assert s.counts() == {"ok": 5, "error": 5}, "delivered: no attempt after that"
    assert not receiver.at("/ops"), "delivered: the fallback is not told"
    assert s.intake_ok() < WAIT


# ----------------------------------------------------------------------------
# (f) 5xx then 200: 502, 503, a mixed run (500-500-200 is in test_webhooks.py)

def test_5xx_family_then_200_delivered_under_one_id(make_clock_broker, tmp_path, receiver, connect):
    scripts = {"c502": [502, 200], "c503": [503, 503, 200], "mixed": [500, 502, 503, 200]}
    for cid, sc in scripts.items():
        receiver.script(f"/{cid}", sc)
    s = Setup(make_clock_broker, tmp_path, receiver, connect,
              channels=[{"id": cid, "url": receiver.url(f"/{cid}")} for cid in scripts])
    case = s.report()
    s.attempts(ok=0, error=3)
    for step, ok, error in ((B1, 1, 5), (B2, 2, 6), (B3, 3, 6)):
        next_wall_second()
        s.advance(step)
        s.attempts(ok=ok, error=error)
        assert s.intake_ok() < WAIT
    for cid, sc in scripts.items():
        wid = check_attempts(receiver.at(f"/{cid}"), s.secret[cid], statuses=sc)
        s.assert_outcome(case, cid, wid, "delivered")
    s.advance(24 * 3_600_000)
    time.sleep(QUIET)
    assert s.counts() == {"ok": 3, "error": 6}, "delivered: no attempt after that"
    assert not receiver.at("/ops"), "delivered: the fallback is not told"


# ----------------------------------------------------------------------------
# (g) 410 Gone

def test_410_gives_up_at_once_and_tells_the_fallback(make_clock_broker, tmp_path, receiver, connect):
    receiver.script("/gone", [410])
    receiver.script("/later-gone", [503, 410, 200])
    s = Setup(make_clock_broker, tmp_path, receiver, connect, channels=[
        {"id": "gone", "url": receiver.url("/gone")},
        {"id": "later-gone", "url": receiver.url("/later-gone")}])
    case = s.report()
    s.attempts(error=2)
    # failed at once: the clock has not moved (max_age is 24 h)
    wid = check_attempts(receiver.at("/gone"), s.secret["gone"], statuses=[410])
    s.failed_notice("gone", case, wid, 1, r"^HTTP 410$")
    s.assert_outcome(case, "gone", wid, "failed")
    assert not s.fallback_told("later-gone"), "a 503 is retried, not failed"

    next_wall_second()
    s.advance(B1)
    s.attempts(error=3)
    wid = check_attempts(receiver.at("/later-gone"), s.secret["later-gone"], statuses=[503, 410])
    s.failed_notice("later-gone", case, wid, 2, r"^HTTP 410$")
    s.assert_outcome(case, "later-gone", wid, "failed")

    for _ in range(3):
        s.advance(700_000)
    time.sleep(QUIET)
    assert [len(receiver.at(p)) for p in ("/gone", "/later-gone")] == [1, 2], \
        "after a 410, no attempt"
    assert len(receiver.at("/ops")) == 2, f"the fallback is told once per message: {receiver.at('/ops')!r}"
    assert s.intake_ok() < WAIT


# ----------------------------------------------------------------------------
# (h) reset mid-body

def test_reset_mid_body(make_clock_broker, tmp_path, receiver, connect, faults):
    faults.script("/ok-reset", [Act("partial", status=200, declared=1000, sent=100)])
    faults.script("/err-reset", [Act("partial", status=500, declared=4096, sent=10), 200])
    faults.script("/rst", [Act("reset"), 200])
    s = Setup(make_clock_broker, tmp_path, receiver, connect, channels=[
        {"id": cid, "url": faults.url(f"/{cid}")} for cid in ("ok-reset", "err-reset", "rst")])
    case = s.report()
    # the status line decides: 200 then a reset is delivered; 500 then a reset, or a
    # reset before any answer, failed attempts
    s.attempts(ok=1, error=2)
    assert s.intake_ok() < WAIT
    wid = check_attempts(faults.at("/ok-reset"), s.secret["ok-reset"])
    s.assert_outcome(case, "ok-reset", wid, "delivered")

    next_wall_second()
    s.advance(B1)
    s.attempts(ok=3, error=2)
    for cid in ("err-reset", "rst"):
        reqs = faults.at(f"/{cid}")
        assert len(reqs) == 2 and reqs[1].status == 200, reqs
        wid = check_attempts(reqs, s.secret[cid])
        s.assert_outcome(case, cid, wid, "delivered")
    s.advance(24 * 3_600_000)
    time.sleep(QUIET)
    assert [len(faults.at(f"/{c}")) for c in ("ok-reset", "err-reset", "rst")] == [1, 2, 2]
    assert not receiver.at("/ops")
    assert s.intake_ok() < WAIT


# ----------------------------------------------------------------------------
# (i) close without any answer

def test_close_without_answer(make_clock_broker, tmp_path, receiver, connect, faults):
    faults.script("/once", [Act("close"), 200])
    faults.script("/always", [Act("close")])
    s = Setup(make_clock_broker, tmp_path, receiver, connect, channels=[
        {"id": "once", "url": faults.url("/once")},
        {"id": "always", "url": faults.url("/always"), "max_age": MAX_AGE_4S}])
    case = s.report()
    s.attempts(ok=0, error=2)
    assert s.intake_ok() < WAIT
    next_wall_second()
    s.advance(B1)
    s.attempts(ok=1, error=3)
    reqs = faults.at("/once")
    assert len(reqs) == 2 and reqs[1].status == 200, reqs
    wid = check_attempts(reqs, s.secret["once"])
    s.assert_outcome(case, "once", wid, "delivered")

    next_wall_second()
    s.advance(B2)
    s.attempts(error=4)
    next_wall_second()
    assert not s.fallback_told("always"), "not failed before max_age"
    s.advance(TO_MAX_AGE_4S[2])
    s.attempts(error=5)
    wid = check_attempts(faults.at("/always"), s.secret["always"])
    assert len(faults.at("/always")) == 4
    s.failed_notice("always", case, wid, 4, r"empty reply")
    s.assert_outcome(case, "always", wid, "failed")
    s.advance(24 * 3_600_000)
    time.sleep(QUIET)
    assert len(faults.at("/always")) == 4 and len(faults.at("/once")) == 2
    assert s.intake_ok() < WAIT
