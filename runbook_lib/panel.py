"""The step panel for JupyterLab: every step with its state and duration, a button to run the
next step, and an explicit confirmation before a step that changes a server. Headless runs get
the same information as a table and never wait for a click."""

from __future__ import annotations

from html import escape
from typing import Any

import ipywidgets as widgets
from IPython.display import display

from runbook_lib.steps import DONE, FAILED, PLANNED, RUNNING, SKIPPED, Runbook

STATUS_STYLE = {
    DONE: ("✔", "green"),
    RUNNING: ("▶", "blue"),
    FAILED: ("✘", "red"),
    SKIPPED: ("–", "gray"),
    PLANNED: ("☐", "purple"),
}


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
        self.run_next = widgets.Button(description="Run next step", button_style="primary")
        self.message = widgets.HTML()
        self.output = widgets.Output()
        self.run_next.on_click(self._on_run_next)
        runbook.listeners.append(self.refresh)
        self.refresh()

    def widget(self) -> widgets.VBox:
        return widgets.VBox(
            [
                widgets.HTML(f"<b>{escape(self.runbook.name)}</b>"),
                *self.rows.values(),
                widgets.HBox([self.run_next, self.confirm]),
                self.message,
                self.output,
            ]
        )

    def refresh(self) -> None:
        for step in self.runbook.steps:
            state = self.runbook.states[step.name]
            mark, color = STATUS_STYLE.get(state.status, ("○", "black"))
            took = f" ({state.duration_s:.1f} s)" if state.duration_s else ""
            changes = " <i>(changes servers)</i>" if step.changes else ""
            self.rows[step.name].value = (
                f"<span style='color:{color}'>{mark} {escape(step.title)}: "
                f"{state.status}{took}</span>"
                f"{changes}"
            )
        nxt = self.runbook.next_step()
        self.run_next.disabled = nxt is None
        self.run_next.description = f"Run: {nxt.title}" if nxt else "All steps done"
        self.confirm.layout.visibility = (
            "visible" if nxt is not None and self.runbook.needs_confirmation(nxt.name) else "hidden"
        )

    def _on_run_next(self, _button: Any = None) -> None:
        step = self.runbook.next_step()
        if step is None:
            return
        if self.runbook.needs_confirmation(step.name):
            if not self.confirm.value:
                self.message.value = (
                    f"<span style='color:red'>{escape(step.title)} changes servers: tick the "
                    "confirmation first.</span>"
                )
                return
            self.runbook.confirm(step.name)
        self.confirm.value = False
        self.message.value = ""
        with self.output:
            try:
                display(self.runbook.run(step.name))
            except Exception as exc:  # shown in the panel; the state says failed
                self.message.value = f"<span style='color:red'>{escape(str(exc))}</span>"


def step_panel(runbook: Runbook) -> Any:
    """What the notebook's panel cell displays: widgets in JupyterLab, a table when headless."""
    if runbook.interactive:
        return StepPanel(runbook).widget()
    return runbook.table()
