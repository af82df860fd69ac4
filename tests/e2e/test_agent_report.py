"""carehub-report: the mandated reporter's tool, against a real broker.

  * a report given by flags is acknowledged and the case id printed; the body
    the agency receives holds every field as typed;
  * bad or missing fields are usage errors (64) and nothing is sent; a report
    the broker refuses (a role that may not report) exits 65;
  * the terminal form (--interactive, answers on stdin) submits the same way;
  * with the broker down the report stays in the spool (75) and `flush`
    delivers it later;
  * `outcomes` prints the outcome once an agency (driven from Python here)
    resolves the case, confirms it (a second run prints nothing new), and
    `outcomes --local` shows it again without a broker.

Programs: $CAREHUB_BIN_DIR (make e2e: build/san/bin) or <repo>/bin.
"""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

import carehub_harness as h
from routing_harness import case_update, routing_config, wait_push

REPORT_TO_POLICE = {"name": "report", "match": {"type": "mandatory_report"},
                    "assign": [{"agency": "police", "ack_within": "1h"}]}


def bin_dir():
    return Path(os.environ.get("CAREHUB_BIN_DIR") or h.REPO / "bin")


def prog(name):
    p = bin_dir() / name
    if not (p.is_file() and os.access(p, os.X_OK)):
        pytest.fail(f"{p} not found: build it (make, or make san-build) or set CAREHUB_BIN_DIR",
                    pytrace=False)
    return str(p)


def run(name, *args, timeout=60, input=None, env=None):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([prog(name)] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout, input=input, env=e)
    for m in h.SANITIZER_MARKERS:
        assert m not in p.stderr, f"{name}: sanitizer report:\n{p.stderr[-6000:]}"
    return p


def json_lines(text):
    return [json.loads(ln) for ln in text.splitlines() if ln.strip()]


@pytest.fixture
def routed(make_broker, tmp_path):
    name = "carehubd-routed"
    cfg = routing_config(tmp_path / name, workflows=[REPORT_TO_POLICE])
    return make_broker(config=cfg, name=name)


def report(ep, spool, *args, agent="reporter-01", **kw):
    ep = ep.endpoint if isinstance(ep, h.Broker) else ep
    return run("carehub-report", "-b", ep, "-a", agent, "--spool", spool, *args, **kw)


FULL = [
    "--organisation", "滨海新区第一小学", "--reporter-name", "陈老师", "--role", "teacher",
    "--phone", "+86 22 5555 0199", "--harm", "neglect",
    "--description", "Alone at home for three days without food.", "--suspected",
    "--immediate-danger=no", "--location", "新北街道 12 号", "--occurred-at", "2025-03-01T08:30:00+08:00",
    "--child-id", "C-100", "--child-name", "王芳", "--gender", "female", "--birth-date", "2015-02-01",
    "--category", "left_behind", "--category", "orphan,left_behind", "--jurisdiction", "新北街道",
    "--guardian-name", "王强", "--guardian-relation", "father", "--guardian-phone", "+86 138 0000 0000",
    "--severity", "high", "--note", "Neighbours say the father works in another city.",
]


def test_help():
    p = run("carehub-report", "--help")
    assert p.returncode == 0, p.stderr
    for word in ("--organisation", "--harm", "physical_abuse", "--category", "outcomes", "--local",
                 "--interactive"):
        assert word in p.stdout, word


def test_report_by_flags_is_acknowledged(routed, connect, tmp_path):
    p = report(routed, tmp_path / "spool", *FULL)
    assert p.returncode == 0, p.stderr
    m = re.search(r"^case (\S+)$", p.stdout, re.M)
    e = re.search(r"^event (\S+)$", p.stdout, re.M)
    assert m and e, p.stdout
    case_id = m.group(1)
    assert h.ID_RE.match(case_id) and h.ID_RE.match(e.group(1))

    desk = connect(routed, login="police-desk")
    msg = wait_push(desk, "case", pred=lambda x: x["case"] == case_id)
    assert msg["severity"] == "high" and msg["type"] == "mandatory_report"
    ev = msg["events"][-1]
    assert ev["event"] == e.group(1)
    assert ev["body"] == {
        "reporter": {"organisation": "滨海新区第一小学", "name": "陈老师", "role": "teacher",
                     "phone": "+86 22 5555 0199"},
        "harm": "neglect",
        "description": "Alone at home for three days without food.",
        "suspected": True,
        "immediate_danger": False,
        "location": "新北街道 12 号",
        "occurred_at": 1740789000000,   # 2025-03-01T00:30:00Z
        "severity": "high",
        "note": "Neighbours say the father works in another city.",
        "child": {"id": "C-100", "name": "王芳", "gender": "female", "birth_date": "2015-02-01",
                  "category": ["left_behind", "orphan"], "jurisdiction": "新北街道",
                  "guardian": {"name": "王强", "relation": "father", "phone": "+86 138 0000 0000"}},
    }, ev["body"]


def test_json_output_and_own_id(routed, tmp_path):
    args = ["--organisation", "卫生院", "--harm", "physical_abuse", "--description", "Bruises.",
            "--child-name", "李四", "--json", "--id", "rep-2025-0001"]
    p = report(routed, tmp_path / "spool", *args)
    assert p.returncode == 0, p.stderr
    (ack,) = json_lines(p.stdout)
    assert ack["id"] == "rep-2025-0001" and ack["duplicate"] is False, ack
    # the same --id again (a retry from a script): the same case, duplicate
    p = report(routed, tmp_path / "spool-2", *args)
    assert p.returncode == 0, p.stderr
    (again,) = json_lines(p.stdout)
    assert again["duplicate"] is True and again["case"] == ack["case"], again


def test_bad_fields_are_usage_errors(routed, tmp_path):
    base = ["--organisation", "x", "--description", "y", "--child-name", "z"]
    cases = [
        (base + ["--harm", "sadness"], "--harm"),
        (base + ["--harm", "neglect", "--birth-date", "2015-02-30"], "--birth-date"),
        (base + ["--harm", "neglect", "--category", "rich"], "--category"),
        (base + ["--harm", "neglect", "--occurred-at", "yesterday"], "--occurred-at"),
        (base + ["--harm", "neglect", "--suspected=perhaps"], "--suspected"),
        (base + ["--harm", "neglect", "--phone", "1" * 33], "--phone"),
        (["--harm", "neglect", "--child-name", "z"], "--organisation, --description"),
    ]
    for args, word in cases:
        p = report(routed, tmp_path / "spool", *args, input="")
        assert p.returncode == 64, (args, p.stdout, p.stderr)
        assert word in p.stderr, (word, p.stderr)
        assert p.stdout == ""
    assert not (tmp_path / "spool").exists(), "nothing was spooled"


def test_refused_report_exits_65_unknown_agent_77(routed, tmp_path):
    # a monitor may not send mandatory reports: the broker says forbidden
    p = report(routed, tmp_path / "spool", "--organisation", "网信办", "--harm", "other",
               "--description", "x", "--child-name", "y", agent="monitor-01")
    assert p.returncode == 65, (p.stdout, p.stderr)
    assert "forbidden" in p.stderr, p.stderr
    # an agent the broker does not know
    p = report(routed, tmp_path / "spool-x", "--organisation", "x", "--harm", "other",
               "--description", "x", "--child-name", "y", "--wait", "3", agent="nobody-01")
    assert p.returncode == 77, (p.stdout, p.stderr)
    assert "unauthorized" in p.stderr, p.stderr


def test_interactive_form(routed, connect, tmp_path):
    answers = [
        "滨海医院",          # organisation
        "",                  # name
        "doctor",            # role
        "",                  # phone
        "sadness",           # harm: refused, asked again
        "2",                 # harm: sexual_abuse by number
        "",                  # description: required, asked again
        "Disclosed to the school doctor.",
        "yes",               # suspected
        "n",                 # immediate danger
        "",                  # location
        "2025-03-02 10:00",  # occurred at
        "赵六",              # child's name
        "C-200",             # child id
        "3",                 # gender: unknown
        "",                  # birth date
        "1,5",               # categories: left_behind, disabled
        "", "", "", "",      # jurisdiction, guardian x3
        "critical",          # severity
        "",                  # note
        "y",                 # send
    ]
    p = report(routed, tmp_path / "spool", "--interactive", "--json",
               input="\n".join(answers) + "\n")
    assert p.returncode == 0, (p.stdout, p.stderr)
    (ack,) = json_lines(p.stdout)
    assert "is not one of" in p.stderr and "(required)" in p.stderr, p.stderr
    desk = connect(routed, login="police-desk")
    msg = wait_push(desk, "case", pred=lambda x: x["case"] == ack["case"])
    body = msg["events"][-1]["body"]
    assert body["harm"] == "sexual_abuse" and body["suspected"] is True
    assert body["immediate_danger"] is False and body["severity"] == "critical"
    assert body["reporter"] == {"organisation": "滨海医院", "role": "doctor"}
    assert body["child"] == {"id": "C-200", "name": "赵六", "gender": "unknown",
                             "category": ["left_behind", "disabled"]}
    assert isinstance(body["occurred_at"], int)

    # the form ends early (EOF) or is not confirmed: nothing is sent
    p = report(routed, tmp_path / "spool", "--interactive", input="x\n")
    assert p.returncode == 64 and "nothing was sent" in p.stderr
    p = report(routed, tmp_path / "spool", "--interactive", input="\n".join(answers[:-1] + ["n"]) + "\n")
    assert p.returncode == 64 and "not sent" in p.stderr


def test_broker_down_report_kept_then_flushed(make_broker, tmp_path):
    ep = f"tcp://127.0.0.1:{h.free_port()}"
    args = ["--organisation", "村委会", "--harm", "abandonment", "--description", "Left alone.",
            "--child-name", "孙七", "--id", "rep-offline-1"]
    p = report(ep, tmp_path / "spool", *args, "--wait", "1")
    assert p.returncode == 75, (p.stdout, p.stderr)
    assert "rep-offline-1" in p.stderr and "spool" in p.stderr, p.stderr

    name = "carehubd-late"
    cfg = routing_config(tmp_path / name, workflows=[REPORT_TO_POLICE])
    cfg["broker"]["listen"] = [ep]
    make_broker(config=cfg, name=name)
    p = report(ep, tmp_path / "spool", "flush")
    assert p.returncode == 0, p.stderr
    assert "earlier report rep-offline-1 was acknowledged" in p.stderr, p.stderr
    assert "1 report(s) acknowledged, 0 refused, 0 still in the spool" in p.stderr


def test_outcomes_after_the_case_is_resolved(routed, connect, tmp_path):
    spool = tmp_path / "spool"
    p = report(routed, spool, "--organisation", "居委会", "--harm", "guardian_absent",
               "--description", "Grandmother in hospital.", "--child-name", "周八", "--json")
    assert p.returncode == 0, p.stderr
    (ack,) = json_lines(p.stdout)

    # nothing yet
    p = report(routed, spool, "outcomes", "--json", "--wait", "1")
    assert p.returncode == 0, p.stderr
    assert p.stdout == ""

    desk = connect(routed, login="police-desk")
    msg = wait_push(desk, "case", pred=lambda x: x["case"] == ack["case"])
    _, r = case_update(desk, msg["id"], "resolved", note="Aunt takes care of the child.")
    assert r.get("op") == "ack", r

    p = report(routed, spool, "outcomes", "--json", "--wait", "1")
    assert p.returncode == 0, p.stderr
    (o,) = json_lines(p.stdout)
    assert o["op"] == "outcome" and o["ref"] == ack["id"] and o["case"] == ack["case"], o
    assert o["event"] == ack["event"] and o["status"] == "resolved"
    assert o["note"] == "Aunt takes care of the child."

    # confirmed with `received`: not delivered again
    p = report(routed, spool, "outcomes", "--wait", "1")
    assert p.returncode == 0 and p.stdout == "", (p.stdout, p.stderr)

    # but kept locally, readable without a broker
    p = run("carehub-report", "-a", "reporter-01", "--spool", spool, "outcomes", "--local",
            env={"CAREHUB_ENDPOINT": ""})
    assert p.returncode == 0, p.stderr
    assert f"case {ack['case']}: resolved - Aunt takes care of the child." in p.stdout, p.stdout
    p = run("carehub-report", "-a", "reporter-01", "--spool", spool, "outcomes", "--local", "--json")
    (local,) = json_lines(p.stdout)
    assert local["id"] == o["id"] and isinstance(local["received_at"], int)


def test_outcome_arriving_while_reporting_is_kept(routed, connect, tmp_path):
    """An outcome pushed after the hello of a later report is logged, not lost."""
    spool = tmp_path / "spool"
    p = report(routed, spool, "--organisation", "x", "--harm", "bullying", "--description", "y",
               "--child-name", "z", "--json")
    (ack,) = json_lines(p.stdout)
    desk = connect(routed, login="police-desk")
    msg = wait_push(desk, "case", pred=lambda x: x["case"] == ack["case"])
    _, r = case_update(desk, msg["id"], "resolved", note="done")
    assert r.get("op") == "ack", r
    p = report(routed, spool, "--organisation", "x", "--harm", "bullying", "--description",
               "another", "--child-name", "w")
    assert p.returncode == 0, p.stderr
    p = run("carehub-report", "-a", "reporter-01", "--spool", spool, "outcomes", "--local", "--json")
    assert [o["ref"] for o in json_lines(p.stdout)] == [ack["id"]], (p.stdout, p.stderr)
