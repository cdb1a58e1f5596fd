"""Cost of archiving one 16 MB WAL segment over SSH against a local copy, as the server runs
runbook-archive-wal (python3 -I -S, as postgres).

    .venv/bin/python bench/archive_ssh_bench.py [--segments 20]   # as root, about 30 s

A throwaway hosts lab without PostgreSQL. On host `primary`, as postgres, the same random
16 MB file is archived N times under new names:

- local: into a directory on the primary's own disk (the baseline, measured in the same run);
- ssh: to the archive's host (`--ssh postgres@archive`), a new SSH connection per segment;
- ssh + master: the same sharing one connection through an SSH control master
  (`--ssh-control-dir`), as the runbook installs it;
- fetch, fetch + master: the standby's restore command (`--fetch`) on host `standby`, copying
  those segments back from the archive's host, without and with the control master.

/srv is a tmpfs in the lab, so fsync costs nothing: the ratios show the transport's cost.
Printed: median and p90 per segment and each ratio to the local copy.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path, PurePosixPath

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from runbook_lib.lab import hosts_lab  # noqa: E402
from runbook_lib.standby.tools import install_tools  # noqa: E402

PYTHON = "/usr/bin/python3"
WORK = PurePosixPath("/srv/postgresql/bench")
TOOLS = PurePosixPath("/srv/postgresql/runbook-tools")
ARCHIVE_TOOLS = PurePosixPath("/srv/runbook-tools")

# runs on the primary's host: times each archive command (a fresh name each time)
DRIVER = """import json, subprocess, sys, time
base, n = json.loads(sys.argv[1]), int(sys.argv[2])
times = []
for i in range(n):
    name = "0000000100000000%08X" % (i + 1)
    start = time.perf_counter()
    subprocess.run([*base, "seg", name], check=True, cwd=sys.argv[3])
    times.append(time.perf_counter() - start)
print(json.dumps(times))
"""


def command(*extra: str, archive: str) -> list[str]:
    return [PYTHON, "-I", "-S", str(TOOLS / "runbook-archive-wal.py"), "--archive", archive, *extra]


def summary(name: str, times: list[float], base: float) -> str:
    p90 = sorted(times)[int(len(times) * 0.9) - 1]
    median = statistics.median(times)
    return (
        f"{name:<14} median {median * 1000:7.1f} ms   p90 {p90 * 1000:7.1f} ms   "
        f"ratio to local {median / base:5.2f}"
    )


FETCH_DRIVER = """import json, os, subprocess, sys, time
base, n, dest = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
times = []
for i in range(n):
    name = "0000000100000000%08X" % (i + 1)
    start = time.perf_counter()
    subprocess.run([*base, "--fetch", name, dest], check=True)
    times.append(time.perf_counter() - start)
    os.unlink(dest)
print(json.dumps(times))
"""


def fetch_times(lab, segments: int, remote: list[str], master: list[str]) -> dict:
    """The standby's side: --fetch of the segments archived through the master (/srv/archive/m)
    into its pg_wal-like directory, with a new connection each time and through a master."""
    standby = lab.host("standby")
    install_tools(standby, TOOLS, PYTHON)
    standby.run(["mkdir", "-p", str(WORK / "pg_wal")])
    dest = str(WORK / "pg_wal" / "RECOVERYXLOG")
    found = {}
    for name, extra in (("fetch", []), ("fetch + master", master)):
        base = command("--ssh", "postgres@archive", *remote, *extra, archive="/srv/archive/m")
        out = standby.run(
            [PYTHON, "-c", FETCH_DRIVER, json.dumps(base), str(segments), dest], timeout_s=600
        ).stdout
        found[name] = json.loads(out)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=20)
    args = parser.parse_args()
    parent = Path(tempfile.mkdtemp(prefix="archive-bench-"))
    try:
        lab = hosts_lab.up(parent / "lab", servers=())
        primary, archive_root = lab.host("primary"), lab.host("archive", "root")
        install_tools(primary, TOOLS, PYTHON)
        install_tools(archive_root, ARCHIVE_TOOLS, PYTHON)
        primary.run(["mkdir", "-p", str(WORK / "local")])
        primary.run(["sh", "-c", f"head -c 16777216 /dev/urandom > {WORK}/seg"])
        remote = ["--remote-program", str(ARCHIVE_TOOLS / "runbook-archive-wal.py")]
        master = ["--ssh-control-dir", str(WORK / "ssh")]
        variants = {
            "local": command(archive=str(WORK / "local")),
            "ssh": command("--ssh", "postgres@archive", *remote, archive="/srv/archive"),
            "ssh + master": command(
                "--ssh", "postgres@archive", *remote, *master, archive="/srv/archive/m"
            ),
        }
        archive_root.run(["install", "-d", "-o", "postgres", "/srv/archive/m"])
        results = {}
        for name, base in variants.items():
            out = primary.run(
                [PYTHON, "-c", DRIVER, json.dumps(base), str(args.segments), str(WORK)],
                timeout_s=600,
            ).stdout
            results[name] = json.loads(out)
            if name != "local":  # a fresh archive for the next variant
                archive_root.run(["sh", "-c", "rm -f /srv/archive/0*"])
        results.update(fetch_times(lab, args.segments, remote, master))
        base = statistics.median(results["local"])
        print(f"{args.segments} segments of 16 MB, archived as postgres on host primary")
        for name, times in results.items():
            print(summary(name, times, base))
    finally:
        hosts_lab.down(parent / "lab", purge=True)
        shutil.rmtree(parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
