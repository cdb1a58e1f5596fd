"""Retire step: stop replication.

First every change logged on the database that goes is replicated (it takes no application
writes, so its queue empties), and the kept side's backlog up to now; then the daemon this
bootstrap started is stopped, by the pid in its own run directory (`bucardo stop`, then waiting
for that process to exit). Bucardo's triggers stay for now: the kept side's changes since the
stop keep landing in its delta tables, which is what lets the next step prove the retired copy
equal to the kept side as of the stop. The application never notices: its triggers still insert
into the delta tables exactly as before."""

from __future__ import annotations

from runbook_lib.bucardo import drain, queue, retire_state
from runbook_lib.bucardo.ctl import BucardoCtl
from runbook_lib.bucardo.result import StepResult
from runbook_lib.bucardo.retire_config import RetireConfig
from runbook_lib.connection import connect
from runbook_lib.errors import PartiallyApplied, PreconditionError, WaitTimeout


def retired_pending(cfg: RetireConfig) -> int:
    rows = queue.queue_rows(cfg.bootstrap)
    return sum(r["pending_rows"] for r in rows if r["db"] == cfg.retired_name)


def _kept_clock(cfg: RetireConfig):
    with connect(cfg.kept, application_name="runbook_bucardo_retire") as conn:
        return conn.execute("SELECT clock_timestamp() AS t").fetchone()["t"]


def _stop_daemon_again(cfg: RetireConfig, record: retire_state.Record) -> StepResult:
    bucardo = BucardoCtl(cfg.bootstrap)
    pid = bucardo.mcp_pid()
    if pid:  # started again since (by hand?): it would replicate half a retirement
        bucardo.stop()
    return StepResult(
        "stop replication",
        f"replication was stopped at {record.stopped_at:%Y-%m-%d %H:%M:%S %Z}"
        + (f"; the daemon had been started again (pid {pid}) and is stopped" if pid else ""),
        already_done=not pid,
    )


def _already_stopped(cfg: RetireConfig) -> StepResult:
    """No daemon, no record (stopped by hand, or a run cut off between the two): the stop is
    recorded if nothing made on the retired side is left to replicate."""
    if pending := retired_pending(cfg):
        raise PreconditionError(
            f"the Bucardo daemon is not running and {pending} changes made on "
            f"{cfg.retired_name} have not reached {cfg.kept_name}: start it (the bootstrap's "
            "Bucardo objects step), let it catch up and re-run; nothing was changed"
        )
    stopped_at = _kept_clock(cfg)
    retire_state.write_stopped(cfg, stopped_at)
    return StepResult(
        "stop replication",
        f"the daemon was not running; every change made on {cfg.retired_name} had reached "
        f"{cfg.kept_name}: replication counts as stopped at {stopped_at:%H:%M:%S %Z}",
    )


def stop_replication(cfg: RetireConfig) -> StepResult:
    """Drain the retired side's queue, stop the daemon, record the moment on the retired side."""
    b = cfg.bootstrap
    record = retire_state.read(cfg)
    if record:
        return _stop_daemon_again(cfg, record)
    bucardo = BucardoCtl(b)
    pid = bucardo.mcp_pid()
    if not pid:
        return _already_stopped(cfg)
    try:
        state = drain.wait_caught_up(b, timeout_s=b.drain_timeout_s)
    except WaitTimeout as exc:
        raise PreconditionError(
            f"Bucardo did not catch up within drain_timeout_s={b.drain_timeout_s:g} s "
            f"({exc.last_observed!r}); nothing was changed"
        ) from exc
    if pending := retired_pending(cfg):
        raise PreconditionError(
            f"{pending} changes made on {cfg.retired_name}, the database that goes, are still "
            f"waiting to reach {cfg.kept_name}: the application writes there. Move it to "
            f"{cfg.kept_name} and re-run; nothing was changed"
        )
    before = queue.delta_queue(b)
    bucardo.stop()
    stopped_at = _kept_clock(cfg)
    done = [f"Bucardo daemon (MCP pid {pid}) stopped"]
    if pending := retired_pending(cfg):
        raise PartiallyApplied(
            "stopping replication", done,
            f"{pending} changes were made on {cfg.retired_name} while the daemon stopped: they "
            f"never reached {cfg.kept_name}. Replay them on {cfg.kept_name} (or start the daemon "
            "again, let it catch up, and re-run)",
        )  # fmt: skip
    retire_state.write_stopped(cfg, stopped_at)
    return StepResult(
        "stop replication",
        f"replication stopped at {stopped_at:%H:%M:%S %Z} (daemon pid {pid} exited); every change "
        f"made on {cfg.retired_name} had reached {cfg.kept_name}; changes on {cfg.kept_name} "
        f"since are logged by Bucardo's triggers until they are removed (pending then: "
        f"{state.pending})",
        tables={"delta queue at the stop": before},
    )


def plan_stop(cfg: RetireConfig) -> list[str]:
    bucardo = BucardoCtl(cfg.bootstrap)
    stop = ["stop", "--piddir", str(bucardo.daemondir)]
    return [
        bucardo.shown(bucardo.kick_args(1))
        + f"  # until every change logged before now is replicated "
        f"(at most {cfg.bootstrap.drain_timeout_s:g} s) and {cfg.retired_name}'s queue is empty",
        bucardo.shown(stop)
        + (
            f"  # then wait for MCP pid {pid} to exit"
            if (pid := bucardo.mcp_pid())
            else "  # not needed now: the daemon is not running"
        ),
        f"on {cfg.retired}: CREATE SCHEMA IF NOT EXISTS {retire_state.SCHEMA}; CREATE TABLE IF "
        f"NOT EXISTS {retire_state.SCHEMA}.{retire_state.TABLE} (...); INSERT the moment "
        "replication stopped",
    ]
