"""Files that hold secrets or children's data (docs/config.md "Key and secret files",
docs/agents.md "Files").

  * key and secret files — privacy.key_file, broker.secret_key_file, a channel's
    secret_file, an agent's --key-file — are refused when group or others may access
    them (the message names the file, its mode and the `chmod 600` that fixes it), and
    when named through a symbolic link; `carehubd --check-config` says so too, and
    `carehubd keygen` writes a secret key that the broker then takes, whatever the umask;
  * an agent's spool directory is refused when it is a symbolic link, another user's,
    or writable by others;
  * what the agent programs write — the spool, rejected.jsonl, a report page — is the
    user's only (0600, umask 077) even when they are started with umask 000, and the
    rejected file is not written through a symbolic link.
"""

import base64
import json
import os
import re
import stat
import subprocess

import pytest
import zmq

import carehub_harness as h
from agent_harness import (EX_DATAERR, EX_IOERR, EX_NOINPUT, agent_bin, check_sanitizer,
                           run_agent)

EX_CONFIG = 78
SCHOOL = "school-0042"


def mode_of(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def write_secret(path, data, mode=0o600):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, mode)
    return path


def check(cfg_path):
    return h.run_bin(["--check-config", "-c", str(cfg_path)], timeout=30)


def run_broker_briefly(carehub_bin, cfg_path, ready):
    """Run carehubd on cfg_path; a refused config exits at once (a started one is a failure)."""
    try:
        return subprocess.run([carehub_bin, "-c", str(cfg_path), "--ready-file", str(ready)],
                              capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"carehubd started (ran 20 s) with {cfg_path}, which it must refuse")


def with_umask_000():
    os.umask(0)


def run_with_umask_000(name, args, cwd=None):
    """Run an agent program started with umask 000 (as a careless service manager would)."""
    e = dict(os.environ)
    e.pop("CAREHUB_SPOOL", None)
    r = subprocess.run([agent_bin(name)] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=120, env=e, cwd=cwd, preexec_fn=with_umask_000)
    check_sanitizer(name, r.stderr)
    return r


# ---- the broker's key and secret files ---------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604], ids=lambda m: f"{m:04o}")
def test_data_key_others_may_read_refused(tmp_path, carehub_bin, mode):
    key = write_secret(tmp_path / "data.key", os.urandom(32), mode)
    b = h.Broker(tmp_path / "b", overrides={"privacy": {"key_file": str(key)}}, name="unstarted")
    b.write_config()
    # (the message quotes the value shortened; the chmod has the whole path)
    want = re.compile(rf"privacy\.key_file \"[^\"]+\" has mode {mode:04o}: group or others may read "
                      rf"it, and it holds a secret; make it the owner's only: chmod 600 {re.escape(str(key))}$",
                      re.M)
    r = check(b.config_path)
    assert r.returncode == EX_CONFIG, f"--check-config took a data key of mode {mode:04o}:\n{r.stderr}"
    assert want.search(r.stderr), r.stderr
    r = run_broker_briefly(carehub_bin, b.config_path, b.ready_path)
    assert r.returncode == EX_CONFIG and not b.ready_path.exists(), r.stderr
    assert want.search(r.stderr), r.stderr
    # the fix the message gives is enough
    os.chmod(key, 0o600)
    r = check(b.config_path)
    assert r.returncode == 0, r.stderr


def test_data_key_through_a_link_refused(tmp_path, carehub_bin):
    real = write_secret(tmp_path / "real.key", os.urandom(32))
    link = tmp_path / "data.key"
    link.symlink_to(real)
    b = h.Broker(tmp_path / "b", overrides={"privacy": {"key_file": str(link)}}, name="unstarted")
    b.write_config()
    r = check(b.config_path)
    assert r.returncode == EX_CONFIG, f"--check-config took a data key named through a link:\n{r.stderr}"
    assert re.search(r"privacy\.key_file \"[^\"]+\" is a symbolic link", r.stderr), r.stderr
    r = run_broker_briefly(carehub_bin, b.config_path, b.ready_path)
    assert r.returncode == EX_CONFIG and "is a symbolic link" in r.stderr, r.stderr


def test_keygen_then_run_and_loose_secret_key_refused(tmp_path, make_broker, connect):
    """keygen writes the secret key 0600 even under umask 000, so keygen → run works; the
    same key made readable to others is refused."""
    kd = tmp_path / "keys"
    kd.mkdir(mode=0o700)
    r = h.run_bin(["keygen", "broker", "--dir", str(kd)], preexec_fn=with_umask_000)
    assert r.returncode == 0, r.stderr
    assert mode_of(kd / "broker.key") == 0o600, oct(mode_of(kd / "broker.key"))
    b_pub = (kd / "broker.pub").read_text().split()[0]
    s_pub, s_sec = (k.decode() for k in zmq.curve_keypair())
    agents = [dict(a, public_key=s_pub if a["id"] == SCHOOL else zmq.curve_keypair()[0].decode())
              for a in h.AGENTS]
    b = make_broker(overrides={
        "broker": {"security": "curve", "secret_key_file": str(kd / "broker.key")},
        "agents": agents,
    })
    a = connect(b, login=SCHOOL, curve=(b_pub, s_pub, s_sec))
    eid = h.uid("ev")
    h.assert_ack(a.event("absence", h.absence_body(), id=eid), eid)
    assert b.stop() == 0, b.log_tail()

    os.chmod(kd / "broker.key", 0o640)
    r = check(b.config_path)
    assert r.returncode == EX_CONFIG, f"--check-config took a secret key of mode 0640:\n{r.stderr}"
    assert re.search(rf"broker\.secret_key_file \"[^\"]+\" has mode 0640: .*: chmod 600 "
                     rf"{re.escape(str(kd / 'broker.key'))}$", r.stderr, re.M), r.stderr
    with pytest.raises(h.BrokerError):
        b.start()
    assert b.returncode == EX_CONFIG and "chmod 600" in b.log_tail(), b.log_tail()
    b.expect_clean_exit = False


def test_channel_secret_file_others_may_read_refused(tmp_path, carehub_bin):
    secret = write_secret(tmp_path / "hook.secret",
                          b"whsec_" + base64.b64encode(os.urandom(24)) + b"\n", 0o644)
    b = h.Broker(tmp_path / "b", name="unstarted", overrides={
        "broker": {"webhook_allow": ["127.0.0.0/8"]},
        "channels": [{"id": "hook", "url": "http://127.0.0.1:9/x", "secret_file": str(secret)}],
    })
    b.write_config()
    r = check(b.config_path)
    assert r.returncode == EX_CONFIG, f"--check-config took a secret_file of mode 0644:\n{r.stderr}"
    assert re.search(rf"channel hook\.secret_file \"[^\"]+\" has mode 0644: .*: chmod 600 "
                     rf"{re.escape(str(secret))}$", r.stderr, re.M), r.stderr
    os.chmod(secret, 0o600)
    r = check(b.config_path)
    assert r.returncode == 0, r.stderr


# ---- the agents' key files --------------------------------------------------------


def agent_key(tmp_path, mode):
    _, sec = zmq.curve_keypair()
    return write_secret(tmp_path / "agent.key", sec + b"\n", mode)


def test_agent_key_file_others_may_read_refused(tmp_path):
    key = agent_key(tmp_path, 0o644)
    srv = zmq.curve_keypair()[0].decode()
    f = tmp_path / "x.jsonl"
    f.write_text(json.dumps(h.absence_body()) + "\n")
    want = f"has mode 0644: group or others may read it, and it holds a secret; make it the owner's only: chmod 600 {key}"
    # carehub-send and carehub-monitor (agents/lib/feed.c)
    r = run_agent("carehub-send", ["-a", SCHOOL, "-b", "tcp://127.0.0.1:9", "--spool", tmp_path / "s1",
                                   "--wait", "1", "--key-file", key, "--server-key", srv, "absence", f])
    assert r.returncode == EX_NOINPUT, (r.returncode, r.stderr)
    assert f"the agent's secret key file {key} {want}" in r.stderr, r.stderr
    # the other programs (agents/lib/cli.c)
    r = run_agent("carehub", ["-a", "supervisor-01", "-b", "tcp://127.0.0.1:9", "--spool", tmp_path / "s2",
                              "--wait", "1", "--key-file", key, "--server-key", srv, "report"])
    assert r.returncode == EX_NOINPUT, (r.returncode, r.stderr)
    assert f"--key-file {key} {want}" in r.stderr, r.stderr


def test_agent_key_file_through_a_link_refused(tmp_path):
    key = agent_key(tmp_path, 0o600)
    link = tmp_path / "link.key"
    link.symlink_to(key)
    srv = zmq.curve_keypair()[0].decode()
    r = run_agent("carehub-send", ["-a", SCHOOL, "-b", "tcp://127.0.0.1:9", "--spool", tmp_path / "s1",
                                   "--wait", "1", "--key-file", link, "--server-key", srv, "absence",
                                   "/dev/null"])
    assert r.returncode == EX_NOINPUT and "a symbolic link" in r.stderr, (r.returncode, r.stderr)
    r = run_agent("carehub", ["-a", "supervisor-01", "-b", "tcp://127.0.0.1:9", "--spool", tmp_path / "s2",
                              "--wait", "1", "--key-file", link, "--server-key", srv, "report"])
    assert r.returncode == EX_NOINPUT and "a symbolic link" in r.stderr, (r.returncode, r.stderr)


# ---- the spool directory ------------------------------------------------------------


def send(broker, spool, *args, **kw):
    return run_agent("carehub-send", ["-a", SCHOOL, "-b", broker.endpoint, "--spool", spool,
                                      "--wait", "20", *args], **kw)


def test_spool_of_another_user_refused(broker, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to give the spool directory to another user")
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    os.chown(spool, 65534, 65534)
    f = tmp_path / "x.jsonl"
    f.write_text(json.dumps(h.absence_body()) + "\n")
    r = send(broker, spool, "absence", f)
    assert r.returncode == EX_IOERR, (r.returncode, r.stderr)
    assert f"the spool directory {spool} belongs to uid 65534, not to this process (uid 0)" in r.stderr, r.stderr
    assert not (spool / "data.mdb").exists()


def test_spool_that_is_a_link_or_writable_by_others_refused(broker, tmp_path):
    real = tmp_path / "real-spool"
    real.mkdir(mode=0o700)
    link = tmp_path / "spool"
    link.symlink_to(real)
    r = send(broker, link, "absence", "/dev/null")
    assert r.returncode == EX_IOERR and f"the spool {link} is a symbolic link" in r.stderr, (r.returncode, r.stderr)
    assert not (real / "data.mdb").exists()
    os.chmod(real, 0o777)
    r = send(broker, real, "absence", "/dev/null")
    assert r.returncode == EX_IOERR, (r.returncode, r.stderr)
    assert f"the spool directory {real} has mode 0777" in r.stderr and f"chmod 700 {real}" in r.stderr, r.stderr


# ---- what the agent programs write ----------------------------------------------------


def test_rejected_and_spool_private_under_umask_000(broker, tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text(json.dumps(h.absence_body()) + "\n" + "not json, and a child's name: 张伟\n")
    spool = tmp_path / "a" / "spool"
    r = run_with_umask_000("carehub-send", ["-a", SCHOOL, "-b", broker.endpoint, "--spool", spool,
                                            "--wait", "20", "absence", f])
    assert r.returncode == EX_DATAERR, (r.returncode, r.stderr)
    rejected = spool / "rejected.jsonl"
    assert "张伟" in rejected.read_text(encoding="utf-8")
    modes = {p.name: mode_of(p) for p in (rejected, spool / "data.mdb", spool / "lock.mdb", spool / "lock")}
    modes.update({"spool": mode_of(spool), "a": mode_of(tmp_path / "a")})
    want = {"rejected.jsonl": 0o600, "data.mdb": 0o600, "lock.mdb": 0o600, "lock": 0o600,
            "spool": 0o700, "a": 0o700}
    assert modes == want, {k: oct(v) for k, v in modes.items()}


def test_rejected_file_not_written_through_a_link(broker, tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text("not json\n")
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("")
    link = tmp_path / "rejected.jsonl"
    link.symlink_to(elsewhere)
    r = send(broker, tmp_path / "spool", "--rejected", link, "absence", f)
    assert r.returncode == EX_IOERR, (r.returncode, r.stderr)
    assert f"cannot open the rejected file {link}: it is a symbolic link" in r.stderr, r.stderr
    assert elsewhere.read_text() == "", "the refused line was written through the link"


def test_report_page_private_under_umask_000(broker, tmp_path):
    """The other programs (agents/lib/cli.c) set umask 077 too: a page they write is 0600."""
    page = tmp_path / "report.html"
    r = run_with_umask_000("carehub", ["-a", "supervisor-01", "-b", broker.endpoint, "--spool",
                                       tmp_path / "spool", "--wait", "20", "report", "--html", page])
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert mode_of(page) == 0o600, oct(mode_of(page))
