"""The run archive, read-only: list runs and show one summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from runbook_lib.errors import ConfigurationError


def _summaries(archive: Path) -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(archive.glob("*/summary.json")):
        try:
            found.append((path.parent, json.loads(path.read_text())))
        except json.JSONDecodeError:
            found.append((path.parent, {"status": "unreadable"}))
    return found


COLUMNS = ["when", "notebook", "mode", "status", "duration_s", "failed step", "confirmed", "path"]


def _confirmations(steps: list[dict[str, Any]]) -> str:
    """Who confirmed the changing steps of an interactive run, and when (first-last, UTC); each
    step's confirmation is in `runbook runs show`."""
    confirmed = [s for s in steps if s.get("confirmed_by")]
    if not confirmed:
        return ""
    users = ", ".join(sorted({s["confirmed_by"] for s in confirmed}))
    times = sorted(str(s.get("confirmed_at"))[11:19] for s in confirmed)
    return f"{len(confirmed)} by {users} {times[0]}-{times[-1]}"


def list_runs(archive: Path, last: int | None = None) -> pd.DataFrame:
    """One row per run, oldest first: when, notebook, status, duration, path."""
    rows = [
        {
            "when": s.get("started_at"),
            "notebook": s.get("notebook"),
            "mode": s.get("mode", "headless"),
            "status": s.get("status"),
            "duration_s": s.get("duration_s"),
            "failed step": (s.get("failed_step") or {}).get("step"),
            "confirmed": _confirmations(s.get("steps") or []),
            "path": str(run_dir),
        }
        for run_dir, s in _summaries(archive)
    ]
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.tail(last) if last else table


def find_run(archive: Path, run: str) -> Path:
    """A run by path, directory name or unique prefix/suffix of its name."""
    direct = Path(run)
    if (direct / "summary.json").exists():
        return direct
    matches = [p.parent for p in archive.glob("*/summary.json") if run in p.parent.name]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ConfigurationError(f"no run matching {run!r} in {archive}")
    raise ConfigurationError(f"{run!r} matches {len(matches)} runs; be more specific")


def show_run(archive: Path, run: str) -> dict[str, Any]:
    return json.loads((find_run(archive, run) / "summary.json").read_text())
