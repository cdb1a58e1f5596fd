"""Retire step: the sync, relgroup, dbgroup and both databases leave Bucardo's control database
(`bucardo remove`, as Bucardo's OS user), and the daemon this bootstrap started is stopped if it
runs again. The control database itself stays: it may serve other syncs, and holds the history of
this one's runs (bucardo.syncrun)."""

from __future__ import annotations

import pandas as pd

from runbook_lib.bucardo import catalog, retire_leftovers, retire_state
from runbook_lib.bucardo.ctl import BucardoCtl
from runbook_lib.bucardo.result import StepResult
from runbook_lib.bucardo.retire_config import RetireConfig
from runbook_lib.connection import connect
from runbook_lib.errors import CommandFailed, PartiallyApplied, PreconditionError


def remove_commands(cfg: RetireConfig, left: dict[str, list[str]]) -> list[list[str]]:
    """`bucardo remove ...` for what is left, in an order its foreign keys accept: the sync,
    then its relgroup and dbgroup, then the databases (--force: with their table entries)."""
    order = (("sync", "sync"), ("relgroup", "relgroup"), ("dbgroup", "dbgroup"))
    commands = [["remove", noun, *left[kind]] for kind, noun in order if left.get(kind)]
    if left.get("db"):
        commands.append(["remove", "db", *left["db"], "--force"])
    return commands


def _left(cfg: RetireConfig) -> dict[str, list[str]]:
    b = cfg.bootstrap
    with connect(b.control_admin, application_name="runbook_bucardo_retire") as admin:
        if not catalog.database_exists(admin, b.bucardo_dbname):
            return {}
    with connect(b.control, application_name="runbook_bucardo_retire") as conn:
        return retire_leftovers.in_control(conn, b)


def _clear_stale_runs(cfg: RetireConfig) -> int:
    """The daemon is stopped: Bucardo's notes of this sync's runs in progress are stale."""
    b = cfg.bootstrap
    with connect(b.control_admin, application_name="runbook_bucardo_retire") as admin:
        if not catalog.database_exists(admin, b.bucardo_dbname):
            return 0
    with connect(b.control, application_name="runbook_bucardo_retire") as conn:
        if not retire_leftovers.running_entries(conn, b):
            return 0
        return conn.execute(retire_leftovers.STALE_RUNS_SQL, [b.sync]).rowcount


def remove_from_control(cfg: RetireConfig) -> StepResult:
    record = retire_state.read(cfg)
    if record is None:
        raise PreconditionError(
            "replication is not stopped yet (the stop step): removing the sync from Bucardo "
            "now would leave its triggers logging changes nobody replicates; nothing was changed"
        )
    bucardo = BucardoCtl(cfg.bootstrap)
    done: list[str] = []
    if pid := bucardo.mcp_pid():
        bucardo.stop()
        done.append(f"daemon (MCP pid {pid}) stopped")
    for args in remove_commands(cfg, _left(cfg)):
        try:
            bucardo.run(args)
        except CommandFailed as exc:
            if not done:
                raise
            raise PartiallyApplied("removing the sync from Bucardo", done, str(exc)) from exc
        done.append(" ".join(args[:2]) + " " + ", ".join(a for a in args[2:] if a != "--force"))
    if stale := _clear_stale_runs(cfg):
        done.append(f"{stale} stale notes of runs in progress cleared (bucardo.dbrun)")
    if left := _left(cfg):
        raise PartiallyApplied("removing the sync from Bucardo", done, f"still there: {left}")
    return StepResult(
        "remove from Bucardo",
        "; ".join(done) if done else "nothing of this sync is left in Bucardo's control database",
        already_done=not done,
        tables={"removed": pd.DataFrame({"change": done}, columns=["change"])},
    )


def plan_control(cfg: RetireConfig) -> list[str]:
    bucardo = BucardoCtl(cfg.bootstrap)
    actions = [bucardo.shown(a) for a in remove_commands(cfg, _left(cfg))]
    actions.append(
        f"on {cfg.bootstrap.control}: {retire_leftovers.STALE_RUNS_SQL % repr(cfg.bootstrap.sync)}"
        "  # Bucardo's notes of runs in progress, stale once the daemon is stopped (if any)"
    )
    return actions
