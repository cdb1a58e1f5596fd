"""Side records of a run: step states, structured results and server versions, written into the
run directory: the one `runbook run` names in RUNBOOK_RUN_DIR, or, in JupyterLab, the run folder
`runbook open` made, where the kernel runs (its notebook's folder). Nothing is written elsewhere."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

RUN_DIR_ENV = "RUNBOOK_RUN_DIR"
RESULTS_DIR = "results"
INTERACTIVE = "interactive"


def run_dir() -> Path | None:
    value = os.environ.get(RUN_DIR_ENV)
    if value:
        return Path(value)
    return interactive_run_dir(Path.cwd())


def interactive_run_dir(folder: Path) -> Path | None:
    """folder, when it is the run folder of an interactive run that is not closed yet."""
    summary = read_json(folder / "summary.json", {})
    if summary.get("mode") == INTERACTIVE and not summary.get("closed_at"):
        return folder.absolute()
    return None


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "result"


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default


def record_server_version(label: str, version: str, program: str | None = None) -> None:
    """Remember a server's version and, when known, the server program it runs (called on
    every admin connection during a run)."""
    _remember("servers.json", label, {"version": version, "program": program})


def record_program(role: str, path: str, version: str | None, host: str = "local") -> None:
    """Remember a program a step chose to run (pg_dump of the newer major, Bucardo on its
    control host...): programs.json, which the run's summary reports."""
    _remember("programs.json", role, {"path": path, "version": version, "host": host})


def _remember(filename: str, key: str, entry: dict[str, Any]) -> None:
    """Set `key` in the run directory's JSON file `filename`, writing only on a change."""
    where = run_dir()
    if where is None:
        return
    path = where / filename
    recorded = read_json(path, {})
    if recorded.get(key) != entry:
        recorded[key] = entry
        write_json(path, recorded)


def record_steps(states: list[dict[str, Any]]) -> None:
    """steps.json; in an interactive run also the steps in summary.json, as they change."""
    where = run_dir()
    if where is None:
        return
    write_json(where / "steps.json", states)
    summary = read_json(where / "summary.json", {})
    if summary.get("mode") == INTERACTIVE:
        write_json(where / "summary.json", {**summary, "steps": states})


def recorded_steps() -> list[dict[str, Any]]:
    where = run_dir()
    return read_json(where / "steps.json", []) if where is not None else []


def record_result(step: str, result: Any) -> list[Path]:
    """Write a step's result as files: DataFrames as table JSON and CSV, dataclasses as JSON."""
    where = run_dir()
    if where is None or result is None:
        return []
    out = where / RESULTS_DIR
    out.mkdir(exist_ok=True)
    written: list[Path] = []
    for name, frame in _frames(result):
        base = out / _safe_name(f"{step}-{name}" if name else step)
        frame.to_json(
            base.with_suffix(".json"), orient="table", date_format="iso", default_handler=str
        )
        frame.to_csv(base.with_suffix(".csv"), index=False)
        written += [base.with_suffix(".json"), base.with_suffix(".csv")]
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        fields = {
            f.name: getattr(result, f.name)
            for f in dataclasses.fields(result)
            if not _is_frame(getattr(result, f.name)) and not _holds_frames(getattr(result, f.name))
        }
        path = out / f"{_safe_name(step)}.summary.json"
        write_json(path, fields)
        written.append(path)
    return written


def _holds_frames(value: Any) -> bool:
    return isinstance(value, dict) and any(_is_frame(v) for v in value.values())


def _is_frame(value: Any) -> bool:
    return type(value).__name__ == "DataFrame" and hasattr(value, "to_json")


def _frames(result: Any) -> list[tuple[str, Any]]:
    if _is_frame(result):
        return [("", result)]
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        found = []
        for f in dataclasses.fields(result):
            value = getattr(result, f.name)
            if _is_frame(value):
                found.append((f.name, value))
            elif isinstance(value, dict):  # a step's named tables (StepResult.tables)
                found += [(str(k), v) for k, v in value.items() if _is_frame(v)]
        return found
    return []
