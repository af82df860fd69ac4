"""carehub_harness — drive the real carehubd from end-to-end tests.

The tests talk to the broker the way an agent written by someone else would:
a ZeroMQ DEALER, one msgpack map per frame (shared/PROTOCOL.md). Nothing here
knows the broker's internals; everything comes from the contract:

  * binary: $CAREHUB_BIN (absolute path; `make e2e` points it at the ASan+UBSan
    build) or <repo>/bin/carehubd;
  * `carehubd -c CONFIG --ready-file FILE` writes the bound endpoints, one per
    line, once every listen endpoint is bound and the store is open;
  * `carehubd --check-config -c FILE`, `carehubd keygen NAME --dir DIR`.

Configs are written as YAML (shared/CONFIG.md) by a tiny emitter so the tests
need nothing beyond Debian's python3-zmq, python3-msgpack and python3-pytest.

Main pieces:
  Broker  one broker process on its own data_dir: start, stop(SIGTERM), kill9,
          restart on the same data_dir (and by default the same port, so
          connected DEALERs reconnect), endpoint, logs.
  Agent   one DEALER connection: hello/login, request(dict) -> reply, send_raw.
          Broker pings are answered with pong and skipped transparently;
          pushes (case, outcome) are kept in .pushes.
  assert_ack / assert_nack  the reply shapes of PROTOCOL §4.
"""

import hashlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import msgpack
import zmq

REPO = Path(__file__).resolve().parents[2]

# Generous under ASan on 2 cores; override from the environment if needed.
READY_TIMEOUT = float(os.environ.get("CAREHUB_E2E_READY_TIMEOUT", "30"))
REPLY_TIMEOUT = float(os.environ.get("CAREHUB_E2E_REPLY_TIMEOUT", "5"))
STOP_TIMEOUT = float(os.environ.get("CAREHUB_E2E_STOP_TIMEOUT", "20"))

ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
Z85_CHARS = ("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
             ".-:+=^!/*?&<>()[]{}@%$#")
Z85_KEY_RE = re.compile("^[" + re.escape(Z85_CHARS) + "]{40}$")

# Ops the broker sends on its own (not replies to a request).
PUSH_OPS = {"case", "outcome"}

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                     "runtime error:", "SUMMARY: UndefinedBehaviorSanitizer",
                     "SUMMARY: AddressSanitizer")


def broker_bin():
    return os.environ.get("CAREHUB_BIN") or str(REPO / "bin" / "carehubd")


def now_ms():
    return int(time.time() * 1000)


def uid(prefix="x"):
    """A fresh id in the protocol's id syntax."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def kdf_subkey(master, subkey_id, size=32, context=b"carehub_"):
    """libsodium's crypto_kdf_derive_from_key (BLAKE2b: key = master, salt = the id as
    8 little-endian bytes + 8 zeros, personal = the 8-byte context + 8 zeros)."""
    import struct
    return hashlib.blake2b(b"", digest_size=size, key=master,
                           salt=struct.pack("<Q", subkey_id) + bytes(8),
                           person=context + bytes(16 - len(context))).digest()


def stored_ref(data_key, ref):
    """The form a client's ref is stored in with privacy on (docs/data-model.md):
    "h:" + hex of BLAKE2b-128 keyed with crypto_kdf subkey 4 of the data key."""
    sub = kdf_subkey(data_key, 4)
    return "h:" + hashlib.blake2b(ref.encode(), digest_size=16, key=sub).hexdigest()


def pack(obj):
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data):
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


# --------------------------------------------------------------------------
# Brokers currently of interest (for failure reports: conftest shows their logs)
CURRENT_BROKERS = []
_ALL_BROKERS = []


# --------------------------------------------------------------------------
# YAML emitter (block style; strings quoted unless plainly safe)

class Bare(str):
    """A scalar written as-is (e.g. `off`, which YAML 1.1 reads as false)."""


_PLAIN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")
_YAML11_SPECIAL = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}


def _scalar(v):
    if isinstance(v, Bare):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if v is None:
        return "null"
    if isinstance(v, float):
        return repr(v)
    s = str(v)
    if _PLAIN_RE.match(s) and s.lower() not in _YAML11_SPECIAL:
        return s
    # JSON string escapes are valid YAML double-quoted escapes.
    return json.dumps(s, ensure_ascii=False)


def _emit(obj, indent):
    pad = " " * indent
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, dict) and v:
                out.append(f"{pad}{k}:")
                out.extend(_emit(v, indent + 2))
            elif isinstance(v, list) and v:
                out.append(f"{pad}{k}:")
                out.extend(_emit(v, indent + 2))
            elif isinstance(v, (dict, list)):
                out.append(f"{pad}{k}: {'{}' if isinstance(v, dict) else '[]'}")
            else:
                out.append(f"{pad}{k}: {_scalar(v)}")
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, (dict, list)) and item:
                sub = _emit(item, indent + 2)
                sub[0] = pad + "- " + sub[0][indent + 2:]
                out.extend(sub)
            else:
                out.append(f"{pad}- {_scalar(item)}")
    else:
        out.append(pad + _scalar(obj))
    return out


def to_yaml(obj):
    return "\n".join(_emit(obj, 0)) + "\n"


DELETE = object()  # in overrides: remove this key


def deep_merge(base, overrides):
    out = dict(base)
    for k, v in (overrides or {}).items():
        if v is DELETE:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


# --------------------------------------------------------------------------
# The standard test configuration

AGENTS = [
    {"id": "school-0042", "role": "school"},
    {"id": "reporter-01", "role": "reporter"},
    {"id": "monitor-01", "role": "monitor"},
    {"id": "police-desk", "role": "agency", "agency": "police"},
    {"id": "supervisor-01", "role": "supervisor"},
]
ROLE_AGENT = {a["role"]: a["id"] for a in AGENTS}
AGENCIES = [
    {"id": "police", "name": "滨海新区公安局"},
    {"id": "civil_affairs", "name": "滨海新区民政局"},
]
HEARTBEAT = "5s"
HEARTBEAT_MS = 5000
MAX_MESSAGE_BYTES = 262144


def base_config(workdir):
    return {
        "broker": {
            "listen": ["tcp://127.0.0.1:*"],
            "data_dir": str(Path(workdir) / "data"),
            "security": "none",
            "heartbeat": HEARTBEAT,
            "max_message_bytes": MAX_MESSAGE_BYTES,
        },
        "privacy": Bare("off"),
        "agents": [dict(a) for a in AGENTS],
        "agencies": [dict(a) for a in AGENCIES],
    }


# --------------------------------------------------------------------------
# Broker process

class BrokerError(AssertionError):
    pass


def run_bin(args, timeout=30, **kw):
    """Run carehubd with args (not as a server); returns CompletedProcess (text)."""
    return subprocess.run([broker_bin()] + list(args), capture_output=True, text=True,
                          timeout=timeout, **kw)


class Broker:
    """One carehubd process with its own config and data_dir under workdir."""

    def __init__(self, workdir, *, overrides=None, config=None, name="carehubd"):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.config = config if config is not None else deep_merge(base_config(self.workdir), overrides)
        self.config_path = self.workdir / "carehub.yaml"
        self.ready_path = self.workdir / "ready"
        self.proc = None
        self.endpoints = []
        self.runs = 0
        self.stderr_paths = []
        self.returncode = None
        self.expect_clean_exit = True   # the fixture checks SIGTERM exit code at teardown
        self.env = {}                   # extra environment (e.g. CAREHUB_LOG=debug)
        _ALL_BROKERS.append(self)

    # -- lifecycle --------------------------------------------------------
    def write_config(self):
        self.config_path.write_text(to_yaml(self.config), encoding="utf-8")

    def start(self, timeout=READY_TIMEOUT):
        if self.running():
            raise BrokerError(f"{self.name} already running")
        self.write_config()
        if self.ready_path.exists():
            self.ready_path.unlink()
        self.runs += 1
        errpath = self.workdir / f"stderr.{self.runs}.log"
        self.stderr_paths.append(errpath)
        with open(errpath, "wb") as err:
            self.proc = subprocess.Popen(
                [broker_bin(), "-c", str(self.config_path), "--ready-file", str(self.ready_path)],
                stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT,
                cwd=str(self.workdir), env={**os.environ, **self.env} if self.env else None)
        self.returncode = None
        if self not in CURRENT_BROKERS:
            CURRENT_BROKERS.append(self)
        deadline = time.monotonic() + timeout
        while True:
            if self.ready_path.exists():
                text = self.ready_path.read_text()
                if not text.endswith("\n"):
                    time.sleep(0.05)           # tolerate a missing final newline
                    text2 = self.ready_path.read_text()
                    if text2 != text:
                        continue
                lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
                if lines:
                    self.endpoints = lines
                    break
            rc = self.proc.poll()
            if rc is not None:
                self.returncode = rc
                raise BrokerError(f"{self.name} exited with code {rc} before writing its ready file\n"
                                  f"--- stderr ---\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise BrokerError(f"{self.name} wrote no ready file within {timeout}s\n"
                                  f"--- stderr ---\n{self.log_tail()}")
            time.sleep(0.02)
        for ep in self.endpoints:
            if not re.match(r"^tcp://127\.\d+\.\d+\.\d+:\d+$", ep):
                raise BrokerError(f"ready file holds {ep!r}, not a bound tcp endpoint "
                                  f"(expected tcp://127.0.0.1:PORT)")
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def pid(self):
        return self.proc.pid

    @property
    def endpoint(self):
        return self.endpoints[0]

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """Send sig and wait; returns the exit code (negative: killed by a signal).
        Kills with SIGKILL after timeout and raises."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.returncode = self.proc.returncode
                raise BrokerError(f"{self.name} did not exit within {timeout}s of signal {sig}\n"
                                  f"--- stderr ---\n{self.log_tail()}")
        self.returncode = self.proc.returncode
        return self.returncode

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.returncode = self.proc.returncode if self.proc else None
        return self.returncode

    def restart(self, same_endpoints=True, overrides=None, graceful=True):
        """Stop (SIGTERM unless graceful=False: kill -9) and start again on the same
        data_dir. With same_endpoints the broker rebinds the ports it had, so
        connected DEALERs reconnect by themselves. Returns the stop exit code."""
        rc = None
        if self.running():
            rc = self.stop() if graceful else self.kill9()
        if same_endpoints and self.endpoints:
            self.config = deep_merge(self.config, {"broker": {"listen": list(self.endpoints)}})
        if overrides:
            self.config = deep_merge(self.config, overrides)
        self.start()
        return rc

    def finish(self):
        """Stop with SIGTERM and return a list of problems (exit code, sanitizer output)."""
        problems = []
        if self.running():
            try:
                rc = self.stop()
            except BrokerError as e:
                return [str(e)]
            if rc != 0 and self.expect_clean_exit:
                problems.append(f"{self.name} exited with code {rc} on SIGTERM (expected 0)")
        san = self.sanitizer_report()
        if san:
            problems.append(f"{self.name}: sanitizer report in stderr:\n{san}")
        if problems:
            problems.append(f"--- {self.name} stderr (last run) ---\n{self.log_tail()}")
        return problems

    # -- logs -------------------------------------------------------------
    def log(self, run=None):
        if not self.stderr_paths:
            return ""
        p = self.stderr_paths[-1 if run is None else run - 1]
        try:
            return p.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def all_logs(self):
        return "".join(self.log(i + 1) for i in range(len(self.stderr_paths)))

    # -- metrics (broker.metrics "127.0.0.1:0": the port is in the log) ----
    def metrics_url(self, timeout=READY_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", self.log())
            if m:
                return m.group(1)
            if time.monotonic() > deadline:
                raise BrokerError(f"{self.name} does not log where its metrics are\n{self.log_tail()}")
            time.sleep(0.05)

    def metrics_text(self):
        with NO_PROXY.open(self.metrics_url(), timeout=10) as r:
            return r.read().decode()

    def metric(self, name):
        """The value of an unlabelled sample `name` on /metrics."""
        text = self.metrics_text()
        m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        if not m:
            raise AssertionError(f"{name} not in /metrics:\n{text[:2000]}")
        return float(m.group(1))

    def log_tail(self, n=6000):
        t = self.log()
        return t if len(t) <= n else "…" + t[-n:]

    def sanitizer_report(self):
        out = []
        for i in range(len(self.stderr_paths)):
            text = self.log(i + 1)
            if any(m in text for m in SANITIZER_MARKERS):
                idx = min(text.find(m) for m in SANITIZER_MARKERS if m in text)
                out.append(f"[run {i + 1}] " + text[max(0, idx - 200):idx + 4000])
        return "\n".join(out)


# Straight to 127.0.0.1, whatever http_proxy says.
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def kill_all_brokers():
    for b in _ALL_BROKERS:
        try:
            if b.running():
                b.proc.kill()
                b.proc.wait()
        except Exception:
            pass


# --------------------------------------------------------------------------
# Agent connection

_CTX = None


def context():
    global _CTX
    if _CTX is None:
        _CTX = zmq.Context()
    return _CTX


class Agent:
    """One DEALER connection to the broker."""

    def __init__(self, endpoint, *, timeout=REPLY_TIMEOUT, curve=None, routing_id=None):
        """curve: (server_public, client_public, client_secret), Z85 str/bytes;
        routing_id: bytes the connection names itself with (else libzmq's own)."""
        s = context().socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        if routing_id is not None:
            s.setsockopt(zmq.ROUTING_ID, routing_id)
        s.setsockopt(zmq.SNDTIMEO, int(timeout * 1000))
        if curve:
            server_pub, pub, sec = (k.encode() if isinstance(k, str) else k for k in curve)
            s.curve_serverkey = server_pub
            s.curve_publickey = pub
            s.curve_secretkey = sec
        s.connect(endpoint)
        self.sock = s
        self.endpoint = endpoint
        self.timeout = timeout
        self.pushes = []        # broker pushes (case, outcome) seen while waiting for replies
        self.pings = []         # broker pings answered
        self.agent = None
        self._prefix = uid("m")
        self._n = itertools.count(1)

    def close(self):
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None

    def new_id(self):
        return f"{self._prefix}-{next(self._n)}"

    # -- raw I/O ----------------------------------------------------------
    def send(self, msg):
        self.sock.send(pack(msg))

    def send_frames(self, data):
        if isinstance(data, (list, tuple)):
            self.sock.send_multipart(list(data))
        else:
            self.sock.send(data)

    def recv_msg(self, timeout=None):
        """Next message from the broker as a dict, or None on timeout."""
        timeout = self.timeout if timeout is None else timeout
        if not self.sock.poll(max(0, int(timeout * 1000))):
            return None
        frames = self.sock.recv_multipart()
        assert len(frames) == 1, f"broker sent a {len(frames)}-frame message (contract: one frame)"
        try:
            msg = unpack(frames[0])
        except UnicodeDecodeError as e:
            raise AssertionError(f"broker sent a msgpack str that is not valid UTF-8 (a strict client "
                                 f"cannot decode it): {frames[0][:200]!r} ({e})")
        except Exception as e:  # noqa: BLE001
            raise AssertionError(f"broker sent a frame that is not msgpack: {frames[0][:80]!r} ({e})")
        assert isinstance(msg, dict), f"broker sent a msgpack {type(msg).__name__}, not a map: {msg!r}"
        return msg

    def recv_reply(self, timeout=None):
        """Next reply, answering broker pings and keeping pushes aside; None on timeout."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            msg = self.recv_msg(left)
            if msg is None:
                return None
            op = msg.get("op")
            if op == "ping":
                self.pings.append(msg)
                pong = {"v": 1, "op": "pong"}
                if "id" in msg:
                    pong["id"] = msg["id"]
                self.send(pong)
                continue
            if op in PUSH_OPS:
                self.pushes.append(msg)
                continue
            return msg

    def send_raw(self, data, timeout=None):
        """Send raw bytes (or a list of frames) and return the reply or None."""
        self.send_frames(data)
        return self.recv_reply(timeout)

    # -- requests ---------------------------------------------------------
    def request(self, msg, timeout=None):
        timeout = self.timeout if timeout is None else timeout
        self.send(msg)
        reply = self.recv_reply(timeout)
        if reply is None:
            raise AssertionError(f"no reply within {timeout}s to {summarize(msg)}")
        return reply

    def hello(self, agent, software="carehub-e2e/1.0", id=None, timeout=None):
        return self.request({"v": 1, "op": "hello", "id": id or self.new_id(),
                             "agent": agent, "software": software}, timeout)

    def login(self, agent, role=None):
        """hello and insist on a welcome."""
        msg_id = self.new_id()
        w = self.hello(agent, id=msg_id)
        assert w.get("op") == "welcome", f"hello as {agent} was refused: {w!r}"
        assert w.get("id") == msg_id, f"welcome carries id {w.get('id')!r}, sent {msg_id!r}"
        if role is not None:
            assert w.get("role") == role, w
        self.agent = w.get("agent")
        return w

    def ping(self, id=None, timeout=None):
        return self.request({"v": 1, "op": "ping", "id": id or self.new_id()}, timeout)

    def event(self, type, body, id=None, at=None, timeout=None):
        return self.request(event_msg(type, body, id or self.new_id(), at), timeout)


def event_msg(type, body, id, at=None):
    return {"v": 1, "op": "event", "id": id, "type": type,
            "at": now_ms() if at is None else at, "body": body}


def summarize(msg, n=200):
    s = repr(msg)
    return s if len(s) <= n else s[:n] + "…"


def is_uint(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


# --------------------------------------------------------------------------
# Reply checks

ANY = object()
NO_ID = object()


def check_error_sentence(reply):
    err = reply.get("error")
    assert isinstance(err, str) and err.strip(), f"nack without an error sentence: {reply!r}"
    assert re.search(r"\s", err.strip()) and err.strip() != reply.get("code"), \
        f"nack error is not a sentence a person can act on: {err!r}"


def assert_nack(reply, code, *, id=ANY, field=ANY, codes=None):
    """reply is {v:1, op:nack, code, error, id?, field?}. code may be a set via codes=."""
    want = codes or {code}
    assert reply is not None, f"expected nack {sorted(want)}, got no reply"
    assert reply.get("op") == "nack", f"expected nack {sorted(want)}, got {summarize(reply, 400)}"
    assert reply.get("v") == 1 and is_uint(reply.get("v")), f"nack without v:1: {reply!r}"
    assert reply.get("code") in want, f"expected nack code {sorted(want)}, got {summarize(reply, 400)}"
    check_error_sentence(reply)
    if "id" in reply:
        assert isinstance(reply["id"], str), f"nack carries an id that is not a string: {reply!r}"
    if id is NO_ID:
        assert "id" not in reply, f"nack must carry no id here: {reply!r}"
    elif id is not ANY:
        assert reply.get("id") == id, f"nack carries id {reply.get('id')!r}, expected {id!r}: {reply!r}"
    if field is not ANY:
        if isinstance(field, (set, frozenset, tuple, list)):
            assert reply.get("field") in field, f"nack field {reply.get('field')!r}, expected one of {sorted(field)}: {reply!r}"
        else:
            assert reply.get("field") == field, f"nack field {reply.get('field')!r}, expected {field!r}: {reply!r}"
    return reply


def assert_ack(reply, id, duplicate=False):
    """reply is {v:1, op:ack, id, event, case, duplicate}; returns (event, case)."""
    assert reply is not None, "expected ack, got no reply"
    assert reply.get("op") == "ack", f"expected ack for {id!r}, got {summarize(reply, 400)}"
    assert reply.get("v") == 1 and is_uint(reply.get("v")), f"ack without v:1: {reply!r}"
    assert reply.get("id") == id, f"ack carries id {reply.get('id')!r}, expected {id!r}"
    ev, case = reply.get("event"), reply.get("case")
    assert isinstance(ev, str) and ID_RE.match(ev), f"ack event is not an id: {reply!r}"
    assert isinstance(case, str) and ID_RE.match(case), f"ack case is not an id: {reply!r}"
    assert reply.get("duplicate") is duplicate, \
        f"ack duplicate is {reply.get('duplicate')!r}, expected {duplicate!r}: {reply!r}"
    return ev, case


# --------------------------------------------------------------------------
# Event bodies (PROTOCOL §8)


def refused_again(agent, refused, make_next, acked, tries=50):
    """After a store refused `refused` as unavailable for lack of room (map or disk full):
    send it again until the store refuses again, and return what it refused. LMDB may
    still fit a retry in pages the turns before it freed (the meta page is synced after
    the commit, so a turn's freed pages come back a turn later): a retry that fits is
    stored once (duplicate:false, never half-stored), appended to `acked`, and a new event
    `make_next(n)` is tried instead."""
    for _ in range(tries):
        r = agent.request(refused)
        if r.get("op") != "ack":
            assert_nack(r, "unavailable", id=refused["id"])
            return refused
        acked.append((refused, assert_ack(r, refused["id"], duplicate=False)))
        refused = make_next(len(acked))
    raise AssertionError(f"a full store kept taking retried events ({tries} of them)")

def absence_body(child_id=None, **kw):
    body = {
        "school": "滨海新区第一小学",
        "date": "2025-03-03",
        "reason": "unexplained",
        "consecutive_days": 1,
        "child": {"id": child_id or uid("child"), "name": "李明"},
    }
    body.update(kw)
    return body


def mandatory_report_body(child_id=None, **kw):
    body = {
        "reporter": {"organisation": "滨海新区第一小学"},
        "harm": "neglect",
        "description": "The child has been alone at home for three days without food.",
        "child": {"name": "王芳"},
    }
    if child_id is not None:
        body["child"]["id"] = child_id
    body.update(kw)
    return body


def online_risk_body(**kw):
    body = {"risk": "cyberbullying", "platform": "weibo"}
    body.update(kw)
    return body


def valid_body(type, child_id=None):
    if type == "absence":
        return absence_body(child_id)
    if type == "mandatory_report":
        return mandatory_report_body(child_id)
    if type == "online_risk":
        b = online_risk_body()
        if child_id is not None:
            b["child"] = {"id": child_id, "name": "张伟"}
        return b
    raise ValueError(type)


def keygen(name, directory, timeout=30):
    """Run `carehubd keygen NAME --dir DIR`; returns (secret, public) Z85 strings."""
    r = run_bin(["keygen", name, "--dir", str(directory)], timeout=timeout)
    assert r.returncode == 0, f"keygen {name} failed ({r.returncode}): {r.stderr}"
    sec = (Path(directory) / f"{name}.key").read_text().splitlines()[0].strip()
    pub = (Path(directory) / f"{name}.pub").read_text().splitlines()[0].strip()
    return sec, pub
