"""The step registry and the JupyterLab step panel, tested without a browser."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from runbook_lib import record
from runbook_lib.errors import ConfigurationError
from runbook_lib.panel import StepPanel, step_panel
from runbook_lib.steps import Plan, Runbook, Step, StepNeedsConfirmation


def _runbook(calls: list[str], **kwargs) -> Runbook:
    def look(ctx):
        calls.append("look")
        return pd.DataFrame({"table": ["public.foo"], "rows": [3]})

    def change(ctx):
        calls.append("change")
        return "changed"

    def broken(ctx):
        calls.append("broken")
        raise RuntimeError("server said no")

    steps = [
        Step("look", "Look around", look, changes=False),
        Step(
            "change",
            "Change something",
            change,
            changes=True,
            plan=lambda ctx: ["ALTER SYSTEM SET archive_mode = on"],
        ),
        Step("broken", "Broken step", broken, changes=False),
    ]
    return Runbook("demo", steps, context=None, **kwargs)


def test_headless_runbook_runs_changing_steps_without_waiting():
    calls: list[str] = []
    rb = _runbook(calls)
    rb.run("look")
    assert rb.run("change") == "changed"
    assert calls == ["look", "change"]
    assert rb.applied() == ["look", "change"] and rb.pending() == ["broken"]


def test_interactive_changing_step_requires_confirmation_and_does_not_run_without_it():
    calls: list[str] = []
    rb = _runbook(calls, interactive=True)
    rb.run("look")  # read-only: no confirmation needed
    with pytest.raises(StepNeedsConfirmation, match="Change something"):
        rb.run("change")
    assert calls == ["look"]
    rb.confirm("change")
    assert rb.run("change") == "changed"


def test_failed_step_is_recorded_with_its_error_and_stays_pending():
    rb = _runbook([])
    with pytest.raises(RuntimeError):
        rb.run("broken")
    state = rb.states["broken"]
    assert state.status == "failed" and "server said no" in state.error
    assert "broken" in rb.pending()


def test_dry_run_runs_read_only_steps_and_plans_changing_ones():
    calls: list[str] = []
    rb = _runbook(calls, dry_run=True, interactive=True)
    rb.run("look")
    plan = rb.run("change")
    assert isinstance(plan, Plan)
    assert plan.actions == ["ALTER SYSTEM SET archive_mode = on"]
    assert calls == ["look"]
    assert rb.states["change"].status == "planned"


def test_unknown_step_names_the_known_ones():
    with pytest.raises(ConfigurationError, match="look"):
        _runbook([]).run("nope")


def test_step_states_and_results_are_recorded_in_the_run_directory(tmp_path, monkeypatch):
    monkeypatch.setenv(record.RUN_DIR_ENV, str(tmp_path))
    rb = _runbook([])
    rb.run("look")
    steps = json.loads((tmp_path / "steps.json").read_text())
    assert [(s["step"], s["status"]) for s in steps] == [
        ("look", "done"),
        ("change", "pending"),
        ("broken", "pending"),
    ]
    frame = pd.read_json(tmp_path / "results" / "look.json", orient="table")
    assert frame.to_dict("records") == [{"table": "public.foo", "rows": 3}]


def test_panel_shows_every_step_and_runs_the_next_one_on_click():
    calls: list[str] = []
    rb = _runbook(calls, interactive=True)
    panel = StepPanel(rb)
    assert "Look around: pending" in panel.rows["look"].value
    panel._on_run_next()
    assert calls == ["look"]
    assert "Look around: done" in panel.rows["look"].value
    assert panel.run_next.description == "Run: Change something"


def test_panel_refuses_a_changing_step_until_confirmed():
    calls: list[str] = []
    rb = _runbook(calls, interactive=True)
    panel = StepPanel(rb)
    panel._on_run_next()
    assert panel.confirm.layout.visibility == "visible"
    panel._on_run_next()  # not ticked
    assert calls == ["look"]
    assert "tick the confirmation" in panel.message.value
    panel.confirm.value = True
    panel._on_run_next()
    assert calls == ["look", "change"]
    assert panel.confirm.value is False  # each changing step needs its own confirmation


def test_panel_click_on_a_failing_step_shows_the_error_and_marks_it_failed():
    rb = _runbook([], interactive=True)
    rb.run("look")
    rb.confirm("change")
    rb.run("change")
    panel = StepPanel(rb)
    panel._on_run_next()
    assert "server said no" in panel.message.value
    assert "Broken step: failed" in panel.rows["broken"].value


def test_headless_panel_is_a_table_not_a_widget():
    shown = step_panel(_runbook([]))
    assert isinstance(shown, pd.DataFrame)
    assert list(shown["step"]) == ["look", "change", "broken"]
