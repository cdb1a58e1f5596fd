"""Retire step: prove the retired copy equal to the kept database as of the moment replication
stopped, while the application keeps writing to the kept one.

Once the daemon is stopped nothing reaches the retired database any more (it takes no writes:
preflight and the stop step checked), while Bucardo's triggers on the kept database still log every
change there in its delta tables. So at any instant, the two differ only by the keys whose changes
are logged on the kept side and were never replicated. Each side is read once, in one snapshot
(both taken together): every table's row hashes are summed, and in the same snapshot the keys
with a change not replicated are read from the delta tables; their rows are subtracted from both
sums (a sum of hashes, so that is exact). Equal sums prove every other row identical; the keys
left out are exactly the changes made on the kept side since the stop. The retired copy's
fingerprint per table is then recorded on it, so the final check can show it did not change."""

from __future__ import annotations

from typing import Any

import pandas as pd

from runbook_lib.bucardo import catalog, queue, retire_state, settled
from runbook_lib.bucardo.ctl import BucardoCtl
from runbook_lib.bucardo.inflight import KeyTracker
from runbook_lib.bucardo.objects import MARKER_TABLE
from runbook_lib.bucardo.result import StepResult
from runbook_lib.bucardo.retire_config import RetireConfig
from runbook_lib.compare.fingerprint import Range
from runbook_lib.compare.names import qualified
from runbook_lib.compare.result import DataMismatch
from runbook_lib.connection import connect
from runbook_lib.errors import PreconditionError


def replicated_tables(cfg: RetireConfig) -> list[str]:
    """The sync's tables as Bucardo's capture on the kept side knows them (marker left out)."""
    with connect(cfg.kept, application_name="runbook_bucardo_retire") as conn:
        names = [catalog.bucardo_table_name(d["tablename"])
                 for d in queue.delta_names(conn, cfg.bootstrap.sync)]  # fmt: skip
    return [n for n in names if n != MARKER_TABLE]


def _index(cfg: RetireConfig, side: str) -> int:
    return 0 if side == "here" else 1  # KeyTracker's sides: (source, target)


def retired_fingerprints(tracker: KeyTracker, cfg: RetireConfig, names: list[str]) -> dict:
    """Rows and the sum of row hashes of every table on the retired side, as text."""
    which = _index(cfg, cfg.retire)
    conn = tracker.sides[which].conn
    out = {}
    for name in names:
        query, params = tracker.table(name).sql(which).fingerprint(Range())
        row = conn.execute(query, params).fetchone()
        out[name] = {"rows": int(row["n"]), "sum": str(row["s"])}
    return out


def _rows(cfg: RetireConfig, outside: list[settled.Outside]) -> list[dict[str, Any]]:
    k, r = _index(cfg, cfg.keep), _index(cfg, cfg.retire)
    return [
        {
            "table": o.table,
            cfg.kept_name: o.rows[k],
            cfg.retired_name: o.rows[r],
            f"keys changed on {cfg.kept_name} since the stop": o.changed,
            "verdict": "identical as of the stop" if o.equal else "NOT PROVEN",
        }
        for o in outside
    ]


def _check_ready(cfg: RetireConfig) -> retire_state.Record:
    record = retire_state.read(cfg)
    if record is None:
        raise PreconditionError("replication is not stopped yet: run the stop step first")
    if BucardoCtl(cfg.bootstrap).mcp_pid():
        raise PreconditionError(
            "the Bucardo daemon runs again: re-run the stop step (it stops it) before the proof"
        )
    return record


def prove_cut(cfg: RetireConfig, *, progress: bool = True) -> StepResult:
    """Every row identical on both sides except the keys changed on the kept side since the
    stop; record the retired copy's fingerprints. Read-only on the kept side."""
    record = _check_ready(cfg)
    if record.reached("proven"):
        return StepResult(
            "proof at the stop",
            f"proven at {record.proof['proven_at']}: {record.proof['summary']}",
            already_done=True,
            tables={"tables": pd.DataFrame(record.proof["tables"])},
        )
    names = replicated_tables(cfg)
    if not names:
        raise PreconditionError(
            f"Bucardo's delta tables are gone from {cfg.kept_name} but nothing was proven: the "
            "changes made there since the stop can no longer be told apart; compare the two "
            "databases with the application paused (runbook compare)"
        )
    b = cfg.bootstrap
    with KeyTracker(b, (b.here, b.there), hold=False) as tracker:
        engine_names = [qualified(*catalog.split_name(n)) for n in names]
        outside = settled.compare_outside(tracker, engine_names, progress, window_s=0, stream=True)
        fingerprints = retired_fingerprints(tracker, cfg, engine_names)
    pending = queue.queue_rows(b)
    retired_pending = sum(p["pending_rows"] for p in pending if p["db"] == cfg.retired_name)
    rows = _rows(cfg, outside)
    table = pd.DataFrame(rows)
    changed = int(table[f"keys changed on {cfg.kept_name} since the stop"].sum())
    different = [o.table for o in outside if not o.equal]
    if different or retired_pending:
        mismatch = DataMismatch(
            f"the retired copy is not proven equal to {cfg.kept_name} as of the stop: "
            + (f"tables {', '.join(different)} differ outside the keys changed since; "
               if different else "")
            + (f"{retired_pending} changes made on {cfg.retired_name} never reached "
               f"{cfg.kept_name}; " if retired_pending else "")
            + "nothing was changed by this step; compare them (runbook compare) before going on"
        )  # fmt: skip
        mismatch.keys = table
        raise mismatch
    summary = (
        f"{len(names)} tables: every row of {cfg.retired_name} is identical on {cfg.kept_name}, "
        f"except {changed} keys changed on {cfg.kept_name} since replication stopped at "
        f"{record.stopped_at:%H:%M:%S %Z}"
    )
    with connect(cfg.kept) as conn:
        now = conn.execute("SELECT clock_timestamp()::text AS t").fetchone()["t"]
    retire_state.write_proof(
        cfg, {"proven_at": now, "summary": summary, "tables": rows, "retired": fingerprints}
    )
    return StepResult("proof at the stop", summary, tables={"tables": table})
