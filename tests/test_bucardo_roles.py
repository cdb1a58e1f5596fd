"""Roles and the database's own settings on the target, on real servers: missing roles created
with their memberships, existing roles never changed, the password verifier never shown, a
failure rolled back and named, settings and privileges copied, preflight refusing missing roles."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from runbook_lib import bucardo as bb
from runbook_lib.bucardo import dbsettings, roles, schema
from runbook_lib.connection import connect
from runbook_lib.errors import PartiallyApplied, PreconditionError
from runbook_lib.lab import lab as lab_module

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def roles_lab(lab_factory) -> lab_module.Lab:
    return lab_factory("bucardo-roles")


def config_of(the_lab: lab_module.Lab, **overrides: Any) -> bb.BootstrapConfig:
    path = the_lab.parameters_dir / "bucardo_bootstrap.yaml"
    return bb.validate_parameters(**(yaml.safe_load(path.read_text()) | overrides))


def run_sql(the_lab: lab_module.Lab, server: str, *statements: str, db: str = "postgres") -> None:
    with connect(the_lab.endpoint(server, db)) as conn:
        for stmt in statements:
            conn.execute(stmt)


def authid(the_lab: lab_module.Lab, server: str, role: str) -> dict[str, Any] | None:
    with connect(the_lab.endpoint(server, "postgres")) as conn:
        return conn.execute(
            """SELECT a.*, (SELECT setconfig FROM pg_db_role_setting s
                             WHERE s.setrole = a.oid AND s.setdatabase = 0) AS settings,
                      shobj_description(a.oid, 'pg_authid') AS comment
               FROM pg_authid a WHERE rolname = %s""",
            [role],
        ).fetchone()


def members(the_lab: lab_module.Lab, server: str, prefix: str) -> set[tuple[str, str, bool]]:
    with connect(the_lab.endpoint(server, "postgres")) as conn:
        rows = conn.execute(
            """SELECT r.rolname AS role, m.rolname AS member, am.admin_option
               FROM pg_auth_members am JOIN pg_roles r ON r.oid = am.roleid
               JOIN pg_roles m ON m.oid = am.member
               WHERE r.rolname LIKE %s OR m.rolname LIKE %s""",
            [prefix + "%", prefix + "%"],
        ).fetchall()
    return {(r["role"], r["member"], r["admin_option"]) for r in rows}


def drop_roles(the_lab: lab_module.Lab, names: list[str]) -> None:
    for server in ("here", "there"):
        run_sql(the_lab, server, *[f"DROP ROLE IF EXISTS {n}" for n in names])


@pytest.fixture
def statement_log(roles_lab) -> Iterator[Any]:
    """log_statement = all on the target while the test runs; yields a reader of what it logged."""
    log = roles_lab.root / "logs" / "there.log"
    offset = log.stat().st_size
    run_sql(roles_lab, "there", "ALTER SYSTEM SET log_statement = 'all'", "SELECT pg_reload_conf()")
    yield lambda: log.read_bytes()[offset:].decode(errors="replace")
    run_sql(roles_lab, "there", "ALTER SYSTEM RESET log_statement", "SELECT pg_reload_conf()")


def test_copy_roles_creates_missing_roles_and_never_changes_an_existing_one(
    roles_lab, statement_log
):
    lab = roles_lab
    run_sql(
        lab, "here",
        "CREATE ROLE r1_owner NOLOGIN",
        "CREATE ROLE r1_app LOGIN PASSWORD 'r1-app-secret' CONNECTION LIMIT 7 "
        "VALID UNTIL '2031-01-01 00:00:00+00'",
        "GRANT r1_owner TO r1_app WITH ADMIN OPTION",
        "GRANT pg_read_all_stats TO r1_app",
        "ALTER ROLE r1_app SET work_mem = '8MB'",
        """ALTER ROLE r1_app SET search_path = app, "My Schema", public""",
        "COMMENT ON ROLE r1_app IS 'the application'",
        "CREATE ROLE r1_existing LOGIN CREATEDB PASSWORD 'source-password'",
        "GRANT r1_owner TO r1_existing",
    )  # fmt: skip
    run_sql(lab, "there", "CREATE ROLE r1_existing LOGIN NOCREATEDB PASSWORD 'target-password'")
    before = authid(lab, "there", "r1_existing")
    try:
        cfg = config_of(lab, copy_roles=True)
        with connect(cfg.source) as src, connect(cfg.target_admin) as dst:
            plan_text = "\n".join(roles.plan_lines(roles.role_plan(src, dst), dst))
        created, memberships = roles.copy_roles(cfg)

        by_role = created.set_index("role")
        assert by_role.loc["r1_app", "action"] == "created"
        assert by_role.loc["r1_owner", "action"] == "created"
        assert by_role.loc["r1_existing", "action"] == "already present: left unchanged"
        assert authid(lab, "there", "r1_existing") == before  # password and attributes
        source, target = authid(lab, "here", "r1_app"), authid(lab, "there", "r1_app")
        for column in ("rolpassword", "rolcanlogin", "rolconnlimit", "rolvaliduntil",
                       "rolsuper", "rolcreatedb", "settings", "comment"):  # fmt: skip
            assert target[column] == source[column], column
        assert members(lab, "there", "r1_") == {
            ("r1_owner", "r1_app", True),
            ("r1_owner", "r1_existing", False),  # the new role granted to an existing one
            ("pg_read_all_stats", "r1_app", False),
        }
        with connect(cfg.target_admin) as conn:
            stats = conn.execute(
                "SELECT pg_has_role('r1_app', 'pg_read_all_stats', 'MEMBER') AS m"
            ).fetchone()
        assert stats["m"]
        # the verifier is nowhere: not in the plan, the reports or the server's statement log
        verifier = source["rolpassword"]
        assert verifier.startswith(("SCRAM-SHA-256$", "md5"))
        shown = plan_text + created.to_string() + memberships.to_string() + statement_log()
        assert "CREATE ROLE" in statement_log(), "log_statement = all logs the other statements"
        assert verifier not in shown and "r1-app-secret" not in shown
        assert "PASSWORD <verifier" in plan_text
        # a second run changes nothing
        again, _ = roles.copy_roles(cfg)
        assert set(again["action"]) == {"already present: left unchanged"}
    finally:
        drop_roles(lab, ["r1_app", "r1_existing", "r1_owner"])


def test_copy_roles_failing_mid_way_rolls_back_and_names_what_it_would_have_created(roles_lab):
    lab = roles_lab
    # on the target r2_a is already a member of r2_c: granting r2_b (new) to r2_c after making
    # r2_b a member of r2_a would be a circular membership, which PostgreSQL refuses
    run_sql(lab, "here", "CREATE ROLE r2_a", "CREATE ROLE r2_c", "CREATE ROLE r2_b LOGIN",
            "GRANT r2_a TO r2_b", "GRANT r2_b TO r2_c")  # fmt: skip
    run_sql(lab, "there", "CREATE ROLE r2_a", "CREATE ROLE r2_c", "GRANT r2_c TO r2_a")
    try:
        cfg = config_of(lab, copy_roles=True)
        with pytest.raises(PreconditionError) as err:
            roles.copy_roles(cfg)
        message = str(err.value)
        assert 'GRANT "r2_b" TO "r2_c"' in message and "rolled back" in message
        assert "no role was created" in message and "r2_b" in message
        assert authid(lab, "there", "r2_b") is None
        assert members(lab, "there", "r2_") == {("r2_c", "r2_a", False)}
    finally:
        drop_roles(lab, ["r2_b", "r2_a", "r2_c"])


def make_source_database(lab: lab_module.Lab, db: str, *statements: str) -> None:
    run_sql(lab, "here", f"CREATE DATABASE {db}")
    run_sql(lab, "here", "CREATE TABLE public.t (id int PRIMARY KEY)", *statements, db=db)


def test_preflight_role_checks_refuse_a_missing_owner_or_grantee_without_copy_roles(roles_lab):
    lab = roles_lab
    run_sql(lab, "here", "CREATE ROLE r3_owner", "CREATE ROLE r3_reader", "CREATE ROLE r3_spare")
    make_source_database(
        lab, "r3db",
        "ALTER TABLE public.t OWNER TO r3_owner",
        "GRANT SELECT ON public.t TO r3_reader",
    )  # fmt: skip
    try:
        cfg = config_of(lab, pgdatabase="r3db", copy_roles=False)
        with connect(cfg.source) as src, connect(cfg.target_admin) as dst:
            with pytest.raises(PreconditionError) as err:
                roles.role_checks(cfg, src, dst)
            message = str(err.value)
            assert "r3_owner (owner of table t)" in message
            assert "r3_reader (granted on table t)" in message
            assert "r3_spare" not in message and "nothing was changed" in message
            checks = roles.role_checks(config_of(lab, pgdatabase="r3db", copy_roles=True), src, dst)
        detail = " ".join(c["detail"] for c in checks)
        assert "created by copy_roles: r3_owner, r3_reader" in detail
        assert all(c["ok"] for c in checks)
        assert authid(lab, "there", "r3_owner") is None  # preflight changed nothing
    finally:
        run_sql(lab, "here", "DROP DATABASE r3db")
        drop_roles(lab, ["r3_owner", "r3_reader", "r3_spare"])


def test_target_schema_step_copies_roles_and_the_databases_settings_idempotently(roles_lab):
    lab = roles_lab
    run_sql(lab, "here", "CREATE ROLE r4_owner", "CREATE ROLE r4_app LOGIN")
    make_source_database(
        lab, "r4db",
        "ALTER TABLE public.t OWNER TO r4_owner",
        "ALTER DATABASE r4db OWNER TO r4_owner",
        "ALTER DATABASE r4db SET work_mem = '16MB'",
        """ALTER DATABASE r4db SET search_path = app, "My Schema", public""",
        "ALTER ROLE r4_app IN DATABASE r4db SET statement_timeout = '5s'",
        "REVOKE CONNECT, TEMPORARY ON DATABASE r4db FROM PUBLIC",
        "GRANT CONNECT ON DATABASE r4db TO r4_app WITH GRANT OPTION",
    )  # fmt: skip
    cfg = config_of(lab, pgdatabase="r4db", copy_roles=True)
    try:
        plan = "\n".join(schema.plan_target_schema(cfg))  # the dry run: same builders
        for expected in ('CREATE ROLE "r4_app" WITH', 'ALTER DATABASE "r4db" OWNER TO "r4_owner"',
                         """ALTER DATABASE "r4db" SET "search_path" = 'app', 'My Schema'""",
                         'REVOKE CONNECT ON DATABASE "r4db" FROM PUBLIC'):  # fmt: skip
            assert expected in plan, plan
        assert authid(lab, "there", "r4_app") is None, "the plan changed nothing"
        result = bb.create_target_schema(cfg)
        assert {"roles", "role memberships", "database settings", "tables"} <= set(result.tables)
        with connect(cfg.source) as src, connect(cfg.target_admin) as dst:
            source = dbsettings.database_properties(src, "r4db")
            target = dbsettings.database_properties(dst, "r4db")
        assert target.owner == source.owner == "r4_owner"
        assert target.acl == source.acl
        assert ("PUBLIC", "CONNECT", False) not in target.acl
        assert ("r4_app", "CONNECT", True) in target.acl
        assert target.settings == source.settings
        with connect(cfg.target) as conn:
            path = conn.execute("SHOW search_path").fetchone()["search_path"]
        assert path == 'app, "My Schema", public'
        assert set(dbsettings.apply_database_settings(cfg)["action"]) == {"already so"}
        assert dbsettings.plan_database_settings(cfg)[0].startswith("nothing")
    finally:
        run_sql(lab, "there", "DROP DATABASE IF EXISTS r4db")
        run_sql(lab, "here", "DROP DATABASE r4db")
        drop_roles(lab, ["r4_app", "r4_owner"])


def test_target_schema_step_failing_after_creating_the_database_names_it_and_reruns(roles_lab):
    lab = roles_lab
    run_sql(lab, "here", "CREATE ROLE r5_ghost")
    make_source_database(lab, "r5db", "ALTER ROLE r5_ghost IN DATABASE r5db SET work_mem = '9MB'")
    cfg = config_of(lab, pgdatabase="r5db", copy_roles=False)
    try:  # preflight would have refused this (r5_ghost missing on the target); run it anyway
        with pytest.raises(PartiallyApplied) as err:
            bb.create_target_schema(cfg)
        message = str(err.value)
        assert "database r5db created on the target" in message
        assert 'role "r5_ghost" does not exist' in message
        assert "nothing was changed" not in message.split("Already changed")[0]
        assert schema.target_marker(cfg).stage == "created"
        run_sql(lab, "there", "CREATE ROLE r5_ghost")
        result = bb.create_target_schema(cfg)  # the re-run converges
        assert schema.target_marker(cfg).stage == "schema"
        settings = result["database settings"]
        assert list(settings.loc[settings["kind"] == "setting", "action"]) == ["set"]
    finally:
        run_sql(lab, "there", "DROP DATABASE IF EXISTS r5db")
        run_sql(lab, "here", "DROP DATABASE r5db")
        drop_roles(lab, ["r5_ghost"])
