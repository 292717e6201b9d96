#!/usr/bin/env python3
"""What an idle `novated` costs: CPU and wake-ups per thread while nothing happens.

    cargo build --release -p novate-engine --bin novated
    python3 benches/idle_cpu.py [CONNECTIONS] [SECONDS]

Starts target/release/novated (default config, memory journal, a temporary data dir) on a free
loopback port, opens CONNECTIONS idle connections (default 10), waits 1 s, then reports each
thread kind's wake-ups per second (voluntary context switches) and the process's CPU share
over SECONDS (default 3). The peer is the same daemon with no connection (CONNECTIONS = 0).
"""
import os
import re
import socket
import subprocess
import sys
import tempfile
import time


def threads(pid):
    """{tid: (name, voluntary context switches)} of the process's threads."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
            status = open(f"/proc/{pid}/task/{tid}/status").read()
            out[tid] = (name, int(re.search(r"voluntary_ctxt_switches:\s+(\d+)", status)[1]))
        except (OSError, TypeError):
            pass  # the thread ended
    return out


def cpu_ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def main():
    conns = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tempfile.mkdtemp(prefix="novate-idle-")
    daemon = subprocess.Popen(
        ["target/release/novated", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        while "listening" not in daemon.stdout.readline():
            pass
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
        time.sleep(1.0)
        before, t0, c0 = threads(daemon.pid), time.time(), cpu_ticks(daemon.pid)
        time.sleep(seconds)
        after, dt = threads(daemon.pid), time.time() - t0
        cpu = (cpu_ticks(daemon.pid) - c0) / os.sysconf("SC_CLK_TCK") / dt * 100
        kinds = {}
        for tid, (name, v) in after.items():
            if tid in before:
                k = kinds.setdefault(name, [0, 0])
                k[0] += 1
                k[1] += v - before[tid][1]
        for name, (n, v) in sorted(kinds.items()):
            print(f"  {name:16s} x{n:<3d} {v / dt / n:7.0f} wake-ups/s each")
        print(f"novated, {conns} idle connections: {cpu:.2f} % CPU over {dt:.1f} s")
        for s in socks:
            s.close()
    finally:
        daemon.terminate()
        daemon.wait()


if __name__ == "__main__":
    main()
