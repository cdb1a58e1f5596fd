"""The Bucardo bootstrap on a busy database: pgbench's TPC-B at full speed (hot branch and teller
rows change in every transaction) plus the lab's insert/update/delete writer, from the first step
to the last. Verify must tell changes in flight from differences, name exactly the rows changed
behind Bucardo's back, and the application must never see an error."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
import yaml
from loads import Pgbench, Workload, pgbench_init

from runbook_lib import bucardo as bb
from runbook_lib.compare import compare_databases
from runbook_lib.compare.result import DataMismatch
from runbook_lib.connection import connect
from runbook_lib.execute import run_notebook
from runbook_lib.lab import lab as lab_module
from runbook_lib.lab.workload import verify_ledger

pytestmark = pytest.mark.slow

# rows no load touches: pgbench writes pgbench_*, the writer foo, bar and sku_catalog
LINE = (5, 1)  # public.order_lines (order_id, line_no)


def params_of(the_lab: lab_module.Lab, **overrides) -> dict:
    path = the_lab.parameters_dir / "bucardo_bootstrap.yaml"
    return yaml.safe_load(path.read_text()) | {"verify_timeout_s": 240} | overrides


@pytest.fixture(scope="module")
def busy(lab_factory, tmp_path_factory) -> Iterator[tuple]:
    the_lab = lab_factory("bucardo-busy")
    cfg = bb.validate_parameters(**params_of(the_lab))
    pgbench_init(cfg.source, scale=2)
    pgbench = Pgbench(cfg.source)
    workload = Workload(the_lab, "busy", rate=100)
    try:
        result = run_notebook(
            "bucardo_bootstrap", params_of(the_lab), archive=tmp_path_factory.mktemp("runs")
        )
        yield the_lab, cfg, result, pgbench, workload
    finally:
        pgbench.stop()
        workload.stop()


def _verify_summary(result) -> str:
    summary = json.loads((result.output.parent / "results" / "verify.summary.json").read_text())
    return str(summary)


def test_notebook_proves_both_masters_identical_under_full_pgbench_load(busy):
    _, _, result, pgbench, _ = busy
    text = _verify_summary(result)
    proven = re.search(r"(\d+) in flight and proven equal later", text)
    assert proven, text
    assert int(proven.group(1)) > 0, "under full load some keys must have been in flight"
    held = re.search(r"row locks held at most ([\d.]+) s", text)
    assert held and float(held.group(1)) < 1.0, "an application may wait at most a second"
    assert pgbench.transactions() > 1000, "pgbench must have been writing throughout"


def _replica_session(cfg: bb.BootstrapConfig):
    conn = connect(cfg.target)
    conn.execute("SET session_replication_role = replica")  # Bucardo's triggers stay silent
    return conn


def test_verify_names_exactly_the_rows_changed_behind_bucardos_back(busy):
    _, cfg, _, _, _ = busy
    with connect(cfg.target) as conn:
        bins = conn.execute(
            "SELECT bin_id, capacity FROM inventory.bins ORDER BY bin_id LIMIT 2"
        ).fetchall()
        line = conn.execute(
            "SELECT * FROM public.order_lines WHERE (order_id, line_no) = (%s, %s)", LINE
        ).fetchone()
    assert len(bins) == 2 and line
    with _replica_session(cfg) as conn:
        for b in bins:
            conn.execute(
                "UPDATE inventory.bins SET capacity = coalesce(capacity, 0) + 1000 "
                "WHERE bin_id = %s",
                [b["bin_id"]],
            )
        conn.execute("DELETE FROM public.order_lines WHERE (order_id, line_no) = (%s, %s)", LINE)
    with pytest.raises(DataMismatch) as caught:
        bb.make_runbook(cfg).run("verify")
    named = {(r["table"], r["key"]) for r in caught.value.keys.to_dict("records")}
    expected = {("inventory.bins", str(b["bin_id"])) for b in bins} | {
        ("public.order_lines", f"({LINE[0]}, {LINE[1]})")
    }
    assert named == expected, caught.value
    # put the rows back as they were, behind Bucardo's back again: verify passes under load
    with _replica_session(cfg) as conn:
        for b in bins:
            conn.execute(
                "UPDATE inventory.bins SET capacity = %s WHERE bin_id = %s",
                [b["capacity"], b["bin_id"]],
            )
        cols = list(line)
        conn.execute(
            f"INSERT INTO public.order_lines ({', '.join(cols)}) "
            f"VALUES ({', '.join(['%s'] * len(cols))})",
            list(line.values()),
        )
    bb.make_runbook(cfg).run("verify")


def test_after_the_load_every_table_is_identical_and_no_application_saw_an_error(busy):
    the_lab, cfg, _, pgbench, workload = busy
    pgbench.stop()
    committed = workload.stop()
    assert pgbench.errors() == []
    assert workload.failures() == []
    assert committed > 100
    bb.wait_caught_up(cfg, timeout_s=120, strict=True)
    replicated = [t for t in bb.objects.replicated_tables(cfg) if t != bb.objects.MARKER_TABLE]
    comparison = compare_databases(
        cfg.source, cfg.target, tables=[bb.verify.quoted(t) for t in replicated], progress=False
    )
    assert comparison.identical, comparison.summary.to_string()
    for ep in (cfg.source, cfg.target):
        mismatches = verify_ledger(ep, workload.ledger)
        assert mismatches.empty, f"{ep}:\n{mismatches.head(20).to_string()}"
