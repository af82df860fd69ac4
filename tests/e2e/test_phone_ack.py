"""Acknowledging from a phone (PROTOCOL §11; CONFIG.md `broker.http`, `can_acknowledge`).

An SMS about an assignment not yet acknowledged ends with a link and a 6-digit reply
code; the link's page names the case, agency and deadline (never the child) and its
POST acknowledges with by "sms:<phone>"; a reply posted by the gateway to
/sms/inbound, signed like §7's webhooks, acknowledges when it holds a live code from
the number that code was sent to. Used or expired links, codes from another number,
unsigned posts acknowledge nothing; every attempt is in the trail. The broker runs on
the virtual clock (`--test-clock`): the 24 h expiry needs no sleep.
"""

import base64
import hashlib
import hmac
import json
import re
import urllib.error
import urllib.request

import carehub_harness as h
from carehub_harness import uid
from routing_harness import (  # noqa: F401  (fixtures)
    case_ack, check_webhook, make_clock_broker, receiver, wait_push,
)
from test_webhooks import PROMPT, Setup, of_type

HOUR = 3_600_000
PHONE_A, PHONE_B = "+8613800000031", "+8613800000032"
CHILD = "王小明"
LINK = re.compile(r"(http://127\.0\.0\.1:\d+)/a/([A-Za-z0-9_-]{43})")
CODE = re.compile(r"回复 (\d{6}) 确认")


def phone_setup(make_clock_broker, tmp_path, receiver, connect, *, steps=None, resolve=False):
    a = {"agency": "police", "ack_within": "1h"}
    if steps:
        a["escalate"] = steps
    if resolve:
        a["resolve_within"] = "2h"
        a["escalate_unresolved"] = [{"after": "0s", "notify": ["duty-sms"]}]
    wf = [{"name": "report", "match": {"type": "mandatory_report"}, "assign": [a]}]
    return Setup(make_clock_broker, tmp_path, receiver, connect, workflows=wf,
                 channels=[{"id": "duty-sms", "kind": "sms", "path": "/sms",
                            "to": [PHONE_A, PHONE_B], "can_acknowledge": True}],
                 agencies=[{"id": "police", "name": "滨海新区公安局", "channels": ["duty-sms"]}],
                 broker={"http": {"listen": "127.0.0.1:0"}, "timezone": "Asia/Shanghai"})


def base_url(s):
    m = re.search(r"broker: http on (http://127\.0\.0\.1:\d+)", s.b.log())
    assert m, f"the broker logs where its http listener is:\n{s.b.log_tail()}"
    return m.group(1)


def http(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with h.NO_PROXY.open(req, timeout=10) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def texts(receiver, n, type_="case.assigned"):
    rs = receiver.wait("/sms", n, timeout=PROMPT, pred=of_type(type_))
    return {r.json["data"]["to"]: r.json["data"] for r in rs}


def new_case(s, receiver, already=0):
    body = h.mandatory_report_body(uid("child"), child={"id": uid("cid"), "name": CHILD})
    _, _, case = s.report(body)
    m = wait_push(s.desk["police-desk"], pred=lambda m: m["case"] == case)
    rs = receiver.wait("/sms", already + 2, timeout=PROMPT, pred=of_type("case.assigned"))
    got = {r.json["data"]["to"]: r.json["data"]["text"] for r in rs
           if r.json["data"]["case"] == case}
    assert set(got) == {PHONE_A, PHONE_B}, got
    return case, m["id"], got


def signed(s, body, secret=None, ts=None):
    secret = secret or s.secret["/sms"]
    key = base64.b64decode(secret[len("whsec_"):])
    wid = "msg_" + uid("in")
    ts = str(ts if ts is not None else s.now() // 1000)
    mac = hmac.new(key, f"{wid}.{ts}.".encode() + body, hashlib.sha256).digest()
    return {"webhook-id": wid, "webhook-timestamp": ts,
            "webhook-signature": "v1," + base64.b64encode(mac).decode(),
            "Content-Type": "application/json"}


def reply(s, frm, text, **kw):
    body = json.dumps({"from": frm, "text": text}, ensure_ascii=False).encode()
    return http("POST", base_url(s) + "/sms/inbound", body, signed(s, body, **kw))


def assignment(s, case, aid):
    r = s.clk.request({"v": 1, "op": "query", "id": uid("q"), "what": "case", "case": case})
    return next(a for a in r["assignments"] if a["id"] == aid)


def trail(s, case):
    r = s.clk.request({"v": 1, "op": "query", "id": uid("q"), "what": "trail", "case": case})
    assert r.get("op") == "result", r
    return r["records"] if "records" in r else r["trail"]


def kinds(records, kind):
    return [x for x in records if x.get("kind") == kind]


def test_link_acknowledges_once_and_names_no_child(make_clock_broker, tmp_path, receiver, connect):
    s = phone_setup(make_clock_broker, tmp_path, receiver, connect)
    case, aid, got = new_case(s, receiver)
    text = got[PHONE_A]
    m = LINK.search(text)
    assert m and CODE.search(text), f"an unacknowledged assignment's SMS carries a link and a code: {text!r}"
    assert CHILD not in text and len(text) < 200, text
    assert m.group(1) == base_url(s)
    url = m.group(0)

    st, page, hdrs = http("GET", url)
    assert st == 200 and case in page and "滨海新区公安局" in page and "<form" in page, page
    assert CHILD not in page, "the link's page never shows the child"
    assert "default-src 'none'" in hdrs.get("Content-Security-Policy", ""), hdrs
    assert assignment(s, case, aid)["state"] == "open", "a GET changes nothing"

    st, page, _ = http("POST", url, b"")
    assert st == 200 and "已确认" in page, (st, page)
    a = assignment(s, case, aid)
    assert a["state"] == "acknowledged" and a["by"] == f"sms:{PHONE_A}", a

    st, page, _ = http("POST", url, b"")
    assert st == 404 and "已使用" in page, (st, page)
    st, _, _ = http("GET", url)
    assert st == 404, "a used link is gone"
    # the other number's link: the assignment is acknowledged already
    st, page, _ = http("POST", LINK.search(got[PHONE_B]).group(0), b"")
    assert st == 200 and "无需再次确认" in page, (st, page)
    assert assignment(s, case, aid)["by"] == f"sms:{PHONE_A}"

    recs = trail(s, case)
    acks = kinds(recs, "phone_ack")
    assert [(x["actor"], x["ref"]) for x in acks] == [(f"sms:{PHONE_A}", aid)], acks
    refused = kinds(recs, "phone_refused")
    assert {x["actor"] for x in refused} == {f"sms:{PHONE_A}", f"sms:{PHONE_B}"}, refused
    st, _, _ = http("GET", base_url(s) + "/a/" + "A" * 43)
    assert st == 404


def test_link_expires_after_24h(make_clock_broker, tmp_path, receiver, connect):
    s = phone_setup(make_clock_broker, tmp_path, receiver, connect)
    case, aid, got = new_case(s, receiver)
    s.advance(24 * HOUR)
    url = LINK.search(got[PHONE_A]).group(0)
    st, page, _ = http("GET", url)
    assert st == 404, page
    st, page, _ = http("POST", url, b"")
    assert st == 404 and "过期" in page, (st, page)
    assert assignment(s, case, aid)["state"] == "open"
    assert kinds(trail(s, case), "phone_refused"), "the refused attempt is in the trail"


def test_reply_code_acknowledges_from_its_number_only(make_clock_broker, tmp_path, receiver, connect):
    s = phone_setup(make_clock_broker, tmp_path, receiver, connect)
    case, aid, got = new_case(s, receiver)
    code_a = CODE.search(got[PHONE_A]).group(1)
    code_b = CODE.search(got[PHONE_B]).group(1)
    url = base_url(s) + "/sms/inbound"
    body = json.dumps({"from": PHONE_A, "text": code_a}).encode()

    assert http("POST", url, body, {"Content-Type": "application/json"})[0] == 401, "unsigned"
    bad = "whsec_" + base64.b64encode(b"another secret of 32 bytes......").decode()
    assert http("POST", url, body, signed(s, body, secret=bad))[0] == 401, "signed with another secret"
    assert http("POST", url, body, signed(s, body, ts=s.now() // 1000 - 3600))[0] == 401, "an old timestamp"
    assert http("GET", url)[0] == 405
    assert http("POST", url, b"x" * (64 * 1024 + 1), signed(s, b"x" * (64 * 1024 + 1)))[0] == 413
    assert assignment(s, case, aid)["state"] == "open"

    if code_a != code_b:   # B's code from A's number: not A's code
        st, ans, _ = reply(s, PHONE_A, code_b)
        assert st == 200 and json.loads(ans)["acknowledged"] is False, ans
    st, ans, _ = reply(s, PHONE_B, f"好的 {code_a} 收到")   # A's code from B's number
    assert st == 200 and json.loads(ans)["acknowledged"] is False, ans
    assert assignment(s, case, aid)["state"] == "open"

    st, ans, _ = reply(s, PHONE_A, f"收到 {code_a}")
    assert st == 200 and json.loads(ans)["acknowledged"] is True, ans
    a = assignment(s, case, aid)
    assert a["state"] == "acknowledged" and a["by"] == f"sms:{PHONE_A}", a
    st, ans, _ = reply(s, PHONE_A, code_a)
    assert json.loads(ans)["acknowledged"] is False, "the code is not live once acknowledged"
    recs = trail(s, case)
    assert [x["actor"] for x in kinds(recs, "phone_ack")] == [f"sms:{PHONE_A}"]
    assert len(kinds(recs, "phone_refused")) >= 1


def test_codes_same_per_assignment_and_recipient_unique_per_number(make_clock_broker, tmp_path,
                                                                   receiver, connect):
    s = phone_setup(make_clock_broker, tmp_path, receiver, connect,
              steps=[{"after": "0s", "notify": ["duty-sms"]}])
    cases = []
    for i in range(6):
        cases.append(new_case(s, receiver, already=2 * i))
    codes_a = [CODE.search(got[PHONE_A]).group(1) for _, _, got in cases]
    assert len(set(codes_a)) == len(codes_a), f"live codes of one number are unique: {codes_a}"
    s.advance(HOUR)   # every ack deadline passes: the escalation texts carry the same codes
    rs = receiver.wait("/sms", 12, timeout=PROMPT, pred=of_type("assignment.overdue"))
    for r in rs:
        d = r.json["data"]
        assert d["stage"] == "ack", d
        (case, aid, got) = next(c for c in cases if c[0] == d["case"])
        assert CODE.search(d["text"]).group(1) == CODE.search(got[d["to"]]).group(1), d["text"]
        assert LINK.search(d["text"]), "escalation texts at stage ack carry a link"


def test_wrong_codes_are_limited_per_number_and_hour(make_clock_broker, tmp_path, receiver, connect):
    s = phone_setup(make_clock_broker, tmp_path, receiver, connect)
    case, aid, got = new_case(s, receiver)
    code = CODE.search(got[PHONE_A]).group(1)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        st, ans, _ = reply(s, PHONE_A, wrong)
        assert st == 200 and json.loads(ans)["acknowledged"] is False
    st, ans, _ = reply(s, PHONE_A, code)
    assert json.loads(ans)["acknowledged"] is False and "一小时" in json.loads(ans)["result"], ans
    assert assignment(s, case, aid)["state"] == "open", "limited: even the right code does nothing"
    s.advance(HOUR)
    st, ans, _ = reply(s, PHONE_A, code)
    assert json.loads(ans)["acknowledged"] is True, ans


def test_texts_about_acknowledged_assignments_carry_neither(make_clock_broker, tmp_path, receiver,
                                                           connect):
    s = phone_setup(make_clock_broker, tmp_path, receiver, connect, resolve=True)
    case, aid, got = new_case(s, receiver)
    _, r = case_ack(s.desk["police-desk"], aid)
    assert r.get("op") == "ack", r
    s.advance(2 * HOUR + 1)
    rs = receiver.wait("/sms", 2, timeout=PROMPT, pred=of_type("assignment.overdue"))
    for r in rs:
        d = r.json["data"]
        assert d["stage"] == "resolve" and not LINK.search(d["text"]) and not CODE.search(d["text"]), d
    s.verify_all()


def test_root_is_a_login_page_and_other_paths_404(make_clock_broker, tmp_path, receiver, connect):
    s = phone_setup(make_clock_broker, tmp_path, receiver, connect)
    st, page, _ = http("GET", base_url(s) + "/")
    assert st == 200 and 'type="password"' in page and "<form" in page, page
    assert http("GET", base_url(s) + "/nothing")[0] == 404
    # the web view's pages (docs/web.md) without a session: back to the login page
    st, page, _ = http("GET", base_url(s) + "/cases")
    assert st == 200 and 'type="password"' in page and "case-" not in page, page


def test_config_refusals(tmp_path):
    cfg = h.base_config(tmp_path / "c")
    cfg["channels"] = [{"id": "duty-sms", "kind": "sms", "url": "http://127.0.0.1:9/x",
                        "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "to": [PHONE_A],
                        "can_acknowledge": True}]
    cfg["broker"]["webhook_allow"] = ["127.0.0.0/8"]
    path = tmp_path / "c.yaml"
    path.write_text(h.to_yaml(cfg))
    r = h.run_bin(["--check-config", "-c", str(path)])
    assert r.returncode != 0 and "can_acknowledge needs broker.http" in r.stderr, r.stderr
    cfg["broker"]["http"] = {"listen": "127.0.0.1:0", "public_url": "ftp://x"}
    path.write_text(h.to_yaml(cfg))
    r = h.run_bin(["--check-config", "-c", str(path)])
    assert r.returncode != 0 and "public_url" in r.stderr, r.stderr
    cfg["broker"]["http"] = {"listen": "127.0.0.1:0", "public_url": "https://hub.example.cn/"}
    path.write_text(h.to_yaml(cfg))
    r = h.run_bin(["--check-config", "-c", str(path)])
    assert r.returncode == 0, r.stderr
