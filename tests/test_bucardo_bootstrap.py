"""The Bucardo bootstrap end to end, on real servers with a real Bucardo daemon, while the lab
workload keeps writing to the source: nothing lost, nothing duplicated, re-runs finish the job."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml
from loads import Workload

from runbook_lib import bucardo as bb
from runbook_lib.bucardo.schema import restore_post_data
from runbook_lib.compare import compare_databases
from runbook_lib.connection import connect
from runbook_lib.errors import CommandFailed, WaitTimeout
from runbook_lib.execute import run_notebook
from runbook_lib.host import LOCAL
from runbook_lib.lab import lab as lab_module
from runbook_lib.lab.workload import verify_ledger

pytestmark = pytest.mark.slow


def params_of(the_lab: lab_module.Lab, **overrides) -> dict:
    path = the_lab.parameters_dir / "bucardo_bootstrap.yaml"
    return yaml.safe_load(path.read_text()) | overrides


def config_of(the_lab: lab_module.Lab, **overrides) -> bb.BootstrapConfig:
    return bb.validate_parameters(**params_of(the_lab, **overrides))


def assert_same_everywhere(cfg: bb.BootstrapConfig, ledger: Path) -> None:
    """Quiet source, backlog replicated, both databases identical, every ledger entry on both."""
    bb.wait_caught_up(cfg, timeout_s=120, strict=True)
    comparison = compare_databases(cfg.source, cfg.target, schemas=cfg.schemas, progress=False)
    replicated = comparison.summary[comparison.summary["table"] != "public.audit_log"]
    assert (replicated["verdict"] == "identical").all(), comparison.summary.to_string()
    for ep in (cfg.source, cfg.target):
        mismatches = verify_ledger(ep, ledger)
        assert mismatches.empty, f"{ep}:\n{mismatches.head(20).to_string()}"


def outputs_text(notebook: Path) -> str:
    nb = nbformat.read(notebook, as_version=4)
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            texts.append(str(out.get("data", {}).get("text/html", "")))
            texts.append(str(out.get("data", {}).get("text/plain", out.get("text", ""))))
    return "\n".join(texts)


STEP_NAMES = [step.name for step in bb.runbook.STEPS]  # the notebook's steps, in its order


def run_steps(cfg: bb.BootstrapConfig, names: list[str]) -> list[Any]:
    """Run steps as the notebook does (headless), returning their results."""
    runbook = bb.make_runbook(cfg)
    return [runbook.run(name) for name in names]


# -- one bootstrap under load, several tests on its result -------------------------------------


@pytest.fixture(scope="module")
def bootstrapped(lab_factory, tmp_path_factory) -> Iterator[tuple]:
    the_lab = lab_factory("bucardo-e2e")
    workload = Workload(the_lab, "e2e")
    try:
        result = run_notebook(
            "bucardo_bootstrap", params_of(the_lab), archive=tmp_path_factory.mktemp("runs")
        )
        time.sleep(2)  # writes keep flowing after the bootstrap, now replicated live
    finally:
        committed = workload.stop()
    yield the_lab, result, workload.ledger, committed


def test_notebook_bootstrap_under_workload_loses_no_write(bootstrapped):
    the_lab, result, ledger, committed = bootstrapped
    assert committed > 50, "the workload must have been writing throughout"
    assert_same_everywhere(config_of(the_lab), ledger)


def test_executed_notebook_shows_every_steps_tables(bootstrapped):
    _, result, _, _ = bootstrapped
    text = outputs_text(result.output)
    for expected in (
        "preflight",
        "public.audit_log",
        "no primary key",
        "target schema",
        "bucardo objects",
        "delta queue",
        "data copy",
        "rows_per_s",
        "sequences",
        "enable and drain",
        "delta queue after",
        "verify",
        "identical",
        "both directions",
        "there -&gt; here",
    ):
        assert expected in text, expected


def test_after_bootstrap_inserts_with_defaults_on_both_sides_cannot_collide(bootstrapped):
    the_lab, _, _, _ = bootstrapped
    cfg = config_of(the_lab)
    inserts = {
        "public.foo": "INSERT INTO public.foo (name) VALUES ('seq-test') RETURNING id",
        "public.bar": "INSERT INTO public.bar (foo_id) VALUES (1) RETURNING id",
        'public."CustomerNotes"': """INSERT INTO public."CustomerNotes" ("Customer Name")
                                     VALUES ('seq-test') RETURNING "NoteId" AS id""",
    }
    ids: dict[str, dict[str, list[int]]] = {}
    for side, ep in (("here", cfg.source), ("there", cfg.target)):
        with connect(ep) as conn:
            for table, stmt in inserts.items():
                ids.setdefault(table, {})[side] = [
                    conn.execute(stmt).fetchone()["id"] for _ in range(3)
                ]
    for table, by_side in ids.items():
        assert all(i % 2 == 1 for i in by_side["here"]), (table, by_side)
        assert all(i % 2 == 0 for i in by_side["there"]), (table, by_side)
        assert not set(by_side["here"]) & set(by_side["there"])
    # and both sides' rows replicate to the other without a key conflict
    bb.wait_caught_up(cfg, timeout_s=60, strict=True)
    for ep in (cfg.source, cfg.target):
        with connect(ep) as conn:
            n = conn.execute(
                "SELECT count(*) AS n FROM public.foo WHERE name = 'seq-test'"
            ).fetchone()["n"]
        assert n == 6, ep


def test_rerunning_a_finished_bootstrap_changes_nothing(bootstrapped, tmp_path):
    the_lab, _, ledger, _ = bootstrapped
    cfg = config_of(the_lab)
    results = run_steps(cfg, STEP_NAMES[1:6])
    assert all(r.already_done for r in results), [r.summary for r in results]
    # a post-data restore interrupted half-way resumes: what exists is skipped, the rest built
    assert restore_post_data(cfg) == 0
    with connect(cfg.target) as conn:
        conn.execute("DROP INDEX public.foo_name_idx")
    assert restore_post_data(cfg) == 1
    with connect(cfg.target) as conn:
        assert conn.execute("SELECT to_regclass('public.foo_name_idx') AS i").fetchone()["i"]
    assert_same_everywhere(cfg, ledger)


def test_lab_down_leaves_no_bucardo_process(bootstrapped):
    the_lab, _, _, _ = bootstrapped
    pidfiles = (the_lab.bucardo_dir / "daemon").glob("*.pid")
    pids = [int(p.read_text().split()[0]) for p in pidfiles]
    assert pids, "the daemon writes its pid files into bucardo_rundir/daemon"
    lab_module.down(the_lab.root)
    alive = [pid for pid in pids if bb.ctl.running(LOCAL, pid)]
    assert not alive
    lab_module.up(the_lab.root)  # the lab factory stops and purges it at the end


# -- failures part-way, then a re-run of the notebook -------------------------------------------


def test_rerun_after_failure_in_data_copy_finishes_without_duplicates_or_loss(
    lab_factory, tmp_path
):
    the_lab = lab_factory("bucardo-copyfail")
    # this run also covers sequence_strategy none: the target's sequences still catch up
    cfg = config_of(the_lab, sequence_strategy="none")
    workload = Workload(the_lab, "copyfail")
    try:
        run_steps(cfg, STEP_NAMES[:3])
        # a constraint only the target has makes the copy of one table fail part-way
        with connect(cfg.target) as conn:
            conn.execute(
                "ALTER TABLE inventory.bins ADD CONSTRAINT fail_copy CHECK (capacity < 0) NOT VALID"
            )
        with pytest.raises(CommandFailed, match="violates check constraint"):
            bb.copy_data(cfg, progress=False)
        with connect(cfg.target) as conn:
            partial = conn.execute("SELECT count(*) AS n FROM public.bar").fetchone()["n"]
            conn.execute("ALTER TABLE inventory.bins DROP CONSTRAINT fail_copy")
        assert partial > 0, "other tables were copied before the failure"
        run_notebook(
            "bucardo_bootstrap", params_of(the_lab, sequence_strategy="none"), archive=tmp_path
        )
    finally:
        workload.stop()
    assert_same_everywhere(cfg, workload.ledger)
    bb.apply_sequence_strategy(cfg)  # writes stopped: the target's sequences catch up again
    with connect(cfg.target) as conn:  # no duplicate key: the sequence is past every row
        conn.execute("INSERT INTO public.foo (name) VALUES ('after') RETURNING id").fetchone()
    bb.wait_caught_up(cfg, timeout_s=60, strict=True)


def test_rerun_after_failure_in_drain_finishes_without_duplicates_or_loss(lab_factory, tmp_path):
    the_lab = lab_factory("bucardo-drainfail")
    cfg = config_of(the_lab, drain_timeout_s=4)
    workload = Workload(the_lab, "drainfail")
    try:
        run_steps(cfg, STEP_NAMES[:5])
        # row locks on the target block Bucardo's apply of the workload's changes to public.bar
        # (not its trigger DDL): the drain times out
        with connect(cfg.target) as blocker, blocker.transaction():
            blocker.execute("SELECT id FROM public.bar FOR UPDATE").fetchall()
            with pytest.raises(WaitTimeout, match="backlog"):
                bb.enable_and_drain(cfg)
        run_notebook("bucardo_bootstrap", params_of(the_lab), archive=tmp_path)
    finally:
        workload.stop()
    assert_same_everywhere(cfg, workload.ledger)
