"""A write workload for the lab, with a ledger of every committed change.

Inserts, updates, deletes and primary-key changes, one per transaction, at a steady rate. Each
change writes a unique token into a tracked column and appends a ledger line *after* its commit,
so replaying the ledger gives the state every touched key must have on any faithful copy.
A change whose commit outcome is unknown (connection lost mid-change) is recorded as in doubt
with the keys it touched; those keys are not checked unless a later certain change sets them
again. A server that cannot be reached is waited for (nothing was attempted, nothing in doubt).
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql

from runbook_lib.connection import Endpoint, connect
from runbook_lib.errors import PreconditionError

RECONNECT_PAUSE_S = 0.5


@dataclass(frozen=True)
class TrackedTable:
    name: str  # schema.table
    key: str
    token: str  # SQL expression reading the token back

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(*self.name.split("."))


FOO = TrackedTable("public.foo", "id", "note")
BAR = TrackedTable("public.bar", "id", "attributes->>'wl'")
SKU = TrackedTable("public.sku_catalog", "sku", "description")
TRACKED = {t.name: t for t in (FOO, BAR, SKU)}


@dataclass
class WorkloadSummary:
    ledger: Path
    committed: int
    in_doubt: int
    seconds: float
    failed: int = 0


class _Workload:
    def __init__(self, endpoint: Endpoint, ledger: Path, seed: int | None) -> None:
        self.endpoint = endpoint
        self.ledger_path = ledger
        self.rng = random.Random(seed)
        self.run_id = datetime.now(UTC).strftime("%H%M%S") + f"{self.rng.randrange(10**4):04d}"
        self.seq = 0
        self.inserted_foo: list[int] = []
        self.own_skus: list[str] = []
        self.committed = 0
        self.in_doubt = 0
        self.failed = 0
        self.conn: psycopg.Connection | None = None

    def token(self) -> str:
        return f"wl-{self.run_id}-{self.seq}"

    def connection(self) -> psycopg.Connection:
        if self.conn is None or self.conn.closed:
            self.conn = connect(self.endpoint, application_name="runbook_lab_workload")
        return self.conn

    def one_change(self) -> dict[str, Any] | None:
        """Make one change in its own transaction; return its ledger entry (None: nothing to do)."""
        conn = self.connection()
        tok = self.token()
        choice = self.rng.random()
        self.touching: tuple[str, list[Any]] = (FOO.name, [])
        if choice < 0.35 or not self.inserted_foo:
            row = conn.execute(
                "INSERT INTO public.foo (name, note) VALUES (%s, %s) RETURNING id", ["wl", tok]
            ).fetchone()
            self.inserted_foo.append(row["id"])
            return {"table": FOO.name, "op": "insert", "key": row["id"], "token": tok}
        if choice < 0.55:
            key = (
                self.rng.choice(self.inserted_foo)
                if self.rng.random() < 0.5
                else self.rng.randint(1, 25000)
            )
            self.touching = (FOO.name, [key])
            row = conn.execute(
                "UPDATE public.foo SET note = %s WHERE id = %s RETURNING id", [tok, key]
            ).fetchone()
            return {"table": FOO.name, "op": "update", "key": key, "token": tok} if row else None
        if choice < 0.65:
            key = self.inserted_foo.pop(self.rng.randrange(len(self.inserted_foo)))
            self.touching = (FOO.name, [key])
            conn.execute("DELETE FROM public.foo WHERE id = %s", [key])
            return {"table": FOO.name, "op": "delete", "key": key, "token": None}
        if choice < 0.80:
            key = self.rng.randint(1, 25000)
            self.touching = (BAR.name, [key])
            row = conn.execute(
                "UPDATE public.bar"
                " SET attributes = attributes || jsonb_build_object('wl', %s::text),"
                " updated_at = now() WHERE id = %s RETURNING id",
                [tok, key],
            ).fetchone()
            return {"table": BAR.name, "op": "update", "key": key, "token": tok} if row else None
        if choice < 0.88 or not self.own_skus:
            sku = f"WL-{self.run_id}-{self.seq}"
            self.touching = (SKU.name, [sku])
            conn.execute(
                "INSERT INTO public.sku_catalog (sku, description, price) VALUES (%s, %s, 1)",
                [sku, tok],
            )
            self.own_skus.append(sku)
            return {"table": SKU.name, "op": "insert", "key": sku, "token": tok}
        # a primary-key change: one of our own rows, or a sample row
        if self.rng.random() < 0.5:
            old = self.own_skus.pop(self.rng.randrange(len(self.own_skus)))
        else:
            old = f"SKU-{self.rng.randint(1, 5000):05d}"
        new = f"{old}~{self.seq}"
        self.touching = (SKU.name, [old, new])
        row = conn.execute(
            "UPDATE public.sku_catalog SET sku = %s, description = %s WHERE sku = %s RETURNING sku",
            [new, tok, old],
        ).fetchone()
        if not row:
            return None
        self.own_skus.append(new)
        return {"table": SKU.name, "op": "rekey", "key": new, "old_key": old, "token": tok}

    def record(self, ledger: Any, entry: dict[str, Any]) -> None:
        entry = {"seq": self.seq, "at": datetime.now(UTC).isoformat(), **entry}
        ledger.write(json.dumps(entry) + "\n")
        ledger.flush()

    def record_problem(self, ledger: Any, op: str, exc: Exception) -> None:
        """A change that failed (`failed`) or whose commit is unknown (`in_doubt`)."""
        table, keys = self.touching
        self.record(
            ledger, {"op": op, "table": table, "keys": keys, "error": str(exc).strip()[:200]}
        )

    def run(self, seconds: float, rate: float) -> WorkloadSummary:
        stop = {"now": False}

        def request_stop(signum: int, frame: Any) -> None:
            stop["now"] = True

        # signals can only be caught in the main thread; a thread is stopped by `seconds`
        in_main = threading.current_thread() is threading.main_thread()
        stops = (signal.SIGTERM, signal.SIGINT) if in_main else ()
        previous = {s: signal.signal(s, request_stop) for s in stops}
        started = time.monotonic()
        period = 1.0 / rate
        try:
            with self.ledger_path.open("a") as ledger:
                next_at = started
                while not stop["now"] and (seconds <= 0 or time.monotonic() - started < seconds):
                    self.seq += 1
                    try:
                        self.connection()
                    except PreconditionError:
                        time.sleep(RECONNECT_PAUSE_S)  # server down: nothing attempted
                        continue
                    try:
                        entry = self.one_change()
                    except psycopg.OperationalError as exc:
                        self.in_doubt += 1
                        self.record_problem(ledger, "in_doubt", exc)
                        self.conn = None
                        time.sleep(RECONNECT_PAUSE_S)
                        continue
                    except psycopg.Error as exc:
                        # committed nothing; recorded, because an application must never see
                        # an error caused by a runbook
                        self.failed += 1
                        self.record_problem(ledger, "failed", exc)
                        continue
                    if entry:
                        self.committed += 1
                        self.record(ledger, entry)
                    next_at += period
                    time.sleep(max(0.0, next_at - time.monotonic()))
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if self.conn is not None:
                self.conn.close()
        return WorkloadSummary(
            self.ledger_path,
            self.committed,
            self.in_doubt,
            time.monotonic() - started,
            self.failed,
        )


def run_workload(
    endpoint: Endpoint, ledger: Path, *, seconds: float, rate: float = 20.0, seed: int | None = None
) -> WorkloadSummary:
    """Write to endpoint for `seconds` (0: until SIGTERM/SIGINT) at `rate` changes per second."""
    ledger.parent.mkdir(parents=True, exist_ok=True)
    return _Workload(endpoint, ledger, seed).run(seconds, rate)


def read_ledger(path: Path) -> Iterator[dict[str, Any]]:
    with path.open() as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


_IN_DOUBT = object()


def expected_state(path: Path) -> dict[str, dict[Any, str | None]]:
    """Per table, each touched key's last token (None: the key must be absent)."""
    state: dict[str, dict[Any, Any]] = {name: {} for name in TRACKED}
    for entry in read_ledger(path):
        table = state[entry["table"]]
        if entry["op"] == "failed":
            continue
        if entry["op"] == "in_doubt":
            for key in entry["keys"]:
                table[key] = _IN_DOUBT
            continue
        if entry["op"] == "rekey":
            table[entry["old_key"]] = None
        table[entry["key"]] = entry["token"]
    return {
        name: {k: v for k, v in table.items() if v is not _IN_DOUBT}
        for name, table in state.items()
    }


def verify_ledger(endpoint: Endpoint, path: Path) -> pd.DataFrame:
    """Rows where the database disagrees with the ledger (empty DataFrame: every write is there)."""
    mismatches = []
    with connect(endpoint) as conn:
        for name, expected in expected_state(path).items():
            if not expected:
                continue
            t = TRACKED[name]
            query = sql.SQL(
                "SELECT {key} AS key, {token} AS token FROM {table} WHERE {key} = ANY(%s)"
            ).format(key=sql.Identifier(t.key), token=sql.SQL(t.token), table=t.identifier)
            found = {r["key"]: r["token"] for r in conn.execute(query, [list(expected)])}
            for key, token in expected.items():
                present = key in found
                if (token is None and present) or (token is not None and found.get(key) != token):
                    mismatches.append(
                        {
                            "table": name,
                            "key": key,
                            "expected": token,
                            "found": found.get(key) if present else "<absent>",
                        }
                    )
    return pd.DataFrame(mismatches, columns=["table", "key", "expected", "found"])
