"""Interactive runs without a browser: `runbook open` makes the run folder, the kernel records in
it, `runbook runs close` ends it (the browser test drives the same through JupyterLab)."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import urllib.request

import nbformat
import pytest
from tiny_notebooks import write_notebook

from runbook_lib import jupyter, record, session
from runbook_lib.errors import ConfigurationError
from runbook_lib.steps import Step, runbook_for

PARAMS_CELL = """answer: int = 1  # what to check
interactive: bool = False  # confirm changing steps in the step panel
"""


def _notebook(path):
    never = nbformat.v4.new_code_cell("raise SystemError('never executed')")
    return write_notebook(path, PARAMS_CELL, [never])


def _open(tmp_path, *args: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "runbook_lib.cli", "open", str(tmp_path / "nb.ipynb"), *args]
    argv += ["--archive", str(tmp_path / "runs"), "--no-server"]
    return subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=120)


def test_open_makes_an_interactive_run_folder_with_injected_parameters_and_nothing_executed(
    tmp_path,
):
    _notebook(tmp_path / "nb.ipynb")
    opened = _open(tmp_path, "-p", "answer", "42")
    assert opened.returncode == 0, opened.stderr
    assert "runbook runs close" in opened.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["mode"] == "interactive" and summary["status"] == "open"
    assert summary["parameters"] == {"answer": 42, "interactive": True}
    nb = nbformat.read(run_dir / "notebook.ipynb", as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "answer = 42" in injected[0].source and "interactive = True" in injected[0].source
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert nb.metadata["kernelspec"]["display_name"] != "Python 3", "the kernel's own name"
    assert record.interactive_run_dir(run_dir) == run_dir


def test_open_checks_parameters_like_run_and_makes_no_folder_when_they_are_wrong(tmp_path):
    _notebook(tmp_path / "nb.ipynb")
    opened = _open(tmp_path, "-p", "answr", "42")
    assert opened.returncode == 1 and "unknown parameter(s) answr" in opened.stderr
    assert not (tmp_path / "runs").exists()


def test_steps_recorded_in_the_run_folder_and_close_seals_it_with_the_confirmations(
    tmp_path, monkeypatch
):
    _notebook(tmp_path / "nb.ipynb")
    run_dir = session.open_run(str(tmp_path / "nb.ipynb"), {}, archive=tmp_path / "runs")
    monkeypatch.chdir(run_dir)  # where JupyterLab starts the notebook's kernel
    monkeypatch.delenv(record.RUN_DIR_ENV, raising=False)
    steps = [Step("look", "1. Look", lambda run: "seen", changes=False),
             Step("change", "2. Change", lambda run: "changed", changes=True)]  # fmt: skip
    runbook = runbook_for("demo", steps, None, interactive=True)
    runbook.execute("look")
    assert json.loads((run_dir / "summary.json").read_text())["steps"][0]["status"] == "done"
    runbook.confirm("change")
    runbook.execute("change")

    summary = session.close_run(tmp_path / "runs", run_dir.name)
    assert summary["status"] == "succeeded" and summary["closed_at"]
    assert summary["steps"][1]["confirmed_by"] and summary["steps"][1]["confirmed_at"]
    assert (run_dir / "notebook.html").exists()
    assert not stat.S_IMODE((run_dir / "summary.json").stat().st_mode) & 0o222, "read-only"
    assert record.interactive_run_dir(run_dir) is None, "a closed run records nothing more"
    with pytest.raises(ConfigurationError, match="already closed"):
        session.close_run(tmp_path / "runs", run_dir.name)


def test_a_restarted_kernel_continues_the_run_where_it_was(tmp_path, monkeypatch):
    _notebook(tmp_path / "nb.ipynb")
    run_dir = session.open_run(str(tmp_path / "nb.ipynb"), {}, archive=tmp_path / "runs")
    monkeypatch.chdir(run_dir)
    steps = [Step("look", "1. Look", lambda run: "seen", changes=False),
             Step("change", "2. Change", lambda run: "changed", changes=True)]  # fmt: skip
    first = runbook_for("demo", steps, None, interactive=True)
    first.execute("look")
    first.confirm("change")
    again = runbook_for("demo", steps, None, interactive=True)
    assert again.states["look"].status == "done" and again.states["change"].confirmed
    assert again.next_step().name == "change"
    assert session.close_run(tmp_path / "runs", run_dir.name)["status"] == "incomplete"


def test_open_starts_a_loopback_jupyterlab_on_the_archive_that_saves_widget_state(tmp_path):
    _notebook(tmp_path / "nb.ipynb")
    argv = [sys.executable, "-m", "runbook_lib.cli", "open", str(tmp_path / "nb.ipynb")]
    argv += ["--archive", str(tmp_path / "runs")]
    opened = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert opened.returncode == 0, opened.stderr
    pid = int(re.search(r"started JupyterLab \(pid (\d+)\)", opened.stdout).group(1))
    try:
        url = re.search(r"open: (\S+)", opened.stdout).group(1)
        assert url.startswith("http://127.0.0.1:") and "/lab/tree/" in url and "token=" in url
        with urllib.request.urlopen(url, timeout=30) as page:
            assert page.status == 200
        assert "does not save widget state" not in opened.stdout
        server = jupyter.server_for(tmp_path / "runs")
        assert server["pid"] == pid and jupyter.saves_widget_state(server) is True
    finally:
        os.kill(pid, signal.SIGTERM)


def test_a_stopping_kernel_records_the_status_and_html_and_leaves_the_run_open(tmp_path):
    from jupyter_client.manager import start_new_kernel

    _notebook(tmp_path / "nb.ipynb")
    run_dir = session.open_run(str(tmp_path / "nb.ipynb"), {}, archive=tmp_path / "runs")
    manager, client = start_new_kernel(kernel_name="python3", cwd=str(run_dir))
    try:
        reply = client.execute_interactive(
            "from runbook_lib.steps import Step, runbook_for\n"
            "rb = runbook_for('demo', [Step('look', '1. Look', lambda run: 1, False)], None,"
            " interactive=True)\n"
            "rb.execute('look')",
            timeout=60,
        )
        assert reply["content"]["status"] == "ok"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=False)
    session._wait_for_the_kernel_record(run_dir, timeout_s=60)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["ended_by"] == "kernel stopped" and summary["status"] == "succeeded"
    assert (run_dir / "notebook.html").exists() and not (run_dir / ".finishing.log").exists()
    assert record.interactive_run_dir(run_dir) == run_dir, "open until closed"
