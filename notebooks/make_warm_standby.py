"""Write notebooks/warm_standby.ipynb, without outputs.

Run: .venv/bin/python notebooks/make_warm_standby.py
"""

from __future__ import annotations

from pathlib import Path

import notebook_source

PARAMETERS = """\
primary_host: str = "primary.example.com"  # the primary server (keeps taking writes throughout)
primary_port: int = 5432  # the primary's port
pgsuperuser: str = "postgres"  # superuser on both servers (password: .pgpass, never here)
pgdatabase: str = "widgets"  # database for the heartbeat and marker rows, and the comparison
archive_dir: str = "/var/lib/postgresql/wal-archive"  # WAL archive both servers can reach
standby_datadir: str = "/var/lib/postgresql/15/standby"  # absent or empty; the notebook's host
standby_port: int = 5433  # port the standby listens on
mode: str = "standby"  # standby (standby.signal, pg_promote) or pg_standby (waiting, trigger file)
trigger_file: str = "/var/lib/postgresql/15/failover.trigger"  # pg_standby mode: fails over
archive_timeout_s: int = 60  # force a WAL switch this often: bounds the data-loss window
restart_primary_command: list[str] = []  # argv that restarts the primary when archive_mode changes
hot_standby: bool = True  # standby answers read-only queries (needed by status, compare, drill)
failover_drill: bool = False  # promote the standby at the end and prove nothing was lost
archive_cleanup: bool = True  # remove archived WAL the standby no longer needs (sole consumer)
compare_schemas: list[str] = ["public"]  # schemas whose tables are counted on both servers
server_python: str = "/usr/bin/python3"  # interpreter the servers run the WAL commands with
observe_s: int = 30  # status: seconds of lag observation (heartbeat every second)
replay_timeout_s: int = 300  # how long to wait for a segment to be archived and replayed
promote_timeout_s: int = 60  # how long the promoted standby may take to accept writes
dry_run: bool = False  # run read-only steps; show the commands and SQL of changing steps instead of running them
interactive: bool = True  # JupyterLab: confirm each changing step in the step panel (runbook run sets False)
"""  # noqa: E501 (the contract's exact text for dry_run and interactive)

CELLS = [
    (
        "md",
        "# Warm standby by WAL archiving\n\n"
        "Builds a standby of `primary_host` fed only by archived WAL (log shipping, no "
        "streaming): the primary archives every WAL segment into `archive_dir` with "
        "`runbook-archive-wal` (fsynced, atomic, never overwriting) and switches segments at "
        "least every `archive_timeout_s`; the standby restores them with "
        "`runbook-restore-wal`. The notebook runs on the standby's host. Two modes:\n\n"
        "* `standby`: `standby.signal`, a restore command that answers at once, "
        "`pg_archivecleanup` at restartpoints, promotion with `pg_promote()`.\n"
        "* `pg_standby`: `recovery.signal` and a restore command that *waits* for the next "
        "segment; only the trigger file ends recovery (`smart`: after replaying what the "
        "archive holds; `fast`: at once). `recovery_prefetch` is turned off: with it, "
        "PostgreSQL 15 stalls replay behind a waiting restore command.\n\n"
        "Every step can be re-run: it detects work already done. Passwords come from "
        "`.pgpass`, `PGPASSFILE` or a service file, never from parameters.",
    ),
    ("params", PARAMETERS),
    (
        "md",
        "## Parameters check\nEvery parameter is validated at once; a bad value stops here, "
        "before anything is changed.",
    ),
    ("code", "from runbook_lib import standby\n\ncfg = standby.from_namespace(globals())\ncfg"),
    (
        "md",
        "## Steps\nEvery step below is one `runbook.run(...)` call; the panel shows each step's "
        "state and duration. In JupyterLab, in a run started with `runbook open`: run all "
        "cells first (read-only steps run; a step that changes a server waits in its cell), "
        "then run each step with the panel's button, ticking the confirmation for a step that "
        "changes servers (or tick it and re-run the step's cell); the result lands in the "
        "step's own cell. With `dry_run` the read-only steps run and the changing ones "
        "(2, 3, 6) show the exact commands and SQL they would run instead; nothing is changed.",
    ),
    (
        "code",
        "from runbook_lib.panel import step_panel\n\n"
        "runbook = standby.make_runbook(cfg, dry_run=dry_run, interactive=interactive)\n"
        "step_panel(runbook)",
    ),
    (
        "md",
        "## 1. Preflight (read-only)\nThe primary reachable as a superuser, its `wal_level` and "
        "archive settings (and whether step 2 must **restart** it: changing `archive_mode` "
        "needs a restart, done with `restart_primary_command`), free space for the archive "
        "and the standby, the standby port free, the standby data directory absent or empty.",
    ),
    ("code", 'runbook.run("preflight")'),
    (
        "md",
        "## 2. Archiving on the primary\n`runbook-archive-wal` is installed next to the "
        "primary's data directory (run by the server's OS user with the system python3), and "
        "`archive_mode`, `archive_command`, `archive_timeout` set with `ALTER SYSTEM` (reload; "
        "restart only when `archive_mode` or `wal_level` change). Then the proof: "
        "`pg_switch_wal()` and `pg_stat_archiver` must show that segment archived without a "
        "failure. A heartbeat row and a marker table are created in schema `runbook_standby`.",
    ),
    ("code", 'runbook.run("configure_archiving")'),
    (
        "md",
        "## 3. Base backup and recovery settings\n`pg_basebackup` into `standby_datadir`, "
        "then the settings of the mode in `postgresql.auto.conf`: the restore command; "
        "`archive_cleanup_command` with `pg_archivecleanup` (standby mode) or the restore "
        "command's `--cleanup` (pg_standby mode); in pg_standby mode `recovery_prefetch = off` "
        "and a `recovery_end_command` removing the trigger file (a stale trigger would end "
        "the next recovery at once). Cleanup is on only with `archive_cleanup`: use it only "
        "when this archive serves this standby alone. Then the standby is started.",
    ),
    ("code", 'runbook.run("build_standby")'),
    (
        "md",
        "## 4. Status\nOn the primary: archiver counters and failures, segments waiting to be "
        "archived. On the standby: in recovery, replay LSN, byte lag, and time lag measured "
        "with a heartbeat written every second for `observe_s` seconds (an idle primary then "
        "does not look late). Problems, such as a failing `archive_command`, are listed first. "
        "Replay lag should stay within `archive_timeout_s` plus a few seconds.",
    ),
    ("code", 'runbook.run("status")'),
    ("code", 'runbook.plot("status")'),
    (
        "md",
        "## 5. Compare\nThe standby is brought up to the primary's current LSN (WAL switch, "
        "archived, replayed), then every table of `compare_schemas` is counted exactly on both. "
        "On an idle primary a difference fails this cell; while the primary takes writes, "
        "counts may differ by the rows written after that LSN.",
    ),
    ("code", 'runbook.run("compare")'),
    (
        "md",
        "## 6. Failover drill\nOnly with `failover_drill`. A marker row is written on the "
        "primary, its segment switched, archived and replayed; then the standby is triggered "
        "(`pg_promote()` in standby mode, the trigger file with `smart` in pg_standby mode) and "
        "proven: out of recovery, on a new timeline with its `.history` file, the marker "
        "present, a write accepted. The time from trigger to read-write is reported. The old "
        "primary keeps running: point clients at the standby before it takes writes again.",
    ),
    ("code", 'runbook.run("failover_drill")'),
]


if __name__ == "__main__":
    print(notebook_source.write(CELLS, Path(__file__).with_name("warm_standby.ipynb")))
