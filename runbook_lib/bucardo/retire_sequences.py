"""Retire step: the kept database's sequences count by 1 again.

The bootstrap's `interleave` made every sequence the replicated tables use count by 2 (here odd,
there even). It handles only sequences that counted by 1 before (it refuses any other increment
in its preflight) and records no original value, so the normal increment is 1. Each sequence is
switched under its own lock (no nextval() meanwhile, one short transaction per sequence) and
restarted above every id handed out on either side and every id its tables hold, so the next
insert cannot collide."""

from __future__ import annotations

import pandas as pd
from psycopg import sql

from runbook_lib.bucardo import sequences
from runbook_lib.bucardo.result import StepResult
from runbook_lib.bucardo.retire_config import RetireConfig
from runbook_lib.bucardo.selection import select_tables
from runbook_lib.connection import connect
from runbook_lib.errors import PartiallyApplied, PreconditionError
from runbook_lib.locks import LOCK_TIMEOUT_MS, in_short_lock

NORMAL_INCREMENT = 1


def used(cfg: RetireConfig) -> list[sequences.UsedSequence]:
    """The sequences the replicated tables use, as the kept database has them."""
    with connect(cfg.kept, application_name="runbook_bucardo_retire") as conn:
        tables = list(select_tables(cfg.bootstrap, conn).replicated)
        return sequences.used_sequences(conn, tables)


def _increment(conn, seq: sequences.UsedSequence) -> int:
    return conn.execute(
        "SELECT seqincrement AS i FROM pg_catalog.pg_sequence WHERE seqrelid = %s::regclass",
        [seq.ident.as_string(conn)],
    ).fetchone()["i"]


def sequence_table(cfg: RetireConfig) -> pd.DataFrame:
    """Preflight's view: every sequence, its increment now, what the step will do."""
    rows = []
    with connect(cfg.kept, application_name="runbook_bucardo_retire") as conn:
        for seq in used(cfg):
            increment = _increment(conn, seq)
            rows.append({
                "sequence": seq.label,
                "used by": ", ".join(f"{t}.{c}" for t, c, _ in seq.users),
                f"increment on {cfg.kept_name}": increment,
                "plan": "already counts by 1" if increment == NORMAL_INCREMENT
                else "INCREMENT BY 1, restarted above every id used",
            })  # fmt: skip
    return pd.DataFrame(rows, columns=["sequence", "used by", f"increment on {cfg.kept_name}",
                                       "plan"])  # fmt: skip


def _retired_last_value(cfg: RetireConfig, seq: sequences.UsedSequence) -> int:
    """Ids the retired side handed out (0 when it cannot be read: it may be gone already)."""
    try:
        with connect(cfg.retired, application_name="runbook_bucardo_retire") as conn:
            return sequences.sequence_state(conn, seq.ident)["last_value"]
    except PreconditionError:
        return 0


def restart_sql(seq: sql.Identifier, start: int) -> sql.Composed:
    return sql.SQL("ALTER SEQUENCE {} INCREMENT BY 1 START WITH {} RESTART WITH {}").format(
        seq, sql.Literal(start), sql.Literal(start)
    )


def _restore(conn, seq: sequences.UsedSequence, floor: int) -> int:
    def change() -> int:
        conn.execute(sequences.lock_sql(seq.ident))  # the sequence's lock until commit
        high = max(floor, sequences.sequence_state(conn, seq.ident)["last_value"],
                   sequences.highest_used(conn, seq))  # fmt: skip
        conn.execute(restart_sql(seq.ident, high + 1))
        return high + 1

    return in_short_lock(conn, change, f"ALTER SEQUENCE {seq.label} on the kept database")


def restore_increments(cfg: RetireConfig) -> StepResult:
    """INCREMENT BY 1 on the kept database, continuing above every id used."""
    rows, done = [], []
    with connect(cfg.kept, application_name="runbook_bucardo_retire") as conn:
        for seq in used(cfg):
            if _increment(conn, seq) == NORMAL_INCREMENT:
                rows.append({"sequence": seq.label, "next": "unchanged", "already_done": True})
                continue
            start = _restore(conn, seq, _retired_last_value(cfg, seq))
            if _increment(conn, seq) != NORMAL_INCREMENT:
                raise PartiallyApplied(
                    "restoring the sequences", done,
                    f"{seq.label} still counts by {_increment(conn, seq)} after ALTER SEQUENCE",
                )  # fmt: skip
            done.append(f"{seq.label} counts by 1 from {start}")
            rows.append({"sequence": seq.label, "next": start, "already_done": False})
    return StepResult(
        "sequences",
        f"{len(done)} sequences count by 1 again on {cfg.kept_name}"
        if done
        else f"every sequence already counts by 1 on {cfg.kept_name}",
        already_done=not done,
        tables={"sequences": pd.DataFrame(rows, columns=["sequence", "next", "already_done"])},
    )


def plan_restore(cfg: RetireConfig) -> list[str]:
    actions = []
    with connect(cfg.kept, application_name="runbook_bucardo_retire") as conn:
        for seq in used(cfg):
            if _increment(conn, seq) == NORMAL_INCREMENT:
                actions.append(f"{seq.label}: already counts by 1")
                continue
            actions.append(
                f"on {cfg.kept}: BEGIN; SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'; "
                f"{sequences.lock_sql(seq.ident).as_string(conn)}; "
                f"{restart_sql(seq.ident, 0).as_string(conn).replace(' 0', ' <next>')}; COMMIT  "
                "# retried until the lock is free; <next>: above the sequence's last value on "
                f"both sides and every id in {', '.join(f'{t}.{c}' for t, c, _ in seq.users)}"
            )
    return actions
