"""Retiring the replication after a bootstrap, on real servers with a real Bucardo daemon, while
the lab workload keeps writing to the database that stays: the application never sees an error,
nothing of Bucardo is left, the ledger is complete, ids continue by 1; bad input and dry runs
change nothing; a removal killed half-way finishes when the notebook is run again."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from loads import Pgbench, Workload, pgbench_init

from runbook_lib.bucardo import (
    retire,
    retire_leftovers,
    retire_preflight,
    retire_state,
    settled,
)
from runbook_lib.bucardo.ctl import BucardoCtl
from runbook_lib.bucardo.retire_config import validate_retire_parameters
from runbook_lib.compare.result import DataMismatch
from runbook_lib.connection import connect
from runbook_lib.errors import ConfigurationError, PreconditionError
from runbook_lib.execute import run_notebook
from runbook_lib.host import LOCAL
from runbook_lib.lab import lab as lab_module
from runbook_lib.lab.workload import verify_ledger
from runbook_lib.waiting import wait_until

pytestmark = pytest.mark.slow
RETIRED_QUIET_S = retire_preflight.QUIET_S + 1
BIG_SCALE = 3  # pgbench_accounts: 300,000 rows, more keys than the proof holds in memory
BATCH_JOB_KEYS = settled.MAX_SUSPECTS + 50_000


def params_of(the_lab: lab_module.Lab, **overrides) -> dict:
    path = the_lab.parameters_dir / "bucardo_bootstrap.yaml"
    return yaml.safe_load(path.read_text()) | overrides


def leftovers(cfg: retire.RetireConfig) -> dict:
    out = {}
    for name, ep in cfg.sides().items():
        with connect(ep) as conn:
            out[name] = retire_leftovers.on_master(conn)
    with connect(cfg.bootstrap.control) as conn:
        out["control"] = retire_leftovers.in_control(conn, cfg.bootstrap)
    return out


def replication_intact(cfg: retire.RetireConfig) -> None:
    left = leftovers(cfg)
    for name in cfg.sides():
        assert "bucardo" in left[name]["schemas"] and left[name]["triggers"], left
    assert set(left["control"]) == {"sync", "relgroup", "dbgroup", "db"}, left
    assert BucardoCtl(cfg.bootstrap).mcp_pid(), "the daemon must still run"
    assert retire_state.read(cfg) is None


@pytest.fixture(scope="module")
def bootstrapped(lab_factory, tmp_path_factory) -> Iterator[tuple]:
    the_lab = lab_factory("bucardo-retire")
    pgbench_init(the_lab.endpoint("here", "widgets"), scale=BIG_SCALE)
    workload = Workload(the_lab, "retire", rate=50)  # writes to `here`, which stays
    archive = tmp_path_factory.mktemp("runs")
    try:
        run_notebook("bucardo_bootstrap", params_of(the_lab), archive=archive)
        cfg = validate_retire_parameters(**params_of(the_lab, keep="here"))
        yield the_lab, cfg, workload, archive
    finally:
        workload.stop()


def test_a_keep_other_than_here_or_there_is_refused_before_anything(bootstrapped, tmp_path):
    the_lab, cfg, _, _ = bootstrapped
    with pytest.raises(ConfigurationError, match="keep='both'"):
        validate_retire_parameters(**params_of(the_lab, keep="both"))
    with pytest.raises(Exception, match="keep"):
        run_notebook("bucardo_retire", params_of(the_lab, keep="old"), archive=tmp_path)
    replication_intact(cfg)


def test_keeping_the_side_the_application_does_not_write_to_is_refused(bootstrapped):
    the_lab, _, _, _ = bootstrapped
    wrong = validate_retire_parameters(**params_of(the_lab, keep="there"))
    with pytest.raises(PreconditionError, match="still writes to here"):
        retire.make_runbook(wrong).run("preflight")
    replication_intact(wrong)


def test_a_sync_that_does_not_exist_is_refused_before_anything(bootstrapped):
    the_lab, cfg, _, _ = bootstrapped
    other = validate_retire_parameters(**params_of(the_lab, keep="here", sync="nosuch"))
    with pytest.raises(PreconditionError, match="no sync 'nosuch'"):
        retire.make_runbook(other).run("preflight")
    with pytest.raises(PreconditionError, match="not proven equal yet"):
        retire.make_runbook(other).run("remove_from_databases")
    replication_intact(cfg)


def test_dry_run_shows_every_change_and_changes_nothing(bootstrapped, tmp_path):
    the_lab, cfg, _, _ = bootstrapped
    result = run_notebook(
        "bucardo_retire", params_of(the_lab, keep="here", dry_run=True), archive=tmp_path
    )
    assert result.summary["status"] == "succeeded"
    text = result.output.read_text()
    assert "DROP TRIGGER IF EXISTS" in text and "remove sync" in text
    assert "INCREMENT BY 1" in text
    replication_intact(cfg)


def _only_locked_table_left(cfg: retire.RetireConfig, locked: str) -> bool:
    with connect(cfg.kept) as conn:
        left = {t["table"] for t in retire_leftovers.triggers(conn)}
    return left == {locked}


def _descendants(pid: int) -> list[int]:
    """Every process below pid (from /proc: jupyter starts the kernel in a session of its own,
    so killing the runner's process group would leave the kernel running)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_run_mid_removal(the_lab: lab_module.Lab, cfg: retire.RetireConfig, tmp_path) -> Path:
    """`runbook run bucardo_retire`, killed (SIGKILL, kernel included) once the removal has
    cleared every table of the kept side but one, which 'an application' holds locked."""
    params = tmp_path / "retire.yaml"
    params.write_text(yaml.safe_dump(params_of(the_lab, keep="here")))
    archive = tmp_path / "killed"
    argv = [sys.executable, "-m", "runbook_lib.cli", "run", "bucardo_retire",
            "-f", str(params), "--archive", str(archive)]  # fmt: skip
    locked = "public.sku_catalog"
    with connect(cfg.kept) as app:
        app.execute("BEGIN")
        app.execute(f"SELECT count(*) FROM {locked}")  # ACCESS SHARE until the rollback
        run = LOCAL.start(argv, stdout_path=tmp_path / "killed.log")
        try:
            wait_until(lambda: _only_locked_table_left(cfg, locked) or run.poll() is not None,
                       what="the removal to reach the locked table", timeout_s=120)  # fmt: skip
            assert run.poll() is None, (tmp_path / "killed.log").read_text()
        finally:
            for pid in [run.pid, *_descendants(run.pid)]:  # the kernel runs in its own session
                os.kill(pid, signal.SIGKILL)
            run.wait(timeout=30)
        app.execute("ROLLBACK")
    return next(archive.iterdir())


def test_retire_under_load_cut_off_twice_finishes_on_rerun(bootstrapped, tmp_path):
    """Cut off right after stopping the daemon (before recording it), then the notebook run
    killed half-way through removing the triggers; the notebook run again finishes the job."""
    the_lab, cfg, workload, _ = bootstrapped
    pgbench = Pgbench(cfg.kept)  # TPC-B at full speed on top: four tables in every transaction
    try:
        _retire_cut_off_twice(the_lab, cfg, tmp_path)
    finally:
        pgbench.stop()
    assert pgbench.errors() == [], "pgbench saw errors"
    assert pgbench.transactions() > 500, "pgbench must have been writing throughout"
    committed = workload.stop()
    assert committed > 100
    assert_retired_cleanly(cfg, [workload])
    again = run_notebook("bucardo_retire", params_of(the_lab, keep="here"), archive=tmp_path)
    for step in CHANGING_STEPS:
        assert summary_of(again, step)["already_done"], step


CHANGING_STEPS = [s.name for s in retire.STEPS if s.changes]


def summary_of(result, step: str) -> dict:
    return json.loads((result.output.parent / "results" / f"{step}.summary.json").read_text())


@contextmanager
def _changed_behind_bucardos_back(ep) -> Iterator[None]:
    """One row of the retired copy changed where Bucardo's triggers do not see it, then put
    back as it was."""
    with connect(ep) as conn:
        conn.execute("SET session_replication_role = replica")
        row = conn.execute("SELECT bin_id, capacity FROM inventory.bins LIMIT 1").fetchone()
        change = "UPDATE inventory.bins SET capacity = %s WHERE bin_id = %s"
        conn.execute(change, [(row["capacity"] or 0) + 1000, row["bin_id"]])
        try:
            yield
        finally:
            conn.execute(change, [row["capacity"], row["bin_id"]])


@contextmanager
def _account_added_behind_bucardos_back(ep) -> Iterator[None]:
    """A row of the retired copy's pgbench_accounts that no key changed since the stop covers
    (pgbench's aids end at 100,000 per scale), removed again afterwards."""
    aid = 100_000 * BIG_SCALE + 1
    with connect(ep) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("INSERT INTO public.pgbench_accounts VALUES (%s, 1, 0, '')", [aid])
        try:
            yield
        finally:
            conn.execute("DELETE FROM public.pgbench_accounts WHERE aid = %s", [aid])


def _retire_cut_off_twice(the_lab: lab_module.Lab, cfg: retire.RetireConfig, tmp_path) -> None:
    for step in ("preflight", "verify"):
        retire.make_runbook(cfg).run(step)
    BucardoCtl(cfg.bootstrap).stop()  # what the stop step does before it records the moment
    assert retire_state.read(cfg) is None
    runbook = retire.make_runbook(cfg)  # a new session
    for step in ("preflight", "verify", "stop"):
        runbook.run(step)
    with connect(cfg.kept) as conn:  # a batch job after the stop: more keys than held in memory
        conn.execute(
            "UPDATE public.pgbench_accounts SET abalance = abalance + 1 WHERE aid <= %s",
            [BATCH_JOB_KEYS],
        )
    with _changed_behind_bucardos_back(cfg.retired), pytest.raises(DataMismatch, match="bins"):
        runbook.run("proof")
    with (
        _account_added_behind_bucardos_back(cfg.retired),
        pytest.raises(DataMismatch, match="pgbench_accounts"),
    ):
        runbook.run("proof")
    result = runbook.run("proof")  # the rows are as they were again: proven
    assert "except" in result.summary and "changed on here since" in result.summary
    changed = int(result.summary.split("except ")[1].split(" keys")[0])
    assert changed >= BATCH_JOB_KEYS, result.summary
    killed = _kill_run_mid_removal(the_lab, cfg, tmp_path)
    assert "proof at the stop: already done" in (killed / "notebook.ipynb").read_text()
    assert leftovers(cfg)["here"]["triggers"], "the kill left work to finish"
    result = run_notebook("bucardo_retire", params_of(the_lab, keep="here"), archive=tmp_path)
    assert result.summary["status"] == "succeeded"
    assert "replication was stopped at" in result.output.read_text()  # the stop: already done
    time.sleep(1)  # writes keep flowing on the kept side after the retire


def assert_retired_cleanly(cfg: retire.RetireConfig, workloads: list[Workload]) -> None:
    """No application error, nothing of Bucardo left, every ledger entry on the kept server
    (the ledgers in the order they were written), inserts there counting by 1."""
    for workload in workloads:
        assert workload.failures() == [], "the application saw errors"
    assert leftovers(cfg) == {
        cfg.kept_name: {"schemas": [], "triggers": [], "functions": []},
        cfg.retired_name: {"schemas": [], "triggers": [], "functions": []},
        "control": {},
    }
    assert BucardoCtl(cfg.bootstrap).mcp_pid() is None
    ledger = workloads[0].ledger.with_suffix(".all.jsonl")
    ledger.write_text("".join(w.ledger.read_text() for w in workloads))
    mismatches = verify_ledger(cfg.kept, ledger)
    assert mismatches.empty, mismatches.head(20).to_string()
    with connect(cfg.kept) as conn:
        high = conn.execute("SELECT max(id) AS m FROM public.foo").fetchone()["m"]
        ids = [
            conn.execute(
                "INSERT INTO public.foo (name, note) VALUES ('after', 'retire') RETURNING id"
            ).fetchone()["id"]
            for _ in range(3)
        ]
    assert ids[0] > high and ids == [ids[0], ids[0] + 1, ids[0] + 2], (high, ids)


# -- the whole upgrade: 15 -> another major, move the application, retire the old server -------


@pytest.mark.versions
def test_upgrade_15_to_another_major_bootstrap_move_and_retire_under_workload(
    lab_factory, tmp_path, pg_version
):
    from runbook_lib import pgbin
    from runbook_lib.connection import server_major

    the_lab = lab_factory(
        f"upgrade-{pg_version}", bindirs={"there": str(pgbin.server_bindir(pg_version))}
    )
    old_app = Workload(the_lab, "old-server", rate=50)
    try:
        run_notebook("bucardo_bootstrap", params_of(the_lab), archive=tmp_path / "runs")
    finally:
        old_app.stop()
    new_app = Workload(the_lab, "new-server", rate=50, server="there")  # the application moves
    try:
        cfg = validate_retire_parameters(**params_of(the_lab, keep="there"))
        assert (server_major(cfg.retired), server_major(cfg.kept)) == (15, pg_version)
        time.sleep(RETIRED_QUIET_S)  # preflight wants the old server quiet this long
        result = run_notebook(
            "bucardo_retire", params_of(the_lab, keep="there"), archive=tmp_path / "runs"
        )
        assert result.summary["status"] == "succeeded"
        time.sleep(1)
    finally:
        new_app.stop()
    assert_retired_cleanly(cfg, [old_app, new_app])
