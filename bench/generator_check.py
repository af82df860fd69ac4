#!/usr/bin/python3
"""bench/generator_check.py — is the intake bench measuring the server or its load generator?
(docs/bench.md, "Is the generator the limit?"; issue 10, item 2.)

For each server (bin/baseline, then bin/carehubd), alternating, ROUNDS times:

  1. one bin/loadgen process, 4 agents x 64 in flight (what bench/run.sh does);
  2. two bin/loadgen processes at once, each 4 agents x 64 in flight (twice the window,
     from twice the generator CPU);
  3. one bin/loadgen process, 4 agents x 128 in flight (twice the window, one generator);

each for SECONDS measured, on a fresh data directory under $BENCH_TMPDIR. Reported per
run: acked events/s (summed over the generators), the CPU of every generator and of the
server (utime+stime from /proc, in % of one core over the run), and the server's write
syscalls and bytes per event (/proc/PID/io).

How to read it: if two generators get clearly more from the same server than one, the
bench's single generator was holding the server back — either its CPU (then one generator
with twice the window does no better) or its window (then it does as well as two: a closed
loop with W events in flight gets at most W per commit round trip). If the sum stays flat
while the server's CPU or the disk is saturated, the server is the limit. The machine has 2 cores: generators and server share them, so a generator
that uses a core takes it from the server.

Exit 1 when a server or a loadgen fails. Options: --seconds (default 8), --rounds
(default 1), --agents, --inflight. Environment: CAREHUBD, BASELINE, LOADGEN, BENCH_TMPDIR.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import benchlib
from benchlib import ROOT, cpu_seconds
from benchlib import proc_io as io


def wait_ready(path, proc, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return path.read_text().splitlines()[0].strip()
        if proc.poll() is not None:
            raise SystemExit(f"generator_check: server exited with {proc.returncode} before ready")
        time.sleep(0.05)
    raise SystemExit("generator_check: server not ready")


def start_server(kind, tmp, agents_total):
    data = tmp / f"{kind}-data"
    shutil.rmtree(data, ignore_errors=True)
    ready = tmp / f"{kind}.ready"
    if ready.exists():
        ready.unlink()
    if kind == "baseline":
        data.mkdir()
        cmd = [os.environ.get("BASELINE", str(ROOT / "bin/baseline")), "-b", "tcp://127.0.0.1:*",
               "-d", str(data), "--ready-file", str(ready)]
    else:
        conf = tmp / "carehubd.yaml"
        lines = ["broker:", '  listen: ["tcp://127.0.0.1:*"]', f"  data_dir: {data}",
                 "  security: none", "privacy: off", "agents:"]
        for i in range(agents_total):
            lines += [f"  - id: bench-school-{i}", "    role: school"]
        conf.write_text("\n".join(lines) + "\n")
        cmd = [os.environ.get("CAREHUBD", str(ROOT / "bin/carehubd")), "-c", str(conf),
               "--ready-file", str(ready)]
    log = open(tmp / f"{kind}.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    endpoint = wait_ready(ready, proc)
    return proc, endpoint


def stop_server(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise SystemExit("generator_check: server did not stop within 20 s of SIGTERM")
    if rc != 0:
        raise SystemExit(f"generator_check: server exited {rc} after SIGTERM")


def run_once(kind, tmp, generators, args, inflight):
    proc, endpoint = start_server(kind, tmp, args.agents)
    loadgen = os.environ.get("LOADGEN", str(ROOT / "bin/loadgen"))
    gens = []
    for g in range(generators):
        gens.append(subprocess.Popen(
            [loadgen, "-b", endpoint, "-n", str(args.agents), "-w", str(inflight),
             "-t", str(args.seconds), "--warmup", "1", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    time.sleep(1.0)  # the warm-up: measure CPU over the measured window only
    s0, g0, io0, t0 = cpu_seconds(proc.pid), [cpu_seconds(p.pid) for p in gens], io(proc.pid), time.monotonic()
    time.sleep(args.seconds)
    s1, t1, io1 = cpu_seconds(proc.pid), time.monotonic(), io(proc.pid)
    g1 = []
    for p in gens:
        try:
            g1.append(cpu_seconds(p.pid))
        except OSError:
            g1.append(None)
    results = []
    for p in gens:
        out, err = p.communicate(timeout=60)
        if p.returncode != 0:
            raise SystemExit(f"generator_check: loadgen failed ({p.returncode}): {err.strip()[-400:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    stop_server(proc)
    wall = t1 - t0
    eps = sum(r["events_per_s"] for r in results)
    events = eps * wall
    return {
        "server": kind, "generators": generators, "inflight": inflight, "events_per_s": eps,
        "server_cpu_pct": 100 * (s1 - s0) / wall,
        "generator_cpu_pct": [None if b is None else 100 * (b - a) / wall for a, b in zip(g0, g1)],
        "syscw_per_event": (io1["syscw"] - io0["syscw"]) / events if events else 0,
        "write_kib_per_event": (io1["write_bytes"] - io0["write_bytes"]) / 1024 / events if events else 0,
        "p99_ms": max(r["p99_ms"] for r in results),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--agents", type=int, default=4)
    p.add_argument("--inflight", type=int, default=64)
    args = p.parse_args()
    tmp = benchlib.bench_tmp("carehub-gencheck.")
    rows = []
    try:
        for _ in range(args.rounds):
            for kind in ("baseline", "carehubd"):
                for generators, inflight in ((1, args.inflight), (2, args.inflight),
                                             (1, 2 * args.inflight)):
                    r = run_once(kind, tmp, generators, args, inflight)
                    rows.append(r)
                    print(f"generator_check: {kind:9} {generators} loadgen x {args.agents} x "
                          f"{inflight}: {r['events_per_s']:8.0f} events/s", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\ncarehub generator check: {args.agents} agents x {args.inflight} in flight per loadgen, "
          f"{args.seconds:g} s, {args.rounds} round(s); CPU in % of one core (2 cores in all)")
    print(f"{'server':10} {'loadgens':>8} {'window':>6} {'events/s':>9} {'server CPU':>10} "
          f"{'loadgen CPU':>16} {'writes/ev':>9} {'KiB/ev':>7} {'p99 ms':>7}")
    for r in rows:
        g = "+".join(f"{c:.0f}" if c is not None else "?" for c in r["generator_cpu_pct"])
        print(f"{r['server']:10} {r['generators']:>8} {r['generators'] * args.agents * r['inflight']:>6} "
              f"{r['events_per_s']:>9.0f} "
              f"{r['server_cpu_pct']:>9.0f}% {g:>15}% {r['syscw_per_event']:>9.3f} "
              f"{r['write_kib_per_event']:>7.2f} {r['p99_ms']:>7.1f}")
    def best(kind, g, w):
        v = [r["events_per_s"] for r in rows
             if r["server"] == kind and r["generators"] == g and r["inflight"] == w]
        return sorted(v)[len(v) // 2]
    w1, w2 = args.inflight, 2 * args.inflight
    for kind in ("baseline", "carehubd"):
        one, two, wide = best(kind, 1, w1), best(kind, 2, w1), best(kind, 1, w2)
        verdict = ""
        if two > one * 1.15:
            verdict = ("  (the window was the limit, not the generator's CPU: one loadgen with "
                       "the same window does as well)" if wide > two * 0.85 else
                       "  (one loadgen's CPU was the limit)")
        print(f"{kind}: two loadgens / one = {two / one:.2f}; one loadgen, twice the window / "
              f"one = {wide / one:.2f}{verdict}")
    print(f"ratio carehubd/baseline: window {args.agents * w1}: "
          f"{best('carehubd', 1, w1) / best('baseline', 1, w1):.2f}; window {args.agents * w2} "
          f"(two loadgens): {best('carehubd', 2, w1) / best('baseline', 2, w1):.2f}; "
          f"(one loadgen): {best('carehubd', 1, w2) / best('baseline', 1, w2):.2f}")
    print(json.dumps({"bench": "generator_check", "rows": rows}))


if __name__ == "__main__":
    main()
