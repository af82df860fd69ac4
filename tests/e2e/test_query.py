"""The `query` op (docs/protocol.md extension) under least privilege, with privacy on:
schools, reporters and monitors read no case (the refusal is in the trail); an agency
reads only the cases it holds; a supervisor reads every case file, with the child's data
opened, and each read is in the trail."""

import os
import time

import carehub_harness as h
from carehub_harness import assert_ack, uid
from routing_harness import case_ack, case_update, routing_config, send_event, wait_push

WORKFLOWS = [{"name": "reports", "match": {"type": "mandatory_report"},
              "assign": [{"agency": "police", "ack_within": "1h"}]}]


def start(make_broker, tmp_path, workflows=WORKFLOWS):
    key = tmp_path / "data.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    cfg = routing_config(tmp_path / "b", workflows=workflows)
    cfg["privacy"] = {"key_file": str(key)}
    b = make_broker(config=cfg, name="b")
    b.data_dir = cfg["broker"]["data_dir"]
    return b


def q(agent, **kw):
    return agent.request(dict({"v": 1, "op": "query", "id": uid("q")}, **kw))


def report(b, connect, name):
    rep = connect(b, login="reporter-01")
    _, ev, case = send_event(rep, "mandatory_report", h.mandatory_report_body(
        uid("child"), child={"id": uid("cid"), "name": name}))
    return ev, case


def kinds(trail, kind):
    return [r for r in trail["records"] if r.get("kind") == kind]


def test_school_is_refused_and_the_refusal_is_in_the_trail(make_broker, tmp_path, connect):
    b = start(make_broker, tmp_path)
    _, case = report(b, connect, "张三")
    for who in ("school-0042", "reporter-01", "monitor-01"):
        a = connect(b, login=who)
        r = q(a, what="case", case=case)
        h.assert_nack(r, "forbidden")
    sup = connect(b, login="supervisor-01")
    t = q(sup, what="trail", case=case)
    assert t.get("op") == "result", t
    refused = kinds(t, "read_refused")
    assert {r["actor"] for r in refused} == {"school-0042", "reporter-01", "monitor-01"}, refused


def test_supervisor_reads_the_case_file_with_the_childs_data(make_broker, tmp_path, connect):
    b = start(make_broker, tmp_path)
    name = "CANARY-" + uid("n")
    ev, case = report(b, connect, name)
    sup = connect(b, login="supervisor-01")
    r = q(sup, what="case", case=case)
    assert r.get("op") == "result" and r.get("what") == "case", r
    assert r["case"]["id"] == case
    assert [e["id"] for e in r["events"]] == [ev]
    assert r["events"][0]["body"]["child"]["name"] == name, "the body is opened for the reader"
    assert [a["agency"] for a in r["assignments"]] == ["police"]
    t = q(sup, what="trail", case=case)
    reads = kinds(t, "read")
    assert any(x["actor"] == "supervisor-01" and x["ref"] == "case" for x in reads), reads
    # the name is nowhere on disk (privacy.key_file): the file read above was opened in memory
    data = open(os.path.join(b.data_dir, "data.mdb"), "rb").read()
    assert len(data) > 0 and case.encode() in data, "the store is where the test looks"
    assert name.encode() not in data


def test_agency_reads_only_its_cases(make_broker, tmp_path, connect):
    b = start(make_broker, tmp_path)
    _, case = report(b, connect, "李四")
    absent_case = send_event(connect(b, login="school-0042"), "absence", h.absence_body())[2]
    police = connect(b, login="police-desk")
    r = q(police, what="case", case=case)
    assert r.get("op") == "result", r
    h.assert_nack(q(police, what="case", case=absent_case), "forbidden")
    lst = q(police, what="cases")
    ids = [c["id"] for c in lst["cases"]]
    assert case in ids and absent_case not in ids, lst
    sup = connect(b, login="supervisor-01")
    all_ids = [c["id"] for c in q(sup, what="cases")["cases"]]
    assert case in all_ids and absent_case in all_ids


TWO = [{"name": "reports", "match": {"type": "mandatory_report"},
        "assign": [{"agency": "police", "ack_within": "1h"},
                   {"agency": "civil_affairs", "ack_within": "1h"}]}]


def test_agency_reads_a_case_while_its_part_is_open_and_only_its_own_words(
        make_broker, tmp_path, connect):
    """Issue 12, finding 3: an agency reads a case file only while it holds an assignment
    in it that is not final, and sees the notes and `by` of its own assignments only; a
    supervisor sees everything."""
    b = start(make_broker, tmp_path, workflows=TWO)
    _, case = report(b, connect, "王五")
    police, civil = connect(b, login="police-desk"), connect(b, login="civil-desk")
    pa = wait_push(police, pred=lambda m: m.get("case") == case)["id"]
    ca = wait_push(civil, pred=lambda m: m.get("case") == case)["id"]
    assert case_ack(police, pa, by="张警官")[1].get("op") == "ack"
    assert case_update(police, pa, "in_progress", note="police only: the suspect's address")[1].get("op") == "ack"
    assert case_ack(civil, ca, by="李科员")[1].get("op") == "ack"
    assert case_update(civil, ca, "in_progress", note="civil only: guardianship")[1].get("op") == "ack"

    def words(reader):
        r = q(reader, what="case", case=case)
        assert r.get("op") == "result", r
        return {a["agency"]: (a.get("note"), a.get("by")) for a in r["assignments"]}

    seen = words(police)
    assert seen["police"] == ("police only: the suspect's address", "张警官"), seen
    assert seen["civil_affairs"] == (None, ""), f"police read civil affairs' words: {seen}"
    seen = words(civil)
    assert seen["civil_affairs"] == ("civil only: guardianship", "李科员"), seen
    assert seen["police"] == (None, ""), f"civil affairs read police's words: {seen}"
    seen = words(connect(b, login="supervisor-01"))
    assert seen["police"][0] and seen["civil_affairs"][0], seen   # a supervisor reads all

    # police's part ends (declined): it reads the case no more; civil affairs still does
    assert case_update(police, pa, "declined", note="not ours")[1].get("op") == "ack"
    h.assert_nack(q(police, what="case", case=case), "forbidden")
    h.assert_nack(q(police, what="trail", case=case), "forbidden")
    assert q(civil, what="case", case=case).get("op") == "result"


def test_case_list_filters_and_pages(make_broker, tmp_path, connect):
    b = start(make_broker, tmp_path)
    cases = [report(b, connect, f"孩子{i}")[1] for i in range(5)]
    sup = connect(b, login="supervisor-01")
    page1 = q(sup, what="cases", type="mandatory_report", limit=2)
    assert [c["id"] for c in page1["cases"]] == cases[:2] and page1["next"] == cases[1], page1
    page2 = q(sup, what="cases", type="mandatory_report", limit=2, after=page1["next"])
    assert [c["id"] for c in page2["cases"]] == cases[2:4]
    assert q(sup, what="cases", type="absence")["cases"] == []
    assert len(q(sup, what="cases", agency="police")["cases"]) == 5
    assert q(sup, what="cases", status="resolved")["cases"] == []


def test_bad_queries(make_broker, tmp_path, connect):
    b = start(make_broker, tmp_path)
    sup = connect(b, login="supervisor-01")
    h.assert_nack(q(sup, what="case", case="case-9999999999"), "not_found")
    h.assert_nack(q(sup, what="everything"), "invalid", field="/what")
    h.assert_nack(q(sup, what="case"), "invalid", field="/case")
    h.assert_nack(q(sup, what="cases", limit=0), "invalid", field="/limit")


def test_assignments_and_online_verify(make_broker, tmp_path, connect):
    b = start(make_broker, tmp_path)
    _, case = report(b, connect, "王五")
    sup = connect(b, login="supervisor-01")
    r = q(sup, what="assignments")
    assert r.get("op") == "result" and len(r["assignments"]) == 1, r
    a = r["assignments"][0]
    assert a["case"] == case and a["agency"] == "police" and "note" not in a and "plan" not in a
    v = q(sup, what="verify")
    assert v.get("intact") is True and v["records"] > 0 and v["problem"] == "", v
    h.assert_nack(q(connect(b, login="police-desk"), what="verify"), "forbidden")
    h.assert_nack(q(connect(b, login="school-0042"), what="assignments"), "forbidden")


def test_delivery_to_a_desk_is_in_the_trail_once(make_broker, tmp_path, connect):
    b = start(make_broker, tmp_path)
    police = connect(b, login="police-desk")
    _, case = report(b, connect, "赵六")
    a = wait_push(police, pred=lambda m: m["case"] == case)
    again = connect(b, login="police-desk")       # a second hello: the case is pushed again
    wait_push(again, pred=lambda m: m["case"] == case)
    sup = connect(b, login="supervisor-01")
    t = q(sup, what="trail", case=case)
    delivered = kinds(t, "delivered")
    assert [(r["actor"], r["ref"]) for r in delivered] == [("police-desk", a["id"])], delivered


def test_verify_runs_beside_intake(make_broker, tmp_path, connect):
    """Issue 10, item 5: a supervisor's verify reads the whole store in a thread of its
    own, so intake goes on while it runs: events sent after the verify are acked before
    the verify answers. Precondition asserted: the verify took long enough (a store of
    thousands of records under ASan) that events could be acked meanwhile."""
    b = start(make_broker, tmp_path)
    school = connect(b, login="school-0042")
    n_fill, window = 6000, 256
    sent = acked = 0
    while acked < n_fill:                       # fill the store, `window` in flight
        while sent < n_fill and sent - acked < window:
            school.send(h.event_msg("absence", h.absence_body(uid("child")), f"fill-{sent}"))
            sent += 1
        r = school.recv_reply(timeout=30)
        assert r is not None and r.get("op") == "ack", r
        acked += 1
    sup = connect(b, login="supervisor-01")
    vid = "verify-1"
    t0 = time.monotonic()
    sup.send({"v": 1, "op": "query", "id": vid, "what": "verify"})
    acks_before = 0
    verify = None
    i = 0
    while verify is None:                       # one event at a time while the verify runs
        mid = f"during-{i}"
        school.send(h.event_msg("absence", h.absence_body(uid("child")), mid))
        i += 1
        r = school.recv_reply(timeout=30)
        assert r is not None and r.get("op") == "ack" and r.get("id") == mid, r
        m = sup.recv_reply(timeout=0.001)
        if m is not None:
            verify = m
        else:
            acks_before += 1
        assert time.monotonic() - t0 < 120, "the verify never answered"
    took = time.monotonic() - t0
    assert verify.get("op") == "result" and verify.get("id") == vid, verify
    assert verify["intact"] is True and verify["records"] >= n_fill, verify
    assert acks_before >= 3, (f"only {acks_before} events were acked during a verify of "
                              f"{took:.2f} s: does the verify hold up the loop?")
    print(f"verify of {verify['records']} records took {took:.2f} s; {acks_before} events "
          f"acked meanwhile")


SPLIT = [{"name": "reports", "match": {"type": "mandatory_report"},
          "assign": [{"agency": "police", "ack_within": "1h"}]},
         {"name": "online", "match": {"type": "online_risk"},
          "assign": [{"agency": "civil_affairs", "ack_within": "1h"}]}]


def test_agency_query_scope_is_its_own_cases(make_broker, tmp_path, connect):
    """Issue 12, an agency's query scope: police holds one case, civil affairs another.
    Each reads its own case file; the other's case file and trail are `forbidden` (field
    /case, and the refusal names nothing of that case), and so is a case that does not exist
    (the same answer: an agency cannot tell another's case from none); its `cases` and
    `assignments` lists hold its own only, whatever `agency` it asks for; `verify` is
    refused. Another desk of the same agency reads its agency's case. A desk's first
    refusal is in the refused case's trail with the desk as actor; the others within the
    minute are counted into its next record (budget.h), not written one by one."""
    b = start(make_broker, tmp_path, workflows=SPLIT)
    name = "CANARY-" + uid("n")
    _, pcase = report(b, connect, name)
    _, _, ccase = send_event(connect(b, login="monitor-01"), "online_risk", h.online_risk_body())
    police, civil = connect(b, login="police-desk"), connect(b, login="civil-desk")
    wait_push(police, pred=lambda m: m.get("case") == pcase)
    wait_push(civil, pred=lambda m: m.get("case") == ccase)
    desks = (("police-desk", police, "police", pcase, ccase),
             ("civil-desk", civil, "civil_affairs", ccase, pcase))
    for who, desk, agency, own, other in desks:
        other_agency = "civil_affairs" if agency == "police" else "police"
        r = q(desk, what="case", case=own)
        assert r.get("op") == "result" and r["case"]["id"] == own, r
        assert {a["agency"] for a in r["assignments"]} == {agency}, r
        for what in ("case", "trail"):
            r = h.assert_nack(q(desk, what=what, case=other), "forbidden", field="/case")
            assert name not in repr(r), f"{who}: the refusal tells something of the case: {r!r}"
        h.assert_nack(q(desk, what="case", case="case-9999999999"), "forbidden", field="/case")
        for ask in ({}, {"agency": other_agency}):
            lst = q(desk, what="cases", **ask)
            assert lst.get("op") == "result", lst
            assert [c["id"] for c in lst["cases"]] == [own], f"{who} lists {lst['cases']!r} ({ask})"
        asg = q(desk, what="assignments")
        assert asg.get("op") == "result", asg
        assert [(a["case"], a["agency"]) for a in asg["assignments"]] == [(own, agency)], asg
        h.assert_nack(q(desk, what="verify"), "forbidden")
    assert q(connect(b, login="police-desk-2"), what="case", case=pcase).get("op") == "result"
    sup = connect(b, login="supervisor-01")
    for case, who in ((ccase, "police-desk"), (pcase, "civil-desk")):
        refused = kinds(q(sup, what="trail", case=case), "read_refused")
        assert {(r["actor"], r["ref"]) for r in refused} == {(who, "case")}, refused


def test_large_case_file_comes_in_pages(make_broker, tmp_path, connect):
    """Issue 12, finding 9: a case file larger than max_message_bytes is answered in pages
    of events under it, with events_total and `next`; following `next` reads every event
    once, in order; `carehub case` reads them all."""
    key = tmp_path / "data.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    cfg = routing_config(tmp_path / "b", workflows=WORKFLOWS, broker={"max_message_bytes": "8K"})
    cfg["privacy"] = {"key_file": str(key)}
    b = make_broker(config=cfg, name="b")
    school = connect(b, login="school-0042")
    child = uid("child")
    sent = []
    for day in range(1, 13):                       # 12 absences of one child: one case
        note = f"第{day}天 " + "家访记录 " * 120   # about 1.9 KB of text each
        body = h.absence_body(child, date=f"2025-03-{day:02d}", consecutive_days=day, note=note)
        sent.append(send_event(school, "absence", body))
    case = sent[0][2]
    assert {c for _, _, c in sent} == {case}       # the precondition: one case
    sup = connect(b, login="supervisor-01")
    got, after, pages = [], None, 0
    while True:
        kw = {"what": "case", "case": case}
        if after:
            kw["after"] = after
        r = sup.request(dict({"v": 1, "op": "query", "id": uid("q")}, **kw))
        assert r.get("op") == "result", r
        assert len(h.pack(r)) <= 8 * 1024, f"a page of {len(h.pack(r))} bytes"
        assert r["events_total"] == 12 and r["case"]["id"] == case
        got += [e["id"] for e in r["events"]]
        pages += 1
        after = r.get("next")
        if not after:
            break
        assert r["events"] and after == r["events"][-1]["id"], r.get("next")
    assert pages >= 3, f"{pages} page(s): the file was not large enough to page"
    assert got == [ev for _, ev, _ in sent], got    # each once, in order
    # bin/carehub reads every page
    env = dict(os.environ)
    carehub = os.path.join(os.environ.get("CAREHUB_BIN_DIR") or os.path.join(
        os.path.dirname(__file__), "..", "..", "bin"), "carehub")
    import json
    import subprocess
    p = subprocess.run([carehub, "-b", b.endpoint, "-a", "supervisor-01", "--wait", "10", "case", case,
                        "--json"], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert [e["id"] for e in doc["events"]] == got and "next" not in doc


def test_refusals_coalesced_and_queries_budgeted(make_broker, tmp_path, connect):
    """Issue 12, finding 9: an agent asking without end neither grows the trail one record
    per refusal nor makes the broker answer every query: its refusals within a minute are
    one trail record, and past its budget (BUDGET_QUERY_BURST at once) it is answered
    `unavailable` with the wait. Another agent is not held back."""
    b = start(make_broker, tmp_path)
    _, case = report(b, connect, "李四")
    school = connect(b, login="school-0042")
    t0, codes = time.monotonic(), []
    while len(codes) < 5000 and "unavailable" not in codes:
        codes.append(q(school, what="case", case=case).get("code"))
    took = time.monotonic() - t0
    assert codes[-1] == "unavailable", f"{len(codes)} queries in {took:.1f} s, none over budget"
    answered = len(codes) - 1
    assert set(codes[:-1]) == {"forbidden"}, set(codes[:-1])
    # the burst (200), and what refilled at 20 a second while asking, each answered
    assert 200 <= answered <= 200 + 20 * took + 1, (answered, took)
    last = q(school, what="case", case=case)
    if last.get("code") == "unavailable":
        assert "retry in" in last.get("error", ""), last
    sup = connect(b, login="supervisor-01")
    t = q(sup, what="trail", case=case)
    assert t.get("op") == "result", t                          # the supervisor is not held back
    refused = kinds(t, "read_refused")
    assert [r["actor"] for r in refused] == ["school-0042"], refused   # one record, not 200
