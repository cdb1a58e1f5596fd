"""Bucardo master/master bootstrap: one module per step, each step idempotent.

The notebook notebooks/bucardo_bootstrap.ipynb validates its parameters (from_namespace) and
runs the steps through make_runbook (runbook_lib.steps): preflight, create_target_schema,
create_bucardo_objects, copy_data, apply_sequence_strategy, enable_and_drain, verify_databases,
both_directions; each is also callable on its own.

notebooks/bucardo_retire.ipynb, the end of the replication (after an upgrade), has its steps in
runbook_lib.bucardo.retire (one module per step: retire_preflight, retire_stop, retire_proof,
retire_remove, retire_control, retire_sequences, retire_check).
"""

from runbook_lib.bucardo.config import BootstrapConfig, from_namespace, validate_parameters
from runbook_lib.bucardo.copy import copy_data
from runbook_lib.bucardo.drain import enable_and_drain, wait_caught_up
from runbook_lib.bucardo.objects import create_bucardo_objects
from runbook_lib.bucardo.preflight import preflight
from runbook_lib.bucardo.queue import delta_queue
from runbook_lib.bucardo.roles import copy_roles, role_checks
from runbook_lib.bucardo.runbook import make_runbook
from runbook_lib.bucardo.schema import create_target_schema
from runbook_lib.bucardo.sequences import apply_sequence_strategy
from runbook_lib.bucardo.verify import both_directions, verify_databases

__all__ = [
    "BootstrapConfig",
    "apply_sequence_strategy",
    "both_directions",
    "copy_data",
    "copy_roles",
    "create_bucardo_objects",
    "create_target_schema",
    "delta_queue",
    "make_runbook",
    "enable_and_drain",
    "from_namespace",
    "preflight",
    "role_checks",
    "validate_parameters",
    "verify_databases",
    "wait_caught_up",
]
