"""The retirement's record, kept on the retired database (it takes no writes any more, and is the
database going away): which sync was retired, when replication stopped, and the proof made then
(the retired copy's fingerprint per table). A re-run reads it to know what is done; the final
check reads it to show the retired copy has not changed since."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from runbook_lib.bucardo.retire_config import RetireConfig
from runbook_lib.connection import connect

SCHEMA = "runbook_retire"
TABLE = "state"
STAGES = ("stopped", "proven")
CREATE_SQL = [
    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)),
    sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (sync text PRIMARY KEY, kept text NOT NULL, "
        "stage text NOT NULL, stopped_at timestamptz NOT NULL, proof jsonb)"
    ).format(sql.Identifier(SCHEMA, TABLE)),
]


@dataclass(frozen=True)
class Record:
    sync: str
    kept: str
    stage: str
    stopped_at: datetime
    proof: dict[str, Any] = field(default_factory=dict)

    def reached(self, stage: str) -> bool:
        return STAGES.index(self.stage) >= STAGES.index(stage)


def _exists(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL AS ok",
        [sql.Identifier(SCHEMA, TABLE).as_string(conn)],
    ).fetchone()
    return bool(row["ok"])


def read(cfg: RetireConfig) -> Record | None:
    """This sync's record on the retired database (None: replication not stopped yet)."""
    with connect(cfg.retired, application_name="runbook_bucardo_retire") as conn:
        if not _exists(conn):
            return None
        row = conn.execute(
            sql.SQL("SELECT sync, kept, stage, stopped_at, proof FROM {} WHERE sync = %s").format(
                sql.Identifier(SCHEMA, TABLE)
            ),
            [cfg.bootstrap.sync],
        ).fetchone()
    if row is None:
        return None
    return Record(row["sync"], row["kept"], row["stage"], row["stopped_at"], row["proof"] or {})


def write_stopped(cfg: RetireConfig, stopped_at: datetime) -> Record:
    with connect(cfg.retired, application_name="runbook_bucardo_retire") as conn:
        for statement in CREATE_SQL:
            conn.execute(statement)
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (sync, kept, stage, stopped_at) VALUES (%s, %s, 'stopped', %s) "
                "ON CONFLICT (sync) DO NOTHING"
            ).format(sql.Identifier(SCHEMA, TABLE)),
            [cfg.bootstrap.sync, cfg.kept_name, stopped_at],
        )
    record = read(cfg)
    assert record is not None
    return record


def write_proof(cfg: RetireConfig, proof: dict[str, Any]) -> None:
    with connect(cfg.retired, application_name="runbook_bucardo_retire") as conn:
        conn.execute(
            sql.SQL("UPDATE {} SET stage = 'proven', proof = %s::jsonb WHERE sync = %s").format(
                sql.Identifier(SCHEMA, TABLE)
            ),
            [json.dumps(proof), cfg.bootstrap.sync],
        )
