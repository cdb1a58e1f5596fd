"""The warm standby runbook end to end on a lab: both modes, under the write workload, fail over,
and every transaction committed before the drill's marker is on the promoted standby."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from runbook_lib import standby
from runbook_lib.cluster import server_os_user
from runbook_lib.connection import connect
from runbook_lib.errors import PreconditionError
from runbook_lib.execute import run_notebook
from runbook_lib.host import LOCAL
from runbook_lib.lab.parameters import warm_standby_parameters
from runbook_lib.lab.workload import read_ledger, verify_ledger
from runbook_lib.standby.archiving import archiver_stats, switch_and_wait_archived
from runbook_lib.standby.drill import MARKER_NOTE


@pytest.fixture(autouse=True)
def keep_standby_log(request: pytest.FixtureRequest) -> Iterator[None]:
    """The standby's log lives next to its data directory; copy it into the lab's logs/ (kept by
    the lab fixture when a test fails)."""
    yield
    for lab in request.getfixturevalue("lab_factory").labs:
        log = lab.standby_datadir.parent / f"{lab.standby_datadir.name}.log"
        if log.exists():
            shutil.copyfile(log, lab.root / "logs" / "standby.log")


def start_workload(lab_root: Path, ledger: Path, log: Path):
    argv = [sys.executable, "-m", "runbook_lib.cli", "lab", "workload", "--dir", str(lab_root)]
    argv += ["--server", "primary", "--seconds", "0", "--rate", "20", "--ledger", str(ledger)]
    return LOCAL.start(argv, stdout_path=log)


def stop_workload(proc) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def notebook_under_workload(lab, cfg: standby.StandbyConfig, values: dict, tmp_path: Path):
    """The warm standby notebook run while the lab workload writes to the primary: (its result,
    the workload's ledger). Archiving is set up first: turning archive_mode on restarts the
    primary, and the workload does not survive a restart (its reconnect raises); the notebook
    then finds step 2 already done."""
    standby.configure_archiving(cfg)
    ledger = tmp_path / "ledger.jsonl"
    workload = start_workload(lab.root, ledger, tmp_path / "workload.log")
    try:
        result = run_notebook("warm_standby", values, archive=tmp_path / "runs")
        assert workload.poll() is None, (tmp_path / "workload.log").read_text()
    finally:
        stop_workload(workload)
    return result, ledger


def ledger_before(ledger: Path, cutoff: datetime, out: Path) -> int:
    """Write the ledger entries committed before cutoff whose keys nothing touched after it (the
    standby replays past the marker, so later changes to a key may rightly be there too)."""
    entries = list(read_ledger(ledger))
    before = [e for e in entries if datetime.fromisoformat(e["at"]) < cutoff]
    after = [e for e in entries if datetime.fromisoformat(e["at"]) >= cutoff]
    tainted = {
        (e["table"], k)
        for e in after
        if e["op"] != "in_doubt"
        for k in (e["key"], e.get("old_key"))
        if k is not None
    }
    changed = True
    while changed:  # a re-key links two keys: if either is tainted, both are
        changed = False
        for e in before:
            if e["op"] == "rekey":
                pair = {(e["table"], e["key"]), (e["table"], e["old_key"])}
                if pair & tainted and not pair <= tainted:
                    tainted |= pair
                    changed = True
    kept = [
        e
        for e in before
        if e["op"] == "in_doubt"
        or not {(e["table"], e["key"]), (e["table"], e.get("old_key"))} & tainted
    ]
    out.write_text("".join(json.dumps(e) + "\n" for e in kept))
    return sum(1 for e in kept if e["op"] != "in_doubt")


def marker_on(cfg: standby.StandbyConfig) -> dict[str, Any]:
    with connect(cfg.standby()) as conn:
        assert conn.execute("SELECT pg_catalog.pg_is_in_recovery() AS r").fetchone()["r"] is False
        return conn.execute(
            "SELECT token, written_at FROM runbook_standby.failover_marker WHERE note = %s",
            [MARKER_NOTE],
        ).fetchone()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["standby", "pg_standby"])
def test_notebook_fails_over_under_workload_without_losing_commits(lab_factory, tmp_path, mode):
    lab = lab_factory(f"ws-{mode}")
    values = {**warm_standby_parameters(lab), "mode": mode, "observe_s": 5}
    cfg = standby.validate(**values)
    result, ledger = notebook_under_workload(lab, cfg, values, tmp_path)

    steps = [(s["step"], s["status"]) for s in result.summary["steps"]]
    assert steps == [(step.name, "done") for step in standby.STEPS]
    marker = marker_on(cfg)
    assert marker is not None, "the drill's marker must be on the promoted standby"
    checked = ledger_before(ledger, marker["written_at"], tmp_path / "before-marker.jsonl")
    assert checked > 100, f"the workload committed only {checked} checkable changes"
    mismatches = verify_ledger(cfg.standby(), tmp_path / "before-marker.jsonl")
    assert mismatches.empty, mismatches.head(20).to_string()

    # re-running the steps after success changes nothing and says so
    assert standby.configure_archiving(cfg).status.startswith("already done")
    assert standby.build_standby(cfg).status.startswith("already done")
    assert standby.compare_row_counts(cfg).startswith("skipped")
    assert standby.failover_drill(cfg).status.startswith("already done")
    if mode == "pg_standby":
        assert not Path(cfg.trigger_file).exists(), "recovery_end_command removes the trigger"


def test_unwritable_archive_fails_the_proof_and_shows_in_status(lab_factory):
    lab = lab_factory("ws-archive-fails")
    cfg = standby.validate(**{**warm_standby_parameters(lab), "failover_drill": False})
    standby.configure_archiving(cfg)
    os.chmod(lab.archive_dir, 0o500)  # the server's OS user can no longer write there
    try:
        with (
            connect(cfg.primary()) as conn,
            pytest.raises(PreconditionError, match="archive_command failed"),
        ):
            switch_and_wait_archived(conn, timeout_s=30)
        health = standby.status(cfg, observe_s=1)
        assert not health.ok
        assert any("archiving is FAILING" in p for p in health.problems), health.problems
        assert "FAILING" in repr(health)
        assert bool(health.primary["failing"].iloc[0])
        assert health.plot().axes, "the lag plot is drawn even with the standby absent"
    finally:
        os.chmod(lab.archive_dir, 0o700)
    with connect(cfg.primary()) as conn:
        switch_and_wait_archived(conn, timeout_s=90)  # the backlog drains once it is writable
        assert not archiver_stats(conn)["failing"]
    assert not any("FAILING" in p for p in standby.status(cfg, observe_s=1).problems)


def test_build_refuses_a_stale_trigger_file_in_pg_standby_mode(lab_factory):
    lab = lab_factory("ws-stale-trigger")
    cfg = standby.validate(**{**warm_standby_parameters(lab), "mode": "pg_standby"})
    LOCAL.write_text(cfg.trigger_file, "", owner=server_os_user())
    with pytest.raises(PreconditionError, match="trigger_file absent"):
        standby.preflight(cfg)
    with pytest.raises(PreconditionError, match="would promote at once"):
        standby.build_standby(cfg)
    assert not lab.standby_datadir.exists(), "nothing was changed"
