"""Step 1: read-only checks before anything changes."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from runbook_lib import pgbin, pgversions
from runbook_lib.connection import connect, server_version_num, server_version_text
from runbook_lib.display import TextWithTables
from runbook_lib.errors import PreconditionError, RunbookError
from runbook_lib.ports import port_accepts
from runbook_lib.standby import versions
from runbook_lib.standby.archiving import archiving_plan
from runbook_lib.standby.config import StandbyConfig

MIN_FREE_MB = 1024


@dataclass
class Preflight(TextWithTables):
    checks: pd.DataFrame
    restart_needed: list[str]

    def __repr__(self) -> str:
        lines = [self.checks.to_string(index=False)]
        if self.restart_needed:
            lines.append(
                "the archiving step will RESTART the primary: " + "; ".join(self.restart_needed)
            )
        return "\n".join(lines)


def _check(rows: list[dict], check: str, ok: bool, observed: object, note: str = "") -> None:
    rows.append({"check": check, "ok": bool(ok), "observed": str(observed), "note": note})


def _primary_checks(cfg: StandbyConfig, rows: list[dict]) -> list[str]:
    try:
        conn = connect(cfg.primary())
    except RunbookError as exc:
        _check(rows, "primary reachable", False, exc)
        return []
    with conn:
        _check(rows, "primary reachable", True, cfg.primary())
        superuser = conn.execute(
            "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user"
        ).fetchone()["rolsuper"]
        _check(
            rows,
            "superuser",
            superuser,
            cfg.pgsuperuser,
            "" if superuser else "ALTER SYSTEM, pg_switch_wal and pg_basebackup need a superuser",
        )
        version = server_version_num(conn)
        shown = server_version_text(conn)
        supported = version // 10000 in pgversions.SUPPORTED_MAJORS
        first, last = pgversions.SUPPORTED_MAJORS[0], pgversions.SUPPORTED_MAJORS[-1]
        _check(rows, "server version", supported, shown, f"needs {first} to {last}")
        if not supported:
            return []
        plan = archiving_plan(cfg, conn)
        restart = []
        for r in plan.itertuples():
            note = "unchanged"
            if r.change:
                note = "will change" + (
                    " (needs a RESTART of the primary)" if r.needs_restart else " (reload)"
                )
                if r.needs_restart:
                    restart.append(f"{r.setting} {r.current} -> {r.wanted}")
            _check(rows, f"setting {r.setting}", True, r.current, note)
        if restart and not cfg.restart_primary_command:
            _check(
                rows,
                "restart_primary_command",
                False,
                "(empty)",
                "the primary needs a restart for archiving: set restart_primary_command",
            )
        return restart


def _version_checks(cfg: StandbyConfig, rows: list[dict]) -> None:
    """The standby can run the primary's major version here (programs, data directory)."""
    problem = versions.mismatch(cfg)
    if problem:
        _check(rows, "standby version", False, problem, "same major version on both sides")
        return
    major = versions.primary_major(cfg)
    _check(rows, "standby version", True, f"PostgreSQL {major}", str(cfg.standby_cluster().bindir))


def _local_checks(cfg: StandbyConfig, rows: list[dict]) -> None:
    host = cfg.standby_os_host
    archive = cfg.archive_dir
    _check(
        rows,
        "archive_dir exists",
        host.exists(archive),
        archive,
        "" if host.exists(archive) else "create it, owned by the server's OS user",
    )
    free_mb = host.free_bytes(archive) // 2**20
    _check(
        rows,
        "archive_dir free space",
        free_mb >= MIN_FREE_MB,
        f"{free_mb} MB",
        f"at least {MIN_FREE_MB} MB",
    )
    try:
        cluster = cfg.standby_cluster()
    except RunbookError:
        cluster = None  # the primary's version is unknown or has no programs here: see above
    datadir = cfg.standby_datadir
    running = cluster is not None and cluster.is_running()
    built = host.exists(datadir / "PG_VERSION")
    empty = not host.exists(datadir) or not host.list_dir(datadir)
    _check(
        rows,
        "standby_datadir empty",
        empty or built,
        datadir,
        "already holds the standby (later steps skip the backup)"
        if built
        else ("" if empty else "not empty: choose an empty or absent directory"),
    )
    _check(rows, "standby_datadir parent exists", host.exists(datadir.parent), datadir.parent)
    free_mb = host.free_bytes(datadir) // 2**20
    _check(
        rows,
        "standby_datadir free space",
        free_mb >= MIN_FREE_MB,
        f"{free_mb} MB",
        f"at least {MIN_FREE_MB} MB and the primary's size",
    )
    port_ok = running or not port_accepts(cfg.standby_port)
    _check(
        rows,
        "standby_port free",
        port_ok,
        cfg.standby_port,
        "the standby listens there already"
        if running
        else ("" if port_ok else "another program listens there"),
    )
    if cfg.waiting:
        _check(
            rows,
            "trigger_file absent",
            not host.exists(cfg.trigger_file),
            cfg.trigger_file,
            "a stale trigger ends recovery at once",
        )
        _check(
            rows,
            "trigger_file directory",
            host.exists(cfg.trigger_file.parent),
            cfg.trigger_file.parent,
            "must be writable by the server's OS user",
        )
    _check(
        rows,
        "server_python",
        host.exists(cfg.server_python),
        cfg.server_python,
        "runs the WAL commands as the server's OS user",
    )
    if cluster is None:
        return
    for program, find in (
        ("pg_basebackup", lambda: versions.pg_basebackup(cfg)),
        ("pg_archivecleanup", lambda: pgbin.program("pg_archivecleanup", cluster.bindir)),
    ):
        try:
            path, ok = find(), True
        except RunbookError as exc:
            path, ok = str(exc), False
        _check(rows, program, ok, path)


def preflight(cfg: StandbyConfig) -> Preflight:
    """Step 1: primary reachable as superuser, WAL and archive settings (and whether a restart is
    needed), free space, standby port free, standby data directory empty. Changes nothing."""
    rows: list[dict] = []
    restart = _primary_checks(cfg, rows)
    if rows[0]["ok"]:
        _version_checks(cfg, rows)
    _local_checks(cfg, rows)
    checks = pd.DataFrame(rows)
    failed = checks[~checks["ok"]]
    if len(failed):
        detail = "; ".join(f"{r.check}: {r.observed} {r.note}".strip() for r in failed.itertuples())
        raise PreconditionError(f"preflight failed ({len(failed)} checks): {detail}")
    return Preflight(checks, restart)
