"""What a step's result leaves in the run's results/ folder, for auditors."""

from __future__ import annotations

import json

import pandas as pd

from runbook_lib import record
from runbook_lib.bucardo.result import StepResult


def test_a_step_results_named_tables_are_archived_as_json_and_csv(tmp_path, monkeypatch):
    monkeypatch.setenv(record.RUN_DIR_ENV, str(tmp_path))
    tables = {
        "tables": pd.DataFrame({"table": ["public.foo"], "verdict": ["identical"]}),
        "keys": pd.DataFrame({"table": [], "key": []}),
    }
    written = record.record_result(
        "verify", StepResult("verify", "identical: 1 table", False, tables)
    )
    names = sorted(p.name for p in written)
    assert names == [
        "verify-keys.csv", "verify-keys.json", "verify-tables.csv", "verify-tables.json",
        "verify.summary.json",
    ]  # fmt: skip
    assert "public.foo,identical" in (tmp_path / "results" / "verify-tables.csv").read_text()
    summary = json.loads((tmp_path / "results" / "verify.summary.json").read_text())
    assert summary == {"step": "verify", "summary": "identical: 1 table", "already_done": False}
