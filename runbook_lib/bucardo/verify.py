"""Step 7 (prove both masters identical while writes continue) and step 8 (a marker written on
each side reaches the other).

The comparison engine (runbook_lib.compare) reads both masters once, chunk by chunk, and lists the
keys that differ. Under load most of them are changes in flight; inflight.py follows each key until
it is proven equal (read again after Bucardo caught up, or held still while the other side caught
up) or shown different (unchanged, nothing pending in Bucardo). The step passes only when every
key is proven equal."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from dataclasses import dataclass

import pandas as pd
import psycopg

from runbook_lib.bucardo import catalog, ctl, drain, queue, settled
from runbook_lib.bucardo.config import BootstrapConfig
from runbook_lib.bucardo.ctl import BucardoCtl
from runbook_lib.bucardo.inflight import KeyTracker, TableKeys, follow_until_proven
from runbook_lib.bucardo.objects import MARKER_TABLE, replicated_tables
from runbook_lib.bucardo.result import StepResult
from runbook_lib.compare.names import qualified
from runbook_lib.compare.result import Comparison, DataMismatch
from runbook_lib.connection import connect
from runbook_lib.errors import PreconditionError, RunbookError, WaitTimeout
from runbook_lib.waiting import wait_until

log = logging.getLogger("runbook_lib")

MARKER_TIMEOUT_S = 60
MAX_KEYS_FOLLOWED = 20_000  # per table and comparison; more: compared again once caught up
MARK_WAIT_S = 30.0
KEYS_SHOWN = 5
TABLE_LEVEL_NOTES = ("columns only", "column ")  # the two sides have other columns


class NotProven(RunbookError):
    """Some keys kept changing until verify_timeout_s: neither proven equal nor shown different."""


def quoted(name: str) -> str:
    """'schema.Table' (exact case) -> '"schema"."Table"' for the comparison engine."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in catalog.split_name(name))


@dataclass
class TableOutcome:
    rows: dict  # the latest comparison's summary row
    table_level: str = ""  # a difference of the whole table (missing, other columns)
    unlisted: bool = False  # time ran out before its differing keys could all be listed


def _wait_for_mark(cfg: BootstrapConfig, remaining_s: float, kick: bool) -> None:
    """Until Bucardo has replicated every change logged before now (bounded); a sync that does
    not catch up leaves the keys in flight, and the next round looks again."""
    with contextlib.suppress(WaitTimeout):
        drain.wait_caught_up(cfg, timeout_s=max(0.5, min(remaining_s, MARK_WAIT_S)), kick=kick)


def _compare(cfg: BootstrapConfig, tables: list[str], progress: bool) -> Comparison:
    from runbook_lib.compare import compare_databases

    return compare_databases(
        cfg.source,
        cfg.target,
        tables=[quoted(t) for t in tables],
        schemas=cfg.schemas,
        labels=(cfg.here, cfg.there),
        progress=progress,
        max_keys=MAX_KEYS_FOLLOWED,
    )


def _absorb(
    comparison: Comparison, outcomes: dict[str, TableOutcome], tracker: KeyTracker
) -> list[str]:
    """Record a comparison; returns the tables to compare again (keys not all listed)."""
    again = []
    for row in comparison.summary.to_dict("records"):
        name = row["table"]
        outcome = outcomes.setdefault(name, TableOutcome(row))
        outcome.rows = row
        if row["verdict"] == "identical":
            continue
        if row["verdict"].startswith("missing") or any(
            row["note"].startswith(p) for p in TABLE_LEVEL_NOTES
        ):
            outcome.table_level = row["note"] or row["verdict"]
            continue
        if name in comparison.found:
            tracker.follow(name, comparison.found[name])
        if name in comparison.incomplete:
            again.append(name)  # more differing keys than listed: compare again
        # chunks that differed with no differing row left when drilled were equal then
    return again


def _first_pass(
    cfg: BootstrapConfig,
    tracker: KeyTracker,
    tables: list[str],
    outcomes: dict[str, TableOutcome],
    progress: bool,
) -> list[str]:
    """settled.compare_outside; returns the tables to compare chunk by chunk."""
    named = {qualified(*catalog.split_name(t)): t for t in tables}  # as the engine names them
    chunked = []
    for o in settled.compare_outside(tracker, list(named), progress):
        if not o.equal:
            chunked.append(named[o.table])
            continue
        tracker.follow(o.table, o.differing)
        outcomes[o.table] = TableOutcome(
            {
                "table": o.table,
                f"rows_{cfg.here}": o.rows[0],
                f"rows_{cfg.there}": o.rows[1],
                "chunks": 1,
                "verdict": "identical",
                "note": "",
            },
        )
    return chunked


def _table_rows(cfg: BootstrapConfig, outcomes: dict[str, TableOutcome], tracker: KeyTracker):
    here, there = f"rows {cfg.here}", f"rows {cfg.there}"
    rows = []
    for name, outcome in outcomes.items():
        tk: TableKeys | None = tracker.tables.get(name)
        rows.append(
            {
                "table": name,
                here: outcome.rows[f"rows_{cfg.here}"],
                there: outcome.rows[f"rows_{cfg.there}"],
                "chunks": outcome.rows["chunks"],
                "keys re-checked": len(tk.keys) if tk else 0,
                "in flight (proven later)": tk.count("in flight") if tk else 0,
                "different": tk.count("different") if tk else 0,
                "unproven": tk.count("pending") if tk else 0,
                "verdict": _verdict(outcome, tk),
            }
        )
    df = pd.DataFrame(rows)
    for col in (here, there):
        df[col] = df[col].astype("Int64")
    return df


def _verdict(outcome: TableOutcome, tk: TableKeys | None) -> str:
    if outcome.table_level:
        return f"DIFFERENT: {outcome.table_level}"
    if tk and tk.count("different"):
        return "DIFFERENT"
    if (tk and tk.count("pending")) or outcome.unlisted:
        return "UNPROVEN"
    return "identical"


def _key_rows(tracker: KeyTracker, verdicts: tuple[str, ...]) -> pd.DataFrame:
    la, lb = tracker.labels
    rows = []
    for name, tk in tracker.tables.items():
        for key, st in tk.keys.items():
            if st.verdict not in verdicts:
                continue
            ha, hb = st.seen
            kind = f"missing {la}" if ha is None else f"missing {lb}" if hb is None else "values"
            rows.append(
                {
                    "table": name,
                    "key": key[0] if len(key) == 1 else "(" + ", ".join(key) + ")",
                    "differs in": kind,
                    "verdict": "unproven" if st.verdict == "pending" else st.verdict,
                    "why": st.how or "changed in every round",
                }
            )
    return pd.DataFrame(rows, columns=["table", "key", "differs in", "verdict", "why"])


def lost_connection(exc: BaseException) -> bool:
    """A master restarted, crashed or cut off the network mid-step (not a query's own error)."""
    cause = exc.__cause__ if isinstance(exc, PreconditionError) else exc
    if not isinstance(cause, psycopg.OperationalError):
        return False
    state = cause.sqlstate or ""
    return not state or state.startswith(("08", "57P"))


def _wait_reachable(cfg: BootstrapConfig, deadline: float) -> None:
    def both() -> bool:
        try:
            for ep in cfg.databases().values():
                connect(ep, application_name="runbook_bucardo_verify").close()
        except PreconditionError:
            return False
        return True

    wait_until(
        both,
        what=f"{cfg.here} and {cfg.there} to be reachable again",
        timeout_s=max(1.0, deadline - time.monotonic()),
        interval_s=1.0,
    )


def verify_databases(
    cfg: BootstrapConfig, *, progress: bool = True, kick: bool = True
) -> StepResult:
    """Compare every replicated table on both masters under load; raise unless every differing
    key is proven to be a change in flight. kick=False (a dry run) neither kicks Bucardo nor
    holds any row still. A connection lost on the way (a restart, a network cut) starts the
    comparison again once both masters answer, within verify_timeout_s."""
    started = time.monotonic()
    deadline = started + cfg.verify_timeout_s
    lost: list[str] = []
    while True:
        try:
            result = _verify_once(cfg, started, deadline, progress, kick)
        except (psycopg.OperationalError, PreconditionError) as exc:
            if not lost_connection(exc) or time.monotonic() >= deadline:
                raise
            lost.append(str(exc).strip().splitlines()[0])
            log.warning("verify: %s; starting again once both masters answer", lost[-1])
            _wait_reachable(cfg, deadline)
            continue
        if lost:
            result.summary += (
                f"; started again after {len(lost)} lost connection(s) (first: {lost[0]})"
            )
        return result


def _verify_once(
    cfg: BootstrapConfig, started: float, deadline: float, progress: bool, kick: bool
) -> StepResult:
    tables = [t for t in replicated_tables(cfg) if t != MARKER_TABLE]
    outcomes: dict[str, TableOutcome] = {}
    with KeyTracker(cfg, (cfg.here, cfg.there), hold=kick) as tracker:
        chunked = _first_pass(cfg, tracker, tables, outcomes, progress)
        again = _absorb(_compare(cfg, chunked, progress), outcomes, tracker) if chunked else []
        compare_s = time.monotonic() - started
        while again and time.monotonic() < deadline:
            _wait_for_mark(cfg, deadline - time.monotonic(), kick)
            names = [catalog.bucardo_table_name(n) for n in again]
            again = _absorb(_compare(cfg, names, False), outcomes, tracker)
        rounds = follow_until_proven(
            tracker, deadline, (lambda: BucardoCtl(cfg).kick(1)) if kick else None
        )
        for name in again:
            outcomes[name].unlisted = True
        table = _table_rows(cfg, outcomes, tracker)
        keys = _key_rows(tracker, ("different", "pending"))
        in_flight = int(table["in flight (proven later)"].sum())
        detail = (
            f"{len(tables)} tables, {int(table['keys re-checked'].sum())} keys re-checked in "
            f"{rounds} rounds, {in_flight} in flight and proven equal later "
            f"({tracker.locks_held} row locks held at most {tracker.longest_hold_s:.2f} s); "
            f"{len(chunked)} compared chunk by chunk; first pass {compare_s:.1f} s, "
            f"in all {time.monotonic() - started:.1f} s"
        )
        if not tracker.fast:
            majors = "; ".join(f"{s.label} runs PostgreSQL {s.major}" for s in tracker.sides)
            detail += (
                f"; rows compared by the portable hash (md5 of each row's text), which any two "
                f"major versions agree on ({majors})"
            )
        result = StepResult(
            "verify",
            ("identical: " if (table["verdict"] == "identical").all() else "NOT proven: ") + detail,
            tables={"tables": table, "keys": keys},
        )
        _raise_unless_identical(cfg, table, keys, again, detail)
    return result


def _examples(keys: pd.DataFrame, verdict: str) -> str:
    parts = []
    for name, group in keys[keys["verdict"] == verdict].groupby("table"):
        shown = ", ".join(group["key"].head(KEYS_SHOWN))
        more = f" and {len(group) - KEYS_SHOWN} more" if len(group) > KEYS_SHOWN else ""
        parts.append(f"{name}: keys {shown}{more}")
    return "; ".join(parts)


def _raise_unless_identical(cfg, table: pd.DataFrame, keys: pd.DataFrame, again, detail) -> None:
    different = table[table["verdict"].str.startswith("DIFFERENT")]
    if len(different):
        levels = [
            f"{r['table']}: {r['verdict'][len('DIFFERENT: ') :]}"
            for r in different.to_dict("records")
            if r["verdict"] != "DIFFERENT"
        ]
        mismatch = DataMismatch(
            f"{len(different)} table(s) differ between {cfg.here} and {cfg.there}: "
            + "; ".join([*levels, _examples(keys, "different")]).strip("; ")
            + ". These rows differ and no change of them is waiting in Bucardo: they were "
            "changed on one side without Bucardo (session_replication_role=replica, a disabled "
            f"trigger) or lost a conflict. Inspect them on both sides before going on ({detail})"
        )
        mismatch.keys = keys[keys["verdict"] == "different"].reset_index(drop=True)
        raise mismatch
    if (table["verdict"] == "UNPROVEN").any():
        state = queue.sync_state(cfg)
        still = _examples(keys, "unproven") or ", ".join(again)
        raise NotProven(
            f"not every difference was proven to be a change in flight within "
            f"verify_timeout_s={cfg.verify_timeout_s:g} s: {still}. They changed in every round "
            f"(Bucardo now: {state!r}). Nothing is known to be lost: re-run this step (when the "
            "load is lower, or with a larger verify_timeout_s); if the sync is failing, see "
            f"{ctl.log_location(cfg)} ({detail})"
        )


MARKER_INSERT = f"INSERT INTO {MARKER_TABLE} (id, written_on) VALUES (%s, %s)"


def plan_both_directions(cfg: BootstrapConfig) -> list[str]:
    return [
        f"on {ep}: {MARKER_INSERT % (repr(name + '-<uuid>'), repr(name))}; then wait up to "
        f"{MARKER_TIMEOUT_S} s for it on {other}"
        for name, ep, other in (
            (cfg.here, cfg.source, cfg.there),
            (cfg.there, cfg.target, cfg.here),
        )
    ]


def both_directions(cfg: BootstrapConfig) -> StepResult:
    """Write a marker row on each master; each must appear on the other within the timeout."""
    rows = []
    pairs = (
        (cfg.here, cfg.source, cfg.there, cfg.target),
        (cfg.there, cfg.target, cfg.here, cfg.source),
    )
    for name, ep, other_name, other in pairs:
        token = f"{name}-{uuid.uuid4()}"
        with connect(ep) as conn:
            conn.execute(MARKER_INSERT, [token, name])
        t0 = time.monotonic()
        with connect(other) as conn:

            def seen(conn=conn, token=token) -> bool:
                return (
                    conn.execute(
                        f"SELECT 1 FROM {MARKER_TABLE} WHERE id = %s",
                        [token],
                    ).fetchone()
                    is not None
                )

            try:
                wait_until(
                    seen,
                    what=f"marker {token} from {name} on {other_name}",
                    timeout_s=MARKER_TIMEOUT_S,
                    interval_s=0.1,
                )
            except Exception as exc:
                raise PreconditionError(
                    f"a row written on {name} did not reach {other_name} within "
                    f"{MARKER_TIMEOUT_S} s; see {ctl.log_location(cfg)}"
                ) from exc
        rows.append(
            {
                "direction": f"{name} -> {other_name}",
                "marker": token,
                "seconds": round(time.monotonic() - t0, 2),
            }
        )
    return StepResult(
        "both directions",
        "a marker written on each side reached the other",
        tables={"markers": pd.DataFrame(rows)},
    )
