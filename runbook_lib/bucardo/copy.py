"""Step 4: the data, streamed table by table in parallel from one snapshot of the source (taken
after `add sync`, so every later change is in the delta queue) into the target with
session_replication_role=replica (Bucardo's triggers there stay silent); then keys, indexes and
constraints, built once over the loaded data. Nothing is written to disk in between."""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql
from tqdm.auto import tqdm

from runbook_lib.bucardo import catalog, clients, schema, triggers
from runbook_lib.bucardo.config import BootstrapConfig
from runbook_lib.bucardo.objects import replicated_tables
from runbook_lib.bucardo.result import StepResult
from runbook_lib.connection import connect
from runbook_lib.errors import PartiallyApplied, PreconditionError
from runbook_lib.host import LOCAL, display_command

APPLICATION_NAME = "runbook_bucardo_copy"
PROGRESS_INTERVAL_S = 0.5


def _capture_active(cfg: BootstrapConfig, tables: tuple[str, ...]) -> None:
    """Every replicated table logs its changes on the source before the snapshot is taken."""
    with connect(cfg.source) as conn:
        missing = triggers.capture_missing(conn, cfg.sync, list(tables))
    if missing:
        raise PreconditionError(
            f"Bucardo does not capture changes on {sorted(missing)} yet; run the Bucardo objects "
            "step before the data copy (the snapshot must follow `add sync`)"
        )


def _psql(psql: str) -> list[str]:
    return [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1"]


def copy_commands(
    conn: psycopg.Connection, snapshot: str, schema_name: str, table: str, psql: str
) -> tuple[list[str], list[str]]:
    """psql COPY out of the exported snapshot | psql COPY into the target (same column list)."""
    ident = sql.Identifier(schema_name, table)
    columns = catalog.copy_columns(conn, schema_name, table)
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    binary = catalog.binary_copy_safe(conn, schema_name, table)
    out_options = sql.SQL(" (FORMAT binary)" if binary else "")
    # FREEZE: rows arrive frozen (the TRUNCATE in the same transaction allows it), so index
    # builds, the FK checks and every later scan skip setting hint bits on the whole table
    in_options = sql.SQL(" (FORMAT binary, FREEZE)" if binary else " (FREEZE)")
    copy_out = sql.SQL("COPY {} ({}) TO STDOUT{}").format(ident, cols, out_options)
    copy_in = sql.SQL("COPY {} ({}) FROM STDIN{}").format(ident, cols, in_options)
    set_snapshot = sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot))
    producer = [*_psql(psql), "-c", "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
                "-c", set_snapshot.as_string(conn), "-c", copy_out.as_string(conn),
                "-c", "COMMIT"]  # fmt: skip
    truncate = sql.SQL("TRUNCATE ONLY {}").format(ident)
    consumer = [*_psql(psql), "-c", "BEGIN", "-c", truncate.as_string(conn),
                "-c", copy_in.as_string(conn), "-c", "COMMIT"]  # fmt: skip
    return producer, consumer


def plan_copy_data(cfg: BootstrapConfig) -> list[str]:
    """What copy_data would run now (read-only)."""
    marker = schema.target_marker(cfg)
    if marker and marker.reached("keys"):
        return ["nothing: rows, keys and indexes are already on the target"]
    snapshot = "<snapshot exported after add sync>"
    actions = []
    psql = clients.client(cfg, "psql")
    with connect(cfg.source) as src:
        tables = catalog.copyable_tables(src)
        if not (marker and marker.reached("data")):
            actions.append(
                f"on {cfg.source}: BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; "
                "SELECT pg_catalog.pg_export_snapshot()  # held until every copy ends"
            )
            for t in tables:
                producer, consumer = copy_commands(src, snapshot, t["schema"], t["table"], psql)
                actions.append(
                    f"{display_command(producer)} | PGOPTIONS='-c "
                    f"session_replication_role=replica' {display_command(consumer)}"
                )
    actions.append(
        display_command(
            schema.restore_argv(cfg, "post-data", schema.restore_list_path(cfg, "post-data"))
        )
        + "  # keys, indexes, constraints: post-data without Bucardo's triggers and without "
        "what already exists"
    )
    return actions


def _copy_table(cfg: BootstrapConfig, snapshot: str, t: dict[str, Any]) -> dict[str, Any]:
    """COPY out of the source's snapshot piped into COPY into the target (two psql processes:
    no Python in the data path, nothing written to disk)."""
    ident = sql.Identifier(t["schema"], t["table"])
    name = f"{t['schema']}.{t['table']}"
    started = time.monotonic()
    psql = clients.client(cfg, "psql")
    with connect(cfg.source, application_name=APPLICATION_NAME) as src:
        producer, consumer = copy_commands(src, snapshot, t["schema"], t["table"], psql)
    target_env = schema.libpq_env(cfg.target, replica=True)
    target_env["PGAPPNAME"] = f"{APPLICATION_NAME}:{name}"
    LOCAL.pipeline(
        producer, consumer, producer_env=schema.libpq_env(cfg.source), consumer_env=target_env
    )
    with connect(cfg.target, application_name=APPLICATION_NAME) as dst:
        rows = dst.execute(sql.SQL("SELECT count(*) AS n FROM ONLY {}").format(ident)).fetchone()[
            "n"
        ]
    seconds = time.monotonic() - started
    return {
        "table": name,
        "rows": rows,
        "seconds": round(seconds, 3),
        "mb": round(t["bytes"] / 2**20, 2),
        "rows_per_s": round(rows / seconds) if seconds > 0 else None,
    }


def _rows_in_flight(cfg: BootstrapConfig) -> int:
    """Rows loaded so far by the copies running now (pg_stat_progress_copy on the target)."""
    with connect(cfg.target) as conn:
        return conn.execute(
            """SELECT coalesce(sum(p.tuples_processed), 0)::bigint AS n
               FROM pg_catalog.pg_stat_progress_copy p
               JOIN pg_catalog.pg_stat_activity a ON a.pid = p.pid
               WHERE a.application_name LIKE %s""",
            [APPLICATION_NAME + ":%"],
        ).fetchone()["n"]


def copy_data(cfg: BootstrapConfig, *, progress: bool = True) -> StepResult:
    """Copy every table's rows from a snapshot taken now (after `add sync`), then build keys."""
    with connect(cfg.target_admin) as admin:
        marker = catalog.read_marker(admin, cfg.pgdatabase)
    if not marker or not marker.reached("schema"):
        raise PreconditionError("the target has no structure yet; run the target schema step first")
    if marker.reached("keys"):
        return StepResult(
            "data copy", "rows, keys and indexes already on the target", already_done=True
        )
    copied = pd.DataFrame()
    if not marker.reached("data"):
        _capture_active(cfg, replicated_tables(cfg))
        copied = _copy_all(cfg, progress)
        with connect(cfg.target_admin) as admin:
            catalog.write_marker(admin, cfg, "data")
    t0 = time.monotonic()
    built = schema.restore_post_data(cfg)
    post_s = time.monotonic() - t0
    _check_keys(cfg)
    with connect(cfg.target_admin) as admin:
        catalog.write_marker(admin, cfg, "keys")
    total_rows = int(copied["rows"].sum()) if len(copied) else 0
    copy_s = float(copied.attrs.get("seconds", 0.0))
    return StepResult(
        "data copy",
        f"{total_rows} rows in {len(copied)} tables copied in {copy_s:.1f} s "
        f"({cfg.copy_jobs} jobs); {built} keys/indexes/constraints built in {post_s:.1f} s",
        tables={"tables": copied},
    )


def _copy_all(cfg: BootstrapConfig, progress: bool) -> pd.DataFrame:
    with connect(cfg.source) as src:
        tables = catalog.copyable_tables(src)
    started = time.monotonic()
    bar = tqdm(
        total=sum(t["estimated_rows"] for t in tables),
        unit="rows",
        desc="copy",
        disable=not progress,
    )
    results: list[dict[str, Any]] = []
    # the exporting transaction must stay open until every worker has imported the snapshot
    with connect(cfg.source, application_name=APPLICATION_NAME) as holder, holder.transaction():
        holder.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snapshot = holder.execute("SELECT pg_catalog.pg_export_snapshot() AS s").fetchone()["s"]
        try:
            with ThreadPoolExecutor(max_workers=cfg.copy_jobs) as pool:
                pending = {pool.submit(_copy_table, cfg, snapshot, t) for t in tables}
                while pending:
                    done, pending = wait(
                        pending, timeout=PROGRESS_INTERVAL_S, return_when=FIRST_COMPLETED
                    )
                    results.extend(f.result() for f in done)
                    loaded = sum(r["rows"] for r in results) + _rows_in_flight(cfg)
                    bar.update(max(0, loaded - bar.n))
        finally:
            bar.close()
    df = pd.DataFrame(results).sort_values("table").reset_index(drop=True)
    df.attrs["seconds"] = time.monotonic() - started
    return df


def _check_keys(cfg: BootstrapConfig) -> None:
    with connect(cfg.target) as conn:
        rows = {r["name"]: r for r in catalog.relations(conn)}
    no_key = [
        t
        for t in replicated_tables(cfg)
        if t not in rows or not (rows[t]["primary_key"] or rows[t]["has_unique_index"])
    ]
    if no_key:
        raise PartiallyApplied(
            "the data copy step",
            ["the rows copied", "the other keys, indexes and constraints built"],
            f"the target still lacks keys on {no_key} after post-data (see the pg_restore "
            "error above)",
        )
