"""register_harness — helpers for the child-register tests (test_register.py, issue 13).

Everything here comes from the contract (shared/PROTOCOL.md §9, §12; shared/CONFIG.md
"Additions of 2026-12") and the project's wire notes for the register (spec/register-wire.md):

  register_config   a whole config (routing_config + two directors and an extra supervisor),
                    with `rhythms`, workflows that record enrolments and visits
                    (`assign: []`) and, optionally, one that routes visit_overdue
  Clock             the broker's virtual clock, as seen by the test (now / to / advance)
  enrol / visit     a director's events, with `at` on the virtual clock
  q                 a query
  overdue_events    every visit_overdue event recorded (read back as a supervisor:
                    what:"cases" type visit_overdue, then each case file)
  wait_overdue / settled_overdue   wait for the broker to record them after a move of
                    the clock (timers run on the loop, a little after the move)

`reminder` (§9) is a broker push: it is added to carehub_harness.PUSH_OPS so that
Agent.recv_reply and routing_harness.wait_push keep it aside like `case` and `outcome`.
"""

import re
import time

import carehub_harness as h
from routing_harness import CLOCK_AGENT, clock, routing_config

h.PUSH_OPS.add("reminder")

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

PROMPT = 5.0        # real seconds for the broker to act on a move of the clock (ASan, 2 cores)
SETTLE = 0.8        # real seconds to wait before saying "nothing (more) happened"

DIRECTORS = ["director-a", "director-b"]
REGISTER_AGENTS = [{"id": d, "role": "director"} for d in DIRECTORS] + [
    {"id": "supervisor-02", "role": "supervisor"},
]

RECORD = [
    {"name": "enrolments", "match": {"type": "enrolment"}, "assign": []},
    {"name": "visits", "match": {"type": "visit"}, "assign": []},
]


def rhythm(name="default", match=None, contact="1d", visit="3d", remind=None):
    r = {"name": name, "match": match if match is not None else {},
         "contact_every": contact, "visit_every": visit}
    if remind is not None:
        r["remind_before"] = remind
    return r


def overdue_workflow(agency="education", ack_within="1d"):
    return {"name": "missed-visit", "match": {"type": "visit_overdue"},
            "assign": [{"agency": agency, "ack_within": ack_within}]}


def register_config(workdir, *, rhythms, overdue=None, workflows=None, channels=None,
                    agencies=None, broker=None):
    """overdue: a workflow for visit_overdue (None: none, they go to fallback_agency);
    workflows: more workflows, tried after the recording ones and before `overdue`."""
    wf = list(RECORD) + list(workflows or [])
    if overdue is not None:
        wf.append(overdue)
    cfg = routing_config(workdir, workflows=wf, channels=channels, agencies=agencies,
                         broker=broker, agents=REGISTER_AGENTS)
    cfg["rhythms"] = rhythms
    return cfg


class Clock:
    """The broker's virtual clock, moved by CLOCK_AGENT's connection."""

    def __init__(self, agent):
        self.agent = agent
        self.now = clock(agent, advance=0)

    def read(self):
        self.now = clock(self.agent, advance=0)
        return self.now

    def to(self, t):
        t = int(t)
        assert t >= self.now, f"the test moves the clock back ({t} < {self.now})"
        self.now = clock(self.agent, set=t)
        assert self.now == t, (self.now, t)
        return self.now

    def advance(self, ms):
        return self.to(self.now + ms)


def q(agent, **kw):
    """A query; one over the agent's query budget (docs/protocol.md: `unavailable`,
    "retry in N ms") is asked again after the wait."""
    for _ in range(20):
        r = agent.request(dict({"v": 1, "op": "query", "id": h.uid("q")}, **kw))
        if r.get("op") == "nack" and r.get("code") == "unavailable":
            m = re.search(r"retry in (\d+) ms", r.get("error", ""))
            time.sleep(min(2.0, (int(m.group(1)) if m else 200) / 1000 + 0.05))
            continue
        return r
    raise AssertionError(f"query {kw!r} over budget 20 times in a row")


def result(reply, what):
    assert reply.get("op") == "result" and reply.get("what") == what, \
        f"query {what!r} answered {h.summarize(reply, 600)}"
    return reply


def enrolment_body(child_id, name, village, *, category=("left_behind",), risk=None, active=None,
                   **kw):
    body = {"child": {"id": child_id, "name": name, "category": list(category)},
            "village": village}
    if risk is not None:
        body["risk"] = risk
    if active is not None:
        body["active"] = active
    body.update(kw)
    return body


def visit_body(child_id, kind="contact", date="2026-12-01", **kw):
    body = {"child": {"id": child_id}, "kind": kind, "date": date}
    body.update(kw)
    return body


def send(agent, type, body, at, id=None):
    """Submit and insist on an ack (duplicate:false); returns (msg id, event, case)."""
    mid = id or h.uid("ev")
    ev, case = h.assert_ack(agent.event(type, body, id=mid, at=int(at)), mid)
    return mid, ev, case


def enrol(agent, child_id, name, village, at, **kw):
    return send(agent, "enrolment", enrolment_body(child_id, name, village, **kw), at)


def visit(agent, child_id, kind, at, **kw):
    return send(agent, "visit", visit_body(child_id, kind, **kw), at)


def case_events(sup, case):
    """Every event of a case (what:"case", paged)."""
    out, after = [], None
    while True:
        kw = {"what": "case", "case": case}
        if after:
            kw["after"] = after
        r = result(q(sup, **kw), "case")
        out += r["events"]
        after = r.get("next")
        if not after:
            return out


def overdue_cases(sup):
    out, after = [], None
    while True:
        kw = {"what": "cases", "type": "visit_overdue", "limit": 1000}
        if after:
            kw["after"] = after
        r = result(q(sup, **kw), "cases")
        out += r["cases"]
        after = r.get("next")
        if not after or not r["cases"]:
            return out


def overdue_events(sup, child=None):
    """Every visit_overdue event recorded (of `child` if given), oldest first."""
    evs = []
    for c in overdue_cases(sup):
        for e in case_events(sup, c["id"]):
            if e.get("type") != "visit_overdue":
                continue
            if child is not None and ((e.get("body") or {}).get("child") or {}).get("id") != child:
                continue
            evs.append(e)
    evs.sort(key=lambda e: (e.get("at", 0), e["body"].get("due", 0)))
    return evs


def summary(evs):
    return [(e["body"].get("child", {}).get("id"), e["body"].get("kind"), e["body"].get("due"),
             e["body"].get("last")) for e in evs]


def wait_overdue(sup, n, child=None, timeout=PROMPT, why=""):
    """Wait until at least n visit_overdue events (of child) are recorded; then SETTLE
    seconds more, and return them all (the caller checks there are exactly n)."""
    deadline = time.monotonic() + timeout
    while True:
        evs = overdue_events(sup, child)
        if len(evs) >= n:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(evs)} visit_overdue event(s) recorded within {timeout}s of "
                                 f"moving the clock, expected {n}{' (' + why + ')' if why else ''}: "
                                 f"{summary(evs)}")
        time.sleep(0.25)
    time.sleep(SETTLE)
    return overdue_events(sup, child)


def settled_overdue(sup, child=None):
    """The visit_overdue events once the broker had SETTLE seconds to act."""
    time.sleep(SETTLE)
    return overdue_events(sup, child)


def of_kind(evs, kind):
    return [e for e in evs if e["body"].get("kind") == kind]
