"""The Bucardo bootstrap notebook's steps as a Runbook (runbook_lib.steps): per-step state,
duration and results in the run archive, the JupyterLab step panel, and dry runs.

In a dry run the read-only steps (preflight, verify) run for real and every changing step shows
the commands and SQL it would run, built by the same functions the step uses. Verify then finds
no target to compare (it says so) or compares without kicking Bucardo, so a dry run leaves every
server as it was.
"""

from __future__ import annotations

from typing import Any

from runbook_lib.bucardo import schema
from runbook_lib.bucardo.config import BootstrapConfig
from runbook_lib.bucardo.copy import copy_data, plan_copy_data
from runbook_lib.bucardo.drain import enable_and_drain, plan_drain
from runbook_lib.bucardo.objects import create_bucardo_objects, plan_bucardo_objects
from runbook_lib.bucardo.preflight import preflight
from runbook_lib.bucardo.schema import create_target_schema, plan_target_schema
from runbook_lib.bucardo.sequences import apply_sequence_strategy, plan_sequences
from runbook_lib.bucardo.verify import both_directions, plan_both_directions, verify_databases
from runbook_lib.steps import NothingToObserve, Runbook, RunContext, Step, runbook_for

NOTEBOOK = "bucardo_bootstrap"


def _verify(run: RunContext) -> Any:
    if run.dry_run:
        marker = schema.target_marker(run.config)
        if not marker or not marker.reached("keys"):
            return NothingToObserve(
                "verify", "the target is not built yet (the changing steps only showed their plan)"
            )
    return verify_databases(run.config, kick=not run.dry_run)


STEPS = [
    Step("preflight", "1. Preflight (read-only)", lambda run: preflight(run.config), changes=False),
    Step("target_schema", "2. Target schema", lambda run: create_target_schema(run.config),
         changes=True, plan=lambda run: plan_target_schema(run.config)),
    Step("bucardo_objects", "3. Bucardo objects", lambda run: create_bucardo_objects(run.config),
         changes=True, plan=lambda run: plan_bucardo_objects(run.config)),
    Step("data_copy", "4. Data copy", lambda run: copy_data(run.config),
         changes=True, plan=lambda run: plan_copy_data(run.config)),
    Step("sequences", "5. Sequences", lambda run: apply_sequence_strategy(run.config),
         changes=True, plan=lambda run: plan_sequences(run.config)),
    Step("enable_and_drain", "6. Enable and drain", lambda run: enable_and_drain(run.config),
         changes=True, plan=lambda run: plan_drain(run.config)),
    Step("verify", "7. Verify", _verify, changes=False),
    Step("both_directions", "8. Both directions", lambda run: both_directions(run.config),
         changes=True, plan=lambda run: plan_both_directions(run.config)),
]  # fmt: skip


def make_runbook(
    config: BootstrapConfig, *, dry_run: bool = False, interactive: bool = False
) -> Runbook:
    return runbook_for(NOTEBOOK, STEPS, config, dry_run=dry_run, interactive=interactive)
