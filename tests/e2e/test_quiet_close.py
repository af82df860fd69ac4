"""CONFIG.md `quiet_close`: a case recorded without assignments (`assign: []`) closes by
itself after broker.quiet_close without a new event; a new event moves that time, and an
assignment made later keeps the case open. Runs on the broker's test clock."""

import carehub_harness as h
from carehub_harness import uid
from routing_harness import CLOCK_AGENT, clock, make_clock_broker, routing_config, send_event  # noqa: F401 (fixture)

HOUR = 3600 * 1000

WORKFLOWS = [
    {"name": "first-days", "match": {"type": "absence", "body.consecutive_days": "<3"},
     "assign": []},
    {"name": "long", "match": {"type": "absence"},
     "assign": [{"agency": "education", "ack_within": "1d"}]},
]


def start(make_clock_broker, tmp_path):
    cfg = routing_config(tmp_path / "b", workflows=WORKFLOWS, broker={"quiet_close": "1h"})
    return make_clock_broker(config=cfg, name="b")


def absence(school, child, days):
    return send_event(school, "absence", h.absence_body(child, consecutive_days=days))


def test_quiet_case_closes_after_quiet_close(make_clock_broker, tmp_path, connect):
    b = start(make_clock_broker, tmp_path)
    school = connect(b, login="school-0042")
    clk = connect(b, login=CLOCK_AGENT)
    child = uid("child")
    _, _, case1 = absence(school, child, 1)
    clock(clk, advance=HOUR - 1000)
    _, _, same = absence(school, child, 1)          # before quiet_close: joins, and moves it
    assert same == case1, "an event before quiet_close must join the open case"
    clock(clk, advance=HOUR - 1000)                 # 2 h after the first event, 1 h after the last
    _, _, still = absence(school, child, 2)
    assert still == case1, ("quiet_close counts from the case's last event: a case with an event "
                            "59 minutes ago must still be open")
    clock(clk, advance=HOUR + 1000)                 # now quiet for longer than quiet_close
    _, _, new = absence(school, child, 1)
    assert new != case1, "after quiet_close without events the case is closed: a new event opens a new case"


def test_assigned_case_does_not_close_quietly(make_clock_broker, tmp_path, connect):
    b = start(make_clock_broker, tmp_path)
    school = connect(b, login="school-0042")
    child = uid("child")
    _, _, case1 = absence(school, child, 1)
    _, _, case2 = absence(school, child, 3)         # day 3: education is assigned
    assert case2 == case1
    clock(connect(b, login=CLOCK_AGENT), advance=5 * HOUR)
    _, _, after = absence(school, child, 4)
    assert after == case1, "a case with an assignment stays open until resolved, whatever quiet_close says"


def test_quiet_close_survives_restart(make_clock_broker, tmp_path, connect):
    b = start(make_clock_broker, tmp_path)
    school = connect(b, login="school-0042")
    child = uid("child")
    _, _, case1 = absence(school, child, 1)
    b.restart()                                      # the timer is data (LMDB), not memory
    school = connect(b, login="school-0042")
    clock(connect(b, login=CLOCK_AGENT), advance=HOUR + 1000)
    _, _, new = absence(school, child, 1)
    assert new != case1, "the quiet-close time must survive a restart"
