"""The trail is tamper-evident, checked offline (DOMAIN.md duty 6; docs/data-model.md
"The trail").

`carehubd verify --data DIR` reads a stopped broker's data directory, or an `mdb_copy`
of a running one: exit 0 and "intact: …" when the chain and every event, case and
assignment match; exit 1 and "BROKEN: <the first problem, naming the record>" when
not; 74 when the store cannot be read.

One broker is driven once for the module (a workflow makes assignments; the desks
acknowledge and resolve them, so assignments change state and the case resolves;
the reporter confirms its outcome) and stopped with SIGTERM. Every tampering test
works on its own copy of that stopped store and changes exactly one thing with
python3-lmdb, then runs verify on the copy:

  * one byte of a trail record (first, middle and last record; first, middle and
    last byte; a few more positions) -> the record or its neighbour is named;
  * one byte of an event, a case and an assignment record -> "events/ev-…",
    "cases/case-…", "assignments/as-…";
  * a trail record deleted in the middle, the last one deleted (truncation), two
    records swapped, the head deleted, an event deleted, an event added.

A hot copy taken with `mdb_copy` while the broker runs and takes events verifies
too (test_hot_copy_while_running, on a broker of its own).
"""

import hashlib
import os
import random
import re
import shutil
import subprocess
import time
from pathlib import Path

import lmdb
import msgpack
import pytest

import carehub_harness as h
from carehub_harness import uid
from routing_harness import (assert_assignment_ack, case_ack, case_update, critical_report,
                             routing_config, send_event, wait_push)

# Workflows that make assignments for both event types of the drive below.
WORKFLOWS = [
    {"name": "child-in-danger",
     "match": {"type": "mandatory_report", "severity": "critical"},
     "assign": [{"agency": "police", "ack_within": "15m"},
                {"agency": "civil_affairs", "ack_within": "1h"}]},
    {"name": "absence",
     "match": {"type": "absence"},
     "assign": [{"agency": "education", "ack_within": "1d"}]},
]

VERIFY_TIMEOUT = 60


def trail_config(workdir):
    return routing_config(workdir, workflows=WORKFLOWS)


# --------------------------------------------------------------------------
# Driving a broker

def drive(login):
    """Events, assignments that change state, a resolved case and a confirmed
    outcome. `login(agent_id)` returns a logged-in h.Agent. Returns the ids seen."""
    ids = {"events": set(), "cases": set(), "assignments": set()}
    reporter = login("reporter-01")
    school = login("school-0042")
    police = login("police-desk")
    civil = login("civil-desk")
    edu = login("edu-desk")

    # A child in danger: two reports join one case; police and civil affairs assigned.
    child = uid("K")
    _, ev1, case1 = send_event(reporter, "mandatory_report", critical_report(child))
    _, ev2, case1b = send_event(reporter, "mandatory_report", critical_report(child))
    assert case1b == case1, "two reports about one child should join one case"
    # Absences of another child: one case, assigned to education.
    pupil = uid("P")
    _, ev3, case2 = send_event(school, "absence", h.absence_body(pupil, consecutive_days=3))
    _, ev4, case2b = send_event(school, "absence", h.absence_body(pupil, consecutive_days=4,
                                                                  date="2025-03-04"))
    assert case2b == case2
    ids["events"] |= {ev1, ev2, ev3, ev4}
    ids["cases"] |= {case1, case2}

    p = wait_push(police, pred=lambda m: m["case"] == case1, what="police assignment")
    c = wait_push(civil, pred=lambda m: m["case"] == case1, what="civil affairs assignment")
    e = wait_push(edu, pred=lambda m: m["case"] == case2, what="education assignment")
    ids["assignments"] |= {p["id"], c["id"], e["id"]}

    # police: acknowledged, in progress, resolved; civil affairs: resolved;
    # education: acknowledged only (stays open).
    for agent, asg, steps in ((police, p["id"], ["ack", "in_progress", "resolved"]),
                              (civil, c["id"], ["resolved"]),
                              (edu, e["id"], ["ack"])):
        for step in steps:
            if step == "ack":
                mid, r = case_ack(agent, asg, by="officer-7")
            else:
                mid, r = case_update(agent, asg, step, note=f"step {step}")
            assert_assignment_ack(r, mid, asg)

    # The case of the reports is resolved: the reporter is told and confirms.
    out = wait_push(reporter, "outcome", pred=lambda m: m.get("case") == case1,
                    what="outcome of the resolved case")
    reporter.send({"v": 1, "op": "received", "id": out["id"]})
    # An event sent after that (and answered) shows the 'received' was processed too.
    _, ev5, case3 = send_event(school, "absence", h.absence_body(uid("P")))
    ids["events"].add(ev5)
    ids["cases"].add(case3)
    ids["assignments"].add(wait_push(edu, pred=lambda m: m["case"] == case3,
                                     what="education assignment of the last case")["id"])
    return ids


def mdb_copy(src, dst):
    mc = shutil.which("mdb_copy")
    if not mc:
        pytest.fail("mdb_copy not found: install Debian's lmdb-utils", pytrace=False)
    Path(dst).mkdir(parents=True, exist_ok=True)
    r = subprocess.run([mc, str(src), str(dst)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"mdb_copy {src} {dst} failed ({r.returncode}): {r.stderr}"
    return Path(dst)


def verify(data_dir):
    return h.run_bin(["verify", "--data", str(data_dir)], timeout=VERIFY_TIMEOUT)


def output(r):
    return (r.stdout or "") + (r.stderr or "")


def assert_intact(r, what):
    out = output(r)
    assert r.returncode == 0, f"verify of {what} exited {r.returncode} (expected 0):\n{out}"
    assert "intact" in r.stdout, f"verify of {what} does not say 'intact':\n{out}"
    assert "BROKEN" not in out, out


def assert_broken(r, what, names):
    """Exit 1, 'BROKEN: <sentence>' naming one of `names` (regexes)."""
    out = output(r)
    assert r.returncode == 1, \
        f"verify after {what} exited {r.returncode} (expected 1: broken):\n{out}"
    m = re.search(r"BROKEN:\s*(.+)", out)
    assert m, f"verify after {what} does not say 'BROKEN: …':\n{out}"
    sentence = m.group(1).strip()
    assert len(re.findall(r"[A-Za-z]{2,}", sentence)) >= 4, \
        f"verify after {what}: the problem is not a sentence a person can act on: {sentence!r}"
    assert any(re.search(n, out) for n in names), \
        f"verify after {what}: the output does not name {names}:\n{out}"
    return out


# --------------------------------------------------------------------------
# The stopped store of the module

class Store:
    def __init__(self, data, ids):
        self.data = Path(data)
        self.ids = ids
        env = lmdb.open(str(self.data), max_dbs=32, readonly=True, lock=False)
        try:
            self.trail = read_db(env, b"trail")
            self.events = read_db(env, b"events")
            self.cases = read_db(env, b"cases")
            self.assignments = read_db(env, b"assignments")
        finally:
            env.close()

    def copy(self, dst):
        shutil.copytree(self.data, dst)
        return Path(dst)


def read_db(env, name):
    db = env.open_db(name, create=False)
    with env.begin(db=db) as t:
        return [(bytes(k), bytes(v)) for k, v in t.cursor()]


@pytest.fixture(scope="module")
def store(tmp_path_factory, carehub_bin):
    """One broker driven once and stopped with SIGTERM; its data dir is never
    changed (tests work on copies). Teardown fails like make_broker's on a bad exit
    code or a sanitizer report."""
    workdir = tmp_path_factory.mktemp("trail-broker")
    b = h.Broker(workdir, config=trail_config(workdir), name="carehubd(trail)")
    agents = []
    problems = []
    try:
        b.start()

        def login(agent_id):
            a = h.Agent(b.endpoint)
            agents.append(a)
            a.login(agent_id)
            return a

        ids = drive(login)
        for a in agents:
            a.close()
        rc = b.stop()
        assert rc == 0, f"carehubd exited {rc} on SIGTERM (expected 0)\n{b.log_tail()}"
        san = b.sanitizer_report()
        assert not san, f"sanitizer report:\n{san}"
        yield Store(Path(b.config["broker"]["data_dir"]), ids)
    finally:
        for a in agents:
            a.close()
        problems += b.finish()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def be64(n):
    return n.to_bytes(8, "big")


def tamper(src, tmp_path, change):
    """Copy the stopped store, apply change(txn, dbs) in one write transaction with
    python3-lmdb, run verify on the copy."""
    copy = src.copy(tmp_path / "copy")
    env = lmdb.open(str(copy), max_dbs=32)
    try:
        dbs = {n: env.open_db(n.encode(), create=False)
               for n in ("trail", "trail_head", "events", "cases", "assignments")}
        with env.begin(write=True) as t:
            change(t, dbs)
    finally:
        env.close()
    return verify(copy)


def flip(value, pos, mask=0x01):
    b = bytearray(value)
    b[pos] ^= mask
    return bytes(b)


# --------------------------------------------------------------------------
# Intact stores

def test_store_has_what_the_tests_need(store):
    """Guard: the drive produced a trail and objects of each kind (else the
    tampering tests below would prove nothing)."""
    assert len(store.trail) >= 10, f"only {len(store.trail)} trail records"
    keys = [k for k, _ in store.trail]
    assert keys == [be64(i) for i in range(1, len(keys) + 1)], \
        "trail keys are not 8-byte big-endian numbers from 1 without gaps"
    assert {k.decode() for k, _ in store.events} == store.ids["events"]
    assert {k.decode() for k, _ in store.cases} == store.ids["cases"]
    assert {k.decode() for k, _ in store.assignments} == store.ids["assignments"]
    kinds = [msgpack.unpackb(v, raw=False).get("kind") for _, v in store.trail]
    for kind in ("event", "case_opened", "assignment_resolved", "case_resolved"):
        assert kind in kinds, f"no {kind!r} record in the trail: {kinds}"
    assert any(k.startswith("assignment_") and k not in ("assignment_open", "assignment_resolved")
               for k in kinds), f"no acknowledgement in the trail: {kinds}"


def test_intact_store_verifies(store):
    before = hashlib.sha256((store.data / "data.mdb").read_bytes()).hexdigest()
    r = verify(store.data)
    assert_intact(r, "the stopped store")
    m = re.search(r"(\d+) trail records", r.stdout)
    assert m and int(m.group(1)) == len(store.trail), \
        f"verify says {m and m.group(1)} trail records; the store has {len(store.trail)}:\n{r.stdout}"
    n_obj = len(store.events) + len(store.cases) + len(store.assignments)
    m = re.search(r"(\d+) events, cases and assignments", r.stdout)
    assert m and int(m.group(1)) == n_obj, \
        f"verify checked {m and m.group(1)} objects; the store has {n_obj}:\n{r.stdout}"
    after = hashlib.sha256((store.data / "data.mdb").read_bytes()).hexdigest()
    assert before == after, "carehubd verify changed data.mdb (it must only read)"


def test_mdb_copy_of_stopped_store_verifies(store, tmp_path):
    assert_intact(verify(mdb_copy(store.data, tmp_path / "copy")), "an mdb_copy of the stopped store")


def test_hot_copy_while_running(make_broker, connect, tmp_path):
    """mdb_copy of a running broker's data dir, taken while events are being
    written, verifies; so do later copies and the stopped store."""
    b = make_broker(config=trail_config(tmp_path / "hot"), name="hot")

    def login(agent_id):
        return connect(b, login=agent_id)

    drive(login)
    data = Path(b.config["broker"]["data_dir"])
    school = connect(b, login="school-0043")
    copies = []
    for i in range(3):
        # Submit events without waiting for their acks while mdb_copy runs.
        sent = []
        for _ in range(20):
            mid = uid("hot")
            school.send(h.event_msg("absence", h.absence_body(uid("P")), mid))
            sent.append(mid)
        dst = tmp_path / f"hot-copy-{i}"
        dst.mkdir()
        p = subprocess.Popen([shutil.which("mdb_copy") or "mdb_copy", str(data), str(dst)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(20):
            mid = uid("hot")
            school.send(h.event_msg("absence", h.absence_body(uid("P")), mid))
            sent.append(mid)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, f"mdb_copy of the running broker failed: {err.decode(errors='replace')}"
        acks = set()
        deadline = time.monotonic() + 10
        while len(acks) < len(sent) and time.monotonic() < deadline:
            rep = school.recv_reply(1.0)
            if rep is not None and rep.get("op") == "ack":
                acks.add(rep.get("id"))
        assert acks >= set(sent), f"{len(set(sent) - acks)} events were not acked"
        copies.append(dst)
    assert b.running()
    for dst in copies:
        assert_intact(verify(dst), f"a hot copy ({dst.name}) taken while the broker ran")
    # The copies are real snapshots of a growing trail.
    counts = [int(re.search(r"(\d+) trail records", verify(c).stdout).group(1)) for c in copies]
    assert counts == sorted(counts) and counts[0] < counts[-1], \
        f"hot copies hold {counts} trail records: expected a growing trail"
    assert b.stop() == 0
    assert_intact(verify(data), "the store after the hot copies")


def test_unreadable_store_is_74(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = verify(empty)
    assert r.returncode == 74, f"verify of an empty directory exited {r.returncode} (expected 74):\n{output(r)}"
    assert not (empty / "data.mdb").exists(), "verify created a store in the directory it was to read"
    r = verify(tmp_path / "missing")
    assert r.returncode == 74, f"verify of a missing directory exited {r.returncode}:\n{output(r)}"
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "data.mdb").write_bytes(random.Random(5).randbytes(65536))
    r = verify(garbage)
    assert r.returncode == 74, f"verify of a non-LMDB file exited {r.returncode}:\n{output(r)}"
    assert output(r).strip(), "exit 74 without saying why"


# --------------------------------------------------------------------------
# One byte of a trail record

def record_names(n, neighbours=True):
    """Regexes that name trail record n (or, when allowed, n-1 / n+1)."""
    nums = {n, n - 1, n + 1} if neighbours else {n}
    return [rf"record\s+{k}\b" for k in sorted(nums) if k >= 1]


@pytest.mark.parametrize("which", ["first", "middle", "last"])
@pytest.mark.parametrize("pos", ["first-byte", "middle-byte", "last-byte"])
def test_trail_record_byte_flipped(store, tmp_path, which, pos):
    n = len(store.trail)
    seq = {"first": 1, "middle": n // 2, "last": n}[which]
    key, value = store.trail[seq - 1]
    i = {"first-byte": 0, "middle-byte": len(value) // 2, "last-byte": len(value) - 1}[pos]
    changed = flip(value, i)

    def change(t, dbs):
        t.put(key, changed, db=dbs["trail"])

    r = tamper(store, tmp_path, change)
    assert_broken(r, f"flipping byte {i} of trail record {seq} (of {n})", record_names(seq))


def test_trail_record_bytes_flipped_anywhere(store, tmp_path):
    """Several more positions of one middle record, each on a fresh copy: the
    sequence number, the kind, the object id, the object hash, the prev hash,
    and random bytes."""
    n = len(store.trail)
    seq = n // 2 + 1
    key, value = store.trail[seq - 1]
    positions = set()
    for field in (b"seq", b"kind", b"obj", b"hash", b"prev", b"case", b"actor"):
        at = value.find(field)
        if at >= 0:
            positions.add(min(len(value) - 1, at + len(field) + 2))   # inside the value
            positions.add(at)                                         # the key itself
    rnd = random.Random(20250303)
    positions |= {rnd.randrange(len(value)) for _ in range(6)}
    failures = []
    for i in sorted(positions):
        for mask in (0x01, 0x80):
            changed = flip(value, i, mask)
            sub = tmp_path / f"p{i}-{mask}"
            sub.mkdir()

            def change(t, dbs, changed=changed):
                t.put(key, changed, db=dbs["trail"])

            r = tamper(store, sub, change)
            try:
                assert_broken(r, f"byte {i} of trail record {seq} xor {mask:#x}", record_names(seq))
            except AssertionError as e:
                failures.append(str(e))
    assert not failures, f"{len(failures)} changed bytes not reported:\n" + "\n".join(failures)


# --------------------------------------------------------------------------
# One byte of an event, a case, an assignment

def object_case(store, kind, index):
    rows = getattr(store, kind)
    return rows[index]


@pytest.mark.parametrize("db,prefix", [("events", "ev-"), ("cases", "case-"), ("assignments", "as-")])
@pytest.mark.parametrize("where", ["middle", "last"])
def test_object_byte_flipped(store, tmp_path, db, prefix, where):
    key, value = object_case(store, db, 0)
    assert key.decode().startswith(prefix), key
    i = len(value) // 2 if where == "middle" else len(value) - 1
    changed = flip(value, i)

    def change(t, dbs):
        t.put(key, changed, db=dbs[db])

    r = tamper(store, tmp_path, change)
    name = f"{db}/{key.decode()}"
    assert_broken(r, f"flipping byte {i} of {name}", [re.escape(name)])


def test_resolved_assignment_changed_back(store, tmp_path):
    """An assignment whose state went open -> acknowledged -> ... -> resolved is
    checked against its LAST trail record: setting 'state' back is caught."""
    for key, value in store.assignments:
        rec = msgpack.unpackb(value, raw=False)
        if rec.get("state") == "resolved":
            break
    else:
        pytest.fail("no resolved assignment in the store")
    rec["state"] = "acknowledged"
    rec["note"] = ""
    forged = msgpack.packb(rec, use_bin_type=True)

    def change(t, dbs):
        t.put(key, forged, db=dbs["assignments"])

    r = tamper(store, tmp_path, change)
    name = f"assignments/{key.decode()}"
    assert_broken(r, f"rewriting {name} to an earlier state", [re.escape(name)])


# --------------------------------------------------------------------------
# Deleted, swapped, added records

def test_trail_record_deleted_in_the_middle(store, tmp_path):
    n = len(store.trail)
    seq = n // 2

    def change(t, dbs):
        assert t.delete(be64(seq), db=dbs["trail"])

    r = tamper(store, tmp_path, change)
    assert_broken(r, f"deleting trail record {seq} of {n}", record_names(seq))


def test_last_trail_record_deleted(store, tmp_path):
    """Truncation: the trail no longer ends where its head says."""
    n = len(store.trail)

    def change(t, dbs):
        assert t.delete(be64(n), db=dbs["trail"])

    r = tamper(store, tmp_path, change)
    assert_broken(r, f"deleting the last trail record ({n})", record_names(n))


def test_last_three_trail_records_deleted(store, tmp_path):
    """Deleting the last three records."""
    n = len(store.trail)

    def change(t, dbs):
        for s in (n, n - 1, n - 2):
            assert t.delete(be64(s), db=dbs["trail"])

    r = tamper(store, tmp_path, change)
    assert_broken(r, "deleting the last three trail records", [rf"record\s+{k}\b" for k in (n, n - 3)])


def test_trail_records_swapped(store, tmp_path):
    n = len(store.trail)
    seq = n // 2
    (ka, va), (kb, vb) = store.trail[seq - 1], store.trail[seq]

    def change(t, dbs):
        t.put(ka, vb, db=dbs["trail"])
        t.put(kb, va, db=dbs["trail"])

    r = tamper(store, tmp_path, change)
    assert_broken(r, f"swapping trail records {seq} and {seq + 1}", record_names(seq) + record_names(seq + 1))


def test_trail_head_deleted(store, tmp_path):
    def change(t, dbs):
        assert t.delete(b"head", db=dbs["trail_head"])

    r = tamper(store, tmp_path, change)
    assert_broken(r, "deleting the trail head", [r"\bhead\b"])


def test_event_deleted(store, tmp_path):
    key, _ = store.events[len(store.events) // 2]

    def change(t, dbs):
        assert t.delete(key, db=dbs["events"])

    r = tamper(store, tmp_path, change)
    name = f"events/{key.decode()}"
    assert_broken(r, f"deleting {name}", [re.escape(name)])


def test_event_added_outside_the_broker(store, tmp_path):
    key, value = store.events[-1]
    rec = msgpack.unpackb(value, raw=False)
    forged_id = "ev-999999999999"
    rec["id"] = forged_id
    forged = msgpack.packb(rec, use_bin_type=True)

    def change(t, dbs):
        assert t.put(forged_id.encode(), forged, db=dbs["events"], overwrite=False)

    r = tamper(store, tmp_path, change)
    name = f"events/{forged_id}"
    assert_broken(r, f"adding {name}", [re.escape(name)])


def test_untouched_copy_still_verifies(store, tmp_path):
    """Control for the tampering tests: the same copy-and-open procedure without a
    change verifies intact (so exit 1 above comes from the change itself)."""
    def change(t, dbs):
        pass

    assert_intact(tamper(store, tmp_path, change), "an unchanged copy opened for writing")
