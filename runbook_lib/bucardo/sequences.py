"""Step 5: the sequence strategy. Interleave: on both masters every serial/identity sequence of
the replicated tables counts in steps of 2, `here` on odd and `there` on even numbers, each
restarted above every value either side has used, so the two never hand out the same id."""

from __future__ import annotations

from typing import Any

import pandas as pd
from psycopg import sql

from runbook_lib.bucardo import catalog, schema
from runbook_lib.bucardo.config import BootstrapConfig
from runbook_lib.bucardo.objects import replicated_tables
from runbook_lib.bucardo.result import StepResult
from runbook_lib.connection import connect
from runbook_lib.errors import PreconditionError

STEP = 2
RESIDUE = {"here": 1, "there": 0}  # here odd, there even
MARGIN = 1000  # room for ids handed out on `here` between reading and switching


def _state(conn, seq: sql.Identifier) -> dict[str, Any]:
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


def apply_sequence_strategy(cfg: BootstrapConfig) -> StepResult:
    """Interleave every sequence behind a serial/identity column of the replicated tables."""
    with connect(cfg.source) as conn:
        owned = catalog.owned_sequences(conn, list(replicated_tables(cfg)))
    if cfg.sequence_strategy == "none":
        return _catch_up_target(cfg, owned)
    rows = []
    with connect(cfg.source) as here, connect(cfg.target) as there:
        for s in owned:
            seq = sql.Identifier(s["seq_schema"], s["seq_name"])
            h, t = _state(here, seq), _state(there, seq)
            if s["increment_by"] < 0 or (h["increment_by"] not in (1, STEP)):
                raise PreconditionError(
                    f"sequence {s['seq_schema']}.{s['seq_name']} counts by {h['increment_by']}; "
                    "interleave handles ascending sequences counting by 1: set "
                    "sequence_strategy to none and handle it yourself"
                )
            done_here, done_there = _done(h, RESIDUE["here"]), _done(t, RESIDUE["there"])
            if not done_here:
                with here.transaction():
                    # ALTER SEQUENCE locks it: no nextval() on `here` until we commit
                    here.execute(lock_sql(seq))
                    h = _state(here, seq)
                    high = max(
                        h["last_value"],
                        _column_max(here, s["table"], s["column"]),
                        t["last_value"],
                        _column_max(there, s["table"], s["column"]),
                    )
                    start_here = _next_with_residue(high + MARGIN, RESIDUE["here"])
                    _restart(here, seq, start_here)
            else:
                start_here = h["start_value"]
            if not done_there:
                high = max(start_here, t["last_value"], _column_max(there, s["table"], s["column"]))
                _restart(there, seq, _next_with_residue(high, RESIDUE["there"]))
            h2, t2 = _state(here, seq), _state(there, seq)
            if not (_done(h2, RESIDUE["here"]) and _done(t2, RESIDUE["there"])):
                raise PreconditionError(
                    f"sequence {s['seq_schema']}.{s['seq_name']} did not take "
                    f"the interleave settings: here {h2}, there {t2}"
                )
            rows.append(
                {
                    "sequence": f"{s['seq_schema']}.{s['seq_name']}",
                    "column": f"{s['table']}.{s['column']}",
                    "here_next": f"{h2['start_value']} + 2k" if not done_here else "unchanged",
                    "there_next": f"{t2['start_value']} + 2k" if not done_there else "unchanged",
                    "already_done": done_here and done_there,
                }
            )
    df = pd.DataFrame(rows)
    all_done = bool(rows) and all(r["already_done"] for r in rows)
    return StepResult(
        "sequences",
        f"interleave on {len(rows)} sequences: {cfg.here} odd, {cfg.there} even, INCREMENT BY 2",
        already_done=all_done,
        tables={"sequences": df},
    )


def _catch_up_target(cfg: BootstrapConfig, owned: list[dict[str, Any]]) -> StepResult:
    """Strategy none: increments stay, but the target's sequences (left at their start by the
    structure copy) move up to the source's value so its first insert does not collide."""
    rows = []
    with connect(cfg.source) as here, connect(cfg.target) as there:
        for s in owned:
            seq = sql.Identifier(s["seq_schema"], s["seq_name"])
            high = max(
                _state(here, seq)["last_value"],
                _column_max(here, s["table"], s["column"]),
                _column_max(there, s["table"], s["column"]),
            )
            current = _state(there, seq)["last_value"]
            if current < high:
                there.execute(setval_sql(there, seq, high))
            rows.append(
                {
                    "sequence": f"{s['seq_schema']}.{s['seq_name']}",
                    "column": f"{s['table']}.{s['column']}",
                    "there_last_value": max(current, high),
                    "already_done": current >= high,
                }
            )
    return StepResult(
        "sequences",
        f"sequence_strategy is none: {len(owned)} sequences keep their increments (the target's "
        "moved up to the source's value); the operator must keep both masters from handing out "
        "the same ids",
        tables={"sequences": pd.DataFrame(rows)},
    )


def plan_sequences(cfg: BootstrapConfig) -> list[str]:
    """What apply_sequence_strategy would run now (read-only; the values are chosen again at
    run time, under the sequence's lock)."""
    with connect(cfg.source) as here:
        owned = catalog.owned_sequences(here, list(replicated_tables(cfg)))
        target_ready = schema.target_marker(cfg) is not None
        actions = []
        for s in owned:
            seq = sql.Identifier(s["seq_schema"], s["seq_name"])
            h = _state(here, seq)
            high = max(h["last_value"], _column_max(here, s["table"], s["column"]))
            if target_ready:
                with connect(cfg.target) as there:
                    if catalog.schema_exists(there, s["seq_schema"]):
                        high = max(high, _column_max(there, s["table"], s["column"]))
            if cfg.sequence_strategy == "none":
                actions.append(f"on {cfg.target}: {setval_sql(here, seq, high).as_string(here)}")
                continue
            if _done(h, RESIDUE["here"]):
                actions.append(f"{s['seq_schema']}.{s['seq_name']}: already interleaved")
                continue
            start = _next_with_residue(high + MARGIN, RESIDUE["here"])
            actions.append(
                f"on {cfg.source}: BEGIN; {lock_sql(seq).as_string(here)}; "
                f"{restart_sql(seq, start).as_string(here)}; COMMIT  "
                "# start: the next odd number above every id used, plus a margin"
            )
            actions.append(
                f"on {cfg.target}: {restart_sql(seq, _next_with_residue(start, 0)).as_string(here)}"
            )
    return actions
