"""broker.metrics (extension, docs/metrics.md): the Prometheus endpoint of a running
broker, scraped after some traffic; `promtool check metrics` accepts it."""

import re
import shutil
import subprocess

import carehub_harness as h
from routing_harness import (CLOCK_AGENT, case_ack, case_update, clock, make_clock_broker,  # noqa: F401
                             routing_config, send_event, wait_push)


def test_metrics_endpoint(make_broker, tmp_path, connect):
    cfg = routing_config(tmp_path / "b", workflows=[
        {"name": "r", "match": {"type": "mandatory_report"},
         "assign": [{"agency": "police", "ack_within": "1h"}]}],
        broker={"metrics": "127.0.0.1:0"})
    b = make_broker(config=cfg, name="b")
    police = connect(b, login="police-desk")
    rep = connect(b, login="reporter-01")
    send_event(rep, "mandatory_report", h.mandatory_report_body())
    wait_push(police)
    r = rep.request({"v": 1, "op": "event", "id": h.uid("bad"), "type": "nope", "at": 1, "body": {}})
    assert r.get("code") == "unknown_type"
    text = b.metrics_text()
    assert 'carehub_events_total{type="mandatory_report"} 1' in text, text
    assert 'carehub_nacks_total{code="unknown_type"} 1' in text
    assert re.search(r"^carehub_assignments_open 1$", text, re.M), text
    assert re.search(r"^carehub_commit_seconds_count [1-9]", text, re.M)
    assert re.search(r"^carehub_lmdb_map_used_bytes [1-9]", text, re.M)
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian prometheus) is installed by make deps"
    p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_open_and_overdue_follow_the_assignments(make_clock_broker, tmp_path, connect):
    """carehub_assignments_open / _overdue come from a counter and the ack_due index kept
    as states change (issue 10: a scrape does not read every assignment): they follow
    acks, resolutions and the clock, and survive a restart."""
    cfg = routing_config(tmp_path / "b", workflows=[
        {"name": "r", "match": {"type": "mandatory_report"},
         "assign": [{"agency": "police", "ack_within": "1h"}]}],
        broker={"metrics": "127.0.0.1:0"})
    b = make_clock_broker(config=cfg, name="b")
    clk = connect(b, login=CLOCK_AGENT)
    police = connect(b, login="police-desk")
    rep = connect(b, login="reporter-01")
    ids = []
    for _ in range(4):
        send_event(rep, "mandatory_report", h.mandatory_report_body())
        ids.append(wait_push(police)["id"])

    def gauges():
        text = b.metrics_text()
        o = re.search(r"^carehub_assignments_open (\d+)$", text, re.M)
        d = re.search(r"^carehub_assignments_overdue (\d+)$", text, re.M)
        assert o and d, text
        return int(o.group(1)), int(d.group(1))

    assert gauges() == (4, 0)
    case_ack(police, ids[0])                             # acknowledged: open, never overdue
    case_update(police, ids[1], "resolved")              # final
    assert gauges() == (3, 0)
    clock(clk, advance=3600 * 1000 + 1)                  # past ack_by: the two unacked
    assert gauges() == (3, 2)
    case_ack(police, ids[2])
    assert gauges() == (3, 1)
    b.stop()
    b.start()
    clk = connect(b, login=CLOCK_AGENT)                  # the test clock starts afresh
    assert gauges() == (3, 0)
    clock(clk, advance=3600 * 1000 + 1)
    assert gauges() == (3, 1), "the figures are kept in the store"
    police = connect(b, login="police-desk")
    case_update(police, ids[3], "declined")              # final; the fallback gets a new one
    assert gauges() == (3, 0)                            # (its ack_by an hour from now)
    case_update(police, ids[0], "resolved")
    assert gauges() == (2, 0)
    # A store from before the figures: the counter and the index are built at start.
    b.stop()
    import lmdb
    env = lmdb.open(str(tmp_path / "b" / "data"), max_dbs=32)
    try:
        for name in (b"counters", b"ack_due"):
            with env.begin(write=True) as t:
                t.drop(env.open_db(name, txn=t, create=False), delete=False)
    finally:
        env.close()
    b.start()
    assert "figures built from the assignments" in b.log()
    clk = connect(b, login=CLOCK_AGENT)
    clock(clk, advance=2 * 3600 * 1000 + 1)              # the fallback's ack_by passes too
    assert gauges() == (2, 1)
