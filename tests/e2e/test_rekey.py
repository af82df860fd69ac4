"""carehubd rekey (issue 16 item 5; docs/backup-and-keys.md).

`carehubd rekey --data DIR --old-key FILE --new-key FILE` re-seals every sealed value and
re-computes every keyed hash of a stopped broker's store under a new data key, in a new
store written beside the old one (DIR.rekey), verified, then swapped in with one rename.
The trail keeps its records: those before the rekey stay chained with the old key's trail
key (kept sealed under the new key), a `rekey` record names both keys' fingerprints, and
each re-sealed object has a `resealed` record.

Here, with canary values (test_privacy.Canaries) in events, an agency's note and a
register entry: after the rekey the broker started with the new key serves the case with
the child's name, a retry of an old message gets its first answer, a new event about the
child joins its case; started with the old key it refuses to start (it says the store was
sealed with another key); no canary is in the data files; verify passes with the new key
and refuses the old one. A rekey killed midway (CAREHUB_REKEY_KILL_AFTER) leaves the old
store as it was and usable; the leftover is removed by the next start or rekey. A rekey
is refused while a broker has the store open, and with a wrong old key.
"""

import hashlib
import os
import re
import signal
import time
from pathlib import Path

import pytest

import carehub_harness as h
from carehub_harness import uid
from register_harness import enrol, register_config, rhythm, visit
from routing_harness import assert_assignment_ack, case_update, send_event, wait_push
from test_privacy import WORKFLOWS, Canaries, case_names, describe, search_dir, write_key

N_BULK = 1200   # events of other children (more than two commits of the rekey's 512)


def output(r):
    return f"exit {r.returncode}\n--- stdout ---\n{r.stdout}\n--- stderr ---\n{r.stderr}"


def rekey(data, old, new, env=None, timeout=300):
    e = dict(os.environ, **(env or {}))
    return h.run_bin(["rekey", "--data", str(data), "--old-key", str(old), "--new-key", str(new)],
                     timeout=timeout, env=e)


def verify(data, key=None):
    return h.run_bin(["verify", "--data", str(data)] + (["--key-file", str(key)] if key else []),
                     timeout=300)


def fingerprint(key_path):
    """store_key_fingerprint: the first 8 bytes of the key check (crypto_kdf context 3)."""
    sub = h.kdf_subkey(Path(key_path).read_bytes(), 3)
    return hashlib.blake2b(b"carehub key check", digest_size=32, key=sub).digest()[:8].hex()


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class Store:
    """A stopped broker's store with canaries, sealed with key A."""


@pytest.fixture
def store(make_broker, connect, tmp_path):
    s = Store()
    s.key_a = write_key(tmp_path / "a.key")
    s.key_b = write_key(tmp_path / "b.key")
    s.c = c = Canaries()
    cfg = register_config(tmp_path / "rk", rhythms=[rhythm()], workflows=WORKFLOWS)
    cfg["privacy"] = {"key_file": str(s.key_a)}
    s.b = b = make_broker(config=cfg, name="rk")
    s.data = Path(cfg["broker"]["data_dir"])
    school = connect(b, login="school-0042")
    desk = connect(b, login="police-desk")
    director = connect(b, login="director-a")
    s.ref = c.values["school_ref"]
    s.first = send_event(school, "absence", c.absence(1), id=s.ref)   # (ref, event, case)
    _, _, s.rcase = send_event(connect(b, login="reporter-01"), "mandatory_report", c.report())
    push = wait_push(desk, pred=lambda m: m["case"] == s.rcase, timeout=5, what="the report case")
    mid, r = case_update(desk, push["id"], "in_progress", note=c.values["desk_note"])
    assert_assignment_ack(r, mid, push["id"])
    enrol(director, c.values["child_id"], c.values["name"], "滨海村", h.now_ms() - 1000)
    for i in range(N_BULK):
        send_event(school, "absence", h.absence_body(f"bulk-{i % 97}"))
    # a head kept outside before the rekey (`carehub trail-head`)
    r = connect(b, login="supervisor-01").request(
        {"v": 1, "op": "query", "id": uid("q"), "what": "trail_head"})
    assert r.get("op") == "result", h.summarize(r)
    s.head = f"{r['seq']}:{r['hash']}"
    assert b.stop() == 0
    return s


def start_with(s, key):
    s.b.config["privacy"] = {"key_file": str(key)}
    s.b.start()


def assert_serves_the_canary_case(s, connect, what):
    c = s.c
    desk = connect(s.b, login="police-desk")
    case = s.first[2]
    m = wait_push(desk, pred=lambda m: m["case"] == case, timeout=10,
                  what=f"the canary's case re-delivered after hello ({what})")
    assert case_names(m) == [c.values["name"]], f"{what}: the case holds names {case_names(m)!r}"
    school = connect(s.b, login="school-0042")
    # a retry of the first message: its first answer (idem rebuilt under the key in use)
    ev, case_again = h.assert_ack(school.event("absence", c.absence(1), id=s.ref), s.ref,
                                  duplicate=True)
    assert (ev, case_again) == s.first[1:], f"{what}: the retry was answered {ev, case_again}"
    _, _, case2 = send_event(school, "absence", c.absence(2))
    assert case2 == case, f"{what}: the child's next absence opened {case2}, not its case {case}"
    director = connect(s.b, login="director-a")
    visit(director, c.values["child_id"], "home_visit", h.now_ms() - 500)


def test_rekey_serves_with_the_new_key_and_refuses_the_old(store, connect):
    s = store
    t0 = time.monotonic()
    r = rekey(s.data, s.key_a, s.key_b)
    took = time.monotonic() - t0
    assert r.returncode == 0, "rekey failed:\n" + output(r)
    fa, fb = fingerprint(s.key_a), fingerprint(s.key_b)
    assert f"from key {fa} to key {fb}" in r.stdout, output(r)
    m = re.search(r"(\d+) records rewritten, (\d+) events, cases and assignments re-sealed", r.stdout)
    assert m and int(m.group(2)) >= N_BULK + 3, output(r)
    print(f"\nrekey of {N_BULK + 4} events: {took:.2f} s; {m.group(0)}")
    assert not Path(str(s.data) + ".rekey").exists(), "rekey left DIR.rekey behind"

    raw = (s.data / "data.mdb").read_bytes()
    assert f"old:{fa} new:{fb}".encode() in raw, "no `rekey` trail record naming both fingerprints"
    for k in (s.key_a, s.key_b):
        key = Path(k).read_bytes()
        assert key not in raw and key.hex().encode() not in raw, f"the key {k.name} is in data.mdb"
    found = search_dir(s.data, s.c.needles())
    assert not found, "personal data in the clear after rekey: " + describe(found)

    v = verify(s.data, s.key_b)
    assert v.returncode == 0 and "intact" in v.stdout and "NOT CHECKED" not in v.stdout, output(v)
    # the records before the rekey keep their chain: the anchor taken before still matches
    v = h.run_bin(["verify", "--data", str(s.data), "--key-file", str(s.key_b), "--head", s.head],
                  timeout=300)
    seq = s.head.split(":")[0]
    assert v.returncode == 0 and f"the anchored head, record {seq}, matches" in v.stdout, output(v)
    v = verify(s.data)   # without the key: what it cannot check it says
    assert v.returncode == 0 and "NOT CHECKED" in v.stdout, output(v)
    v = verify(s.data, s.key_a)
    assert v.returncode == 74 and "sealed with another privacy key" in v.stderr, output(v)

    start_with(s, s.key_b)
    assert_serves_the_canary_case(s, connect, "new key")
    assert s.b.stop() == 0
    v = verify(s.data, s.key_b)
    assert v.returncode == 0 and "intact" in v.stdout, "after serving on the new key:\n" + output(v)
    found = search_dir(s.data, s.c.needles())
    assert not found, "personal data in the clear after serving on the new key: " + describe(found)

    s.b.config["privacy"] = {"key_file": str(s.key_a)}
    with pytest.raises(h.BrokerError):
        s.b.start()
    assert s.b.returncode == 1, s.b.log()
    assert "sealed with another privacy key" in s.b.log(), s.b.log()


def test_rekey_killed_midway_leaves_the_old_store_usable(store, connect):
    s = store
    before = digest(s.data / "data.mdb")
    r = rekey(s.data, s.key_a, s.key_b, env={"CAREHUB_REKEY_KILL_AFTER": "700"})
    assert r.returncode == -signal.SIGKILL, "the test hook did not kill rekey:\n" + output(r)
    assert re.search(r"killed after 700 records committed to \S+\.rekey", r.stderr), output(r)
    left = Path(str(s.data) + ".rekey")
    assert (left / "data.mdb").exists(), "the killed rekey left no new store behind (was it midway?)"
    assert digest(s.data / "data.mdb") == before, "a rekey killed midway changed the old store"
    v = verify(s.data, s.key_a)
    assert v.returncode == 0 and "intact" in v.stdout, output(v)

    start_with(s, s.key_a)   # the old store, the old key: as before
    assert not left.exists(), "the broker's start did not remove the killed rekey's leftover"
    assert re.search(r"removed \S+\.rekey, left by a rekey that did not finish", s.b.log()), s.b.log()
    assert_serves_the_canary_case(s, connect, "old key after a killed rekey")
    assert s.b.stop() == 0

    r = rekey(s.data, s.key_a, s.key_b, env={"CAREHUB_REKEY_KILL_AFTER": "100"})
    assert r.returncode == -signal.SIGKILL and left.exists(), output(r)
    r = rekey(s.data, s.key_a, s.key_b)     # the next rekey removes the leftover and succeeds
    assert r.returncode == 0, output(r)
    assert "left by a rekey that did not finish" in r.stderr, output(r)
    v = verify(s.data, s.key_b)
    assert v.returncode == 0 and "intact" in v.stdout, output(v)


def test_rekey_refused_while_a_broker_runs(store):
    s = store
    start_with(s, s.key_a)
    before = digest(s.data / "data.mdb")
    r = rekey(s.data, s.key_a, s.key_b)
    assert r.returncode == 75, output(r)
    assert re.search(rf"is open in process {s.b.pid()} .*stop it first", r.stderr), output(r)
    assert s.b.running()
    assert s.b.stop() == 0
    assert not Path(str(s.data) + ".rekey").exists()


def test_rekey_refuses_a_wrong_old_key(store, tmp_path):
    s = store
    before = digest(s.data / "data.mdb")
    r = rekey(s.data, write_key(tmp_path / "wrong.key"), s.key_b)
    assert r.returncode == 74, output(r)
    assert re.search(r"--old-key: the data directory \S+ was sealed with another privacy key",
                     r.stderr), output(r)
    assert digest(s.data / "data.mdb") == before
    r = rekey(s.data, s.key_a, s.key_a)
    assert r.returncode == 1 and "hold the same key" in r.stderr, output(r)


def test_a_second_rekey_keeps_both_earlier_keys_chains(store, connect, tmp_path):
    """A -> B, records written under B, B -> C: verify with C checks the records of all three
    keys (the earlier trail keys are re-sealed under each new key) and the old anchor."""
    s = store
    assert rekey(s.data, s.key_a, s.key_b).returncode == 0
    start_with(s, s.key_b)
    assert_serves_the_canary_case(s, connect, "key B")
    assert s.b.stop() == 0
    key_c = write_key(tmp_path / "c.key")
    r = rekey(s.data, s.key_b, key_c)
    assert r.returncode == 0, output(r)
    v = h.run_bin(["verify", "--data", str(s.data), "--key-file", str(key_c), "--head", s.head],
                  timeout=300)
    assert v.returncode == 0 and "matches" in v.stdout and "NOT CHECKED" not in v.stdout, output(v)
    raw = (s.data / "data.mdb").read_bytes()
    assert f"old:{fingerprint(s.key_b)} new:{fingerprint(key_c)}".encode() in raw
    assert f"old:{fingerprint(s.key_a)} new:{fingerprint(s.key_b)}".encode() in raw
    start_with(s, key_c)
    desk = connect(s.b, login="police-desk")
    m = wait_push(desk, pred=lambda m: m["case"] == s.first[2], timeout=10, what="the case, key C")
    assert case_names(m)[0] == s.c.values["name"], case_names(m)
    assert s.b.stop() == 0


def flipped_copy(src, dst, needle, offset):
    """A copy of the store in src with one byte flipped `offset` bytes after `needle`."""
    dst.mkdir()
    raw = bytearray((src / "data.mdb").read_bytes())
    i = raw.find(needle)
    assert i >= 0, f"{needle!r} not in {src}/data.mdb"
    raw[i + offset] ^= 0x20
    (dst / "data.mdb").write_bytes(bytes(raw))
    os.chmod(dst / "data.mdb", 0o600)
    return dst


def test_records_before_the_rekey_stay_guarded_by_the_chain(store, tmp_path):
    """The records chained with the old key are checked with the new one: a changed record
    from before the rekey, or changed earlier keys, fail verify with the new key. (On a
    compact backup: no free page holds a stale copy of what is flipped.)"""
    s = store
    assert rekey(s.data, s.key_a, s.key_b).returncode == 0
    bk = tmp_path / "bk"
    r = h.run_bin(["backup", "--data", str(s.data), "--key-file", str(s.key_b), str(bk)], timeout=300)
    assert r.returncode == 0, output(r)
    # a case_opened record (all written before the rekey) changed: "case_openeD"
    bad = flipped_copy(bk, tmp_path / "old-record", b"case_opened", len("case_opene"))
    v = verify(bad, s.key_b)
    assert v.returncode == 1 and re.search(r"BROKEN: trail record \d+: does not follow record \d+",
                                           v.stdout), output(v)
    # the earlier keys, sealed under the new one, changed
    bad = flipped_copy(bk, tmp_path / "epochs", b"trail.epochs", len("trail.epochs") + 30)
    v = verify(bad, s.key_b)
    assert v.returncode == 1 and "trail.epochs) do not open with this key" in v.stdout, output(v)
