"""The delta queue: pending changes per table on each master, read from Bucardo's own tables
(names from bucardo.bucardo_delta_names, never built), and whether the sync has caught up."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql

from runbook_lib.bucardo import catalog
from runbook_lib.bucardo.config import BootstrapConfig
from runbook_lib.connection import connect

QUEUE_COLUMNS = ["db", "table", "pending_rows", "oldest_pending_s", "pending_before_mark"]


def delta_names(conn: psycopg.Connection, sync: str) -> list[dict[str, Any]]:
    if not catalog.schema_exists(conn, "bucardo"):
        return []
    return conn.execute(
        "SELECT tablename, deltaname, trackname FROM bucardo.bucardo_delta_names "
        "WHERE sync = %s ORDER BY tablename",
        [sync],
    ).fetchall()


def delta_names_of(cfg: BootstrapConfig) -> list[dict[str, Any]]:
    """The sync's tables as Bucardo's capture on `here` knows them."""
    with connect(cfg.source, application_name="runbook_bucardo_queue") as conn:
        return delta_names(conn, cfg.sync)


def _pending_sql(deltaname: str, trackname: str) -> sql.Composed:
    return sql.SQL(
        """SELECT count(*) AS pending_rows,
                  extract(epoch FROM now() - min(d.txntime))::float8 AS oldest_pending_s,
                  count(*) FILTER (WHERE d.txntime <= %(mark)s) AS pending_before_mark
           FROM {delta} d
           WHERE NOT EXISTS (SELECT 1 FROM {track} t
                             WHERE t.txntime = d.txntime AND t.target = %(target)s)"""
    ).format(
        delta=sql.Identifier("bucardo", catalog.unquote(deltaname)),
        track=sql.Identifier("bucardo", catalog.unquote(trackname)),
    )


def _stage_rows(conn: psycopg.Connection, trackname: str) -> int:
    name = catalog.unquote(trackname)
    if not name.startswith("track_"):
        return 0
    stage = "stage_" + name[len("track_") :]
    exists = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL AS ok",
        [sql.Identifier("bucardo", stage).as_string(conn)],
    ).fetchone()["ok"]
    if not exists:
        return 0
    return conn.execute(
        sql.SQL("SELECT count(*) AS n FROM {}").format(sql.Identifier("bucardo", stage))
    ).fetchone()["n"]


Mark = datetime | dict[str, datetime]  # one instant, or one per database (each on its own clock)


def _mark_of(mark: Mark | None, db: str) -> datetime:
    m = mark.get(db) if isinstance(mark, dict) else mark
    return m or datetime.max.replace(tzinfo=None)


def queue_rows(cfg: BootstrapConfig, mark: Mark | None = None) -> list[dict[str, Any]]:
    rows = []
    for name, ep in cfg.databases().items():
        with connect(ep, application_name="runbook_bucardo_queue") as conn:
            for d in delta_names(conn, cfg.sync):
                r = conn.execute(
                    _pending_sql(d["deltaname"], d["trackname"]),
                    {"mark": _mark_of(mark, name), "target": cfg.delta_target},
                ).fetchone()
                rows.append(
                    {
                        "db": name,
                        "table": d["tablename"],
                        **r,
                        "stage_rows": _stage_rows(conn, d["trackname"]),
                    }
                )
    return rows


def delta_queue(cfg: BootstrapConfig) -> pd.DataFrame:
    """Pending (not yet replicated) delta rows per table on each database."""
    rows = queue_rows(cfg)
    df = pd.DataFrame(rows, columns=[*QUEUE_COLUMNS, "stage_rows"])
    return df.drop(columns=["pending_before_mark"])


@dataclass(frozen=True)
class SyncState:
    pending: dict[str, int]  # per database
    pending_before_mark: int
    stage_rows: int
    running: int
    last_status: str | None
    last_bad: bool
    last_details: str | None

    @property
    def total_pending(self) -> int:
        return sum(self.pending.values())

    def caught_up(self, strict: bool) -> bool:
        """strict: nothing pending anywhere, no run in progress (a quiet source). Otherwise:
        every change logged before the mark is replicated (writes may keep flowing)."""
        if self.last_bad:
            return False
        if strict:
            return self.total_pending == 0 and self.stage_rows == 0 and self.running == 0
        return self.pending_before_mark == 0

    def __repr__(self) -> str:
        return (
            f"pending={self.pending} before_mark={self.pending_before_mark} "
            f"stage={self.stage_rows} running={self.running} last={self.last_status!r}"
            + (f" FAILED: {self.last_details!r}" if self.last_bad else "")
        )


def sync_state(cfg: BootstrapConfig, mark: Mark | None = None) -> SyncState:
    rows = queue_rows(cfg, mark)
    pending: dict[str, int] = {cfg.here: 0, cfg.there: 0}
    for r in rows:
        pending[r["db"]] += r["pending_rows"]
    with connect(cfg.control, application_name="runbook_bucardo_queue") as conn:
        running = conn.execute(
            "SELECT count(*) AS n FROM bucardo.syncrun WHERE sync = %s AND ended IS NULL",
            [cfg.sync],
        ).fetchone()["n"]
        last = conn.execute(
            "SELECT lastbad, status, details FROM bucardo.syncrun WHERE sync = %s "
            "AND ended IS NOT NULL ORDER BY ended DESC LIMIT 1",
            [cfg.sync],
        ).fetchone()
    return SyncState(
        pending=pending,
        pending_before_mark=sum(r["pending_before_mark"] for r in rows)
        if mark
        else sum(pending.values()),
        stage_rows=sum(r["stage_rows"] for r in rows),
        running=running,
        last_status=last["status"] if last else None,
        last_bad=bool(last and last["lastbad"]),
        last_details=last["details"] if last else None,
    )


def now_on(cfg: BootstrapConfig) -> dict[str, datetime]:
    out = {}
    for name, ep in cfg.databases().items():
        with connect(ep) as conn:
            out[name] = conn.execute("SELECT clock_timestamp() AS t").fetchone()["t"]
    return out
