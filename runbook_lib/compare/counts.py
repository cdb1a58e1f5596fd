"""Exact row counts on both servers at once, next to the planner's estimate."""

from __future__ import annotations

import pandas as pd
from psycopg import sql

from runbook_lib.compare.names import parse_table_name
from runbook_lib.compare.parallel import on_both
from runbook_lib.compare.session import Side, open_sides
from runbook_lib.connection import Endpoint


def _counts(side: Side, tables: list[tuple[str, str]]) -> list[tuple[int | None, float | None]]:
    out: list[tuple[int | None, float | None]] = []
    for schema, name in tables:
        rel = side.conn.execute(
            "SELECT c.relkind, c.reltuples FROM pg_catalog.pg_class c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
            [schema, name],
        ).fetchone()
        if rel is None:
            out.append((None, None))
            continue
        only = sql.SQL("ONLY ") if rel["relkind"] == "r" else sql.SQL("")
        query = sql.SQL("SELECT count(*) AS n FROM {}{}").format(only, sql.Identifier(schema, name))
        estimate = float(rel["reltuples"])
        out.append((side.conn.execute(query).fetchone()["n"], estimate if estimate >= 0 else None))
    return out


def row_counts(
    a: Endpoint, b: Endpoint, tables: list[str], *, labels: tuple[str, str] = ("here", "there")
) -> pd.DataFrame:
    """Exact count(*) per table on both servers concurrently.

    Columns: table, rows_<a>, rows_<b>, difference (rows_<a> - rows_<b>), match, and estimate_<a>
    (pg_class.reltuples: far from the count when statistics are stale). A table missing on a
    side has no count there and does not match.
    """
    names = [parse_table_name(t) for t in tables]
    side_a, side_b = open_sides(labels, a, b)
    try:
        ca, cb = on_both(lambda: _counts(side_a, names), lambda: _counts(side_b, names))
    finally:
        side_a.close()
        side_b.close()
    la, lb = labels
    frame = pd.DataFrame(
        {
            "table": tables,
            f"rows_{la}": pd.array([c[0] for c in ca], dtype="Int64"),
            f"rows_{lb}": pd.array([c[0] for c in cb], dtype="Int64"),
        }
    )
    frame["difference"] = frame[f"rows_{la}"] - frame[f"rows_{lb}"]
    frame["match"] = (frame["difference"] == 0).fillna(False).astype(bool)
    frame[f"estimate_{la}"] = pd.array(
        [None if c[1] is None else round(c[1]) for c in ca], dtype="Int64"
    )
    return frame
