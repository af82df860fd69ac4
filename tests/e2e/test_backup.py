"""carehubd backup and restore (issue 16 item 4; docs/backup-and-keys.md).

`carehubd backup --data DIR [--key-file KEY] DEST` copies a running broker's store
(LMDB's compacting copy, one read transaction, the store opened read-only) into a new or
empty DEST (0700, data.mdb 0600) and verifies the copy as `carehubd verify` does; it
exits 0 only when the copy verifies. `carehubd restore --data DIR SRC` copies a backup
into DIR.tmp, verifies it there and only then renames it to DIR.

Here: a backup taken while an agent keeps sending events holds every event acknowledged
before the backup began; restored into a fresh directory, a broker started on it with the
same key serves them (queried case by case) and `verify` finds it intact. Refusals: a DEST
that is not empty, another key, a copy with one byte flipped (verify names the record).
"""

import os
import re
import stat
import threading
import time
from pathlib import Path

import pytest

import carehub_harness as h
from carehub_harness import uid
from routing_harness import send_event
from test_privacy import privacy_config, write_key

N_BEFORE = 400          # events acknowledged before the backup starts
CHILDREN = 40           # they join this many cases per type


def backup(data, dest, key=None, timeout=120):
    args = ["backup", "--data", str(data)] + (["--key-file", str(key)] if key else []) + [str(dest)]
    return h.run_bin(args, timeout=timeout)


def output(r):
    return f"exit {r.returncode}\n--- stdout ---\n{r.stdout}\n--- stderr ---\n{r.stderr}"


def query_case(sup, case):
    """The event ids of a case (what:"case", paged)."""
    out, after = [], None
    while True:
        q = {"v": 1, "op": "query", "id": uid("q"), "what": "case", "case": case}
        if after:
            q["after"] = after
        r = sup.request(q, timeout=30)
        assert r.get("op") == "result", f"query case {case}: {h.summarize(r)}"
        out += [e["id"] for e in r["events"]]
        after = r.get("next")
        if not after:
            return out


class Load(threading.Thread):
    """An agent of its own sending absences until stopped; keeps what was acked."""

    def __init__(self, endpoint):
        super().__init__(daemon=True)
        self.endpoint, self.stop_flag, self.acked, self.error = endpoint, threading.Event(), [], None

    def run(self):
        a = h.Agent(self.endpoint)
        try:
            a.login("school-0042")
            i = 0
            while not self.stop_flag.is_set():
                _, ev, case = send_event(a, "absence", h.absence_body(f"load-{i % CHILDREN}"))
                self.acked.append((ev, case))
                i += 1
        except Exception as e:  # reported by the test
            self.error = e
        finally:
            a.close()


@pytest.fixture
def loaded(make_broker, connect, tmp_path):
    """A broker with a privacy key and N_BEFORE acknowledged events."""
    key = write_key(tmp_path / "data.key")
    b = make_broker(config=privacy_config(tmp_path / "backup-src", key), name="backup-src")
    school = connect(b, login="school-0042")
    acked = [send_event(school, "absence", h.absence_body(f"child-{i % CHILDREN}"))[1:]
             for i in range(N_BEFORE)]
    return b, key, acked, Path(b.config["broker"]["data_dir"])


def test_backup_under_load_restores_and_serves_every_acked_event(loaded, make_broker, connect,
                                                                   tmp_path):
    b, key, acked, data = loaded
    load = Load(b.endpoint)
    load.start()
    while len(load.acked) < 20 and load.is_alive():  # the load is running when the copy starts
        time.sleep(0.01)
    before_backup = list(acked) + list(load.acked)
    dest = tmp_path / "backup"
    t0 = time.monotonic()
    r = backup(data, dest, key)
    took = time.monotonic() - t0
    load.stop_flag.set()
    load.join(30)
    assert load.error is None, f"the agent sending during the backup failed: {load.error!r}"
    assert len(load.acked) > 20, "no events were acknowledged while the backup ran"
    assert r.returncode == 0, "backup of a running broker failed:\n" + output(r)
    assert re.search(r"^intact: \d+ trail records", r.stdout, re.M), output(r)
    assert "NOT CHECKED" not in r.stdout, "with --key-file the keyed chain is checked:\n" + output(r)
    size = (dest / "data.mdb").stat().st_size
    print(f"\nbackup of {len(before_backup)}+ events under load: {size} bytes in {took:.2f} s")
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700, oct(dest.stat().st_mode)
    assert stat.S_IMODE((dest / "data.mdb").stat().st_mode) == 0o600
    assert sorted(os.listdir(dest)) == ["data.mdb"], os.listdir(dest)
    assert b.running(), "the broker stopped during the backup"
    assert b.stop() == 0

    restored = tmp_path / "restored" / "data"
    (tmp_path / "restored").mkdir()
    r = h.run_bin(["restore", "--data", str(restored), str(dest)], timeout=120)
    assert r.returncode == 0, "restore failed:\n" + output(r)
    assert "verified before it was put in place" in r.stdout, output(r)
    assert not Path(str(restored) + ".tmp").exists(), "restore left DIR.tmp behind"
    assert stat.S_IMODE(restored.stat().st_mode) == 0o700

    cfg = privacy_config(tmp_path / "restored", key)
    cfg["broker"]["data_dir"] = str(restored)
    b2 = make_broker(config=cfg, name="restored")
    sup = connect(b2, login="supervisor-01")
    by_case = {}
    for ev, case in before_backup:
        by_case.setdefault(case, set()).add(ev)
    for case, evs in sorted(by_case.items()):
        listed = set(query_case(sup, case))
        assert evs <= listed, (f"{case} in the restored store lacks events acknowledged before the "
                               f"backup began: {sorted(evs - listed)}")
    # a child of the backup joins its case in the restored store
    school = connect(b2, login="school-0042")
    _, _, case = send_event(school, "absence", h.absence_body("child-0"))
    assert case == acked[0][1], f"child-0's next absence opened {case}, not its case {acked[0][1]}"
    assert b2.stop() == 0
    r = h.run_bin(["verify", "--data", str(restored), "--key-file", str(key)], timeout=120)
    assert r.returncode == 0 and "intact" in r.stdout, output(r)


def test_backup_refuses_a_dest_that_is_not_empty(loaded, tmp_path):
    b, key, _, data = loaded
    dest = tmp_path / "full"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    r = backup(data, dest, key)
    assert r.returncode == 73, output(r)
    assert re.search(r"full is not empty; give a new or an empty directory", r.stderr), output(r)
    assert sorted(os.listdir(dest)) == ["keep.txt"], "backup wrote into a directory that was not empty"


def test_backup_refuses_another_key(loaded, tmp_path):
    b, key, _, data = loaded
    r = backup(data, tmp_path / "other", write_key(tmp_path / "other.key"))
    assert r.returncode == 74, output(r)
    assert "sealed with another privacy key" in r.stderr, output(r)
    assert not (tmp_path / "other" / "data.mdb").exists(), "a copy was written with the wrong key"


def flip_byte_in_an_event(path):
    """Flip one byte inside the sealed body of a stored event (the bytes after "body_enc")."""
    raw = bytearray(path.read_bytes())
    i = raw.find(b"body_enc")
    assert i > 0, "no sealed body found in the copy"
    raw[i + 40] ^= 0x01
    path.write_bytes(bytes(raw))


def test_a_corrupted_copy_fails_verify_and_is_not_restored(loaded, tmp_path):
    b, key, _, data = loaded
    dest = tmp_path / "bk"
    r = backup(data, dest, key)
    assert r.returncode == 0, output(r)
    flip_byte_in_an_event(dest / "data.mdb")
    r = h.run_bin(["verify", "--data", str(dest), "--key-file", str(key)], timeout=60)
    assert r.returncode == 1, output(r)
    assert re.search(r"BROKEN: events/ev-\d+: does not match its trail record \d+ \(changed\)",
                     r.stdout), output(r)
    target = tmp_path / "new-data"
    r = h.run_bin(["restore", "--data", str(target), str(dest)], timeout=60)
    assert r.returncode == 1, output(r)
    assert re.search(r"does not verify, nothing was restored: BROKEN: events/ev-\d+: does not "
                     r"match its trail record", r.stderr), output(r)
    assert not target.exists() and not Path(str(target) + ".tmp").exists(), \
        "a backup that does not verify was put in place (or its .tmp left)"


def test_restore_refuses_a_data_dir_that_is_not_empty(loaded, tmp_path):
    b, key, _, data = loaded
    dest = tmp_path / "bk"
    assert backup(data, dest, key).returncode == 0
    r = h.run_bin(["restore", "--data", str(data), str(dest)], timeout=60)
    assert r.returncode == 73, output(r)
    assert "is not empty" in r.stderr, output(r)
    assert b.running()
