"""CURVE security (PROTOCOL §1, CONFIG.md): the key generator, a CURVE broker
whose ZAP handler admits only configured keys, and identity taken from the key.
"""

import os
import stat

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

import carehub_harness as h
from carehub_harness import assert_ack, uid


def test_keygen_files(tmp_path, carehub_bin):
    d = tmp_path / "keys"
    d.mkdir()
    r = h.run_bin(["keygen", "alice", "--dir", str(d)])
    assert r.returncode == 0, f"keygen failed ({r.returncode}): {r.stderr}"
    key, pub = d / "alice.key", d / "alice.pub"
    assert key.is_file() and pub.is_file(), os.listdir(d)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600, f"secret key mode {oct(key.stat().st_mode)}"
    sec = key.read_text().splitlines()[0]
    pk = pub.read_text().splitlines()[0]
    assert h.Z85_KEY_RE.match(sec), f"secret key line is not 40 Z85 chars: {sec!r}"
    assert h.Z85_KEY_RE.match(pk), f"public key line is not 40 Z85 chars: {pk!r}"
    assert zmq.curve_public(sec.encode()) == pk.encode(), "the .pub is not the public key of the .key"
    # a second key is different
    sec2, pub2 = h.keygen("bob", d)
    assert sec2 != sec and pub2 != pk


@pytest.fixture
def curve_broker(tmp_path, make_broker, carehub_bin):
    kd = tmp_path / "keys"
    kd.mkdir()
    b_sec, b_pub = h.keygen("broker", kd)
    s_sec, s_pub = h.keygen("school", kd)        # configured as school-0042
    x_sec, x_pub = h.keygen("stranger", kd)      # not configured
    agents = []
    keys = {}
    for a in h.AGENTS:
        a = dict(a)
        if a["id"] == "school-0042":
            pub = s_pub
        else:
            pub, sec = (k.decode() for k in zmq.curve_keypair())
            keys[a["id"]] = (pub, sec)
        a["public_key"] = pub
        agents.append(a)
    b = make_broker(overrides={
        "broker": {"security": "curve", "secret_key_file": str(kd / "broker.key")},
        "agents": agents,
    })
    b.keys = {"broker": (b_pub, b_sec), "school": (s_pub, s_sec), "stranger": (x_pub, x_sec), **keys}
    return b


def _curve_agent(connect, b, who, timeout=5):
    pub, sec = b.keys[who]
    return connect(b, curve=(b.keys["broker"][0], pub, sec), timeout=timeout)


def test_curve_configured_agent_named_by_key(curve_broker, connect):
    a = _curve_agent(connect, curve_broker, "school")
    mid = uid("hello")
    w = a.hello("monitor-01", id=mid)      # the name in hello does not matter: the key does
    assert w.get("op") == "welcome", w
    assert w.get("id") == mid
    assert w.get("agent") == "school-0042" and w.get("role") == "school", w
    # and it acts as that school
    eid = uid("ev")
    assert_ack(a.event("absence", h.absence_body(), id=eid), eid)
    oid = uid("ev")
    r = a.event("online_risk", h.online_risk_body(), id=oid)
    h.assert_nack(r, "forbidden", id=oid)


def test_curve_other_configured_key(curve_broker, connect):
    a = _curve_agent(connect, curve_broker, "monitor-01")
    w = a.hello("school-0042")
    assert w.get("op") == "welcome" and w.get("agent") == "monitor-01" and w.get("role") == "monitor", w


HANDSHAKE_EVENTS = {zmq.EVENT_HANDSHAKE_SUCCEEDED: "succeeded",
                    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "failed (auth)",
                    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "failed (protocol)",
                    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "failed (no detail)"}


def _handshake(b, curve, timeout=h.REPLY_TIMEOUT):
    """Connect a DEALER to b (curve: (server public, public, secret) or None for no
    CURVE) with a socket monitor attached before connecting, say hello, and return
    (event, value, reply): the first handshake outcome the monitor reports (event
    None if none within timeout; value: the ZAP status code, or the protocol error)
    and the broker's answer to the hello (waited for up to timeout after a handshake
    that succeeded, half a second after any other)."""
    s = h.context().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    if curve:
        server_pub, pub, sec = (k.encode() if isinstance(k, str) else k for k in curve)
        s.curve_serverkey, s.curve_publickey, s.curve_secretkey = server_pub, pub, sec
    events = 0
    for e in HANDSHAKE_EVENTS:
        events |= e
    mon = s.get_monitor_socket(events)
    try:
        s.connect(b.endpoint)
        s.send(h.pack({"v": 1, "op": "hello", "id": uid("hello"), "agent": "school-0042",
                       "software": "x"}))
        event = value = None
        if mon.poll(int(timeout * 1000)):
            m = recv_monitor_message(mon)
            event, value = m["event"], m["value"]
        wait = timeout if event == zmq.EVENT_HANDSHAKE_SUCCEEDED else 0.5
        reply = h.unpack(s.recv()) if s.poll(int(wait * 1000)) else None
        return event, value, reply
    finally:
        s.disable_monitor()
        mon.close(0)
        s.close(0)


def _describe(event, value):
    return f"{HANDSHAKE_EVENTS.get(event, event)} ({value})" if event else "no handshake event"


def test_curve_unconfigured_key_is_refused(curve_broker, connect):
    """A key not under agents: the broker's ZAP handler refuses it (status 400),
    which the client sees as a failed handshake, and nothing is answered."""
    pub, sec = curve_broker.keys["school"]
    event, value, reply = _handshake(curve_broker, (curve_broker.keys["broker"][0], pub, sec))
    assert event == zmq.EVENT_HANDSHAKE_SUCCEEDED and reply and reply.get("op") == "welcome", \
        f"control: a configured key got {_describe(event, value)}, reply {reply!r}"
    pub, sec = curve_broker.keys["stranger"]
    event, value, reply = _handshake(curve_broker, (curve_broker.keys["broker"][0], pub, sec))
    assert event == zmq.EVENT_HANDSHAKE_FAILED_AUTH and value == 400, \
        f"a key not under agents: handshake {_describe(event, value)}, expected failed (auth) (400)"
    assert reply is None, f"a key not under agents got a reply: {reply!r}"
    # the broker is fine and still serves a configured key
    ok = _curve_agent(connect, curve_broker, "school")
    assert ok.hello("x").get("op") == "welcome"


def test_curve_plain_client_is_refused(curve_broker):
    """No CURVE at all: the handshake fails on the mechanism (NULL against CURVE).
    The client sees the mismatch in the broker's greeting, or (when the broker,
    seeing it first, has already closed) the connection closed mid-handshake."""
    event, value, reply = _handshake(curve_broker, None)
    assert (event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and
            value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) or \
        event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, \
        f"a plain-text client: handshake {_describe(event, value)}, expected failed (protocol) " \
        f"({zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH}: mechanism mismatch) or failed (no detail)"
    assert reply is None, f"a plain-text client got a reply from a CURVE broker: {reply!r}"


def test_curve_wrong_server_key_is_refused(curve_broker):
    """A configured client key, but the server key of another server: the broker
    cannot open the client's HELLO and drops the connection mid-handshake."""
    pub, sec = curve_broker.keys["school"]
    other_server = zmq.curve_keypair()[0]
    event, value, reply = _handshake(curve_broker, (other_server, pub, sec))
    assert event in (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL), \
        f"a client with another server's key: handshake {_describe(event, value)}, expected it to fail"
    assert reply is None, f"a client with another server's key got a reply: {reply!r}"


def test_curve_routing_id_takeover_gets_nothing(curve_broker, connect):
    """Issue 12, item 1: a second connection that names itself with the police desk's
    routing id, made with a school's key and sending no hello, must get nothing of the
    police desk (not its assignments, not the right to acknowledge as police), and the
    police desk's own connection goes on working."""
    rid = b"\x00desk-7"                                  # as guessable as libzmq's own ids
    police = _curve_agent_rid(connect, curve_broker, "police-desk", rid)
    w = police.hello("police-desk")
    assert w.get("op") == "welcome" and w.get("agent") == "police-desk", w
    mine = police.request({"v": 1, "op": "query", "id": uid("q"), "what": "assignments"})
    assert mine.get("op") == "result", mine              # the precondition: police may list

    thief = _curve_agent_rid(connect, curve_broker, "school", rid, timeout=2)
    q = uid("q")
    thief.send({"v": 1, "op": "query", "id": q, "what": "assignments"})
    ack = uid("a")
    thief.send({"v": 1, "op": "case_ack", "id": ack, "assignment": "as-000000000001", "by": "x"})
    got = [thief.recv_msg(timeout=2), thief.recv_msg(timeout=1)]
    for m in got:
        assert m is None or (m.get("op") == "nack" and m.get("code") == "hello_required"), \
            f"a connection with another agent's routing id was answered as that agent: {m}"
    assert not any(m and m.get("op") == "result" for m in got)

    # the police desk keeps its connection and its session
    again = police.request({"v": 1, "op": "query", "id": uid("q"), "what": "assignments"})
    assert again.get("op") == "result", again


def _curve_agent_rid(connect, b, who, rid, timeout=5):
    pub, sec = b.keys[who]
    return connect(b, curve=(b.keys["broker"][0], pub, sec), timeout=timeout, routing_id=rid)
