#!/usr/bin/env python3
"""Where exec → READY=1 goes, phase by phase, for each server the launcher starts.

usage: phases.py [-n ROUNDS] NAME=PATH[ ARG…] …   (the last server is the reference, as in launch)

Runs startup-launch under `perf record` with four cheap tracepoints (exec, fork, accept4, the
send of the notification) and prints, per server, the median of:
  exec → 1st fork       the single-process part: loading, runtime start, parsing, binding
  1st → last fork       forking the workers (the parent copies its page tables each time)
  last fork → accept    the last worker's way from fork() to its accept4()
  accept → READY        the supervisor noticing and sending READY=1
The tracepoints add a few µs per event; the launcher's own table is the timing to quote.
"""
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
LAUNCH = os.path.join(os.path.dirname(HERE), "build", "startup-launch")
EVENTS = ["sched:sched_process_exec", "sched:sched_process_fork", "syscalls:sys_enter_accept4",
          "syscalls:sys_enter_sendmsg", "syscalls:sys_enter_sendto"]
PHASES = ["exec → 1st fork", "1st → last fork", "last fork → accept", "accept → READY", "exec → READY"]


def main(argv):
    rounds = "21"
    if len(argv) >= 2 and argv[0] == "-n":
        rounds, argv = argv[1], argv[2:]
    if not argv or not shutil.which("perf"):
        print(__doc__ if argv else "usage: phases.py [-n ROUNDS] NAME=PATH …", file=sys.stderr)
        return 0 if argv else 64
    workers = 4
    names = {}  # basename of the executable → server name
    for spec in argv:
        name, _, cmd = spec.partition("=")
        names[os.path.basename(cmd.split()[0])[:15]] = name
    data = os.path.join(tempfile.mkdtemp(prefix="startup-phases-"), "perf.data")
    record = ["perf", "record", "-q", "-o", data] + [a for e in EVENTS for a in ("-e", e)]
    out = subprocess.run(record + ["--", LAUNCH, "-n", rounds, "-w", str(workers)] + argv,
                         capture_output=True, text=True)
    if out.returncode != 0:
        print(f"phases: perf record failed (perf needs the tracepoints: root or perf_event_paranoid ≤ -1):\n"
              f"{out.stderr.strip()}", file=sys.stderr)
        return 1
    script = subprocess.run(["perf", "script", "-i", data, "-F", "comm,pid,time,event"],
                            capture_output=True, text=True).stdout
    shutil.rmtree(os.path.dirname(data), ignore_errors=True)
    runs, current = [], None
    for line in script.splitlines():
        m = re.match(r"\s*(.*?)\s+(\d+)\s+([\d.]+):\s+(\S+):", line)
        if not m:
            continue
        comm, pid, t, event = m.group(1), int(m.group(2)), float(m.group(3)) * 1000, m.group(4)
        if event == "sched:sched_process_exec":
            current = None
            if comm in names:
                current = dict(name=names[comm], pid=pid, exec=t, forks=[], accepts=[], sends=[])
                runs.append(current)
            continue
        if current is None:
            continue
        if event == "sched:sched_process_fork" and pid == current["pid"]:
            current["forks"].append(t)
        elif event == "syscalls:sys_enter_accept4":
            current["accepts"].append(t)
        elif event.startswith("syscalls:sys_enter_send") and pid == current["pid"]:
            current["sends"].append(t)
    phases = {}
    for r in runs:
        if len(r["forks"]) < workers or len(r["accepts"]) < workers:
            continue
        forks, last_accept = r["forks"][:workers], max(r["accepts"][:workers])
        ready = [s for s in r["sends"] if s >= last_accept]
        if not ready:
            continue
        values = [forks[0] - r["exec"], forks[-1] - forks[0], last_accept - forks[-1], ready[0] - last_accept,
                  ready[0] - r["exec"]]
        for phase, value in zip(PHASES, values):
            phases.setdefault(r["name"], {}).setdefault(phase, []).append(value)
    print(f"median ms per phase ({rounds} rounds, {workers} workers)")
    print(f"{'server':12s}" + "".join(f"{p:>20s}" for p in PHASES) + "   starts")
    for spec in argv:
        name = spec.partition("=")[0]
        if name not in phases:
            print(f"{name:12s} (no complete start seen)")
            continue
        p = phases[name]
        print(f"{name:12s}" + "".join(f"{statistics.median(p[k]):20.2f}" for k in PHASES) + f"   {len(p[PHASES[0]])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
