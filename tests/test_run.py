"""`runbook run`: checks parameters, executes with papermill, archives an auditable record."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time

import nbformat
import pytest
from tiny_notebooks import write_notebook

PARAMS_CELL = """answer: int = 1  # what to check
label: str = "x"  # a label
tables: list[str] = []  # tables to look at
"""


def _notebook(path, *cells: str):
    steps = []
    for i, body in enumerate(cells):
        steps.append(nbformat.v4.new_markdown_cell(f"## Step {i + 1}\nexplained"))
        steps.append(nbformat.v4.new_code_cell(body))
    return write_notebook(path, PARAMS_CELL, steps)


def _runbook(*args, cwd, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "runbook_lib.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        **kwargs,
    )


def test_run_succeeds_and_archives_notebook_html_and_summary(tmp_path):
    nb = _notebook(
        tmp_path / "ok.ipynb",
        "assert answer == 42\nprint('checked', answer)",
        "import pandas as pd\npd.DataFrame({'table': ['public.foo'], 'rows': [3]})",
    )
    params = tmp_path / "p.yaml"
    params.write_text("answer: 41\nlabel: first\n")
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
    assert re.fullmatch(r"\d{8}T\d{6}Z-ok-[0-9a-f]{6}", run_dir.name)
    assert {"notebook.ipynb", "notebook.html", "summary.json"} <= {
        p.name for p in run_dir.iterdir()
    }
    executed = nbformat.read(run_dir / "notebook.ipynb", as_version=4)
    assert "checked 42" in str(executed.cells)
    assert "public.foo" in (run_dir / "notebook.html").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "succeeded"
    assert summary["parameters"] == {"answer": 42, "label": "first"}
    assert summary["notebook"] == "ok" and len(summary["notebook_sha256"]) == 64
    assert summary["duration_s"] > 0 and summary["ended_at"] >= summary["started_at"]
    assert [s["title"] for s in summary["steps"]] == ["Step 1", "Step 2"]
    assert all(s["status"] == "completed" for s in summary["steps"])
    assert summary["versions"]["runbook_lib"] and summary["versions"]["postgresql_client"]
    assert summary["os_user"] and summary["host"]
    # archived runs are read-only
    assert not (run_dir / "summary.json").stat().st_mode & 0o222


def test_run_archive_is_its_owners_only_and_read_only_whatever_the_umask(tmp_path):
    nb = _notebook(
        tmp_path / "rec.ipynb",
        "import pandas as pd\nfrom runbook_lib import record\n"
        "record.record_result('counts', pd.DataFrame({'rows': [3]}))",
    )
    archive = tmp_path / "runs"
    result = _runbook(
        "run", str(nb), "--archive", str(archive), cwd=tmp_path, preexec_fn=lambda: os.umask(0)
    )
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(archive.stat().st_mode) == 0o700
    (run_dir,) = archive.iterdir()
    paths = [run_dir, *run_dir.rglob("*")]
    assert any(p.parent.name == "results" for p in paths)
    for path in paths:
        wanted = 0o500 if path.is_dir() else 0o400
        assert stat.S_IMODE(path.stat().st_mode) == wanted, path


def test_run_failure_exits_non_zero_naming_the_failed_step_and_keeps_the_record(tmp_path):
    nb = _notebook(tmp_path / "bad.ipynb", "x = 1", "raise RuntimeError('replica is behind')")
    result = _runbook("run", str(nb), "--archive", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode == 1
    assert "Step 2 failed: RuntimeError: replica is behind" in result.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["failed_step"]["step"] == "Step 2"
    assert summary["failed_step"]["ename"] == "RuntimeError"
    assert (run_dir / "notebook.html").exists()


def test_run_interrupted_by_sigterm_is_recorded_as_interrupted(tmp_path):
    nb = _notebook(tmp_path / "slow.ipynb", "import time\ntime.sleep(60)")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runbook_lib.cli",
            "run",
            str(nb),
            "--archive",
            str(tmp_path / "runs"),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runs = list((tmp_path / "runs").glob("*/notebook.ipynb"))
        if (
            runs
            and "time.sleep" in runs[0].read_text()
            and '"status": "running"' in runs[0].read_text()
        ):
            break
        time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"


def test_run_refuses_unknown_parameters_before_starting_a_kernel(tmp_path):
    nb = _notebook(tmp_path / "p.ipynb", "open('ran', 'w').write('yes')")
    result = _runbook(
        "run", str(nb), "-p", "answr", "3", "--archive", str(tmp_path / "runs"), cwd=tmp_path
    )
    assert result.returncode == 1
    assert "unknown parameter(s) answr" in result.stderr
    assert "answer (int)" in result.stderr  # names the valid ones
    assert not (tmp_path / "ran").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("answer", "'forty'", "answer must be int"),
        ("answer", "true", "answer must be int"),
        ("tables", "public.foo", "tables must be list[str]"),
        ("tables", "[1, 2]", "tables must be list[str]"),
    ],
)
def test_run_refuses_parameters_of_the_wrong_type(tmp_path, name, value, message):
    nb = _notebook(tmp_path / "p.ipynb", "pass")
    result = _runbook(
        "run", str(nb), "-p", name, value, "--archive", str(tmp_path / "runs"), cwd=tmp_path
    )
    assert result.returncode == 1
    assert message in result.stderr


def test_run_refuses_a_parameter_that_carries_a_password(tmp_path):
    nb = _notebook(tmp_path / "p.ipynb", "pass")
    result = _runbook(
        "run",
        str(nb),
        "-p",
        "label",
        "host=db password=Sw0rdfish",
        "--archive",
        str(tmp_path / "runs"),
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "passwords are never parameters" in result.stderr
    assert "Sw0rdfish" not in result.stderr


def test_run_of_an_unknown_notebook_lists_the_known_ones(tmp_path):
    result = _runbook("run", "no_such_runbook", "--archive", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode == 1
    assert "no notebook 'no_such_runbook'" in result.stderr


def test_runs_lists_runs_and_shows_one_summary(tmp_path):
    ok = _notebook(tmp_path / "good.ipynb", "pass")
    bad = _notebook(tmp_path / "broken.ipynb", "1/0")
    archive = str(tmp_path / "runs")
    _runbook("run", str(ok), "--archive", archive, cwd=tmp_path)
    _runbook("run", str(bad), "--archive", archive, cwd=tmp_path)
    listing = _runbook("runs", "--archive", archive, cwd=tmp_path)
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert "succeeded" in lines[1] and "good" in lines[1]
    assert "failed" in lines[2] and "broken" in lines[2] and "ZeroDivisionError" not in lines[2]
    assert (
        len(_runbook("runs", "--last", "1", "--archive", archive, cwd=tmp_path).stdout.splitlines())
        == 2
    )
    shown = _runbook("runs", "show", "broken", "--archive", archive, cwd=tmp_path)
    assert json.loads(shown.stdout)["failed_step"]["ename"] == "ZeroDivisionError"


def test_params_lists_types_defaults_and_help(tmp_path):
    nb = _notebook(tmp_path / "p.ipynb", "pass")
    out = _runbook("params", str(nb), cwd=tmp_path).stdout
    assert re.search(r"answer\s+int\s+1\s+what to check", out)
    assert re.search(r"tables\s+list\[str\]", out)


def test_run_is_headless_interactive_parameter_defaults_to_false(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("interactive: bool = True  # confirm steps in the panel")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell("assert interactive is False")]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, tmp_path / "i.ipynb")
    result = _runbook(
        "run", str(tmp_path / "i.ipynb"), "--archive", str(tmp_path / "runs"), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
