"""Step 6: autokick on, reload, kick with a timeout, and wait until the backlog logged before the
switch is replicated (the backlog never drains by itself: it needs a kick or a new write)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pandas as pd

from runbook_lib.bucardo import catalog, queue
from runbook_lib.bucardo.config import BootstrapConfig
from runbook_lib.bucardo.ctl import BucardoCtl
from runbook_lib.bucardo.result import StepResult
from runbook_lib.connection import connect
from runbook_lib.errors import PreconditionError, WaitTimeout
from runbook_lib.host import display_command
from runbook_lib.waiting import wait_until

KICK_WAIT_S = 10
SAMPLE_INTERVAL_S = 0.5


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
    return [display_command(bucardo.argv(args)) for args in enable_commands(cfg)] + [
        display_command(bucardo.argv(bucardo.kick_args(1)))
        + f"  # every {KICK_WAIT_S} s until every change logged before the step is replicated "
        f"(at most {cfg.drain_timeout_s:g} s)"
    ]


def _check_ready(cfg: BootstrapConfig, bucardo: BucardoCtl) -> None:
    with connect(cfg.target_admin) as admin:
        marker = catalog.read_marker(admin, cfg.pgdatabase)
    if not marker or not marker.reached("keys"):
        raise PreconditionError(
            "the target has no keys yet (data copy not finished); Bucardo deletes and copies by "
            "key, so the backlog is drained only after the data copy step"
        )
    if not bucardo.mcp_pid():
        raise PreconditionError(
            f"the Bucardo daemon is not running (no live pid in {cfg.bucardo_rundir}/daemon); "
            "re-run the Bucardo objects step, which starts it"
        )


def wait_caught_up(
    cfg: BootstrapConfig,
    *,
    timeout_s: float,
    strict: bool = False,
    samples: list[dict] | None = None,
    kick: bool = True,
) -> queue.SyncState:
    """Kick and wait until every change logged before now is replicated (strict: nothing pending
    and no run in progress, last run not failed). Raises WaitTimeout with the last state."""
    bucardo = BucardoCtl(cfg)
    mark = queue.now_on(cfg)[cfg.here]
    started = time.monotonic()
    last_kick = [0.0]

    def probe() -> queue.SyncState:
        state = queue.sync_state(cfg, mark)
        if samples is not None:
            for db, n in state.pending.items():
                samples.append(
                    {"elapsed_s": round(time.monotonic() - started, 2), "db": db, "pending": n}
                )
        # a failed run (e.g. one killed by a reload) is retried by Bucardo: keep waiting; a
        # sync that stays failed (paused on a conflict) ends in WaitTimeout showing its status
        if kick and not state.caught_up(strict) and time.monotonic() - last_kick[0] > KICK_WAIT_S:
            last_kick[0] = time.monotonic()
            bucardo.kick(1)
        return state

    return wait_until(
        probe,
        lambda s: s.caught_up(strict),
        what=f"sync {cfg.sync} to replicate its backlog",
        timeout_s=timeout_s,
        interval_s=SAMPLE_INTERVAL_S,
    )


def settle(cfg: BootstrapConfig, timeout_s: float | None = None, *, kick: bool = True) -> None:
    """Wait until everything written before this call is replicated (for the verify step);
    kick=False only watches (a dry run changes nothing, not even Bucardo's schedule)."""
    wait_caught_up(cfg, timeout_s=timeout_s or cfg.drain_timeout_s, kick=kick)


def enable_and_drain(cfg: BootstrapConfig) -> DrainResult:
    """Autokick on, reload, kick, wait until caught up; the queue before and after, a timeline."""
    bucardo = BucardoCtl(cfg)
    _check_ready(cfg, bucardo)
    before = queue.delta_queue(cfg)
    with connect(cfg.control) as conn:
        autokick = conn.execute(
            "SELECT autokick FROM bucardo.sync WHERE name = %s", [cfg.sync]
        ).fetchone()["autokick"]
    if not autokick:
        for args in enable_commands(cfg):
            bucardo.run(args)
        bucardo.wait_for_controller()
    samples: list[dict] = []
    t0 = time.monotonic()
    try:
        state = wait_caught_up(cfg, timeout_s=cfg.drain_timeout_s, samples=samples)
    except WaitTimeout as exc:
        raise WaitTimeout(
            f"sync {cfg.sync} to replicate its backlog "
            f"(see {cfg.bucardo_rundir}/daemon/log.bucardo; "
            "re-running this cell continues the wait)",
            exc.timeout_s,
            exc.last_observed,
        ) from exc
    seconds = time.monotonic() - t0
    after = queue.delta_queue(cfg)
    backlog = int(before["pending_rows"].sum()) if len(before) else 0
    return DrainResult(
        "enable and drain",
        f"autokick {'already on' if autokick else 'switched on'}; backlog of {backlog} delta rows "
        f"replicated in {seconds:.1f} s; now pending {state.pending}, "
        f"last run {state.last_status!r}",
        already_done=bool(autokick) and backlog == 0,
        tables={"delta queue before": before, "delta queue after": after},
        timeline=pd.DataFrame(samples, columns=["elapsed_s", "db", "pending"]),
    )
