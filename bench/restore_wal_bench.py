"""Restore command cost per 16 MB WAL segment, against `cp` of the same file in the same run.

    .venv/bin/python bench/restore_wal_bench.py [--rounds 40] [--segments 200] [--parts 1,2,3]

Every command runs as the server runs restore_command, through `sh -c` (`cp` too).

1. One segment: each round copies one segment from a fake archive into a fresh destination with:
   `cp`, the restore command as the runbook installs it and the server runs it (the shell front
   door, which starts the Python launcher importing the precompiled module: nothing is staged
   here), the Python launcher directly, the same in pg_standby mode (`--wait`, file present), the
   module file run directly (compiled at every call), the package's console script (a venv
   interpreter importing site-packages), and a bare `python3 -I -S -c pass` (the floor for any
   Python process).
   Rounds interleave the variants; medians are reported with ratios to `cp`.
2. Catch-up: --segments consecutive segments in the archive, requested one after the other into a
   data directory in recovery (standby.signal), as a standby catching up on a backlog does:
   `cp`, the restore command (staging the next segments in the background, the front door handing
   them over without Python), and the same with --prefetch 0 (copying every segment in the
   foreground, as before issue 14). Totals, best of 3.
3. Standby replay: a primary writes --segments segments (one row and pg_switch_wal() each) into
   an archive; a standby restored from a base backup taken before replays them with
   restore_command = `cp` or the restore command, in standby and pg_standby mode. Time from
   `pg_ctl start` until its replay position reaches the primary's, best of 3 (interleaved).

Targets: issue 6, one segment within 2.5x `cp`; issue 14, catch-up at about 1.0x `cp` per segment.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath

from runbook_lib import pgbin, wal_restore
from runbook_lib.cluster import LocalCluster, server_os_user
from runbook_lib.connection import connect
from runbook_lib.host import LOCAL
from runbook_lib.passfile import passfile_env, passfile_line
from runbook_lib.ports import free_ports
from runbook_lib.standby.tools import install_tools

SEGMENT = "000000010000000000000042"
SEGMENT_SIZE = 16 * 1024 * 1024
SERVER_PYTHON = "/usr/bin/python3"
TARGET_RATIO = 2.5
CATCH_UP_TARGET = 1.0


def restore_argv(tools: Path, archive: Path, *extra: str) -> list[str]:
    """The restore command as runbook_lib.standby.tools writes restore_command: the shell front
    door, which hands over staged segments itself and runs the Python command for the rest."""
    installed = install_tools(LOCAL, PurePosixPath(tools), SERVER_PYTHON).restore_front
    return ["/bin/sh", str(installed), "--archive", str(archive), *extra]


def python_argv(tools: Path, archive: Path, *extra: str) -> list[str]:
    """The Python command behind the front door, run directly."""
    installed = install_tools(LOCAL, PurePosixPath(tools), SERVER_PYTHON).restore_script
    return [SERVER_PYTHON, "-I", "-S", str(installed), "--archive", str(archive), *extra]


def as_server_runs_it(argv: list[str]) -> list[str]:
    """PostgreSQL runs restore_command (cp included) through `sh -c`."""
    return ["/bin/sh", "-c", shlex.join(argv)]


def variants(archive: Path, dest: Path, tools: Path) -> dict[str, list[str]]:
    script = restore_argv(tools, archive)
    source = [SERVER_PYTHON, "-I", "-S", wal_restore.__file__, "--archive", str(archive)]
    found = {
        "cp": ["cp", str(archive / SEGMENT), str(dest)],
        "restore (standby mode)": [*script, SEGMENT, str(dest), SEGMENT],
        "restore, Python command directly": [
            *python_argv(tools, archive),
            SEGMENT,
            str(dest),
            SEGMENT,
        ],  # fmt: skip
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


def one_segment(work: Path, rounds: int) -> float:
    archive, pg_wal = work / "archive1", work / "pg_wal1"
    archive.mkdir()
    pg_wal.mkdir()
    (archive / SEGMENT).write_bytes(os.urandom(SEGMENT_SIZE))
    dest = pg_wal / "RECOVERYXLOG"
    cmds = variants(archive, dest, work / "tools")
    times: dict[str, list[float]] = {name: [] for name in cmds}
    for _ in range(3):  # warm the page cache and the interpreters
        for argv in cmds.values():
            dest.unlink(missing_ok=True)
            LOCAL.run(as_server_runs_it(argv))
    for _ in range(rounds):
        for name, argv in cmds.items():
            dest.unlink(missing_ok=True)
            started = time.perf_counter()
            LOCAL.run(as_server_runs_it(argv))
            times[name].append(time.perf_counter() - started)
            if not name.startswith("bare"):
                assert dest.stat().st_size == SEGMENT_SIZE, name
    cp = statistics.median(times["cp"])
    print(f"1. one 16 MB segment, median of {rounds} rounds (same run, same file):")
    print(f"{'variant':40} {'median ms':>10} {'x cp':>7}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:40} {median * 1000:10.2f} {median / cp:7.2f}")
    ratio = statistics.median(times["restore (standby mode)"]) / cp
    verdict = "meets" if ratio <= TARGET_RATIO else "MISSES"
    print(f"restore command / cp = {ratio:.2f} ({verdict} the {TARGET_RATIO}x target)\n")
    return ratio


def seg_name(n: int, timeline: int = 1) -> str:
    return f"{timeline:08X}{n >> 8:08X}{n & 0xFF:08X}"


def fill_archive(archive: Path, count: int) -> list[str]:
    """count distinct 16 MB segments (random content, a unique first block each)."""
    archive.mkdir()
    body = os.urandom(SEGMENT_SIZE)
    names = [seg_name(n) for n in range(1, count + 1)]
    for name in names:
        (archive / name).write_bytes(name.encode() * 64 + body[24 * 64 :])
    return names


def catch_up_once(argv_for, names: list[str], datadir: Path) -> float:
    pg_wal = datadir / "pg_wal"
    dest = pg_wal / "RECOVERYXLOG"
    started = time.perf_counter()
    for name in names:
        subprocess.run(as_server_runs_it(argv_for(name, dest)), check=True)
        dest.unlink()  # the server renames it into place and recycles it later
    return time.perf_counter() - started


def wait_for_prefetcher_exit(datadir: Path) -> None:
    (datadir / "standby.signal").unlink(missing_ok=True)
    lock = datadir / "pg_wal" / wal_restore.STAGING / wal_restore.LOCK
    deadline = time.monotonic() + 30
    while lock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def fresh_data_directory(work: Path) -> Path:
    datadir = work / "data"
    shutil.rmtree(datadir, ignore_errors=True)
    (datadir / "pg_wal").mkdir(parents=True)
    (datadir / "standby.signal").touch()
    return datadir


def stage_all(script: list[str], names: list[str], datadir: Path) -> None:
    """Restore the first segment with a window as long as the backlog, wait until it is staged."""
    dest = datadir / "pg_wal" / "RECOVERYXLOG"
    subprocess.run([*script, "--prefetch", str(len(names)), names[0], str(dest)], check=True)
    dest.unlink()
    staging = datadir / "pg_wal" / wal_restore.STAGING
    deadline = time.monotonic() + 120
    while len(list(staging.glob("0*"))) < len(names) - 1 and time.monotonic() < deadline:
        time.sleep(0.05)


def catch_up(work: Path, count: int) -> float:
    archive = work / "archive"
    names = fill_archive(archive, count)
    script = restore_argv(work / "tools", archive)
    commands = {
        "cp": lambda name, dest: ["cp", str(archive / name), str(dest)],
        "restore (standby mode, staging)": lambda name, dest: [*script, name, str(dest), name],
        "restore --wait (pg_standby mode, staging)": lambda name, dest: [
            *script,
            "--wait",
            name,
            str(dest),
            name,
        ],  # fmt: skip
        "restore --prefetch 0 (no staging)": lambda name, dest: [
            *script,
            "--prefetch",
            "0",
            name,
            str(dest),
            name,
        ],  # fmt: skip
    }
    staged = "restore, every segment already staged (the foreground alone)"
    totals: dict[str, list[float]] = {name: [] for name in [*commands, staged]}
    for _ in range(3):
        for label, argv_for in commands.items():
            datadir = fresh_data_directory(work)
            totals[label].append(catch_up_once(argv_for, names, datadir))
            wait_for_prefetcher_exit(datadir)
        datadir = fresh_data_directory(work)
        stage_all(script, names, datadir)
        totals[staged].append(
            catch_up_once(commands["restore (standby mode, staging)"], names[1:], datadir)
            * len(names)
            / (len(names) - 1)
        )
        wait_for_prefetcher_exit(datadir)
    cp = min(totals["cp"])
    print(f"2. catch-up: {count} consecutive 16 MB segments, one request after another, best of 3")
    print(f"{'variant':42} {'total s':>8} {'ms/segment':>11} {'x cp':>6}")
    for label, values in totals.items():
        best = min(values)
        print(f"{label:42} {best:8.2f} {best * 1000 / count:11.2f} {best / cp:6.2f}")
    ratio = min(totals["restore (standby mode, staging)"]) / cp
    print(f"catch-up: restore command / cp = {ratio:.2f} per segment\n")
    shutil.rmtree(archive, ignore_errors=True)
    return ratio


# ----- 3. a real standby replaying a backlog


def _cluster(work: Path, name: str, port: int) -> LocalCluster:
    return LocalCluster(name, work / name, port, work / f"{name}.log")


def use_password(work: Path, password: str, *clusters: LocalCluster) -> None:
    """The servers want a password (as the lab's do): ours comes from a password file."""
    passfile = work / "bench.pgpass"
    lines = [passfile_line(c.endpoint(), password) for c in clusters]
    LOCAL.write_text(passfile, "".join(lines), mode=0o600)
    os.environ["PGPASSFILE"] = str(passfile)


def primary_with_backlog(work: Path, count: int, port: int) -> tuple[LocalCluster, Path, str]:
    """A primary on `port` that archived `count` segments after a base backup was taken."""
    archive = work / "wal_archive"
    LOCAL.make_dir(archive, owner=server_os_user(), mode=0o755)
    primary = _cluster(work, "primary", port)
    password = secrets.token_urlsafe(16)
    primary.init(
        {
            "wal_level": "replica",
            "archive_mode": "on",
            "archive_command": f"'cp %p {archive}/%f'",
            "max_wal_size": "'4GB'",
        },
        password=password,
    )
    use_password(work, password, primary, _cluster(work, "standby", port + 1))
    primary.start()
    backup = work / "backup"
    LOCAL.make_dir(backup, owner=server_os_user(), mode=0o700)
    with passfile_env(primary.endpoint(), server_os_user()) as env:
        LOCAL.run(
            [pgbin.program("pg_basebackup"), "-h", "127.0.0.1", "-p", str(port), "-U",
             "postgres", "-D", str(backup), "-X", "fetch", "-c", "fast"],
            user=server_os_user(), env=env,
        )  # fmt: skip
    with connect(primary.endpoint()) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS backlog (n int)")
        for n in range(count):
            conn.execute("INSERT INTO backlog VALUES (%s)", [n])
            conn.execute("SELECT pg_catalog.pg_switch_wal()")
        target = conn.execute("SELECT pg_catalog.pg_current_wal_lsn()::text AS l").fetchone()["l"]
        last = conn.execute(
            "SELECT pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn() - 1) AS w"
        ).fetchone()["w"]
        deadline = time.monotonic() + 300
        while (archive / last).exists() is False and time.monotonic() < deadline:
            time.sleep(0.1)
    primary.stop()
    return primary, backup, target


def replay_once(work: Path, backup: Path, target: str, port: int, mode: str, command: str):
    standby = _cluster(work, "standby", port)
    if standby.datadir.exists():
        shutil.rmtree(standby.datadir)
    LOCAL.run(["cp", "-a", str(backup), str(standby.datadir)])
    signal = "recovery.signal" if mode == "pg_standby" else "standby.signal"
    (standby.datadir / signal).touch()
    extra = {"recovery_prefetch": "off"} if mode == "pg_standby" else {}
    standby.configure(
        {
            "restore_command": "'" + command.replace("'", "''") + "'",
            "hot_standby": "on",
            "archive_mode": "off",
            "wal_retrieve_retry_interval": "'1s'",
            **extra,
        }
    )
    LOCAL.run(["chown", "-R", f"{server_os_user()}:", str(standby.datadir)])
    started = time.perf_counter()
    standby.start()
    with connect(standby.endpoint()) as conn:
        while not conn.execute(
            "SELECT pg_catalog.pg_last_wal_replay_lsn() >= %s::pg_lsn AS done", [target]
        ).fetchone()["done"]:
            time.sleep(0.01)
    seconds = time.perf_counter() - started
    standby.stop(mode="immediate")
    return seconds


def standby_replay(work: Path, count: int) -> dict[str, float]:
    port, standby_port = free_ports(2, start=random.randrange(20000, 60000, 100))
    _, backup, target = primary_with_backlog(work, count, port)
    archive = work / "wal_archive"
    tools = work / "server_tools"
    script = " ".join(map(shlex.quote, restore_argv(tools, archive)))
    cp = f"cp {shlex.quote(str(archive))}/%f %p"
    runs = {
        ("standby", "cp"): cp,
        ("standby", "restore command"): f"{script} %f %p %r",
        ("pg_standby", "cp"): cp,  # recovery.signal: ends recovery at the first absent file
        ("pg_standby", "restore command --wait"): f"{script} --wait --sleep 0.1 %f %p %r",
    }
    times: dict[tuple[str, str], list[float]] = {k: [] for k in runs}
    for _ in range(3):
        for (mode, label), command in runs.items():
            if mode == "pg_standby" and label == "cp":
                continue  # a plain cp cannot wait: measured in standby mode only
            times[(mode, label)].append(replay_once(work, backup, target, port + 1, mode, command))
    base = min(times[("standby", "cp")])
    print(f"3. a standby replaying {count} archived segments from a base backup, best of 3")
    print(f"{'mode':11} {'restore_command':26} {'seconds':>8} {'x cp':>6}")
    out = {}
    for (mode, label), values in times.items():
        if values:
            best = min(values)
            out[f"{mode} {label}"] = best / base
            print(f"{mode:11} {label:26} {best:8.2f} {best / base:6.2f}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--segments", type=int, default=200)
    parser.add_argument("--no-standby", action="store_true", help="skip part 3 (a real standby)")
    parser.add_argument("--parts", default="1,2,3", help="which parts to run (default 1,2,3)")
    args = parser.parse_args()
    parts = set(args.parts.split(",")) - ({"3"} if args.no_standby else set())
    work = Path(tempfile.mkdtemp(prefix="restore-bench-"))
    work.chmod(0o755)
    try:
        if "1" in parts:
            one_segment(work, args.rounds)
        if "2" in parts:
            catch_up(work, args.segments)
        if "3" in parts:
            standby_replay(work, args.segments)
        return 0
    finally:
        for name in ("standby", "primary"):
            cluster = _cluster(work, name, 0)
            if cluster.initialized():
                cluster.stop(mode="immediate")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
