"""carehub-agency: an agency's case desk, against a real broker.

  * `run --json` prints each assignment as one JSON line (the `case` message);
    the readable output never shows the child's name or id unless
    --show-names is given;
  * a repeat of an assignment (re-delivery) is printed once per run; a new
    event joining the case is shown again (events_total grows);
  * a desk killed and started again mid-day receives every assignment still
    unacknowledged, and not the acknowledged ones;
  * `ack` and `update` print the broker's answer and exit 0; a conflict or an
    unknown assignment exits 65, a usage error 64, no broker 75;
  * `list` prints the assignments waiting and exits;
  * `--exec CMD` runs CMD per new assignment with the JSON on stdin and
    CAREHUB_* in the environment; a command that hangs is stopped after
    --exec-timeout and does not hold up the desk.

Programs: $CAREHUB_BIN_DIR (make e2e: build/san/bin) or <repo>/bin.
"""

import json
import os
import queue
import signal
import subprocess
import re
import threading
import time
from pathlib import Path

import pytest

import carehub_harness as h
from routing_harness import check_case_msg, routing_config, send_event, wait_push

REPORT_TO_POLICE = {"name": "report", "match": {"type": "mandatory_report"},
                    "assign": [{"agency": "police", "ack_within": "1h"}]}


def bin_dir():
    return Path(os.environ.get("CAREHUB_BIN_DIR") or h.REPO / "bin")


def prog(name):
    p = bin_dir() / name
    if not (p.is_file() and os.access(p, os.X_OK)):
        pytest.fail(f"{p} not found: build it (make, or make san-build) or set CAREHUB_BIN_DIR",
                    pytrace=False)
    return str(p)


def check_sanitizers(name, text):
    for m in h.SANITIZER_MARKERS:
        assert m not in text, f"{name}: sanitizer report:\n{text[-6000:]}"


def run(name, *args, timeout=60, input=None, env=None):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([prog(name)] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout, input=input, env=e)
    check_sanitizers(name, p.stderr)
    return p


def agency(broker, *args, agent="police-desk", **kw):
    return run("carehub-agency", "-b", broker.endpoint, "-a", agent, *args, **kw)


class Desk:
    """A running `carehub-agency run`: its stdout lines arrive in a queue."""

    def __init__(self, broker, tmp_path, *args, agent="police-desk", env=None, name="desk"):
        self.errpath = tmp_path / f"{name}.stderr"
        self.err = open(self.errpath, "w")
        e = dict(os.environ)
        e.update(env or {})
        self.proc = subprocess.Popen(
            [prog("carehub-agency"), "-b", broker.endpoint, "-a", agent,
             "--spool", str(tmp_path / f"{name}-spool"), "run", *args],
            stdout=subprocess.PIPE, stderr=self.err, stdin=subprocess.DEVNULL, text=True, env=e)
        self.q = queue.Queue()
        self.lines = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.proc.stdout:
            self.q.put(line.rstrip("\n"))

    def next_line(self, timeout=5.0):
        try:
            ln = self.q.get(timeout=timeout)
        except queue.Empty:
            return None
        self.lines.append(ln)
        return ln

    def wait_json(self, pred, timeout=8.0):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ln = self.next_line(max(0.0, left)) if left > 0 else None
            if ln is None:
                raise AssertionError(f"no matching JSON line within {timeout}s; lines: {self.lines}\n"
                                     f"stderr: {self.stderr()}")
            m = json.loads(ln)
            if pred(m):
                return m

    def wait_text(self, needle, timeout=8.0):
        deadline = time.monotonic() + timeout
        while not any(needle in ln for ln in self.lines):
            left = deadline - time.monotonic()
            if left <= 0 or self.next_line(left) is None:
                raise AssertionError(f"no line with {needle!r}; lines: {self.lines}\n"
                                     f"stderr: {self.stderr()}")

    def drain(self, seconds):
        """Lines that arrive within `seconds`."""
        got = []
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return got
            ln = self.next_line(left)
            if ln is not None:
                got.append(ln)

    def stderr(self):
        if not self.err.closed:
            self.err.flush()
        return self.errpath.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"carehub-agency did not stop on signal {sig}")
        self.t.join(timeout=5)
        self.err.close()
        if sig != signal.SIGKILL:
            check_sanitizers("carehub-agency", self.stderr())
        return rc


@pytest.fixture
def desks():
    made = []

    def factory(*a, **kw):
        d = Desk(*a, **kw)
        made.append(d)
        return d

    yield factory
    for d in made:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def routed_broker(make_broker, tmp_path, workflows=(REPORT_TO_POLICE,), broker=None):
    name = "carehubd-routed"
    cfg = routing_config(tmp_path / name, workflows=list(workflows), broker=broker)
    return make_broker(config=cfg, name=name)


def report(reporter, child_id, name="王芳", **kw):
    body = h.mandatory_report_body(child_id, **kw)
    body["child"]["name"] = name
    _, ev, case = send_event(reporter, "mandatory_report", body)
    return ev, case


# --------------------------------------------------------------------------

def test_help():
    p = run("carehub-agency", "--help")
    assert p.returncode == 0, p.stderr
    for word in ("run", "ack", "update", "list", "--exec", "--show-names", "referred"):
        assert word in p.stdout, word


def test_run_json_prints_the_assignment(make_broker, connect, desks, tmp_path):
    b = routed_broker(make_broker, tmp_path)
    desk = desks(b, tmp_path, "--json")
    reporter = connect(b, login="reporter-01")
    ev, case = report(reporter, "C-1", name="王芳")
    m = desk.wait_json(lambda m: m.get("case") == case)
    check_case_msg(m, case=case, agency="police", type="mandatory_report", events_total=1)
    assert m["events"][-1]["event"] == ev
    assert m["events"][-1]["body"]["child"]["name"] == "王芳", "--json carries everything"
    assert desk.stop() == 0


def test_readable_output_hides_the_child(make_broker, connect, desks, tmp_path):
    b = routed_broker(make_broker, tmp_path)
    desk = desks(b, tmp_path)
    reporter = connect(b, login="reporter-01")
    _, case = report(reporter, "SECRET-ID-7", name="隐私测试", description="隐私测试 was seen crying.",
                     severity="critical")
    desk.wait_text(case)
    desk.wait_text("latest: mandatory_report")
    desk.drain(0.5)
    out = "\n".join(desk.lines)
    assert "NEW assignment" in out and "agency 滨海新区公安局 (police)" in out and "severity critical" in out, out
    assert "harm=neglect" in out and "reporter=" in out, out
    assert "acknowledge by" in out, out
    assert "隐私测试" not in out and "SECRET-ID-7" not in out, out
    assert desk.stop() == 0
    assert "隐私测试" not in desk.stderr() and "SECRET-ID-7" not in desk.stderr()

    # list: hidden by default, shown with --show-names
    p = agency(b, "list", "--wait", "1")
    assert p.returncode == 0, p.stderr
    assert case in p.stdout and "隐私测试" not in p.stdout and "SECRET-ID-7" not in p.stdout
    p = agency(b, "list", "--wait", "1", "--show-names")
    assert p.returncode == 0, p.stderr
    assert "name=隐私测试" in p.stdout and "id=SECRET-ID-7" in p.stdout, p.stdout
    assert "description: 隐私测试 was seen crying." in p.stdout


def test_repeats_are_printed_once(make_broker, connect, desks, tmp_path):
    b = routed_broker(make_broker, tmp_path, broker={"redeliver_every": "1s"})
    desk = desks(b, tmp_path, "--json")
    reporter = connect(b, login="reporter-01")
    _, case = report(reporter, "C-REP")
    m = desk.wait_json(lambda m: m.get("case") == case)
    more = desk.drain(3.0)          # re-delivered about every second meanwhile
    assert [ln for ln in more if case in ln] == [], more
    # a new event joins the case: shown again, with two events
    _, case2 = report(reporter, "C-REP", description="Seen again today, still alone.")
    assert case2 == case
    m2 = desk.wait_json(lambda x: x.get("case") == case)
    assert m2["id"] == m["id"] and m2["events_total"] == 2, m2
    more = desk.drain(2.0)
    assert [ln for ln in more if case in ln] == [], more
    assert desk.stop() == 0


def test_desk_shows_the_resolve_deadline_once_acknowledged(make_broker, connect, desks, tmp_path):
    """With resolve_within (PROTOCOL §10) the broker pushes the case again after the
    acknowledgement, with resolve_by: the desk then names that deadline instead of
    the acknowledgement's."""
    wf = dict(REPORT_TO_POLICE, assign=[{"agency": "police", "ack_within": "1h",
                                         "resolve_within": "3d"}])
    b = routed_broker(make_broker, tmp_path, workflows=(wf,))
    desk = desks(b, tmp_path, name="desk-r")
    _, case = report(connect(b, login="reporter-01"), "C-RB1")
    desk.wait_text("acknowledge by")
    p = agency(b, "list", "--json", "--wait", "1")
    assert p.returncode == 0, p.stderr
    (a,) = [m["id"] for m in map(json.loads, p.stdout.splitlines()) if m["case"] == case]
    assert "resolve by" not in "\n".join(desk.lines), "no resolve deadline before the acknowledgement"
    assert agency(b, "ack", a, "--by", "王警官").returncode == 0
    desk.wait_text("resolve by")
    line = next(ln for ln in desk.lines if "resolve by" in ln)
    assert re.search(r"resolve by .* \(in 2d 23h", line), line
    assert desk.stop() == 0


def test_restarted_desk_receives_every_unacknowledged(make_broker, connect, desks, tmp_path):
    b = routed_broker(make_broker, tmp_path)
    reporter = connect(b, login="reporter-01")
    desk = desks(b, tmp_path, "--json", name="desk-1")
    cases = [report(reporter, f"C-R{i}")[1] for i in range(3)]
    got = {}
    for c in cases:
        m = desk.wait_json(lambda m, c=c: m.get("case") == c)
        got[c] = m["id"]

    # acknowledge the first from another terminal while the desk runs
    p = agency(b, "ack", got[cases[0]], "--by", "王警官")
    assert p.returncode == 0, p.stderr
    assert f"assignment {got[cases[0]]} acknowledged by 王警官" in p.stdout, p.stdout

    desk.stop(signal.SIGKILL)       # the desk dies mid-day
    _, late = report(reporter, "C-R3")   # a new case while it is down

    desk2 = desks(b, tmp_path, "--json", name="desk-1")   # same spool, started again
    want = {cases[1], cases[2], late}
    seen = {}
    deadline = time.monotonic() + 10
    while set(seen) != want and time.monotonic() < deadline:
        ln = desk2.next_line(0.5)
        if ln:
            m = json.loads(ln)
            seen.setdefault(m["case"], []).append(m["id"])
    assert set(seen) == want, (seen, desk2.stderr())
    more = desk2.drain(1.0)
    assert not any(cases[0] in ln for ln in more), "the acknowledged assignment is not delivered again"
    assert all(len(v) == 1 for v in seen.values()), seen
    assert desk2.stop() == 0


def test_ack_and_update(make_broker, connect, tmp_path):
    b = routed_broker(make_broker, tmp_path)
    reporter = connect(b, login="reporter-01")
    _, case = report(reporter, "C-U1")
    _, case2 = report(reporter, "C-U2")

    p = agency(b, "list", "--json", "--wait", "1")
    assert p.returncode == 0, p.stderr
    msgs = {m["case"]: m for m in (json.loads(ln) for ln in p.stdout.splitlines())}
    assert {case, case2} <= set(msgs), msgs
    a1, a2 = msgs[case]["id"], msgs[case2]["id"]

    p = agency(b, "ack", a1, "--by", "王警官", "--json")
    assert p.returncode == 0, p.stderr
    ack = json.loads(p.stdout)
    assert ack["op"] == "ack" and ack["assignment"] == a1 and ack["case"] == case, ack

    p = agency(b, "update", a1, "in_progress", "--note", "officer on the way")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"assignment {a1}: in_progress (case {case})"
    p = agency(b, "update", a1, "resolved", "--note", "child placed with her aunt")
    assert p.returncode == 0, p.stderr
    p = agency(b, "update", a1, "resolved", "--note", "child placed with her aunt")
    assert p.returncode == 0, "the same final status again is a retry"

    p = agency(b, "update", a1, "declined")
    assert p.returncode == 65, (p.stdout, p.stderr)
    assert "conflict" in p.stderr, p.stderr
    p = agency(b, "update", a1, "declined", "--json")
    assert p.returncode == 65
    nack = json.loads(p.stdout)
    assert nack["op"] == "nack" and nack["code"] == "conflict", nack

    p = agency(b, "ack", "as-does-not-exist", "--by", "x")
    assert p.returncode == 65 and "not_found" in p.stderr, p.stderr
    p = agency(b, "ack", a2, "--by", "x", agent="edu-desk")   # not its agency
    assert p.returncode == 65, p.stderr

    # usage errors: nothing is sent
    for args in (["update", a2, "referred"], ["update", a2, "finished"], ["ack", a2],
                 ["update", a2, "resolved", "--to", "court"], ["ack", "bad id!", "--by", "x"],
                 ["fly"]):
        p = agency(b, *args)
        assert p.returncode == 64, (args, p.stderr)

    # a referral: the other agency gets a new assignment
    civil = connect(b, login="civil-desk")
    p = agency(b, "update", a2, "referred", "--to", "civil_affairs", "--note", "guardianship matter")
    assert p.returncode == 0, p.stderr
    assert "referred to civil_affairs" in p.stdout
    m = wait_push(civil, "case", pred=lambda m: m["case"] == case2)
    assert m["agency"] == "civil_affairs"

    # no broker
    ep = f"tcp://127.0.0.1:{h.free_port()}"
    p = run("carehub-agency", "-b", ep, "-a", "police-desk", "ack", a2, "--by", "x", "--wait", "1")
    assert p.returncode == 75, p.stderr


def test_exec_runs_per_new_assignment(make_broker, connect, desks, tmp_path):
    b = routed_broker(make_broker, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    cmd = ('cat > "$OUT/$CAREHUB_ASSIGNMENT.json"; '
           'echo "$CAREHUB_CASE $CAREHUB_AGENCY $CAREHUB_SEVERITY" > "$OUT/$CAREHUB_ASSIGNMENT.env"')
    desk = desks(b, tmp_path, "--json", "--exec", cmd, env={"OUT": str(out)})
    reporter = connect(b, login="reporter-01")
    _, case = report(reporter, "C-X1", severity="high")
    m = desk.wait_json(lambda m: m.get("case") == case)
    js, env = out / f"{m['id']}.json", out / f"{m['id']}.env"
    deadline = time.monotonic() + 5
    while not (env.exists() and env.read_text().endswith("\n")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert json.loads(js.read_text()) == m
    assert env.read_text().split() == [case, "police", "high"]
    assert desk.stop() == 0


def test_exec_that_hangs_does_not_block(make_broker, connect, desks, tmp_path):
    b = routed_broker(make_broker, tmp_path)
    desk = desks(b, tmp_path, "--json", "--exec", "sleep 30", "--exec-timeout", "1")
    reporter = connect(b, login="reporter-01")
    cases = [report(reporter, f"C-H{i}")[1] for i in range(3)]
    t0 = time.monotonic()
    for c in cases:
        desk.wait_json(lambda m, c=c: m.get("case") == c, timeout=5)
    assert time.monotonic() - t0 < 5
    deadline = time.monotonic() + 10
    while "ended by signal" not in desk.stderr() and time.monotonic() < deadline:
        time.sleep(0.1)
    err = desk.stderr()
    assert "stopping it" in err and "ended by signal 15" in err, err
    assert desk.stop() == 0


def test_desk_stops_when_its_output_is_gone(make_broker, connect, tmp_path):
    """`run --json | consumer`: when the consumer dies the desk exits 74 rather than
    show cases to no one (they are delivered again at its next start)."""
    b = routed_broker(make_broker, tmp_path)
    proc = subprocess.Popen([prog("carehub-agency"), "-b", b.endpoint, "-a", "police-desk",
                             "--spool", str(tmp_path / "spool"), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        reporter = connect(b, login="reporter-01")
        report(reporter, "C-P1")
        first = proc.stdout.readline()
        assert json.loads(first)["op"] == "case"
        proc.stdout.close()
        report(reporter, "C-P2")
        rc = proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read().decode()
    check_sanitizers("carehub-agency", err)
    assert rc == 74, (rc, err)
    assert "cannot write to standard output" in err, err
