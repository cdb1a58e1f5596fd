"""The step registry and the JupyterLab step panel, tested without a browser."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from runbook_lib import record
from runbook_lib.errors import ConfigurationError
from runbook_lib.panel import StepPanel, step_panel
from runbook_lib.steps import (
    NothingToObserve,
    Plan,
    Runbook,
    Step,
    StepNeedsConfirmation,
    runbook_for,
)


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
    rb.execute("look")  # read-only: no confirmation needed
    with pytest.raises(StepNeedsConfirmation, match="Change something"):
        rb.execute("change")
    assert calls == ["look"]
    rb.confirm("change")
    assert rb.execute("change") == "changed"
    assert rb.states["change"].confirmed_by and rb.states["change"].confirmed_at


def test_interactive_step_cell_waits_without_error_until_confirmed_then_runs_on_rerun():
    calls: list[str] = []
    rb = _runbook(calls, interactive=True)
    rb.run("look")
    assert rb.run("change") is None  # the cell shows why it waits; nothing raised
    assert calls == ["look"] and rb.blocker("change").startswith("changes servers")
    rb.confirm("change")  # the tick in the panel
    rb.run("change")  # re-running the cell
    assert calls == ["look", "change"]


def test_interactive_step_cell_does_not_run_before_the_steps_above_it():
    calls: list[str] = []
    rb = _runbook(calls, interactive=True)
    rb.run("broken")
    assert calls == [] and "waits for Look around" in rb.blocker("broken")


def test_interactive_runbook_outside_a_run_folder_says_how_to_start_a_run(monkeypatch, tmp_path):
    monkeypatch.delenv(record.RUN_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match="runbook open demo -f"):
        runbook_for("demo", [], None, interactive=True)


def test_runbook_error_renders_as_its_message_without_a_traceback():
    lines = ConfigurationError("pgport must be int")._render_traceback_()
    assert len(lines) == 1 and "ConfigurationError" in lines[0] and "pgport must be int" in lines[0]


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
    rb.execute("look")
    plan = rb.execute("change")
    assert isinstance(plan, Plan)
    assert plan.actions == ["ALTER SYSTEM SET archive_mode = on"]
    assert calls == ["look"]
    assert rb.states["change"].status == "planned"


def test_dry_run_read_only_step_that_observed_nothing_is_not_done():
    rb = Runbook(
        "demo",
        [Step("look", "Look", lambda ctx: NothingToObserve("look", "no target yet"), False)],
        context=None,
        dry_run=True,
    )
    rb.run("look")
    assert rb.states["look"].status == "observed nothing" and rb.applied() == []


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
    assert calls == [], "the step's cell has not run yet: its result would have nowhere to land"
    rb.shown.update({"look", "change", "broken"})  # Run All
    panel._on_run_next()
    assert calls == ["look"]
    assert "Look around: done" in panel.rows["look"].value
    assert panel.run_next.description == "Run: Change something"


def test_panel_refuses_a_changing_step_until_confirmed_and_records_who_confirmed():
    calls: list[str] = []
    rb = _runbook(calls, interactive=True)
    rb.shown.update({"look", "change", "broken"})
    panel = StepPanel(rb)
    panel._on_run_next()
    assert panel.confirm.layout.visibility == "visible"
    panel._on_run_next()  # not ticked
    assert calls == ["look"]
    assert "tick the confirmation" in panel.message.value
    panel.confirm.value = True
    assert rb.states["change"].confirmed and rb.states["change"].confirmed_by
    panel._on_run_next()
    assert calls == ["look", "change"]
    assert panel.confirm.value is False  # each changing step needs its own confirmation


def test_panel_button_is_disabled_while_a_step_runs():
    seen: list[tuple[bool, str]] = []
    rb = _runbook([], interactive=True)
    rb.shown.add("look")
    panel = StepPanel(rb)
    rb.listeners.append(lambda: seen.append((panel.run_next.disabled, rb.states["look"].status)))
    panel._on_run_next()
    assert (True, "running") in seen and not panel.run_next.disabled


def test_panel_click_on_a_failing_step_shows_the_error_and_marks_it_failed():
    rb = _runbook([], interactive=True)
    rb.execute("look")
    rb.confirm("change")
    rb.execute("change")
    rb.shown.add("broken")
    panel = StepPanel(rb)
    panel._on_run_next()
    assert "Broken step failed" in panel.message.value
    assert "Broken step: failed" in panel.rows["broken"].value


def test_dry_run_panel_ends_without_claiming_steps_are_done():
    rb = _runbook([], dry_run=True, interactive=True)
    rb.shown.update({"look", "change"})
    panel = StepPanel(rb)
    panel._on_run_next()
    panel._on_run_next()
    rb.skip("broken", "demo")
    assert panel.run_next.description == "Dry run complete: nothing was changed"


def test_headless_panel_is_a_table_not_a_widget():
    shown = step_panel(_runbook([]))
    assert isinstance(shown, pd.DataFrame)
    assert list(shown["step"]) == ["look", "change", "broken"]


def test_each_confirmation_runs_a_changing_step_once():
    calls: list[str] = []
    rb = _runbook(calls, interactive=True)
    rb.run("look")
    rb.confirm("change")
    rb.run("change")
    rb.run("change")  # re-running the cell of a done changing step shows it, does not re-run it
    assert calls == ["look", "change"]
    assert not rb.states["change"].confirmed and rb.states["change"].confirmed_by
