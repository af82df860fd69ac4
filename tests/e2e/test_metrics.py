"""broker.metrics (extension, docs/metrics.md): the Prometheus endpoint of a running
broker, scraped after some traffic; `promtool check metrics` accepts it."""

import re
import shutil
import subprocess

import carehub_harness as h
from routing_harness import routing_config, send_event, wait_push


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
