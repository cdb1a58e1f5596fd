"""The warm standby notebook on the step framework: a dry run shows the commands and SQL of the
changing steps, runs the read-only ones, and leaves every server as it was."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import nbformat

from runbook_lib import pgbin, standby
from runbook_lib.cluster import server_os_user
from runbook_lib.connection import connect
from runbook_lib.host import LOCAL, display_command
from runbook_lib.lab.lab import Lab
from runbook_lib.lab.parameters import warm_standby_parameters
from runbook_lib.standby import drill
from runbook_lib.standby.archiving import alter_system_sql
from runbook_lib.standby.backup import base_backup_argv
from runbook_lib.steps import NothingToObserve, Plan


def primary_state(lab: Lab) -> dict[str, Any]:
    """Schema and data of every database, every setting, and postgresql.auto.conf."""
    endpoint = lab.endpoint("primary")
    # a fixed \restrict key: by default every dump carries a random one
    argv = [pgbin.program("pg_dumpall"), "--restrict-key", "runbooktest"]
    dump = LOCAL.run(argv, env=endpoint.libpq_env()).stdout
    assert "widget" in dump, "the dump holds the sample data"
    with connect(endpoint) as conn:
        settings = conn.execute(
            "SELECT name, setting FROM pg_catalog.pg_settings ORDER BY name"
        ).fetchall()
    auto_conf = (lab.cluster("primary").datadir / "postgresql.auto.conf").read_text()
    return {"dump": dump, "settings": settings, "auto_conf": auto_conf}


def files_under(*roots: Path) -> dict[str, bytes]:
    return {
        str(p): p.read_bytes() if p.is_file() else b"<dir>"
        for root in roots
        for p in [root, *sorted(root.rglob("*"))]
        if p.exists()
    }


def outputs(notebook: Path) -> str:
    nb = nbformat.read(notebook, as_version=4)
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            texts.append(out.get("text", "") + out.get("data", {}).get("text/plain", ""))
    return "\n".join(texts)


def test_dry_run_of_the_notebook_plans_the_changes_and_leaves_the_primary_identical(
    lab_factory, tmp_path
):
    lab = lab_factory("ws-dry-run")
    cfg = standby.validate(**warm_standby_parameters(lab))
    watched = (lab.archive_dir, lab.root / "standby", lab.root / "runbook-tools")
    before, files_before = primary_state(lab), files_under(*watched)
    assert lab.archive_dir.exists() and not (lab.root / "runbook-tools").exists()

    argv = [sys.executable, "-m", "runbook_lib.cli", "run", "warm_standby"]
    argv += ["-f", str(lab.parameters_dir / "warm_standby.yaml"), "-p", "dry_run", "true"]
    LOCAL.run([*argv, "--archive", str(tmp_path / "runs")], timeout_s=600)

    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "succeeded"
    assert summary["parameters"]["dry_run"] is True
    assert [(s["step"], s["status"]) for s in summary["steps"]] == [
        ("preflight", "done"),
        ("configure_archiving", "planned"),
        ("build_standby", "planned"),
        ("status", "observed nothing"),
        ("compare", "observed nothing"),
        ("failover_drill", "planned"),
    ]
    shown = outputs(run_dir / "notebook.ipynb")
    # the plans come from the builders the steps run: the same argv and SQL, character for character
    basebackup = display_command(LOCAL.as_user(base_backup_argv(cfg), server_os_user()))
    assert basebackup in shown and "pg_basebackup" in basebackup
    assert alter_system_sql("archive_mode", "on").as_string(None) in shown
    assert 'ALTER SYSTEM SET "archive_command"' in shown
    assert display_command(cfg.restart_primary_command) in shown, "archive_mode needs a restart"
    assert "pg_promote" in shown
    for step in ("status", "compare"):
        assert f"{step}: nothing to observe in a dry run" in shown

    assert primary_state(lab) == before
    assert files_under(*watched) == files_before, "no file created in the archive or standby"


def test_dry_run_with_a_running_standby_observes_it_without_writing(lab_factory):
    lab = lab_factory("ws-dry-run-standby")
    values = {**warm_standby_parameters(lab), "observe_s": 2, "failover_drill": False}
    cfg = standby.validate(**values)
    standby.configure_archiving(cfg)
    standby.build_standby(cfg)
    before = primary_state(lab)

    runbook = standby.make_runbook(cfg, dry_run=True)
    assert runbook.run("preflight").checks["ok"].all()
    assert "no ALTER SYSTEM" in repr(runbook.run("configure_archiving"))
    plan = runbook.run("build_standby")
    assert isinstance(plan, Plan)
    assert plan.actions == ["already done: the standby is running; nothing to run"]
    health = runbook.run("status")
    assert not isinstance(health, NothingToObserve)
    assert bool(health.standby["in_recovery"].iloc[0])
    assert health.lag["time_lag_s"].isna().all(), "no heartbeat written, so no time lag"
    counts = runbook.run("compare")
    assert not counts.settled and "not brought up to date" in repr(counts)
    assert len(counts.counts) > 0
    assert runbook.run("failover_drill").actions == [drill.NOT_WANTED]
    assert primary_state(lab) == before
