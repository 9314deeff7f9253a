#!/usr/bin/env python3
"""Time commands interleaved: round r runs every command once, starting at a different
one each round, so that drifts of the machine (another job, the host of a VM) reach all
commands alike. hyperfine runs each command's runs in one block, and on this project's
VM two blocks a few seconds apart differed by up to 40%.

    interleave.py RUNS OUT.json NAME ARGV_JSON [NAME ARGV_JSON]...

Writes {"results": [{"command", "median", "mean", "min", "times"}]} (seconds), the shape
of hyperfine's --export-json, for bench.sh's table. Each command's stdout and stderr go
to /dev/null; a command that fails stops the run.
"""
import json
import os
import shutil
import statistics
import sys
import time


def main():
    runs, out = int(sys.argv[1]), sys.argv[2]
    pairs = sys.argv[3:]
    cmds = []
    for name, argv in zip(pairs[0::2], pairs[1::2]):
        argv = json.loads(argv)
        exe = argv[0] if "/" in argv[0] else shutil.which(argv[0])
        if exe is None:
            sys.exit(f"interleave: {argv[0]} not found")
        cmds.append((name, exe, argv))
    null = os.open(os.devnull, os.O_WRONLY)
    acts = [(os.POSIX_SPAWN_DUP2, null, 1), (os.POSIX_SPAWN_DUP2, null, 2)]

    def once(exe, argv):
        t0 = time.perf_counter_ns()
        pid = os.posix_spawn(exe, argv, os.environ, file_actions=acts)
        _, status = os.waitpid(pid, 0)
        dt = (time.perf_counter_ns() - t0) / 1e9
        if status != 0:
            sys.exit(f"interleave: {' '.join(argv)} failed (wait status {status})")
        return dt

    for _ in range(10):
        for _, exe, argv in cmds:
            once(exe, argv)
    times = {name: [] for name, _, _ in cmds}
    for r in range(runs):
        for j in range(len(cmds)):
            name, exe, argv = cmds[(r + j) % len(cmds)]
            times[name].append(once(exe, argv))
    results = [
        {
            "command": name,
            "median": statistics.median(t),
            "mean": statistics.fmean(t),
            "min": min(t),
            "times": t,
        }
        for name, t in times.items()
    ]
    with open(out, "w") as f:
        json.dump({"results": results}, f)


if __name__ == "__main__":
    main()
