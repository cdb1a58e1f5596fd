"""The warm standby runbook (notebooks/warm_standby.ipynb): one function per step."""

from runbook_lib.standby.archiving import configure_archiving
from runbook_lib.standby.backup import build_standby
from runbook_lib.standby.compare import compare_row_counts
from runbook_lib.standby.config import StandbyConfig, from_namespace, validate
from runbook_lib.standby.drill import failover_drill
from runbook_lib.standby.monitoring import status
from runbook_lib.standby.preflight import preflight
from runbook_lib.standby.runbook import STEPS, make_runbook

__all__ = [
    "STEPS",
    "StandbyConfig",
    "build_standby",
    "compare_row_counts",
    "configure_archiving",
    "failover_drill",
    "from_namespace",
    "make_runbook",
    "preflight",
    "status",
    "validate",
]
