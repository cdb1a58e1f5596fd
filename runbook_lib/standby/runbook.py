"""The warm standby notebook's steps as a Runbook (runbook_lib.steps): per-step state, duration
and results in the run archive, the JupyterLab step panel, and dry runs.

In a dry run the read-only steps run for real and the changing ones (archiving, standby build,
failover drill) show their plan. Status and compare then find no standby to look at: they say
so instead of failing, and even with a standby they write nothing (no heartbeat row, no WAL
switch), so a dry run leaves every server as it was.
"""

from __future__ import annotations

from typing import Any

from runbook_lib.standby.archiving import configure_archiving, plan_archiving
from runbook_lib.standby.backup import build_standby, in_recovery, plan_build
from runbook_lib.standby.compare import compare_row_counts
from runbook_lib.standby.config import StandbyConfig
from runbook_lib.standby.drill import failover_drill, plan_drill
from runbook_lib.standby.monitoring import status
from runbook_lib.standby.preflight import preflight
from runbook_lib.steps import NothingToObserve, Runbook, RunContext, Step, runbook_for

NOTEBOOK = "warm_standby"


NO_STANDBY = (
    "the standby does not exist (or is not running): the build step only showed its plan; "
    "a real run builds it"
)


def _preflight(run: RunContext) -> Any:
    return preflight(run.config)


def _configure_archiving(run: RunContext) -> Any:
    return configure_archiving(run.config)


def _build_standby(run: RunContext) -> Any:
    return build_standby(run.config)


def _status(run: RunContext) -> Any:
    if run.dry_run and not run.config.standby_cluster().is_running():
        return NothingToObserve("status", NO_STANDBY)
    return status(run.config, heartbeat=not run.dry_run)


def _compare(run: RunContext) -> Any:
    if run.dry_run and run.config.hot_standby and in_recovery(run.config) is None:
        return NothingToObserve("compare", NO_STANDBY)
    return compare_row_counts(run.config, settle=not run.dry_run)


def _failover_drill(run: RunContext) -> Any:
    return failover_drill(run.config)


STEPS = [
    Step("preflight", "1. Preflight (read-only)", _preflight, changes=False),
    Step(
        "configure_archiving",
        "2. Archiving on the primary",
        _configure_archiving,
        changes=True,
        plan=lambda run: plan_archiving(run.config),
    ),
    Step(
        "build_standby",
        "3. Base backup, recovery settings, standby started",
        _build_standby,
        changes=True,
        plan=lambda run: plan_build(run.config),
    ),
    Step("status", "4. Status", _status, changes=False),
    Step("compare", "5. Compare row counts", _compare, changes=False),
    Step(
        "failover_drill",
        "6. Failover drill",
        _failover_drill,
        changes=True,
        plan=lambda run: plan_drill(run.config),
    ),
]


def make_runbook(
    config: StandbyConfig, *, dry_run: bool = False, interactive: bool = False
) -> Runbook:
    return runbook_for(NOTEBOOK, STEPS, config, dry_run=dry_run, interactive=interactive)
