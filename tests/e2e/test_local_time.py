"""Local time and Chinese where people read (issue 14, items 4 and 5), against real
brokers on the virtual clock:

  * welcome carries `timezone` (broker.timezone; absent when it is not configured)
    and, to agencies and supervisors only, `agencies` {id: name};
  * carehub's tables (cases, the case file, silences) show Chinese headings by
    default, English with --lang en or CAREHUB_LANG=en, and times in
    broker.timezone with their offset: a case opened at 12:00Z reads 20:00 +08:00;
    --json stays machine-readable (ms since the epoch);
  * carehub-agency's desk shows the agency's name and its deadline in local time;
  * a bad --lang or CAREHUB_LANG is a usage error (exit 64) that says what to write.

The programs: $CAREHUB_BIN_DIR (make e2e sets build/san/bin), else <repo>/bin.
"""

import json
import os
import re
import subprocess
from datetime import datetime, timezone

import pytest

import carehub_harness as h
from agent_harness import agent_bin, check_sanitizer
from routing_harness import (CLOCK_AGENT, clock, make_clock_broker,  # noqa: F401
                             routing_config, send_event)

# 2027-03-01 12:00:00Z is 20:00 in Asia/Shanghai (UTC+08:00 all year)
T0 = int(datetime(2027, 3, 1, 12, 0, tzinfo=timezone.utc).timestamp() * 1000)
POLICE = next(a["name"] for a in h.AGENCIES if a["id"] == "police")
WORKFLOWS = [{"name": "reports", "match": {"type": "mandatory_report"},
              "assign": [{"agency": "police", "ack_within": "1h"}]}]


def start(make_clock_broker, tmp_path, connect, tz="Asia/Shanghai"):
    """A broker (in tz, or with no broker.timezone when tz is None) at T0 with one
    report assigned to police; returns (broker, case id)."""
    cfg = routing_config(tmp_path / "b", workflows=WORKFLOWS,
                         broker={"timezone": tz} if tz else None)
    b = make_clock_broker(config=cfg, name="b")
    assert clock(connect(b, login=CLOCK_AGENT), set=T0) == T0
    _, _, case = send_event(connect(b, login="reporter-01"), "mandatory_report",
                            h.mandatory_report_body())
    return b, case


def run_agent(name, args, env=None):
    """bin/NAME with CAREHUB_LANG unset (the default, Chinese) unless env sets it."""
    e = {k: v for k, v in os.environ.items() if k not in ("CAREHUB_LANG", "CAREHUB_SPOOL")}
    e.update(env or {})
    r = subprocess.run([agent_bin(name)] + [str(a) for a in args], capture_output=True,
                       text=True, timeout=120, env=e)
    check_sanitizer(name, r.stderr)
    return r


def carehub(b, *args, lang=None, tz="UTC", agent="supervisor-01"):
    """bin/carehub as a supervisor, in the host zone tz (which broker.timezone must
    override), Chinese unless lang sets CAREHUB_LANG."""
    env = {"TZ": tz}
    if lang is not None:
        env["CAREHUB_LANG"] = lang
    return run_agent("carehub", ["-b", b.endpoint, "-a", agent, "--wait", "10", *args], env=env)


def ok(r):
    assert r.returncode == 0, f"exit {r.returncode}\n--- stdout ---\n{r.stdout}\n--- stderr ---\n{r.stderr}"
    return r


def test_welcome_carries_the_zone_and_the_names(make_clock_broker, tmp_path, connect):
    b, _ = start(make_clock_broker, tmp_path, connect)
    sup = connect(b).login("supervisor-01")
    assert sup["timezone"] == "Asia/Shanghai", sup
    assert sup["agencies"]["police"] == POLICE, sup
    assert sup["agencies"]["civil_affairs"] == "滨海新区民政局", sup
    desk = connect(b).login("police-desk")
    assert desk["timezone"] == "Asia/Shanghai" and desk["agencies"]["police"] == POLICE, desk
    # roles that never see an agency id are not sent the names
    for agent in ("school-0042", "reporter-01", "monitor-01"):
        w = connect(b).login(agent)
        assert w["timezone"] == "Asia/Shanghai" and "agencies" not in w, w


def test_welcome_without_a_configured_zone_has_none(make_clock_broker, tmp_path, connect):
    b, _ = start(make_clock_broker, tmp_path, connect, tz=None)
    w = connect(b).login("supervisor-01")
    assert "timezone" not in w and w["agencies"]["police"] == POLICE, w


def test_cases_table_in_chinese_and_local_time(make_clock_broker, tmp_path, connect):
    b, case = start(make_clock_broker, tmp_path, connect)
    out = ok(carehub(b, "cases")).stdout
    head, row = out.splitlines()[0], next(ln for ln in out.splitlines() if case in ln)
    assert head.split() == ["案件", "类型", "状态", "严重程度", "立案时间", "任务（单位:状态）"], out
    # the host says UTC; broker.timezone wins: 12:00Z is 20:00 in Shanghai, offset shown
    assert "2027-03-01 20:00:00 +08:00" in row and "12:00:00" not in row, out
    # the columns line up under the Chinese headings (display width, not bytes)
    assert row.index("2027-03-01") == h_col(head, "立案时间"), out

    en = ok(carehub(b, "--lang", "en", "cases")).stdout
    assert en.splitlines()[0].split() == ["CASE", "TYPE", "STATUS", "SEVERITY", "OPENED",
                                          "ASSIGNMENTS"], en
    assert "2027-03-01 20:00:00 +08:00" in en, en
    assert ok(carehub(b, "cases", lang="en")).stdout.splitlines()[0].startswith("CASE"), "CAREHUB_LANG"
    # --lang wins over CAREHUB_LANG
    assert ok(carehub(b, "--lang", "zh", "cases", lang="en")).stdout.startswith("案件")

    # --json is for machines: the wire's ms, whatever the language
    (doc,) = [json.loads(ln) for ln in ok(carehub(b, "cases", "--json")).stdout.splitlines()]
    assert doc["id"] == case and doc["opened"] == T0, doc


def h_col(head, title):
    """The display column where title starts in head (CJK characters are two wide)."""
    i = head.index(title)
    return sum(2 if ord(c) >= 0x2E80 else 1 for c in head[:i])


def test_case_file_names_the_agency_in_local_time(make_clock_broker, tmp_path, connect):
    b, case = start(make_clock_broker, tmp_path, connect)
    out = ok(carehub(b, "case", case)).stdout
    assert out.startswith(f"案件 {case}\n"), out
    assert "事件（1）：" in out and "任务（1）：" in out, out
    # the assignment: the agency's name and its id; created at 20:00 and due by 21:00 local
    line = next(ln for ln in out.splitlines() if POLICE in ln)
    assert f"{POLICE} (police)" in line, out
    assert "created=2027-03-01 20:00:00 +08:00" in line, line
    assert "ack_by=2027-03-01 21:00:00 +08:00" in line, line
    en = ok(carehub(b, "--lang", "en", "case", case)).stdout
    assert en.startswith(f"case {case}\n") and "assignments (1):" in en, en


def test_no_configured_zone_keeps_the_hosts(make_clock_broker, tmp_path, connect):
    b, case = start(make_clock_broker, tmp_path, connect, tz=None)
    out = ok(carehub(b, "cases", tz="UTC")).stdout
    assert "2027-03-01 12:00:00 +00:00" in out, out
    out = ok(carehub(b, "cases", tz="America/New_York")).stdout
    assert "2027-03-01 07:00:00 -05:00" in out, out


def test_silence_list_headings(make_clock_broker, tmp_path, connect):
    b, _ = start(make_clock_broker, tmp_path, connect)
    ok(carehub(b, "silence", "add", "--type", "absence", "--match", "body.reason=sick",
               "--starts", T0 + 3_600_000, "--ends", T0 + 3 * 3_600_000, "--reason", "学校停课"))
    out = ok(carehub(b, "silence", "list")).stdout
    assert out.splitlines()[0].split()[:5] == ["编号", "状态", "开始", "结束", "设置人"], out
    assert "2027-03-01 21:00:00 +08:00" in out and "2027-03-01 23:00:00 +08:00" in out, out
    en = ok(carehub(b, "--lang", "en", "silence", "list")).stdout
    assert en.startswith("ID "), en


def test_agency_desk_shows_name_and_local_deadline(make_clock_broker, tmp_path, connect):
    b, case = start(make_clock_broker, tmp_path, connect)
    e = {"TZ": "UTC"}
    r = run_agent("carehub-agency", ["-b", b.endpoint, "-a", "police-desk", "list", "--wait", "2"],
                  env=e)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "新任务 " in out and f"案件 {case}" in out, out
    assert f"单位 {POLICE} (police)" in out, out
    assert "签收期限 2027-03-01 21:00:00 +08:00" in out, out
    assert re.search(r"最新事件：mandatory_report，时间 \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+08:00", out), out
    e["CAREHUB_LANG"] = "en"
    r = run_agent("carehub-agency", ["-b", b.endpoint, "-a", "police-desk", "list", "--wait", "2"],
                  env=e)
    assert "NEW assignment" in r.stdout and f"agency {POLICE} (police)" in r.stdout, r.stdout
    assert "acknowledge by 2027-03-01 21:00:00 +08:00" in r.stdout, r.stdout


def test_director_reminders_in_chinese(tmp_path):
    """carehub-director's reminder list (--local: no broker, so the host's zone)."""
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    rem = {"v": 1, "op": "reminder", "id": "rm-1", "child": "C-001", "kind": "home_visit",
           "due": T0, "received_at": T0}
    (spool / "reminders.jsonl").write_text(json.dumps(rem) + "\n")
    args = ["-a", "director-01", "--spool", spool, "reminders", "--local"]
    r = run_agent("carehub-director", args, env={"TZ": "Asia/Shanghai"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("2027-03-01 20:00:00 +08:00  待办  入户走访    C-001  收到于 "
                               "2027-03-01 20:00:00 +08:00"), r.stdout
    assert "1 条提醒" in r.stderr, r.stderr
    r = run_agent("carehub-director", ["--lang", "en"] + args, env={"TZ": "Asia/Shanghai"})
    assert r.stdout.startswith("2027-03-01 20:00:00 +08:00  due   home_visit  C-001  received "), r.stdout


@pytest.mark.parametrize("prog", ["carehub", "carehub-agency", "carehub-director"])
def test_bad_language_is_a_usage_error(prog):
    r = run_agent(prog, ["-a", "x", "--lang", "fr", "--help"])
    assert r.returncode == 64 and "--lang fr: give zh" in r.stderr, r.stderr
    e = {"CAREHUB_LANG": "fr"}
    args = {"carehub": ["-b", "tcp://127.0.0.1:9", "-a", "supervisor-01", "--wait", "1", "cases"],
            "carehub-agency": ["-b", "tcp://127.0.0.1:9", "-a", "police-desk", "list", "--wait", "1"],
            "carehub-director": ["-b", "tcp://127.0.0.1:9", "-a", "d-1", "--wait", "1", "due"]}[prog]
    r = run_agent(prog, args, env=e)
    assert r.returncode == 64 and "CAREHUB_LANG=fr" in r.stderr and "zh" in r.stderr, (r.returncode, r.stderr)


def test_stats_verify_and_sample_in_chinese(make_clock_broker, tmp_path, connect):
    """The supervisors' other texts: stats, verify and the spot-check sample with its
    checklist in Chinese by default, in English with --lang en (the --json outputs keep
    their English keys and checklist)."""
    b, case = start(make_clock_broker, tmp_path, connect)
    stats = ok(carehub(b, "stats")).stdout
    assert stats.startswith("案件：1\n") and "按类型: mandatory_report 1" in stats and "任务：1" in stats, stats
    assert ok(carehub(b, "--lang", "en", "stats")).stdout.startswith("cases: 1\n")
    v = ok(carehub(b, "verify")).stdout
    assert v.startswith("完整：") and "审计记录" in v, v
    assert ok(carehub(b, "--lang", "en", "verify")).stdout.startswith("intact: ")
    s = ok(carehub(b, "sample", "--seed", "2027")).stdout
    assert s.startswith("抽查：共 1 个案件，抽取 1 个，种子 2027") and case in s, s
    assert "[ ] 已向报告人反馈结果" in s and "reporter told" not in s, s
    en = ok(carehub(b, "--lang", "en", "sample", "--seed", "2027")).stdout
    assert en.startswith("spot check: 1 of 1 case(s), seed 2027") and "[ ] the reporter told the outcome" in en, en
    (doc,) = [json.loads(ln) for ln in ok(carehub(b, "sample", "--seed", "2027", "--json")).stdout.splitlines()]
    assert "the reporter told the outcome" in doc["cases"][0]["check"], doc
