"""Latency of one remote command: through the host's control master against a fresh ssh.

    .venv/bin/python bench/ssh_latency_bench.py [--commands 50]   # as root, about 15 s

A throwaway hosts lab without PostgreSQL (namespaces, one sshd per host). On host `here`,
logged in as postgres, the same command (`true`) runs N times:

- fresh: a new ssh connection per command (ControlMaster=no: TCP, key exchange, publickey);
- master: SshHost.run, through the control master the first command opened;
- a file operation through the master (SshHost.exists), which is what runbook steps do most.

Printed: median and p90 per command, and master/fresh as a ratio (the baseline is the fresh
connection measured in the same run).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from runbook_lib.lab import hosts_lab  # noqa: E402


def timed(fn, n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def summary(name: str, times: list[float]) -> str:
    p90 = sorted(times)[int(len(times) * 0.9) - 1]
    return f"{name:<28} median {statistics.median(times) * 1000:7.1f} ms   p90 {p90 * 1000:7.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=50)
    args = parser.parse_args()
    parent = Path(tempfile.mkdtemp(prefix="ssh-bench-"))
    try:
        lab = hosts_lab.up(parent / "lab", servers=())
        host = lab.host("here")
        fresh_argv = host.ssh_argv("true", master=False)

        def fresh() -> None:
            subprocess.run(fresh_argv, stdin=subprocess.DEVNULL, capture_output=True, check=True)

        host.run(["true"])  # opens the master
        results = {
            "fresh ssh per command": timed(fresh, args.commands),
            "SshHost.run via master": timed(lambda: host.run(["true"]), args.commands),
            "SshHost.exists via master": timed(lambda: host.exists("/srv"), args.commands),
        }
        for name, times in results.items():
            print(summary(name, times))
        base = statistics.median(results["fresh ssh per command"])
        ratio = statistics.median(results["SshHost.run via master"]) / base
        print(f"master / fresh (median): {ratio:.2f}")
    finally:
        hosts_lab.down(parent / "lab", purge=True)
        shutil.rmtree(parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
