"""carehubd under systemd, without systemd (issue 16 item 3; broker/service.c, broker/log.c).

sd_notify: the test plays systemd's part. It binds a unix datagram socket, names it in
NOTIFY_SOCKET (and WATCHDOG_USEC for the watchdog) and reads what carehubd sends:
READY=1 once the sockets are bound (the ready file is there and the broker answers),
WATCHDOG=1 at about half the interval while it runs, STOPPING=1 on SIGTERM, then a
clean exit. Without WATCHDOG_USEC no WATCHDOG=1 is sent.

The journal: with JOURNAL_STREAM naming stderr's device and inode, every record is
"<N>text" (a syslog level, no time); with a JOURNAL_STREAM that names another file
(a wrapper redirected stderr) records keep their time stamps.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))
import carehub_harness as h  # noqa: E402


@pytest.fixture
def notify_socket():
    d = tempfile.mkdtemp(prefix="chn-")  # short: a unix socket path is at most 107 bytes
    path = os.path.join(d, "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    yield s, path
    s.close()
    os.unlink(path)
    os.rmdir(d)


def read_notices(sock, until, timeout):
    """Datagrams (each a list of lines) until one holds the line `until`; fails on timeout."""
    got = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"no {until} within {timeout}s; got {got!r}")
        sock.settimeout(left)
        try:
            data = sock.recv(4096)
        except socket.timeout:
            continue
        lines = data.decode().split("\n")
        got.append(lines)
        if until in lines:
            return got


def test_ready_watchdog_stopping(tmp_path, notify_socket):
    sock, path = notify_socket
    b = h.Broker(tmp_path / "b")
    b.env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"}  # fed every 200 ms
    b.start()
    first = read_notices(sock, "READY=1", h.READY_TIMEOUT)
    # READY=1 comes once the sockets are bound: the ready file names them, and the
    # broker answers on them.
    assert b.endpoints, "READY=1 before the ready file"
    ready = [m for m in first if "READY=1" in m][0]
    assert any(ln.startswith("STATUS=listening on tcp://127.0.0.1:") for ln in ready), ready
    a = h.Agent(b.endpoint)
    try:
        assert a.ping()["op"] in ("pong", "nack")  # an answer: hello_required before hello
    finally:
        a.close()
    # The watchdog, fed from the event loop at half of WATCHDOG_USEC: over 1.2 s of an
    # idle broker about six, never one per turn of a busy loop (no flood).
    sock.settimeout(0.1)
    t0 = time.monotonic()
    stamps = []
    while time.monotonic() - t0 < 1.2:
        try:
            if "WATCHDOG=1" in sock.recv(4096).decode().split("\n"):
                stamps.append(time.monotonic())
        except socket.timeout:
            pass
    assert 3 <= len(stamps) <= 9, f"{len(stamps)} WATCHDOG=1 in 1.2 s at a 200 ms period"
    gaps = [y - x for x, y in zip(stamps, stamps[1:])]
    assert min(gaps) > 0.12, f"WATCHDOG=1 faster than half the interval: {gaps}"
    b.send_signal(signal.SIGTERM)
    read_notices(sock, "STOPPING=1", h.STOP_TIMEOUT)
    assert b.stop() == 0
    log = b.log()
    assert "service: watchdog every 200 ms (WATCHDOG_USEC=400000)" in log, log
    assert "sd_notify" not in log, log


def test_no_watchdog_without_watchdog_usec(tmp_path, notify_socket):
    sock, path = notify_socket
    os.environ.pop("WATCHDOG_USEC", None)  # the broker's environment is this one and NOTIFY_SOCKET
    b = h.Broker(tmp_path / "b")
    b.env = {"NOTIFY_SOCKET": path}
    b.start()
    got = read_notices(sock, "READY=1", h.READY_TIMEOUT)
    time.sleep(0.5)
    b.send_signal(signal.SIGTERM)
    got += read_notices(sock, "STOPPING=1", h.STOP_TIMEOUT)
    assert b.stop() == 0
    assert not any("WATCHDOG=1" in m for m in got), got
    assert "service: watchdog" not in b.log()


def run_with_stderr(tmp_path, journal_stream):
    """Start carehubd with stderr to a file, JOURNAL_STREAM from journal_stream(stat of
    that file), stop it with SIGTERM; returns its stderr's lines."""
    cfg = tmp_path / "carehub.yaml"
    cfg.write_text(h.to_yaml(h.base_config(tmp_path)), encoding="utf-8")
    errpath = tmp_path / "stderr.log"
    ready = tmp_path / "ready"
    with open(errpath, "wb") as err:
        st = os.fstat(err.fileno())
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        env["JOURNAL_STREAM"] = journal_stream(st)
        p = subprocess.Popen([h.broker_bin(), "-c", str(cfg), "--ready-file", str(ready)],
                             stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env)
    try:
        deadline = time.monotonic() + h.READY_TIMEOUT
        while not ready.exists():
            assert p.poll() is None, errpath.read_text()
            assert time.monotonic() < deadline, "no ready file"
            time.sleep(0.02)
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=h.STOP_TIMEOUT) == 0, errpath.read_text()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return errpath.read_text().splitlines()


def test_journal_format(tmp_path):
    lines = run_with_stderr(tmp_path, lambda st: f"{st.st_dev}:{st.st_ino}")
    assert lines
    for ln in lines:
        assert re.match(r"^<[3467]>\S", ln), f"not a journal record: {ln!r}"
        assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d", ln), f"a time stamp in {ln!r}"
    assert any(ln.startswith("<6>broker: ready") for ln in lines), lines
    assert "<6>carehubd stopped" in lines, lines


def test_journal_stream_of_another_file_keeps_time_stamps(tmp_path):
    lines = run_with_stderr(tmp_path, lambda st: f"{st.st_dev}:{st.st_ino + 1}")
    assert lines
    for ln in lines:
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO |WARN |ERROR|DEBUG) ", ln), ln
