"""The database's own properties, copied onto the target database: its owner, its settings
(`ALTER DATABASE ... SET`), the per-role settings in it (`ALTER ROLE ... IN DATABASE ... SET`) and
its privileges (`GRANT/REVOKE ... ON DATABASE`). A `pg_dump` without `--create` carries none of
them.

Idempotent: only what differs from the source is changed, in one transaction. A setting the
target has and the source does not is left as it is. The roles named must exist on the target
(preflight's role checks make sure they do, or that copy_roles creates them first)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import psycopg
from psycopg import sql

from runbook_lib.bucardo import gucs
from runbook_lib.bucardo.config import BootstrapConfig
from runbook_lib.connection import connect
from runbook_lib.errors import PreconditionError
from runbook_lib.redaction import redact

PRIVILEGES = ("CREATE", "TEMPORARY", "CONNECT")
PUBLIC = "PUBLIC"
Acl = frozenset[tuple[str, str, bool]]  # (grantee or PUBLIC, privilege, with grant option)


@dataclass(frozen=True)
class DatabaseProperties:
    owner: str
    acl: Acl
    acl_is_default: bool  # datacl NULL: the default for its owner
    settings: dict[tuple[str, str], str]  # (role or '', name) -> 'name=value'


def default_acl(owner: str) -> Acl:
    """acldefault('d', owner): the owner has every privilege, PUBLIC may connect and use temp."""
    return frozenset(
        {(owner, p, False) for p in PRIVILEGES}
        | {(PUBLIC, "TEMPORARY", False), (PUBLIC, "CONNECT", False)}
    )


def database_properties(conn: psycopg.Connection, dbname: str) -> DatabaseProperties | None:
    """The properties of database `dbname` on conn's server, None when it does not exist."""
    db = conn.execute(
        """SELECT pg_catalog.pg_get_userbyid(datdba) AS owner, datacl IS NULL AS acl_is_default
           FROM pg_catalog.pg_database WHERE datname = %s""",
        [dbname],
    ).fetchone()
    if db is None:
        return None
    acl = conn.execute(
        """SELECT coalesce(g.rolname, 'PUBLIC') AS grantee, a.privilege_type, a.is_grantable
           FROM pg_catalog.pg_database d,
                pg_catalog.aclexplode(coalesce(d.datacl, pg_catalog.acldefault('d', d.datdba))) a
           LEFT JOIN pg_catalog.pg_roles g ON g.oid = a.grantee
           WHERE d.datname = %s""",
        [dbname],
    ).fetchall()
    settings = conn.execute(
        """SELECT coalesce(r.rolname, '') AS role, s.setconfig
           FROM pg_catalog.pg_db_role_setting s
           JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase
           LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.setrole
           WHERE d.datname = %s""",
        [dbname],
    ).fetchall()
    return DatabaseProperties(
        owner=db["owner"],
        acl=frozenset((a["grantee"], a["privilege_type"], a["is_grantable"]) for a in acl),
        acl_is_default=db["acl_is_default"],
        settings={
            (s["role"], gucs.split_entry(entry)[0]): entry
            for s in settings
            for entry in s["setconfig"] or []
        },
    )


# -- statements ---------------------------------------------------------------------------------


def _grantee(name: str) -> sql.Composable:
    return sql.SQL(PUBLIC) if name == PUBLIC else sql.Identifier(name)


def owner_sql(db: str, owner: str) -> sql.Composed:
    return sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
        sql.Identifier(db), sql.Identifier(owner)
    )


def setting_sql(db: str, role: str, entry: str) -> sql.Composed:
    if not role:
        return sql.SQL("ALTER DATABASE {} {}").format(sql.Identifier(db), gucs.set_clause(entry))
    return sql.SQL("ALTER ROLE {} IN DATABASE {} {}").format(
        sql.Identifier(role), sql.Identifier(db), gucs.set_clause(entry)
    )


def privilege_sql(db: str, grantee: str, privilege: str, action: str) -> sql.Composed:
    """action: grant, grant with option, revoke, revoke grant option."""
    if privilege not in PRIVILEGES:
        raise ValueError(f"not a database privilege: {privilege!r}")
    templates = {
        "grant": "GRANT {} ON DATABASE {} TO {}",
        "grant with option": "GRANT {} ON DATABASE {} TO {} WITH GRANT OPTION",
        "revoke": "REVOKE {} ON DATABASE {} FROM {}",
        "revoke grant option": "REVOKE GRANT OPTION FOR {} ON DATABASE {} FROM {}",
    }
    return sql.SQL(templates[action]).format(
        sql.SQL(privilege), sql.Identifier(db), _grantee(grantee)
    )


def _target_acl(source: DatabaseProperties, target: DatabaseProperties | None) -> Acl:
    """The target's privileges once its owner is the source's (ALTER OWNER moves the owner's)."""
    if target is None or target.acl_is_default:
        return default_acl(source.owner)
    return frozenset((source.owner if g == target.owner else g, p, o) for g, p, o in target.acl)


def _acl_changes(db: str, source: DatabaseProperties, target: DatabaseProperties | None):
    have = {(g, p): o for g, p, o in _target_acl(source, target)}
    want = {(g, p): o for g, p, o in source.acl}
    for (g, p), o in sorted(want.items()):
        if (g, p) not in have or (o and not have[(g, p)]):
            action = "grant with option" if o else "grant"
        elif have[(g, p)] and not o:
            action = "revoke grant option"
        else:
            yield {"kind": "privilege", "role": g, "name": p, "value": "granted"}, None
            continue
        yield (
            {"kind": "privilege", "role": g, "name": p, "value": action},
            privilege_sql(db, g, p, action),
        )
    for g, p in sorted(set(have) - set(want)):
        yield (
            {"kind": "privilege", "role": g, "name": p, "value": "revoke"},
            privilege_sql(db, g, p, "revoke"),
        )


LEFT_OUT = "left out: the target's PostgreSQL does not know this setting"


def target_knows(conn: psycopg.Connection) -> frozenset[str]:
    """The settings conn's server knows (a custom `ext.name` is always accepted)."""
    rows = conn.execute("SELECT name FROM pg_catalog.pg_settings").fetchall()
    return frozenset(r["name"] for r in rows)


def changes(
    db: str,
    source: DatabaseProperties,
    target: DatabaseProperties | None,
    known: frozenset[str] | None = None,
) -> list[tuple[dict, sql.Composed | None]]:
    """(report row, statement or None when the target already has it or does not know the
    setting: such rows say LEFT_OUT), owner first."""
    out: list[tuple[dict, sql.Composed | None]] = []
    row = {"kind": "owner", "role": source.owner, "name": "", "value": ""}
    out.append(
        (row, None if target and target.owner == source.owner else owner_sql(db, source.owner))
    )
    for (role, name), entry in sorted(source.settings.items()):
        row = {"kind": "setting", "role": role, "name": name,
               "value": redact(gucs.split_entry(entry)[1])}  # fmt: skip
        if known is not None and "." not in name and name not in known:
            out.append((row | {"action": LEFT_OUT}, None))
            continue
        same = target is not None and target.settings.get((role, name)) == entry
        out.append((row, None if same else setting_sql(db, role, entry)))
    out += list(_acl_changes(db, source, target))
    return out


# -- the step's parts ---------------------------------------------------------------------------


def _read(cfg: BootstrapConfig, src, dst) -> tuple[DatabaseProperties, DatabaseProperties | None]:
    source = database_properties(src, cfg.pgdatabase)
    assert source is not None  # we are connected to it
    return source, database_properties(dst, cfg.pgdatabase)


def plan_database_settings(cfg: BootstrapConfig) -> list[str]:
    """What apply_database_settings would run on the target (read-only)."""
    with connect(cfg.source) as src, connect(cfg.target_admin) as dst:
        source, target = _read(cfg, src, dst)
        todo = changes(cfg.pgdatabase, source, target, target_knows(dst))
        lines = [s.as_string(dst) for _, s in todo if s]
        lines += [f"-- {r['name']}: {LEFT_OUT}" for r, _ in todo if r.get("action") == LEFT_OUT]
    return [f"on {cfg.target_admin} (one transaction): {line}" for line in lines] or [
        "nothing: the target database already has the source's owner, settings and privileges"
    ]


def apply_database_settings(cfg: BootstrapConfig) -> pd.DataFrame:
    """Give the target database the source's owner, settings and privileges (what differs)."""
    with connect(cfg.source) as src, connect(cfg.target_admin) as dst:
        source, target = _read(cfg, src, dst)
        todo = changes(cfg.pgdatabase, source, target, target_knows(dst))
        current = ""
        try:
            with dst.transaction():
                for _, stmt in todo:
                    if stmt is not None:
                        current = stmt.as_string(dst)
                        dst.execute(stmt)
        except psycopg.Error as exc:
            raise PreconditionError(
                f"copying the database's settings failed at `{current}`: "
                f"{(exc.diag.message_primary or str(exc)).strip()}; rolled back, none of them "
                "was changed. Create the roles it names on the target (or set copy_roles = true) "
                "and re-run the step"
            ) from exc
    return pd.DataFrame(
        [{"action": "set" if stmt else "already so"} | row for row, stmt in todo],
        columns=["kind", "role", "name", "value", "action"],
    )
