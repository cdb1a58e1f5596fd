"""What of Bucardo (and of the bootstrap's helpers) is still on a master or in the control
database: read-only, used by preflight, the removal steps and the final check."""

from __future__ import annotations

from typing import Any

import psycopg

from runbook_lib.bucardo import catalog
from runbook_lib.bucardo.config import BootstrapConfig

BOOTSTRAP_SCHEMA = catalog.MARKER_SCHEMA  # the bootstrap's marker table and trigger placeholder

TRIGGERS_SQL = """
SELECT n.nspname || '.' || c.relname AS table, t.tgname AS trigger
FROM pg_catalog.pg_trigger t
JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
WHERE NOT t.tgisinternal
  AND (t.tgname LIKE 'bucardo%%' OR pn.nspname IN ('bucardo', %(helpers)s))
  AND n.nspname NOT IN ('bucardo', %(helpers)s)
ORDER BY 1, 2
"""
FUNCTIONS_SQL = """
SELECT n.nspname || '.' || p.proname AS function
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname IN ('bucardo', %(helpers)s) OR p.proname LIKE 'bucardo%%'
ORDER BY 1
"""
SCHEMAS_SQL = """
SELECT nspname AS schema FROM pg_catalog.pg_namespace
WHERE nspname IN ('bucardo', %(helpers)s) ORDER BY 1
"""


def triggers(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Bucardo's triggers on user tables (by name, or calling a function of its schema)."""
    return conn.execute(TRIGGERS_SQL, {"helpers": BOOTSTRAP_SCHEMA}).fetchall()


def on_master(conn: psycopg.Connection) -> dict[str, list[str]]:
    """Every Bucardo schema, trigger and function left on one master."""
    args = {"helpers": BOOTSTRAP_SCHEMA}
    return {
        "schemas": [r["schema"] for r in conn.execute(SCHEMAS_SQL, args)],
        "triggers": [f"{r['trigger']} on {r['table']}" for r in triggers(conn)],
        "functions": [r["function"] for r in conn.execute(FUNCTIONS_SQL, args)],
    }


def syncs_on_master(conn: psycopg.Connection) -> list[str]:
    """The syncs whose changes Bucardo captures on this master."""
    if not catalog.schema_exists(conn, "bucardo"):
        return []
    rows = conn.execute("SELECT DISTINCT sync FROM bucardo.bucardo_delta_names ORDER BY 1")
    return [r["sync"] for r in rows]


def in_control(conn: psycopg.Connection, cfg: BootstrapConfig) -> dict[str, list[str]]:
    """This bootstrap's objects still in Bucardo's control database."""
    if not catalog.control_installed(conn):
        return {}
    state = catalog.control_state(conn, cfg)
    found = {
        "sync": [cfg.sync] if state["sync"] else [],
        "relgroup": [cfg.relgroup] if state["relgroup"] else [],
        "dbgroup": [cfg.dbgroup] if state["dbgroup"] is not None else [],
        "db": sorted(state["dbs"]),
    }
    return {k: v for k, v in found.items() if v}


STALE_RUNS_SQL = "DELETE FROM bucardo.dbrun WHERE sync = %s"


def running_entries(conn: psycopg.Connection, cfg: BootstrapConfig) -> int:
    """Rows of bucardo.dbrun (Bucardo's note of a run in progress) for this sync: none may be
    left once its daemon is stopped (one killed mid-run leaves them behind)."""
    if not catalog.control_installed(conn):
        return 0
    return conn.execute(
        "SELECT count(*) AS n FROM bucardo.dbrun WHERE sync = %s", [cfg.sync]
    ).fetchone()["n"]


def other_syncs(conn: psycopg.Connection, cfg: BootstrapConfig) -> list[str]:
    """Syncs of the control database other than this one (the daemon serves them too)."""
    if not catalog.control_installed(conn):
        return []
    rows = conn.execute("SELECT name FROM bucardo.sync WHERE name <> %s ORDER BY 1", [cfg.sync])
    return [r["name"] for r in rows]
