"""Privacy at rest (DOMAIN.md duty 7; CONFIG.md `privacy.key_file`: 32 random bytes).

With `privacy.key_file` set, children's personal data must not be stored in the clear:
event bodies are encrypted at rest (XChaCha20-Poly1305) and the child-id join
(`open_cases`) is keyed with a keyed BLAKE2b hash of `child.id`. Nor may it reach
the broker's log. Agencies still receive the case with the names intact.

Every personal value sent here is a canary: a marker plus a random hex token unique
to this run and to that field (child name "CANARY-名字-<hex>", child id
"CANARYID-<hex>", guardian name and phone, description, reporter name and phone,
location, note). A store "contains" a canary when the bytes of the whole string
(UTF-8) or of its hex token alone occur in any file (the token catches re-encodings
such as JSON \\u escapes). The control test (`privacy: off`) proves the search finds
every one of them when they are stored in the clear.

A store sealed with one key is refused at start with another key or with
`privacy: off` (docs/data-model.md, `privacy.check`), and its data survive that.
"""

import os
import re
import shutil
import stat
import subprocess
import uuid
from pathlib import Path

import pytest

import carehub_harness as h
from carehub_harness import uid
from routing_harness import (assert_assignment_ack, case_update, routing_config, send_event,
                             wait_push)

WORKFLOWS = [
    {"name": "reports", "match": {"type": "mandatory_report"},
     "assign": [{"agency": "police", "ack_within": "15m"}]},
    {"name": "absences", "match": {"type": "absence"},
     "assign": [{"agency": "police", "ack_within": "1d"}]},
]


# --------------------------------------------------------------------------
# Canaries

class Canaries:
    """Personal values, each with its own random token."""

    def __init__(self):
        def tok():
            return uuid.uuid4().hex

        self.values = {}
        t = {k: tok() for k in ("name", "child_id", "guardian_name", "guardian_phone",
                                "description", "reporter_name", "reporter_phone", "location",
                                "note", "name2", "child_id2", "refused_name", "refused_gender",
                                "desk_note", "school_ref", "report_ref")}
        self.values["name"] = f"CANARY-名字-{t['name']}"
        self.values["child_id"] = f"CANARYID-{t['child_id']}"
        self.values["guardian_name"] = f"CANARY-监护人-{t['guardian_name']}"
        self.values["guardian_phone"] = f"CANARYPH{t['guardian_phone'][:16]}"
        self.values["description"] = f"CANARY-DESC 孩子独自在家三天 {t['description']}"
        self.values["reporter_name"] = f"CANARY-报告人-{t['reporter_name']}"
        self.values["reporter_phone"] = f"CANARYRP{t['reporter_phone'][:16]}"
        self.values["location"] = f"CANARY-LOC 滨海新区某村 {t['location']}"
        self.values["note"] = f"CANARY-NOTE 奶奶说孩子去了外地 {t['note']}"
        # written by the agency desk in a case_update (not an event field)
        self.values["desk_note"] = f"CANARY-DESKNOTE 已家访，孩子由邻居照看 {t['desk_note']}"
        self.values["name2"] = f"CANARY-名字二-{t['name2']}"
        self.values["child_id2"] = f"CANARYID-{t['child_id2']}"
        # in a refused event (nothing may be stored, nor logged)
        self.values["refused_name"] = f"CANARY-拒绝-{t['refused_name']}"
        self.values["refused_gender"] = f"CANARYGENDER{t['refused_gender'][:20]}"
        # the clients' own message ids: a school's names the student (issue 12, finding 2)
        self.values["school_ref"] = f"abs:CANARYREF-{t['school_ref']}"
        self.values["report_ref"] = f"rep:CANARYREF-{t['report_ref']}"
        self.tokens = {k: re.search(r"([0-9a-f]{16,32})$", v).group(1) for k, v in self.values.items()}

    def needles(self, labels=None):
        """label -> [bytes to search for]."""
        out = {}
        for k, v in self.values.items():
            if labels is None or k in labels:
                out[k] = [v.encode("utf-8"), self.tokens[k].encode("ascii")]
        return out

    # -- bodies -----------------------------------------------------------
    def child(self, second=False):
        if second:
            return {"id": self.values["child_id2"], "name": self.values["name2"]}
        return {"id": self.values["child_id"], "name": self.values["name"], "gender": "female",
                "birth_date": "2015-06-01", "category": ["left_behind"],
                "guardian": {"name": self.values["guardian_name"], "relation": "grandmother",
                             "phone": self.values["guardian_phone"]}}

    def absence(self, day=1, second=False):
        return h.absence_body(None, child=self.child(second), consecutive_days=day,
                              date=f"2025-03-{day + 2:02d}", note=self.values["note"])

    def report(self):
        return {"reporter": {"organisation": "滨海新区第一小学", "name": self.values["reporter_name"],
                             "role": "teacher", "phone": self.values["reporter_phone"]},
                "harm": "neglect", "severity": "high",
                "description": self.values["description"],
                "location": self.values["location"],
                "child": self.child()}

    def refused(self):
        """An absence the schema refuses (gender outside its enum)."""
        return h.absence_body(None, child={"id": self.values["child_id"],
                                           "name": self.values["refused_name"],
                                           "gender": self.values["refused_gender"]})


EVENT_LABELS = ("name", "child_id", "guardian_name", "guardian_phone", "description",
                "reporter_name", "reporter_phone", "location", "note", "name2", "child_id2",
                "refused_name", "refused_gender", "school_ref", "report_ref")


# --------------------------------------------------------------------------
# Searching files

def search_bytes(data, needles):
    """label -> [offsets] of any needle of that label in data."""
    hits = {}
    for label, ns in needles.items():
        offs = []
        for n in ns:
            start = 0
            while True:
                i = data.find(n, start)
                if i < 0:
                    break
                offs.append(i)
                start = i + 1
        if offs:
            hits[label] = sorted(set(offs))
    return hits


def search_dir(root, needles):
    """[(file, label, offset, context)] for every hit in every file under root."""
    found = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            data = p.read_bytes()
            for label, offs in search_bytes(data, needles).items():
                for off in offs:
                    found.append((str(p), label, off, data[max(0, off - 24):off + 48]))
    return found


def describe(found, limit=20):
    lines = [f"  {f}: {label} at byte {off}: {ctx!r}" for f, label, off, ctx in found[:limit]]
    if len(found) > limit:
        lines.append(f"  … and {len(found) - limit} more")
    labels = sorted({label for _, label, _, _ in found})
    return f"{len(found)} hit(s) of {labels}:\n" + "\n".join(lines)


def mdb_copy(src, dst):
    mc = shutil.which("mdb_copy")
    if not mc:
        pytest.fail("mdb_copy not found: install Debian's lmdb-utils", pytrace=False)
    Path(dst).mkdir(parents=True, exist_ok=True)
    r = subprocess.run([mc, str(src), str(dst)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"mdb_copy {src} {dst} failed ({r.returncode}): {r.stderr}"
    return Path(dst)


# --------------------------------------------------------------------------
# Configs and driving

def write_key(path):
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, os.urandom(32))
    finally:
        os.close(fd)
    os.chmod(path, 0o600)
    return path


def privacy_config(workdir, key_file):
    cfg = routing_config(workdir, workflows=WORKFLOWS)
    cfg["privacy"] = {"key_file": str(key_file)} if key_file else h.Bare("off")
    return cfg


def case_names(m):
    """The child names in the events of a case push."""
    return [((e.get("body") or {}).get("child") or {}).get("name") for e in m.get("events", [])]


def send_all(c, school, reporter):
    """The events of a run. Returns {label: (msg id, event id, case id)}."""
    out = {}
    out["absence1"] = send_event(school, "absence", c.absence(1), id=c.values["school_ref"])
    out["report1"] = send_event(reporter, "mandatory_report", c.report(), id=c.values["report_ref"])
    # a retry of each is answered with the first answer (found through the keyed ref)
    for label, agent, type_, body, ref in (
            ("absence1_again", school, "absence", c.absence(1), c.values["school_ref"]),
            ("report1_again", reporter, "mandatory_report", c.report(), c.values["report_ref"])):
        out[label] = (ref,) + h.assert_ack(agent.event(type_, body, id=ref), ref, duplicate=True)
    out["absence2"] = send_event(school, "absence", c.absence(2))
    out["report2"] = send_event(reporter, "mandatory_report", c.report())
    out["other_child"] = send_event(school, "absence", c.absence(1, second=True))
    return out


def send_refused(c, school):
    mid = uid("bad")
    r = school.event("absence", c.refused(), id=mid)
    h.assert_nack(r, "invalid", id=mid)
    return r


class Run:
    """What one encrypted broker run produced."""


@pytest.fixture(scope="module")
def enc(tmp_path_factory, carehub_bin):
    """One broker with privacy.key_file, a police desk, the canary events (and one
    refused event), a hot copy taken while it runs, then SIGTERM. Teardown fails like
    make_broker's on a bad exit code or a sanitizer report."""
    workdir = tmp_path_factory.mktemp("privacy-broker")
    key = write_key(workdir / "data.key")
    c = Canaries()
    b = h.Broker(workdir, config=privacy_config(workdir, key), name="carehubd(privacy)")
    agents = []
    run = Run()
    run.canaries, run.key, run.broker = c, key, b
    run.data = Path(b.config["broker"]["data_dir"])
    problems = []
    try:
        b.start()

        def login(agent_id):
            a = h.Agent(b.endpoint)
            agents.append(a)
            a.login(agent_id)
            return a

        desk = login("police-desk")
        school = login("school-0042")
        reporter = login("reporter-01")
        run.acks = send_all(c, school, reporter)
        run.refused = send_refused(c, school)
        a_case = run.acks["absence1"][2]
        r_case = run.acks["report1"][2]
        # The desk gets each case; after the second event joins, the case again
        # with both events (PROTOCOL §5: re-delivered when a new event joins).
        run.absence_push = wait_push(desk, pred=lambda m: m["case"] == a_case and m.get("events_total") == 2,
                                     timeout=5, what="the absence case with both events")
        run.report_push = wait_push(desk, pred=lambda m: m["case"] == r_case and m.get("events_total") == 2,
                                    timeout=5, what="the report case with both events")
        # The agency writes a note about the child (free text) on the report.
        mid, r = case_update(desk, run.report_push["id"], "in_progress", note=c.values["desk_note"])
        assert_assignment_ack(r, mid, run.report_push["id"])
        # resolved: the reporter is told, naming its events by the refs it sent
        mid, r = case_update(desk, run.report_push["id"], "resolved", note="")
        assert_assignment_ack(r, mid, run.report_push["id"])
        run.outcomes = [wait_push(reporter, op="outcome", timeout=5, what=f"outcome {i + 1} of 2")
                        for i in range(2)]
        run.hot = mdb_copy(run.data, workdir / "hot-copy")
        assert b.running()
        for a in agents:
            a.close()
        run.stop_rc = b.stop()
        yield run
    finally:
        for a in agents:
            a.close()
        problems += b.finish()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# --------------------------------------------------------------------------
# With privacy.key_file: the agency sees the names; the disk and the log do not

def test_desk_gets_the_case_with_the_names_decrypted(enc):
    c = enc.canaries
    m = enc.absence_push
    assert case_names(m) == [c.values["name"]] * 2, \
        f"the desk's case holds child names {case_names(m)!r}, expected the name sent, twice"
    g = m["events"][0]["body"]["child"]["guardian"]
    assert g == {"name": c.values["guardian_name"], "relation": "grandmother",
                 "phone": c.values["guardian_phone"]}, f"guardian as delivered: {g!r}"
    assert m["events"][0]["body"]["child"]["id"] == c.values["child_id"]
    assert m["events"][0]["body"].get("note") == c.values["note"]
    r = enc.report_push
    assert case_names(r) == [c.values["name"]] * 2, f"report case names {case_names(r)!r}"
    body = r["events"][-1]["body"]
    assert body["description"] == c.values["description"]
    assert body["location"] == c.values["location"]
    assert body["reporter"]["name"] == c.values["reporter_name"]
    assert body["reporter"]["phone"] == c.values["reporter_phone"]


def test_same_child_joins_one_case_per_type(enc):
    """The keyed-hash join: events about one child.id join that child's case (per
    type); another child gets a case of its own."""
    a = enc.acks
    assert a["absence2"][2] == a["absence1"][2], \
        f"the second absence of the child opened {a['absence2'][2]}, not the child's case {a['absence1'][2]}"
    assert a["report2"][2] == a["report1"][2], \
        f"the second report about the child opened {a['report2'][2]}, not the child's case {a['report1'][2]}"
    assert a["report1"][2] != a["absence1"][2], "an absence and a report joined one case (join is per type)"
    assert a["other_child"][2] not in (a["absence1"][2], a["report1"][2]), \
        "another child's absence joined the first child's case"
    assert enc.absence_push["events_total"] == 2 and enc.report_push["events_total"] == 2


def test_retry_answered_and_outcome_names_the_ref_sent(enc):
    """With refs stored only as keyed hashes, a retry still gets the first answer, and
    the outcome hands the reporter the ref it sent (opened from its sealed copy)."""
    a, c = enc.acks, enc.canaries
    assert a["absence1_again"][1:] == a["absence1"][1:], (a["absence1_again"], a["absence1"])
    assert a["report1_again"][1:] == a["report1"][1:], (a["report1_again"], a["report1"])
    refs = sorted(o["ref"] for o in enc.outcomes)
    assert refs == sorted([c.values["report_ref"], a["report2"][0]]), refs
    assert {o["event"] for o in enc.outcomes} == {a["report1"][1], a["report2"][1]}


def test_sigterm_exit_code(enc):
    assert enc.stop_rc == 0, f"carehubd exited {enc.stop_rc} on SIGTERM\n{enc.broker.log_tail()}"


def test_no_personal_data_in_the_data_dir(enc):
    found = search_dir(enc.data, enc.canaries.needles(EVENT_LABELS))
    assert not found, ("personal data stored in the clear under data_dir with privacy.key_file set: "
                       + describe(found))


def test_no_personal_data_in_a_hot_copy(enc):
    found = search_dir(enc.hot, enc.canaries.needles(EVENT_LABELS))
    assert not found, ("personal data in an mdb_copy taken while the broker ran (privacy.key_file set): "
                       + describe(found))


def test_no_personal_data_in_the_log(enc):
    log = enc.broker.all_logs().encode("utf-8", "replace")
    assert log.strip(), "the broker wrote no log at all (is stderr captured?)"
    hits = search_bytes(log, enc.canaries.needles())
    assert not hits, f"the broker's log holds personal data: {sorted(hits)}\n" + "\n".join(
        repr(log[max(0, o - 80):o + 80]) for offs in hits.values() for o in offs[:2])


def test_key_is_not_in_the_data_dir_or_the_log(enc):
    key = enc.key.read_bytes()
    assert len(key) == 32
    needles = {"key": [key], "key-hex": [key.hex().encode()]}
    found = search_dir(enc.data, needles) + search_dir(enc.hot, needles)
    assert not found, "the data key is stored in the data dir: " + describe(found)
    assert not search_bytes(enc.broker.all_logs().encode("utf-8", "replace"), needles), \
        "the data key (or its hex) is in the broker's log"


def test_agency_note_not_stored_in_the_clear(enc):
    """The desk's case_update note is free text about the child (personal data at
    rest, DOMAIN.md duty 7), stored in the assignment record."""
    found = search_dir(enc.data, enc.canaries.needles(["desk_note"]))
    assert not found, ("the agency's case_update note (free text about the child) is stored in "
                       "the clear: " + describe(found))


def test_data_dir_modes(enc):
    mode = stat.S_IMODE(os.stat(enc.data).st_mode)
    assert mode == 0o700, f"data_dir is mode {mode:o}, expected 700"
    for f in ("data.mdb", "lock.mdb"):
        p = enc.data / f
        assert p.exists(), f"{p} missing"
        m = stat.S_IMODE(os.stat(p).st_mode)
        assert m == 0o600, f"{f} is mode {m:o}, expected 600"


def test_encrypted_store_verifies_without_the_key(enc):
    """The trail covers the stored (encrypted) bytes: a supervisor verifies it with
    `carehubd verify`, which takes no key."""
    for d in (enc.data, enc.hot):
        r = h.run_bin(["verify", "--data", str(d)], timeout=60)
        assert r.returncode == 0 and "intact" in r.stdout, \
            f"verify of {d} exited {r.returncode}:\n{r.stdout}{r.stderr}"


def test_changed_sealed_body_is_caught_by_verify(enc, tmp_path):
    """A byte changed in a sealed event record (copy of the stopped store) is named by
    `carehubd verify`, like a clear one."""
    import lmdb
    copy = tmp_path / "copy"
    shutil.copytree(enc.data, copy)
    env = lmdb.open(str(copy), max_dbs=32)
    try:
        db = env.open_db(b"events", create=False)
        with env.begin(write=True, db=db) as t:
            key, value = next(iter(t.cursor()))
            key, value = bytes(key), bytearray(value)
            value[len(value) - 5] ^= 0x01       # inside the body (it is stored last)
            t.put(key, bytes(value))
    finally:
        env.close()
    r = h.run_bin(["verify", "--data", str(copy)], timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode == 1 and f"events/{key.decode()}" in out, \
        f"verify after changing a byte of sealed {key.decode()} exited {r.returncode}:\n{out}"


# --------------------------------------------------------------------------
# Restarts: the same key, then a different one

def test_restart_with_the_same_key(make_broker, connect, tmp_path):
    """After a restart on the same data dir and key the desk still gets the case with
    the names (re-delivery after hello), and a new event about the child joins it."""
    key = write_key(tmp_path / "data.key")
    c = Canaries()
    b = make_broker(config=privacy_config(tmp_path / "same", key), name="same")
    school = connect(b, login="school-0042")
    _, _, case = send_event(school, "absence", c.absence(1))
    b.restart()
    desk = connect(b, login="police-desk")
    m = wait_push(desk, pred=lambda m: m["case"] == case, timeout=5,
                  what="the case, re-delivered after hello")
    assert case_names(m) == [c.values["name"]], f"after restart the case holds names {case_names(m)!r}"
    assert m["events"][0]["body"]["child"]["guardian"]["phone"] == c.values["guardian_phone"]
    school = connect(b, login="school-0042")
    _, _, case2 = send_event(school, "absence", c.absence(2))
    assert case2 == case, f"after restart the child's next absence opened {case2}, not {case}"
    m = wait_push(desk, pred=lambda m: m["case"] == case and m.get("events_total") == 2, timeout=5,
                  what="the case with the event sent after the restart")
    assert case_names(m) == [c.values["name"]] * 2
    assert b.stop() == 0
    found = search_dir(Path(b.config["broker"]["data_dir"]), c.needles())
    assert not found, "personal data in the clear after a restart: " + describe(found)
    assert not search_bytes(b.all_logs().encode("utf-8", "replace"), c.needles()), \
        "personal data in the broker's log (restart)"


def sealed_store(make_broker, connect, tmp_path, name):
    """A store written with key A (an absence and a report about one child), stopped.
    Returns (broker, canaries, key A, absence case, report case)."""
    key_a = write_key(tmp_path / f"{name}-a.key")
    c = Canaries()
    b = make_broker(config=privacy_config(tmp_path / name, key_a), name=name)
    school = connect(b, login="school-0042")
    _, _, case = send_event(school, "absence", c.absence(1))
    _, _, rcase = send_event(connect(b, login="reporter-01"), "mandatory_report", c.report())
    assert b.stop() == 0
    return b, c, key_a, case, rcase


def assert_refused_at_start(b, c, reason_re, what):
    """Starting b must fail: an orderly exit (code > 0, no sanitizer report) before
    the ready file, with a message matching reason_re, and no personal data logged."""
    try:
        b.restart()
    except h.BrokerError:
        pass
    else:
        pytest.fail(f"carehubd started with {what}; docs/data-model.md: it refuses to start\n"
                    f"--- stderr ---\n{b.log_tail()}", pytrace=False)
    log = b.log()
    assert b.returncode is not None and b.returncode > 0, \
        f"refusing to start with {what} must be an orderly exit, not code {b.returncode}:\n{log}"
    assert re.search(reason_re, log), \
        f"carehubd refused to start with {what} without saying why (want /{reason_re}/):\n{log}"
    assert not b.sanitizer_report(), b.sanitizer_report()
    assert not search_bytes(b.all_logs().encode("utf-8", "replace"), c.needles()), \
        f"personal data in the broker's log ({what})"


def assert_data_intact(b, connect, c, key_a, case, rcase, what):
    """Started again with key A after the refusal: nothing was lost or re-keyed."""
    b.config["privacy"] = {"key_file": str(key_a)}
    b.start()
    desk = connect(b, login="police-desk")
    m = wait_push(desk, pred=lambda m: m["case"] == case, timeout=5,
                  what="the case, with the right key again")
    assert case_names(m) == [c.values["name"]], \
        f"after a refused start with {what} and back, the case holds names {case_names(m)!r}"
    m = wait_push(desk, pred=lambda m: m["case"] == rcase, timeout=5, what="the report case")
    assert m["events"][0]["body"]["description"] == c.values["description"]
    school = connect(b, login="school-0042")
    _, _, case2 = send_event(school, "absence", c.absence(2))
    assert case2 == case, f"the child's next absence opened {case2}, not the child's case {case}"


def test_different_key_is_refused_at_start(make_broker, connect, tmp_path):
    """docs/data-model.md (privacy.check): a store sealed with key A, started with
    key B, is refused at start (not served with cases it cannot open, nor a child's
    events split over two cases); started again with key A, nothing was lost."""
    b, c, key_a, case, rcase = sealed_store(make_broker, connect, tmp_path, "wk")
    b.config["privacy"] = {"key_file": str(write_key(tmp_path / "b.key"))}
    assert_refused_at_start(b, c, r"sealed with another privacy key", "another privacy key")
    assert_data_intact(b, connect, c, key_a, case, rcase, "another key")


def test_privacy_off_on_a_sealed_store_is_refused_at_start(make_broker, connect, tmp_path):
    """docs/data-model.md: `privacy: off` on a store sealed with a key is refused at
    start too (it would store the child's next events in the clear, in other cases)."""
    b, c, key_a, case, rcase = sealed_store(make_broker, connect, tmp_path, "off-on-sealed")
    b.config["privacy"] = h.Bare("off")
    assert_refused_at_start(b, c, r"holds sealed children's data", "privacy: off")
    assert_data_intact(b, connect, c, key_a, case, rcase, "privacy: off")


# --------------------------------------------------------------------------
# Control: privacy off stores the canaries in the clear, and the search finds them

def test_control_privacy_off_stores_in_the_clear(make_broker, connect, tmp_path):
    c = Canaries()
    b = make_broker(config=privacy_config(tmp_path / "off", None), name="off")
    school = connect(b, login="school-0042")
    reporter = connect(b, login="reporter-01")
    send_all(c, school, reporter)
    assert b.stop() == 0
    data = (Path(b.config["broker"]["data_dir"]) / "data.mdb").read_bytes()
    hits = search_bytes(data, c.needles(EVENT_LABELS))
    stored = {"name", "child_id", "guardian_name", "guardian_phone", "description",
              "reporter_name", "reporter_phone", "location", "note", "name2", "child_id2"}
    missing = stored - set(hits)
    assert not missing, (f"control: with privacy: off the search did not find {sorted(missing)} in "
                         f"data.mdb, so a 0-hit search proves nothing")
    # the full UTF-8 strings, not only the tokens
    for label in ("name", "description", "guardian_name"):
        assert c.values[label].encode("utf-8") in data, f"control: {label} not found as UTF-8"
