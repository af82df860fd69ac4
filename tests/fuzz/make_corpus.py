#!/usr/bin/env python3
"""tests/fuzz/make_corpus.py — (re)write the committed seed corpora under tests/fuzz/corpus/.

    python3 tests/fuzz/make_corpus.py        (from the source tree's top)

Seeds are small on purpose: valid examples of each input, the msgpack traps
frame.h guards against, schema cases from tests/data/schema_cases.json and
snippets of config/carehub.yaml. Files in tests/fuzz/corpus/*/ that this
script does not write (regression inputs added by hand) are left alone.
No third-party modules: msgpack is packed by the small encoder below.
"""
import json
import os
import struct

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(TOP, "tests", "fuzz", "corpus")


def pack(v):
    """Minimal msgpack encoder (dict keys in insertion order)."""
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack("b", v)
        if 0 <= v < 2**32:
            return b"\xce" + struct.pack(">I", v)
        if 0 <= v < 2**64:
            return b"\xcf" + struct.pack(">Q", v)
        return b"\xd3" + struct.pack(">q", v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        b = v.encode("utf-8")
        if len(b) < 32:
            return bytes([0xA0 | len(b)]) + b
        if len(b) < 256:
            return b"\xd9" + bytes([len(b)]) + b
        return b"\xda" + struct.pack(">H", len(b)) + b
    if isinstance(v, bytes):
        return b"\xc4" + bytes([len(v)]) + v
    if isinstance(v, list):
        h = bytes([0x90 | len(v)]) if len(v) < 16 else b"\xdc" + struct.pack(">H", len(v))
        return h + b"".join(pack(x) for x in v)
    if isinstance(v, dict):
        h = bytes([0x80 | len(v)]) if len(v) < 16 else b"\xde" + struct.pack(">H", len(v))
        return h + b"".join(pack(k) + pack(x) for k, x in v.items())
    raise TypeError(type(v))


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


AT = 1764000000000
with open(os.path.join(TOP, "tests", "data", "schema_cases.json"), encoding="utf-8") as f:
    CASES = json.load(f)


def first_valid(t):
    return next(c["body"] for c in CASES if c["type"] == t and c["valid"])


ABSENCE = first_valid("absence")
REPORT = first_valid("mandatory_report")
RISK = first_valid("online_risk")


def env(op, id_, **kw):
    m = {"v": 1, "op": op, "id": id_}
    m.update(kw)
    return m


MESSAGES = {
    "hello": env("hello", "h-1", agent="school-1"),
    "hello-other": env("hello", "h-2", agent="agency-police"),
    "ping": env("ping", "p-1"),
    "pong": env("pong", "p-2"),
    "event-absence": env("event", "e-abs-1", type="absence", at=AT, body=ABSENCE),
    "event-report": env("event", "e-rep-1", type="mandatory_report", at=AT, body=REPORT),
    "event-risk": env("event", "e-risk-1", type="online_risk", at=AT, body=RISK),
    "event-unknown-type": env("event", "e-x-1", type="nope", at=AT, body={}),
    "event-bad-body": env("event", "e-abs-2", type="absence", at=AT, body={"school": 3}),
    "case-ack": env("case_ack", "a-1", assignment="asg-000001", by="Officer Wang"),
    "case-update": env("case_update", "u-1", assignment="asg-000001", status="referred",
                       to="civil_affairs", note="handed over"),
    "received": env("received", "r-1"),
    "query-case": env("query", "q-1", what="case", case="case-000001"),
    "query-cases": env("query", "q-2", what="cases", status="open", overdue=True, since=0),
    "query-trail": env("query", "q-3", what="trail", case="case-000001"),
    "query-assignments": env("query", "q-4", what="assignments", after="", limit=10),
    "query-verify": env("query", "q-5", what="verify"),
    "test-clock": env("test_clock", "t-1", advance=1000),
    "silence": env("silence", "s-1", match={"type": ["absence", "online_risk"],
                                            "body.risk": ["gambling", "doxxing"],
                                            "severity": "low", "body.consecutive_days": "<3"},
                   starts=1764000000000, ends=1764003600000, reason="school trip"),
    "silence-danger": env("silence", "s-2", match={"type": "mandatory_report"},
                          ends=1764003600000, reason="x"),
    "silence-expire": env("silence_expire", "s-3", silence="sil-000001"),
    "query-silences": env("query", "q-6", what="silences", after="sil-000001"),
    "version-2": {"v": 2, "op": "ping", "id": "v-2"},
    "no-id": {"v": 1, "op": "ping"},
}

TRAPS = {
    "trap-array32-4g": b"\xdd\xff\x00\x00\x00",
    "trap-fixarray-x1000": b"\x91" * 1000,
    "trap-str32-4g": b"\xdb\xff\xff\xff\xff",
    "trap-map32-4g": b"\xdf\xff\xff\xff\xff",
    "trap-bin32-4g": b"\xc6\xff\xff\xff\xff",
    "trap-c1": b"\x81\xa1a\xc1",
    "trap-empty": b"",
    "trap-trailing": pack({"v": 1}) + b"\xc0",
    "trap-int-key": b"\x81\x01\x01",
    "trap-fixmap-x20": b"\x81\xa1a" * 20 + b"\xc0",
}
for name, m in list(MESSAGES.items())[:6]:
    full = pack(m)
    for cut in (1, len(full) // 2, len(full) - 1):
        TRAPS["trunc-%s-%d" % (name, cut)] = full[:cut]

for target in ("fuzz_frame", "fuzz_proto"):
    for name, m in MESSAGES.items():
        write(target, name + ".mp", pack(m))
    for name, data in TRAPS.items():
        write(target, name + ".mp", data)
write("fuzz_frame", "types.mp", pack({"n": None, "t": True, "f": False, "i": -5, "u": 2**63 + 1,
                                      "d": 1.5, "s": "é", "b": b"\x00\x01", "a": [1, [2, [3]]],
                                      "m": {"k": {"k": {}}}}))
write("fuzz_frame", "dup-keys.mp", b"\x82\xa1a\x01\xa1a\x02")
write("fuzz_frame", "bad-utf8.mp", b"\x81\xa1s\xa2\xc3\x28")
write("fuzz_frame", "ext.mp", b"\x81\xa1e\xd4\x01\x02")

# ---- schema: bodies as JSON, valid and invalid, one per case (deduplicated) --------------
seen = set()
for i, c in enumerate(CASES):
    text = json.dumps(c["body"], ensure_ascii=False, sort_keys=False)
    if text in seen:
        continue
    seen.add(text)
    write("fuzz_schema", "case-%03d-%s.json" % (i, "valid" if c["valid"] else "invalid"), text)
for name, text in {"null": "null", "array": "[1,2,3]", "string": '"x"', "nul": '{"school":"a\\u0000b"}',
                   "deep": "[" * 40 + "]" * 40, "big-int": '{"consecutive_days": 99999999999999999999}',
                   "real": '{"consecutive_days": 1.0}'}.items():
    write("fuzz_schema", "extra-" + name + ".json", text)

# ---- config: the whole default file plus sections of it ----------------------------------
with open(os.path.join(TOP, "config", "carehub.yaml"), encoding="utf-8") as f:
    yaml_text = f.read()
write("fuzz_config", "carehub.yaml", yaml_text)
sections, cur = [], []
for line in yaml_text.splitlines(True):
    if line[:1].isalpha() and cur:
        sections.append("".join(cur))
        cur = []
    cur.append(line)
sections.append("".join(cur))
for i, s in enumerate(sections):
    body = "".join(l for l in s.splitlines(True) if not l.lstrip().startswith("#"))
    if body.strip():
        write("fuzz_config", "section-%02d.yaml" % i, body)
write("fuzz_config", "minimal.yaml",
      "broker:\n  listen: [\"tcp://127.0.0.1:5570\"]\nagents:\n  - {id: school-1, role: school}\n")
write("fuzz_config", "anchors.yaml", "a: &x [*x]\nb: *x\n")
write("fuzz_config", "flow.yaml", "{broker: {heartbeat: 250ms, max_message_bytes: -1}, agents: [[]]}\n")
write("fuzz_config", "tags.yaml", "broker: !!binary aGk=\nagents: !!map {}\n")
write("fuzz_config", "empty.yaml", "")

# ---- CSV: first byte is the control byte (separator and limits; see fuzz_csv.c) -----------
CSV = {
    "attendance": "student_id,name,date,status,reason\r\n"
                  "120116201501010011,Li Ming,2026-11-27,absent,unexplained\r\n"
                  "120116201501010012,\"Wang, Fang\",2026-11-27,late,\r\n",
    "bom-quotes": "\ufeffstudent_id,name,note\n1,\"say \"\"hi\"\"\",\"two\nlines\"\n\n2,b,\n",
    "bad-quote": "a,b\"c,d\n\"open,\"x\"y\n1,2\n\"never closed\n",
    "nul": "a,b\n1,\x00,3\n4,5\n",
    "utf8": "姓名,学校\n李明,滨海第三小学\n\xe2\x82,x\n",
    "no-final-newline": "a,b,c\n1,2,3",
}
for name, text in CSV.items():
    data = text.encode("utf-8", "surrogateescape") if "\xe2\x82" not in text else \
        text.replace("\xe2\x82", "").encode("utf-8") + b"\xe2\x82\n"
    write("fuzz_csv", name + ".csv", b"\x01" + data)  # ',' with default limits
write("fuzz_csv", "semicolon.csv", b"\x02a;b;c\n1;\"2;3\";4\n")
write("fuzz_csv", "tab-small-limits.csv", b"\xff" + b"a\tb\tc\td\te\tf\tg\th\n" + b"x" * 40 + b"\n")
write("fuzz_csv", "small-limits.csv", b"\x4d" + b"aaaaaaaaaaaa,b,c\n\"quoted field longer\",1\n")

# ---- JSONL: first byte 0x00 = as is; 0x07|(k<<3) puts a run of ~1 MiB first ---------------
JSONL = {
    "events": "\n".join(json.dumps({"type": "absence", "id": "e-%d" % i, "body": ABSENCE},
                                   ensure_ascii=False) for i in range(2)) + "\n",
    "crlf": '{"a":1}\r\n{"b":2}\r\n\r\n',
    "no-final-newline": '{"a":1}\n{"b":',
    "blank-lines": "\n\n\n",
    "cr-only": "a\rb\r\r\n",
}
for name, text in JSONL.items():
    write("fuzz_jsonl", name + ".jsonl", b"\x00" + text.encode("utf-8"))
for k in range(4):
    write("fuzz_jsonl", "long-run-%d.jsonl" % k, bytes([0x07 | (k << 3)]) + b'\n{"after":1}\n')
write("fuzz_jsonl", "long-run-no-newline.jsonl", b"\x0f" + b"tail")

# ---- hook: what a webhook receiver answers; byte 0 control bits, byte 1 split point ------
# (fuzz_hook.c: 0x01 close with RST, 0x02 max_age 10 minutes, 0x04 write in two parts split
# at byte 1, 0x08 append 70000 bytes past the 64 KiB response cap, 0x10 answer a retry 200)
CRLF = "\r\n"


def http(status_line, headers=(), body=""):
    return status_line + CRLF + "".join(h + CRLF for h in headers) + CRLF + body


HOOK = {
    # delivered
    "200-json": (0, 0, http("HTTP/1.1 200 OK", ["Content-Type: application/json",
                                                  "Content-Length: 11"], '{"ok":true}')),
    "204-no-content": (0, 0, http("HTTP/1.1 204 No Content")),
    "201-close-no-length": (0, 0, http("HTTP/1.1 201 Created", ["Connection: close"],
                                       "read until the server closes")),
    "202-chunked": (0, 0, http("HTTP/1.1 202 Accepted", ["Transfer-Encoding: chunked"],
                               "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")),
    "299-odd": (0, 0, http("HTTP/1.1 299 Odd", ["Content-Length: 0"])),
    "200-http10": (0, 0, "HTTP/1.0 200 OK\r\n\r\nold server, no length"),
    "200-lf-only": (0, 0, "HTTP/1.1 200 OK\nContent-Length: 2\n\nok"),
    "200-rst": (0x01, 0, http("HTTP/1.1 200 OK", ["Content-Length: 2"], "ok")),
    "200-split-status-line": (0x04, 7, http("HTTP/1.1 200 OK", ["Content-Length: 0"])),
    "200-past-cap": (0x08, 0, http("HTTP/1.1 200 OK", ["Content-Length: 70000"])),
    "100-then-200": (0, 0, http("HTTP/1.1 100 Continue") + http("HTTP/1.1 200 OK",
                                                                 ["Content-Length: 0"])),
    # retried (0x10: the retry is answered 200)
    "500-retry-after-5": (0x10, 0, http("HTTP/1.1 500 Internal Server Error",
                                        ["Retry-After: 5", "Content-Length: 0"])),
    "503-retry-after-date": (0x10, 0, http("HTTP/1.1 503 Service Unavailable",
                                           ["Retry-After: Wed, 21 Oct 2099 07:28:00 GMT",
                                            "Content-Length: 0"])),
    "503-retry-after-past-date": (0x10, 0, http("HTTP/1.1 503 Service Unavailable",
                                                ["Retry-After: Thu, 01 Jan 1970 00:00:00 GMT"])),
    "503-retry-after-blanks": (0x12, 0, http("HTTP/1.1 503 Busy", ["Retry-After: \t 120 \t",
                                                                  "Content-Length: 0"])),
    "503-retry-after-garbage": (0x10, 0, http("HTTP/1.1 503 Busy",
                                              ["Retry-After: soon, -5, 1e3, 5 s"])),
    "503-retry-after-huge": (0, 0, http("HTTP/1.1 503 Busy",
                                        ["Retry-After: 99999999999999999999999999"])),
    "429-retry-after-beyond-max-age": (0x02, 0, http("HTTP/1.1 429 Too Many Requests",
                                                     ["Retry-After: 7200", "Content-Length: 0"])),
    "503-retry-after-twice": (0x12, 0, http("HTTP/1.1 503 Busy",
                                            ["Retry-After: 1", "retry-after: 3600",
                                             "Content-Length: 0"])),
    "503-retry-after-folded": (0x10, 0, "HTTP/1.1 503 Busy\r\nRetry-After:\r\n 10\r\n"
                                        "Content-Length: 0\r\n\r\n"),
    "503-retry-after-trailer": (0x10, 0, http("HTTP/1.1 503 Busy", ["Transfer-Encoding: chunked"],
                                              "0\r\nRetry-After: 60\r\n\r\n")),
    "500-rst": (0x11, 0, http("HTTP/1.1 500 Oops", ["Content-Length: 5"], "oops!")),
    "500-keepalive-then-extra": (0x10, 0, http("HTTP/1.1 500 Oops", ["Content-Length: 0"]) +
                                 http("HTTP/1.1 200 OK", ["Content-Length: 0"])),
    "500-past-cap": (0x18, 0, http("HTTP/1.1 500 Oops")),
    "400": (0, 0, http("HTTP/1.1 400 Bad Request", ["Content-Length: 3"], "bad")),
    "404": (0, 0, http("HTTP/1.1 404 Not Found", ["Content-Length: 0"])),
    "301-location": (0x10, 0, http("HTTP/1.1 301 Moved Permanently",
                                   ["Location: http://10.0.0.1/elsewhere", "Content-Length: 0"])),
    "302-location-file": (0, 0, http("HTTP/1.1 302 Found", ["Location: file:///etc/passwd"])),
    "307-location-relative": (0, 0, http("HTTP/1.1 307 Temporary Redirect",
                                         ["Location: /hook2", "Content-Length: 0"])),
    "101-switching": (0, 0, http("HTTP/1.1 101 Switching Protocols",
                                 ["Upgrade: websocket", "Connection: Upgrade"])),
    # given up at once
    "410-gone": (0, 0, http("HTTP/1.1 410 Gone", ["Content-Length: 0"])),
    # framing lies and damage
    "chunked-bad-size": (0, 0, http("HTTP/1.1 200 OK", ["Transfer-Encoding: chunked"],
                                    "zz\r\nhello\r\n")),
    "chunked-huge-size": (0x10, 0, http("HTTP/1.1 503 Busy", ["Transfer-Encoding: chunked"],
                                        "FFFFFFFFFFFFFFFFFFFF\r\nx\r\n")),
    "content-length-short": (0, 0, http("HTTP/1.1 200 OK", ["Content-Length: 100"], "short")),
    "content-length-bad": (0x10, 0, http("HTTP/1.1 500 Oops", ["Content-Length: -1",
                                                               "Content-Length: 18446744073709551616"])),
    "content-length-twice": (0, 0, http("HTTP/1.1 200 OK", ["Content-Length: 2",
                                                            "Content-Length: 3"], "ok")),
    "truncated-status-line": (0, 0, "HTTP/1.1 20"),
    "status-line-only": (0, 0, "HTTP/1.1 503 Busy\r\n"),
    "status-4-digits": (0x10, 0, http("HTTP/1.1 2000 Too Many", ["Content-Length: 0"])),
    "status-099": (0x10, 0, http("HTTP/1.1 099 Low", ["Content-Length: 0"])),
    "http2-status-line": (0x10, 0, http("HTTP/2 200", ["content-length: 0"])),
    "http2-status-negative": (0x10, 0, "HTTP/2 -5\r\n\r\n"),  # curl 7.88 reads any integer
    "http2-status-88": (0x10, 0, "HTTP/288r \xf2\r\n\r\n\n"),  # crashes/fuzz_hook-http2-status-88
    "huge-header-line": (0x10, 0, http("HTTP/1.1 500 Oops", ["X-Big: " + "a" * 12000,
                                                             "Content-Length: 0"])),
    "nul-in-header": (0, 0, http("HTTP/1.1 200 OK", ["X-A: a\x00b", "Content-Length: 0"])),
    "nul-in-status": (0x10, 0, "HTTP/1.1 5\x000 Oops\r\n\r\n"),
    "header-without-colon": (0x10, 0, http("HTTP/1.1 503 Busy", ["Retry-After 5", "junk"])),
    "garbage-ssh": (0x10, 0, "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"),
    "garbage-html": (0x10, 0, "<html><body>502 Bad Gateway</body></html>\n"),
    "garbage-binary": (0x15, 3, "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\xff\xfe"),
    "empty": (0x10, 0, ""),
    "empty-rst": (0x11, 0, ""),
}
for name, (ctl, split, text) in HOOK.items():
    write("fuzz_hook", name + ".http", bytes([ctl, split]) + text.encode("latin-1"))
