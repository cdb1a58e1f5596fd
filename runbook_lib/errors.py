"""One exception tree: every failure a runbook can meet says what was seen and what to do next."""

from __future__ import annotations


class RunbookError(Exception):
    """Base of every error raised by runbook_lib.

    These are expected stops (a refusal, a failed command, a timeout): IPython shows them as
    their message, without a traceback through library source, in JupyterLab and in the record.
    """

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[1m{type(self).__name__}\x1b[0m: {self}"]


class ConfigurationError(RunbookError):
    """A parameter or setting is invalid; nothing was changed."""


class PreconditionError(RunbookError):
    """The system is not in the state a step needs; nothing was changed by that step."""


class CommandFailed(RunbookError):
    """An external program exited with a non-zero status."""

    def __init__(self, program: str, returncode: int, stderr_tail: str, command: str) -> None:
        self.program = program
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        self.command = command
        detail = f": {stderr_tail}" if stderr_tail else ""
        super().__init__(f"{program} exited with status {returncode}{detail} (command: {command})")


class WaitTimeout(RunbookError):
    """Something awaited did not happen in time; carries the last value observed."""

    def __init__(self, what: str, timeout_s: float, last_observed: object) -> None:
        self.what = what
        self.timeout_s = timeout_s
        self.last_observed = last_observed
        super().__init__(
            f"timed out after {timeout_s:g} s waiting for {what}; last observed: {last_observed!r}"
        )


class PartiallyApplied(RunbookError):
    """A step failed after it had changed something; the message lists what it changed.

    Re-running the step converges: every change listed is detected and not made twice."""

    def __init__(self, what: str, changed: list[str], cause: str) -> None:
        self.what = what
        self.changed = list(changed)
        self.cause = cause
        done = "; ".join(self.changed) if self.changed else "nothing"
        super().__init__(
            f"{what} failed after changing something: {cause}. Already changed: {done}. "
            "Fix the cause and re-run the step: what exists is detected and kept."
        )
