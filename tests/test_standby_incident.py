"""The standby during an incident: a full archive under the real server's archive_command. The
command fails without leaving a temporary file, the primary keeps its WAL, preflight still
passes, the status report run on its own names the failing archiver, and archiving resumes once
there is room."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runbook_lib import standby
from runbook_lib.cluster import server_os_user
from runbook_lib.connection import connect
from runbook_lib.errors import PreconditionError
from runbook_lib.host import LOCAL
from runbook_lib.lab.parameters import warm_standby_parameters
from runbook_lib.standby.archiving import (
    archiver_stats,
    primary_tools_dir,
    switch_and_wait_archived,
)
from runbook_lib.waiting import wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small archive needs root")


@pytest.fixture
def small_archive_mount() -> Iterator[Callable[[Path, int], None]]:
    """Mount a tmpfs of a given size over a directory (the server OS user's), unmounted after."""
    mounted: list[Path] = []

    def mount(path: Path, size_mb: int) -> None:
        owner = pwd.getpwnam(server_os_user())
        options = f"size={size_mb}m,mode=0700,uid={owner.pw_uid},gid={owner.pw_gid}"
        LOCAL.run(["mount", "-t", "tmpfs", "-o", options, "runbook-test-archive", str(path)])
        mounted.append(path)

    yield mount
    for path in mounted:
        LOCAL.run(["umount", "--lazy", str(path)], check=False)


def wait_failures(cfg: standby.StandbyConfig, more_than: int) -> dict:
    with connect(cfg.primary()) as conn:
        return wait_until(
            lambda: archiver_stats(conn),
            lambda s: s["failed_count"] > more_than,
            what="the archiver to fail again",
            timeout_s=60,
        )


def standby_status_cli(lab_parameters: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "runbook_lib.cli", "standby-status", "-f", str(lab_parameters)]
    argv += ["--observe", "0", "--no-heartbeat"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_full_archive_fails_cleanly_is_reported_and_archiving_resumes(
    lab_factory, small_archive_mount
):
    lab = lab_factory("ws-full-archive")
    cfg = standby.validate(**{**warm_standby_parameters(lab), "failover_drill": False})
    standby.configure_archiving(cfg)
    small_archive_mount(lab.archive_dir, 20)  # one 16 MB segment fits, the next does not
    with connect(cfg.primary()) as conn:
        switch_and_wait_archived(conn, timeout_s=60)
        before = archiver_stats(conn)["failed_count"]
        conn.execute("CREATE TABLE IF NOT EXISTS incident_marker (note text)")
        conn.execute("INSERT INTO incident_marker VALUES ('written while the archive is full')")
        with pytest.raises(PreconditionError, match="archive_command failed"):
            switch_and_wait_archived(conn, timeout_s=60)
        failing_wal = archiver_stats(conn)["last_failed_wal"]
    stats = wait_failures(cfg, before + 2)  # several attempts, each one cleaned up after itself
    assert stats["failing"] and stats["last_failed_wal"] == failing_wal
    assert [n for n in os.listdir(lab.archive_dir) if n.startswith(".")] == []
    with connect(cfg.primary()) as conn:
        kept = conn.execute(
            "SELECT count(*) AS n FROM pg_catalog.pg_ls_waldir() WHERE name = %s", [failing_wal]
        ).fetchone()["n"]
    assert kept == 1, "the primary keeps the segment it could not archive"

    checks = standby.preflight(cfg).checks  # no free-space demand stops it during the incident
    space = checks.set_index("check").loc["archive_dir free space"]
    assert space["ok"] and int(space["observed"].split()[0]) < 20

    report = standby_status_cli(lab.parameters_dir / "warm_standby.yaml")
    assert report.returncode == 1, report.stderr
    assert "archiving is FAILING" in report.stdout
    assert failing_wal in report.stdout, "the report names the segment that fails"
    assert "MB free" in report.stdout

    LOCAL.run(["mount", "-o", "remount,size=200m", str(lab.archive_dir)])
    with connect(cfg.primary()) as conn:
        switch_and_wait_archived(conn, timeout_s=90)
        assert not archiver_stats(conn)["failing"]
    assert failing_wal in os.listdir(lab.archive_dir)
    assert [n for n in os.listdir(lab.archive_dir) if n.startswith(".")] == []
    assert standby_status_cli(lab.parameters_dir / "warm_standby.yaml").stdout.count("FAILING") == 0


def test_setting_archiving_up_needs_room_in_the_archive_and_changes_nothing_without(
    lab_factory, small_archive_mount
):
    lab = lab_factory("ws-archive-small")
    small_archive_mount(lab.archive_dir, 20)
    cfg = standby.validate(**{**warm_standby_parameters(lab), "failover_drill": False})
    checks = standby.preflight(cfg).checks.set_index("check")
    assert "LOW" in checks.loc["archive_dir free space", "note"]
    with connect(cfg.primary()) as conn:
        before = conn.execute("SELECT pg_catalog.current_setting('archive_mode') AS m").fetchone()
        tools = primary_tools_dir(conn)
    with pytest.raises(PreconditionError, match="setting archiving up needs at least 1024 MB"):
        standby.configure_archiving(cfg)
    with connect(cfg.primary()) as conn:
        after = conn.execute("SELECT pg_catalog.current_setting('archive_mode') AS m").fetchone()
    assert before == after
    assert not Path(tools).exists(), "nothing installed either"
