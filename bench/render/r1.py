#!/usr/bin/env python3
"""R1 (see README.md): `printworks render` against sharp (and Pillow), one
thread each, alternating A B A B in the same run, each run a whole process.
Prints per-tool median wall time and peak RSS, and the ratio to sharp.

usage: r1.py PRINTWORKS_BIN PHOTO OUTROOT [ROUNDS]
(node must find `sharp`: NODE_PATH or a node_modules next to r1_sharp.js)"""
import os
import statistics
import subprocess
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
binary, photo, outroot = sys.argv[1], sys.argv[2], sys.argv[3]
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 7

tools = {
    "printworks": lambda out: [binary, "render", "--sku", "poster-30x40", photo, out],
    "sharp": lambda out: ["node", os.path.join(here, "r1_sharp.js"), photo, out, "1", "canonical"],
}
if os.environ.get("R1_PILLOW", "1") != "0":
    tools["pillow"] = lambda out: [sys.executable, os.path.join(here, "r1_pillow.py"), photo, out, "1"]


# R1_CPU=N pins every run to one CPU (default: not pinned). On these
# shared 2-vCPU machines a process sometimes runs at half speed for its
# whole life; pinning did not remove that when the tools alternate.
cpu = os.environ.get("R1_CPU", "none")
pin = ["taskset", "-c", cpu] if cpu != "none" else []


def run(cmd):
    """Wall seconds and peak RSS (MiB) of one child process."""
    cmd = pin + cmd
    env = dict(os.environ, UV_THREADPOOL_SIZE="1", VIPS_CONCURRENCY="1", OMP_NUM_THREADS="1")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{cmd[0]} failed: {err}")
    return wall, usage.ru_maxrss / 1024


results = {name: [] for name in tools}
for name, cmd in tools.items():  # warm the page cache and the binaries
    os.makedirs(os.path.join(outroot, name), exist_ok=True)
    run(cmd(os.path.join(outroot, name)))
for r in range(rounds):
    for name, cmd in tools.items():
        results[name].append(run(cmd(os.path.join(outroot, name))))

sharp_wall = statistics.median(w for w, _ in results["sharp"])
print(f"R1, {rounds} rounds alternating, one thread each, pinned to cpu {cpu}, median wall / peak RSS:")
for name, runs in results.items():
    wall = statistics.median(w for w, _ in runs)
    rss = max(m for _, m in runs)
    walls = " ".join(f"{w:.3f}" for w, _ in runs)
    print(f"  {name:11} {wall:6.3f} s  {rss:6.1f} MiB  ratio to sharp {wall / sharp_wall:5.2f}   runs: {walls}")
