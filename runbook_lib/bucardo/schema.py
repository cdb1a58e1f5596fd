"""Step 2: the target database and its structure, copied from the source before any data.

The schema is dumped once (custom format, Bucardo's schema excluded) into the run directory and
restored in two halves: pre-data now (tables, types, functions, sequences), post-data (keys,
indexes, constraints, triggers) after the data copy. Bucardo's triggers on the source are filtered
out of the restore list, so they are never duplicated on the target.

With copy_roles, the source's roles missing on the target are created first (bucardo.roles:
existing roles are never changed), and the new database gets the source database's own owner,
settings and privileges before its objects (bucardo.dbsettings), as pg_dump --create does. A
failure after something was changed raises PartiallyApplied naming it; the re-run converges."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import psycopg
from psycopg import sql

from runbook_lib.bucardo import attoptions, catalog, clients, dbsettings, roles
from runbook_lib.bucardo.config import BootstrapConfig
from runbook_lib.bucardo.result import StepResult
from runbook_lib.connection import Endpoint, connect
from runbook_lib.errors import PartiallyApplied, PreconditionError, RunbookError
from runbook_lib.host import LOCAL, display_command

SCHEMA_DUMP = "schema.dump"
MARKER_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {catalog.MARKER_SCHEMA};
CREATE TABLE IF NOT EXISTS {catalog.MARKER_SCHEMA}.{catalog.MARKER_TABLE} (
    id text PRIMARY KEY,
    written_on text NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE {catalog.MARKER_SCHEMA}.{catalog.MARKER_TABLE} IS
    'written by the bucardo_bootstrap runbook to prove replication works both ways';
"""
# desc values pg_restore -l prints that hold more than one word
_MULTIWORD_DESC = (
    "FK CONSTRAINT",
    "INDEX ATTACH",
    "DEFAULT ACL",
    "EVENT TRIGGER",
    "MATERIALIZED VIEW DATA",
    "TABLE DATA",
    "SEQUENCE SET",
    "SEQUENCE OWNED BY",
    "ROW SECURITY",
    "PUBLICATION TABLE",
    "PUBLICATION TABLES IN SCHEMA",
)


def dump_path(cfg: BootstrapConfig) -> Path:
    return cfg.dump_dir / SCHEMA_DUMP


def libpq_env(ep: Endpoint, replica: bool = False) -> dict[str, str]:
    env = ep.libpq_env()
    if replica:
        env["PGOPTIONS"] = "-c session_replication_role=replica"
    return env


def dump_argv(cfg: BootstrapConfig, path: Path) -> list[str]:
    return [
        clients.client(cfg, "pg_dump"),
        "--schema-only",
        "-Fc",
        "-N",
        "bucardo",
        "-f",
        str(path),
    ]


def restore_argv(cfg: BootstrapConfig, section: str, listing: Path) -> list[str]:
    """pre-data in one transaction (all or nothing); post-data in parallel (copy_jobs)."""
    mode = ["--single-transaction"] if section == "pre-data" else ["-j", str(cfg.copy_jobs)]
    return [clients.client(cfg, "pg_restore"), "--exit-on-error", *mode, "-L", str(listing),
            "-d", cfg.pgdatabase, str(dump_path(cfg))]  # fmt: skip


def create_database_sql(cfg: BootstrapConfig, info: dict) -> sql.Composed:
    return sql.SQL(
        "CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}"
    ).format(
        sql.Identifier(cfg.pgdatabase),
        sql.Literal(info["encoding"]),
        sql.Literal(info["datcollate"]),
        sql.Literal(info["datctype"]),
    )


def source_database_info(cfg: BootstrapConfig) -> dict:
    with connect(cfg.source) as src:
        return src.execute(
            """SELECT pg_catalog.pg_encoding_to_char(encoding) AS encoding, datcollate, datctype
               FROM pg_catalog.pg_database WHERE datname = current_database()"""
        ).fetchone()


def dump_schema(cfg: BootstrapConfig) -> Path:
    """pg_dump --schema-only -Fc of the source (without schema bucardo) into the run directory
    (ours, 0711), readable by us only."""
    LOCAL.make_dir(cfg.dump_dir, mode=0o711)
    path = dump_path(cfg)
    tmp = path.with_name(path.name + ".partial")
    LOCAL.remove_file(tmp)
    LOCAL.run(dump_argv(cfg, tmp), env=libpq_env(cfg.source))
    tmp.chmod(0o600)  # pg_dump created it (in our directory) with the umask's mode
    tmp.replace(path)
    return path


def restore_list_path(cfg: BootstrapConfig, section: str) -> Path:
    return cfg.dump_dir / f"restore-{section}.list"


def parse_toc_line(line: str) -> tuple[str, str, str] | None:
    """(desc, namespace, tag) of one `pg_restore -l` line, None for comments."""
    if not line.strip() or line.lstrip().startswith(";"):
        return None
    _, rest = line.split(";", 1)
    words = rest.split()
    body = words[2:-1]  # drop tableoid, oid and the trailing owner
    joined = " ".join(body)
    desc = next((d for d in _MULTIWORD_DESC if joined.startswith(d + " ")), body[0])
    n = len(desc.split())
    namespace = body[n] if len(body) > n else "-"
    tag = " ".join(body[n + 1 :])
    return desc, namespace, tag


def restore_list(
    cfg: BootstrapConfig, section: str, skip: set[tuple[str, str, str]] | None = None
) -> tuple[Path, int]:
    """A pg_restore list of `section` without Bucardo's triggers (and without `skip` entries)."""
    out = LOCAL.run(
        [clients.client(cfg, "pg_restore"), "-l", f"--section={section}", str(dump_path(cfg))]
    ).stdout
    kept: list[str] = []
    for line in out.splitlines():
        entry = parse_toc_line(line)
        if entry is None:
            continue
        desc, namespace, tag = entry
        if namespace == "bucardo":
            continue
        if desc == "TRIGGER" and tag.split()[-1].startswith("bucardo_"):
            continue
        if skip and entry in skip:
            continue
        kept.append(line)
    path = restore_list_path(cfg, section)
    LOCAL.write_text(path, "\n".join(kept) + "\n")
    return path, len(kept)


def unknown_column_options(cfg: BootstrapConfig) -> pd.DataFrame:
    """Column options set on the source that the target's server rejects (bucardo.attoptions)."""
    with connect(cfg.source) as src, connect(cfg.target_admin) as dst:
        return attoptions.unknown_on_target(attoptions.source_options(src), dst)


def _restore_pre_data_without(cfg: BootstrapConfig, listing: Path, unknown: set[str]) -> None:
    """pre-data as an SQL script (pg_restore -f -) without the `unknown` column options, run by
    psql in one transaction like pg_restore --single-transaction."""
    script = LOCAL.run(
        [clients.client(cfg, "pg_restore"), "-L", str(listing), "-f", "-", str(dump_path(cfg))]
    ).stdout
    kept, _ = attoptions.without_options(script, unknown)
    path = cfg.bucardo_rundir / "restore-pre-data.sql"
    LOCAL.write_text(path, kept, mode=0o600)
    psql = [clients.client(cfg, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    argv = [*psql, "--single-transaction", "-d", cfg.pgdatabase, "-f", str(path)]
    LOCAL.run(argv, env=libpq_env(cfg.target))


def _create_database(cfg: BootstrapConfig) -> bool:
    info = source_database_info(cfg)
    with connect(cfg.target_admin) as admin:
        if catalog.database_exists(admin, cfg.pgdatabase):
            return False
        admin.execute(create_database_sql(cfg, info))
        catalog.write_marker(admin, cfg, "created")
    return True


def target_marker(cfg: BootstrapConfig) -> catalog.Marker | None:
    with connect(cfg.target_admin) as admin:
        if not catalog.database_exists(admin, cfg.pgdatabase):
            return None
        return catalog.read_marker(admin, cfg.pgdatabase)


def plan_target_schema(cfg: BootstrapConfig) -> list[str]:
    """What create_target_schema would run now (read-only)."""
    marker = target_marker(cfg)
    if marker and marker.reached("schema"):
        return [f"nothing: the structure is already restored ({catalog.STAGE_TEXT[marker.stage]})"]
    actions = []
    if cfg.copy_roles:
        with connect(cfg.source) as src, connect(cfg.target_admin) as dst:
            actions += roles.plan_lines(roles.role_plan(src, dst), dst)
    actions.append(f"on {cfg.source}: {' '.join(MARKER_DDL.split())}")
    with connect(cfg.target_admin) as admin:
        create = create_database_sql(cfg, source_database_info(cfg)).as_string(admin)
    actions += [
        f"on {cfg.target_admin}: {create}",
        f"on {cfg.target_admin}: COMMENT ON DATABASE {cfg.pgdatabase} IS '<progress marker>'",
        *dbsettings.plan_database_settings(cfg),
        display_command(dump_argv(cfg, dump_path(cfg))) + "  # from the source",
        f"pg_restore -l --section=pre-data {dump_path(cfg)}, without Bucardo's triggers",
        display_command(restore_argv(cfg, "pre-data", restore_list_path(cfg, "pre-data")))
        + "  # into the target",
    ]
    left_out = unknown_column_options(cfg)
    if not left_out.empty:
        actions.append(
            "instead of that pg_restore: pg_restore -f - into an SQL script, then psql "
            "--single-transaction; " + attoptions.summary(left_out, done=False)
        )
    return actions


def create_target_schema(cfg: BootstrapConfig) -> StepResult:
    """Create the target database when missing and restore the source's pre-data structure."""
    with connect(cfg.target_admin) as admin:
        exists = catalog.database_exists(admin, cfg.pgdatabase)
        marker = catalog.read_marker(admin, cfg.pgdatabase) if exists else None
    if exists and marker is None:
        raise PreconditionError(
            f"target database {cfg.pgdatabase} exists on {cfg.pghost2}:{cfg.pgport2} and was not "
            "created by this runbook; run the preflight cell first"
        )
    if marker and marker.reached("schema"):
        return StepResult(
            "target schema",
            f"structure already restored ({catalog.STAGE_TEXT[marker.stage]})",
            already_done=True,
            tables={"tables": _compare_tables(cfg)},
        )
    changed: list[str] = []
    try:
        tables = _build_target(cfg, changed)
    except (RunbookError, psycopg.Error) as exc:
        if changed:
            raise PartiallyApplied("the target schema step", changed, str(exc)) from exc
        raise
    with connect(cfg.target_admin) as admin:
        catalog.write_marker(admin, cfg, "schema")
    return StepResult(
        "target schema",
        f"database {cfg.pgdatabase} ready on {cfg.pghost2}:{cfg.pgport2}; "
        + "; ".join([*(changed or ["nothing needed changing"]), *_left_out_notes(tables)])
        + " (keys and indexes follow the data copy)",
        tables=tables,
    )


def _build_target(cfg: BootstrapConfig, changed: list[str]) -> dict[str, pd.DataFrame]:
    """Roles, database, its settings, pre-data structure; `changed` lists what was done."""
    tables: dict[str, pd.DataFrame] = {}
    if cfg.copy_roles:
        tables["roles"], tables["role memberships"] = roles.copy_roles(cfg)
        created = tables["roles"].loc[tables["roles"]["action"] == "created", "role"]
        if len(created):
            changed.append(f"roles created on the target: {', '.join(created)}")
    with connect(cfg.source) as src:
        if not catalog.schema_exists(src, catalog.MARKER_SCHEMA):
            changed.append(
                f"schema {catalog.MARKER_SCHEMA} (step 8's marker table) created on the source"
            )
        src.execute(MARKER_DDL)
    if _create_database(cfg):
        changed.append(f"database {cfg.pgdatabase} created on the target")
    # like pg_dump --create: the database's properties before its objects
    tables["database settings"] = dbsettings.apply_database_settings(cfg)
    if (tables["database settings"]["action"] == "set").any():
        changed.append("the database's owner, settings and privileges copied")
    dump_schema(cfg)
    listing, count = restore_list(cfg, "pre-data")
    left_out = unknown_column_options(cfg)
    if left_out.empty:
        LOCAL.run(restore_argv(cfg, "pre-data", listing), env=libpq_env(cfg.target))
    else:
        _restore_pre_data_without(cfg, listing, set(left_out["option"]))
        tables["column options left out"] = left_out
    changed.append(f"{count} pre-data objects restored")
    compared = _compare_tables(cfg)
    missing = compared[~compared["on_target"]]
    if len(missing):
        raise PreconditionError(
            f"tables missing on the target after the schema restore: "
            f"{', '.join(missing['table'])}; see the pg_restore output"
        )
    return {"tables": compared, **tables}


def _left_out_notes(tables: dict[str, pd.DataFrame]) -> list[str]:
    """What the target's PostgreSQL does not know and was therefore not copied."""
    notes = []
    if "column options left out" in tables:
        notes.append(attoptions.summary(tables["column options left out"]))
    settings = tables.get("database settings")
    if settings is not None and (settings["action"] == dbsettings.LEFT_OUT).any():
        names = settings.loc[settings["action"] == dbsettings.LEFT_OUT, "name"]
        notes.append(
            "database settings the target's PostgreSQL does not know were left out: "
            + ", ".join(sorted(set(names)))
        )
    return notes


def _compare_tables(cfg: BootstrapConfig) -> pd.DataFrame:
    with connect(cfg.source) as src:
        source = [r["name"] for r in catalog.all_tables(src)]
    with connect(cfg.target) as dst:
        target = {r["name"] for r in catalog.all_tables(dst)}
    return pd.DataFrame({"table": source, "on_target": [t in target for t in source]})


def existing_post_data(conn) -> set[tuple[str, str, str]]:
    """TOC entries (desc, namespace, tag) of post-data objects already on the target."""
    rows = conn.execute(
        """
        SELECT 'INDEX' AS desc, n.nspname AS ns, c.relname AS tag
          FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        UNION ALL
        SELECT CASE WHEN co.contype = 'f' THEN 'FK CONSTRAINT' ELSE 'CONSTRAINT' END,
               n.nspname, t.relname || ' ' || co.conname
          FROM pg_catalog.pg_constraint co JOIN pg_catalog.pg_class t ON t.oid = co.conrelid
          JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
        UNION ALL
        SELECT 'TRIGGER', n.nspname, t.relname || ' ' || tg.tgname
          FROM pg_catalog.pg_trigger tg JOIN pg_catalog.pg_class t ON t.oid = tg.tgrelid
          JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace WHERE NOT tg.tgisinternal
        """
    ).fetchall()
    return {(r["desc"], r["ns"], r["tag"]) for r in rows}


def restore_post_data(cfg: BootstrapConfig) -> int:
    """Keys, indexes, constraints and (non-Bucardo) triggers; skips what already exists."""
    if not LOCAL.exists(dump_path(cfg)):
        dump_schema(cfg)
    with connect(cfg.target) as conn:
        skip = existing_post_data(conn)
    listing, count = restore_list(cfg, "post-data", skip)
    if count:
        LOCAL.run(restore_argv(cfg, "post-data", listing), env=libpq_env(cfg.target))
    return count
