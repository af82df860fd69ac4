"""scripts/valgrind-scan.py, which fails `make memcheck` on a valgrind error in the log
of any carehubd process of the run, including one a test killed (issue 12).

Crafted logs in the formats valgrind 3.19 writes, then real valgrind runs of a tiny
program with a planted error, through scripts/valgrind-carehubd (the same options
as `make memcheck`), exited or killed with SIGKILL before valgrind's summary.
Runs in `make check`; valgrind and gcc come with `make deps`.
"""

import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

import carehub_harness as h

SCAN = h.REPO / "scripts" / "valgrind-scan.py"
WRAPPER = h.REPO / "scripts" / "valgrind-carehubd"

HEAD = """\
==4242== Memcheck, a memory error detector
==4242== Copyright (C) 2002-2022, and GNU GPL'd, by Julian Seward et al.
==4242== Using Valgrind-3.19.0 and LibVEX; rerun with -h for copyright info
==4242== Command: /repo/bin/carehubd -c /tmp/x/carehub.yaml --ready-file /tmp/x/ready
==4242== Parent PID: 4200
==4242==
"""
CLEAN_END = """\
==4242==
==4242== HEAP SUMMARY:
==4242==     in use at exit: 1,024 bytes in 3 blocks
==4242==   total heap usage: 12,345 allocs, 12,342 frees, 9,876,543 bytes allocated
==4242==
==4242== LEAK SUMMARY:
==4242==    definitely lost: 0 bytes in 0 blocks
==4242==    indirectly lost: 0 bytes in 0 blocks
==4242==      possibly lost: 304 bytes in 1 blocks
==4242==    still reachable: 720 bytes in 2 blocks
==4242==         suppressed: 0 bytes in 0 blocks
==4242==
==4242== For lists of detected and suppressed errors, rerun with: -s
==4242== ERROR SUMMARY: 0 errors from 0 contexts (suppressed: 0 from 0)
"""
INVALID_READ = """\
==4242== Thread 3:
==4242== Invalid read of size 8
==4242==    at 0x10F00D: hook_run (hook.c:321)
==4242==    by 0x10F0F0: deliver_turn (deliver.c:77)
==4242==  Address 0x5a1b2c8 is 8 bytes after a block of size 32 alloc'd
==4242==    at 0x48417B4: malloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)
==4242==    by 0x1100AA: xmalloc (util.c:40)
==4242==
"""
UNINIT = """\
==4242== Conditional jump or move depends on uninitialised value(s)
==4242==    at 0x10A0A0: route_match (route.c:88)
==4242==
"""
LEAK = """\
==4242== 16 (8 direct, 8 indirect) bytes in 1 blocks are definitely lost in loss record 3 of 9
==4242==    at 0x48417B4: malloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)
==4242==    by 0x1100AA: xmalloc (util.c:40)
==4242==
"""
SEGV = """\
==4242== Process terminating with default action of signal 11 (SIGSEGV)
==4242==  Access not within mapped region at address 0x0
==4242==    at 0x10B0B0: store_get (store.c:400)
"""
TERM = """\
==4242== Process terminating with default action of signal 15 (SIGTERM)
==4242==    at 0x4A3C1F0: epoll_wait (epoll_wait.c:30)
"""


def scan(d):
    return subprocess.run([sys.executable, str(SCAN), str(d)], capture_output=True, text=True,
                          timeout=60)


def logs(tmp_path, **files):
    d = tmp_path / "vg"
    d.mkdir(exist_ok=True)
    for name, text in files.items():
        (d / f"vg.{name}.log").write_text(text)
    return d


def assert_fails_naming(r, *names):
    out = r.stdout + r.stderr
    assert r.returncode == 1, f"valgrind-scan exited {r.returncode}, expected 1:\n{out}"
    for n in names:
        assert f"vg.{n}.log" in out, f"valgrind-scan does not name vg.{n}.log:\n{out}"


# ---------------------------------------------------------------- crafted logs

def test_clean_logs_pass(tmp_path):
    """Exited clean (possibly lost and still reachable are not errors), killed
    clean (no summary), exited on SIGTERM's default action, and an empty log."""
    d = logs(tmp_path, **{"1": HEAD + CLEAN_END, "2": HEAD, "3": HEAD + TERM, "4": ""})
    (d / "notes.txt").write_text("Invalid read of size 4\n")       # not a vg.*.log
    r = scan(d)
    assert r.returncode == 0, f"valgrind-scan failed clean logs ({r.returncode}):\n{r.stdout}{r.stderr}"
    assert "4 logs" in r.stdout and "1 with a summary, 3 without" in r.stdout, r.stdout


ERROR_LOGS = {
    "invalid-read-exited": HEAD + INVALID_READ + CLEAN_END.replace("0 errors from 0", "1 errors from 1"),
    "invalid-read-killed": HEAD + INVALID_READ,
    "uninitialised-killed": HEAD + UNINIT,
    "definite-leak-exited": HEAD + LEAK + CLEAN_END.replace("definitely lost: 0 bytes in 0",
                                                           "definitely lost: 8 bytes in 1"),
    "segv": HEAD + SEGV,
    "summary-only": HEAD + CLEAN_END.replace("0 errors from 0", "2 errors from 1"),
    "leak-summary-only": HEAD + CLEAN_END.replace("definitely lost: 0 bytes in 0",
                                                 "definitely lost: 1,048 bytes in 2"),
}


@pytest.mark.parametrize("case", list(ERROR_LOGS))
def test_an_error_fails_the_scan(tmp_path, case):
    d = logs(tmp_path, **{"100": HEAD + CLEAN_END, "200": HEAD, case: ERROR_LOGS[case]})
    r = scan(d)
    assert_fails_naming(r, case)
    out = r.stdout + r.stderr
    assert "vg.100.log" not in out and "vg.200.log" not in out, f"valgrind-scan names a clean log:\n{out}"
    assert "/repo/bin/carehubd -c /tmp/x/carehub.yaml" in out, f"the command is not named:\n{out}"


def test_no_logs_fails(tmp_path):
    """An empty log directory means nothing ran under the wrapper: not a pass."""
    d = tmp_path / "none"
    d.mkdir()
    r = scan(d)
    assert r.returncode == 1 and "no valgrind log" in r.stderr, r.stdout + r.stderr


# ---------------------------------------------------------------- real valgrind

PLANTED = r"""
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "";
    if (strstr(what, "read")) {
        char *p = malloc(8);
        volatile char c = p[8]; /* one past the block */
        (void)c;
        free(p);
    }
    if (strstr(what, "leak")) {
        void *volatile q = malloc(64);
        q = NULL; /* definitely lost */
    }
    if (strstr(what, "wait")) { /* until the test kills us */
        puts("ready");
        fflush(stdout);
        pause();
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    for tool in ("valgrind", "gcc"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} not found: run `make deps`", pytrace=False)
    d = tmp_path_factory.mktemp("planted")
    (d / "planted.c").write_text(textwrap.dedent(PLANTED))
    r = subprocess.run(["gcc", "-g", "-O0", "-o", str(d / "planted"), str(d / "planted.c")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return d / "planted"


def run_wrapped(planted, logdir, what, kill=False):
    """Run `planted WHAT` through scripts/valgrind-carehubd logging to logdir; with
    kill, SIGKILL it once it is waiting (its error, if any, already made).
    Returns the exit code."""
    logdir.mkdir(exist_ok=True)
    env = {**os.environ, "CAREHUB_VALGRIND_PROGRAM": str(planted),
           "CAREHUB_VALGRIND_LOG_DIR": str(logdir)}
    p = subprocess.Popen([str(WRAPPER), what], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env, text=True)
    try:
        if kill:
            line = p.stdout.readline()
            assert line.strip() == "ready", f"the planted program said {line!r}; {p.stderr.read()}"
            p.send_signal(signal.SIGKILL)
        p.wait(timeout=120)
        err = p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert "Invalid read" not in err, "with CAREHUB_VALGRIND_LOG_DIR valgrind still writes to stderr"
    return p.returncode


def test_real_error_in_a_killed_process_fails_the_scan(planted, tmp_path):
    """The case issue 12 is about: the process never reaches valgrind's summary
    nor its exit code, yet the scan fails on the error in its log."""
    d = tmp_path / "vg"
    assert run_wrapped(planted, d, "read+wait", kill=True) == -signal.SIGKILL
    assert run_wrapped(planted, d, "wait", kill=True) == -signal.SIGKILL      # clean, killed
    assert run_wrapped(planted, d, "") == 0                                     # clean, exited
    names = sorted(os.listdir(d))
    assert len(names) == 3, f"expected a log per process, got {names}"
    r = scan(d)
    assert_fails_naming(r)
    bad = [n for n in names if n in r.stderr]
    assert len(bad) == 1 and "Invalid read of size 1" in r.stderr, r.stdout + r.stderr
    assert "no summary" in r.stderr, r.stderr
    assert str(planted) + " read+wait" in r.stderr, r.stderr


def test_real_leak_and_read_in_exited_processes_fail_the_scan(planted, tmp_path):
    d = tmp_path / "vg"
    assert run_wrapped(planted, d, "leak") == 1         # --error-exitcode: a definite leak
    r = scan(d)
    assert_fails_naming(r)
    assert "definitely lost" in r.stderr, r.stderr
    d2 = tmp_path / "vg2"
    assert run_wrapped(planted, d2, "read") == 1
    assert_fails_naming(scan(d2))


def test_real_clean_processes_pass_the_scan(planted, tmp_path):
    d = tmp_path / "vg"
    assert run_wrapped(planted, d, "") == 0
    assert run_wrapped(planted, d, "wait", kill=True) == -signal.SIGKILL
    r = scan(d)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 logs" in r.stdout and "1 with a summary, 1 without" in r.stdout, r.stdout
