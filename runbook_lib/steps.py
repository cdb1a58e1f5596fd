"""Steps of a runbook and their states: a registry like a migrations list (named steps, which are
pending, which ran, a record of what happened).

Each notebook cell calls `runbook.run("step")`. Headless (papermill, `interactive=False`) the
step runs at once: the parameters are the operator's decision. In JupyterLab (`interactive=True`)
a step runs only when every step before it has finished, and a step that changes a server only
once confirmed (the tick in the step panel). A step cell that may not run yet shows why and
waits, without an error, so "Run All" never rushes past a change; the panel's button or a
re-run of the cell runs it later, and the result replaces that note in the step's own cell
(a display id), so the saved notebook holds every result whichever way the step was started.
With `dry_run=True` read-only steps run and changing steps show their plan instead of acting.
"""

from __future__ import annotations

import getpass
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from runbook_lib import record
from runbook_lib.errors import ConfigurationError, PreconditionError, RunbookError

PENDING, RUNNING, DONE, SKIPPED, FAILED, PLANNED, OBSERVED_NOTHING = (
    "pending",
    "running",
    "done",
    "skipped",
    "failed",
    "planned",
    "observed nothing",
)
FINISHED = (DONE, SKIPPED, PLANNED, OBSERVED_NOTHING)
CONFIRM_HINT = (
    "tick the confirmation in the step panel, then press the panel's button or re-run this cell"
)
NOT_A_RUN = (
    "this notebook is not a run: nothing done here would be recorded, and the committed "
    "runbook must stay as it is. Start a run with `runbook open {name} -f PARAMS.yaml`: it "
    "checks the parameters, makes a copy in the run archive (runs/) and opens that copy in "
    "JupyterLab"
)


class StepNeedsConfirmation(RunbookError):
    """A changing step was reached in an interactive session without the operator's go-ahead."""


@dataclass(frozen=True)
class Step:
    """A named step; `changes`: it changes a server; `plan`: what it would do (dry run)."""

    name: str
    title: str
    function: Callable[[Any], Any]
    changes: bool
    plan: Callable[[Any], list[str]] | None = None


@dataclass
class StepState:
    status: str = PENDING
    started_at: str | None = None
    duration_s: float | None = None
    error: str | None = None
    confirmed: bool = False
    confirmed_by: str | None = None
    confirmed_at: str | None = None


@dataclass(frozen=True)
class RunContext:
    """What a runbook's steps share: the validated configuration and whether it is a dry run."""

    config: Any
    dry_run: bool = False


@dataclass(frozen=True)
class NothingToObserve:
    """A read-only step in a dry run, with nothing built yet to look at."""

    step: str
    reason: str

    def __repr__(self) -> str:
        return f"{self.step}: nothing to observe in a dry run: {self.reason}"


@dataclass
class Plan:
    """What a changing step would do; shown by a dry run."""

    step: str
    actions: list[str]

    def __repr__(self) -> str:
        lines = "\n".join(f"  {a}" for a in self.actions) or "  (nothing to do)"
        return f"dry run: {self.step} would run:\n{lines}"

    def _repr_html_(self) -> str:
        from html import escape

        items = "".join(f"<li><code>{escape(a)}</code></li>" for a in self.actions)
        return (
            f"<b>dry run</b>: {escape(self.step)} would run:<ul>{items or '<li>nothing</li>'}</ul>"
        )


@dataclass
class Runbook:
    """The steps of one notebook, in order, with their states and results."""

    name: str
    steps: list[Step]
    context: Any
    dry_run: bool = False
    interactive: bool = False
    states: dict[str, StepState] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    listeners: list[Callable[[], None]] = field(default_factory=list)
    shown: set[str] = field(default_factory=set)  # step cells run in this session
    plots_shown: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"duplicate step names in {self.name}: {names}")
        for name in names:
            self.states.setdefault(name, StepState())

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise ConfigurationError(
            f"{self.name} has no step {name!r}; steps: {[s.name for s in self.steps]}"
        )

    def pending(self) -> list[str]:
        return [s.name for s in self.steps if self.states[s.name].status in (PENDING, FAILED)]

    def applied(self) -> list[str]:
        return [s.name for s in self.steps if self.states[s.name].status == DONE]

    def next_step(self) -> Step | None:
        pending = self.pending()
        return self.step(pending[0]) if pending else None

    def running(self) -> Step | None:
        return next((s for s in self.steps if self.states[s.name].status == RUNNING), None)

    def confirm(self, name: str) -> None:
        """The operator's go-ahead for a changing step: who and when are recorded."""
        state = self.states[self.step(name).name]
        state.confirmed = True
        state.confirmed_by = getpass.getuser()
        state.confirmed_at = datetime.now(UTC).isoformat()
        self._set(state)

    def withdraw_confirmation(self, name: str) -> None:
        state = self.states[self.step(name).name]
        if state.status not in (RUNNING, DONE):
            self._set(state, confirmed=False, confirmed_by=None, confirmed_at=None)

    def needs_confirmation(self, name: str) -> bool:
        step = self.step(name)
        return (
            self.interactive
            and step.changes
            and not self.dry_run
            and not self.states[name].confirmed
        )

    def blocker(self, name: str) -> str | None:
        """Why a step may not start now in an interactive session, or None."""
        step = self.step(name)
        running = self.running()
        if running is not None:
            return f"{running.title} is running; one step at a time"
        for earlier in self.steps[: self.steps.index(step)]:
            if self.states[earlier.name].status not in FINISHED:
                return f"waits for {earlier.title} ({self.states[earlier.name].status})"
        if self.needs_confirmation(name):
            return f"changes servers: {CONFIRM_HINT}"
        return None

    def run(self, name: str) -> Any:
        """What a step cell calls. Headless: run the step and return its result. Interactive:
        run it if it may run now, else say why; either way the cell shows it (display id)."""
        if not self.interactive:
            return self.execute(name)
        from IPython.display import display

        from runbook_lib.display import Waiting

        step = self.step(name)
        self.shown.add(name)
        if step.changes and not self.dry_run and self.states[name].status == DONE:
            done = Waiting(step.title, f"done ({self._confirmation(name)}); not run again")
            display(self.results.get(name, done), display_id=self.display_id(name))
            return None
        blocker = self.blocker(name)
        display(Waiting(step.title, blocker or "running"), display_id=self.display_id(name))
        if blocker is not None:
            return None
        try:
            result = self.execute(name)
        except BaseException:
            self._show(name, Waiting(step.title, "failed: the error is below"))
            raise
        self._show(name, result)
        return None

    def run_into_cell(self, name: str) -> None:
        """Run a step started outside its cell (the panel's button): its result, or its error,
        replaces the note in the step's cell; nothing is raised."""
        from runbook_lib.display import StepFailure, Waiting

        step = self.step(name)
        self._show(name, Waiting(step.title, "running (started from the step panel)"))
        try:
            result = self.execute(name)
        except Exception as exc:
            self._show(name, StepFailure(step.title, exc, traceback.format_exc()))
            return
        self._show(name, result)

    def execute(self, name: str) -> Any:
        """Run one step (or show its plan in a dry run); record state, duration and result."""
        step = self.step(name)
        state = self.states[name]
        if self.needs_confirmation(name):
            raise StepNeedsConfirmation(
                f"step {step.title!r} changes a server: confirm it in the step panel "
                "(or run headless with interactive=False, or set dry_run=True to see its plan)"
            )
        running = self.running()
        if running is not None:
            raise PreconditionError(f"{running.title} is running: one step at a time")
        if self.dry_run and step.changes:
            result: Any = Plan(step.title, step.plan(self.context) if step.plan else [])
            self._set(state, status=PLANNED, duration_s=0.0, error=None)
            self.results[name] = result
            return result
        self._set(state, status=RUNNING, started_at=datetime.now(UTC).isoformat(), error=None)
        started = time.monotonic()
        try:
            result = step.function(self.context)
        except BaseException as exc:
            self._set(
                state,
                status=FAILED,
                duration_s=time.monotonic() - started,
                error=f"{type(exc).__name__}: {exc}",
                confirmed=False,  # a retry needs a confirmation of its own
            )
            raise
        status = OBSERVED_NOTHING if isinstance(result, NothingToObserve) else DONE
        self._set(state, status=status, duration_s=time.monotonic() - started, confirmed=False)
        self.results[name] = result
        record.record_result(name, result)
        return result

    def _confirmation(self, name: str) -> str:
        state = self.states[name]
        return f"confirmed by {state.confirmed_by} at {state.confirmed_at}"

    def display_id(self, name: str) -> str:
        return f"runbook-{self.name}-step-{name}"

    def _show(self, name: str, shown: Any) -> None:
        from IPython.display import update_display

        update_display(shown, display_id=self.display_id(name))
        if name in self.plots_shown and shown is self.results.get(name):
            update_display(self._plot(name), display_id=f"{self.display_id(name)}-plot")

    def plot(self, name: str) -> Any:
        """The plot of a step's result, or a sentence saying why there is none. Interactive:
        shown in the cell and redrawn there when the step runs later."""
        if not self.interactive:
            return self._plot(name)
        from IPython.display import display

        self.plots_shown.add(name)
        display(self._plot(name), display_id=f"{self.display_id(name)}-plot")
        return None

    def _plot(self, name: str) -> Any:
        result = self.results.get(name)
        if result is None:
            return f"no plot: step {self.step(name).title!r} has not run"
        if callable(getattr(result, "plot", None)):
            from runbook_lib.display import figure_image

            return figure_image(result.plot())
        return f"no plot: {result!r}"

    def skip(self, name: str, reason: str) -> str:
        self._set(self.states[self.step(name).name], status=SKIPPED, error=None, duration_s=0.0)
        return f"skipped: {reason}"

    def table(self):
        """The steps as a DataFrame: name, title, changes, status, duration."""
        import pandas as pd

        return pd.DataFrame(
            [
                {
                    "step": s.name,
                    "title": s.title,
                    "changes servers": s.changes,
                    "status": self.states[s.name].status,
                    "duration_s": self.states[s.name].duration_s,
                    "error": self.states[s.name].error,
                }
                for s in self.steps
            ]
        )

    def restore(self, recorded: list[dict[str, Any]]) -> None:
        """Step states recorded earlier in this run (a restarted kernel): a step that was
        running when its kernel stopped failed."""
        for entry in recorded:
            state = self.states.get(entry.get("step", ""))
            if state is None:
                continue
            for key in ("status", "started_at", "duration_s", "error"):
                setattr(state, key, entry.get(key))
            state.confirmed_by, state.confirmed_at = (
                entry.get("confirmed_by"),
                entry.get("confirmed_at"),
            )
            state.confirmed = bool(state.confirmed_by) and state.status not in (DONE, FAILED)
            if state.status == RUNNING:
                state.status, state.error = FAILED, "the kernel stopped while this step ran"

    def _set(self, state: StepState, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(state, key, value)
        record.record_steps(
            [
                {
                    "step": s.name,
                    "title": s.title,
                    "changes": s.changes,
                    **{k: v for k, v in vars(self.states[s.name]).items() if k != "confirmed"},
                }
                for s in self.steps
            ]
        )
        self._changed()

    def _changed(self) -> None:
        for listener in self.listeners:
            listener()


def runbook_for(
    name: str, steps: list[Step], config: Any, *, dry_run: bool = False, interactive: bool = False
) -> Runbook:
    """A notebook's Runbook whose steps share RunContext(config, dry_run). Interactive only
    inside a run (`runbook open`), never in the committed notebook."""
    if interactive and record.run_dir() is None:
        raise ConfigurationError(NOT_A_RUN.format(name=name))
    runbook = Runbook(
        name, steps, context=RunContext(config, dry_run), dry_run=dry_run, interactive=interactive
    )
    if interactive:
        from runbook_lib import session

        runbook.restore(record.recorded_steps())
        session.finish_when_the_kernel_stops(record.run_dir())
    return runbook
