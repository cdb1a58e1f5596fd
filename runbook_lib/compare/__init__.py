"""The verification engine: prove two databases hold the same rows, or show where they differ.

from runbook_lib.compare import compare_databases, row_counts
result = compare_databases(here, there, settle=wait_for_drain)
result.raise_if_different()
"""

from runbook_lib.compare.conninfo import endpoint_from_conninfo
from runbook_lib.compare.counts import row_counts
from runbook_lib.compare.engine import compare_databases
from runbook_lib.compare.keys import list_tables
from runbook_lib.compare.result import Comparison, DataMismatch

__all__ = [
    "Comparison",
    "DataMismatch",
    "compare_databases",
    "endpoint_from_conninfo",
    "list_tables",
    "row_counts",
]
