"""routing_harness — helpers for the routing, assignment and webhook tests.

Builds on carehub_harness (not edited here) with what test_routing.py and
test_webhooks.py need, all from the contract (shared/PROTOCOL.md §3-7,
shared/CONFIG.md) and the project's documented test hook (docs/protocol.md):

  ClockBroker      a Broker started with `--test-clock` (the virtual clock moved
                   by the `test_clock` op of CLOCK_AGENT, its broker.test_clock_agent
                   unless the config names another); restart() keeps the flag.
  make_clock_broker  fixture: factory like conftest's make_broker, for ClockBrokers;
                   stopped with SIGTERM at teardown, failing on a bad exit code or
                   a sanitizer report.
  routing_config   a whole config: the standard agents plus one desk per agency,
                   channels and workflows given per test.
  Receiver         an HTTP server on 127.0.0.1:<ephemeral> that records every
                   request (path, headers, raw body, arrival time) and answers by
                   a per-path script: statuses in sequence, hang, slow, redirect,
                   Retry-After.
  receiver         fixture: a started Receiver, shut down at teardown.
  verify_py / verify_node   Standard Webhooks signature checks: in Python, and
                   with the reference implementation (npm `standardwebhooks`,
                   tests/e2e/webhook-verify/verify.mjs).
  wait_push / no_push / clock   agent-side helpers: broker pushes (case, outcome),
                   the virtual clock.

Import the fixtures into a test module with
`from routing_harness import make_clock_broker, receiver  # noqa: F401`.
"""

import base64
import hashlib
import hmac
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

import carehub_harness as h

HERE = Path(__file__).resolve().parent
VERIFY_DIR = HERE / "webhook-verify"

# ----------------------------------------------------------------------------
# Agents: the standard ones plus one desk per agency used by these tests

DESKS = {
    "police": "police-desk",            # already in carehub_harness.AGENTS
    "civil_affairs": "civil-desk",
    "education": "edu-desk",
    "court": "court-desk",
    "procuratorate": "procur-desk",
    "health": "health-desk",
}
EXTRA_AGENTS = [
    {"id": "civil-desk", "role": "agency", "agency": "civil_affairs"},
    {"id": "edu-desk", "role": "agency", "agency": "education"},
    {"id": "court-desk", "role": "agency", "agency": "court"},
    {"id": "procur-desk", "role": "agency", "agency": "procuratorate"},
    {"id": "health-desk", "role": "agency", "agency": "health"},
    {"id": "police-desk-2", "role": "agency", "agency": "police"},
    {"id": "school-0043", "role": "school"},
    {"id": "reporter-02", "role": "reporter"},
]
CLOCK_AGENT = "supervisor-01"      # moves the virtual clock: a ClockBroker's broker.test_clock_agent


def new_secret(nbytes=24):
    """A fresh Standard Webhooks secret, whsec_<base64 of random bytes>."""
    return "whsec_" + base64.b64encode(os.urandom(nbytes)).decode()


def routing_config(workdir, *, workflows=None, channels=None, agencies=None, broker=None,
                   agents=None):
    """A full config (CONFIG.md shape). `agencies` are added to (or replace by id)
    the standard ones; `broker` keys are merged into the broker section."""
    cfg = h.base_config(workdir)
    cfg["agents"] = [dict(a) for a in h.AGENTS] + [dict(a) for a in EXTRA_AGENTS] + list(agents or [])
    by_id = {a["id"]: dict(a) for a in cfg["agencies"]}
    for a in agencies or []:
        by_id[a["id"]] = dict(a)
    for ag in ("education", "court", "procuratorate", "health"):
        by_id.setdefault(ag, {"id": ag})
    cfg["agencies"] = list(by_id.values())
    cfg["broker"].update({
        "fallback_agency": "civil_affairs",
        "default_ack_within": "1d",
        # re-delivery runs on real time: far away unless a test asks for it
        "redeliver_every": "1h",
        "webhook_allow": ["127.0.0.0/8"],
    })
    cfg["broker"].update(broker or {})
    if channels:
        cfg["channels"] = channels
    cfg["workflows"] = workflows if workflows is not None else []
    return cfg


def webhook_channel(cid, url, secret, **kw):
    ch = {"id": cid, "kind": "webhook", "url": url, "secret": secret}
    ch.update(kw)
    return ch


def sms_channel(cid, url, secret, to, **kw):
    ch = {"id": cid, "kind": "sms", "url": url, "secret": secret, "to": list(to)}
    ch.update(kw)
    return ch


# ----------------------------------------------------------------------------
# A broker with the virtual clock

class ClockBroker(h.Broker):
    """carehubd started with --test-clock (plus any extra_args).

    carehub_harness.Broker.start builds its command line itself, so this start()
    is the same procedure with the extra arguments. With --test-clock the config
    needs broker.test_clock_agent, the one agent that may move the clock: CLOCK_AGENT
    unless the test's config names one."""

    def __init__(self, workdir, *, extra_args=("--test-clock",), **kw):
        super().__init__(workdir, **kw)
        self.extra_args = list(extra_args)

    def start(self, timeout=h.READY_TIMEOUT):
        if self.running():
            raise h.BrokerError(f"{self.name} already running")
        if "--test-clock" in self.extra_args:
            self.config.setdefault("broker", {}).setdefault("test_clock_agent", CLOCK_AGENT)
        self.write_config()
        if self.ready_path.exists():
            self.ready_path.unlink()
        self.runs += 1
        errpath = self.workdir / f"stderr.{self.runs}.log"
        self.stderr_paths.append(errpath)
        with open(errpath, "wb") as err:
            self.proc = subprocess.Popen(
                [h.broker_bin(), "-c", str(self.config_path), "--ready-file", str(self.ready_path)]
                + self.extra_args,
                stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT,
                cwd=str(self.workdir), env={**os.environ, **self.env} if self.env else None)
        self.returncode = None
        if self not in h.CURRENT_BROKERS:
            h.CURRENT_BROKERS.append(self)
        deadline = time.monotonic() + timeout
        while True:
            if self.ready_path.exists():
                lines = [ln.strip() for ln in self.ready_path.read_text().splitlines() if ln.strip()]
                if lines and self.ready_path.read_text().endswith("\n"):
                    self.endpoints = lines
                    break
            rc = self.proc.poll()
            if rc is not None:
                self.returncode = rc
                raise h.BrokerError(f"{self.name} exited with code {rc} before writing its ready "
                                    f"file\n--- stderr ---\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise h.BrokerError(f"{self.name} wrote no ready file within {timeout}s\n"
                                    f"--- stderr ---\n{self.log_tail()}")
            time.sleep(0.02)
        for ep in self.endpoints:
            if not re.match(r"^tcp://127\.\d+\.\d+\.\d+:\d+$", ep):
                raise h.BrokerError(f"ready file holds {ep!r}, not a bound tcp endpoint")
        return self


@pytest.fixture
def make_clock_broker(tmp_path, carehub_bin):
    """make_clock_broker(config=None, start=True, name=None, test_clock=True) -> ClockBroker.
    `config` is a whole config (routing_config); by default the standard routing one."""
    made = []

    def factory(config=None, start=True, name=None, test_clock=True):
        name = name or f"carehubd-{len(made) + 1}"
        workdir = tmp_path / name
        cfg = config if config is not None else routing_config(workdir)
        b = ClockBroker(workdir, config=cfg, name=name,
                        extra_args=("--test-clock",) if test_clock else ())
        made.append(b)
        if start:
            b.start()
        return b

    yield factory
    problems = []
    for b in made:
        problems += b.finish()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# ----------------------------------------------------------------------------
# Agent-side helpers

def _take(agent, op, pred):
    for i, m in enumerate(agent.pushes):
        if m.get("op") == op and (pred is None or pred(m)):
            return agent.pushes.pop(i)
    return None


def recv_one(agent, timeout):
    """Read at most one message from the broker within timeout: a ping is answered,
    a push (case, outcome) is kept in agent.pushes; anything else is an error here
    (no request is outstanding). Returns True when a message was read."""
    msg = agent.recv_msg(timeout)
    if msg is None:
        return False
    op = msg.get("op")
    if op == "ping":
        agent.pings.append(msg)
        pong = {"v": 1, "op": "pong"}
        if "id" in msg:
            pong["id"] = msg["id"]
        agent.send(pong)
    elif op in h.PUSH_OPS:
        agent.pushes.append(msg)
    else:
        raise AssertionError(f"unexpected message from the broker (not a push): {h.summarize(msg, 400)}")
    return True


def pump(agent, seconds):
    """Read what the broker sends for `seconds`; pushes land in agent.pushes."""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        recv_one(agent, left)


def wait_push(agent, op="case", pred=None, timeout=3.0, what=None):
    """The next push `op` (matching pred) the agent has received or receives within
    timeout; removed from agent.pushes. Fails the test when none comes."""
    deadline = time.monotonic() + timeout
    while True:
        m = _take(agent, op, pred)
        if m is not None:
            return m
        left = deadline - time.monotonic()
        if left <= 0:
            seen = [h.summarize(p, 160) for p in agent.pushes]
            raise AssertionError(f"{agent.agent or 'agent'}: no {op!r} push{' (' + what + ')' if what else ''} "
                                 f"within {timeout}s; pushes seen and not taken: {seen}")
        recv_one(agent, left)


def pushes(agent, op="case", pred=None, wait=0.5):
    """Every push `op` (matching pred) that arrives within `wait` seconds (and any
    already kept); removed from agent.pushes."""
    pump(agent, wait)
    out = [m for m in agent.pushes if m.get("op") == op and (pred is None or pred(m))]
    agent.pushes = [m for m in agent.pushes if m not in out]
    return out


def no_push(agent, op="case", pred=None, wait=0.5, why=""):
    got = pushes(agent, op, pred, wait)
    assert not got, f"{agent.agent}: expected no {op!r} push{' (' + why + ')' if why else ''}, got " \
                    f"{[h.summarize(m, 300) for m in got]}"


def clock(agent, advance=None, set=None):
    """Move the broker's virtual clock; returns its `now` (ms). `agent` must be the
    broker's test_clock_agent (CLOCK_AGENT in a ClockBroker); any other is forbidden."""
    msg = {"v": 1, "op": "test_clock", "id": agent.new_id()}
    if advance is not None:
        msg["advance"] = int(advance)
    if set is not None:
        msg["set"] = int(set)
    r = agent.request(msg)
    assert r.get("op") == "clock" and r.get("id") == msg["id"] and h.is_uint(r.get("now")), \
        f"test_clock answered {r!r} (is the broker running with --test-clock, and is " \
        f"{agent.agent!r} its broker.test_clock_agent?)"
    return r["now"]


def send_event(agent, type, body, id=None, at=None):
    """Submit an event and insist on an ack; returns (msg id, event id, case id)."""
    mid = id or h.uid("ev")
    ev, case = h.assert_ack(agent.event(type, body, id=mid, at=at), mid)
    return mid, ev, case


def case_ack(agent, assignment, by="officer-1", id=None):
    mid = id or h.uid("ack")
    return mid, agent.request({"v": 1, "op": "case_ack", "id": mid, "assignment": assignment, "by": by})


def case_update(agent, assignment, status, note="", to=None, id=None):
    mid = id or h.uid("upd")
    msg = {"v": 1, "op": "case_update", "id": mid, "assignment": assignment, "status": status,
           "note": note}
    if to is not None:
        msg["to"] = to
    return mid, agent.request(msg)


def assert_assignment_ack(reply, mid, assignment, case=None):
    """{v:1, op:"ack", id, assignment, case} (PROTOCOL §5)."""
    assert reply is not None and reply.get("op") == "ack", \
        f"expected ack to {mid!r} for assignment {assignment!r}, got {h.summarize(reply, 400)}"
    assert reply.get("v") == 1, reply
    assert reply.get("id") == mid, f"ack carries id {reply.get('id')!r}, sent {mid!r}: {reply!r}"
    assert reply.get("assignment") == assignment, f"ack names assignment {reply.get('assignment')!r}, " \
                                                  f"expected {assignment!r}: {reply!r}"
    assert isinstance(reply.get("case"), str) and h.ID_RE.match(reply["case"]), reply
    if case is not None:
        assert reply["case"] == case, f"ack names case {reply['case']!r}, expected {case!r}: {reply!r}"
    return reply


SEVERITIES = ("critical", "high", "normal", "low")


def check_case_msg(m, *, case=None, agency=None, type=None, severity=None, n_events=None,
                   events_total=None):
    """The shape of a `case` push (PROTOCOL §5); optional expected values."""
    assert m.get("op") == "case" and m.get("v") == 1, m
    for k in ("id", "case", "agency"):
        assert isinstance(m.get(k), str) and h.ID_RE.match(m[k]), f"case push: {k} is not an id: {m!r}"
    assert isinstance(m.get("type"), str), m
    assert m.get("severity") in SEVERITIES, f"case push: severity {m.get('severity')!r}: {m!r}"
    assert h.is_uint(m.get("opened")), f"case push: opened is not ms: {m!r}"
    assert h.is_uint(m.get("ack_by")), f"case push: ack_by is not ms: {m!r}"
    assert isinstance(m.get("events"), list) and m["events"], f"case push without events: {m!r}"
    assert h.is_uint(m.get("events_total")) and m["events_total"] >= len(m["events"]), m
    for e in m["events"]:
        assert set(e) >= {"event", "type", "at", "body"}, f"case push: event entry {e!r}"
        assert isinstance(e["event"], str) and h.ID_RE.match(e["event"]), e
        assert isinstance(e["body"], dict), e
    for k, v in (("case", case), ("agency", agency), ("type", type), ("severity", severity),
                 ("events_total", events_total)):
        if v is not None:
            assert m.get(k) == v, f"case push: {k} is {m.get(k)!r}, expected {v!r}: {h.summarize(m, 600)}"
    if n_events is not None:
        assert len(m["events"]) == n_events, f"case push holds {len(m['events'])} events, expected {n_events}"
    return m


def critical_report(child_id=None, **kw):
    body = h.mandatory_report_body(child_id, severity="critical", harm="physical_abuse",
                                   immediate_danger=True)
    body.update(kw)
    return body


# ----------------------------------------------------------------------------
# Webhook receiver

class Reply:
    """One scripted answer: status, extra headers, delay (s) before answering;
    hang=True never answers (until the receiver stops)."""

    def __init__(self, status=200, headers=None, delay=0.0, hang=False, body=b"ok"):
        self.status = status
        self.headers = dict(headers or {})
        self.delay = delay
        self.hang = hang
        self.body = body

    def __repr__(self):
        return f"Reply({self.status}, delay={self.delay}, hang={self.hang}, headers={self.headers})"


def as_reply(x):
    return x if isinstance(x, Reply) else Reply(int(x))


class Request:
    """One request as received."""

    def __init__(self, method, path, headers, body, t_mono, t_wall):
        self.method = method
        self.path = path
        self.headers = headers          # lower-case names -> value (last wins)
        self.raw_headers = []           # [(name, value)] as sent
        self.body = body                # bytes
        self.t = t_mono                 # time.monotonic() at arrival (body read)
        self.wall = t_wall              # time.time() at arrival
        self.status = None              # what was answered (None: not yet / never)

    @property
    def json(self):
        return json.loads(self.body.decode("utf-8"))

    @property
    def webhook_id(self):
        return self.headers.get("webhook-id")

    def __repr__(self):
        body = self.body[:300].decode("utf-8", "replace")
        return f"<{self.method} {self.path} id={self.webhook_id} ts={self.headers.get('webhook-timestamp')} " \
               f"status={self.status} body={body}>"


class Receiver:
    """A scripted webhook receiver on 127.0.0.1 (ephemeral port)."""

    def __init__(self):
        self.requests = []
        self._scripts = {}              # path -> [Reply, ...] (the last one repeats)
        self._default = Reply(200)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        recv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def _handle(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                hdrs = {k.lower(): v for k, v in self.headers.items()}
                req = Request(self.command, self.path, hdrs, body, time.monotonic(), time.time())
                req.raw_headers = list(self.headers.items())
                with recv._cond:
                    recv.requests.append(req)
                    reply = recv._next_reply(self.path)
                    recv._cond.notify_all()
                if reply.hang:
                    recv._stop.wait()
                    self.close_connection = True
                    return
                if reply.delay:
                    if recv._stop.wait(reply.delay):
                        self.close_connection = True
                        return
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                    self.wfile.flush()
                    with recv._cond:
                        req.status = reply.status
                        recv._cond.notify_all()
                except OSError:
                    self.close_connection = True

            do_POST = do_GET = do_PUT = _handle

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            # socketserver listens with a backlog of 5: a broker opening its channel's
            # `concurrency` (64) connections at once (a storm, a restart) would have
            # its SYNs dropped and retried after 1, 3, 7 s. A real server's is larger.
            request_queue_size = 256

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="webhook-receiver",
                                        daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path, replies):
        """Answer requests to `path` with `replies` in order (ints are statuses);
        the last one repeats."""
        with self._cond:
            self._scripts[path] = [as_reply(r) for r in replies]

    def _next_reply(self, path):
        s = self._scripts.get(path)
        if not s:
            return self._default
        return s.pop(0) if len(s) > 1 else s[0]

    def at(self, path):
        with self._cond:
            return [r for r in self.requests if r.path == path]

    def wait(self, path, n=1, timeout=3.0, pred=None):
        """Wait until at least n requests to path (matching pred) arrived; returns
        all of them. Fails the test on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [r for r in self.requests if r.path == path and (pred is None or pred(r))]
                if len(got) >= n:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"receiver: {len(got)} request(s) to {path} within {timeout}s, "
                                         f"expected {n}; all requests: {self.requests!r}")
                self._cond.wait(left)

    def answered(self, path, n, timeout=3.0, settle=0.15):
        """Wait until n requests to path have been answered, then `settle` seconds more
        so that the broker has read the answer (and scheduled its retry on the virtual
        clock) before a test moves that clock."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [r for r in self.requests if r.path == path and r.status is not None]
                if len(got) >= n:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"receiver: {len(got)} answered request(s) to {path} within "
                                         f"{timeout}s, expected {n}; all requests: {self.requests!r}")
                self._cond.wait(min(left, 0.05))
        time.sleep(settle)
        return got

    def quiet(self, path, seconds, pred=None):
        """Requests to path (matching pred) that arrive within `seconds` from now."""
        before = len(self.requests)
        time.sleep(seconds)
        with self._cond:
            return [r for r in self.requests[before:] if r.path == path and (pred is None or pred(r))]


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


# ----------------------------------------------------------------------------
# Webhook checks

RFC3339_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def verify_py(secret, req, now=None):
    """Standard Webhooks check in Python: '' when valid, else why not. The timestamp
    must be within 5 minutes of `now` (Unix seconds; default: the present)."""
    wid, ts, sig = (req.headers.get(k) for k in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (wid and ts and sig):
        return f"missing headers (webhook-id={wid!r}, webhook-timestamp={ts!r}, webhook-signature={sig!r})"
    if not re.fullmatch(r"\d+", ts):
        return f"webhook-timestamp {ts!r} is not Unix seconds"
    now = time.time() if now is None else now
    if abs(int(ts) - now) > 300:
        return f"webhook-timestamp {ts} is more than 5 minutes from now ({int(now)})"
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret[len("whsec_"):])
    mac = hmac.new(key, wid.encode() + b"." + ts.encode() + b"." + req.body, hashlib.sha256).digest()
    want = base64.b64encode(mac).decode()
    for part in sig.split(" "):
        ver, _, val = part.partition(",")
        if ver == "v1" and hmac.compare_digest(val, want):
            return ""
    return f"no v1 signature matches (got {sig!r})"


def check_webhook(req, secret, type=None):
    """Everything §7 says about one request; returns the parsed body."""
    assert req.method == "POST", f"webhook method {req.method}: {req!r}"
    ctype = req.headers.get("content-type", "")
    assert ctype.split(";")[0].strip().lower() == "application/json", \
        f"webhook Content-Type {ctype!r}: {req!r}"
    wid = req.headers.get("webhook-id")
    assert wid and 1 <= len(wid) <= 255, f"webhook-id {wid!r}: {req!r}"
    sig = req.headers.get("webhook-signature", "")
    assert re.fullmatch(r"v1,[A-Za-z0-9+/]{43}=", sig), \
        f"webhook-signature {sig!r} is not v1,<base64 HMAC-SHA256>: {req!r}"
    assert re.fullmatch(r"\d{1,12}", req.headers.get("webhook-timestamp", "")), \
        f"webhook-timestamp is not Unix seconds: {req!r}"
    why = verify_py(secret, req)
    assert not why, f"signature does not verify (Python): {why}: {req!r}"
    try:
        body = req.json
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"webhook body is not JSON ({e}): {req!r}")
    assert isinstance(body, dict) and set(body) >= {"type", "timestamp", "data"}, \
        f"webhook body needs type, timestamp, data: {body!r}"
    assert isinstance(body["type"], str) and body["type"], body
    assert isinstance(body["timestamp"], str) and RFC3339_RE.match(body["timestamp"]), \
        f"webhook timestamp {body['timestamp']!r} is not RFC 3339"
    datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00").replace("z", "+00:00"))
    assert isinstance(body["data"], dict), body
    if type is not None:
        assert body["type"] == type, f"webhook type {body['type']!r}, expected {type!r}: {body!r}"
    return body


def node_verifier_missing():
    """None when the reference verifier can run, else a message saying what to do."""
    node = shutil.which("node") or ("/usr/bin/node" if os.path.exists("/usr/bin/node") else None)
    if not node:
        return "node is not installed: run `make deps` (it installs nodejs and npm)"
    if not (VERIFY_DIR / "node_modules" / "standardwebhooks").is_dir():
        return (f"the Standard Webhooks reference verifier is not installed in {VERIFY_DIR}: "
                f"run `make deps` (npm ci in tests/e2e/webhook-verify)")
    return None


def verify_node(items):
    """Verify [(secret, Request)] with `new Webhook(secret).verify(body, headers)` of the
    npm package standardwebhooks. Fails the test (never skips) when it cannot run.
    Returns a list of '' (valid) or the error, one per item."""
    missing = node_verifier_missing()
    if missing:
        pytest.fail(missing, pytrace=False)
    if not items:
        return []
    node = shutil.which("node") or "/usr/bin/node"
    lines = []
    for secret, req in items:
        lines.append(json.dumps({"secret": secret,
                                 "headers": {k: req.headers[k] for k in
                                             ("webhook-id", "webhook-timestamp", "webhook-signature")
                                             if k in req.headers},
                                 "body_b64": base64.b64encode(req.body).decode()}))
    p = subprocess.run([node, str(VERIFY_DIR / "verify.mjs")], input="\n".join(lines) + "\n",
                       capture_output=True, text=True, timeout=30, cwd=str(VERIFY_DIR))
    if p.returncode != 0:
        pytest.fail(f"verify.mjs failed ({p.returncode}): {p.stderr.strip()[:2000]}\n"
                    f"(if the package is missing: run `make deps`)", pytrace=False)
    out = [json.loads(ln) for ln in p.stdout.splitlines() if ln.strip()]
    assert len(out) == len(items), f"verify.mjs gave {len(out)} verdicts for {len(items)} requests"
    return ["" if o.get("ok") else o.get("error", "?") for o in out]


def assert_all_verify(items):
    """items: [(secret, Request)]: every one verifies in Python and with the reference."""
    bad = []
    for (secret, req), verdict in zip(items, verify_node(items)):
        py = verify_py(secret, req)
        if py or verdict:
            bad.append(f"{req!r}: python: {py or 'ok'}; standardwebhooks: {verdict or 'ok'}")
    assert not bad, "webhook signatures that do not verify:\n" + "\n".join(bad)


def assert_verifiers_reject_tampered(secret, req):
    """Negative control: a changed body, id or timestamp, or another secret, must fail
    in both verifiers (so that 'all verify' means something)."""
    import copy
    variants = []
    t = copy.copy(req)
    t.body = req.body.replace(b'"data"', b'"data" ', 1) if b'"data"' in req.body else req.body + b" "
    variants.append(("body changed", secret, t))
    t = copy.copy(req)
    t.headers = dict(req.headers, **{"webhook-id": req.headers["webhook-id"] + "x"})
    variants.append(("webhook-id changed", secret, t))
    t = copy.copy(req)
    t.headers = dict(req.headers, **{"webhook-timestamp": str(int(req.headers["webhook-timestamp"]) + 1)})
    variants.append(("webhook-timestamp changed", secret, t))
    variants.append(("other secret", new_secret(), req))
    node = verify_node([(sec, r) for _, sec, r in variants])
    for (what, sec, r), nv in zip(variants, node):
        assert verify_py(sec, r), f"Python verifier accepted a request with {what}"
        assert nv, f"standardwebhooks accepted a request with {what}"
