"""agent_harness — run the agent programs (carehub-send, carehub-monitor) in the
end-to-end tests, and check what the broker stored through its own contract.

  * programs: $CAREHUB_BIN_DIR/carehub-NAME (`make e2e` points it at the ASan+UBSan
    build) or <repo>/bin/carehub-NAME;
  * run_agent / start_agent: run one, with its stderr checked for sanitizer reports;
  * line_id: the id carehub-send gives a line without one (docs/agents.md), computed
    here independently with hashlib's BLAKE2b (= libsodium crypto_generichash);
  * resend_all: send every id again from a Python agent and return the acks, which
    must all say duplicate:true when the broker already has the events.
"""

import hashlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

import carehub_harness as h

EX_OK, EX_USAGE, EX_DATAERR, EX_NOINPUT, EX_IOERR, EX_TEMPFAIL, EX_NOPERM = 0, 64, 65, 66, 74, 75, 77


def agent_bin(name):
    d = os.environ.get("CAREHUB_BIN_DIR") or str(h.REPO / "bin")
    path = str(Path(d) / name)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"{name} not found at {path}: build it (make, or make san-build) or set "
                    f"CAREHUB_BIN_DIR", pytrace=False)
    return path


def check_sanitizer(name, stderr):
    for m in h.SANITIZER_MARKERS:
        if m in stderr:
            i = stderr.find(m)
            raise AssertionError(f"{name}: sanitizer report:\n{stderr[max(0, i - 200):i + 4000]}")


def run_agent(name, args, *, input=None, timeout=120, env=None):
    """Run bin/NAME with args; CompletedProcess (text). Fails on a sanitizer report."""
    e = dict(os.environ)
    e.pop("CAREHUB_SPOOL", None)
    e.update(env or {})
    r = subprocess.run([agent_bin(name)] + [str(a) for a in args], input=input, capture_output=True,
                       text=True, timeout=timeout, env=e)
    check_sanitizer(name, r.stderr)
    return r


def start_agent(name, args, *, stdin=subprocess.DEVNULL, env=None):
    """Popen bin/NAME with pipes for stdout and stderr (text). Read its stdout with
    read_lines() only (then finish() returns the rest)."""
    e = dict(os.environ)
    e.pop("CAREHUB_SPOOL", None)
    e.update(env or {})
    return subprocess.Popen([agent_bin(name)] + [str(a) for a in args], stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)


def finish(p, name, timeout=60, sig=None):
    """Optionally signal p, wait for it; (returncode, stdout, stderr), stderr checked."""
    if sig is not None:
        p.send_signal(sig)
    try:
        out, err = p.communicate(timeout=timeout)
        out = getattr(p, "_pending_out", b"").decode() + out
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError(f"{name} did not exit within {timeout}s\n--- stderr ---\n{err[-3000:]}")
    check_sanitizer(name, err)
    return p.returncode, out, err


def read_lines(p, n, timeout=30):
    """Read n lines of p's stdout within timeout, without blocking past it. Reads the pipe
    with os.read (a buffered readline would hide lines from select); what is read beyond
    the n-th line is kept on p for the next call and for finish()."""
    import selectors
    fd = p.stdout.fileno()
    buf = getattr(p, "_pending_out", b"")
    lines = []
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            while b"\n" in buf and len(lines) < n:
                line, buf = buf.split(b"\n", 1)
                lines.append(line.decode())
            if len(lines) >= n:
                break
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise AssertionError(f"only {len(lines)} of {n} lines on stdout within {timeout}s: "
                                     f"{lines!r}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"stdout closed after {len(lines)} of {n} lines "
                                     f"(exit {p.poll()}): {lines!r}")
            buf += chunk
    p._pending_out = buf
    return lines


def parse_verbose(stdout):
    """-v output → list of (src, id, event, case, status)."""
    rows = []
    for line in stdout.splitlines():
        parts = line.split("\t")
        assert len(parts) == 5, f"-v line is not 5 tab-separated fields: {line!r}"
        rows.append(tuple(parts))
    return rows


def line_id(type, name, lineno, text):
    """docs/agents.md: "h-" + hex(BLAKE2b-128(type NUL name NUL lineno NUL line))."""
    data = (type.encode() + b"\0" + name.encode() + b"\0" + str(lineno).encode() + b"\0" +
            (text.encode() if isinstance(text, str) else text))
    return "h-" + hashlib.blake2b(data, digest_size=16).hexdigest()


def free_endpoint():
    """A loopback endpoint where nothing listens (for "the broker is down")."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"tcp://127.0.0.1:{port}"


def resend_all(agent, type, ids, body, chunk=200, timeout=30):
    """Send an event with each id from a Python agent (pipelined); {id: reply}."""
    replies = {}
    ids = list(ids)
    for i in range(0, len(ids), chunk):
        part = ids[i:i + chunk]
        for eid in part:
            agent.send(h.event_msg(type, body, eid))
        want = set(part)
        deadline = time.monotonic() + timeout
        while want:
            r = agent.recv_reply(timeout=max(0.1, deadline - time.monotonic()))
            assert r is not None, f"no reply for {len(want)} of the resent ids"
            if r.get("id") in want:
                want.discard(r["id"])
                replies[r["id"]] = r
    return replies


def assert_stored_once(agent, type, ids, body):
    """Every id is already stored (duplicate:true), each as a different event."""
    replies = resend_all(agent, type, ids, body)
    events = set()
    for eid in ids:
        r = replies[eid]
        assert r.get("op") == "ack" and r.get("duplicate") is True, \
            f"{eid} was not stored before the resend: {r!r}"
        events.add(r["event"])
    assert len(events) == len(set(ids)), f"{len(set(ids))} ids but {len(events)} distinct events"
    return events


SIGKILL = signal.SIGKILL
SIGTERM = signal.SIGTERM
