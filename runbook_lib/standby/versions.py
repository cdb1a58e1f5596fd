"""The standby runs the primary's major version: its server programs (pg_ctl, postgres,
pg_archivecleanup) are found for that major, pg_basebackup is at least as new, and settings that
exist only in some majors are written only for those."""

from __future__ import annotations

from pathlib import Path

from runbook_lib import pgbin, pgversions, record
from runbook_lib.cluster import server_os_user
from runbook_lib.connection import server_major
from runbook_lib.errors import RunbookError
from runbook_lib.host import LOCAL
from runbook_lib.standby import machines
from runbook_lib.standby.config import StandbyConfig

RECOVERY_PREFETCH_SINCE = 15  # the setting exists from PostgreSQL 15 on


def primary_major(cfg: StandbyConfig) -> int:
    return server_major(cfg.primary("postgres"))


def standby_datadir_major(cfg: StandbyConfig) -> int | None:
    """PG_VERSION of the standby's data directory, once a base backup is there."""
    path = cfg.standby_datadir / "PG_VERSION"
    if not cfg.standby_os_host.exists(path):
        return None
    return int(cfg.standby_os_host.read_text(path, user=server_os_user()).strip())


def standby_major(cfg: StandbyConfig) -> int:
    """The standby's major version: its data directory's, else (before the backup) the primary's."""
    found = standby_datadir_major(cfg)
    return found if found is not None else primary_major(cfg)


def standby_bindir(cfg: StandbyConfig) -> Path:
    """Server programs of the standby's major version on the standby's host."""
    return Path(str(machines.server_bindir(cfg.standby_os_host, standby_major(cfg))))


def pg_basebackup(cfg: StandbyConfig) -> str:
    """pg_basebackup at least as new as the primary, on the standby's machine (there, the
    primary's own major version)."""
    host = cfg.standby_os_host
    if host is LOCAL:
        path = pgbin.client("pg_basebackup", [primary_major(cfg)])
        version = pgbin.version_text(path)
    else:
        path = machines.pg_program(host, "pg_basebackup", primary_major(cfg))
        version = host.run([path, "--version"], check=False).stdout.strip() or None
    record.record_program("pg_basebackup", path, version, host=host.name)
    return path


def mismatch(cfg: StandbyConfig) -> str | None:
    """Why the standby cannot run the primary's version here, or None."""
    try:
        major = primary_major(cfg)
        pgversions.require_supported(major * 10000, f"the primary {cfg.primary()}")
        machines.server_bindir(cfg.standby_os_host, major)
    except RunbookError as exc:
        return str(exc)
    found = standby_datadir_major(cfg)
    if found is not None and found != major:
        return (
            f"{cfg.standby_datadir} holds a PostgreSQL {found} data directory but the primary "
            f"runs {major}: a WAL-archiving standby needs the same major version on both sides"
        )
    return None
