"""`runbook run`: executes a notebook with papermill into the run archive; exit status tells."""

from __future__ import annotations

import subprocess
import sys

import nbformat


def _notebook(path, body: str):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("answer: int = 1  # what to check")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)
    return path


def _runbook(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "runbook_lib.cli", *args], capture_output=True, text=True, cwd=cwd
    )


def test_run_succeeds_and_saves_the_executed_notebook(tmp_path):
    nb = _notebook(tmp_path / "ok.ipynb", "assert answer == 42\nprint('checked', answer)")
    params = tmp_path / "p.yaml"
    params.write_text("answer: 41\n")
    result = _runbook(
        "run",
        str(nb),
        "-f",
        str(params),
        "-p",
        "answer",
        "42",
        "--archive",
        str(tmp_path / "runs"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.endswith("-ok")
    executed = nbformat.read(run_dir / "notebook.ipynb", as_version=4)
    assert "checked 42" in str(executed.cells[-1].outputs)


def test_run_failure_exits_non_zero_naming_the_failed_cell_and_keeps_the_record(tmp_path):
    nb = _notebook(tmp_path / "bad.ipynb", "raise RuntimeError('replica is behind')")
    result = _runbook("run", str(nb), "--archive", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode != 0
    assert "RuntimeError" in result.stderr and "replica is behind" in result.stderr
    assert "cell" in result.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "notebook.ipynb").exists()


def test_run_of_an_unknown_notebook_lists_the_known_ones(tmp_path):
    result = _runbook("run", "no_such_runbook", "--archive", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode != 0
    assert "no notebook 'no_such_runbook'" in result.stderr
