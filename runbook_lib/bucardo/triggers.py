"""Bucardo's triggers on the replicated tables, installed one table at a time with short locks.

Left to itself, Bucardo creates the triggers of every table of a sync inside one transaction per
database (`add sync`, and again `update sync autokick=1`): each CREATE TRIGGER takes a SHARE ROW
EXCLUSIVE lock on its table and keeps it until the end, so application transactions that write to
several tables queue behind it or deadlock with it (seen: `deadlock detected` in the application).
Bucardo only checks the triggers by name, so the runbook creates them first, each table in its own
short transaction (runbook_lib.locks), and Bucardo finds nothing left to lock:

1. before `add sync`: `bucardo_delta` and the truncate trigger, pointing at a placeholder that does
   nothing (Bucardo's capture functions do not exist yet);
2. after `add sync`: the same triggers replaced by Bucardo's own functions (CREATE OR REPLACE
   TRIGGER): capture starts table by table, all before the data snapshot;
3. before `update sync autokick=1`: the kick trigger (Bucardo drops it while autokick is off).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from runbook_lib.bucardo import catalog, ctl, queue
from runbook_lib.bucardo.config import BootstrapConfig
from runbook_lib.connection import Endpoint, connect, server_version_num
from runbook_lib.errors import PartiallyApplied
from runbook_lib.locks import LOCK_TIMEOUT_MS, in_short_lock

DELTA_TRIGGER = "bucardo_delta"
PLACEHOLDER = (catalog.MARKER_SCHEMA, "bucardo_capture_placeholder")
PLACEHOLDER_DDL = sql.SQL(
    "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$"
).format(sql.Identifier(*PLACEHOLDER))
CREATE_OR_REPLACE_TRIGGER = 140000
TRIGGERS_SQL = """
SELECT n.nspname || '.' || c.relname AS table, t.tgname AS trigger,
       pn.nspname || '.' || p.proname AS function
FROM pg_catalog.pg_trigger t
JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
WHERE NOT t.tgisinternal AND t.tgname LIKE 'bucardo%%'
  AND n.nspname || '.' || c.relname = ANY (%s)
"""


def truncate_trigger(sync: str) -> str:
    return f"bucardo_note_trunc_{sync}"


def kick_trigger(sync: str) -> str:
    return f"bucardo_kick_{sync}"


@dataclass(frozen=True)
class TriggerSQL:
    """The statements for one table (names as Bucardo 5.6 makes them)."""

    table: str
    sync: str

    @property
    def _table(self) -> sql.Identifier:
        return catalog.table_ident(self.table)

    def _create(self, replace: bool, name: str, events: str, level: str, func) -> sql.Composed:
        return sql.SQL("CREATE {}TRIGGER {} AFTER {} ON {} FOR EACH {} EXECUTE FUNCTION {}").format(
            sql.SQL("OR REPLACE " if replace else ""),
            sql.Identifier(name),
            sql.SQL(events),
            self._table,
            sql.SQL(level),
            func,
        )

    def placeholders(self) -> list[sql.Composed]:
        func = sql.SQL("{}()").format(sql.Identifier(*PLACEHOLDER))
        return [
            self._create(False, DELTA_TRIGGER, "INSERT OR UPDATE OR DELETE", "ROW", func),
            self._create(False, truncate_trigger(self.sync), "TRUNCATE", "STATEMENT", func),
        ]

    def capture(self, delta_function: str, replace: bool = True) -> list[sql.Composed]:
        delta = sql.SQL("{}()").format(sql.Identifier("bucardo", delta_function))
        trunc = sql.SQL("{}({})").format(
            sql.Identifier("bucardo", "bucardo_note_truncation"), sql.Literal(self.sync)
        )
        return [
            self._create(replace, DELTA_TRIGGER, "INSERT OR UPDATE OR DELETE", "ROW", delta),
            self._create(replace, truncate_trigger(self.sync), "TRUNCATE", "STATEMENT", trunc),
        ]

    def kick(self) -> sql.Composed:
        func = sql.SQL("{}()").format(sql.Identifier("bucardo", kick_trigger(self.sync)))
        return self._create(
            False, kick_trigger(self.sync), "INSERT OR UPDATE OR DELETE OR TRUNCATE", "STATEMENT",
            func,
        )  # fmt: skip


def existing(conn: psycopg.Connection, tables: list[str]) -> dict[str, dict[str, str]]:
    """table -> {Bucardo trigger name: its function 'schema.name'}."""
    found: dict[str, dict[str, str]] = {t: {} for t in tables}
    for r in conn.execute(TRIGGERS_SQL, [tables]):
        found[r["table"]][r["trigger"]] = r["function"]
    return found


def _placeholder_name() -> str:
    return ".".join(PLACEHOLDER)


def _run_each(conn: psycopg.Connection, statements: list[sql.Composed], what: str) -> None:
    def change() -> None:
        for statement in statements:
            conn.execute(statement)

    in_short_lock(conn, change, what)


def install_placeholders(cfg: BootstrapConfig, ep: Endpoint, tables: list[str]) -> list[str]:
    """Step 1 on one database; returns the tables that got them."""
    done = []
    with connect(ep, application_name="runbook_bucardo_triggers") as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
            sql.Identifier(catalog.MARKER_SCHEMA)))  # fmt: skip
        conn.execute(PLACEHOLDER_DDL)
        now = existing(conn, tables)
        for table in tables:
            wanted = TriggerSQL(table, cfg.sync).placeholders()
            missing = [
                s for s, name in zip(wanted, (DELTA_TRIGGER, truncate_trigger(cfg.sync)),
                                     strict=True)
                if name not in now[table]
            ]  # fmt: skip
            if missing:
                _run_each(conn, missing, f"Bucardo's placeholder triggers on {table}")
                done.append(table)
    return done


def delta_functions(conn: psycopg.Connection, sync: str) -> dict[str, str]:
    """table -> the name of Bucardo's capture function for it (the delta table's name)."""
    return {
        catalog.bucardo_table_name(r["tablename"]): catalog.unquote(r["deltaname"])
        for r in queue.delta_names(conn, sync)
    }


def _needs_capture(triggers: dict[str, str], sync: str) -> bool:
    wanted = (DELTA_TRIGGER, truncate_trigger(sync))
    return any(triggers.get(name) in (None, _placeholder_name()) for name in wanted)


def install_capture(cfg: BootstrapConfig, ep: Endpoint, tables: list[str]) -> list[str]:
    """Step 2 on one database (after `add sync`); returns the tables switched to Bucardo's
    capture functions."""
    done = []
    with connect(ep, application_name="runbook_bucardo_triggers") as conn:
        replace = server_version_num(conn) >= CREATE_OR_REPLACE_TRIGGER
        functions = delta_functions(conn, cfg.sync)
        now = existing(conn, tables)
        for table in tables:
            if not _needs_capture(now[table], cfg.sync):
                continue
            if table not in functions:
                raise PartiallyApplied(
                    f"switching on change capture on {ep}",
                    [f"capture on for {t}" for t in done],
                    f"Bucardo made no delta table for {table} (bucardo.bucardo_delta_names has "
                    f"no row for sync {cfg.sync}); see {ctl.log_location(cfg)}",
                )
            statements = TriggerSQL(table, cfg.sync).capture(functions[table], replace=replace)
            if not replace:  # PostgreSQL 13 and older: drop and create in one transaction
                statements = [
                    sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                        sql.Identifier(name), catalog.table_ident(table)
                    )
                    for name in (DELTA_TRIGGER, truncate_trigger(cfg.sync))
                ] + statements
            _run_each(conn, statements, f"Bucardo's capture triggers on {table}")
            done.append(table)
    return done


def install_kick(cfg: BootstrapConfig, ep: Endpoint, tables: list[str]) -> list[str]:
    """Step 3 on one database (before autokick=1); returns the tables that got it."""
    done = []
    with connect(ep, application_name="runbook_bucardo_triggers") as conn:
        now = existing(conn, tables)
        for table in tables:
            if kick_trigger(cfg.sync) not in now[table]:
                _run_each(conn, [TriggerSQL(table, cfg.sync).kick()], f"kick trigger on {table}")
                done.append(table)
    return done


def capture_missing(conn: psycopg.Connection, sync: str, tables: list[str]) -> list[str]:
    """Tables whose changes Bucardo does not capture yet (no trigger, or the placeholder)."""
    now = existing(conn, tables)
    return [t for t in tables if _needs_capture(now[t], sync)]


def plan_line(ep: Endpoint, statements: list[sql.Composed]) -> str:
    body = "; ".join(s.as_string(None) for s in statements)
    return (
        f"on {ep}: BEGIN; SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'; {body}; COMMIT  "
        "# one table per transaction, retried until the lock is free"
    )
