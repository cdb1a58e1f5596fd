"""Bad input to the Bucardo bootstrap: a clear message, and nothing changed anywhere (source,
target server, Bucardo's control cluster, run directory)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml
from psycopg import sql

from runbook_lib import bucardo as bb
from runbook_lib.bucardo.ctl import BucardoCtl
from runbook_lib.connection import connect
from runbook_lib.errors import ConfigurationError, PreconditionError
from runbook_lib.execute import RunFailed, run_notebook
from runbook_lib.lab import lab as lab_module
from runbook_lib.ports import free_ports

STEP_NAMES = [step.name for step in bb.runbook.STEPS]  # the notebook's steps, in its order


def run_steps(cfg: bb.BootstrapConfig, names: list[str]) -> list[Any]:
    """Run steps as the notebook does (headless), returning their results."""
    runbook = bb.make_runbook(cfg)
    return [runbook.run(name) for name in names]


@pytest.fixture(scope="module")
def bad_lab(lab_factory) -> lab_module.Lab:
    return lab_factory("bucardo-bad")


def params_of(the_lab: lab_module.Lab, **overrides: Any) -> dict[str, Any]:
    path = the_lab.parameters_dir / "bucardo_bootstrap.yaml"
    return yaml.safe_load(path.read_text()) | overrides


def run_bootstrap(params: dict[str, Any]) -> None:
    """What the notebook does, in-process: validate, then every step in order."""
    run_steps(bb.validate_parameters(**params), STEP_NAMES)


def observed(the_lab: lab_module.Lab) -> dict[str, Any]:
    """Everything the bootstrap could change."""
    out: dict[str, Any] = {}
    for server in ("here", "there", "control"):
        with connect(the_lab.endpoint(server)) as conn:
            out[f"{server} databases"] = sorted(
                r["datname"] for r in conn.execute("SELECT datname FROM pg_catalog.pg_database")
            )
            out[f"{server} roles"] = sorted(
                r["rolname"] for r in conn.execute("SELECT rolname FROM pg_catalog.pg_roles")
            )
    with connect(the_lab.endpoint("here", "widgets")) as conn:
        out["here schemas"] = sorted(
            r["nspname"] for r in conn.execute("SELECT nspname FROM pg_catalog.pg_namespace")
        )
        out["here triggers"] = conn.execute(
            "SELECT count(*) AS n FROM pg_catalog.pg_trigger WHERE NOT tgisinternal"
        ).fetchone()["n"]
        out["here sequences"] = conn.execute(
            "SELECT array_agg(seqincrement ORDER BY seqrelid) AS s FROM pg_catalog.pg_sequence"
        ).fetchone()["s"]
    out["rundir"] = sorted(p.name for p in Path(the_lab.bucardo_dir).iterdir())
    return out


def assert_refused(the_lab, params, error, match) -> None:
    before = observed(the_lab)
    with pytest.raises(error, match=match) as err:
        run_bootstrap(params)
    assert "nothing was changed" in str(err.value)
    assert observed(the_lab) == before


def test_unknown_table_is_refused(bad_lab):
    params = params_of(bad_lab, tables=["public.foo", "public.nope"])
    assert_refused(bad_lab, params, ConfigurationError, "public.nope")


def test_listed_table_without_a_key_is_refused(bad_lab):
    params = params_of(bad_lab, tables=["public.foo", "public.audit_log"])
    assert_refused(bad_lab, params, PreconditionError, "public.audit_log: no primary key")


def test_unreachable_host_is_refused(bad_lab):
    assert_refused(
        bad_lab,
        params_of(bad_lab, pghost2="there.invalid"),
        PreconditionError,
        "target.*cannot connect",
    )


def test_wrong_port_is_refused(bad_lab):
    (port,) = free_ports(1, start=40000, exclude=set(bad_lab.ports.values()))
    assert_refused(
        bad_lab,
        params_of(bad_lab, pgport=port),
        PreconditionError,
        f"source.*cannot connect.*{port}",
    )


def use_passfile(monkeypatch, tmp_path, the_lab, user_password: str) -> None:
    """PGPASSFILE: a line for `user:password` on the lab's servers, then the lab's own."""
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:*:*:{user_password}\n" + the_lab.passfile.read_text())
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))


def test_refused_password_is_refused(bad_lab, monkeypatch, tmp_path):
    here = bad_lab.cluster("here")
    hba = here.datadir / "pg_hba.conf"
    original = hba.read_text()
    with connect(bad_lab.endpoint("here")) as conn:
        conn.execute("CREATE ROLE pw_admin LOGIN SUPERUSER PASSWORD 'right-one'")
    hba.write_text("host all pw_admin 127.0.0.1/32 scram-sha-256\n" + original)
    try:
        with connect(bad_lab.endpoint("here")) as conn:
            conn.execute("SELECT pg_catalog.pg_reload_conf()")
        use_passfile(monkeypatch, tmp_path, bad_lab, "pw_admin:wrong-one")  # a wrong password
        assert_refused(
            bad_lab,
            params_of(bad_lab, pgsuperuser="pw_admin"),
            PreconditionError,
            "password authentication failed",
        )
    finally:
        hba.write_text(original)
        with connect(bad_lab.endpoint("here")) as conn:
            conn.execute("SELECT pg_catalog.pg_reload_conf()")
            conn.execute("DROP ROLE pw_admin")


def test_a_pgsuperuser_that_is_no_superuser_is_refused(bad_lab, monkeypatch, tmp_path):
    with connect(bad_lab.endpoint("here")) as conn:
        conn.execute("CREATE ROLE app_owner LOGIN CREATEDB PASSWORD 'its-own'")
    try:
        use_passfile(monkeypatch, tmp_path, bad_lab, "app_owner:its-own")
        assert_refused(
            bad_lab,
            params_of(bad_lab, pgsuperuser="app_owner"),
            PreconditionError,
            "source \\(here\\): app_owner is not a superuser.*session_replication_role",
        )
    finally:
        with connect(bad_lab.endpoint("here")) as conn:
            conn.execute("DROP ROLE app_owner")


def test_missing_bucardo_is_refused(bad_lab, monkeypatch):
    monkeypatch.setenv("BUCARDO_PROGRAM", "/nonexistent/bucardo")
    assert_refused(bad_lab, params_of(bad_lab), PreconditionError, "bucardo program was not found")


def test_non_empty_unrelated_target_is_refused_and_the_notebook_stops_at_preflight(
    bad_lab, tmp_path
):
    with connect(bad_lab.endpoint("there")) as conn:
        conn.execute("CREATE DATABASE widgets")
    try:
        with connect(bad_lab.endpoint("there", "widgets")) as conn:
            conn.execute("CREATE TABLE precious (id int PRIMARY KEY)")
        assert_refused(bad_lab, params_of(bad_lab), PreconditionError, "not empty.*precious")
        before = observed(bad_lab)
        with pytest.raises(RunFailed, match="Preflight.*not empty") as err:
            run_notebook("bucardo_bootstrap", params_of(bad_lab), archive=tmp_path)
        assert err.value.step.startswith("1. Preflight")
        assert err.value.ename == "PreconditionError"
        assert observed(bad_lab) == before
    finally:
        with connect(bad_lab.endpoint("there")) as conn:
            conn.execute("DROP DATABASE widgets")


def test_dry_run_shows_every_changing_steps_commands_and_changes_nothing(bad_lab, tmp_path):
    before = observed(bad_lab)
    result = run_notebook("bucardo_bootstrap", params_of(bad_lab, dry_run=True), archive=tmp_path)
    assert observed(bad_lab) == before
    nb = nbformat.read(result.output, as_version=4)
    text = "\n".join(str(o.get("data", {}).get("text/plain", o.get("text", "")))
                     for c in nb.cells for o in c.get("outputs", []))  # fmt: skip
    for expected in ("2. Target schema would run", "CREATE DATABASE", "pg_restore",
                     "3. Bucardo objects would run", "add sync widgets_sync", "autokick=0",
                     "4. Data copy would run", "COPY \"public\".\"foo\"", "replication_role",
                     "5. Sequences would run", "INCREMENT BY 2", "6. Enable and drain would run",
                     "kick widgets_sync", "verify: nothing to observe in a dry run",
                     "8. Both directions would run"):  # fmt: skip
        assert expected in text, expected


def test_sync_name_used_by_another_relgroup_is_refused(bad_lab):
    # another sync called widgets_sync, over other databases and another relgroup
    params = params_of(bad_lab)
    cfg = bb.validate_parameters(**params)
    control = bad_lab.endpoint("control")
    with connect(control) as conn:
        for db in ("spare1", "spare2"):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    for db in ("spare1", "spare2"):
        with connect(control.with_dbname(db)) as conn:
            conn.execute("CREATE TABLE public.thing (id int PRIMARY KEY)")
    other = BucardoCtl(cfg)
    other.install()
    for db in ("spare1", "spare2"):
        other.run(
            [
                "add",
                "db",
                db,
                f"dbname={db}",
                f"host={control.host}",
                f"port={control.port}",
                f"user={control.user}",
                "--force",  # Bucardo cannot log in before it has the password (bound below)
            ]
        )
    with connect(bad_lab.endpoint("control", "bucardo")) as conn, conn.transaction():
        conn.execute("SET LOCAL log_statement = 'none'")
        conn.execute("UPDATE bucardo.db SET dbpass = %s", [bad_lab.password()])
    other.run(["add", "table", "public.thing", "relgroup=other_rels", "db=spare1"])
    other.run(["add", "dbgroup", "other_dbs", "spare1:source", "spare2:target"])
    other.run(["add", "sync", cfg.sync, "relgroup=other_rels", "dbs=other_dbs", "autokick=0"])
    assert_refused(
        bad_lab,
        params,
        ConfigurationError,
        f"sync '{cfg.sync}' already exists for relgroup 'other_rels'",
    )


@pytest.fixture
def odd_tables(bad_lab):
    """A table with a generated column and a partitioned table without a key, on `here`."""
    ep = bad_lab.endpoint("here", "widgets")
    with connect(ep) as conn:
        conn.execute(
            "CREATE TABLE public.priced (id int PRIMARY KEY, net numeric, "
            "gross numeric GENERATED ALWAYS AS (net * 1.2) STORED)"
        )
        conn.execute("CREATE TABLE public.events (at date NOT NULL) PARTITION BY RANGE (at)")
        conn.execute(
            "CREATE TABLE public.events_2026 PARTITION OF public.events "
            "FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')"
        )
    yield
    with connect(ep) as conn:
        conn.execute("DROP TABLE public.priced, public.events")


def test_listed_table_with_generated_columns_is_refused(bad_lab, odd_tables):
    params = params_of(bad_lab, tables=["public.foo", "public.priced"])
    assert_refused(bad_lab, params, PreconditionError, "priced: generated columns")


def test_listed_partitioned_table_without_a_key_names_its_partitions(bad_lab, odd_tables):
    params = params_of(bad_lab, tables=["public.events"])
    assert_refused(bad_lab, params, PreconditionError, "events_2026: no primary key")


def test_tables_bucardo_cannot_replicate_are_left_out_of_schemas_with_a_reason(bad_lab, odd_tables):
    cfg = bb.validate_parameters(**params_of(bad_lab))
    with connect(cfg.source) as conn:
        selection = bb.selection.select_tables(cfg, conn)
    assert "generated columns" in selection.excluded["public.priced"]
    assert "no primary key" in selection.excluded["public.events_2026"]
    assert "public.priced" not in selection.replicated
    assert "public.foo" in selection.replicated


def test_sync_name_longer_than_bucardos_trigger_names_allow_is_refused(bad_lab):
    with pytest.raises(ConfigurationError, match="at most 42 characters"):
        bb.validate_parameters(**params_of(bad_lab, sync="s" * 43))
