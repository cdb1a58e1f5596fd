"""Roles: the source's roles created on the target when missing, existing ones never touched.

Which roles: every role of the source cluster except the predefined `pg_*` ones, the same set
`pg_dumpall --roles-only` copies (the documented procedure), so that the application's login
roles work on the second master too. A role that already exists on the target is left exactly as
it is (attributes, password, settings, memberships). A created role gets the source's attributes,
password verifier (SCRAM or md5, as pg_dumpall copies it), role-wide settings and comment; a
membership is granted when at least one of its two roles is created now (one between two roles
that both existed is reported, not granted).

Everything is applied in one transaction: an error rolls the whole copy back, so a failed copy
has created nothing and the re-run starts from the same state.

The password verifier is read from pg_authid only while applying, travels as a bound parameter
into a transaction-local setting read by a DO block, with statement logging switched off for that
transaction: it never appears in a command line, a log line, a plan, a result or an error.

Preflight calls `role_checks`: every role that owns or is granted something in the database (and
the database's owner, its grantees and the roles of its per-role settings) must exist on the
target, or be created by copy_roles."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql

from runbook_lib.bucardo import dbsettings, gucs
from runbook_lib.bucardo.config import BootstrapConfig
from runbook_lib.connection import connect, server_version_num
from runbook_lib.errors import PartiallyApplied, PreconditionError

FLAGS = (
    ("rolsuper", "SUPERUSER"),
    ("rolinherit", "INHERIT"),
    ("rolcreaterole", "CREATEROLE"),
    ("rolcreatedb", "CREATEDB"),
    ("rolcanlogin", "LOGIN"),
    ("rolreplication", "REPLICATION"),
    ("rolbypassrls", "BYPASSRLS"),
)
PASSWORD_SHOWN = "<verifier from the source's pg_authid, bound, never shown>"
# no statement of the password transaction may reach the server log (log_statement = all would
# log the bound parameter); set only where the server knows the setting
QUIET_LOGGING = (
    ("log_statement", "none"),
    ("log_min_duration_statement", "-1"),
    ("log_min_duration_sample", "-1"),
    ("log_parameter_max_length", "0"),
    ("log_parameter_max_length_on_error", "0"),
    ("log_min_error_statement", "panic"),
    ("pg_stat_statements.track", "none"),
    ("pgaudit.log", "none"),
)
PASSWORD_DO = """DO $runbook$
BEGIN
  EXECUTE pg_catalog.format('ALTER ROLE %I PASSWORD %L',
                            pg_catalog.current_setting('runbook.role'),
                            pg_catalog.current_setting('runbook.password'));
EXCEPTION WHEN OTHERS THEN
  RAISE EXCEPTION 'setting the password of role % failed: %',
    pg_catalog.current_setting('runbook.role'), SQLERRM USING ERRCODE = SQLSTATE;
END
$runbook$"""

SOURCE_ROLES_SQL = """
SELECT a.rolname, a.rolsuper, a.rolinherit, a.rolcreaterole, a.rolcreatedb, a.rolcanlogin,
       a.rolreplication, a.rolbypassrls, a.rolconnlimit, a.rolvaliduntil::text AS rolvaliduntil,
       a.rolpassword IS NOT NULL AS has_password,
       coalesce((SELECT s.setconfig FROM pg_catalog.pg_db_role_setting s
                  WHERE s.setrole = a.oid AND s.setdatabase = 0), '{}') AS settings,
       pg_catalog.shobj_description(a.oid, 'pg_authid') AS comment
FROM pg_catalog.pg_authid a
WHERE a.rolname !~ '^pg_'
ORDER BY a.rolname
"""
MEMBERSHIPS_SQL = """
SELECT r.rolname AS role, m.rolname AS member, am.admin_option AS admin,
       (pg_catalog.to_jsonb(am) ->> 'inherit_option')::boolean AS inherit,
       (pg_catalog.to_jsonb(am) ->> 'set_option')::boolean AS set
FROM pg_catalog.pg_auth_members am
JOIN pg_catalog.pg_roles r ON r.oid = am.roleid
JOIN pg_catalog.pg_roles m ON m.oid = am.member
WHERE m.rolname !~ '^pg_'
ORDER BY 1, 2
"""
# every role the database's restore and settings need: owners and grantees of its objects (outside
# Bucardo's schema, which is not copied), the database's owner and grantees, the roles of its
# per-role settings, and the bootstrap superuser when it owns something (pinned: no pg_shdepend)
REQUIRED_ROLES_SQL = """
WITH db AS (SELECT oid, datdba, datacl, datname FROM pg_catalog.pg_database
             WHERE datname = pg_catalog.current_database()),
deps AS (
  SELECT d.refobjid AS roleid,
         CASE d.deptype WHEN 'o' THEN 'owner of ' WHEN 'a' THEN 'granted on '
                        ELSE 'named in policy ' END
           || pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid) AS why,
         coalesce(cn.nspname, pn.nspname, tn.nspname, nn.nspname) AS nsp
  FROM pg_catalog.pg_shdepend d
  LEFT JOIN pg_catalog.pg_class c ON d.classid = 'pg_catalog.pg_class'::regclass AND c.oid = d.objid
  LEFT JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace
  LEFT JOIN pg_catalog.pg_proc p ON d.classid = 'pg_catalog.pg_proc'::regclass AND p.oid = d.objid
  LEFT JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
  LEFT JOIN pg_catalog.pg_type t ON d.classid = 'pg_catalog.pg_type'::regclass AND t.oid = d.objid
  LEFT JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace
  LEFT JOIN pg_catalog.pg_namespace nn
         ON d.classid = 'pg_catalog.pg_namespace'::regclass AND nn.oid = d.objid
  WHERE d.dbid = (SELECT oid FROM db) AND d.refclassid = 'pg_catalog.pg_authid'::regclass
    AND d.deptype IN ('o', 'a', 'r')
),
needed AS (
  SELECT roleid, why FROM deps WHERE nsp IS DISTINCT FROM 'bucardo'
  UNION ALL SELECT datdba, 'owner of database ' || datname FROM db
  UNION ALL SELECT a.grantee, 'granted on database ' || db.datname
    FROM db, pg_catalog.aclexplode(db.datacl) a WHERE a.grantee <> 0
  UNION ALL SELECT s.setrole, 'per-role settings in database ' || db.datname
    FROM db JOIN pg_catalog.pg_db_role_setting s ON s.setdatabase = db.oid WHERE s.setrole <> 0
  UNION ALL SELECT 10, 'owner of objects of the database'
    WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n WHERE n.nspowner = 10
                     AND n.nspname !~ '^pg_' AND n.nspname NOT IN ('information_schema', 'bucardo'))
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                   WHERE c.relowner = 10 AND n.nspname !~ '^pg_'
                     AND n.nspname NOT IN ('information_schema', 'bucardo'))
)
SELECT r.rolname AS role, min(needed.why) AS why, count(*) AS uses
FROM needed JOIN pg_catalog.pg_roles r ON r.oid = needed.roleid
WHERE r.rolname !~ '^pg_'
GROUP BY r.rolname ORDER BY r.rolname
"""


@dataclass(frozen=True)
class SourceRole:
    name: str
    attributes: dict[str, Any]
    has_password: bool
    settings: tuple[str, ...]
    comment: str | None


@dataclass(frozen=True)
class Membership:
    role: str  # the role granted
    member: str
    admin: bool
    inherit: bool | None  # PostgreSQL 16+ only
    set: bool | None


@dataclass
class RolePlan:
    """What copying roles would do on the target, from the catalogs of both servers."""

    create: list[SourceRole] = field(default_factory=list)
    present: list[SourceRole] = field(default_factory=list)
    grant: list[Membership] = field(default_factory=list)
    granted_already: list[Membership] = field(default_factory=list)
    left_alone: list[Membership] = field(default_factory=list)  # both roles existed
    target_version: int = 0

    @property
    def created_names(self) -> list[str]:
        return [r.name for r in self.create]


# -- reading ------------------------------------------------------------------------------------


def source_roles(conn: psycopg.Connection) -> list[SourceRole]:
    """Every non-predefined role of the source cluster (reads pg_authid: needs a superuser)."""
    out = []
    for r in conn.execute(SOURCE_ROLES_SQL).fetchall():
        attrs = {k: r[k] for k, _ in FLAGS}
        attrs["rolconnlimit"] = r["rolconnlimit"]
        attrs["rolvaliduntil"] = r["rolvaliduntil"]
        out.append(
            SourceRole(r["rolname"], attrs, r["has_password"], tuple(r["settings"]), r["comment"])
        )
    return out


def memberships(conn: psycopg.Connection) -> list[Membership]:
    return [Membership(**r) for r in conn.execute(MEMBERSHIPS_SQL).fetchall()]


def role_names(conn: psycopg.Connection) -> set[str]:
    return {r["rolname"] for r in conn.execute("SELECT rolname FROM pg_catalog.pg_roles")}


def required_roles(source_conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Roles the database needs on the target: (role, why, uses), `why` one example."""
    return source_conn.execute(REQUIRED_ROLES_SQL).fetchall()


def role_plan(source_conn: psycopg.Connection, target_conn: psycopg.Connection) -> RolePlan:
    existing = role_names(target_conn)
    on_target = {(m.role, m.member) for m in memberships(target_conn)}
    plan = RolePlan(target_version=server_version_num(target_conn))
    for role in source_roles(source_conn):
        (plan.present if role.name in existing else plan.create).append(role)
    created = set(plan.created_names)
    for m in memberships(source_conn):
        if (m.role, m.member) in on_target:
            plan.granted_already.append(m)
        elif m.role in created or m.member in created:
            plan.grant.append(m)
        else:
            plan.left_alone.append(m)
    return plan


# -- statements (the plan shows them, the copy runs them) ----------------------------------------


def create_role_sql(role: SourceRole) -> sql.Composed:
    a = role.attributes
    options = [sql.SQL(word if a[key] else "NO" + word) for key, word in FLAGS]
    options.append(sql.SQL("CONNECTION LIMIT {}").format(sql.Literal(a["rolconnlimit"])))
    if a["rolvaliduntil"] is not None:
        options.append(sql.SQL("VALID UNTIL {}").format(sql.Literal(a["rolvaliduntil"])))
    return sql.SQL("CREATE ROLE {} WITH {}").format(
        sql.Identifier(role.name), sql.SQL(" ").join(options)
    )


def role_setting_sql(role: SourceRole, entry: str) -> sql.Composed:
    return sql.SQL("ALTER ROLE {} {}").format(sql.Identifier(role.name), gucs.set_clause(entry))


def comment_sql(role: SourceRole) -> sql.Composed:
    return sql.SQL("COMMENT ON ROLE {} IS {}").format(
        sql.Identifier(role.name), sql.Literal(role.comment)
    )


def grant_sql(m: Membership, target_version: int) -> sql.Composed:
    grant = sql.SQL("GRANT {} TO {}").format(sql.Identifier(m.role), sql.Identifier(m.member))
    if target_version >= 160000 and m.inherit is not None:
        return sql.SQL("{} WITH ADMIN {}, INHERIT {}, SET {}").format(
            grant, sql.SQL(str(m.admin).upper()), sql.SQL(str(m.inherit).upper()),
            sql.SQL(str(m.set).upper()),
        )  # fmt: skip
    return sql.SQL("{} WITH ADMIN OPTION").format(grant) if m.admin else grant


def role_statements(role: SourceRole) -> list[sql.Composed]:
    """Everything but the password for one created role."""
    out = [create_role_sql(role)]
    out += [role_setting_sql(role, entry) for entry in role.settings]
    if role.comment:
        out.append(comment_sql(role))
    return out


def plan_lines(plan: RolePlan, conn: psycopg.Connection) -> list[str]:
    """The statements copy_roles would run on the target, the password shown as a placeholder."""
    lines = []
    for role in plan.create:
        lines += [s.as_string(conn) for s in role_statements(role)]
        if role.has_password:
            lines.append(f"ALTER ROLE {sql.Identifier(role.name).as_string(conn)} "
                         f"PASSWORD {PASSWORD_SHOWN}")  # fmt: skip
    lines += [grant_sql(m, plan.target_version).as_string(conn) for m in plan.grant]
    if not lines:
        return ["nothing: every role of the source exists on the target (left unchanged)"]
    return [f"on the target (one transaction): {line}" for line in lines]


# -- applying -----------------------------------------------------------------------------------


def _password_hashes(source_conn: psycopg.Connection, names: list[str]) -> dict[str, str]:
    rows = source_conn.execute(
        "SELECT rolname, rolpassword FROM pg_catalog.pg_authid WHERE rolname = ANY(%s)", [names]
    ).fetchall()
    return {r["rolname"]: r["rolpassword"] for r in rows if r["rolpassword"] is not None}


def _quiet_logging(conn: psycopg.Connection) -> None:
    """Transaction-local: nothing of this transaction reaches the server log."""
    conn.execute(
        """SELECT pg_catalog.set_config(v.name, v.value, true)
           FROM unnest(%s::text[], %s::text[]) AS v(name, value)
           WHERE v.name IN (SELECT name FROM pg_catalog.pg_settings)""",
        [[n for n, _ in QUIET_LOGGING], [v for _, v in QUIET_LOGGING]],
    )


def _set_password(conn: psycopg.Connection, role: str, verifier: str) -> None:
    conn.execute(
        "SELECT pg_catalog.set_config('runbook.role', %s, true),"
        " pg_catalog.set_config('runbook.password', %s, true)",
        [role, verifier],
    )
    conn.execute(PASSWORD_DO)  # on error the transaction, and the setting with it, rolls back
    conn.execute("SELECT pg_catalog.set_config('runbook.password', '', true)")


def _apply(plan: RolePlan, verifiers: dict[str, str], conn: psycopg.Connection) -> None:
    """One transaction; on error names the statement that failed (never a password)."""
    current = ""
    try:
        with conn.transaction():
            _quiet_logging(conn)
            for role in plan.create:
                for stmt in role_statements(role):
                    current = stmt.as_string(conn)
                    conn.execute(stmt)
                if role.name in verifiers:
                    current = f"ALTER ROLE {role.name} PASSWORD {PASSWORD_SHOWN}"
                    _set_password(conn, role.name, verifiers[role.name])
            for m in plan.grant:
                stmt = grant_sql(m, plan.target_version)
                current = stmt.as_string(conn)
                conn.execute(stmt)
    except psycopg.Error as exc:
        if conn.broken:  # the connection was lost, perhaps at COMMIT: the outcome is unknown
            raise PartiallyApplied(
                "copying roles to the target",
                [
                    f"perhaps (the connection was lost, maybe at commit) roles created: "
                    f"{', '.join(plan.created_names)}"
                ],
                f"{str(exc).strip()} (at `{current}`)",
            ) from None
        raise PreconditionError(
            f"copying roles to the target failed at `{current}`: "
            f"{(exc.diag.message_primary or str(exc)).strip()}; the whole copy was rolled back, "
            f"no role was created and no existing role was changed (would have created: "
            f"{', '.join(plan.created_names) or 'none'}). Fix the target's roles (or create "
            "them yourself) and re-run the step; nothing was changed"
        ) from None


def copy_roles(cfg: BootstrapConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Create the source's missing roles on the target; returns (roles, memberships) reports."""
    with (
        connect(cfg.source, application_name="runbook_bucardo_roles") as src,
        connect(cfg.target_admin, application_name="runbook_bucardo_roles") as dst,
    ):
        plan = role_plan(src, dst)
        if plan.create or plan.grant:
            verifiers = _password_hashes(src, [r.name for r in plan.create if r.has_password])
            try:
                _apply(plan, verifiers, dst)
            finally:
                verifiers.clear()
    return roles_report(plan, done=True), memberships_report(plan, done=True)


# -- reports ------------------------------------------------------------------------------------


def roles_report(plan: RolePlan, *, done: bool) -> pd.DataFrame:
    created = "created" if done else "will be created"
    rows = [
        {
            "role": r.name,
            "action": created if r in plan.create else "already present: left unchanged",
            "login": r.attributes["rolcanlogin"],
            "superuser": r.attributes["rolsuper"],
            "password": ("copied" if done else "will be copied")
            if r.has_password and r in plan.create
            else ("none" if not r.has_password else "-"),
            "settings": len(r.settings) if r in plan.create else 0,
        }
        for r in sorted(plan.create + plan.present, key=lambda r: r.name)
    ]
    return pd.DataFrame(
        rows, columns=["role", "action", "login", "superuser", "password", "settings"]
    )


def memberships_report(plan: RolePlan, *, done: bool) -> pd.DataFrame:
    def rows(ms: list[Membership], action: str) -> list[dict[str, Any]]:
        return [{"role": m.role, "member": m.member, "admin": m.admin, "action": action}
                for m in ms]  # fmt: skip

    all_rows = (
        rows(plan.grant, "granted" if done else "will be granted")
        + rows(plan.granted_already, "already present")
        + rows(plan.left_alone, "not granted: both roles already existed on the target")
    )
    return pd.DataFrame(all_rows, columns=["role", "member", "admin", "action"])


# -- preflight ----------------------------------------------------------------------------------


def role_checks(
    cfg: BootstrapConfig, source_conn: psycopg.Connection, target_admin_conn: psycopg.Connection
) -> list[dict[str, Any]]:
    """Read-only: every role the database needs exists on the target or will be created by
    copy_roles; raises PreconditionError naming the missing ones (nothing was changed)."""
    needed = required_roles(source_conn)
    existing = role_names(target_admin_conn)
    missing = [r for r in needed if r["role"] not in existing]
    checks = []
    if missing and not cfg.copy_roles:
        shown = "; ".join(f"{r['role']} ({r['why']})" for r in missing[:20])
        more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise PreconditionError(
            f"roles missing on the target {cfg.pghost2}:{cfg.pgport2}: {shown}{more}. The schema "
            "restore sets owners and grants, and would fail on them: set copy_roles = true (the "
            "source's roles missing on the target are created; existing roles are never changed) "
            "or create them on the target yourself; nothing was changed"
        )
    checks.append(
        {
            "check": "roles the database needs",
            "ok": True,
            "detail": f"{len(needed)} roles own or are granted objects; "
            + (
                f"missing on the target, created by copy_roles: "
                f"{', '.join(r['role'] for r in missing)}"
                if missing
                else "all exist on the target"
            ),
        }
    )
    props = dbsettings.database_properties(source_conn, cfg.pgdatabase)
    if props is not None:
        checks.append(
            {
                "check": "database settings",
                "ok": True,
                "detail": f"copied to the target database: owner {props.owner}, "
                f"{len(props.settings)} settings (ALTER DATABASE/ROLE ... SET), "
                f"{len(props.acl)} privileges",
            }
        )
    if cfg.copy_roles:
        plan = role_plan(source_conn, target_admin_conn)
        checks.append(
            {
                "check": "copy_roles",
                "ok": True,
                "detail": f"{len(plan.create)} roles will be created"
                + (f" ({', '.join(plan.created_names)})" if plan.create else "")
                + f", {len(plan.grant)} memberships granted; {len(plan.present)} roles already "
                "on the target are left unchanged (password and attributes included)",
            }
        )
    return checks
