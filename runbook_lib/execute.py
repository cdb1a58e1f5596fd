"""Execute a runbook notebook with papermill into the run archive."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import papermill
import yaml

from runbook_lib.errors import ConfigurationError, RunbookError

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
DEFAULT_ARCHIVE = Path("runs")


class RunFailed(RunbookError):
    """A notebook run stopped at a failing cell; the partial record is kept."""

    def __init__(self, output: Path, cell_index: int | None, ename: str, evalue: str) -> None:
        self.output = output
        self.cell_index = cell_index
        self.ename = ename
        self.evalue = evalue
        where = f"cell {cell_index}" if cell_index is not None else "a cell"
        super().__init__(
            f"{output.parent.name}: {where} failed: {ename}: {evalue} (record: {output})"
        )


@dataclass(frozen=True)
class RunResult:
    notebook: Path
    output: Path


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


def run_directory(archive: Path, notebook: Path, now: datetime | None = None) -> Path:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    base = archive / f"{stamp}-{notebook.stem}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def run_notebook(
    notebook: str, parameters: dict[str, Any], *, archive: Path = DEFAULT_ARCHIVE
) -> RunResult:
    """Run notebook with parameters; the executed copy is saved after every cell."""
    source = resolve_notebook(notebook)
    out_dir = run_directory(archive, source)
    out_dir.mkdir(parents=True)
    output = out_dir / "notebook.ipynb"
    try:
        papermill.execute_notebook(
            str(source),
            str(output),
            parameters=parameters,
            cwd=str(Path.cwd()),
            progress_bar=False,
            request_save_on_cell_execute=True,
        )
    except papermill.PapermillExecutionError as exc:
        raise RunFailed(output, exc.cell_index, exc.ename, exc.evalue) from exc
    return RunResult(source, output)
