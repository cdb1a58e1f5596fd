"""Parameters of the Bucardo bootstrap: bad input is refused before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runbook_lib import params as notebook_params
from runbook_lib.bucardo import validate_parameters
from runbook_lib.bucardo.schema import parse_toc_line
from runbook_lib.errors import ConfigurationError
from runbook_lib.lab.sample_data import SAMPLE_DBNAME
from runbook_lib.standby import config as standby_config

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.fixture(autouse=True)
def no_pgdatabase(monkeypatch: pytest.MonkeyPatch) -> None:
    """libpq's PGDATABASE of whoever runs the tests must not leak into them."""
    monkeypatch.delenv("PGDATABASE", raising=False)


def good() -> dict[str, Any]:
    return {
        "pgdatabase": "widgets", "pghost": "127.0.0.1", "pgport": 5432,
        "pghost2": "there.example.com", "pgport2": 5433, "pgsuperuser": "postgres",
        "bucardouser": "bucardo", "here": "here", "there": "there", "tables": [],
        "schemas": ["public", "inventory"], "relgroup": "rels", "dbgroup": "dbs",
        "sync": "widgets_sync", "bucardo_host": "localhost", "bucardo_port": 5434,
        "bucardo_dbname": "bucardo", "bucardo_rundir": "/var/run/bucardo",
        "bucardo_os_user": "bucardo",
        "copy_roles": False, "conflict_strategy": "", "sequence_strategy": "interleave",
        "copy_jobs": 2, "drain_timeout_s": 300, "verify_timeout_s": 300,
    }  # fmt: skip


def test_valid_parameters_give_a_config_with_here_first_priority():
    cfg = validate_parameters(**good())
    assert cfg.effective_conflict_strategy == "here there"
    assert cfg.delta_target == "dbgroup dbs"
    assert str(cfg.source) == "postgres@127.0.0.1:5432/widgets"
    assert str(cfg.control) == "bucardo@localhost:5434/bucardo"


@pytest.mark.parametrize("name", ["sync", "relgroup", "dbgroup", "here", "there", "pgdatabase"])
@pytest.mark.parametrize("value", ['my"sync', "my sync", "MySync", "sync;drop", "", "1sync"])
def test_bucardo_names_with_quotes_spaces_upper_case_or_semicolon_are_refused(name, value):
    params = good() | {name: value}
    with pytest.raises(ConfigurationError, match=name):
        validate_parameters(**params)


@pytest.mark.parametrize(
    "table", ['public."foo"', "public.foo;drop", "public.my table", "foo", "a.b.c"]
)
def test_table_names_must_be_plain_schema_dot_table(table):
    with pytest.raises(ConfigurationError, match="tables"):
        validate_parameters(**(good() | {"tables": [table]}))


def test_mixed_case_table_names_are_accepted_as_exact_names():
    cfg = validate_parameters(**(good() | {"tables": ["public.CustomerNotes", "public.foo"]}))
    assert cfg.tables == ("public.CustomerNotes", "public.foo")


def test_every_problem_is_reported_at_once():
    params = good() | {"sync": "Bad Name", "pgport": "5432", "copy_jobs": 0}
    with pytest.raises(ConfigurationError) as err:
        validate_parameters(**params)
    assert "sync=" in str(err.value) and "pgport=" in str(err.value)
    assert "copy_jobs=" in str(err.value) and "nothing was changed" in str(err.value)


def test_unknown_and_missing_parameters_are_named():
    params = good() | {"pgpassword": "x"}
    del params["sync"]
    with pytest.raises(ConfigurationError, match="missing: sync; unknown: pgpassword"):
        validate_parameters(**params)


@pytest.mark.parametrize("strategy", ["bucardo_source", "bucardo_skip", "bucardo_random"])
def test_documented_but_unimplemented_conflict_strategies_are_refused(strategy):
    with pytest.raises(ConfigurationError, match="not implemented"):
        validate_parameters(**(good() | {"conflict_strategy": strategy}))


@pytest.mark.parametrize("strategy", ["there here", "bucardo_latest", "bucardo_abort"])
def test_priority_lists_and_implemented_strategies_are_accepted(strategy):
    assert validate_parameters(**(good() | {"conflict_strategy": strategy})).conflict_strategy


def test_priority_list_must_name_both_databases():
    with pytest.raises(ConfigurationError, match="conflict_strategy"):
        validate_parameters(**(good() | {"conflict_strategy": "here elsewhere"}))


def test_here_and_there_must_differ_and_sequence_strategy_is_known():
    with pytest.raises(ConfigurationError, match="must differ"):
        validate_parameters(**(good() | {"there": "here"}))
    with pytest.raises(ConfigurationError, match="sequence_strategy"):
        validate_parameters(**(good() | {"sequence_strategy": "ranges"}))


def test_rundir_must_be_absolute():
    with pytest.raises(ConfigurationError, match="bucardo_rundir"):
        validate_parameters(**(good() | {"bucardo_rundir": "run/bucardo"}))


def test_bucardo_ssh_is_empty_or_an_ssh_target():
    assert validate_parameters(**good()).bucardo_ssh == ""
    remote = {"bucardo_ssh": "bucardo@db3.example.com", "pghost": "db1", "bucardo_host": "db3"}
    assert validate_parameters(**(good() | remote)).bucardo_ssh
    for bad in ("-oProxyCommand=x", "db3 ls", "a@b@c", "user@"):
        with pytest.raises(ConfigurationError, match="bucardo_ssh"):
            validate_parameters(**(good() | {"bucardo_ssh": bad}))


def test_with_bucardo_elsewhere_the_schema_dump_is_kept_here_per_pair_of_databases():
    remote = good() | {"bucardo_ssh": "root@db3", "pghost": "db1", "bucardo_host": "db3"}
    one = validate_parameters(**remote).dump_dir
    other = validate_parameters(**(remote | {"pghost2": "db9"})).dump_dir
    assert one.parent == Path.home() / ".local" / "state" / "pg-runbooks"
    assert one.name.startswith("bucardo-widgets_sync-") and one != other
    assert validate_parameters(**good()).dump_dir == Path("/var/run/bucardo")


def test_with_bucardo_elsewhere_loopback_addresses_are_refused():
    remote = good() | {"bucardo_ssh": "root@db3", "pghost": "db1", "bucardo_host": "db3"}
    for name in ("pghost", "pghost2", "bucardo_host"):
        for loopback in ("localhost", "127.0.0.1", "::1", "/var/run/postgresql"):
            with pytest.raises(ConfigurationError, match=f"{name}=.*would reach its own machine"):
                validate_parameters(**(remote | {name: loopback}))


def test_restore_list_lines_are_parsed_with_multiword_kinds():
    assert parse_toc_line("3323; 2620 16521 TRIGGER inventory bins bucardo_delta postgres") == (
        "TRIGGER",
        "inventory",
        "bins bucardo_delta",
    )
    assert parse_toc_line("3316; 2606 16413 FK CONSTRAINT public bar bar_foo_id_fkey postgres") == (
        "FK CONSTRAINT",
        "public",
        "bar bar_foo_id_fkey",
    )
    assert parse_toc_line(";  Archive created at 2026") is None


@pytest.mark.parametrize("given", [{"pgdatabase": ""}, {}])
def test_pgdatabase_left_empty_or_out_comes_from_libpq_environment(monkeypatch, given):
    monkeypatch.setenv("PGDATABASE", "orders")
    params = {k: v for k, v in good().items() if k != "pgdatabase"} | given
    assert validate_parameters(**params).pgdatabase == "orders"


def test_pgdatabase_neither_given_nor_in_environment_is_refused_before_anything_runs():
    with pytest.raises(ConfigurationError, match="pgdatabase is not set and PGDATABASE"):
        validate_parameters(**(good() | {"pgdatabase": ""}))


def test_standby_pgdatabase_comes_from_environment_or_must_be_given(monkeypatch):
    standby = {
        "primary_host": "127.0.0.1", "primary_port": 5432, "pgsuperuser": "postgres",
        "pgdatabase": "", "archive_dir": "/srv/archive", "standby_datadir": "/srv/standby/data",
        "standby_port": 5433, "mode": "standby", "trigger_file": "/srv/failover.trigger",
        "archive_timeout_s": 60, "restart_primary_command": [], "hot_standby": True,
        "failover_drill": False,
    }  # fmt: skip
    with pytest.raises(ConfigurationError, match="pgdatabase is not set and PGDATABASE"):
        standby_config.validate(**standby)
    monkeypatch.setenv("PGDATABASE", "orders")
    assert standby_config.validate(**standby).pgdatabase == "orders"


@pytest.mark.parametrize("notebook", ["bucardo_bootstrap", "bucardo_retire", "warm_standby"])
def test_notebook_defaults_name_none_of_the_labs_data(notebook):
    declared = notebook_params.declared_parameters(NOTEBOOKS / f"{notebook}.ipynb")
    assert declared["pgdatabase"].default in ('""', "''")
    labs = [p.name for p in declared.values() if SAMPLE_DBNAME in p.default]
    assert not labs, labs


def test_bucardo_never_runs_as_root():
    with pytest.raises(ConfigurationError, match="bucardo_os_user='root': Bucardo never runs"):
        validate_parameters(**(good() | {"bucardo_os_user": "root"}))
