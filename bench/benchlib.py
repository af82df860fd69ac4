"""bench/benchlib.py — what the bench scripts (storm.py, desks.py, soak.py, escalation.py,
egress.py, generator_check.py) share. Not a script: they import it (their own directory is
on sys.path when run as `/usr/bin/python3 bench/x.py`).

  - Fail, the exception of a run that went wrong, a progress printer (`sayer`), and a
    main's frame: SIGTERM as SystemExit, Fail and Ctrl-C to exit statuses (run_main);
  - paths: the project root, a binary from an environment variable, a temporary directory
    under $BENCH_TMPDIR, its file system type, and its removal (or --keep);
  - processes: PR_SET_PDEATHSIG for children, SIGTERM-then-SIGKILL, the tail of a log;
  - /proc readings: CPU seconds (utime+stime), /proc/PID/io, /proc/PID/status sizes;
  - carehubd: the broker: section of a temporary YAML config, starting it and waiting for
    its ready file (spawn_carehubd, wait_ready), and a Broker object (alive, metrics, stop,
    kill);
  - bin/loadgen --json, its stdout lines read by a thread into a queue (Loadgen);
  - the ZeroMQ side of a reporter: hello/welcome, and taking every ack, nack and ping
    waiting on a DEALER (the intake loops' replies);
  - Standard Webhooks signatures (docs/webhooks.md), Prometheus text, nearest-rank
    percentiles of sorted lists and of loadgen's histograms, strict-JSON figures, a free
    TCP port on 127.0.0.1.

Only the standard library; zmq and msgpack are imported where a function needs them, so
that a script may import this module before (or without) them.
"""

import base64
import ctypes
import hashlib
import hmac
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


class Fail(Exception):
    """The run itself went wrong (not a measured figure)."""


def sayer(name):
    """A progress printer: say(msg) writes 'name: msg' to stderr."""
    def say(msg):
        print(f"{name}: {msg}", file=sys.stderr, flush=True)
    return say


def exit_on(*signums):
    """These signals (e.g. SIGTERM) raise SystemExit(128 + signal number): the scripts'
    finally blocks stop what they started."""
    def on_signal(signum, frame):
        raise SystemExit(128 + signum)
    for signum in signums:
        signal.signal(signum, on_signal)


def run_main(run, args, say, bench=None):
    """run(args) with SIGTERM turned into SystemExit; its return value is the exit status.
    Fail: 'FAIL: <it>' on stderr (with `bench`, also the JSON line {"bench": bench,
    "pass": false, "problems": [its first line]} on stdout), status 1; Ctrl-C: 130."""
    exit_on(signal.SIGTERM)
    try:
        return run(args)
    except Fail as e:
        say(f"FAIL: {e}")
        if bench:
            print(json.dumps({"bench": bench, "pass": False, "problems": [str(e).splitlines()[0]]}))
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130


# ---------------------------------------------------------------------------
# Paths and processes

def binary(env, default):
    """$env or `default`, relative to the project root unless absolute."""
    p = Path(os.environ.get(env, default))
    return p if p.is_absolute() else ROOT / p


def bench_tmp(prefix):
    """A fresh temporary directory under $BENCH_TMPDIR (default /var/tmp)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("BENCH_TMPDIR", "/var/tmp")))


def fs_type(path):
    """The file system type of `path` (stat -f), e.g. ext4, tmpfs."""
    return subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True).stdout.strip()


def need_binaries(paths, make):
    """Fail '<path> is missing: build it first (<make>)' for the first one not executable."""
    for b in paths:
        if not os.access(b, os.X_OK):
            raise Fail(f"{b} is missing: build it first ({make})")


def run_tmp(prefix, say, also=""):
    """bench_tmp(prefix) and its file system type; a warning when that is in memory
    (tmpfs, ramfs: 'commits cost no disk sync<also>; set BENCH_TMPDIR to a disk')."""
    tmp = bench_tmp(prefix)
    fstype = fs_type(tmp)
    if fstype in ("tmpfs", "ramfs"):
        say(f"warning: {tmp} is on {fstype}: commits cost no disk sync{also}; set BENCH_TMPDIR to a disk")
    return tmp, fstype


def die_with_parent():
    """preexec_fn: the child gets SIGTERM when this script dies, even by SIGKILL
    (prctl PR_SET_PDEATHSIG), so no broker or loadgen is left behind."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)
    except Exception:
        pass


def terminate(proc, timeout, on_kill=None):
    """SIGTERM to a running process and wait; SIGKILL after `timeout` s (calling on_kill()
    first). Returns the exit status, None if it had to be killed."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        if on_kill is not None:
            on_kill()
        proc.kill()
        proc.wait()
        return None


def drop_tmp(tmp, keep, say, kept=""):
    """Remove a run's temporary directory, or with `keep` say 'kept <tmp><kept>'."""
    if keep:
        say(f"kept {tmp}{kept}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def log_tail(path, n=20):
    """The last n lines of a file, indented by four spaces ('' when unreadable)."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return ""
    return "\n".join("    " + ln for ln in lines)


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


# ---------------------------------------------------------------------------
# /proc

def cpu_seconds(pid):
    """utime+stime of a process (all threads), in seconds; raises OSError when it is gone."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_cpu(pid):
    """cpu_seconds(pid), or NaN when unreadable."""
    try:
        return cpu_seconds(pid)
    except (OSError, ValueError, IndexError):
        return float("nan")


def proc_io(pid):
    """/proc/PID/io as {field: int} (rchar, wchar, syscr, syscw, read_bytes, write_bytes, ...)."""
    out = {}
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            k, v = line.split(":")
            out[k.strip()] = int(v)
    return out


def proc_status_bytes(pid, keys, out=None):
    """The sizes `keys` (VmRSS, RssAnon, ...) of /proc/PID/status, in bytes, put in `out`
    (a new dict by default) as they are read; returns it."""
    out = {} if out is None else out
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in keys:
                out[k] = int(v.split()[0]) * 1024
    return out


# ---------------------------------------------------------------------------
# carehubd

def broker_yaml(script, data_dir, heartbeat="60s", redeliver_every="1h", webhook_allow=True, extra=()):
    """The head of a temporary carehubd config written by bench/<script>: the `broker:`
    section (listen on 127.0.0.1, no security, fallback agency civil_affairs), then the
    lines `extra` (e.g. 'metrics: 127.0.0.1:0') in it. The caller appends the rest."""
    lines = [f"# written by bench/{script}", "broker:", '  listen: ["tcp://127.0.0.1:*"]',
             f'  data_dir: "{data_dir}"', "  security: none", f"  heartbeat: {heartbeat}",
             f"  redeliver_every: {redeliver_every}", "  fallback_agency: civil_affairs"]
    if webhook_allow:
        lines.append("  webhook_allow: [127.0.0.0/8]")
    lines += ["  " + x for x in extra]
    return "\n".join(lines) + "\n"


def spawn_carehubd(carehubd, conf, workdir, log_path, ready, preexec_fn=die_with_parent):
    """Start `carehubd -c conf --ready-file ready` in workdir, stdout and stderr to
    log_path; returns the process (see wait_ready)."""
    with open(log_path, "wb") as log:
        return subprocess.Popen([str(carehubd), "-c", str(conf), "--ready-file", str(ready)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                cwd=str(workdir), preexec_fn=preexec_fn)


def wait_ready(proc, ready, log_path, timeout=15.0, tail=20):
    """Wait up to `timeout` s for carehubd's ready file; returns the endpoint on its first
    line. Raises Fail (with the log's last `tail` lines) when it exits first or is not
    ready in time (it is left running: the caller stops it)."""
    limit = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise Fail(f"carehubd exited with status {proc.returncode} before it was ready\n"
                       + log_tail(log_path, tail))
        if ready.exists():
            text = ready.read_text()
            if text.endswith("\n") and text.strip():
                return text.splitlines()[0].strip()
        if time.monotonic() > limit:
            raise Fail(f"carehubd not ready after {timeout:.0f} s\n" + log_tail(log_path, tail))
        time.sleep(0.02)


def parse_metrics(text):
    """{name or name{labels}: value} from Prometheus text."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        try:
            key, val = line.rsplit(" ", 1)
            out[key] = float(val)
        except ValueError:
            continue
    return out


def msum(metrics, prefix):
    """The sum of a metric over all its labels."""
    return sum(v for k, v in metrics.items() if k == prefix or k.startswith(prefix + "{"))


class Broker:
    """carehubd with a temporary config in `workdir` (log <name>.log, ready file
    <name>.ready). With need_metrics, start() fails when the broker logs no metrics
    address and metrics() raises when the scrape fails; without, metrics() is {} then."""

    def __init__(self, carehubd, workdir, name="carehubd", need_metrics=True, ready_timeout=15.0,
                 stop_timeout=30.0, preexec_fn=die_with_parent):
        self.carehubd, self.workdir, self.name = carehubd, workdir, name
        self.log_path = workdir / f"{name}.log"
        self.need_metrics = need_metrics
        self.ready_timeout, self.stop_timeout = ready_timeout, stop_timeout
        self.preexec_fn = preexec_fn
        self.proc = None
        self.metrics_url = None

    def start(self, conf):
        ready = self.workdir / f"{self.name}.ready"
        self.proc = spawn_carehubd(self.carehubd, conf, self.workdir, self.log_path, ready, self.preexec_fn)
        self.endpoint = wait_ready(self.proc, ready, self.log_path, self.ready_timeout)
        m = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", self.log_path.read_text(errors="replace"))
        if not m and self.need_metrics:
            raise Fail("carehubd did not log its metrics address\n" + log_tail(self.log_path))
        self.metrics_url = m.group(1) if m else None
        self.pid = self.proc.pid

    def alive(self, phase):
        if self.proc.poll() is not None:
            raise Fail(f"carehubd died during {phase} (status {self.proc.returncode})\n"
                       + log_tail(self.log_path))

    def metrics(self):
        """{name or name{labels}: value} from the Prometheus endpoint."""
        if not self.need_metrics:
            if not self.metrics_url:
                return {}
            try:
                with urllib.request.urlopen(self.metrics_url, timeout=10) as r:
                    text = r.read().decode()
            except OSError:
                return {}
            return parse_metrics(text)
        with urllib.request.urlopen(self.metrics_url, timeout=10) as r:
            return parse_metrics(r.read().decode())

    def stop(self):
        """SIGTERM; the broker must exit 0 within stop_timeout s."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            raise Fail(f"carehubd did not exit within {self.stop_timeout:.0f} s of SIGTERM\n"
                       + log_tail(self.log_path))
        if rc != 0:
            raise Fail(f"carehubd exited with status {rc} after SIGTERM\n" + log_tail(self.log_path))

    def kill(self):
        """SIGTERM if it still runs; SIGKILL after stop_timeout s."""
        if self.proc is not None:
            terminate(self.proc, self.stop_timeout)


# ---------------------------------------------------------------------------
# bin/loadgen

def parse_line(raw):
    """One line of loadgen --json: the object, or {'unparsed': text}."""
    try:
        return json.loads(raw)
    except ValueError:
        return {"unparsed": raw.decode(errors="replace")}


class Loadgen:
    """bin/loadgen -b ENDPOINT --json ARGS; a thread puts item(line) for each stdout line
    in `lines` (the parsed line; a subclass may add to it), then None at its end."""

    def __init__(self, loadgen, endpoint, args_list, err_path):
        self.err_path = err_path
        self.lines = queue.Queue()
        self.err = open(err_path, "wb")
        self.proc = subprocess.Popen([str(loadgen), "-b", endpoint, "--json"] + args_list,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.err,
                                     preexec_fn=die_with_parent)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def item(self, raw):
        return parse_line(raw)

    def _read(self):
        for raw in self.proc.stdout:
            self.lines.put(self.item(raw))
        self.lines.put(None)

    def stderr_text(self):
        try:
            return Path(self.err_path).read_text(errors="replace")
        except OSError:
            return ""

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)   # it ends the window and reports
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()


# ---------------------------------------------------------------------------
# A reporter's DEALER (PROTOCOL: hello/welcome, event -> ack/nack, ping -> pong)

def pack(m):
    import msgpack
    return msgpack.packb(m, use_bin_type=True)


def dealer(endpoint, unbounded=False):
    """A connected DEALER (LINGER 0; with `unbounded`, no high-water marks)."""
    import zmq
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if unbounded:
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(endpoint)
    return sock


def hello(sock, msg, no_welcome, refused, exc=Fail):
    """Send the hello `msg` and take the first reply: raises exc(no_welcome) when none comes
    within 5 s, exc(refused + reply) when it is not a welcome."""
    import msgpack
    sock.send(pack(msg))
    if not sock.poll(5000):
        raise exc(no_welcome)
    w = msgpack.unpackb(sock.recv(), raw=False)
    if w.get("op") != "welcome":
        raise exc(f"{refused}{w}")


def drain_replies(sock, on_ack, on_nack):
    """Every message waiting on `sock` (without blocking): on_ack(m) for an ack, on_nack(m)
    for a nack, a pong for a ping; others are ignored."""
    import msgpack
    import zmq
    while True:
        try:
            raw = sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            break
        m = msgpack.unpackb(raw, raw=False)
        op = m.get("op")
        if op == "ack":
            on_ack(m)
        elif op == "nack":
            on_nack(m)
        elif op == "ping":
            sock.send(pack({"v": 1, "op": "pong", "id": m.get("id")}))


def take_replies(sock, cases, nacks, noun="event"):
    """drain_replies for an intake of fresh events: an ack puts cases[id] = case (one with
    duplicate:true raises Fail: 'ack with duplicate:true for fresh <noun> <id>'), a nack is
    appended to `nacks`. Returns (acks taken, wall time of the last, or None)."""
    box = [0, None]

    def on_ack(m):
        if m.get("duplicate"):
            raise Fail(f"ack with duplicate:true for fresh {noun} {m.get('id')}")
        cases[m.get("id")] = m.get("case")
        box[0] += 1
        box[1] = time.time()
    drain_replies(sock, on_ack, nacks.append)
    return box[0], box[1]


# ---------------------------------------------------------------------------
# Signatures and figures

def new_secret():
    """A fresh Standard Webhooks secret, 'whsec_' + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def secret_key(secret):
    """The HMAC key of a 'whsec_...' secret."""
    return base64.b64decode(secret[len("whsec_"):])


def verify(key, wid, ts, sig, body):
    """Standard Webhooks (docs/webhooks.md): does one of the space-separated 'v1,<base64>'
    signatures in `sig` equal HMAC-SHA256(key, '<wid>.<ts>.' + body)? False when a
    header is missing."""
    if not (wid and ts and sig):
        return False
    mac = base64.b64encode(hmac.new(key, f"{wid}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(s, "v1," + mac) for s in sig.split())


def pct(sorted_vals, q):
    """Nearest-rank percentile (q in 0..1) of a sorted list; NaN when empty."""
    if not sorted_vals:
        return float("nan")
    k = max(1, min(len(sorted_vals), int(-(-len(sorted_vals) * q // 1))))
    return sorted_vals[k - 1]


def hist_add(total, hist):
    """Merge one of loadgen's histograms ([[low_us, count], ...]) into {low_us: count}."""
    for low, n in hist:
        total[low] = total.get(low, 0) + n


def hist_pct(total, q):
    """Nearest-rank percentile (ms) of a merged histogram {low_us: count}: the bucket's
    lower bound (at most 1/32 below the exact value); NaN when empty."""
    n = sum(total.values())
    if n == 0:
        return float("nan")
    rank = max(1, min(n, int(-(-n * q // 1))))
    acc = 0
    for low in sorted(total):
        acc += total[low]
        if acc >= rank:
            return low / 1000.0
    return max(total) / 1000.0


def finite(x):
    """x with NaN and infinities replaced by None (strict JSON has neither)."""
    if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
        return None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    return x
