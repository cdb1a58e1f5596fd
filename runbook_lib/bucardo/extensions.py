"""Extensions the source database has that the target server cannot create.

The schema copy restores every extension of the source (pg_dump writes CREATE EXTENSION for each),
so one the target's installation lacks would stop pg_restore after the target database was made.
Typical in an upgrade: 17 dropped adminpack and old_snapshot; a contrib or third-party package
(postgis, pg_partman...) installed for the old major only."""

from __future__ import annotations

import psycopg


def source_extensions(conn: psycopg.Connection) -> dict[str, str]:
    """name -> installed version, in the source database."""
    rows = conn.execute(
        "SELECT extname, extversion FROM pg_catalog.pg_extension ORDER BY extname"
    ).fetchall()
    return {r["extname"]: r["extversion"] for r in rows}


def missing_on_target(extensions: dict[str, str], dst: psycopg.Connection) -> list[str]:
    """The extensions, of those given, that the target server has no control file for."""
    available = dst.execute(
        "SELECT name FROM pg_catalog.pg_available_extensions WHERE name = ANY(%s)",
        [list(extensions)],
    ).fetchall()
    return sorted(set(extensions) - {r["name"] for r in available})
