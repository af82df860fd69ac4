"""CONFIG.md privacy.retention: resolved cases older than the retention are purged,
leaving a stub in the trail (that it existed, when, that it was purged); the trail
still verifies. Runs on the broker's test clock."""

import os

import lmdb
import msgpack

import carehub_harness as h
from carehub_harness import uid
from routing_harness import (case_ack, case_update, clock, make_clock_broker,  # noqa: F401
                             routing_config, send_event, wait_push)

DAY = 24 * 3600 * 1000

def stored(data_dir, keys):
    """{(db, key) for (db, key) in keys that the store at data_dir holds}, read with
    LMDB directly (a reader beside the running broker, or after it stopped)."""
    assert os.path.isfile(os.path.join(data_dir, "data.mdb")), f"no store in {data_dir}"
    env = lmdb.open(data_dir, max_dbs=32, readonly=True)
    try:
        found = set()
        with env.begin() as txn:
            for db, key in keys:     # (case_assign is DUPSORT: any entry of the key counts)
                if txn.cursor(db=env.open_db(db.encode(), txn=txn, create=False)).set_key(key.encode()):
                    found.add((db, key))
        return found
    finally:
        env.close()


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
    data_dir = cfg["broker"]["data_dir"]
    b = make_clock_broker(config=cfg, name="b")
    police = connect(b, login="police-desk")
    rep = connect(b, login="reporter-01")
    _, ev, case = send_event(rep, "mandatory_report", h.mandatory_report_body(
        None, child={"id": uid("cid"), "name": "CANARY-" + uid("n")}))
    a = wait_push(police, pred=lambda m: m["case"] == case)
    # a control: another child's case, acknowledged but never resolved, is kept
    _, kept_ev, kept_case = send_event(rep, "mandatory_report", h.mandatory_report_body(
        None, child={"id": uid("cid"), "name": "CANARY-" + uid("n")}))
    k = wait_push(police, pred=lambda m: m["case"] == kept_case)
    assert case_ack(police, k["id"])[1].get("op") == "ack"
    assert case_update(police, a["id"], "resolved", note="done")[1].get("op") == "ack"

    purged_keys = {("events", ev), ("assignments", a["id"]), ("cases", case), ("case_assign", case)}
    kept_keys = {("events", kept_ev), ("assignments", k["id"]), ("cases", kept_case),
                 ("case_assign", kept_case)}
    # the precondition: both cases' records are in the store this test reads
    have = stored(data_dir, purged_keys | kept_keys)
    assert have == purged_keys | kept_keys, \
        f"before the retention the store lacks {sorted((purged_keys | kept_keys) - have)}"

    sup = connect(b, login="supervisor-01")
    assert q(sup, what="case", case=case).get("op") == "result", "readable before the retention"
    clock(sup, advance=DAY)
    assert q(sup, what="case", case=case).get("op") == "result", "one day: still kept"
    clock(sup, advance=DAY + 1000)
    h.assert_nack(q(sup, what="case", case=case), "not_found")
    assert q(sup, what="case", case=kept_case).get("op") == "result", "the unresolved case went too"
    # the stub: the trail says it existed and was purged, and still verifies
    v = q(sup, what="verify")
    assert v.get("intact") is True, v
    assert b.stop() == 0
    out = h.run_bin(["verify", "--data", data_dir])
    assert out.returncode == 0, out.stdout + out.stderr

    # on disk: the resolved case's event (the child's data), assignment and case
    # (and its index entry) are gone; the other case's are all there
    have = stored(data_dir, purged_keys | kept_keys)
    assert not have & purged_keys, f"still stored after the retention: {sorted(have & purged_keys)}"
    assert have == kept_keys, f"the unresolved case lost {sorted(kept_keys - have)}"

    env = lmdb.open(data_dir, max_dbs=32, readonly=True)
    try:
        with env.begin() as txn:
            trail = env.open_db(b"trail", txn=txn, create=False)
            recs = [msgpack.unpackb(v, raw=False) for _, v in txn.cursor(db=trail)]
    finally:
        env.close()
    purged = {(r["db"], r["obj"]) for r in recs if r["kind"] == "purged"}
    assert purged == {("events", ev), ("cases", case), ("assignments", a["id"])}, purged
