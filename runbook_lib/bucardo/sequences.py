"""Step 5: the sequence strategy. Interleave: on both masters every sequence the replicated
tables use (owned by a column, identity, or only called by a column default) counts in steps of
2, `here` on odd and `there` on even numbers, each restarted above every value either side has
used, so the two never hand out the same id. A sequence shared by several tables is restarted
above the highest id of all of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
from psycopg import sql

from runbook_lib.bucardo import catalog, schema
from runbook_lib.bucardo.config import BootstrapConfig
from runbook_lib.bucardo.objects import replicated_tables
from runbook_lib.bucardo.result import StepResult
from runbook_lib.connection import connect
from runbook_lib.errors import PartiallyApplied, PreconditionError
from runbook_lib.locks import LOCK_TIMEOUT_MS, in_short_lock

STEP = 2
RESIDUE = {"here": 1, "there": 0}  # here odd, there even
MARGIN = 1000  # room for ids handed out on `here` between reading and switching


def sequence_state(conn, seq: sql.Identifier) -> dict[str, Any]:
    return conn.execute(
        sql.SQL("""SELECT s.seqincrement AS increment_by, s.seqstart AS start_value,
                          (SELECT last_value FROM {seq}) AS last_value
                   FROM pg_catalog.pg_sequence s WHERE s.seqrelid = %s::regclass""").format(
            seq=seq
        ),
        [seq.as_string(conn)],
    ).fetchone()


def _done(state: dict[str, Any], residue: int) -> bool:
    return state["increment_by"] == STEP and state["start_value"] % STEP == residue


def _column_max(conn, table: str, column: str) -> int:
    row = conn.execute(
        sql.SQL("SELECT max({c})::bigint AS m FROM {t}").format(
            c=sql.Identifier(column), t=catalog.table_ident(table)
        )
    ).fetchone()
    return row["m"] or 0


def restart_sql(seq: sql.Identifier, start: int) -> sql.Composed:
    return sql.SQL("ALTER SEQUENCE {} INCREMENT BY {} START WITH {} RESTART WITH {}").format(
        seq, sql.Literal(STEP), sql.Literal(start), sql.Literal(start)
    )


def lock_sql(seq: sql.Identifier) -> sql.Composed:
    """Takes the sequence's lock until commit: no nextval() meanwhile."""
    return sql.SQL("ALTER SEQUENCE {} INCREMENT BY 1").format(seq)


def setval_sql(conn, seq: sql.Identifier, value: int) -> sql.Composed:
    return sql.SQL("SELECT pg_catalog.setval({}::regclass, {})").format(
        sql.Literal(seq.as_string(conn)), sql.Literal(value)
    )


def _restart(conn, seq: sql.Identifier, start: int) -> None:
    conn.execute(restart_sql(seq, start))


def _next_with_residue(value: int, residue: int) -> int:
    value += 1
    return value if value % STEP == residue else value + 1


@dataclass(frozen=True)
class UsedSequence:
    """A sequence and every (table, column) of the replicated tables that takes ids from it."""

    schema: str
    name: str
    users: tuple[tuple[str, str, str], ...]  # (table, column, how)
    increment_by: int

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}"


def used_sequences(conn, tables: list[str]) -> list[UsedSequence]:
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in catalog.sequences_used(conn, tables):
        grouped.setdefault((r["seq_schema"], r["seq_name"]), []).append(r)
    return [
        UsedSequence(
            schema,
            name,
            tuple((r["table"], r["column"], r["kind"]) for r in rows),
            rows[0]["increment_by"],
        )
        for (schema, name), rows in sorted(grouped.items())
    ]


def _strategy_text(cfg: BootstrapConfig) -> str:
    if cfg.sequence_strategy == "interleave":
        return f"interleave: {cfg.here} odd, {cfg.there} even, INCREMENT BY {STEP}"
    return f"none: {cfg.there} caught up; the operator keeps both masters from colliding"


def _interleave_problem(seq: UsedSequence) -> str | None:
    if seq.increment_by not in (1, STEP):
        return f"counts by {seq.increment_by} (interleave handles ascending sequences by 1)"
    return None


def sequence_plan(cfg: BootstrapConfig, conn, tables: list[str]) -> pd.DataFrame:
    """Preflight: every sequence the replicated tables use and the strategy applied to it;
    raises (nothing changed) when the strategy cannot handle one."""
    used = used_sequences(conn, tables)
    if cfg.sequence_strategy == "interleave":
        problems = [f"{s.label} {p}" for s in used if (p := _interleave_problem(s))]
        if problems:
            raise PreconditionError(
                "sequences the interleave strategy cannot handle: "
                + "; ".join(problems)
                + ": set sequence_strategy to none and keep the masters from colliding "
                "yourself; nothing was changed"
            )
    return pd.DataFrame(
        [
            {
                "sequence": s.label,
                "used by": ", ".join(f"{t}.{c}" for t, c, _ in s.users),
                "how": ", ".join(sorted({how for _, _, how in s.users})),
                "increment_by": s.increment_by,
                "strategy": _strategy_text(cfg),
            }
            for s in used
        ],
        columns=["sequence", "used by", "how", "increment_by", "strategy"],
    )


def highest_used(conn, seq: UsedSequence) -> int:
    """The highest id any user column holds (read without the sequence's lock)."""
    return max(_column_max(conn, table, column) for table, column, _ in seq.users)


def _interleave_here(here, seq: UsedSequence, floor: int) -> int:
    """Under the sequence's lock (no nextval() meanwhile): restart above every id handed out."""

    def change() -> int:
        here.execute(lock_sql(seq.ident))
        start = _next_with_residue(
            max(floor, sequence_state(here, seq.ident)["last_value"]) + MARGIN, RESIDUE["here"]
        )
        _restart(here, seq.ident, start)
        return start

    return in_short_lock(here, change, f"ALTER SEQUENCE {seq.label} on here")


def apply_sequence_strategy(cfg: BootstrapConfig) -> StepResult:
    """Interleave every sequence the replicated tables use (owned, identity or default-only)."""
    with connect(cfg.source) as conn:
        used = used_sequences(conn, list(replicated_tables(cfg)))
    if cfg.sequence_strategy == "none":
        return _catch_up_target(cfg, used)
    rows = []
    with connect(cfg.source) as here, connect(cfg.target) as there:
        for seq in used:
            h, t = sequence_state(here, seq.ident), sequence_state(there, seq.ident)
            if problem := _interleave_problem(seq):
                raise PreconditionError(
                    f"sequence {seq.label} {problem}; nothing was changed for it (sequences "
                    f"already done: {[r['sequence'] for r in rows]})"
                )
            done_here, done_there = _done(h, RESIDUE["here"]), _done(t, RESIDUE["there"])
            if not done_here:
                floor = max(highest_used(here, seq), highest_used(there, seq), t["last_value"])
                start_here = _interleave_here(here, seq, floor)
            else:
                start_here = h["start_value"]
            if not done_there:
                high = max(start_here, t["last_value"], highest_used(there, seq))
                start_there = _next_with_residue(high, RESIDUE["there"])
                in_short_lock(
                    there,
                    lambda seq=seq, start=start_there: _restart(there, seq.ident, start),
                    f"ALTER SEQUENCE {seq.label} on there",
                )
            h2, t2 = sequence_state(here, seq.ident), sequence_state(there, seq.ident)
            if not (_done(h2, RESIDUE["here"]) and _done(t2, RESIDUE["there"])):
                raise PartiallyApplied(
                    "the sequences step",
                    [f"{r['sequence']} interleaved" for r in rows]
                    + [f"{seq.label}: restart attempted"],
                    f"sequence {seq.label} did not take the interleave settings: here {h2}, "
                    f"there {t2}",
                )
            rows.append(
                {
                    "sequence": seq.label,
                    "used by": ", ".join(f"{tb}.{c}" for tb, c, _ in seq.users),
                    "here_next": f"{h2['start_value']} + 2k" if not done_here else "unchanged",
                    "there_next": f"{t2['start_value']} + 2k" if not done_there else "unchanged",
                    "already_done": done_here and done_there,
                }
            )
    all_done = bool(rows) and all(r["already_done"] for r in rows)
    return StepResult(
        "sequences",
        f"interleave on {len(rows)} sequences: {cfg.here} odd, {cfg.there} even, INCREMENT BY 2",
        already_done=all_done,
        tables={"sequences": pd.DataFrame(rows)},
    )


def _catch_up_target(cfg: BootstrapConfig, used: list[UsedSequence]) -> StepResult:
    """Strategy none: increments stay, but the target's sequences (left at their start by the
    structure copy) move up to the source's value so its first insert does not collide."""
    rows = []
    with connect(cfg.source) as here, connect(cfg.target) as there:
        for seq in used:
            high = max(
                sequence_state(here, seq.ident)["last_value"],
                highest_used(here, seq),
                highest_used(there, seq),
            )
            current = sequence_state(there, seq.ident)["last_value"]
            if current < high:
                there.execute(setval_sql(there, seq.ident, high))
            rows.append(
                {
                    "sequence": seq.label,
                    "used by": ", ".join(f"{t}.{c}" for t, c, _ in seq.users),
                    "there_last_value": max(current, high),
                    "already_done": current >= high,
                }
            )
    return StepResult(
        "sequences",
        f"sequence_strategy is none: {len(used)} sequences keep their increments (the target's "
        "moved up to the source's value); the operator must keep both masters from handing out "
        "the same ids",
        tables={"sequences": pd.DataFrame(rows)},
    )


def plan_sequences(cfg: BootstrapConfig) -> list[str]:
    """What apply_sequence_strategy would run now (read-only; the values are chosen again at
    run time, under the sequence's lock)."""
    with connect(cfg.source) as here:
        used = used_sequences(here, list(replicated_tables(cfg)))
        target_ready = schema.target_marker(cfg) is not None
        actions = []
        for seq in used:
            h = sequence_state(here, seq.ident)
            high = max(h["last_value"], highest_used(here, seq))
            if target_ready:
                with connect(cfg.target) as there:
                    if catalog.schema_exists(there, seq.schema):
                        high = max(high, highest_used(there, seq))
            if cfg.sequence_strategy == "none":
                actions.append(
                    f"on {cfg.target}: {setval_sql(here, seq.ident, high).as_string(here)}"
                )
                continue
            if _done(h, RESIDUE["here"]):
                actions.append(f"{seq.label}: already interleaved")
                continue
            start = _next_with_residue(high + MARGIN, RESIDUE["here"])
            actions.append(
                f"on {cfg.source}: BEGIN; SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'; "
                f"{lock_sql(seq.ident).as_string(here)}; "
                f"{restart_sql(seq.ident, start).as_string(here)}; COMMIT  "
                "# retried until the lock is free; start: the next odd number above every id "
                f"used by {', '.join(f'{t}.{c}' for t, c, _ in seq.users)}, plus a margin"
            )
            actions.append(
                f"on {cfg.target}: "
                f"{restart_sql(seq.ident, _next_with_residue(start, 0)).as_string(here)}"
            )
    return actions
