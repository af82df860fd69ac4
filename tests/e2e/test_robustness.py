"""Robustness: hostile and broken frames (PROTOCOL §1–2), wrong field types,
random fuzz, and a store that cannot grow. The broker must answer (nack) or
ignore, and stay up: every test checks it still answers afterwards.
"""

import copy
import os
import random
import time

import msgpack
import pytest

import carehub_harness as h
from carehub_harness import ANY, NO_ID, assert_ack, assert_nack, pack, uid


def _alive(broker, connect):
    """The broker is up and serves a new connection."""
    assert broker.running(), f"carehubd died (exit code {broker.proc.poll()})"
    a = connect(broker, login="monitor-01")
    assert a.ping().get("op") == "pong"


def _ping_bytes(id="k-1"):
    return pack({"v": 1, "op": "ping", "id": id})


def _raw_map_with(pairs):
    """A msgpack map built by hand from already-encoded (key, value) byte pairs."""
    assert len(pairs) < 16
    return bytes([0x80 | len(pairs)]) + b"".join(k + v for k, v in pairs)


def _s(text):
    return pack(text)


BAD_FRAMES = [
    # name, frame(s), id expectation
    ("not-msgpack", b"hello", NO_ID),
    ("never-used-c1", b"\xc1", NO_ID),
    ("array", pack([1, 2, 3]), NO_ID),
    ("int", pack(5), NO_ID),
    ("string", pack("v"), NO_ID),
    ("nil", pack(None), NO_ID),
    ("ext", pack(msgpack.ExtType(5, b"abc")), NO_ID),
    ("empty-frame", b"", NO_ID),
    ("deep-array-truncated", b"\x91" * 100000, NO_ID),
    ("deep-array-complete", b"\x91" * 100000 + b"\xc0", NO_ID),
    ("array32-huge-length", b"\xdd\xff\x00\x00\x00", NO_ID),
    ("str32-huge-length", b"\xdb\xff\xff\xff\xff", NO_ID),
    ("map32-huge-length", b"\xdf\xff\xff\xff\xff", NO_ID),
    ("bin32-truncated", b"\xc6\xff\xff\xff\xff" + b"abc", NO_ID),
    ("map-header-only", b"\x83", NO_ID),
    ("truncated-map", _ping_bytes()[:-3], NO_ID),
    ("non-string-keys", pack({1: 1, "v": 1, "op": "ping", "id": "k-2"}), ANY),
    ("bin-keys", pack({b"v": 1, b"op": b"ping", b"id": b"k-3"}), ANY),
    ("trailing-garbage", _ping_bytes("k-4") + b"\x00", ANY),
    ("two-maps-in-one-frame", _ping_bytes("k-5") + _ping_bytes("k-6"), ANY),
    ("multi-frame", [_ping_bytes("k-7"), _ping_bytes("k-8")], ANY),
    ("invalid-utf8-id", _raw_map_with([(_s("v"), pack(1)), (_s("op"), _s("ping")),
                                       (_s("id"), b"\xa2\xff\xfe")]), NO_ID),
    ("invalid-utf8-op", _raw_map_with([(_s("v"), pack(1)), (_s("op"), b"\xa4pi\xffg"),
                                       (_s("id"), _s("k-9"))]), ANY),
    ("invalid-utf8-key", _raw_map_with([(b"\xa1\xff", pack(1)), (_s("op"), _s("ping")),
                                        (_s("id"), _s("k-10"))]), ANY),
]


# An op that is not valid UTF-8 is not a readable string (malformed), but it is
# certainly no known op either: both readings are accepted.
OTHER_CODES = {"invalid-utf8-op": {"malformed", "unknown_op"}}


@pytest.mark.parametrize("name,frame,idrule", BAD_FRAMES, ids=[c[0] for c in BAD_FRAMES])
def test_bad_frame_is_malformed(broker, connect, name, frame, idrule):
    a = connect(broker, login="monitor-01")
    r = a.send_raw(frame)
    assert_nack(r, "malformed", id=idrule, codes=OTHER_CODES.get(name))
    # the same connection still works, and so does a new one
    assert a.ping().get("op") == "pong"
    _alive(broker, connect)


@pytest.mark.parametrize("name,frame,idrule", BAD_FRAMES[:8], ids=[c[0] for c in BAD_FRAMES[:8]])
def test_bad_frame_before_hello_is_malformed(broker, connect, name, frame, idrule):
    a = connect(broker)
    assert_nack(a.send_raw(frame), "malformed", id=idrule)
    _alive(broker, connect)


def test_too_large_carries_id(broker, connect):
    a = connect(broker, login="school-0042")
    mid = uid("big")
    msg = h.event_msg("absence", h.absence_body(note="x" * 300_000), mid)
    frame = pack(msg)
    assert h.MAX_MESSAGE_BYTES < len(frame) < 4 * h.MAX_MESSAGE_BYTES
    assert_nack(a.send_raw(frame), "too_large", id=mid)
    assert a.ping().get("op") == "pong"
    # nothing was stored: the same id, now of a sensible size, is new
    assert_ack(a.event("absence", h.absence_body(), id=mid), mid, duplicate=False)


def test_just_under_limit_is_not_too_large(broker, connect):
    a = connect(broker, login="school-0042")
    mid = uid("edge")
    msg = h.event_msg("absence", h.absence_body(note=""), mid)
    pad = h.MAX_MESSAGE_BYTES - len(pack(msg)) - 16
    msg["body"]["note"] = "x" * pad          # a note far over 4000 bytes: invalid, not too_large
    assert len(pack(msg)) <= h.MAX_MESSAGE_BYTES
    assert_nack(a.request(msg), "invalid", id=mid, field="/body/note")


def test_over_four_times_limit(broker, connect):
    a = connect(broker, login="school-0042")
    mid = uid("huge")
    msg = h.event_msg("absence", h.absence_body(note="x" * (4 * h.MAX_MESSAGE_BYTES + 1000)), mid)
    r = a.send_raw(pack(msg), timeout=3)
    if r is not None:          # it may be dropped with the connection instead
        assert_nack(r, "too_large", id=ANY)
    _alive(broker, connect)


def _event(**fields):
    msg = h.event_msg("absence", h.absence_body(), uid("typ"))
    for k, v in fields.items():
        if v is h.DELETE:
            msg.pop(k)
        else:
            msg[k] = v
    return msg


FIELD_TYPE_CASES = [
    ("at-string", _event(at="2025-03-03T08:00:00Z"), {"invalid"}, "/at"),
    ("at-float", _event(at=1.7e12), {"invalid"}, "/at"),
    ("at-nan", _event(at=float("nan")), {"invalid"}, "/at"),
    ("at-nil", _event(at=None), {"invalid"}, "/at"),
    ("at-missing", _event(at=h.DELETE), {"invalid"}, "/at"),
    ("body-list", _event(body=[1, 2]), {"invalid"}, "/body"),
    ("body-string", _event(body="absent"), {"invalid"}, "/body"),
    ("body-nil", _event(body=None), {"invalid"}, "/body"),
    ("body-missing", _event(body=h.DELETE), {"invalid"}, "/body"),
    ("type-int", _event(type=3), {"invalid", "malformed", "unknown_type"}, ANY),
    ("type-missing", _event(type=h.DELETE), {"invalid", "malformed", "unknown_type"}, ANY),
    ("body-int-keys", _event(body={1: "x"}), {"invalid", "malformed"}, ANY),
]


@pytest.mark.parametrize("name,msg,codes,field", FIELD_TYPE_CASES, ids=[c[0] for c in FIELD_TYPE_CASES])
def test_event_field_types(broker, connect, name, msg, codes, field):
    a = connect(broker, login="school-0042")
    msg = dict(msg, id=uid("typ"))
    r = a.request(msg)
    assert_nack(r, None, codes=codes, id=msg["id"], field=field)
    assert a.ping().get("op") == "pong"


def _with_invalid_utf8(body_placeholder_msg):
    """Pack msg and swap the 15-byte placeholder string for invalid UTF-8."""
    raw = pack(body_placeholder_msg)
    ph = b"\xaf" + b"@@PLACEHOLDER@@"
    assert ph in raw
    return raw.replace(ph, b"\xaf" + b"\xff\xfe\xc0\x80" * 3 + b"\xed\xa0\x80")


def test_invalid_utf8_in_body_string(broker, connect):
    a = connect(broker, login="school-0042")
    mid = uid("utf8")
    body = h.absence_body()
    body["child"]["name"] = "@@PLACEHOLDER@@"
    r = a.send_raw(_with_invalid_utf8(h.event_msg("absence", body, mid)))
    assert_nack(r, None, codes={"invalid", "malformed"}, id=ANY)
    assert a.ping().get("op") == "pong"


def test_invalid_utf8_in_body_key(broker, connect):
    """The nack must itself be valid msgpack with UTF-8 strings, even when the
    offending key (which a field path would name) is not UTF-8."""
    a = connect(broker, login="school-0042")
    mid = uid("utf8")
    body = h.absence_body()
    body["@@PLACEHOLDER@@"] = "x"
    r = a.send_raw(_with_invalid_utf8(h.event_msg("absence", body, mid)))
    assert_nack(r, None, codes={"invalid", "malformed"}, id=ANY)
    assert a.ping().get("op") == "pong"


def test_deeply_nested_body(broker, connect):
    a = connect(broker, login="school-0042")
    mid = uid("deep")
    head = pack({"v": 1, "op": "event", "id": mid, "type": "absence", "at": h.now_ms()})
    # append a 6th key "body" whose value is a map nested 60000 deep
    head = bytes([head[0] + 1]) + head[1:]
    frame = head + pack("body") + b"\x81\xa1x" * 60000 + b"\xc0"
    assert len(frame) < h.MAX_MESSAGE_BYTES
    r = a.send_raw(frame)
    assert_nack(r, None, codes={"invalid", "malformed"}, id=ANY)
    assert a.ping().get("op") == "pong"


# The answer schemas/absence.json gives each: None = valid (ack), else the field of
# the `invalid` nack. consecutive_days is an integer, at least 1, with no maximum;
# note is a string (msgpack str: bin and ext are not strings); a NUL is a character.
@pytest.mark.parametrize("name,path,value,field", [
    ("consecutive_days-u64-max", "consecutive_days", 2 ** 64 - 1, None),
    ("consecutive_days-i64-min", "consecutive_days", -2 ** 63, "/body/consecutive_days"),
    ("consecutive_days-inf", "consecutive_days", float("inf"), "/body/consecutive_days"),
    ("note-bin", "note", b"\x00\x01binary", "/body/note"),
    ("note-ext", "note", msgpack.ExtType(1, b"x"), "/body/note"),
    ("child-name-nul", "child", {"id": "c-nul", "name": "a\x00b"}, None),
])
def test_odd_values_answered(broker, connect, name, path, value, field):
    a = connect(broker, login="school-0042")
    mid = uid("odd")
    body = h.absence_body()
    body[path] = value
    r = a.event("absence", body, id=mid)
    if field is None:
        assert_ack(r, mid)
    else:
        assert_nack(r, "invalid", id=mid, field=field)
    assert a.ping().get("op") == "pong"


def test_at_u64_max_answered(broker, connect):
    a = connect(broker, login="school-0042")
    mid = uid("odd")
    r = a.event("absence", h.absence_body(), id=mid, at=2 ** 64 - 1)
    assert r.get("op") in ("ack", "nack") and r.get("id") == mid, r
    assert a.ping().get("op") == "pong"


def test_agent_that_never_reads_does_not_stall_the_broker(broker, connect):
    """An agent floods requests and never reads a reply: the broker must go on
    serving everyone else (replies to a full peer are dropped, never waited on)."""
    import zmq
    hog = h.context().socket(zmq.DEALER)
    hog.setsockopt(zmq.LINGER, 0)
    hog.setsockopt(zmq.RCVHWM, 1)
    hog.setsockopt(zmq.RCVBUF, 4096)
    hog.setsockopt(zmq.SNDHWM, 100000)
    hog.connect(broker.endpoint)
    try:
        hog.send(pack({"v": 1, "op": "hello", "id": "hog-0", "agent": "monitor-01", "software": "x"}))
        note = "x" * 300           # every request is answered: 20000 replies overflow any queue
        for i in range(20000):
            hog.send(pack({"v": 1, "op": "frobnicate", "id": f"hog-{i + 1}", "pad": note}))
        other = connect(broker, login="school-0042")
        for _ in range(5):
            t = time.monotonic()
            r = other.ping(timeout=5)
            assert r.get("op") == "pong", r
            assert time.monotonic() - t < 5
        mid = uid("ev")
        assert_ack(other.event("absence", h.absence_body(), id=mid), mid)
    finally:
        hog.close(0)
    _alive(broker, connect)


# ---------------------------------------------------------------- fuzz

ALLOWED_REPLY_OPS = {"nack", "pong", "welcome", "ack"}


def _rand_str(rng, n=None):
    n = rng.randint(0, 12) if n is None else n
    pool = "abcxyz019._:-/ ü中\x00\n\"'{}"
    return "".join(rng.choice(pool) for _ in range(n))


def _rand_value(rng, depth=0):
    k = rng.randint(0, 13 if depth < 4 else 9)
    if k == 0:
        return rng.choice([0, 1, -1, 2 ** 31, 2 ** 32, 2 ** 63 - 1, 2 ** 64 - 1, -2 ** 63, 127, 128, 255])
    if k == 1:
        return rng.randint(-2 ** 40, 2 ** 40)
    if k == 2:
        return rng.choice([0.0, -0.0, 1.5, float("nan"), float("inf"), 1e300])
    if k == 3:
        return rng.choice([True, False, None])
    if k in (4, 5):
        return _rand_str(rng)
    if k == 6:
        return rng.randbytes(rng.randint(0, 8))
    if k == 7:
        if rng.random() < 0.2:
            return msgpack.Timestamp(rng.randint(0, 2 ** 34 - 1), rng.randint(0, 999_999_999))
        return msgpack.ExtType(rng.randint(0, 127), rng.randbytes(rng.randint(0, 4)))
    if k == 8:
        return rng.choice(["absence", "mandatory_report", "online_risk", "2025-03-03", "school-0042"])
    if k == 9:
        return rng.choice([{}, [], "", b""])
    if k in (10, 11):
        return [_rand_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["child", "id", "name", "birth_date", "severity", "category", "school", "date", "reason",
            "consecutive_days", "risk", "platform", "note", "harm", "reporter", "guardian", "x"]
    return {rng.choice(keys) if rng.random() < 0.8 else _rand_str(rng): _rand_value(rng, depth + 1)
            for _ in range(rng.randint(0, 5))}


def _rand_message(rng):
    m = {}
    if rng.random() < 0.9:
        m["v"] = 1 if rng.random() < 0.8 else _rand_value(rng)
    if rng.random() < 0.9:
        m["op"] = rng.choice(["hello", "ping", "pong", "event", "case_ack", "case_update", "received",
                              "welcome", "ack", "nack", "case", "outcome", "zz"]) \
            if rng.random() < 0.85 else _rand_value(rng)
    if rng.random() < 0.85:
        m["id"] = uid("fz") if rng.random() < 0.7 else _rand_value(rng)
    extra = ["type", "at", "body", "agent", "software", "assignment", "status", "note", "by", "to"]
    for key in rng.sample(extra, rng.randint(0, 5)):
        if key == "type" and rng.random() < 0.7:
            m[key] = rng.choice(["absence", "mandatory_report", "online_risk", "nope"])
        elif key == "at" and rng.random() < 0.7:
            m[key] = h.now_ms()
        elif key == "agent" and rng.random() < 0.5:
            m[key] = rng.choice(["school-0042", "nobody", "police-desk"])
        elif key == "body" and rng.random() < 0.5:
            body = copy.deepcopy(h.valid_body(rng.choice(["absence", "mandatory_report", "online_risk"])))
            for _ in range(rng.randint(1, 3)):
                body[rng.choice(list(body.keys()) + ["zz"])] = _rand_value(rng, 2)
            m[key] = body
        else:
            m[key] = _rand_value(rng)
    if rng.random() < 0.1:                         # non-string key
        m[rng.choice([1, -1, 2.5, None, True, b"v"])] = 1
    return m


def _seeds_frames(rng):
    seeds = [
        pack({"v": 1, "op": "ping", "id": "seed-1"}),
        pack({"v": 1, "op": "hello", "id": "seed-2", "agent": "school-0042", "software": "x"}),
        pack(h.event_msg("absence", h.absence_body("fz-child"), "seed-3")),
        pack(h.event_msg("mandatory_report", h.mandatory_report_body(), "seed-4")),
    ]
    return seeds


def _mutate(rng, data):
    b = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.randint(0, 5)
        if op == 0 and b:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[rng.randrange(len(b))] = rng.choice([0x00, 0xff, 0xc1, 0xdd, 0xdf, 0xdb, 0xc6, 0xd9, 0x7f, 0x80,
                                                   0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xcf, 0xd3, 0xca, 0xcb, 0xc7])
        elif op == 2 and b:
            del b[rng.randrange(len(b)):]
        elif op == 3:
            i = rng.randint(0, len(b))
            b[i:i] = rng.randbytes(rng.randint(1, 8))
        elif op == 4 and len(b) > 2:
            i = rng.randrange(len(b) - 1)
            j = rng.randint(i + 1, len(b))
            b[i:i] = b[i:j]
        elif op == 5 and b:
            i = rng.randrange(len(b))
            b[i:i + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x00\x00\x00"])
    return bytes(b)


def _fuzz_frames(rng, n_bytes, n_structs):
    seeds = _seeds_frames(rng)
    frames = []
    for i in range(n_bytes):
        if i % 2 == 0:
            frames.append(rng.randbytes(rng.randint(0, 64)))
        else:
            frames.append(_mutate(rng, rng.choice(seeds)))
    for _ in range(n_structs):
        frames.append(pack(_rand_message(rng)))
    rng.shuffle(frames)
    return frames


def _check_reply_shape(r, seed):
    assert r.get("op") in ALLOWED_REPLY_OPS, f"[seed {seed}] unexpected reply {h.summarize(r, 300)}"
    assert r.get("v") == 1, f"[seed {seed}] reply without v:1: {r!r}"
    if r["op"] == "nack":
        assert isinstance(r.get("code"), str) and r["code"], f"[seed {seed}] nack without code: {r!r}"
        h.check_error_sentence(r)


@pytest.mark.parametrize("with_hello", [False, True], ids=["before-hello", "after-hello"])
def test_fuzz(broker, connect, with_hello):
    seed = int(os.environ.get("CAREHUB_FUZZ_SEED", random.randrange(2 ** 32)))
    rng = random.Random(seed * 2 + int(with_hello))
    frames = _fuzz_frames(rng, 1000, 500)         # x2 parametrizations: 2000 byte strings, 1000 structures
    a = connect(broker)
    if with_hello:
        a.login("school-0042")
    replies = 0
    problems = []          # bad replies: collected, so one kind does not hide the others
    for start in range(0, len(frames), 100):
        batch = frames[start:start + 100]
        for f in batch:
            a.send_frames(f)
        marker = f"sync-{start}"
        a.send({"v": 1, "op": "ping", "id": marker})
        while True:
            try:
                r = a.recv_reply(timeout=10)
            except AssertionError as e:        # an undecodable reply
                problems.append(str(e))
                replies += 1
                continue
            assert r is not None, (f"[seed {seed}] no answer to the sync ping after frames "
                                   f"{start}..{start + len(batch)}; broker running: {broker.running()}")
            if r.get("id") == marker:
                # a fuzzed failed hello may have ended the session
                assert r.get("op") == "pong" or r.get("code") == "hello_required", f"[seed {seed}] {r!r}"
                break
            replies += 1
            try:
                _check_reply_shape(r, seed)
            except AssertionError as e:
                problems.append(str(e))
        assert broker.running(), f"[seed {seed}] carehubd died during fuzz batch at {start}"
    assert replies <= len(frames), f"[seed {seed}] more replies ({replies}) than messages ({len(frames)})"
    _alive(broker, connect)
    assert not problems, (f"[seed {seed}] {len(problems)} bad replies, e.g.:\n" +
                          "\n".join(sorted(set(p[:400] for p in problems))[:5]))


# ---------------------------------------------------------------- storage full

def test_store_full_is_unavailable_and_recovers(make_broker, connect):
    b = make_broker(overrides={"broker": {"map_size": "1M", "map_max": "1M"}})
    a = connect(b, login="school-0042")
    acked = []
    refused = None
    for i in range(1500):
        mid = f"fill-{i}"
        msg = h.event_msg("absence", h.absence_body(uid("child"), note="x" * 3900), mid)
        r = a.request(msg)
        if r.get("op") == "ack":
            acked.append((msg, assert_ack(r, mid)))
            continue
        assert_nack(r, "unavailable", id=mid)
        refused = msg
        break
    assert refused is not None, ("1500 events of 4 KB (6 MB) were acked by a store with map_max 1M: "
                                 "is map_max ignored, or are the bodies not stored?")
    assert acked, "the store refused the first event: map_size 1M should hold some"
    assert b.running()
    assert a.ping().get("op") == "pong"
    # still full: refused again (h.refused_again), and what was acked is still readable
    refused = h.refused_again(a, refused, lambda n: h.event_msg(
        "absence", h.absence_body(uid("child"), note="x" * 3900), f"fill-more-{n}"), acked)
    for msg, evc in acked[-3:]:
        assert assert_ack(a.request(msg), msg["id"], duplicate=True) == evc

    rc = b.restart(overrides={"broker": {"map_size": "64M", "map_max": "64M"}})
    assert rc == 0, f"SIGTERM exit code {rc}"
    a2 = connect(b, login="school-0042")
    assert_ack(a2.request(refused), refused["id"], duplicate=False)
    for msg, evc in acked:
        assert assert_ack(a2.request(msg), msg["id"], duplicate=True) == evc
