"""Interactive runs in a real JupyterLab 4 driven in a real headless Chromium (Debian's package,
through Python playwright; no browser download): a session is a run with a complete record."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import nbformat
import pytest

from runbook_lib import jupyter
from runbook_lib.ports import free_ports

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPO / "test-logs" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HEADLESS_RECORD = {"notebook.ipynb", "notebook.html", "summary.json", "steps.json", "results"}
SUMMARY_KEYS = {"run_id", "notebook", "parameters", "started_at", "ended_at", "status", "steps"}
SUMMARY_KEYS |= {"cells", "versions", "results", "failed_step", "os_user", "git_commit", "mode"}

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium is not installed")


def _notebooks_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted((REPO / "notebooks").iterdir()):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def lab(lab_factory):
    return lab_factory("browser")


@pytest.fixture(scope="module")
def archive(lab) -> Path:
    path = lab.root.parent / "runs"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def server(archive) -> Iterator[dict]:
    """A runbook JupyterLab server on the archive, the way `runbook open` starts one; the app
    object is exposed to the page so that the test can call JupyterLab's own commands."""
    argv = jupyter.server_argv(
        archive,
        port=free_ports(1, start=random.randrange(20000, 60000))[0],
        token=secrets.token_hex(16),
    )
    log = (archive / jupyter.STATE_DIR / "test-server.log").open("ab")
    process = subprocess.Popen(
        [*argv, "--LabApp.expose_app_in_browser=True"], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while not (found := [s for s in jupyter.running_servers() if s["pid"] == process.pid]):
            assert process.poll() is None and time.monotonic() < deadline, (
                "JupyterLab did not start"
            )
            time.sleep(0.5)
        yield found[0]
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@contextmanager
def screenshot_on_failure(page, name: str):
    try:
        yield
    except BaseException:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        raise


def runbook_open(archive: Path, *args: str) -> tuple[Path, str]:
    out = subprocess.run(
        [sys.executable, "-m", "runbook_lib.cli", "open", *args, "--archive", str(archive)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    run_dir = Path(re.search(r"run folder: (\S+)", out).group(1))
    return run_dir, re.search(r"open: (\S+)", out).group(1)


def open_notebook(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    # a workspace of its own: JupyterLab would otherwise restore the tabs of the previous test
    page.goto(url.replace("/lab/tree/", f"/lab/workspaces/t{secrets.token_hex(4)}/tree/"))
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    wait_idle(page, 60)
    return page


def command(page, name: str) -> None:
    """Start one of JupyterLab's commands (not awaited: running cells resolves late, or never
    when a cell fails)."""
    page.evaluate(f"() => {{ window.jupyterapp.commands.execute({name!r}); }}")


def run_cell(page, index: int) -> None:
    page.evaluate(
        """(i) => {
            const panel = window.jupyterapp.shell.currentWidget;
            panel.content.activeCellIndex = i;
            window.jupyterapp.commands.execute('notebook:run-cell');
        }""",
        index,
    )


def wait_idle(page, timeout_s: float = 600) -> None:
    """Until the notebook's kernel is connected and idle."""
    page.wait_for_timeout(500)
    page.wait_for_function(
        """() => {
            const kernel = window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel;
            return kernel?.connectionStatus === 'connected' && kernel.status === 'idle';
        }""",
        timeout=timeout_s * 1000,
    )


def panel_row(page, text: str):
    return page.locator(".widget-html", has_text=text)


def step_cells(notebook: Path) -> dict[str, int]:
    nb = nbformat.read(notebook, as_version=4)
    return {
        m.group(1): i
        for i, cell in enumerate(nb.cells)
        if (m := re.fullmatch(r'runbook\.run\("(\w+)"\)', cell.source.strip()))
    }


def cell_outputs(page, index: int) -> str:
    """A cell's outputs as JupyterLab holds them (what it saves), as JSON text."""
    return page.evaluate(
        """(i) => JSON.stringify(
            window.jupyterapp.shell.currentWidget.content.model.cells.get(i).toJSON().outputs)""",
        index,
    )


def run_with_panel(page, title: str, *, changes: bool) -> None:
    button = page.locator(".widget-button", has_text=f"Run: {title}")
    button.wait_for(timeout=60_000, state="attached")
    if changes:
        page.locator(".widget-checkbox input").check()
        page.wait_for_timeout(300)
    button.click()
    done = re.compile(rf"{re.escape(title)}: (done|planned|observed nothing)")
    panel_row(page, done).wait_for(timeout=600_000, state="attached")


def test_refusal_shows_its_message_without_a_traceback(server, archive, lab, browser):
    params = str(lab.parameters_dir / "bucardo_bootstrap.yaml")
    _, url = runbook_open(archive, "bucardo_bootstrap", "-f", params, "-p", "copy_jobs", "0")
    page = open_notebook(browser, url)
    with screenshot_on_failure(page, "refusal"):
        command(page, "notebook:run-all-cells")
        error = page.locator(
            ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
        )
        error.first.wait_for(timeout=120_000)
        shown = error.first.inner_text()
        assert "ConfigurationError" in shown and "copy_jobs" in shown
        assert "Traceback" not in shown and 'File "' not in shown and len(shown) < 600
    page.close()


def test_dry_run_session_marks_nothing_done_that_did_not_run(server, archive, lab, browser):
    params = str(lab.parameters_dir / "bucardo_bootstrap.yaml")
    run_dir, url = runbook_open(archive, "bucardo_bootstrap", "-f", params, "-p", "dry_run", "true")
    page = open_notebook(browser, url)
    with screenshot_on_failure(page, "dry-run"):
        command(page, "notebook:run-all-cells")
        wait_idle(page)
        button = page.locator(".widget-button", has_text="Dry run complete: nothing was changed")
        button.wait_for(timeout=120_000, state="attached")
        assert button.is_disabled()
    steps = {s["step"]: s["status"] for s in json.loads((run_dir / "steps.json").read_text())}
    assert steps["preflight"] == "done" and steps["verify"] == "observed nothing"
    assert {steps[s] for s in ("target_schema", "data_copy", "both_directions")} == {"planned"}
    page.close()


def test_bootstrap_session_in_jupyterlab_is_a_complete_run(server, archive, lab, browser):
    before = _notebooks_digest()
    params = str(lab.parameters_dir / "bucardo_bootstrap.yaml")
    run_dir, url = runbook_open(archive, "bucardo_bootstrap", "-f", params)
    cells = step_cells(run_dir / "notebook.ipynb")
    page = open_notebook(browser, url)
    with screenshot_on_failure(page, "session"):
        tab = page.locator(".jp-mod-current.jp-mod-dirty")
        page.wait_for_timeout(1000)
        assert tab.count() == 0, "the notebook is marked modified as soon as it opens"

        command(page, "notebook:run-all-cells")
        panel_row(page, "1. Preflight (read-only): done").wait_for(
            timeout=120_000, state="attached"
        )
        wait_idle(page)
        waiting = cell_outputs(page, cells["target_schema"])
        assert "tick the confirmation" in waiting and "Error" not in waiting

        steps = [
            ("2. Target schema", True),
            ("3. Bucardo objects", True),
            ("4. Data copy", True),
        ]
        for title, changes in steps:
            run_with_panel(page, title, changes=changes)
        # the notebook's own instruction: tick the confirmation, then re-run the step's cell
        page.locator(".widget-checkbox input").check()
        page.wait_for_timeout(300)
        run_cell(page, cells["sequences"])
        panel_row(page, "5. Sequences: done").wait_for(timeout=120_000, state="attached")
        for title, changes in [
            ("6. Enable and drain", True),
            ("7. Verify", False),
            ("8. Both directions", True),
        ]:
            run_with_panel(page, title, changes=changes)
        page.locator(".widget-button", has_text="All steps done").wait_for(
            timeout=30_000, state="attached"
        )
        for name, index in cells.items():
            shown = cell_outputs(page, index)
            assert "tick the confirmation" not in shown and "waits for" not in shown, name

        command(page, "docmanager:save")
        page.wait_for_timeout(1500)
        command(page, "notebook:close-and-shutdown")
        page.locator(".jp-Dialog-button.jp-mod-accept").click()
        deadline = time.monotonic() + 60
        while jupyter.notebook_has_kernel(run_dir / "notebook.ipynb"):
            assert time.monotonic() < deadline, "the kernel did not shut down"
            time.sleep(0.5)
        # the stopping kernel wrote the status and the HTML; the run stays open until closed
        while json.loads((run_dir / "summary.json").read_text()).get("ended_by") is None:
            assert time.monotonic() < deadline, "the kernel's exit did not record the run"
            time.sleep(0.5)
        assert (run_dir / "notebook.html").exists()

    closed = subprocess.run(
        [sys.executable, "-m", "runbook_lib.cli", "runs", "close", run_dir.name],
        cwd=archive.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert closed.returncode == 0, closed.stderr
    assert {p.name for p in run_dir.iterdir()} >= HEADLESS_RECORD
    assert list((run_dir / "results").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary) >= SUMMARY_KEYS
    assert summary["mode"] == "interactive" and summary["status"] == "succeeded"
    assert summary["parameters"]["interactive"] is True
    changing = [s for s in summary["steps"] if s["changes"]]
    assert changing and all(s["confirmed_by"] and s["confirmed_at"] for s in changing)
    nb = nbformat.read(run_dir / "notebook.ipynb", as_version=4)
    for name, index in cells.items():
        outputs = json.dumps(nb.cells[index].outputs)
        assert nb.cells[index].outputs and "tick the confirmation" not in outputs, name
    assert "widgets" in nb.metadata, "widget state is saved with the notebook"
    html = (run_dir / "notebook.html").read_text()
    assert "Target schema" in html and "Traceback" not in html
    assert "steps at the end of the run" in html, "the step panel, readable without widgets"
    assert _notebooks_digest() == before, "a session never touches the committed notebooks"

    listing = subprocess.run(
        [sys.executable, "-m", "runbook_lib.cli", "runs", "--archive", str(archive)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    confirmed = len(changing)
    assert re.search(
        rf"interactive\s+succeeded.* {confirmed} by \w+ [\d:]+-[\d:]+ .*{run_dir.name}", listing
    )

    page = open_notebook(browser, url)
    with screenshot_on_failure(page, "reopened"):
        page.locator(".widget-html", has_text="8. Both directions: done").wait_for(
            timeout=60_000, state="attached"
        )
        assert page.get_by_text("model not found").count() == 0
    page.close()
    if os.environ.get("RUNBOOK_KEEP_SESSION"):  # a person may look at the record afterwards
        shutil.copytree(run_dir, os.environ["RUNBOOK_KEEP_SESSION"], dirs_exist_ok=True)
