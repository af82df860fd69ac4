#!/usr/bin/python3
"""make demo: a day at the hub, narrated, in under a minute.

Starts carehubd on the default configuration (config/carehub.yaml, copied to
var/demo/ with its own data directory so `make run`'s data is left alone) with the
virtual clock, a local webhook/SMS receiver on 127.0.0.1:9100 (where the default
config's channels point), and the agent programs: a school, a mandated reporter, an
online monitor, and the police, education and civil-affairs desks. Then:

  1. a teacher reports a child in immediate danger: the case fans out to police,
     civil affairs and education, each desk receives it;
  2. the school's attendance export and the monitor's feed come in;
  3. police acknowledge at once; civil affairs a little later;
  4. education misses its 30-minute deadline: the district duty webhook is told, and
     30 minutes later the duty officers get an SMS;
  5. the agencies report back; the case is resolved and the teacher's tool shows the
     outcome;
  6. thirty days in a village (PROTOCOL §9): a child director enrols two children, the
     broker reminds her of each contact before it falls due and she phones; the elevated
     child's monthly home visit is missed: the broker records it as visit_overdue, civil
     affairs is assigned (case.assigned), does not acknowledge in time and the district
     duty desk is told (assignment.overdue); the supervisors' register shows it
     (`carehub register`).

The data stays in var/demo/data for queries afterwards. Ports 5570 and 9100 on
127.0.0.1 must be free.
"""

import base64
import hashlib
import hmac
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import msgpack
import zmq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "bin")
DEMO = os.path.join(ROOT, "var", "demo")
EP = "tcp://127.0.0.1:5570"
MIN = 60 * 1000
DAY = 24 * 60 * MIN
DIRECTOR = "director-xinhe-01"

procs = []


def say(text):
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def note(text):
    print(f"   {text}", flush=True)


# ---- the receiver: district duty webhook, agency webhooks, the SMS gateway ----

SECRET = None
notices = []


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        wid, ts, sig = (self.headers.get(h, "") for h in
                        ("webhook-id", "webhook-timestamp", "webhook-signature"))
        key = base64.b64decode(SECRET[len("whsec_"):])
        want = base64.b64encode(hmac.new(key, f"{wid}.{ts}.".encode() + body,
                                         hashlib.sha256).digest()).decode()
        ok = any(s.split(",", 1)[-1] == want for s in sig.split())
        msg = json.loads(body)
        notices.append((self.path, msg))
        d = msg.get("data", {})
        what = msg.get("type")
        line = f"[{self.path}] {what}"
        if what == "assignment.overdue":
            line += f" level {d.get('level')}: {d.get('agency')} has not acknowledged {d.get('case')}"
        elif "case" in d:
            line += f" {d.get('case')} {d.get('agency', '')}"
        if "text" in d:
            line += f"\n      SMS to {d.get('to')}: {d.get('text')}"
        print(f"   \033[36m{line}  (signature {'ok' if ok else 'BAD'})\033[0m", flush=True)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def start_receiver():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 9100), Receiver)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


# ---- helpers ------------------------------------------------------------------------

def spool(agent):
    return os.path.join(DEMO, "spool", agent)


def run(prog, *args, check=True):
    p = subprocess.run([os.path.join(BIN, prog), *args], capture_output=True, text=True, timeout=60)
    if check and p.returncode != 0:
        sys.exit(f"demo: {prog} {' '.join(args)} failed ({p.returncode}):\n{p.stderr}")
    return p


class Desk:
    """A long-running carehub-agency desk; its JSON lines are read in a thread."""

    def __init__(self, agent):
        self.agent = agent
        self.cases = []
        self.p = subprocess.Popen([os.path.join(BIN, "carehub-agency"), "-b", EP, "-a", agent,
                                   "--spool", spool(agent), "run", "--json"],
                                  stdout=subprocess.PIPE, text=True, stderr=subprocess.DEVNULL)
        procs.append(self.p)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            try:
                m = json.loads(line)
            except ValueError:
                continue
            if m.get("op") == "case":
                self.cases.append(m)
                print(f"   \033[33m[{self.agent}] new assignment {m['id']}: case {m['case']}, "
                      f"{m['type']}, severity {m['severity']}, acknowledge by "
                      f"{time.strftime('%H:%M', time.localtime(m['ack_by'] / 1000))} "
                      f"({m['events_total']} event(s))\033[0m", flush=True)

    def wait_case(self, case, timeout=10):
        end = time.time() + timeout
        while time.time() < end:
            for m in self.cases:
                if m["case"] == case:
                    return m
            time.sleep(0.05)
        sys.exit(f"demo: {self.agent} never received case {case}")


class Clock:
    def __init__(self):
        self.s = zmq.Context.instance().socket(zmq.DEALER)
        self.s.connect(EP)
        self.s.RCVTIMEO = 5000
        self.n = 0
        self._req({"op": "hello", "agent": "supervisor-01", "software": "demo-clock"})

    def _req(self, m):
        self.n += 1
        m = dict(m, v=1, id=f"clk-{self.n}")
        self.s.send(msgpack.packb(m))
        while True:
            r = msgpack.unpackb(self.s.recv(), raw=False)
            if r.get("op") == "ping":
                self.s.send(msgpack.packb({"v": 1, "op": "pong", "id": r["id"]}))
            elif r.get("id") == m["id"]:
                return r

    def advance(self, ms):
        return self._req({"op": "test_clock", "advance": ms})["now"]

    def set(self, ms):
        return self._req({"op": "test_clock", "set": ms})["now"]


class Director:
    """A child director's phone (儿童主任), as a bare DEALER: enrols children, records
    contacts, and confirms the broker's reminders (PROTOCOL §9) with `received`."""

    def __init__(self, agent):
        self.agent = agent
        self.s = zmq.Context.instance().socket(zmq.DEALER)
        self.s.connect(EP)
        self.s.RCVTIMEO = 5000
        self.n = 0
        self.reminders = []
        self._req({"op": "hello", "agent": agent, "software": "demo-director"})

    def _other(self, r):
        if r.get("op") == "ping":
            self.s.send(msgpack.packb({"v": 1, "op": "pong", "id": r["id"]}))
        elif r.get("op") == "reminder":
            self.s.send(msgpack.packb({"v": 1, "op": "received", "id": r["id"]}))
            if all(x["id"] != r["id"] for x in self.reminders):
                self.reminders.append(r)

    def _req(self, m):
        self.n += 1
        m = dict(m, v=1, id=f"dir-{self.n}")
        self.s.send(msgpack.packb(m))
        while True:
            r = msgpack.unpackb(self.s.recv(), raw=False)
            if r.get("id") == m["id"] and r.get("op") != "reminder":
                return r
            self._other(r)

    def event(self, type, body, at):
        r = self._req({"op": "event", "type": type, "at": at, "body": body})
        if r.get("op") != "ack":
            sys.exit(f"demo: the broker refused the director's {type}: {r}")
        return r

    def pump(self, seconds):
        end = time.time() + seconds
        while time.time() < end:
            if self.s.poll(int(max(0, end - time.time()) * 1000)):
                self._other(msgpack.unpackb(self.s.recv(), raw=False))

    def take(self):
        out, self.reminders = self.reminders, []
        return out


def demo_register_config(conf):
    """The demo's config gets what the village part needs if the default lacks it: a child
    director, contact and visit rhythms, a workflow that assigns a missed visit to civil
    affairs and tells the district duty desk when it is not acknowledged, and one that
    records enrolments and visits without assigning them."""
    import yaml
    doc = yaml.safe_load(conf)
    if not any(a.get("id") == DIRECTOR for a in doc.get("agents") or []):
        conf = re.sub(r"(?m)^agents:\n", f"agents:\n  - {{id: {DIRECTOR}, role: director}}   "
                      "# 新河村儿童主任 (the demo's)\n", conf, count=1)
    if not doc.get("rhythms"):
        conf += ("\n# 走访频次 (the demo's): 高风险每 14 天联系、每 30 天入户；其余 30 / 90 天\n"
                 "rhythms:\n"
                 "  - {name: elevated, match: {body.risk: elevated}, contact_every: 14d, "
                 "visit_every: 30d, remind_before: 2d}\n"
                 "  - {name: default, match: {}, contact_every: 30d, visit_every: 90d, "
                 "remind_before: 3d}\n")
    missed = [w for w in doc.get("workflows") or []
              if (w.get("match") or {}).get("type") in ("visit_overdue", ["visit_overdue"])]
    if not any(st.get("notify") for w in missed[:1] for a in w.get("assign") or []
               for st in a.get("escalate") or a.get("escalate_unresolved") or []):
        conf = re.sub(r"(?m)^workflows:\n", "workflows:\n"
                      "  - name: demo-missed-visit          # 走访逾期：民政跟进，超时告知区值班室\n"
                      "    match: {type: visit_overdue}\n"
                      "    assign:\n"
                      "      - agency: civil_affairs\n"
                      "        ack_within: 1d\n"
                      "        escalate:\n"
                      "          - {after: 0s, notify: [district-duty]}\n", conf, count=1)
    if not any((w.get("match") or {}).get("type") in ("enrolment", ["enrolment", "visit"])
               for w in doc.get("workflows") or []):
        conf = re.sub(r"(?m)^workflows:\n", "workflows:\n"
                      "  - name: demo-register              # 建档、走访：记录在案，不分派\n"
                      "    match: {type: [enrolment, visit]}  # (recorded, not assigned)\n"
                      "    assign: []\n", conf, count=1)
    return conf


def village_days(clock, civil):
    """Part 6: thirty days of a child director's rhythm on the virtual clock."""
    say("09:17 新河村: the child director enrols two children (建档，一人一档)")
    now = clock.advance(MIN)
    director = Director(DIRECTOR)
    red, gang = "xh-2025-017", "xh-2025-018"
    director.event("enrolment", {"child": {"id": red, "name": "小红", "category": ["left_behind"]},
                                 "village": "新河村", "risk": "elevated",
                                 "risk_reasons": ["parent_disabled"],
                                 "note": "父亲重度残疾，母亲外出务工，由祖母照看。"}, now)
    director.event("enrolment", {"child": {"id": gang, "name": "小刚", "category": ["left_behind"]},
                                 "village": "新河村"}, now)
    note("小红: risk elevated (a parent seriously disabled: 加大走访频次); 小刚: normal")
    note("the rhythms: elevated children contacted every 14 days and visited at home every 30;")
    note("the others every 30 and 90 days; the director is reminded ahead of each")
    say("The days go by (the virtual clock, a day at a time)")
    t0, seen = now, None
    for day in range(1, 61):
        now = clock.advance(DAY)
        director.pump(0.25)
        for rm in director.take():
            who = "小红" if rm.get("child") == red else "小刚"
            due = time.strftime("%m-%d", time.localtime(rm["due"] / 1000))
            kind = "home visit" if rm.get("kind") == "home_visit" else "contact"
            print(f"   \033[35m[{DIRECTOR}] day {day}: reminder: {who}'s {kind} is due {due}"
                  f"\033[0m", flush=True)
            if rm.get("kind") == "contact":
                director.event("visit", {"child": {"id": rm["child"]}, "kind": "contact",
                                         "date": time.strftime("%Y-%m-%d", time.localtime(now / 1000)),
                                         "method": "phone", "findings": "电话联系祖母，孩子在校正常。"},
                               now)
                note(f"day {day}: she phones the family: contact recorded, the next one due "
                     f"{'14' if rm['child'] == red else '30'} days on")
            else:
                note(f"day {day}: she is away at a training that week: no home visit")
        seen = next((m for m in civil.cases if m["type"] == "visit_overdue"), None)
        if seen:
            break
    if not seen:
        sys.exit("demo: no missed visit reached civil affairs within 60 days")
    say(f"Day {(now - t0) // DAY}: 小红's home visit is past due: the broker records visit_overdue")
    wait_for(lambda: any(m.get("type") == "case.assigned" and m["data"].get("case") == seen["case"]
                         for _, m in notices), 5)
    note(f"case {seen['case']}: civil affairs assigned (case.assigned on its webhook), "
         f"to acknowledge by {time.strftime('%m-%d %H:%M', time.localtime(seen['ack_by'] / 1000))}")
    say("Civil affairs does not acknowledge in time: the district duty desk is told")
    clock.set(seen["ack_by"] + MIN)
    wait_for(lambda: any(m.get("type") == "assignment.overdue" and m["data"].get("case") == seen["case"]
                         for _, m in notices), 5)
    say("The supervisors' view: carehub register (no names, no child ids)")
    r = run("carehub", "-b", EP, "-a", "supervisor-01", "register")
    print("   " + r.stdout.strip().replace("\n", "\n   "), flush=True)
    run("carehub-agency", "-b", EP, "-a", "civil-desk", "ack", seen["id"], "--by", "刘主任")
    now = clock.advance(MIN)
    director.event("visit", {"child": {"id": red}, "kind": "home_visit",
                             "date": time.strftime("%Y-%m-%d", time.localtime(now / 1000)),
                             "method": "in_person", "findings": "入户走访：祖母身体尚可，孩子学习正常。"},
                   now)
    note("civil affairs acknowledges; the director visits 小红 at home the same day")


def wait_for(pred, timeout=5):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def main():
    global SECRET
    for prog in ("carehubd", "carehub", "carehub-agency", "carehub-report", "carehub-school",
                 "carehub-monitor"):
        if not os.access(os.path.join(BIN, prog), os.X_OK):
            sys.exit(f"demo: bin/{prog} is missing: run make first")
    shutil.rmtree(DEMO, ignore_errors=True)
    os.makedirs(os.path.join(DEMO, "keys"), mode=0o700)
    with open(os.path.join(DEMO, "keys", "data.key"), "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(os.urandom(32))
    conf = open(os.path.join(ROOT, "config", "carehub.yaml"), encoding="utf-8").read()
    conf = re.sub(r"(?m)^(\s*data_dir:).*$", r"\1 data", conf)
    conf = re.sub(r"(?m)^(\s*key_file:).*$", r"\1 keys/data.key", conf)
    # --test-clock: the Clock below (supervisor-01) is the one agent that may move it
    conf = re.sub(r"(?m)^broker:\n", "broker:\n  test_clock_agent: supervisor-01\n", conf, count=1)
    conf = demo_register_config(conf)
    with open(os.path.join(DEMO, "carehub.yaml"), "w", encoding="utf-8") as f:
        f.write(conf)
    SECRET = re.search(r"(whsec_[A-Za-z0-9+/=]+)", conf).group(1)

    say("Start: carehubd on the default configuration (virtual clock), a webhook/SMS receiver")
    start_receiver()
    log = open(os.path.join(DEMO, "carehubd.log"), "w")
    broker = subprocess.Popen([os.path.join(BIN, "carehubd"), "-c", os.path.join(DEMO, "carehub.yaml"),
                               "--test-clock", "--ready-file", os.path.join(DEMO, "ready")],
                              stderr=log)
    procs.append(broker)
    if not wait_for(lambda: os.path.exists(os.path.join(DEMO, "ready")), 10):
        sys.exit(f"demo: carehubd did not start; see {DEMO}/carehubd.log")
    note(f"broker on {EP}; log in var/demo/carehubd.log; data in var/demo/data")
    clock = Clock()
    # The story starts at 08:10 tomorrow (local time): the virtual clock only moves forward.
    t = time.localtime(time.time() + 86400)
    clock.set(int(time.mktime((t.tm_year, t.tm_mon, t.tm_mday, 8, 10, 0, 0, 0, -1)) * 1000))
    police, edu, civil = Desk("police-desk"), Desk("education-desk"), Desk("civil-desk")
    time.sleep(0.5)

    say("08:10 A teacher files a mandatory report: a child in immediate danger (强制报告)")
    r = run("carehub-report", "-b", EP, "-a", "reporter-01", "--spool", spool("reporter-01"), "--json",
            "--organisation", "滨海新区新河街第一小学", "--role", "班主任", "--reporter-name", "张老师",
            "--harm", "physical_abuse", "--immediate-danger=yes", "--severity", "critical",
            "--description", "学生身上有多处新伤，称放学后不敢回家。",
            "--child-name", "小明", "--child-id", "stu-2025-0042", "--category", "left_behind")
    ack = json.loads(r.stdout.strip().splitlines()[-1])
    case = ack["case"]
    note(f"the broker stored it after its commit: event {ack['event']}, case {case}")
    pa = police.wait_case(case)
    ea = edu.wait_case(case)
    ca = civil.wait_case(case)
    note("police, education and civil affairs each hold an assignment with a deadline in minutes")

    say("08:12 The day's other reports come in: a school's attendance export, an online patrol")
    csv = os.path.join(DEMO, "attendance.csv")
    with open(csv, "w", encoding="utf-8") as f:
        f.write("student_id,name,date,status,reason,consecutive_days,guardian_contacted\n"
                "stu-0107,王芳,2025-03-03,absent,unexplained,3,no\n"
                "stu-0108,李强,2025-03-03,present,,,\n"
                "stu-0110,赵磊,2025-03-03,absent,sick,1,yes\n")
    run("carehub-school", "-b", EP, "-a", "school-0042", "--spool", spool("school-0042"), "--school", "滨海新区新河街第一小学", csv)
    note("two absent pupils sent (3 unexplained days brings in the education bureau)")
    feed = os.path.join(DEMO, "patrol.jsonl")
    with open(feed, "w", encoding="utf-8") as f:
        f.write(json.dumps({"id": "det-88121", "risk": "self_harm", "platform": "短视频平台",
                            "description": "疑似未成年人发布自伤内容", "severity": "critical"},
                           ensure_ascii=False) + "\n")
    run("carehub-monitor", "-a", "monitor-01", "-b", EP, "--spool", spool("monitor-01"), feed)
    note("a self-harm signal online goes to police and health with the shortest deadline")

    say("08:13 Police accept the report at once")
    run("carehub-agency", "-b", EP, "-a", "police-desk", "ack", pa["id"], "--by", "王警官")
    note(f"{pa['id']} acknowledged: its escalation is cancelled")
    clock.advance(20 * MIN)
    note("(the online self-harm case has a 15-minute deadline, and nobody takes it: the")
    note(" duty officers are paged about it too, by SMS and on the district duty webhook)")
    say("08:33 Civil affairs accept the teacher's report")
    run("carehub-agency", "-b", EP, "-a", "civil-desk", "ack", ca["id"], "--by", "刘主任")

    say("08:41 Education has not acknowledged within 30 minutes: the district duty webhook is told")
    clock.advance(11 * MIN)
    wait_for(lambda: any(m.get("type") == "assignment.overdue" and m["data"].get("agency") == "education"
                         for _, m in notices), 5)
    say("09:11 Still nothing from education: the duty officers get an SMS")
    clock.advance(30 * MIN)
    wait_for(lambda: any("text" in m.get("data", {}) and m["data"].get("agency") == "education"
                         for _, m in notices), 5)

    say("09:15 Education acknowledges; the agencies report back")
    run("carehub-agency", "-b", EP, "-a", "education-desk", "ack", ea["id"], "--by", "陈老师")
    run("carehub-agency", "-b", EP, "-a", "education-desk", "update", ea["id"], "resolved",
        "--note", "已安排心理老师跟进，学校每日关注。")
    run("carehub-agency", "-b", EP, "-a", "civil-desk", "update", ca["id"], "resolved",
        "--note", "已落实临时监护，纳入困境儿童台账。")
    run("carehub-agency", "-b", EP, "-a", "police-desk", "update", pa["id"], "resolved",
        "--note", "已立案调查，监护人已被约谈，儿童安全。")
    note(f"every assignment of {case} is final and resolved: the case is resolved")

    say("The teacher's tool shows the outcome (处理结果告知)")
    r = run("carehub-report", "-b", EP, "-a", "reporter-01", "--spool", spool("reporter-01"),
            "outcomes", "--wait", "2")
    print("   " + r.stdout.strip().replace("\n", "\n   "), flush=True)

    village_days(clock, civil)

    say(f"Done: {len(notices)} signed notices received; the data stays in var/demo/data")


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
