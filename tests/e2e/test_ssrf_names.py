"""The SSRF guard with host NAMES in channel URLs (issue 12; docs/webhooks.md, "Where
carehubd will connect"; CONFIG.md: "A webhook host name must resolve only to addresses
inside webhook_allow, checked when the config is loaded and again at every connection").

  a name inside webhook_allow      accepted by --check-config, and delivers
  a name resolving outside         refused at load (--check-config, and carehubd does not
                                   start), naming the file:line, the host, the address
  a name that does not resolve     refused at load with a sentence, never a crash
  a name that resolves elsewhere   (DNS rebinding) refused at the connection: a failed
  or nowhere by delivery time      attempt with its reason, retried until max_age, then
                                   the fallback channel is told; nothing reaches the address

No test leaves the machine: names resolve from /etc/hosts (localhost), or, for the tests
that change what a name resolves to while the broker runs, the broker runs in a mount
namespace of its own (unshare) where /etc/hosts is a file the test rewrites and
/etc/resolv.conf points at 127.0.0.1, so a name missing from it is looked up nowhere else.
"""

import os
import shutil
import subprocess
import time

import pytest

import carehub_harness as h
from carehub_harness import uid
from routing_harness import (  # noqa: F401  (fixtures)
    CLOCK_AGENT, check_webhook, clock, critical_report, make_clock_broker, new_secret, receiver,
    routing_config, send_event, webhook_channel)

PROMPT = 3.0


def check_config(tmp_path, url, allow, kind="webhook", name="names.yaml", run=h.run_bin):
    """--check-config on a config with one channel at `url`; (result, path, url line)."""
    cfg = h.base_config(tmp_path)
    cfg["broker"]["webhook_allow"] = list(allow)
    ch = {"id": "ext-hook", "kind": kind, "url": url, "secret": new_secret()}
    if kind == "sms":
        ch["to"] = ["+8613800000000"]
    cfg["channels"] = [ch]
    path = tmp_path / name
    path.write_text(h.to_yaml(cfg), encoding="utf-8")
    line = next(i + 1 for i, ln in enumerate(path.read_text().splitlines()) if "url:" in ln)
    return run(["--check-config", "-c", str(path)]), path, line


def assert_no_crash(r, what):
    out = r.stdout + r.stderr
    assert r.returncode > 0, f"{what}: exit code {r.returncode} (a signal or a silent pass):\n{out}"
    for m in h.SANITIZER_MARKERS:
        assert m not in out, f"{what}: sanitizer report:\n{out}"


# ---------------------------------------------------------------- a private /etc/hosts

class Names:
    """Run carehubd in a mount namespace whose /etc/hosts is `self.hosts` (rewritten by
    the test, same inode, so the running broker sees each change at its next lookup) and
    whose resolver is 127.0.0.1 (nothing listens there: a name not in the file fails at
    once, and no query leaves the machine)."""

    def __init__(self, tmp_path):
        if not shutil.which("unshare"):
            pytest.skip("unshare (util-linux) is not installed: cannot give the broker its own /etc/hosts")
        d = tmp_path / "ns"
        d.mkdir()
        self.hosts = d / "hosts"
        self.resolv = d / "resolv.conf"
        self.resolv.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        self.set({})
        self.wrapper = d / "carehubd-ns"
        self.wrapper.write_text(
            "#!/bin/sh\n"
            "exec unshare --mount --propagation private sh -c "
            "'mount --bind \"$0\" /etc/hosts && mount --bind \"$1\" /etc/resolv.conf && shift && "
            f"exec \"$@\"' {self.hosts} {self.resolv} {h.broker_bin()} \"$@\"\n")
        self.wrapper.chmod(0o755)
        r = subprocess.run([str(self.wrapper), "--version"], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            pytest.skip(f"cannot give the broker a mount namespace of its own here: {r.stderr.strip()}")

    def set(self, names):
        """names: {host name: address}; localhost stays."""
        lines = ["127.0.0.1 localhost"] + [f"{addr} {name}" for name, addr in names.items()]
        with open(self.hosts, "w") as f:        # truncates the same inode: the bind mount follows
            f.write("\n".join(lines) + "\n")

    def run_bin(self, args, timeout=30):
        return subprocess.run([str(self.wrapper)] + list(args), capture_output=True, text=True,
                              timeout=timeout)


@pytest.fixture
def names(tmp_path, monkeypatch):
    n = Names(tmp_path)
    monkeypatch.setattr(h, "broker_bin", lambda: str(n.wrapper))   # brokers started by the test
    return n


# ---------------------------------------------------------------- at load

@pytest.mark.parametrize("kind", ["webhook", "sms"])
def test_name_resolving_inside_allow_accepted(tmp_path, carehub_bin, kind):
    r, _, _ = check_config(tmp_path, "http://localhost:9/x", ["127.0.0.0/8"], kind=kind)
    assert r.returncode == 0, f"localhost is 127.0.0.1, inside 127.0.0.0/8:\n{r.stdout}{r.stderr}"


@pytest.mark.parametrize("kind", ["webhook", "sms"])
@pytest.mark.parametrize("allow", [["127.0.0.2/32"], ["10.0.0.0/8", "::1/128"]])
def test_name_resolving_outside_allow_refused_at_load(tmp_path, carehub_bin, kind, allow):
    """localhost resolves to 127.0.0.1 (/etc/hosts), outside these networks."""
    r, path, line = check_config(tmp_path, "http://localhost:9/x", allow, kind=kind)
    out = r.stdout + r.stderr
    assert_no_crash(r, "--check-config")
    assert f"{path}:{line}:" in out, f"the refusal does not name {path}:{line}:\n{out}"
    assert "localhost" in out and "127.0.0.1" in out and "webhook_allow" in out, \
        f"the refusal should name the host, the address it resolves to and webhook_allow:\n{out}"
    # and carehubd itself does not start with it
    ready = tmp_path / "ready"
    try:
        p = subprocess.run([carehub_bin, "-c", str(path), "--ready-file", str(ready)],
                           capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("carehubd started (ran 20 s) with a channel host resolving outside webhook_allow")
    assert_no_crash(p, "carehubd")
    assert not ready.exists(), "carehubd became ready with a host resolving outside webhook_allow"
    assert "webhook_allow" in p.stdout + p.stderr, p.stderr


def test_name_not_resolving_refused_at_load(tmp_path, carehub_bin, names):
    r, path, line = check_config(tmp_path, "http://no-such-host.invalid:9/x", ["127.0.0.0/8"],
                                 run=names.run_bin)
    out = r.stdout + r.stderr
    assert_no_crash(r, "--check-config")
    assert f"{path}:{line}:" in out and "no-such-host.invalid" in out and "resolve" in out, \
        f"the refusal should name the line, the host and say it does not resolve:\n{out}"


# ---------------------------------------------------------------- at delivery

def delivery_setup(make_clock_broker, tmp_path, receiver, connect, names, host, allow):
    """police's channel `hook` at http://HOST:PORT/hook (max_age 30s, fallback `ops` at
    127.0.0.1); `host` resolves to 127.0.0.1 when the broker loads its config."""
    names.set({host: "127.0.0.1"})
    wf = [{"name": "danger", "match": {"type": "mandatory_report"},
           "assign": [{"agency": "police", "ack_within": "1d"}]}]
    ops_secret = new_secret()
    hook = webhook_channel("hook", f"http://{host}:{receiver.port}/hook", new_secret(),
                           fallback="ops", max_age="30s")
    ops = webhook_channel("ops", receiver.url("/ops"), ops_secret)
    cfg = routing_config(tmp_path / "b", workflows=wf, channels=[hook, ops],
                         agencies=[{"id": "police", "channels": ["hook"]}],
                         broker={"webhook_allow": list(allow)})
    b = make_clock_broker(config=cfg, name="b")
    return b, connect(b, login=CLOCK_AGENT), connect(b, login="reporter-01"), ops_secret


def fail_for_good(b, clk, receiver, ops_secret, case):
    """Move past max_age and return the webhook.failed data the fallback got for `case`."""
    for step in (2000, 4000, 8000, 16_000, 60_000):
        clock(clk, advance=step)
        time.sleep(0.1)
    got = receiver.wait("/ops", 1, timeout=PROMPT)
    assert len(got) == 1, got
    d = check_webhook(got[0], ops_secret, type="webhook.failed")["data"]
    assert d.get("case") == case, d
    return d


def test_name_inside_allow_delivers(make_clock_broker, tmp_path, receiver, connect, names):
    b, clk, rep, _ = delivery_setup(make_clock_broker, tmp_path, receiver, connect, names,
                                    "hook.carehub.test", ["127.0.0.1/32"])
    _, _, case = send_event(rep, "mandatory_report", critical_report(uid("child")))
    got = receiver.wait("/hook", 1, timeout=PROMPT)
    assert got[0].json["type"] == "case.assigned" and got[0].json["data"]["case"] == case
    assert got[0].headers.get("host", "").startswith("hook.carehub.test"), got[0].headers
    assert "not in broker.webhook_allow" not in b.log(), b.log_tail()


def test_localhost_url_delivers(make_clock_broker, tmp_path, receiver, connect):
    """The same with the real /etc/hosts: http://localhost:PORT/ with 127.0.0.0/8 allowed."""
    wf = [{"name": "danger", "match": {"type": "mandatory_report"},
           "assign": [{"agency": "police", "ack_within": "1d"}]}]
    secret = new_secret()
    cfg = routing_config(tmp_path / "b", workflows=wf, agencies=[{"id": "police", "channels": ["lh"]}],
                         channels=[webhook_channel("lh", f"http://localhost:{receiver.port}/lh", secret)])
    b = make_clock_broker(config=cfg, name="b")
    _, _, case = send_event(connect(b, login="reporter-01"), "mandatory_report",
                            critical_report(uid("child")))
    got = receiver.wait("/lh", 1, timeout=PROMPT)
    body = check_webhook(got[0], secret, type="case.assigned")
    assert body["data"]["case"] == case


def test_name_rebound_outside_allow_refused_at_connection(make_clock_broker, tmp_path, receiver,
                                                          connect, names):
    """DNS rebinding: the name was 127.0.0.1 (allowed: 127.0.0.1/32) when the config was
    loaded and is 127.0.0.2 by the time a notice goes out. Every attempt is refused at the
    connection (logged with the channel and the address); after max_age the fallback is told
    `address 127.0.0.2 not in webhook_allow`; the broker keeps working."""
    host = "rebind.carehub.test"
    b, clk, rep, ops_secret = delivery_setup(make_clock_broker, tmp_path, receiver, connect, names,
                                             host, ["127.0.0.1/32"])
    names.set({host: "127.0.0.2"})
    _, _, case = send_event(rep, "mandatory_report", critical_report(uid("child")))
    deadline = time.monotonic() + PROMPT
    while "refused connection to 127.0.0.2" not in b.log():
        assert time.monotonic() < deadline, f"no refused connection logged:\n{b.log_tail()}"
        time.sleep(0.05)
    assert "channel hook" in b.log(), b.log_tail()
    d = fail_for_good(b, clk, receiver, ops_secret, case)
    assert d.get("error") == "address 127.0.0.2 not in webhook_allow", \
        f"webhook.failed should give the guard's reason: {d!r}"
    assert not receiver.at("/hook"), "nothing reaches the receiver through a refused address"
    assert b.running()
    assert connect(b, login="reporter-01").ping().get("op") == "pong"


def test_name_gone_at_delivery_fails_cleanly(make_clock_broker, tmp_path, receiver, connect, names):
    """The name resolved when the config was loaded and resolves nowhere by delivery time:
    each attempt fails with curl's reason (cannot resolve), the notice is retried until
    max_age, the fallback is told, and the broker neither crashes nor stalls."""
    host = "gone.invalid"
    b, clk, rep, ops_secret = delivery_setup(make_clock_broker, tmp_path, receiver, connect, names,
                                             host, ["127.0.0.0/8"])
    names.set({})
    _, _, case = send_event(rep, "mandatory_report", critical_report(uid("child")))
    d = fail_for_good(b, clk, receiver, ops_secret, case)
    assert "resolve" in d.get("error", "").lower() and host in d.get("error", ""), \
        f"webhook.failed should say the host did not resolve: {d!r}"
    assert not receiver.at("/hook")
    assert b.running()
    _, _, case2 = send_event(rep, "mandatory_report", critical_report(uid("child")))
    assert case2 != case
