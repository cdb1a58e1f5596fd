"""A standby catching up on a backlog of archived segments, through the restore command as the
runbook installs it (the shell front door, the prefetcher staging ahead), while its prefetcher
is killed again and again: it replays everything, and staging stays bounded."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from runbook_lib import standby, wal_restore
from runbook_lib.connection import connect
from runbook_lib.errors import PreconditionError
from runbook_lib.lab.parameters import warm_standby_parameters
from runbook_lib.standby.archiving import switch_and_wait_archived
from runbook_lib.waiting import wait_until

BACKLOG = 24  # segments the standby has not seen when it starts again


def write_backlog(cfg: standby.StandbyConfig) -> tuple[str, int, str, str]:
    """BACKLOG segments of rows on the primary, then a checkpoint, archived: (its LSN, rows,
    their digest, the backlog's first segment)."""
    with connect(cfg.primary()) as conn:
        first = conn.execute(
            "SELECT pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()) AS s"
        ).fetchone()["s"]
        conn.execute("CREATE TABLE public.catch_up (n int, body text)")
        for n in range(BACKLOG):
            conn.execute(
                "INSERT INTO public.catch_up SELECT %s, md5(g::text)"
                " FROM pg_catalog.generate_series(1, 500) g",
                [n],
            )
            conn.execute("SELECT pg_catalog.pg_switch_wal()")
        conn.execute("CHECKPOINT")  # a restartpoint for the standby to clean the archive up to
        switch_and_wait_archived(conn)
        lsn = conn.execute("SELECT pg_catalog.pg_current_wal_lsn()::text AS l").fetchone()["l"]
        return lsn, *content(conn), first


def content(conn) -> tuple[int, str]:
    row = conn.execute(
        "SELECT count(*) AS n, md5(string_agg(n || body, ',' ORDER BY n, body)) AS d"
        " FROM public.catch_up"
    ).fetchone()
    return row["n"], row["d"]


def prefetcher_pid(staging: Path) -> int | None:
    try:
        return int((staging / wal_restore.LOCK).read_text() or "0") or None
    except (OSError, ValueError):
        return None


def replayed(cfg: standby.StandbyConfig, lsn: str) -> bool:
    try:
        with connect(cfg.standby()) as conn:
            return conn.execute(
                "SELECT pg_catalog.pg_last_wal_replay_lsn() >= %s::pg_lsn AS done", [lsn]
            ).fetchone()["done"]
    except PreconditionError:  # still starting up: not consistent yet
        return False


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["standby", "pg_standby"])
def test_a_backlog_is_replayed_whole_while_the_prefetcher_is_killed(lab_factory, mode):
    lab = lab_factory(f"catch-up-{mode}")
    values = {**warm_standby_parameters(lab), "mode": mode, "failover_drill": False}
    cfg = standby.validate(**values)
    standby.configure_archiving(cfg)
    standby.build_standby(cfg)
    cluster = cfg.standby_cluster()
    cluster.stop()
    lsn, rows, digest, first = write_backlog(cfg)
    cluster.start()
    staging = Path(cfg.standby_datadir) / "pg_wal" / wal_restore.STAGING
    kills, most_staged = set(), 0
    deadline = time.monotonic() + 180
    while not replayed(cfg, lsn):
        assert time.monotonic() < deadline, f"not caught up after 180 s ({len(kills)} kills)"
        if staging.exists():
            most_staged = max(most_staged, len(wal_restore.staged_names(str(staging))))
        pid = prefetcher_pid(staging)
        if pid and pid not in kills:
            try:
                os.kill(pid, signal.SIGKILL)  # a child of the standby's restore command
                kills.add(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    assert kills, "the prefetcher never ran: the test proved nothing"
    assert most_staged <= wal_restore.DEFAULT_PREFETCH
    with connect(cfg.standby()) as conn:
        assert content(conn) == (rows, digest)
        conn.execute("CHECKPOINT")  # a restartpoint: the archive is cleaned up to it
    archive = Path(cfg.archive_dir)

    def cleaned() -> bool:
        if mode == "pg_standby":  # --cleanup runs with the restore of a later segment
            with connect(cfg.primary()) as conn:
                switch_and_wait_archived(conn)
        return not (archive / first).exists()

    wait_until(
        cleaned, what=f"the archive cleaned past {first} after the restartpoint", timeout_s=60
    )
    assert sorted(p.name for p in archive.iterdir() if len(p.name) == 24), "the newest stay"
