"""Retire step: Bucardo's triggers, functions and schema leave both masters, with the bootstrap's
helper schema (its marker table and trigger placeholder) and its progress marker.

Dropping a trigger locks its table (ACCESS EXCLUSIVE) until commit, and DROP SCHEMA ... CASCADE
would drop every trigger in one transaction, queueing or deadlocking application transactions
that write several tables. So each table's triggers go in their own short transaction
(runbook_lib.locks: a lock_timeout far below deadlock_timeout, retried), and the schemas are
dropped only once no table uses them: the application waits a moment at most, never fails."""

from __future__ import annotations

import pandas as pd
import psycopg
from psycopg import sql

from runbook_lib.bucardo import catalog, retire_leftovers, retire_state
from runbook_lib.bucardo.result import StepResult
from runbook_lib.bucardo.retire_config import RetireConfig
from runbook_lib.connection import Endpoint, connect
from runbook_lib.errors import PartiallyApplied, PreconditionError, RunbookError
from runbook_lib.locks import LOCK_TIMEOUT_MS, in_short_lock

SCHEMAS = ("bucardo", retire_leftovers.BOOTSTRAP_SCHEMA)


def drop_trigger_sql(table: str, trigger: str) -> sql.Composed:
    return sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
        sql.Identifier(trigger), catalog.table_ident(table)
    )


def drop_schema_sql(schema: str) -> sql.Composed:
    return sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))


def _by_table(conn: psycopg.Connection) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in retire_leftovers.triggers(conn):
        out.setdefault(r["table"], []).append(r["trigger"])
    return out


def _clear_bootstrap_marker(conn: psycopg.Connection, dbname: str) -> bool:
    if catalog.read_marker(conn, dbname) is None:
        return False
    conn.execute(sql.SQL("COMMENT ON DATABASE {} IS NULL").format(sql.Identifier(dbname)))
    return True


def clean_master(name: str, ep: Endpoint, done: list[str]) -> dict[str, int]:
    """Remove everything of Bucardo from one master; counts of what was removed."""
    removed = {"tables": 0, "schemas": 0, "marker": 0}
    with connect(ep, application_name="runbook_bucardo_retire") as conn:
        for table, names in _by_table(conn).items():
            in_short_lock(
                conn,
                lambda t=table, ns=names: [conn.execute(drop_trigger_sql(t, n)) for n in ns],
                f"dropping Bucardo's triggers on {table} ({name})",
            )
            removed["tables"] += 1
            done.append(f"{name}: triggers dropped on {table}")
        for schema in SCHEMAS:
            if catalog.schema_exists(conn, schema):
                in_short_lock(conn, lambda s=schema: conn.execute(drop_schema_sql(s)),
                              f"DROP SCHEMA {schema} on {name}")  # fmt: skip
                removed["schemas"] += 1
                done.append(f"{name}: schema {schema} dropped")
        if _clear_bootstrap_marker(conn, ep.dbname):
            removed["marker"] = 1
            done.append(f"{name}: the bootstrap's marker comment cleared")
    return removed


def remove_from_masters(cfg: RetireConfig) -> StepResult:
    """Both masters: triggers one table at a time, then the schemas; verified empty after."""
    record = retire_state.read(cfg)
    if record is None or not record.reached("proven"):
        raise PreconditionError(
            "the retired copy is not proven equal yet (stop and proof steps): Bucardo's delta "
            "tables are what tells the changes since the stop apart; nothing was changed"
        )
    done: list[str] = []
    rows = []
    for name, ep in cfg.sides().items():
        try:
            removed = clean_master(name, ep, done)
        except (RunbookError, psycopg.Error) as exc:
            if not done:
                raise
            raise PartiallyApplied(f"removing Bucardo from {name}", done, str(exc)) from exc
        with connect(ep, application_name="runbook_bucardo_retire") as conn:
            left = retire_leftovers.on_master(conn)
        if any(left.values()):
            raise PartiallyApplied(f"removing Bucardo from {name}", done, f"still there: {left}")
        rows.append({"database": name, "tables cleared": removed["tables"],
                     "schemas dropped": removed["schemas"], "left": "nothing"})  # fmt: skip
    return StepResult(
        "remove from both databases",
        f"Bucardo's triggers, functions and schema removed ({len(done)} changes)"
        if done
        else "nothing of Bucardo is left on either database",
        already_done=not done,
        tables={"databases": pd.DataFrame(rows)},
    )


def plan_remove(cfg: RetireConfig) -> list[str]:
    actions = []
    for ep in cfg.sides().values():
        with connect(ep, application_name="runbook_bucardo_retire") as conn:
            for table, names in _by_table(conn).items():
                body = "; ".join(drop_trigger_sql(table, n).as_string(conn) for n in names)
                actions.append(
                    f"on {ep}: BEGIN; SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'; {body}; "
                    "COMMIT  # one table per transaction, retried until the lock is free"
                )
            for schema in SCHEMAS:
                if catalog.schema_exists(conn, schema):
                    actions.append(f"on {ep}: {drop_schema_sql(schema).as_string(conn)}")
            if catalog.read_marker(conn, ep.dbname):
                actions.append(f"on {ep}: COMMENT ON DATABASE {ep.dbname} IS NULL  # the "
                               "bootstrap's progress marker")  # fmt: skip
    return actions
