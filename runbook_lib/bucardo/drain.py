"""Step 6: autokick on, reload, kick with a timeout, and wait until the backlog logged before the
switch is replicated (the backlog never drains by itself: it needs a kick or a new write).

"Caught up" means every change logged before the wait began is replicated, so the step finishes
(and a re-run reports done) while the application keeps writing. The wait watches the daemon and
stops at once when it is gone (waiting longer cannot help); a database that cannot be reached
for a moment (a restart) is retried for CONNECTION_RETRY_S, as Bucardo itself reconnects."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import pandas as pd
import psycopg

from runbook_lib.bucardo import catalog, ctl, queue, triggers
from runbook_lib.bucardo.config import BootstrapConfig
from runbook_lib.bucardo.ctl import BucardoCtl
from runbook_lib.bucardo.result import StepResult
from runbook_lib.connection import connect
from runbook_lib.errors import CommandFailed, PartiallyApplied, PreconditionError, WaitTimeout
from runbook_lib.waiting import wait_until

KICK_WAIT_S = 10
SAMPLE_INTERVAL_S = 0.5
CONNECTION_RETRY_S = 30  # a server restarting: reads and kicks are retried this long
RESPAWN_WAIT_S = 25  # Bucardo's mcp_dbproblem_sleep (15 s) and its start-up

log = logging.getLogger("runbook_lib")
T = TypeVar("T")


@dataclass(repr=False)
class DrainResult(StepResult):
    timeline: pd.DataFrame = field(default_factory=pd.DataFrame)

    def plot(self):
        """Pending deltas over time, one line per database."""
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3))
        if len(self.timeline):
            wide = self.timeline.pivot_table(
                index="elapsed_s", columns="db", values="pending", aggfunc="sum"
            )
            wide.plot(ax=ax, drawstyle="steps-post")
        ax.set_xlabel("seconds since autokick")
        ax.set_ylabel("pending delta rows")
        ax.set_title("Bucardo backlog while draining")
        plt.close(fig)
        return fig


def enable_commands(cfg: BootstrapConfig) -> list[list[str]]:
    return [["update", "sync", cfg.sync, "autokick=1"], ["reload", "config"]]


def plan_drain(cfg: BootstrapConfig) -> list[str]:
    """What enable_and_drain would run (read-only)."""
    bucardo = BucardoCtl(cfg)
    kick = triggers.kick_trigger(cfg.sync)
    return (
        [
            "on each master, per replicated table, in its own transaction with a short "
            f"lock_timeout (retried): CREATE TRIGGER {kick} AFTER INSERT OR UPDATE OR DELETE OR "
            f"TRUNCATE ON <table> FOR EACH STATEMENT EXECUTE FUNCTION bucardo.{kick}()"
        ]
        + [bucardo.shown(args) for args in enable_commands(cfg)]
        + [
            bucardo.shown(bucardo.kick_args(1))
            + f"  # every {KICK_WAIT_S} s until every change logged before the step is replicated "
            f"(at most {cfg.drain_timeout_s:g} s)"
        ]
    )


def _check_ready(cfg: BootstrapConfig, bucardo: BucardoCtl) -> None:
    with connect(cfg.target_admin) as admin:
        marker = catalog.read_marker(admin, cfg.pgdatabase)
    if not marker or not marker.reached("keys"):
        raise PreconditionError(
            "the target has no keys yet (data copy not finished); Bucardo deletes and copies by "
            "key, so the backlog is drained only after the data copy step"
        )
    if not _daemon_running(bucardo):
        raise PreconditionError(
            f"the Bucardo daemon is not running (no live pid in "
            f"{ctl.daemon_dir(cfg.bucardo_rundir)}; see {ctl.log_location(cfg)}); re-run the "
            "Bucardo objects step, which starts it"
        )


def _daemon_running(bucardo: BucardoCtl) -> bool:
    """Running now, or back within RESPAWN_WAIT_S: after a database problem Bucardo removes its
    pid file, sleeps and starts itself again. A pid file naming a dead process: killed, no wait."""
    if bucardo.mcp_pid():
        return True
    if bucardo.mcp_pidfile():
        return False
    try:
        wait_until(bucardo.mcp_pid, what="Bucardo's respawn", timeout_s=RESPAWN_WAIT_S,
                   interval_s=SAMPLE_INTERVAL_S)  # fmt: skip
    except WaitTimeout:
        return False
    return True


def daemon_gone_message(cfg: BootstrapConfig, pid: int | None, waited_s: float) -> str:
    what = f"the Bucardo daemon (MCP pid {pid})" if pid else "the Bucardo daemon"
    return (
        f"{what} is no longer running ({waited_s:.0f} s into the wait; see "
        f"{ctl.log_location(cfg)} for why). Nothing is lost: changes stay in the "
        "delta queue until it runs again. Re-run the Bucardo objects step (3), which starts the "
        "daemon, then re-run this step; waiting longer would not help"
    )


class DaemonWatch:
    """Whether the daemon is still there, told apart from Bucardo's own respawn.

    After a database problem the MCP removes its pid file, sleeps (mcp_dbproblem_sleep, 15 s)
    and starts itself again under a new pid: alive while a pid seen before still runs, and for
    RESPAWN_WAIT_S without any (until the new MCP writes its pid file). A daemon killed outright
    (kill -9) leaves its pid file behind with a dead pid: gone at once."""

    def __init__(self, bucardo: BucardoCtl) -> None:
        self.bucardo = bucardo
        self.first = bucardo.mcp_pid()
        self.seen = {self.first} if self.first else set()
        self.missing_since: float | None = None

    def alive(self) -> bool:
        pid = self.bucardo.mcp_pid()
        if pid:
            self.seen.add(pid)
            self.missing_since = None
            return True
        if any(self.bucardo.pid_running(p) for p in self.seen):
            return True  # respawning: the old MCP sleeps, then starts a new one
        if self.bucardo.mcp_pidfile():
            return False  # a pid file naming a dead process: killed, not respawning
        now = time.monotonic()
        self.missing_since = self.missing_since or now
        return now - self.missing_since < RESPAWN_WAIT_S


def _is_connection_error(exc: BaseException) -> bool:
    """A server unreachable or restarting (connect() wraps OperationalError)."""
    return isinstance(exc, psycopg.OperationalError) or (
        isinstance(exc, PreconditionError) and isinstance(exc.__cause__, psycopg.OperationalError)
    )


class _Retry:
    """Tolerates failures of one kind for `window_s` in a row, then lets the last one through."""

    def __init__(self, what: str, window_s: float) -> None:
        self.what = what
        self.window_s = window_s
        self.since: float | None = None

    def ok(self) -> None:
        self.since = None

    def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        self.since = self.since or now
        log.info("%s failed, retrying: %s", self.what, exc)
        if now - self.since > self.window_s:
            raise PreconditionError(
                f"{self.what} kept failing for {self.window_s:g} s: {exc}"
            ) from exc


def retry_connection(fn: Callable[[], T], what: str, window_s: float = CONNECTION_RETRY_S) -> T:
    """fn(), retried while a server is unreachable (a restart), for at most window_s."""
    retry = _Retry(what, window_s)
    while True:
        try:
            return fn()
        except (psycopg.OperationalError, PreconditionError) as exc:
            if not _is_connection_error(exc):
                raise
            retry.failed(exc)
        time.sleep(SAMPLE_INTERVAL_S)


def wait_caught_up(
    cfg: BootstrapConfig,
    *,
    timeout_s: float,
    strict: bool = False,
    samples: list[dict] | None = None,
    kick: bool = True,
) -> queue.SyncState:
    """Kick and wait until every change logged before now is replicated (strict: nothing pending
    and no run in progress, last run not failed). Raises WaitTimeout with the last state, and
    PreconditionError at once when the daemon stops running. A server that cannot be reached
    (a restart) is retried for CONNECTION_RETRY_S: Bucardo itself reconnects."""
    bucardo = BucardoCtl(cfg)
    mark = retry_connection(lambda: queue.now_on(cfg), "reading the clock of both databases")
    started = time.monotonic()
    daemon = DaemonWatch(bucardo)
    last_kick = [0.0]
    reads = _Retry("reading the delta queue (a database unreachable)", CONNECTION_RETRY_S)
    kicks = _Retry("bucardo kick", CONNECTION_RETRY_S)

    def probe() -> queue.SyncState | None:
        if not daemon.alive():
            elapsed = time.monotonic() - started
            raise PreconditionError(daemon_gone_message(cfg, daemon.first, elapsed))
        try:
            state = queue.sync_state(cfg, mark)
        except (psycopg.OperationalError, PreconditionError) as exc:
            if not _is_connection_error(exc):
                raise
            reads.failed(exc)
            return None
        reads.ok()
        if samples is not None:
            for db, n in state.pending.items():
                samples.append(
                    {"elapsed_s": round(time.monotonic() - started, 2), "db": db, "pending": n}
                )
        # a failed run (e.g. one killed by a reload or a restarted server) is retried by
        # Bucardo: keep waiting; a sync that stays failed (paused on a conflict) ends in
        # WaitTimeout showing its status
        if kick and not state.caught_up(strict) and time.monotonic() - last_kick[0] > KICK_WAIT_S:
            last_kick[0] = time.monotonic()
            try:
                bucardo.kick(1)
                kicks.ok()
            except CommandFailed as exc:  # e.g. the sync run failed on a restarting server
                kicks.failed(exc)
        return state

    return wait_until(
        probe,
        lambda s: s is not None and s.caught_up(strict),
        what=f"sync {cfg.sync} to replicate its backlog",
        timeout_s=timeout_s,
        interval_s=SAMPLE_INTERVAL_S,
    )


def _autokick(cfg: BootstrapConfig) -> bool:
    with connect(cfg.control) as conn:
        return conn.execute(
            "SELECT autokick FROM bucardo.sync WHERE name = %s", [cfg.sync]
        ).fetchone()["autokick"]


def enable_and_drain(cfg: BootstrapConfig) -> DrainResult:
    """Autokick on, reload, kick, wait until every change logged before the step started is
    replicated (writes may keep flowing); the queue before and after, a timeline."""
    bucardo = BucardoCtl(cfg)
    _check_ready(cfg, bucardo)
    before = retry_connection(lambda: queue.delta_queue(cfg), "reading the delta queue")
    autokick = _autokick(cfg)
    if not autokick:
        tables = [catalog.bucardo_table_name(d["tablename"]) for d in queue.delta_names_of(cfg)]
        for ep in cfg.databases().values():
            triggers.install_kick(cfg, ep, tables)  # one short lock per table, not Bucardo's
        for args in enable_commands(cfg):
            bucardo.run(args)
        bucardo.wait_for_controller()
    samples: list[dict] = []
    t0 = time.monotonic()
    try:
        state = wait_caught_up(cfg, timeout_s=cfg.drain_timeout_s, samples=samples)
    except WaitTimeout as exc:
        hint = (
            "the daemon runs: re-running this cell continues the wait"
            if bucardo.mcp_pid()
            else "the daemon is not running: re-run the Bucardo objects step (3), which starts "
            "it, then this step"
        )
        raise WaitTimeout(
            f"sync {cfg.sync} to replicate its backlog (see {ctl.log_location(cfg)}; {hint})",
            exc.timeout_s,
            exc.last_observed,
        ) from exc
    except PreconditionError as exc:
        if autokick:
            raise  # this run changed nothing
        raise PartiallyApplied(
            "the drain",
            [f"autokick switched on for sync {cfg.sync} and Bucardo reloaded"],
            str(exc),
        ) from exc
    seconds = time.monotonic() - t0
    after = retry_connection(lambda: queue.delta_queue(cfg), "reading the delta queue")
    backlog = int(before["pending_rows"].sum()) if len(before) else 0
    return DrainResult(
        "enable and drain",
        f"autokick {'already on' if autokick else 'switched on'}; caught up: every change logged "
        f"before the step started is replicated ({backlog} delta rows were pending then, "
        f"{seconds:.1f} s); pending now (written since) {state.pending}, "
        f"last run {state.last_status!r}",
        already_done=bool(autokick),
        tables={"delta queue before": before, "delta queue after": after},
        timeline=pd.DataFrame(samples, columns=["elapsed_s", "db", "pending"]),
    )
