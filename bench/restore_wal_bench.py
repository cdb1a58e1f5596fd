"""Restore command cost per 16 MB WAL segment, against `cp` of the same file in the same run.

    .venv/bin/python bench/restore_wal_bench.py [--rounds 40]

Each round copies one segment from a fake archive into a fresh destination with: `cp`, the
restore command as the runbook installs it and the server runs it (`/usr/bin/python3 -I -S
runbook-restore-wal.py`, a launcher importing the precompiled module), the same in pg_standby
mode (`--wait`, file present), the module file run directly (compiled at every call), the
package's console script (a venv interpreter importing site-packages), and a bare
`python3 -I -S -c pass` (the floor for any Python process). Rounds interleave the variants;
medians are reported with ratios to `cp`.
Target (issue 6): the restore command within 2.5x `cp`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath

from runbook_lib import wal_restore
from runbook_lib.host import LOCAL
from runbook_lib.standby.tools import install_tools

SEGMENT = "000000010000000000000042"
SEGMENT_SIZE = 16 * 1024 * 1024
SERVER_PYTHON = "/usr/bin/python3"
TARGET_RATIO = 2.5


def variants(archive: Path, dest: Path, tools: Path) -> dict[str, list[str]]:
    installed = install_tools(LOCAL, PurePosixPath(tools), SERVER_PYTHON).restore_script
    script = [SERVER_PYTHON, "-I", "-S", str(installed), "--archive", str(archive)]
    source = [SERVER_PYTHON, "-I", "-S", wal_restore.__file__, "--archive", str(archive)]
    found = {
        "cp": ["cp", str(archive / SEGMENT), str(dest)],
        "restore (standby mode)": [*script, SEGMENT, str(dest), SEGMENT],
        "restore --wait (pg_standby mode)": [*script, "--wait", SEGMENT, str(dest), SEGMENT],
        "restore, uncompiled single file": [*source, SEGMENT, str(dest), SEGMENT],
        "bare python3 -I -S": [SERVER_PYTHON, "-I", "-S", "-c", "pass"],
    }
    console = Path(sys.executable).with_name("runbook-restore-wal")
    if console.exists():
        found["console script (venv)"] = [
            str(console),
            "--archive",
            str(archive),
            SEGMENT,
            str(dest),
            SEGMENT,
        ]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="restore-bench-"))
    try:
        archive, pg_wal = work / "archive", work / "pg_wal"
        archive.mkdir()
        pg_wal.mkdir()
        (archive / SEGMENT).write_bytes(os.urandom(SEGMENT_SIZE))
        dest = pg_wal / "RECOVERYXLOG"
        cmds = variants(archive, dest, work / "tools")
        times: dict[str, list[float]] = {name: [] for name in cmds}
        for _ in range(3):  # warm the page cache and the interpreters
            for argv in cmds.values():
                dest.unlink(missing_ok=True)
                LOCAL.run(argv)
        for _ in range(args.rounds):
            for name, argv in cmds.items():
                dest.unlink(missing_ok=True)
                started = time.perf_counter()
                LOCAL.run(argv)
                times[name].append(time.perf_counter() - started)
                if name != "bare python3 -I -S":
                    assert dest.stat().st_size == SEGMENT_SIZE, name
        cp = statistics.median(times["cp"])
        print(f"per 16 MB segment, median of {args.rounds} rounds (same run, same file):")
        print(f"{'variant':36} {'median ms':>10} {'x cp':>7}")
        for name, values in times.items():
            median = statistics.median(values)
            print(f"{name:36} {median * 1000:10.2f} {median / cp:7.2f}")
        ratio = statistics.median(times["restore (standby mode)"]) / cp
        verdict = "meets" if ratio <= TARGET_RATIO else "MISSES"
        print(f"\nrestore command / cp = {ratio:.2f} ({verdict} the {TARGET_RATIO}x target)")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
