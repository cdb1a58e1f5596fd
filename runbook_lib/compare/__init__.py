"""The verification engine: prove two databases hold the same rows, or show where they differ.

    from runbook_lib.compare import compare_databases, row_counts
    result = compare_databases(here, there, settle=wait_for_drain)
    result.raise_if_different()

Names are loaded on first use, so `runbook --help` does not import pandas.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Comparison": "result",
    "DataMismatch": "result",
    "compare_databases": "engine",
    "endpoint_from_conninfo": "conninfo",
    "list_tables": "keys",
    "row_counts": "counts",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from runbook_lib.compare.conninfo import endpoint_from_conninfo as endpoint_from_conninfo
    from runbook_lib.compare.counts import row_counts as row_counts
    from runbook_lib.compare.engine import compare_databases as compare_databases
    from runbook_lib.compare.keys import list_tables as list_tables
    from runbook_lib.compare.result import Comparison as Comparison
    from runbook_lib.compare.result import DataMismatch as DataMismatch


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
