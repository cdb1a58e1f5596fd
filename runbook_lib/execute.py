"""Execute a runbook notebook with papermill into the run archive.

A run directory holds `notebook.ipynb` (saved after every cell, so a killed run still leaves a
record), `notebook.html`, `summary.json` and `results/` (each step's DataFrames as files).
Everything in the archive is its owner's only: the run is made with umask 077 (kernel and the
programs it starts included), and once written a run directory is sealed read-only (0500
directories, 0400 files): archived runs are never modified, and no other user reads them.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import platform
import secrets
import signal
import socket
import stat
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from runbook_lib import __version__, params, record
from runbook_lib.errors import ConfigurationError, RunbookError
from runbook_lib.redaction import redact

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO / "notebooks"
DEFAULT_ARCHIVE = Path("runs")
HEADLESS_PARAMETER = "interactive"  # a papermill run never waits for a click
NOT_STEPS = {"parameters", "injected-parameters", "papermill-error-cell-tag"}
SUCCEEDED, FAILED, INTERRUPTED, RUNNING = "succeeded", "failed", "interrupted", "running"
HEADLESS = "headless"


class RunFailed(RunbookError):
    """A notebook run stopped at a failing cell; the partial record is kept."""

    def __init__(self, output: Path, step: str, ename: str, evalue: str) -> None:
        self.output = output
        self.step = step
        self.ename = ename
        self.evalue = evalue
        super().__init__(f"{step} failed: {ename}: {evalue} (record: {output.parent})")


class RunInterrupted(RunbookError):
    """The run was stopped by a signal; the partial record is kept."""


@dataclass(frozen=True)
class RunResult:
    notebook: Path
    output: Path
    summary: dict[str, Any]


def resolve_notebook(name_or_path: str) -> Path:
    """A notebook name (`bucardo_bootstrap`) from notebooks/, or a path to an .ipynb file."""
    path = Path(name_or_path)
    if path.suffix == ".ipynb" and path.is_file():
        return path.resolve()
    candidate = NOTEBOOKS_DIR / f"{path.stem}.ipynb"
    if candidate.is_file():
        return candidate
    known = sorted(p.stem for p in NOTEBOOKS_DIR.glob("*.ipynb"))
    raise ConfigurationError(f"no notebook {name_or_path!r}; known notebooks: {', '.join(known)}")


def load_parameter_files(paths: list[Path]) -> dict[str, Any]:
    """Merge YAML parameter files in order (later files win)."""
    merged: dict[str, Any] = {}
    for path in paths:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError as exc:
            raise ConfigurationError(f"parameter file {path} does not exist") from exc
        if not isinstance(data, dict):
            raise ConfigurationError(f"parameter file {path} must hold a mapping of name: value")
        merged.update(data)
    return merged


def new_run_directory(archive: Path, notebook: Path, now: datetime) -> Path:
    path = archive / f"{now:%Y%m%dT%H%M%SZ}-{notebook.stem}-{secrets.token_hex(3)}"
    if not archive.exists():
        archive.mkdir(parents=True, mode=0o700)
        archive.chmod(0o700)  # ours, just made: exactly 0700 whatever the umask
    path.mkdir(mode=0o700)
    path.chmod(0o700)
    return path


def _version_of(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if out.returncode == 0 and text else None


def _versions(notebook: Path, run_dir: Path) -> dict[str, Any]:
    """Versions of what the run used: the programs its steps chose (programs.json) where they
    recorded them, else the defaults found here."""
    import papermill

    programs = record.read_json(run_dir / "programs.json", {})
    client = next((programs[n] for n in ("pg_dump", "pg_basebackup") if n in programs), None)
    versions: dict[str, Any] = {
        "runbook_lib": __version__,
        "python": platform.python_version(),
        "papermill": papermill.__version__,
        "postgresql_client": client["version"] if client else _default_client_version(),
        "servers": record.read_json(run_dir / "servers.json", {}),
        "programs": programs,
    }
    if "bucardo" in notebook.read_text():
        recorded = programs.get("bucardo") or {"version": _version_of(["bucardo", "--version"])}
        versions["bucardo"] = recorded["version"]
    return versions


def _default_client_version() -> str | None:
    from runbook_lib import pgbin

    try:
        return pgbin.version_text(pgbin.program("pg_dump"))
    except RunbookError:
        return pgbin.version_text("pg_dump")


def _git_commit() -> str | None:
    out = _version_of(["git", "-C", str(REPO), "rev-parse", "HEAD"])
    if out is None:
        return None
    dirty = _version_of(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])
    return out + ("+uncommitted-changes" if dirty else "")


def _cell_steps(nb: Any) -> list[dict[str, Any]]:
    """Per code cell: the step title (the markdown heading before it), status and duration."""
    steps, title = [], None
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            heading = next(
                (ln.lstrip("# ").strip() for ln in cell.source.splitlines() if ln.startswith("#")),
                None,
            )
            title = heading or title
            continue
        tags = set(cell.metadata.get("tags", []))
        if cell.cell_type != "code" or tags & NOT_STEPS:
            continue
        meta = cell.metadata.get("papermill", {})
        steps.append(
            {
                "cell": index,
                "title": title or f"cell {index}",
                "status": meta.get("status"),
                "duration_s": meta.get("duration"),
                "exception": meta.get("exception"),
            }
        )
    return steps


def _failed_cell(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((s for s in steps if s.get("exception")), None)


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _steps_html(steps: list[dict[str, Any]]) -> str:
    """The step panel as it stood at the end of the run, for the HTML record (widgets need
    JavaScript from the network to show there)."""
    import pandas as pd

    from runbook_lib.display import frame_html

    columns = ["title", "status", "duration_s", "confirmed_by", "confirmed_at", "error"]
    frame = pd.DataFrame(steps).reindex(columns=columns)
    frame["confirmed_at"] = frame["confirmed_at"].map(
        lambda t: str(t)[:19].replace("T", " ") if t else None
    )
    frame.columns = [c.replace("_", " ") for c in columns]
    return "<b>steps at the end of the run</b>" + frame_html(frame)


def _write_html(notebook_path: Path, html_path: Path, steps: list[dict] | None = None) -> None:
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(notebook_path, as_version=4)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if steps and WIDGET_VIEW in output.get("data", {}):
                output["data"] = {"text/html": _steps_html(steps)}
    body, _ = HTMLExporter(template_name="lab", embed_images=True).from_notebook_node(nb)
    html_path.write_text(body)


RUN_UMASK = 0o077
SEALED_DIR_MODE, SEALED_FILE_MODE = 0o500, 0o400


def seal(run_dir: Path) -> None:
    """Make the archived run read-only and its owner's only; symlinks are never followed."""
    for _top, dirs, files, top_fd in os.fwalk(run_dir, topdown=False, follow_symlinks=False):
        for name in files + dirs:
            st = os.stat(name, dir_fd=top_fd, follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
                mode = SEALED_DIR_MODE if stat.S_ISDIR(st.st_mode) else SEALED_FILE_MODE
                os.chmod(name, mode, dir_fd=top_fd)
    run_dir.chmod(SEALED_DIR_MODE)


@contextmanager
def private_umask():
    """Files made meanwhile (by this process and the programs it starts) are the owner's only."""
    previous = os.umask(RUN_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


@contextmanager
def _sigterm_as_interrupt():
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _kernel_env(run_dir: Path):
    old = os.environ.get(record.RUN_DIR_ENV)
    os.environ[record.RUN_DIR_ENV] = str(run_dir.absolute())
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(record.RUN_DIR_ENV, None)
        else:
            os.environ[record.RUN_DIR_ENV] = old


def new_summary(source: Path, run_dir: Path, parameters: dict[str, Any], started: datetime):
    """The summary.json a run starts with: what runs, with which parameters, by whom, where."""
    summary: dict[str, Any] = {
        "run_id": run_dir.name,
        "notebook": source.stem,
        "notebook_path": str(source),
        "notebook_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "parameters": parameters,
        "started_at": started.isoformat(),
        "status": RUNNING,
        "mode": HEADLESS,
        "host": socket.gethostname(),
        "os_user": getpass.getuser(),
        "command": redact(" ".join(sys.argv)),
        "git_commit": _git_commit(),
    }
    write_summary(run_dir, summary)
    return summary


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """summary.json, replaced atomically (a kernel killed while it writes leaves the old one)."""
    record.write_json(run_dir / "summary.json", summary)


def finish_summary(
    run_dir: Path, source: Path, summary: dict[str, Any], status: str, error: dict | None
) -> None:
    """Complete summary.json (status, steps, cells, versions, results) and write notebook.html
    from the run's notebook as it is now."""
    import nbformat

    output = run_dir / "notebook.ipynb"
    ended = datetime.now(UTC)
    cells = _cell_steps(nbformat.read(output, as_version=4)) if output.exists() else []
    steps_file = run_dir / "steps.json"
    steps = json.loads(steps_file.read_text()) if steps_file.exists() else cells
    if error is not None and "step" not in error:
        failed = next((c for c in cells if c["cell"] == error["cell"]), None) or _failed_cell(cells)
        error["step"] = failed["title"] if failed else f"cell {error['cell']}"
    started = datetime.fromisoformat(summary["started_at"])
    summary.update(
        {
            "ended_at": ended.isoformat(),
            "duration_s": round((ended - started).total_seconds(), 3),
            "status": status,
            "failed_step": error,
            "steps": steps,
            "cells": cells,
            "versions": _versions(source, run_dir),
            "results": sorted(str(p.relative_to(run_dir)) for p in (run_dir / "results").glob("*"))
            if (run_dir / "results").exists()
            else [],
        }
    )
    if output.exists():
        _write_html(output, run_dir / "notebook.html", steps if steps is not cells else None)
    write_summary(run_dir, summary)


def run_notebook(
    notebook: str, parameters: dict[str, Any], *, archive: Path = DEFAULT_ARCHIVE
) -> RunResult:
    """Check parameters, run the notebook, archive everything; raise RunFailed on a failing step."""
    with private_umask():
        return _run_notebook(notebook, parameters, archive)


def _run_notebook(notebook: str, parameters: dict[str, Any], archive: Path) -> RunResult:
    import papermill

    source = resolve_notebook(notebook)
    params.check_parameters(source, parameters)
    if HEADLESS_PARAMETER in params.declared_parameters(source):
        parameters = {**parameters, HEADLESS_PARAMETER: False}  # never waits for a click
    started = datetime.now(UTC)
    run_dir = new_run_directory(archive, source, started)
    output = run_dir / "notebook.ipynb"
    summary = new_summary(source, run_dir, parameters, started)
    error: dict[str, Any] | None = None
    try:
        with _kernel_env(run_dir), _sigterm_as_interrupt():
            papermill.execute_notebook(
                str(source),
                str(output),
                parameters=parameters,
                cwd=str(Path.cwd()),
                progress_bar=False,
                request_save_on_cell_execute=True,
            )
        status = SUCCEEDED
    except papermill.PapermillExecutionError as exc:
        status = FAILED
        error = {"cell": exc.cell_index, "ename": exc.ename, "evalue": redact(str(exc.evalue))}
    except KeyboardInterrupt:
        status = INTERRUPTED
    finish_summary(run_dir, source, summary, status, error)
    seal(run_dir)
    if status == FAILED:
        raise RunFailed(output, error["step"], error["ename"], error["evalue"])
    if status == INTERRUPTED:
        raise RunInterrupted(f"run interrupted; partial record kept in {run_dir}")
    return RunResult(source, output, summary)
