"""carehub-send (docs/agents.md): JSON lines → spooled events → the broker, exactly once.

Store-and-forward is proven from the outside: with the broker down the events wait in
the spool (exit 75) and go first on the next run; killed with SIGKILL in the middle of
3000 events and run again, every line is stored exactly once (checked by sending every
id again from a Python agent: all duplicate:true, as many distinct events as lines).
"""

import json
import subprocess
import time

import zmq

import carehub_harness as h
from agent_harness import (EX_DATAERR, EX_NOINPUT, EX_NOPERM, EX_OK, EX_TEMPFAIL, EX_USAGE,
                           SIGKILL, assert_stored_once, finish, free_endpoint, line_id,
                           parse_verbose, read_lines, run_agent, start_agent)

SEND = "carehub-send"
SCHOOL = "school-0042"


def write_lines(path, objs):
    texts = [o if isinstance(o, str) else json.dumps(o, ensure_ascii=False) for o in objs]
    path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    return texts


def send(broker_or_ep, spool, *args, agent=SCHOOL, wait=20, **kw):
    ep = broker_or_ep.endpoint if isinstance(broker_or_ep, h.Broker) else broker_or_ep
    return run_agent(SEND, ["-a", agent, "-b", ep, "--spool", spool, "--wait", wait, "-v", *args], **kw)


def test_help_and_usage(tmp_path):
    r = run_agent(SEND, ["--help"])
    assert r.returncode == EX_OK, r.stderr
    for word in ("usage: carehub-send", "Exit codes", "75", "65", "74", "crypto_generichash",
                 "Examples", "--key-file", "--server-key", "--wait", "--spool"):
        assert word in r.stdout, f"--help lacks {word!r}"
    r = run_agent(SEND, ["absence"])                       # no -a
    assert r.returncode == EX_USAGE and "-a AGENT" in r.stderr, r
    r = run_agent(SEND, ["-a", SCHOOL, "--spool", tmp_path / "s"])   # no TYPE
    assert r.returncode == EX_USAGE, r
    r = run_agent(SEND, ["-a", SCHOOL, "--no-such-option", "absence"])
    assert r.returncode == EX_USAGE, r
    r = run_agent(SEND, ["-a", SCHOOL, "--spool", tmp_path / "s", "absence", tmp_path / "missing"])
    assert r.returncode == EX_NOINPUT and "missing" in r.stderr, r


def test_sends_every_line_once(broker, tmp_path, connect):
    f = tmp_path / "absences.jsonl"
    texts = write_lines(f, [h.absence_body() for _ in range(20)])
    spool = tmp_path / "spool"
    r = send(broker, spool, "absence", f)
    assert r.returncode == EX_OK, r.stderr
    rows = parse_verbose(r.stdout)
    assert [row[0] for row in rows] == [f"{f}:{i}" for i in range(1, 21)]
    # the documented id: a hash of type, file name, line number and line
    assert [row[1] for row in rows] == [line_id("absence", str(f), i + 1, t) for i, t in enumerate(texts)]
    assert all(row[4] == "new" for row in rows), rows
    # again: the same ids, all known to the broker already
    r2 = send(broker, spool, "absence", f)
    assert r2.returncode == EX_OK, r2.stderr
    rows2 = parse_verbose(r2.stdout)
    assert [row[1] for row in rows2] == [row[1] for row in rows]
    assert [row[2] for row in rows2] == [row[2] for row in rows]
    assert all(row[4] == "duplicate" for row in rows2), rows2
    a = connect(broker, login=SCHOOL)
    assert_stored_once(a, "absence", [row[1] for row in rows], h.absence_body())


def test_stdin_and_blank_lines(broker, tmp_path):
    bodies = [json.dumps(h.absence_body()) for _ in range(3)]
    text = bodies[0] + "\n\n  \n" + bodies[1] + "\r\n" + bodies[2]     # no final newline
    r = send(broker, tmp_path / "spool", "absence", input=text)
    assert r.returncode == EX_OK, r.stderr
    rows = parse_verbose(r.stdout)
    assert [row[0] for row in rows] == ["-:1", "-:4", "-:5"], rows
    assert rows[0][1] == line_id("absence", "-", 1, bodies[0])
    assert rows[1][1] == line_id("absence", "-", 4, bodies[1])       # without the \r


def test_broker_down_exits_75_and_next_run_sends_spool_first(make_broker, tmp_path, connect):
    ep = free_endpoint()
    f1 = tmp_path / "day1.jsonl"
    write_lines(f1, [h.absence_body() for _ in range(5)])
    spool = tmp_path / "spool"
    t0 = time.monotonic()
    r = send(ep, spool, "absence", f1, wait=2, timeout=60)
    took = time.monotonic() - t0
    assert r.returncode == EX_TEMPFAIL, f"exit {r.returncode}, expected 75\n{r.stderr}"
    assert took < 20, f"--wait 2 took {took:.1f}s"
    assert "5 waiting" in r.stderr and "spool" in r.stderr, r.stderr
    assert (spool / "data.mdb").is_file()

    # the broker comes up on that endpoint; a run with new lines sends the spooled ones first
    b = make_broker(overrides={"broker": {"listen": [ep]}})
    f2 = tmp_path / "day2.jsonl"
    write_lines(f2, [h.absence_body() for _ in range(3)])
    r2 = send(b, spool, "absence", f2)
    assert r2.returncode == EX_OK, r2.stderr
    rows = parse_verbose(r2.stdout)
    assert [row[0] for row in rows] == [f"{f1}:{i}" for i in range(1, 6)] + [f"{f2}:{i}" for i in range(1, 4)]
    assert all(row[4] == "new" for row in rows), rows
    a = connect(b, login=SCHOOL)
    assert_stored_once(a, "absence", [row[1] for row in rows], h.absence_body())
    # nothing is left: a run without input has nothing to send
    r3 = send(b, spool, "absence", "/dev/null")
    assert r3.returncode == EX_OK and r3.stdout == "", r3


def test_kill9_midway_then_rerun_stores_each_line_once(make_broker, tmp_path, connect):
    b = make_broker()
    n = 3000
    f = tmp_path / "big.jsonl"
    texts = write_lines(f, [h.absence_body() for _ in range(n)])
    ids = [line_id("absence", str(f), i + 1, t) for i, t in enumerate(texts)]
    spool = tmp_path / "spool"
    p = start_agent(SEND, ["-a", SCHOOL, "-b", b.endpoint, "--spool", spool, "-v", "absence", f])
    first = read_lines(p, 5)
    p.send_signal(SIGKILL)
    rc, out, _ = finish(p, SEND)
    assert rc == -SIGKILL, f"carehub-send had finished (exit {rc}) before it was killed"
    acked_before = len(first) + len(out.splitlines())
    assert acked_before < n, "everything was acknowledged before the kill"

    r = send(b, spool, "absence", f, timeout=300)
    assert r.returncode == EX_OK, r.stderr
    rows = parse_verbose(r.stdout)
    assert {row[1] for row in rows} == set(ids)
    # every line once: the Python agent resends every id and gets duplicate:true for all,
    # as many distinct events as lines
    a = connect(b, login=SCHOOL)
    events = assert_stored_once(a, "absence", ids, h.absence_body())
    assert len(events) == n


def test_broker_restart_midway(make_broker, tmp_path, connect):
    """The broker dies (SIGKILL) and comes back during a send: hello again, resend, once each."""
    b = make_broker()
    n = 1500
    f = tmp_path / "big.jsonl"
    texts = write_lines(f, [h.absence_body() for _ in range(n)])
    ids = [line_id("absence", str(f), i + 1, t) for i, t in enumerate(texts)]
    p = start_agent(SEND, ["-a", SCHOOL, "-b", b.endpoint, "--spool", tmp_path / "spool", "-v",
                           "--wait", 60, "--timeout", 1000, "absence", f])
    read_lines(p, 3)
    b.expect_clean_exit = False
    b.restart(graceful=False)
    b.expect_clean_exit = True
    rc, out, err = finish(p, SEND, timeout=120)
    assert rc == EX_OK, err
    assert f"hello from agent {SCHOOL}" in b.log(2), \
        "carehub-send never spoke to the restarted broker (it had finished before the restart?)"
    a = connect(b, login=SCHOOL)
    assert len(assert_stored_once(a, "absence", ids, h.absence_body())) == n


def test_refused_lines_reported_and_kept(broker, tmp_path):
    good = [h.absence_body() for _ in range(3)]
    bad_field = h.absence_body(colour="red")                        # unknown field
    bad_reason = h.absence_body(reason="bored")                     # outside the enum
    lines = [good[0], bad_field, good[1], "this is not json", bad_reason, "[1, 2]", good[2],
             {"id": "bad id with spaces", "body": h.absence_body()}]
    f = tmp_path / "mixed.jsonl"
    texts = write_lines(f, lines)
    spool = tmp_path / "spool"
    r = send(broker, spool, "absence", f)
    assert r.returncode == EX_DATAERR, f"exit {r.returncode}\n{r.stderr}"
    err = r.stderr
    assert f"{f}:2:" in err and "invalid" in err and "/body/colour" in err, err
    assert f"{f}:5:" in err and "/body/reason" in err, err
    assert f"{f}:4:" in err and "not valid JSON" in err, err
    assert f"{f}:6:" in err and "JSON object" in err, err
    assert f"{f}:8:" in err and "id" in err, err
    rows = parse_verbose(r.stdout)
    assert sorted(row[0] for row in rows if row[4] == "new") == [f"{f}:1", f"{f}:3", f"{f}:7"]
    rejected = (spool / "rejected.jsonl").read_text(encoding="utf-8").splitlines()
    assert sorted(rejected) == sorted(texts[i] for i in (1, 3, 4, 5, 7)), rejected
    # --rejected puts them elsewhere
    other = tmp_path / "refused.jsonl"
    r = send(broker, spool, "--rejected", other, "absence", f)
    assert r.returncode == EX_DATAERR
    assert len(other.read_text(encoding="utf-8").splitlines()) == 5


def test_whole_event_lines_keep_id_and_at(make_broker, tmp_path, connect):
    b = make_broker(overrides={"workflows": [
        {"name": "all", "match": {"type": "absence"}, "assign": [{"agency": "police", "ack_within": "1h"}]}]})
    child = h.uid("child")
    at1 = 1741000000000
    lines = [
        {"id": "s42-2025-03-03-c1", "at": at1, "body": h.absence_body(child)},
        {"id": "s42-2025-03-04-c1", "at": "2025-03-04T08:15:00.250+08:00",
         "body": h.absence_body(child, date="2025-03-04", consecutive_days=2)},
        {"body": h.absence_body(child, date="2025-03-05", consecutive_days=3)},   # id from the hash
    ]
    f = tmp_path / "events.jsonl"
    texts = write_lines(f, lines)
    r = send(b, tmp_path / "spool", "absence", f)
    assert r.returncode == EX_OK, r.stderr
    rows = parse_verbose(r.stdout)
    assert [row[1] for row in rows] == ["s42-2025-03-03-c1", "s42-2025-03-04-c1",
                                        line_id("absence", str(f), 3, texts[2])]
    # the same id from another sender is the same event
    a = connect(b, login=SCHOOL)
    ev, _ = h.assert_ack(a.event("absence", h.absence_body(), id="s42-2025-03-03-c1"),
                         "s42-2025-03-03-c1", duplicate=True)
    assert ev == rows[0][2]
    # `at` reaches the broker as given (the police desk sees the case's events)
    desk = connect(b, login="police-desk")
    deadline = time.monotonic() + 10
    case = None
    while time.monotonic() < deadline:
        desk.recv_reply(timeout=0.5)
        cases = [m for m in desk.pushes if m.get("op") == "case" and m.get("case") == rows[0][3]]
        if cases and len(cases[-1].get("events", [])) == 3:
            case = cases[-1]
            break
    assert case is not None, f"no case with three events reached the police desk: {desk.pushes!r}"
    ats = {e["event"]: e["at"] for e in case["events"]}
    assert ats[rows[0][2]] == at1
    assert ats[rows[1][2]] == 1741047300250          # 2025-03-04T00:15:00.250Z


def test_unknown_agent_exits_77_with_events_spooled(broker, tmp_path):
    f = tmp_path / "x.jsonl"
    write_lines(f, [h.absence_body()])
    r = send(broker, tmp_path / "spool", "absence", f, agent="nobody-here")
    assert r.returncode == EX_NOPERM, r
    assert "unauthorized" in r.stderr and "nobody-here" in r.stderr, r.stderr


def test_one_process_per_spool(broker, tmp_path):
    spool = tmp_path / "spool"
    p = start_agent(SEND, ["-a", SCHOOL, "-b", broker.endpoint, "--spool", spool, "absence"],
                    stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not (spool / "data.mdb").exists():       # the first one holds the spool now
            assert time.monotonic() < deadline and p.poll() is None, "carehub-send did not open its spool"
            time.sleep(0.05)
        r = send(broker, spool, "absence", "/dev/null")
        assert r.returncode != EX_OK and "in use" in r.stderr, r
    finally:
        p.stdin.close()
        p.stdin = None
        rc, _, err = finish(p, SEND)
        assert rc == EX_OK, err


def test_curve(make_broker, tmp_path, connect):
    kd = tmp_path / "keys"
    kd.mkdir()
    _, b_pub = h.keygen("broker", kd)
    _, s_pub = h.keygen("school", kd)
    agents = []
    for a in h.AGENTS:
        a = dict(a)
        a["public_key"] = s_pub if a["id"] == SCHOOL else zmq.curve_keypair()[0].decode()
        agents.append(a)
    b = make_broker(overrides={
        "broker": {"security": "curve", "secret_key_file": str(kd / "broker.key")},
        "agents": agents,
    })
    f = tmp_path / "x.jsonl"
    write_lines(f, [h.absence_body() for _ in range(4)])
    keyargs = ["--key-file", kd / "school.key", "--server-key", f"@{kd / 'broker.pub'}"]
    r = send(b, tmp_path / "spool", *keyargs, "absence", f)
    assert r.returncode == EX_OK, r.stderr
    assert all(row[4] == "new" for row in parse_verbose(r.stdout))
    # the key given inline works too (and the ids are the same: duplicates)
    r = send(b, tmp_path / "spool", "--key-file", kd / "school.key", "--server-key", b_pub, "absence", f)
    assert r.returncode == EX_OK, r.stderr
    assert all(row[4] == "duplicate" for row in parse_verbose(r.stdout))
    # a wrong server key: the broker never answers
    wrong = zmq.curve_keypair()[0].decode()
    r = send(b, tmp_path / "spool2", "--key-file", kd / "school.key", "--server-key", wrong,
             "absence", f, wait=2)
    assert r.returncode == EX_TEMPFAIL, r
    # bad key material is a usage error
    r = send(b, tmp_path / "spool3", "--key-file", kd / "school.key", "--server-key", "short", "absence", f)
    assert r.returncode == EX_USAGE, r
    r = send(b, tmp_path / "spool3", "--key-file", kd / "nope.key", "--server-key", b_pub, "absence", f)
    assert r.returncode == EX_NOINPUT, r


def test_too_large_event_refused_not_looped(make_broker, tmp_path):
    """An event over the broker's max_message_bytes (told in welcome) is refused as too_large
    without sending it; one over 4× would make the broker drop the connection, not loop."""
    b = make_broker(overrides={"broker": {"max_message_bytes": 2048}})
    f = tmp_path / "x.jsonl"
    write_lines(f, [h.absence_body(), h.absence_body(note="长" * 1000), h.absence_body(note="x" * 3900)])
    r = send(b, tmp_path / "spool", "absence", f)
    assert r.returncode == EX_DATAERR, r
    assert f"{f}:2:" in r.stderr and f"{f}:3:" in r.stderr and "too_large" in r.stderr, r.stderr
    assert [row[0] for row in parse_verbose(r.stdout) if row[4] == "new"] == [f"{f}:1"]


class FakeBroker:
    """A ROUTER that speaks just enough of the protocol, with hostile extras: junk frames
    before every real answer, one hello_required, one unavailable, a ping and pushes."""

    JUNK = [b"", b"\xc1", b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\x91" * 200 + b"\x00",
            b"\x93\x01\x02\x03", b"\x81\x01\x02", b"\x80\x80", b"\xd9\xff", b"\xa3op",
            h.pack({"op": "ack", "id": "x"}), h.pack({"v": 2, "op": "ack", "id": "x"}),
            h.pack({"v": 1, "op": 7, "id": "x"}), h.pack({"v": 1, "op": "nack"}),
            h.pack({"v": 1, "op": "welcome", "id": "not-our-hello"}),
            h.pack({"v": 1, "op": "ack", "id": {"deep": [1, 2]}, "event": b"\x00bin"}),
            h.pack({"v": 1, "op": "case", "id": "as-1", "events": [{"body": b"\xff\xfe"}]}),
            h.pack({"v": 1, "op": "x" * 100, "id": "x"}),
            h.pack({"v": 1, "op": "ping"}),
            h.pack({"v": 1, "op": "ack", "id": "a" * 300, "duplicate": "yes"})]

    def __init__(self):
        import threading
        self.sock = h.context().socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.hellos, self.pongs, self.received, self.events = [], [], [], []
        self.acked = {}
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def out(self, rid, *frames):
        for fr in frames:
            self.sock.send_multipart([rid, fr])

    def run(self):
        said_hello_required = said_unavailable = False
        n = 0
        while not self.stop:
            if not self.sock.poll(50):
                continue
            rid, *frames = self.sock.recv_multipart()
            msg = h.unpack(frames[0])
            op, mid = msg.get("op"), msg.get("id")
            self.out(rid, *self.JUNK)
            self.sock.send_multipart([rid, b"part1", b"part2"])          # several frames
            if op == "hello":
                self.hellos.append(mid)
                self.out(rid, h.pack({"v": 1, "op": "welcome", "id": mid, "agent": msg["agent"],
                                      "role": "school", "heartbeat_ms": 60000, "max_message_bytes": 262144}))
                self.out(rid, h.pack({"v": 1, "op": "ping", "id": f"ping-{len(self.hellos)}"}),
                         h.pack({"v": 1, "op": "outcome", "id": f"out-{len(self.hellos)}", "event": "ev-1",
                                 "ref": "r", "case": "c", "status": "resolved", "note": "好"}))
            elif op == "pong":
                self.pongs.append(mid)
            elif op == "received":
                self.received.append(mid)
            elif op == "event":
                self.events.append(mid)
                if not said_hello_required:
                    said_hello_required = True
                    self.out(rid, h.pack({"v": 1, "op": "nack", "id": mid, "code": "hello_required",
                                          "error": "say hello first"}))
                elif not said_unavailable and mid not in self.acked:
                    said_unavailable = True
                    self.out(rid, h.pack({"v": 1, "op": "nack", "id": mid, "code": "unavailable",
                                          "error": "storage is full, retry later"}))
                else:
                    if mid not in self.acked:
                        n += 1
                        self.acked[mid] = f"ev-{n}"
                    self.out(rid, h.pack({"v": 1, "op": "ack", "id": mid, "event": self.acked[mid],
                                          "case": f"case-{n}", "duplicate": False}))

    def close(self):
        self.stop = True
        self.thread.join(5)
        self.sock.close(0)


def test_hostile_broker_frames_and_session_nacks(tmp_path):
    fb = FakeBroker()
    try:
        f = tmp_path / "x.jsonl"
        write_lines(f, [h.absence_body() for _ in range(5)])
        r = run_agent(SEND, ["-a", SCHOOL, "-b", fb.endpoint, "--spool", tmp_path / "spool", "-v",
                             "--wait", 20, "--timeout", 300, "absence", f], timeout=60)
    finally:
        fb.close()
    assert r.returncode == EX_OK, r.stderr
    rows = parse_verbose(r.stdout)
    assert len(rows) == 5 and len({row[1] for row in rows}) == 5 and all(row[4] == "new" for row in rows)
    assert len(fb.hellos) >= 2, "no hello again after hello_required"
    assert "ping-1" in fb.pongs, f"the broker's ping was not answered: {fb.pongs}"
    # carehub-send shows no outcomes, so it must not confirm them (they wait for carehub-report)
    assert fb.received == [], f"carehub-send confirmed outcomes nobody saw: {fb.received}"
    assert len(fb.events) > 5, "nothing was resent after hello_required / unavailable"
