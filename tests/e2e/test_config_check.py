"""Configuration checking and process behaviour (CONFIG.md): --check-config,
the default config, refusing to start without a privacy decision, signals;
what `security: none` may listen on, and who may move the test clock
(--test-clock, broker.test_clock_agent: docs/config.md).
"""

import base64
import os
import random
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

import carehub_harness as h
from carehub_harness import assert_ack, uid
from routing_harness import CLOCK_AGENT, clock, make_clock_broker, routing_config  # noqa: F401 (fixture)

DIAG_RE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<msg>\S.*)$")


def _diags(stderr, path):
    """Diagnostic lines naming `path`: list of (line, col, message)."""
    out = []
    for ln in stderr.splitlines():
        m = DIAG_RE.match(ln.strip())
        if m and (m["file"] == str(path) or os.path.basename(m["file"]) == os.path.basename(str(path))):
            out.append((int(m["line"]), int(m["col"]), m["msg"]))
    return out


def _check(path):
    return h.run_bin(["--check-config", "-c", str(path)], timeout=30)


def test_check_config_valid(tmp_path, carehub_bin):
    b = h.Broker(tmp_path / "b", name="unstarted")
    b.write_config()
    r = _check(b.config_path)
    assert r.returncode == 0, f"valid config refused ({r.returncode}):\n{r.stderr}\n--- config ---\n" \
                              f"{b.config_path.read_text()}"


BAD_CONFIG = """\
broker:
  listen: ["tcp://127.0.0.1:*"]
  data_dir: data
  security: none
  heartbeat: fivesecs
  max_message_bytes: lots
  lisen: "tcp://127.0.0.1:5570"
privacy: off
agents:
  - id: school-0042
    role: wizard
  - id: police-desk
    role: agency
    agency: nowhere
agencies:
  - id: police
    name: Police
  - id: civil_affairs
    name: Civil affairs
"""
# where the errors above are: the line of the offending value; a reference to an
# unknown agency may also be reported at the line that opens the agent.
BAD_LINES = {"heartbeat": {5}, "max_message_bytes": {6}, "lisen": {7}, "role": {11},
             "agency": {12, 13, 14}}


def test_check_config_reports_every_error_with_its_line(tmp_path, carehub_bin):
    p = tmp_path / "bad.yaml"
    p.write_text(BAD_CONFIG)
    r = _check(p)
    assert r.returncode != 0, "a config with five errors passed --check-config"
    diags = _diags(r.stderr, p)
    assert diags, f"no FILE:LINE:COL: message lines on stderr:\n{r.stderr}"
    lines = {d[0] for d in diags}
    missing = {what: sorted(lns) for what, lns in BAD_LINES.items() if not (lns & lines)}
    assert not missing, f"errors not reported at their lines {missing}; stderr:\n{r.stderr}"
    assert len(diags) >= len(BAD_LINES)
    for line, col, msg in diags:
        assert col >= 1 and line >= 1
        assert len(msg.split()) >= 2, f"diagnostic is not a sentence: {msg!r}"
    unknown = [d for d in diags if d[0] == 7]
    assert any("lisen" in d[2] for d in unknown), f"unknown key message should name 'lisen': {unknown}"


def test_check_config_unknown_key(tmp_path, carehub_bin):
    b = h.Broker(tmp_path / "b", name="unstarted")
    text = h.to_yaml(b.config)
    lines = text.splitlines()
    # an unknown key inside an agent, and one at top level
    idx = next(i for i, ln in enumerate(lines) if ln.strip() == "role: reporter")
    lines.insert(idx + 1, "    rol: reporter")
    agent_line = idx + 2
    lines.append("agencys: []")
    top_line = len(lines)
    p = tmp_path / "unknown.yaml"
    p.write_text("\n".join(lines) + "\n")
    r = _check(p)
    assert r.returncode != 0, f"unknown keys passed --check-config:\n{p.read_text()}"
    diags = _diags(r.stderr, p)
    by_line = {d[0]: d[2] for d in diags}
    assert agent_line in by_line and "rol" in by_line[agent_line], \
        f"expected an error naming 'rol' at line {agent_line}:\n{r.stderr}"
    assert top_line in by_line and "agencys" in by_line[top_line], \
        f"expected an error naming 'agencys' at line {top_line}:\n{r.stderr}"


def test_check_config_missing_file(tmp_path, carehub_bin):
    r = _check(tmp_path / "nope.yaml")
    assert r.returncode != 0
    assert "nope.yaml" in r.stderr, r.stderr


def _make_file_for(key, value, dest_dir):
    """Create a stand-in for a file the default config names, by the key naming it."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    name = Path(value.strip("\"'")).name or key
    p = dest_dir / name
    if key == "key_file":
        p.write_bytes(os.urandom(32))
    elif key == "secret_key_file":
        sec, _ = h.keygen(Path(name).stem, dest_dir)
        p = dest_dir / f"{Path(name).stem}.key"
    elif key == "secret_file":
        p.write_text("whsec_" + base64.b64encode(os.urandom(24)).decode() + "\n")
    else:
        p.write_text("x\n")
    os.chmod(p, 0o600)
    return p


def test_default_config_passes_check(tmp_path, carehub_bin):
    src = h.REPO / "config" / "carehub.yaml"
    if not src.is_file():
        pytest.fail(f"{src} is missing: the project's default config must exist and pass --check-config",
                    pytrace=False)
    # A mirror of the repository: config/ copied, everything else linked, so that
    # relative paths in the config resolve as they would in the repo.
    mirror = tmp_path / "repo"
    mirror.mkdir()
    for entry in h.REPO.iterdir():
        if entry.name in ("config", "var", "build", "bin", ".git"):
            continue
        (mirror / entry.name).symlink_to(entry)
    shutil.copytree(h.REPO / "config", mirror / "config")
    cfg = mirror / "config" / "carehub.yaml"
    secrets = tmp_path / "secrets"
    out = []
    made = []
    for ln in cfg.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^(\s*(?:-\s+)?)(key_file|secret_key_file|secret_file|[a-z_]*_file)(\s*:\s*)(\S[^#]*?)(\s*(#.*)?)$", ln)
        if m:
            p = _make_file_for(m[2], m[4], secrets)
            made.append((m[2], p))
            ln = f"{m[1]}{m[2]}{m[3]}\"{p}\"{m[5]}"
        m = re.match(r"^(\s*)data_dir(\s*:\s*)(\S.*?)\s*$", ln)
        if m:
            ln = f"{m[1]}data_dir{m[2]}\"{tmp_path / 'data'}\""
        out.append(ln)
    cfg.write_text("\n".join(out) + "\n", encoding="utf-8")
    r = _check(cfg)
    assert r.returncode == 0, (f"config/carehub.yaml fails --check-config (files stood in: {made}):\n"
                               f"{r.stderr}")


def test_refuses_to_start_without_privacy(tmp_path, carehub_bin):
    cfg = h.deep_merge(h.base_config(tmp_path), {"privacy": h.DELETE})
    p = tmp_path / "noprivacy.yaml"
    p.write_text(h.to_yaml(cfg))
    ready = tmp_path / "ready"
    try:
        r = subprocess.run([carehub_bin, "-c", str(p), "--ready-file", str(ready)],
                           capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("carehubd started (ran 20 s) with a config that makes no privacy decision")
    assert r.returncode != 0, "carehubd exited 0 without a privacy decision"
    assert not ready.exists(), "carehubd wrote its ready file without a privacy decision"
    assert "privacy" in (r.stderr + r.stdout).lower(), f"the refusal does not mention privacy:\n{r.stderr}"
    # and --check-config agrees
    r2 = _check(p)
    assert r2.returncode != 0 and "privacy" in r2.stderr.lower(), r2.stderr


def test_privacy_false_means_off(make_broker, connect):
    b = make_broker(overrides={"privacy": False})
    a = connect(b, login="school-0042")
    mid = uid("ev")
    assert_ack(a.event("absence", h.absence_body(), id=mid), mid)


def test_privacy_key_file(tmp_path, make_broker, connect):
    key = tmp_path / "data.key"
    key.write_bytes(os.urandom(32))
    os.chmod(key, 0o600)
    b = make_broker(overrides={"privacy": {"key_file": str(key), "retention": "730d"}})
    a = connect(b, login="school-0042")
    mid = uid("ev")
    evc = assert_ack(a.event("absence", h.absence_body(), id=mid), mid)
    b.restart()
    a2 = connect(b, login="school-0042")
    assert assert_ack(a2.event("absence", h.absence_body(), id=mid), mid, duplicate=True)[0] == evc[0]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_exits_zero(make_broker, connect, sig):
    b = make_broker()
    a = connect(b, login="school-0042")
    mid = uid("ev")
    evc = assert_ack(a.event("absence", h.absence_body(), id=mid), mid)
    t = time.monotonic()
    rc = b.stop(sig)
    assert rc == 0, f"exit code {rc} on {sig.name}"
    assert time.monotonic() - t < 10, "shutdown took more than 10 s"
    b.start()
    a2 = connect(b, login="school-0042")
    assert assert_ack(a2.event("absence", h.absence_body(), id=mid), mid, duplicate=True) == evc


def test_listen_list_binds_every_endpoint(make_broker, connect):
    b = make_broker(overrides={"broker": {"listen": ["tcp://127.0.0.1:*", "tcp://127.0.0.2:*"]}})
    assert len(b.endpoints) == 2 and b.endpoints[0] != b.endpoints[1], b.endpoints
    for ep in b.endpoints:
        a = connect(ep, login="monitor-01")
        assert a.ping().get("op") == "pong"


def test_sigterm_is_prompt(make_broker):
    """A signal must stop the broker promptly, not after its poll timeout (one
    heartbeat). The race is widest while the broker handles many disconnects at
    once, so that is when the signal is sent; repeated to catch a missed wakeup."""
    b = make_broker(overrides={"broker": {"heartbeat": "20s"}}, start=False)
    rng = random.Random(7)
    for trial in range(30):
        b.start()
        agents = [h.Agent(b.endpoint) for _ in range(30)]
        for a in agents:
            a.login("school-0042")
        for a in agents:
            a.close()
        time.sleep(rng.uniform(0, 0.005))      # land inside the broker's handling of the disconnects
        t = time.monotonic()
        try:
            rc = b.stop(signal.SIGTERM, timeout=3)
        except h.BrokerError:
            pytest.fail(f"trial {trial + 1}: carehubd had not exited 3 s after SIGTERM (heartbeat 20s): "
                        f"the signal was missed until the poll timed out (a self-pipe or signalfd in the "
                        f"poll set avoids this)", pytrace=False)
        assert rc == 0, f"trial {trial + 1}: exit code {rc} on SIGTERM"
        assert time.monotonic() - t < 3


# ---------------------------------------------------------------------------------
# security: none listens on loopback (or ipc) only

def _start_refused(carehub_bin, cfg_path, tmp_path, *extra):
    """Start carehubd on cfg_path (plus extra arguments); it must exit 78 (a
    configuration error) without writing its ready file. Returns the CompletedProcess."""
    ready = tmp_path / "ready"
    try:
        r = subprocess.run([carehub_bin, "-c", str(cfg_path), "--ready-file", str(ready), *extra],
                           capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"carehubd {' '.join(extra)} started (ran 20 s) with {cfg_path}:\n"
                    f"{cfg_path.read_text()}", pytrace=False)
    assert r.returncode == 78, f"exit code {r.returncode}, expected 78 (configuration error):\n{r.stderr}"
    assert not ready.exists(), "carehubd wrote its ready file"
    return r


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:*", "tcp://*:*"])
def test_security_none_on_public_address_refused(tmp_path, carehub_bin, endpoint):
    """Finding 5 of issue 12: with security none anyone who reaches the port can say
    hello as a supervisor, so a public endpoint is an error naming the key and the fix."""
    cfg = h.deep_merge(h.base_config(tmp_path), {"broker": {"listen": [endpoint]}})
    p = tmp_path / "open.yaml"
    p.write_text(h.to_yaml(cfg))
    r = _check(p)
    assert r.returncode == 78, f"security: none on {endpoint} passed --check-config ({r.returncode}):\n" \
                               f"{p.read_text()}\n{r.stderr}"
    line = next(i for i, ln in enumerate(p.read_text().splitlines(), 1) if endpoint in ln)
    diags = [d for d in _diags(r.stderr, p) if d[0] == line]
    assert len(diags) == 1, f"expected one error at line {line} (the endpoint):\n{r.stderr}"
    msg = diags[0][2]
    for part in ("broker.listen", f'"{endpoint}"', "broker.security is none", "tcp://127.0.0.1",
                 "security: curve", "carehubd keygen"):
        assert part in msg, f"the error does not name {part!r}: {msg}"
    r2 = _start_refused(carehub_bin, p, tmp_path)
    assert "broker.listen" in r2.stderr and endpoint in r2.stderr, r2.stderr
    # the same file on loopback passes
    cfg["broker"]["listen"] = ["tcp://127.0.0.1:*", "tcp://[::1]:*", f"ipc://{tmp_path}/b.sock"]
    p.write_text(h.to_yaml(cfg))
    r3 = _check(p)
    assert r3.returncode == 0, f"security: none on loopback and ipc refused:\n{r3.stderr}"


# ---------------------------------------------------------------------------------
# the test clock: one configured agent, never with curve

def _curve_config(tmp_path):
    kd = tmp_path / "keys"
    kd.mkdir(exist_ok=True)
    h.keygen("broker", kd)
    agents = []
    for a in h.AGENTS:
        _, pub = h.keygen(a["id"], kd)
        agents.append(dict(a, public_key=pub))
    return h.deep_merge(h.base_config(tmp_path), {
        "broker": {"security": "curve", "secret_key_file": str(kd / "broker.key")},
        "agents": agents})


def test_test_clock_refused_with_curve(tmp_path, carehub_bin):
    """Finding 8 of issue 12: --test-clock together with CURVE does not start."""
    cfg = _curve_config(tmp_path)
    p = tmp_path / "curve.yaml"
    p.write_text(h.to_yaml(cfg))
    assert _check(p).returncode == 0, "the curve config itself must be valid"
    r = _start_refused(carehub_bin, p, tmp_path, "--test-clock")
    assert "--test-clock" in r.stderr and "curve" in r.stderr, r.stderr
    r2 = h.run_bin(["--check-config", "--test-clock", "-c", str(p)], timeout=30)
    assert r2.returncode == 78 and "--test-clock" in r2.stderr and "curve" in r2.stderr, r2.stderr
    # and the test clock's key is refused in a curve config, at its line
    cfg["broker"]["test_clock_agent"] = CLOCK_AGENT
    p.write_text(h.to_yaml(cfg))
    r3 = _check(p)
    assert r3.returncode == 78, f"broker.test_clock_agent with curve passed --check-config:\n{r3.stderr}"
    line = next(i for i, ln in enumerate(p.read_text().splitlines(), 1) if "test_clock_agent" in ln)
    assert any(d[0] == line and "broker.test_clock_agent" in d[2] and "curve" in d[2]
               for d in _diags(r3.stderr, p)), r3.stderr


def test_test_clock_needs_its_agent(tmp_path, carehub_bin):
    """--test-clock names no agent by itself: the config must (broker.test_clock_agent),
    and it must be a configured one."""
    cfg = h.base_config(tmp_path)
    p = tmp_path / "clock.yaml"
    p.write_text(h.to_yaml(cfg))
    r = _start_refused(carehub_bin, p, tmp_path, "--test-clock")
    assert "--test-clock needs broker.test_clock_agent" in r.stderr, r.stderr
    cfg["broker"]["test_clock_agent"] = "supervisor-99"
    p.write_text(h.to_yaml(cfg))
    r2 = _check(p)
    assert r2.returncode == 78 and "broker.test_clock_agent \"supervisor-99\" is not a configured agent" \
        in r2.stderr, r2.stderr


def test_test_clock_only_for_its_agent(make_clock_broker, tmp_path, connect):
    """Finding 8 of issue 12: only broker.test_clock_agent moves the clock; any other
    agent, of any role and another supervisor too, is forbidden and the clock stays."""
    cfg = routing_config(tmp_path / "b", agents=[{"id": "supervisor-02", "role": "supervisor"}])
    b = make_clock_broker(config=cfg, name="b")
    assert b.config["broker"]["test_clock_agent"] == CLOCK_AGENT
    clk = connect(b, login=CLOCK_AGENT)
    t0 = clock(clk)
    for who in ("school-0042", "reporter-01", "monitor-01", "police-desk", "supervisor-02"):
        a = connect(b, login=who)
        mid = uid("clk")
        r = a.request({"v": 1, "op": "test_clock", "id": mid, "advance": 86_400_000})
        h.assert_nack(r, "forbidden", id=mid)
        assert "broker.test_clock_agent" in r["error"], r
    assert clock(clk) == t0, "a forbidden test_clock moved the clock"
    assert clock(clk, advance=1000) == t0 + 1000
