"""Retire's last step, read-only: nothing of Bucardo is left anywhere, the daemon is gone, the
kept database's sequences count by 1, and the retired copy is unchanged since the proof made
when replication stopped (so both databases held the same rows then, and nothing was lost
since on the side that goes)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from runbook_lib.bucardo import (
    catalog,
    retire_leftovers,
    retire_proof,
    retire_sequences,
    retire_state,
)
from runbook_lib.bucardo.ctl import BucardoCtl
from runbook_lib.bucardo.inflight import KeyTracker
from runbook_lib.bucardo.result import StepResult
from runbook_lib.bucardo.retire_config import RetireConfig
from runbook_lib.connection import connect
from runbook_lib.errors import PreconditionError, RunbookError


class NotRetired(RunbookError):
    """Something of the replication is still there, or the retired copy changed."""


def _masters(cfg: RetireConfig, rows: list[dict[str, Any]]) -> None:
    for name, ep in cfg.sides().items():
        with connect(ep, application_name="runbook_bucardo_retire") as conn:
            left = retire_leftovers.on_master(conn)
            marker = catalog.read_marker(conn, ep.dbname)
        for kind, items in left.items():
            rows.append({"check": f"{name}: Bucardo {kind}", "ok": not items,
                         "detail": ", ".join(items[:5]) or "none"})  # fmt: skip
        rows.append({"check": f"{name}: bootstrap marker", "ok": marker is None,
                     "detail": marker.text() if marker else "none"})  # fmt: skip


def _control(cfg: RetireConfig, rows: list[dict[str, Any]]) -> None:
    b = cfg.bootstrap
    with connect(b.control_admin, application_name="runbook_bucardo_retire") as admin:
        exists = catalog.database_exists(admin, b.bucardo_dbname)
    left, running = {}, 0
    if exists:
        with connect(b.control, application_name="runbook_bucardo_retire") as conn:
            left = retire_leftovers.in_control(conn, b)
            running = retire_leftovers.running_entries(conn, b)
    if running:
        left["dbrun"] = [f"{running} runs noted as in progress"]
    rows.append({"check": "control database", "ok": not left,
                 "detail": str(left) if left else f"nothing of sync {b.sync} (Bucardo keeps "
                 "the history of its runs in bucardo.syncrun, without its name)"})  # fmt: skip
    pid = BucardoCtl(b).mcp_pid()
    rows.append({"check": "Bucardo daemon", "ok": pid is None,
                 "detail": f"MCP pid {pid} runs" if pid else "not running"})  # fmt: skip


def _sequences(cfg: RetireConfig, rows: list[dict[str, Any]]) -> None:
    table = retire_sequences.sequence_table(cfg)
    column = f"increment on {cfg.kept_name}"
    odd = table[table[column] != retire_sequences.NORMAL_INCREMENT]
    rows.append({"check": f"{cfg.kept_name}: sequences count by 1", "ok": odd.empty,
                 "detail": ", ".join(odd["sequence"]) if len(odd)
                 else f"{len(table)} sequences"})  # fmt: skip


def _retired_unchanged(cfg: RetireConfig, record: retire_state.Record, rows: list) -> None:
    recorded = record.proof.get("retired", {})
    b = cfg.bootstrap
    with KeyTracker(b, (b.here, b.there), hold=False) as tracker:
        now = retire_proof.retired_fingerprints(tracker, cfg, list(recorded))
    changed = [t for t in recorded if now.get(t) != recorded[t]]
    rows.append({
        "check": f"{cfg.retired_name} unchanged since the proof",
        "ok": not changed,
        "detail": f"changed: {', '.join(changed)}" if changed
        else f"{len(recorded)} tables: same rows and row hashes as at {record.proof['proven_at']}",
    })  # fmt: skip


def final_check(cfg: RetireConfig) -> StepResult:
    record = retire_state.read(cfg)
    if record is None or not record.reached("proven"):
        raise PreconditionError("the retire has not got this far: run the steps before this one")
    rows: list[dict[str, Any]] = []
    _masters(cfg, rows)
    _control(cfg, rows)
    _sequences(cfg, rows)
    _retired_unchanged(cfg, record, rows)
    checks = pd.DataFrame(rows)
    failed = checks[~checks["ok"]]
    if len(failed):
        raise NotRetired(
            "not retired cleanly: "
            + "; ".join(f"{r['check']}: {r['detail']}" for r in failed.to_dict("records"))
            + ". Re-run the step that handles it"
        )
    return StepResult(
        "final check",
        f"{record.proof['summary']}; {cfg.retired_name} unchanged since; no Bucardo schema, "
        f"trigger or function on either database, nothing of sync {cfg.bootstrap.sync} in "
        f"Bucardo's control database, the daemon stopped; {cfg.kept_name}'s sequences count by 1",
        tables={"checks": checks, "proof at the stop": pd.DataFrame(record.proof["tables"])},
    )
