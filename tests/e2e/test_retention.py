"""CONFIG.md privacy.retention: resolved cases older than the retention are purged,
leaving a stub in the trail (that it existed, when, that it was purged); the trail
still verifies. Runs on the broker's test clock."""

import os

import carehub_harness as h
from carehub_harness import uid
from routing_harness import (case_ack, case_update, clock, make_clock_broker,  # noqa: F401
                             routing_config, send_event, wait_push)

DAY = 24 * 3600 * 1000


def data_dir_ok(cfg):
    return bool(cfg["broker"]["data_dir"])


def q(agent, **kw):
    return agent.request(dict({"v": 1, "op": "query", "id": uid("q")}, **kw))


def test_resolved_case_purged_after_retention(make_clock_broker, tmp_path, connect):
    key = tmp_path / "data.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    cfg = routing_config(tmp_path / "b", workflows=[
        {"name": "r", "match": {"type": "mandatory_report"},
         "assign": [{"agency": "police", "ack_within": "1h"}]}])
    cfg["privacy"] = {"key_file": str(key), "retention": "2d"}
    b = make_clock_broker(config=cfg, name="b")
    assert data_dir_ok(cfg)
    police = connect(b, login="police-desk")
    rep = connect(b, login="reporter-01")
    name = "CANARY-" + uid("n")
    _, ev, case = send_event(rep, "mandatory_report", h.mandatory_report_body(
        uid("c"), child={"id": uid("cid"), "name": name}))
    a = wait_push(police, pred=lambda m: m["case"] == case)
    assert case_update(police, a["id"], "resolved", note="done")[1].get("op") == "ack"
    sup = connect(b, login="supervisor-01")
    assert q(sup, what="case", case=case).get("op") == "result", "readable before the retention"
    clock(sup, advance=DAY)
    assert q(sup, what="case", case=case).get("op") == "result", "one day: still kept"
    clock(sup, advance=DAY + 1000)
    h.assert_nack(q(sup, what="case", case=case), "not_found")
    # the stub: the trail says it existed and was purged, and still verifies
    v = q(sup, what="verify")
    assert v.get("intact") is True, v
    b.stop()
    out = h.run_bin(["verify", "--data", cfg["broker"]["data_dir"]])
    assert out.returncode == 0, out.stdout + out.stderr
    import lmdb
    env = lmdb.open(cfg["broker"]["data_dir"], max_dbs=32, readonly=True, lock=False)
    trail = env.open_db(b"trail")
    import msgpack
    with env.begin() as txn:
        recs = [msgpack.unpackb(v, raw=False) for _, v in txn.cursor(db=trail)]
        data = b"".join(v for _, v in txn.cursor())
    purged = {(r["db"], r["obj"]) for r in recs if r["kind"] == "purged"}
    assert ("events", ev) in purged and ("cases", case) in purged and ("assignments", a["id"]) in purged, purged
    with open(os.path.join(cfg["broker"]["data_dir"], "data.mdb"), "rb") as f:
        assert name.encode() not in f.read()
