"""Issue 12, finding 4: privacy.retention on every path a case ends by, and everything a
case leaves behind. A case closed quietly (no assignment, `quiet_close`) is purged
`retention` after it closed, also across a restart between the close and the purge; a
purge takes the events' idempotency entries (the clients' refs), unconfirmed outcomes and
the assignments' delivery records with it, and leaves the trail's stubs. Test clock."""

import os
from pathlib import Path

import carehub_harness as h
from carehub_harness import uid
from routing_harness import (case_update, clock, make_clock_broker,  # noqa: F401 (fixture)
                             routing_config, send_event, wait_push)

HOUR = 3600 * 1000
DAY = 24 * HOUR

WORKFLOWS = [
    {"name": "first-days", "match": {"type": "absence", "body.consecutive_days": "<3"},
     "assign": []},
    {"name": "reports", "match": {"type": "mandatory_report"},
     "assign": [{"agency": "police", "ack_within": "1h"}]},
]


def start(make_clock_broker, tmp_path):
    key = tmp_path / "data.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    cfg = routing_config(tmp_path / "b", workflows=WORKFLOWS, broker={"quiet_close": "1h"})
    cfg["privacy"] = {"key_file": str(key), "retention": "2d"}
    return make_clock_broker(config=cfg, name="b"), cfg


def resume(agent, at):
    """A restarted broker's test clock starts at the wall time: move it on to `at` (ms)
    where it was before the restart, unless it is there already."""
    if clock(agent, advance=0) < at:
        clock(agent, set=at)


def q(agent, **kw):
    return agent.request(dict({"v": 1, "op": "query", "id": uid("q")}, **kw))


def tables(cfg, *names):
    """{name: [(key, value), …]} read from the stopped broker's store."""
    import lmdb
    env = lmdb.open(cfg["broker"]["data_dir"], max_dbs=32, readonly=True, lock=False)
    out = {}
    with env.begin() as txn:
        for n in names:
            out[n] = list(txn.cursor(db=env.open_db(n.encode(), txn=txn)))
    env.close()
    return out


def purged_stubs(cfg):
    import msgpack
    recs = [msgpack.unpackb(v, raw=False) for _, v in tables(cfg, "trail")["trail"]]
    return {(r["db"], r["obj"]) for r in recs if r["kind"] == "purged"}


def test_quiet_closed_case_purged_after_retention_across_a_restart(make_clock_broker, tmp_path,
                                                                   connect):
    b, cfg = start(make_clock_broker, tmp_path)
    school = connect(b, login="school-0042")
    ref = "abs-REFCANARY-" + uid("r")
    _, ev, case = send_event(school, "absence", h.absence_body(uid("child"), consecutive_days=1),
                             id=ref)
    sup = connect(b, login="supervisor-01")         # the test clock's agent
    closed_at = clock(sup, advance=HOUR + 1000)     # quiet for longer than quiet_close: closed
    r = q(sup, what="case", case=case)
    assert r.get("op") == "result" and r["case"].get("status") == "closed", r   # precondition
    b.restart()                                     # between the close and the purge
    sup = connect(b, login="supervisor-01")
    resume(sup, closed_at)
    clock(sup, advance=DAY)
    assert q(sup, what="case", case=case).get("op") == "result", "one day after closing: kept"
    clock(sup, advance=DAY + 1000)
    h.assert_nack(q(sup, what="case", case=case), "not_found")
    assert q(sup, what="verify").get("intact") is True
    # the idempotency entry went with it: the same id again is a new event
    school = connect(b, login="school-0042")
    again = school.event("absence", h.absence_body(uid("child"), consecutive_days=1), id=ref)
    assert again.get("op") == "ack" and again.get("duplicate") is False and again.get("event") != ev, again
    b.stop()
    t = tables(cfg, "events", "idem")
    assert ev.encode() not in {k for k, _ in t["events"]}
    # refs are stored keyed (issue 12, finding 2): the form the broker stores, never the ref
    kref = h.stored_ref(Path(cfg["privacy"]["key_file"]).read_bytes(), ref).encode()
    assert sum(kref in k for k, _ in t["idem"]) == 1, "only the new event's entry may hold the ref"
    assert not any(ref.encode() in k for k, _ in t["idem"]), "a ref in clear"
    stubs = purged_stubs(cfg)
    assert ("events", ev) in stubs and ("cases", case) in stubs, stubs


def test_resolved_case_purge_takes_outcomes_and_delivery_records(make_clock_broker, tmp_path,
                                                                 connect):
    b, cfg = start(make_clock_broker, tmp_path)
    police = connect(b, login="police-desk")
    rep = connect(b, login="reporter-01")
    ref = "rep-REFCANARY-" + uid("r")
    _, ev, case = send_event(rep, "mandatory_report", h.mandatory_report_body(uid("c")), id=ref)
    a = wait_push(police, pred=lambda m: m["case"] == case)
    assert case_update(police, a["id"], "resolved", note="done")[1].get("op") == "ack"
    rep.close()                                     # the outcome is never confirmed
    sup = connect(b, login="supervisor-01")
    resolved_at = clock(sup, advance=0)
    b.stop()
    before = tables(cfg, "outcomes", "delivered", "idem")
    assert before["outcomes"] and before["delivered"], before   # precondition: they exist
    kref = h.stored_ref(Path(cfg["privacy"]["key_file"]).read_bytes(), ref).encode()
    assert any(kref in k for k, _ in before["idem"])
    b.start()
    sup = connect(b, login="supervisor-01")
    resume(sup, resolved_at)
    clock(sup, advance=2 * DAY + 1000)
    h.assert_nack(q(sup, what="case", case=case), "not_found")
    b.stop()
    after = tables(cfg, "outcomes", "delivered", "idem", "assignments")
    assert after["outcomes"] == [], after["outcomes"]
    assert not any(a["id"].encode() in k for k, _ in after["delivered"]), after["delivered"]
    assert not any(kref in k for k, _ in after["idem"]), after["idem"]
    assert a["id"].encode() not in {k for k, _ in after["assignments"]}
    stubs = purged_stubs(cfg)
    assert ("assignments", a["id"]) in stubs and ("events", ev) in stubs, stubs

