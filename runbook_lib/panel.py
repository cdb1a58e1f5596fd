"""The step panel for JupyterLab: every step with its state and duration, a button to run the
next step, and an explicit confirmation before a step that changes a server. The result of a
step started with the button lands in that step's own cell. Headless runs get the same
information as a table and never wait for a click."""

from __future__ import annotations

from html import escape
from typing import Any

import ipywidgets as widgets

from runbook_lib.steps import (
    DONE,
    FAILED,
    OBSERVED_NOTHING,
    PLANNED,
    RUNNING,
    SKIPPED,
    Runbook,
)

STATUS_STYLE = {
    DONE: ("✔", "green"),
    RUNNING: ("▶", "blue"),
    FAILED: ("✘", "#c62828"),
    SKIPPED: ("–", "gray"),
    PLANNED: ("☐", "purple"),
    OBSERVED_NOTHING: ("∅", "gray"),
}
RUN_CELLS_FIRST = (
    "run the notebook's cells first (Run All is safe: a step that changes servers waits for "
    "your confirmation), so that each step's result has its cell to land in"
)


class StepPanel:
    """Widgets bound to a Runbook; they refresh whenever a step's state changes."""

    def __init__(self, runbook: Runbook) -> None:
        self.runbook = runbook
        self.rows = {s.name: widgets.HTML() for s in runbook.steps}
        self.confirm = widgets.Checkbox(
            value=False,
            description="I confirm this step may change servers",
            indent=False,
            layout=widgets.Layout(width="auto"),
        )
        self.run_next = widgets.Button(
            description="Run next step", button_style="primary", layout={"width": "auto"}
        )
        self.message = widgets.HTML()
        self.run_next.on_click(self._on_run_next)
        self.confirm.observe(self._on_confirm, names="value")
        runbook.listeners.append(self.refresh)
        self.refresh()

    def widget(self) -> widgets.VBox:
        return widgets.VBox(
            [
                widgets.HTML(
                    f"<b>{escape(self.runbook.name)}</b> <small style='color:#555'>(to keep this "
                    "panel in sight: right-click it, Create New View for Cell Output)</small>"
                ),
                *self.rows.values(),
                widgets.HBox([self.run_next, self.confirm]),
                self.message,
            ]
        )

    def refresh(self) -> None:
        for step in self.runbook.steps:
            state = self.runbook.states[step.name]
            mark, color = STATUS_STYLE.get(state.status, ("○", "black"))
            took = f" ({state.duration_s:.1f} s)" if state.duration_s else ""
            changes = " <i>(changes servers)</i>" if step.changes else ""
            confirmed = (
                f" <small>confirmed by {escape(state.confirmed_by)}</small>"
                if state.confirmed_by
                else ""
            )
            self.rows[step.name].value = (
                f"<span style='color:{color}'>{mark} {escape(step.title)}: "
                f"{state.status}{took}</span>{changes}{confirmed}"
            )
        running, nxt = self.runbook.running(), self.runbook.next_step()
        self.run_next.disabled = running is not None or nxt is None
        if running is not None:
            self.run_next.description = f"Running: {running.title}…"
        elif nxt is not None:
            self.run_next.description = f"Run: {nxt.title}"
        elif self.runbook.dry_run:
            self.run_next.description = "Dry run complete: nothing was changed"
        else:
            self.run_next.description = "All steps done"
        asks = nxt is not None and nxt.changes and self.runbook.interactive
        asks = asks and not self.runbook.dry_run and running is None
        self.confirm.layout.visibility = "visible" if asks else "hidden"
        if nxt is not None and self.confirm.value != self.runbook.states[nxt.name].confirmed:
            self.confirm.value = self.runbook.states[nxt.name].confirmed

    def _on_confirm(self, change: dict[str, Any]) -> None:
        nxt = self.runbook.next_step()
        if nxt is None or not nxt.changes or self.runbook.running() is not None:
            return
        if change["new"] and not self.runbook.states[nxt.name].confirmed:
            self.runbook.confirm(nxt.name)
        elif not change["new"] and self.runbook.states[nxt.name].confirmed:
            self.runbook.withdraw_confirmation(nxt.name)

    def _say(self, text: str) -> None:
        self.message.value = f"<span style='color:#8a5300'>{escape(text)}</span>" if text else ""

    def _on_run_next(self, _button: Any = None) -> None:
        step = self.runbook.next_step()
        if step is None or self.runbook.running() is not None:
            return
        if step.name not in self.runbook.shown:
            self._say(f"{step.title}: {RUN_CELLS_FIRST}")
            return
        if self.runbook.needs_confirmation(step.name):
            self._say(f"{step.title} changes servers: tick the confirmation first.")
            return
        self._say("")
        self.runbook.run_into_cell(step.name)
        if self.runbook.states[step.name].status == FAILED:
            self._say(f"{step.title} failed: its cell shows why.")


def step_panel(runbook: Runbook) -> Any:
    """What the notebook's panel cell displays: widgets in JupyterLab, a table when headless."""
    if runbook.interactive:
        return StepPanel(runbook).widget()
    return runbook.table()
