#!/usr/bin/python3
"""valgrind-scan DIR — fail on any memcheck error in the valgrind logs of a run.

`make memcheck` runs every carehubd process of the e2e suite through
scripts/valgrind-carehubd with CAREHUB_VALGRIND_LOG_DIR set, so that each process
writes DIR/vg.PID.TIME.log. The exit code of a process that a test kills with SIGKILL
is never seen, and neither is that of one whose test does not check it; its log
is. This reads every vg.*.log in DIR and fails (exit 1), naming the files, if:

  * the log's final "ERROR SUMMARY: N errors" has N > 0, or its LEAK SUMMARY has
    "definitely lost: N bytes" with N > 0 (a process that exited);
  * anywhere in the log, an error as memcheck reports it (an "Invalid read of
    size 4", a "… bytes in 1 blocks are definitely lost in loss record …", a
    crash signal): a process killed before its summary still has the errors it
    made up to the kill. Its leaks are never checked (valgrind checks them at
    exit), which the report counts;
  * DIR holds no log at all (the wrapper did not run, or wrote elsewhere).

Exit 0 otherwise; 2 on a usage error. Tested by tests/e2e/test_valgrind_scan.py.
"""

import os
import re
import sys

# The first line of each kind of memcheck error (valgrind 3.19, memcheck/mc_errors.c),
# after the "==PID== " prefix, and valgrind's own failures.
ERROR_HEADERS = re.compile(
    r"^(?:"
    r"Invalid (?:read|write) of size \d+"
    r"|Invalid free\(\) / delete / delete\[\] / realloc\(\)"
    r"|Mismatched free\(\) / delete / delete ?\[\]"
    r"|Conditional jump or move depends on uninitialised value\(s\)"
    r"|Use of uninitialised value of size \d+"
    r"|Syscall param .* (?:points to|contains) (?:unaddressable|uninitialised) byte\(s\)"
    r"|Source and destination overlap in "
    r"|Argument '.*' of function .* has a fishy"
    r"|Jump to the invalid address stated on the next line"
    r"|Invalid alignment value: "
    r"|Invalid size value: "
    r"|Illegal memory pool address"
    r"|(?:Unaddressable|Uninitialised) byte\(s\) found during client check request"
    r"|realloc\(\) with size 0"
    r"|[\d,]+ (?:\([\d,]+ direct, [\d,]+ indirect\) )?bytes in [\d,]+ blocks are definitely lost"
    r"|Process terminating with default action of signal \d+ \((?!SIGTERM\)|SIGINT\)|SIGHUP\))"
    r"|.*the 'impossible' happened"
    r"|.*VALGRIND INTERNAL ERROR"
    r")")
LINE = re.compile(r"^==(\d+)== ?(.*)$")
ERROR_SUMMARY = re.compile(r"ERROR SUMMARY: ([\d,]+) errors? from")
DEFINITELY_LOST = re.compile(r"definitely lost: ([\d,]+) bytes in")
COMMAND = re.compile(r"^Command: (.*)$")


def number(s):
    return int(s.replace(",", ""))


def scan_text(text):
    """(problems, command, finished) for one log: problems is a list of
    (line number, text) for every error found; finished: it has an ERROR SUMMARY."""
    problems = []
    command = None
    finished = False
    for i, raw in enumerate(text.splitlines(), 1):
        m = LINE.match(raw)
        msg = m.group(2) if m else raw
        if command is None:
            c = COMMAND.match(msg)
            if c:
                command = c.group(1)
        s = ERROR_SUMMARY.search(msg)
        if s:
            finished = True
            if number(s.group(1)) > 0:
                problems.append((i, msg.strip()))
            continue
        d = DEFINITELY_LOST.search(msg)
        if d:
            if number(d.group(1)) > 0:
                problems.append((i, msg.strip()))
            continue
        if ERROR_HEADERS.match(msg):  # headers start the line; stack lines are indented
            problems.append((i, msg.strip()))
    return problems, command, finished


def excerpt(text, line, n=14):
    lines = text.splitlines()
    return "\n".join("    " + ln for ln in lines[line - 1:line - 1 + n])


def main(argv):
    if len(argv) != 2 or not os.path.isdir(argv[1]):
        print("usage: valgrind-scan.py DIR (a directory of valgrind logs, vg.*.log)",
              file=sys.stderr)
        return 2
    d = argv[1]
    logs = sorted(f for f in os.listdir(d) if f.startswith("vg.") and f.endswith(".log"))
    if not logs:
        print(f"valgrind-scan: no valgrind log (vg.*.log) in {d}: nothing ran under "
              f"scripts/valgrind-carehubd with CAREHUB_VALGRIND_LOG_DIR={d}", file=sys.stderr)
        return 1
    bad = []
    unfinished = 0
    for f in logs:
        path = os.path.join(d, f)
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        problems, command, finished = scan_text(text)
        if not finished:
            unfinished += 1
        if problems:
            bad.append((path, problems, command, finished, text))
    for path, problems, command, finished, text in bad:
        state = "" if finished else " (no summary: killed, or exec'd)"
        print(f"valgrind-scan: {path}: {len(problems)} error(s){state}", file=sys.stderr)
        print(f"  command: {command or '?'}", file=sys.stderr)
        for line, msg in problems[:5]:
            print(f"  line {line}: {msg}", file=sys.stderr)
        print(excerpt(text, problems[0][0]), file=sys.stderr)
    print(f"valgrind-scan: {len(logs)} logs in {d}: {len(logs) - unfinished} with a summary, "
          f"{unfinished} without (killed by a test, or exec'd: scanned for errors up to "
          f"that point, leaks not checked); {len(bad)} with errors"
          + (": " + " ".join(os.path.basename(p) for p, *_ in bad) if bad else ""),
          file=sys.stderr if bad else sys.stdout)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
