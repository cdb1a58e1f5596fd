"""Interactive runs: a JupyterLab session is a run with the same record as a headless one.

`runbook open` checks the parameters as `runbook run` does, makes the run folder with a
parameterized copy of the notebook (papermill --prepare-only: the parameters injected, nothing
executed) and a summary.json marked interactive. The kernel, started in that folder, records
step states and results there as steps finish (runbook_lib.record). The run ends with
`runbook runs close RUN` (final status, notebook.html, then read-only) or, provisionally, when the
kernel stops (status and notebook.html, still open).
"""

from __future__ import annotations

import atexit
import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runbook_lib import execute, params, record
from runbook_lib.errors import ConfigurationError
from runbook_lib.steps import FAILED, FINISHED

INTERACTIVE = record.INTERACTIVE
OPEN, INCOMPLETE = "open", "incomplete"
FINISHING = ".finishing"  # present while a stopped kernel's record is being written
_finishing: set[Path] = set()


def open_run(
    notebook: str, parameters: dict[str, Any], *, archive: Path = execute.DEFAULT_ARCHIVE
) -> Path:
    """Check parameters, make the run folder and its parameterized notebook; return the folder."""
    import papermill

    source = execute.resolve_notebook(notebook)
    params.check_parameters(source, parameters)
    if execute.HEADLESS_PARAMETER in params.declared_parameters(source):
        parameters = {**parameters, execute.HEADLESS_PARAMETER: True}
    started = datetime.now(UTC)
    with execute.private_umask():
        run_dir = execute.new_run_directory(archive, source, started)
        summary = execute.new_summary(source, run_dir, parameters, started)
        execute.write_summary(run_dir, {**summary, "mode": INTERACTIVE, "status": OPEN})
        papermill.execute_notebook(
            str(source),
            str(run_dir / "notebook.ipynb"),
            parameters=parameters,
            prepare_only=True,
            progress_bar=False,
            log_output=False,
        )
        _describe_kernel(run_dir / "notebook.ipynb")
    return run_dir.absolute()


def _describe_kernel(notebook: Path) -> None:
    """The kernel's own description in the notebook (what JupyterLab would write when it
    connects), so that the run's notebook is not marked modified as soon as it opens."""
    import nbformat
    from ipykernel.ipkernel import IPythonKernel
    from jupyter_client.kernelspec import KernelSpecManager

    nb = nbformat.read(notebook, as_version=4)
    name = nb.metadata.get("kernelspec", {}).get("name", "python3")
    spec = KernelSpecManager().get_kernel_spec(name)
    nb.metadata["kernelspec"] = {
        "name": name,
        "display_name": spec.display_name,
        "language": spec.language,
    }
    nb.metadata["language_info"] = dict(IPythonKernel.language_info)
    nbformat.write(nb, notebook)


def run_status(steps: list[dict[str, Any]]) -> str:
    """succeeded when every step finished, failed when the last step tried failed, else
    incomplete (the session ended before the last step)."""
    if steps and all(s.get("status") in FINISHED for s in steps):
        return execute.SUCCEEDED
    if any(s.get("status") == FAILED for s in steps):
        return execute.FAILED
    return INCOMPLETE


def _failed_step(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    failed = next((s for s in steps if s.get("status") == FAILED), None)
    if failed is None:
        return None
    ename, _, evalue = (failed.get("error") or "").partition(": ")
    return {"step": failed.get("title"), "ename": ename, "evalue": evalue}


def finish(run_dir: Path, *, closed_by: str) -> dict[str, Any]:
    """Write the run's status and notebook.html from the notebook as last saved."""
    summary = json.loads((run_dir / "summary.json").read_text())
    if summary.get("mode") != INTERACTIVE:
        raise ConfigurationError(f"{run_dir.name} is a headless run: it was complete when it ended")
    if summary.get("closed_at"):
        raise ConfigurationError(f"{run_dir.name} is already closed ({summary['status']})")
    steps = record.read_json(run_dir / "steps.json", [])
    source = Path(summary["notebook_path"])
    execute.finish_summary(
        run_dir, source, summary, run_status(steps), _failed_step(steps) if steps else None
    )
    summary["ended_by"] = closed_by
    execute.write_summary(run_dir, summary)
    return summary


def close_run(archive: Path, run: str, *, force: bool = False) -> dict[str, Any]:
    """End an interactive run: final status, notebook.html, then the folder is read-only."""
    from runbook_lib import jupyter, runs

    run_dir = runs.find_run(archive, run).absolute()
    _wait_for_the_kernel_record(run_dir)
    notebook = run_dir / "notebook.ipynb"
    if not force and jupyter.notebook_has_kernel(notebook):
        raise ConfigurationError(
            f"{run_dir.name} is still open in JupyterLab with a running kernel: save it and use "
            "File > Close and Shut Down Notebook first (or close with --force)"
        )
    summary = finish(run_dir, closed_by="runbook runs close")
    summary["closed_at"] = datetime.now(UTC).isoformat()
    execute.write_summary(run_dir, summary)
    shutil.rmtree(run_dir / ".ipynb_checkpoints", ignore_errors=True)  # JupyterLab's, not ours
    execute.seal(run_dir)
    return summary


def finish_when_the_kernel_stops(run_dir: Path | None) -> None:
    """At kernel exit, record the status and notebook.html (the run stays open). The work is
    handed to a process of its own: a stopping kernel is killed after a few seconds."""
    if run_dir is None or run_dir in _finishing:
        return
    _finishing.add(run_dir)

    def at_exit() -> None:
        if record.interactive_run_dir(run_dir) is None:
            return
        (run_dir / FINISHING).write_text(f"{datetime.now(UTC).isoformat()}\n")
        subprocess.Popen(
            [sys.executable, "-m", "runbook_lib.session", str(run_dir)],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=(run_dir / FINISHING).with_suffix(".log").open("a"),
        )

    atexit.register(at_exit)


def _wait_for_the_kernel_record(run_dir: Path, timeout_s: float = 120) -> None:
    from runbook_lib.waiting import wait_until

    wait_until(
        lambda: not (run_dir / FINISHING).exists(),
        what=f"the record written when the kernel stopped ({run_dir / FINISHING})",
        timeout_s=timeout_s,
    )


def _finish_after_the_kernel(run_dir: Path) -> None:
    try:
        if record.interactive_run_dir(run_dir) is not None:
            finish(run_dir, closed_by="kernel stopped")
    finally:
        (run_dir / FINISHING).unlink(missing_ok=True)
        log = (run_dir / FINISHING).with_suffix(".log")
        if log.exists() and not log.stat().st_size:
            log.unlink()


if __name__ == "__main__":
    _finish_after_the_kernel(Path(sys.argv[1]))
