"""carehub-monitor (docs/agents.md): online-risk detections → online_risk events.

A file of N detections gives N events; --follow picks up lines appended later (and a
truncated file); a second run over the same feed stores nothing twice.
"""

import json
import subprocess
import time

import carehub_harness as h
from agent_harness import (EX_DATAERR, EX_OK, EX_TEMPFAIL, SIGTERM, assert_stored_once, finish,
                           free_endpoint, line_id, parse_verbose, read_lines, run_agent,
                           start_agent)

MON = "carehub-monitor"
MONITOR = "monitor-01"


def detection(n, with_id=True, **kw):
    d = {"risk": "cyberbullying", "platform": "weibo", "url": f"https://weibo.example/p/{n}",
         "account": f"user{n}", "at": "2025-03-03T23:10:00+08:00"}
    if with_id:
        d["id"] = f"det-{n}-{h.uid('x')}"
    d.update(kw)
    return d


def write(path, dets, mode="w"):
    texts = [d if isinstance(d, str) else json.dumps(d, ensure_ascii=False) for d in dets]
    with open(path, mode, encoding="utf-8") as f:
        f.write("".join(t + "\n" for t in texts))
        f.flush()
    return texts


def monitor(broker, spool, *args, wait=20, **kw):
    return run_agent(MON, ["-a", MONITOR, "-b", broker.endpoint, "--spool", spool, "--wait", wait,
                           "-v", *args], **kw)


def test_help(tmp_path):
    r = run_agent(MON, ["--help"])
    assert r.returncode == EX_OK, r.stderr
    for word in ("usage: carehub-monitor", "--follow", "Exit codes", "online_risk", "Examples",
                 "crypto_generichash"):
        assert word in r.stdout, f"--help lacks {word!r}"


def test_file_of_n_detections_gives_n_events(broker, tmp_path, connect):
    n = 40
    dets = [detection(i, with_id=i % 2 == 0) for i in range(n)]
    f = tmp_path / "detections.jsonl"
    texts = write(f, dets)
    r = monitor(broker, tmp_path / "spool", f)
    assert r.returncode == EX_OK, r.stderr
    rows = parse_verbose(r.stdout)
    assert len(rows) == n and all(row[4] == "new" for row in rows), rows
    want = [d["id"] if "id" in d else line_id("online_risk", str(f), i + 1, texts[i])
            for i, d in enumerate(dets)]
    assert [row[1] for row in rows] == want
    assert len({row[2] for row in rows}) == n
    # they are online_risk events of monitor-01: resent, each is a duplicate of its own event
    a = connect(broker, login=MONITOR)
    events = assert_stored_once(a, "online_risk", want, h.online_risk_body())
    assert events == {row[2] for row in rows}


def test_running_twice_does_not_duplicate(broker, tmp_path):
    f = tmp_path / "detections.jsonl"
    write(f, [detection(i, with_id=i < 5) for i in range(10)])
    spool = tmp_path / "spool"
    r1 = monitor(broker, spool, f)
    assert r1.returncode == EX_OK, r1.stderr
    r2 = monitor(broker, spool, f)
    assert r2.returncode == EX_OK, r2.stderr
    rows1, rows2 = parse_verbose(r1.stdout), parse_verbose(r2.stdout)
    assert all(row[4] == "new" for row in rows1)
    assert all(row[4] == "duplicate" for row in rows2), rows2
    assert [(row[1], row[2]) for row in rows1] == [(row[1], row[2]) for row in rows2]
    # from standard input too, twice
    text = f.read_text(encoding="utf-8")
    s1 = monitor(broker, spool, input=text)
    s2 = monitor(broker, spool, input=text)
    assert s1.returncode == EX_OK and s2.returncode == EX_OK, (s1.stderr, s2.stderr)
    assert [row[1] for row in parse_verbose(s1.stdout)] == [row[1] for row in parse_verbose(s2.stdout)]
    assert all(row[4] == "duplicate" for row in parse_verbose(s2.stdout))


def test_follow_picks_up_appended_lines(broker, tmp_path, connect):
    f = tmp_path / "feed.jsonl"
    first = write(f, [detection(i) for i in range(2)])
    p = start_agent(MON, ["-a", MONITOR, "-b", broker.endpoint, "--spool", tmp_path / "spool", "-v",
                          "--follow", "--poll-interval", 50, f])
    try:
        got = read_lines(p, 2)
        more = [detection(i) for i in range(2, 5)]
        write(f, more, mode="a")
        got += read_lines(p, 3)
        # a line written in two pieces is read once it is complete
        last = json.dumps(detection(9, with_id=False))
        with open(f, "a", encoding="utf-8") as fh:
            fh.write(last[:20])
            fh.flush()
            time.sleep(0.3)
            fh.write(last[20:] + "\n")
        got += read_lines(p, 1)
    finally:
        rc, out, err = finish(p, MON, sig=SIGTERM)
    assert rc == EX_OK, err
    rows = parse_verbose("\n".join(got))
    assert [row[0] for row in rows] == [f"{f}:{i}" for i in range(1, 7)]
    assert all(row[4] == "new" for row in rows), rows
    assert rows[5][1] == line_id("online_risk", str(f), 6, last)
    a = connect(broker, login=MONITOR)
    assert_stored_once(a, "online_risk", [row[1] for row in rows], h.online_risk_body())


def test_follow_truncated_file_starts_again(broker, tmp_path):
    f = tmp_path / "feed.jsonl"
    write(f, [detection(i) for i in range(3)])
    p = start_agent(MON, ["-a", MONITOR, "-b", broker.endpoint, "--spool", tmp_path / "spool", "-v",
                          "--follow", "--poll-interval", 50, f])
    try:
        read_lines(p, 3)
        write(f, [detection(7)])                     # truncated and rewritten
        rows = parse_verbose(read_lines(p, 1)[0])
    finally:
        rc, _, err = finish(p, MON, sig=SIGTERM)
    assert rc == EX_OK, err
    assert rows[0][0] == f"{f}:1" and rows[0][4] == "new"


def test_refused_detection_and_broker_down(broker, tmp_path):
    f = tmp_path / "d.jsonl"
    texts = write(f, [detection(1), detection(2, risk="weather"), detection(3, at="yesterday")])
    spool = tmp_path / "spool"
    r = monitor(broker, spool, f)
    assert r.returncode == EX_DATAERR, r
    assert f"{f}:2:" in r.stderr and "/body/risk" in r.stderr, r.stderr
    assert f"{f}:3:" in r.stderr and "at" in r.stderr, r.stderr
    assert sorted((spool / "rejected.jsonl").read_text(encoding="utf-8").splitlines()) == sorted(texts[1:])
    # the broker down: spooled, exit 75
    g = tmp_path / "good.jsonl"
    write(g, [detection(4), detection(5)])
    r = run_agent(MON, ["-a", MONITOR, "-b", free_endpoint(), "--spool", tmp_path / "s2", "--wait", 1,
                        g], timeout=60)
    assert r.returncode == EX_TEMPFAIL, r
    assert "2 waiting" in r.stderr, r.stderr
