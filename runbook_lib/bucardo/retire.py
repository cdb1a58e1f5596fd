"""Retire a Bucardo master/master pair: the steps of notebooks/bucardo_retire.ipynb as a Runbook
(runbook_lib.steps): per-step state, duration and results in the run archive, the JupyterLab step
panel, and dry runs.

In a dry run preflight and the final verify run for real (verify without kicking Bucardo or
holding a row); every changing step shows the commands and SQL it would run, and the proof and
the final check, with nothing stopped yet, say there is nothing to look at."""

from __future__ import annotations

from typing import Any

from runbook_lib.bucardo import retire_state
from runbook_lib.bucardo.ctl import BucardoCtl
from runbook_lib.bucardo.result import StepResult
from runbook_lib.bucardo.retire_check import final_check
from runbook_lib.bucardo.retire_config import RetireConfig, from_namespace
from runbook_lib.bucardo.retire_control import plan_control, remove_from_control
from runbook_lib.bucardo.retire_preflight import preflight
from runbook_lib.bucardo.retire_proof import prove_cut
from runbook_lib.bucardo.retire_remove import plan_remove, remove_from_masters
from runbook_lib.bucardo.retire_sequences import plan_restore, restore_increments
from runbook_lib.bucardo.retire_stop import plan_stop, stop_replication
from runbook_lib.bucardo.verify import verify_databases
from runbook_lib.steps import NothingToObserve, Runbook, RunContext, Step, runbook_for

NOTEBOOK = "bucardo_retire"


def _verify(run: RunContext) -> Any:
    cfg: RetireConfig = run.config
    record = retire_state.read(cfg)
    if record is not None:
        return StepResult(
            "verify",
            f"replication was stopped at {record.stopped_at:%Y-%m-%d %H:%M:%S %Z} by an earlier "
            "run: the two databases are compared as of that moment by the proof step",
            already_done=True,
        )
    if not BucardoCtl(cfg.bootstrap).mcp_pid():
        return StepResult(
            "verify",
            "not run: the Bucardo daemon is not running, so changes in flight cannot be told "
            "from differences; the proof at the stop (step 4) compares the two databases",
        )
    return verify_databases(cfg.bootstrap, kick=not run.dry_run)


def _after_stop(step: str, function, needs: str) -> Any:
    """A step that reads what the stop left: in a dry run only once an earlier (real) run got
    that far (`needs`: the recorded stage), so that it only ever reads."""

    def run_it(run: RunContext) -> Any:
        record = retire_state.read(run.config) if run.dry_run else None
        if run.dry_run and (record is None or not record.reached(needs)):
            return NothingToObserve(
                step, "replication is not stopped and proven (the stop step only showed its plan)"
            )
        return function(run.config)

    return run_it


STEPS = [
    Step("preflight", "1. Preflight (read-only)", lambda run: preflight(run.config),
         changes=False),
    Step("verify", "2. Final verify (read-only)", _verify, changes=False),
    Step("stop", "3. Stop replication", lambda run: stop_replication(run.config),
         changes=True, plan=lambda run: plan_stop(run.config)),
    Step("proof", "4. Proof at the stop", _after_stop("proof", prove_cut, "proven"),
         changes=False),
    Step("remove_from_databases", "5. Remove Bucardo from both databases",
         lambda run: remove_from_masters(run.config),
         changes=True, plan=lambda run: plan_remove(run.config)),
    Step("remove_from_control", "6. Remove the sync from Bucardo",
         lambda run: remove_from_control(run.config),
         changes=True, plan=lambda run: plan_control(run.config)),
    Step("sequences", "7. Sequences count by 1", lambda run: restore_increments(run.config),
         changes=True, plan=lambda run: plan_restore(run.config)),
    Step("final_check", "8. Final check (read-only)",
         _after_stop("final_check", final_check, "proven"), changes=False),
]  # fmt: skip


def make_runbook(
    config: RetireConfig, *, dry_run: bool = False, interactive: bool = False
) -> Runbook:
    return runbook_for(NOTEBOOK, STEPS, config, dry_run=dry_run, interactive=interactive)


__all__ = ["RetireConfig", "from_namespace", "make_runbook"]
