"""Free space, checked by the steps that need it and only there: during an incident (a full
archive) preflight and the status report must still run and say what they see."""

from __future__ import annotations

from pathlib import PurePosixPath

import psycopg

from runbook_lib.errors import PreconditionError
from runbook_lib.host import LocalHost

MIN_ARCHIVE_FREE_MB = 1024  # when archiving is first set up: room for the first hours of WAL
BACKUP_MARGIN = 1.1  # a base backup needs the primary's size plus WAL written meanwhile
BACKUP_EXTRA_MB = 256


def free_mb(host: LocalHost, path: PurePosixPath) -> int:
    return host.free_bytes(path) // 2**20


def primary_size_mb(conn: psycopg.Connection) -> int:
    row = conn.execute(
        "SELECT sum(pg_catalog.pg_database_size(oid))::bigint AS b FROM pg_catalog.pg_database"
    ).fetchone()
    return int(row["b"]) // 2**20


def backup_need_mb(primary_mb: int) -> int:
    return int(primary_mb * BACKUP_MARGIN) + BACKUP_EXTRA_MB


def require_free(host: LocalHost, path: PurePosixPath, need_mb: int, what: str) -> None:
    """Stop a step (nothing changed yet) when path's file system has less than need_mb free."""
    have = free_mb(host, path)
    if have < need_mb:
        raise PreconditionError(
            f"{path} on {host.name} has {have} MB free; {what} needs at least {need_mb} MB: "
            "free space there (or choose another place), then re-run this step; nothing was "
            "changed"
        )
