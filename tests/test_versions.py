"""Both runbooks on other PostgreSQL majors than Debian's 15 (--pg-versions: 18 in `make test`,
14, 16 and 17 in `make test-versions`), and the bootstrap across versions (15 -> N), the first
half of a major-version upgrade: whole notebooks under the lab workload, nothing lost."""

from __future__ import annotations

import time

import pytest
from loads import Workload
from test_bucardo_bootstrap import assert_same_everywhere, config_of, params_of
from test_standby_integration import ledger_before, marker_on, notebook_under_workload

from runbook_lib import pgbin, pgversions, standby
from runbook_lib.bucardo import attoptions, catalog
from runbook_lib.bucardo.preflight import preflight
from runbook_lib.cluster import server_os_user
from runbook_lib.connection import connect, server_major
from runbook_lib.errors import ConfigurationError, PreconditionError
from runbook_lib.execute import run_notebook
from runbook_lib.host import LOCAL
from runbook_lib.lab import versions
from runbook_lib.lab.parameters import warm_standby_parameters
from runbook_lib.lab.workload import verify_ledger

DEBIAN = 15


def bindirs(**majors: int) -> dict[str, str]:
    """Server name -> binaries of its major (installed now when missing, as make test does)."""
    return {name: str(pgversions.install(major)) for name, major in majors.items()}


def summary_of(result, step: str) -> str:
    import json

    path = result.output.parent / "results" / f"{step}.summary.json"
    return json.loads(path.read_text())["summary"]


# -- the bootstrap -----------------------------------------------------------------------------


def extension_only_on_the_source(cfg) -> str | None:
    """An extension the source's installation has and the target's lacks (17 dropped adminpack
    and old_snapshot), one that needs no other extension, or None."""
    standalone = (
        "SELECT e.name FROM pg_catalog.pg_available_extensions e"
        " JOIN pg_catalog.pg_available_extension_versions v"
        " ON v.name = e.name AND v.version = e.default_version WHERE v.requires IS NULL"
    )
    with connect(cfg.source) as src, connect(cfg.target_admin) as dst:
        here = {r["name"] for r in src.execute(standalone)}
        there = {r["name"] for r in dst.execute("SELECT name FROM pg_available_extensions")}
    only_here = here - there
    preferred = [n for n in ("adminpack", "old_snapshot") if n in only_here]
    return (preferred or sorted(only_here) or [None])[0]


def assert_preflight_refuses_an_extension_the_target_lacks(cfg) -> None:
    name = extension_only_on_the_source(cfg)
    if name is None:
        return
    with connect(cfg.source) as src:
        src.execute(f"CREATE EXTENSION {name}")
    try:
        with pytest.raises(PreconditionError, match=f"does not have: {name} .*nothing was changed"):
            preflight(cfg)
    finally:
        with connect(cfg.source) as src:
            src.execute(f"DROP EXTENSION {name}")
    with connect(cfg.target_admin) as admin:
        assert not catalog.database_exists(admin, cfg.pgdatabase)


@pytest.mark.slow
@pytest.mark.versions
def test_bootstrap_from_15_to_a_newer_major_under_workload_loses_nothing(
    lab_factory, tmp_path, pg_version
):
    the_lab = lab_factory(f"up-{pg_version}", bindirs=bindirs(there=pg_version))
    cfg = config_of(the_lab)
    assert (server_major(cfg.source), server_major(cfg.target_admin)) == (DEBIAN, pg_version)
    with connect(cfg.source) as src:  # renamed in 16 (debug_parallel_query)
        src.execute(f"ALTER DATABASE {cfg.pgdatabase} SET force_parallel_mode = off")
    assert_preflight_refuses_an_extension_the_target_lacks(cfg)
    workload = Workload(the_lab, f"up{pg_version}")
    try:
        result = run_notebook("bucardo_bootstrap", params_of(the_lab), archive=tmp_path / "runs")
        time.sleep(2)  # writes keep flowing, now replicated live to the new server
    finally:
        committed = workload.stop()
    assert committed > 50, "the workload must have been writing throughout"
    assert_same_everywhere(cfg, workload.ledger)
    assert "portable hash" in summary_of(result, "verify")
    programs = result.summary["versions"]["programs"]
    assert programs["pg_dump"]["path"] == pgbin.client("pg_dump", [DEBIAN, pg_version])
    client = max(DEBIAN, pg_version)  # at least as new as both servers
    assert f"(PostgreSQL) {client}." in result.summary["versions"]["postgresql_client"]
    assert programs["bucardo"]["version"] == result.summary["versions"]["bucardo"]
    servers = result.summary["versions"]["servers"]
    programs = {entry["program"] for entry in servers.values()}
    assert str(pgbin.server_bindir(pg_version) / "postgres") in programs, servers
    with connect(cfg.source) as src, connect(cfg.target_admin) as dst:
        unknown = attoptions.unknown_on_target(attoptions.source_options(src), dst)
    schema_summary = summary_of(result, "target_schema")
    for option in set(unknown["option"]):  # Debian's pg_attver, which 18 rejects
        assert option in schema_summary
    with connect(cfg.target) as dst:
        settings = dst.execute(
            "SELECT unnest(setconfig) AS s FROM pg_catalog.pg_db_role_setting"
            " WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchall()
    copied = [r["s"] for r in settings]
    if pg_version >= 16:
        assert "force_parallel_mode" in schema_summary and copied == [], copied
    else:
        assert copied == ["force_parallel_mode=off"]


@pytest.mark.slow
@pytest.mark.versions
def test_bootstrap_on_one_major_under_workload_loses_nothing(lab_factory, tmp_path, pg_version):
    the_lab = lab_factory(f"bb-{pg_version}", bindirs=bindirs(here=pg_version, there=pg_version))
    workload = Workload(the_lab, f"bb{pg_version}")
    try:
        result = run_notebook("bucardo_bootstrap", params_of(the_lab), archive=tmp_path / "runs")
    finally:
        committed = workload.stop()
    assert committed > 50
    assert_same_everywhere(config_of(the_lab), workload.ledger)
    assert "portable hash" not in summary_of(result, "verify")


# -- the warm standby --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.versions
@pytest.mark.parametrize("mode", ["standby", "pg_standby"])
def test_standby_fails_over_without_losing_commits(lab_factory, tmp_path, pg_version, mode):
    lab = lab_factory(f"ws-{pg_version}-{mode}", bindirs=bindirs(primary=pg_version))
    values = {**warm_standby_parameters(lab), "mode": mode, "observe_s": 3}
    cfg = standby.validate(**values)
    result, ledger = notebook_under_workload(lab, cfg, values, tmp_path)
    assert [s["status"] for s in result.summary["steps"]] == ["done"] * len(standby.STEPS)
    assert server_major(cfg.standby()) == pg_version
    basebackup = result.summary["versions"]["programs"]["pg_basebackup"]
    assert f"(PostgreSQL) {pg_version}." in basebackup["version"], basebackup
    assert result.summary["versions"]["postgresql_client"] == basebackup["version"]
    marker = marker_on(cfg)
    assert marker is not None
    checked = ledger_before(ledger, marker["written_at"], tmp_path / "before.jsonl")
    assert checked > 50, f"the workload committed only {checked} checkable changes"
    mismatches = verify_ledger(cfg.standby(), tmp_path / "before.jsonl")
    assert mismatches.empty, mismatches.head(20).to_string()


# -- versions refused, programs chosen ---------------------------------------------------------


@pytest.mark.parametrize("version_num", [130012, 190001, 90624])
def test_a_major_outside_14_to_18_is_refused_with_the_supported_range(version_num):
    with pytest.raises(PreconditionError, match="support major versions 14 to 18"):
        pgversions.require_supported(version_num, "source here")


def test_client_programs_are_at_least_as_new_as_every_server():
    newest = max(pgversions.SUPPORTED_MAJORS)
    pgversions.install(newest)
    for majors in ([DEBIAN], [DEBIAN, newest], [newest]):
        path = pgbin.client("pg_dump", majors)
        assert pgbin.program_major(path) >= max(majors), (majors, path)
    assert pgbin.program_major(pgbin.client("pg_dump", [DEBIAN])) == DEBIAN  # the oldest fitting
    with pytest.raises(ConfigurationError, match="no pg_dump of PostgreSQL 99 or later"):
        pgbin.client("pg_dump", [99])


def test_lab_refuses_a_control_server_on_another_version_and_unknown_majors():
    with pytest.raises(ConfigurationError, match="control always runs"):
        versions.requested_bindirs("control=18", None)
    with pytest.raises(ConfigurationError, match="choose a major version"):
        versions.requested_bindirs("13", None)


def test_standby_preflight_refuses_a_data_directory_of_another_major(shared_lab, postgres_dir):
    datadir = postgres_dir / "standby" / "data"  # the shared lab's primary runs Debian's 15
    values = warm_standby_parameters(shared_lab) | {"standby_datadir": str(datadir)}
    cfg = standby.validate(**values)
    other = max(pgversions.SUPPORTED_MAJORS)
    standby_of_other = cfg.standby_cluster()
    standby_of_other.bindir = pgbin.server_bindir(other)
    LOCAL.make_dir(datadir.parent, owner=server_os_user(), mode=0o700)
    standby_of_other.init()  # a real data directory of another major where the standby goes
    with pytest.raises(PreconditionError, match=f"holds a PostgreSQL {other} data directory"):
        standby.preflight(cfg)


def test_column_options_the_target_rejects_are_left_out_of_set_lines():
    script = (
        "CREATE TABLE public.t (a integer);\n"
        "ALTER TABLE ONLY public.t ALTER COLUMN a SET (pg_attver=26503552);\n"
        "ALTER TABLE ONLY public.t ALTER COLUMN b SET (n_distinct=-1, pg_attver=26503552);\n"
    )
    kept, removed = attoptions.without_options(script, {"pg_attver"})
    assert removed == 2
    assert kept == (
        "CREATE TABLE public.t (a integer);\n"
        "ALTER TABLE ONLY public.t ALTER COLUMN b SET (n_distinct=-1);\n"
    )
