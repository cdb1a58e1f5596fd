"""Read-only catalog queries: tables and their keys, sizes, sequences, Bucardo's control tables,
and the bootstrap's progress marker (a comment on the target database)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from runbook_lib.bucardo.config import BootstrapConfig

MARKER_PREFIX = "runbook bucardo_bootstrap"
STAGES = ("created", "schema", "data", "keys")
STAGE_TEXT = {
    "created": "database created",
    "schema": "structure restored",
    "data": "rows copied",
    "keys": "rows copied and keys built",
}
MARKER_SCHEMA = "runbook_bootstrap"
MARKER_TABLE = "marker"
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "bucardo", "pg_toast")

RELATIONS_SQL = """
SELECT n.nspname AS schema, c.relname AS table,
       n.nspname || '.' || c.relname AS name,
       c.relkind::text AS relkind, c.relispartition AS is_partition,
       CASE WHEN c.relispartition
            THEN (SELECT array_agg(pn.nspname || '.' || pc.relname ORDER BY a.level)
                    FROM pg_catalog.pg_partition_ancestors(c.oid) WITH ORDINALITY AS a(relid, level)
                    JOIN pg_catalog.pg_class pc ON pc.oid = a.relid
                    JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace
                   WHERE a.relid <> c.oid)
       END AS ancestors,
       CASE WHEN c.relispartition
            THEN pg_catalog.pg_get_expr(c.relpartbound, c.oid) END AS bounds,
       pg_catalog.pg_total_relation_size(c.oid) AS bytes,
       greatest(c.reltuples, 0)::bigint AS estimated_rows,
       (SELECT string_agg(a.attname, ', ' ORDER BY k.ord)
          FROM pg_catalog.pg_index i
          CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
          JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
         WHERE i.indrelid = c.oid AND i.indisprimary) AS primary_key,
       EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                WHERE i.indrelid = c.oid AND i.indisunique AND i.indpred IS NULL
                  AND i.indexprs IS NULL) AS has_unique_index,
       EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                  AND a.attgenerated <> '') AS has_generated_columns
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'f')
  AND n.nspname <> ALL (%(system)s)
  AND n.nspname NOT LIKE 'pg_temp%%' AND n.nspname NOT LIKE 'pg_toast%%'
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                   WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
                     AND d.deptype = 'e')
ORDER BY 1, 2
"""


def relations(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every user table, partitioned table, partition and foreign table (outside Bucardo's
    schema), with key, size and, for a partition, its ancestors (nearest first) and bounds."""
    rows = conn.execute(RELATIONS_SQL, {"system": list(SYSTEM_SCHEMAS)}).fetchall()
    for r in rows:
        r["ancestors"] = list(r["ancestors"] or [])
    return rows


def all_tables(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every top-level user table (plain or partitioned, not a partition) with key and size."""
    return [r for r in relations(conn) if not r["is_partition"] and r["relkind"] != "f"]


def copyable_tables(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Tables whose rows the data copy moves: plain tables (leaf partitions included), with their
    estimated rows (counted where the table was never analyzed, so progress has a total)."""
    rows = conn.execute(
        """
        SELECT n.nspname AS schema, c.relname AS table, c.oid::bigint AS oid,
               pg_catalog.pg_relation_size(c.oid) AS bytes,
               CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint END AS estimated_rows
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND n.nspname <> ALL (%(system)s)
          AND n.nspname NOT LIKE 'pg_temp%%' AND n.nspname NOT LIKE 'pg_toast%%'
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                           WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
                             AND d.deptype = 'e')
        ORDER BY pg_catalog.pg_relation_size(c.oid) DESC
        """,
        {"system": list(SYSTEM_SCHEMAS)},
    ).fetchall()
    for r in rows:
        if r["estimated_rows"] is None:
            r["estimated_rows"] = conn.execute(
                sql.SQL("SELECT count(*) AS n FROM ONLY {}").format(
                    sql.Identifier(r["schema"], r["table"])
                )
            ).fetchone()["n"]
    return rows


def copy_columns(conn: psycopg.Connection, schema: str, table: str) -> list[str]:
    """Columns COPY can carry (no dropped or generated columns), in order."""
    rows = conn.execute(
        """
        SELECT a.attname FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = pg_catalog.format('%%I.%%I', %s::text, %s::text)::regclass
          AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
        ORDER BY a.attnum
        """,
        [schema, table],
    ).fetchall()
    return [r["attname"] for r in rows]


SEQUENCES_USED_SQL = """
WITH named AS (
    SELECT c.oid FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname || '.' || c.relname = ANY (%(tables)s)
), rels AS (  -- the tables and, for partitions, every partitioned table above them
    SELECT oid AS rel FROM named
    UNION
    SELECT a.relid FROM named, LATERAL pg_catalog.pg_partition_ancestors(named.oid) AS a(relid)
), users AS (
    SELECT d.objid AS seq, d.refobjid AS rel, d.refobjsubid AS attnum,
           CASE d.deptype WHEN 'i' THEN 'identity' ELSE 'owned by the column' END AS kind,
           CASE d.deptype WHEN 'i' THEN 0 ELSE 1 END AS rank
    FROM pg_catalog.pg_depend d
    WHERE d.classid = 'pg_catalog.pg_class'::regclass
      AND d.refclassid = 'pg_catalog.pg_class'::regclass
      AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0
    UNION ALL  -- a column default calling nextval(): a normal dependency of the default
    SELECT d.refobjid, ad.adrelid, ad.adnum, 'column default only', 2
    FROM pg_catalog.pg_depend d
    JOIN pg_catalog.pg_attrdef ad ON ad.oid = d.objid
    WHERE d.classid = 'pg_catalog.pg_attrdef'::regclass
      AND d.refclassid = 'pg_catalog.pg_class'::regclass
)
SELECT DISTINCT ON (u.seq, u.rel, u.attnum)
       tn.nspname || '.' || t.relname AS table, a.attname AS column,
       sn.nspname AS seq_schema, s.relname AS seq_name, u.kind,
       sq.seqincrement AS increment_by, sq.seqstart AS start_value
FROM users u
JOIN rels r ON r.rel = u.rel
JOIN pg_catalog.pg_class s ON s.oid = u.seq AND s.relkind = 'S'
JOIN pg_catalog.pg_namespace sn ON sn.oid = s.relnamespace
JOIN pg_catalog.pg_sequence sq ON sq.seqrelid = s.oid
JOIN pg_catalog.pg_class t ON t.oid = u.rel
JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attnum = u.attnum
ORDER BY u.seq, u.rel, u.attnum, u.rank
"""


def sequences_used(conn: psycopg.Connection, tables: list[str]) -> list[dict[str, Any]]:
    """Every sequence the `tables` ('schema.table') use, found through the catalog's
    dependencies: owned by a column (serial), identity, or only called by a column default (on
    the table or, for a partition, on a partitioned table above it). One row per (sequence,
    table, column); a shared sequence has several."""
    rows = conn.execute(SEQUENCES_USED_SQL, {"tables": tables}).fetchall()
    return sorted(rows, key=lambda r: (r["seq_schema"], r["seq_name"], r["table"], r["column"]))


def split_name(name: str) -> tuple[str, str]:
    schema, table = name.split(".", 1)
    return schema, table


def table_ident(name: str) -> sql.Identifier:
    return sql.Identifier(*split_name(name))


def unquote(name: str) -> str:
    """Bucardo stores some names quoted ('"delta_public_CustomerNotes"')."""
    if len(name) >= 2 and name[0] == name[-1] == '"':
        return name[1:-1].replace('""', '"')
    return name


def bucardo_table_name(text: str) -> str:
    """Bucardo's 'schema."Table"' (each part quoted where needed) -> 'schema.Table'."""
    from runbook_lib.compare.names import parse_table_name

    schema, table = parse_table_name(text)
    return f"{schema}.{table}"


def database_exists(conn: psycopg.Connection, dbname: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", [dbname]
    ).fetchone()
    return row is not None


def schema_exists(conn: psycopg.Connection, schema: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", [schema]
    ).fetchone()
    return row is not None


# -- the progress marker ----------------------------------------------------------------------


@dataclass(frozen=True)
class Marker:
    sync: str
    source: str
    stage: str

    def text(self) -> str:
        return f"{MARKER_PREFIX} sync={self.sync} source={self.source} stage={self.stage}"

    def reached(self, stage: str) -> bool:
        return STAGES.index(self.stage) >= STAGES.index(stage)


_MARKER = re.compile(rf"^{MARKER_PREFIX} sync=(\S+) source=(\S+) stage=(\S+)$")


def source_label(cfg: BootstrapConfig) -> str:
    return f"{cfg.pghost}:{cfg.pgport}/{cfg.pgdatabase}"


def read_marker(admin_conn: psycopg.Connection, dbname: str) -> Marker | None:
    """The bootstrap's marker on the target database (None: not made by a bootstrap)."""
    row = admin_conn.execute(
        """SELECT pg_catalog.shobj_description(d.oid, 'pg_database') AS comment
           FROM pg_catalog.pg_database d WHERE d.datname = %s""",
        [dbname],
    ).fetchone()
    if not row or not row["comment"]:
        return None
    m = _MARKER.match(row["comment"])
    return Marker(m.group(1), m.group(2), m.group(3)) if m and m.group(3) in STAGES else None


def write_marker(admin_conn: psycopg.Connection, cfg: BootstrapConfig, stage: str) -> Marker:
    marker = Marker(cfg.sync, source_label(cfg), stage)
    admin_conn.execute(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(cfg.pgdatabase), sql.Literal(marker.text())
        )
    )
    return marker


# -- Bucardo's control database ---------------------------------------------------------------


def control_installed(control_conn: psycopg.Connection) -> bool:
    row = control_conn.execute("SELECT to_regclass('bucardo.sync') IS NOT NULL AS ok").fetchone()
    return bool(row and row["ok"])


def control_state(control_conn: psycopg.Connection, cfg: BootstrapConfig) -> dict[str, Any]:
    """What of this bootstrap already exists in Bucardo's control database."""
    dbs = {
        r["name"]: r
        for r in control_conn.execute(
            "SELECT name, dbname, dbhost, dbport::int AS dbport, dbuser FROM bucardo.db"
            " WHERE name = ANY(%s)",
            [[cfg.here, cfg.there]],
        )
    }
    relgroup_tables = [
        f"{r['schemaname']}.{r['tablename']}"
        for r in control_conn.execute(
            """SELECT g.schemaname, g.tablename FROM bucardo.herdmap h
               JOIN bucardo.goat g ON g.id = h.goat WHERE h.herd = %s ORDER BY 1, 2""",
            [cfg.relgroup],
        )
    ]
    relgroup = (
        control_conn.execute(
            "SELECT 1 FROM bucardo.herd WHERE name = %s", [cfg.relgroup]
        ).fetchone()
        is not None
    )
    dbgroup = {
        r["db"]: r["role"]
        for r in control_conn.execute(
            "SELECT db, role FROM bucardo.dbmap WHERE dbgroup = %s", [cfg.dbgroup]
        )
    }
    dbgroup_exists = (
        control_conn.execute(
            "SELECT 1 FROM bucardo.dbgroup WHERE name = %s", [cfg.dbgroup]
        ).fetchone()
        is not None
    )
    sync = control_conn.execute(
        "SELECT name, herd, dbs, autokick, conflict_strategy, status FROM bucardo.sync"
        " WHERE name = %s",
        [cfg.sync],
    ).fetchone()
    return {
        "dbs": dbs,
        "relgroup": relgroup,
        "relgroup_tables": relgroup_tables,
        "dbgroup": dbgroup if dbgroup_exists else None,
        "sync": sync,
    }


FIRST_USER_OID = 16384


def binary_copy_safe(conn: psycopg.Connection, schema: str, table: str) -> bool:
    """COPY's binary format carries type OIDs inside arrays and composites, which differ between
    databases for user-defined types: use it only when every column is a built-in type with
    binary I/O, an enum (sent as its label), or an array of built-in elements."""
    row = conn.execute(
        """
        SELECT coalesce(bool_and(
                 t.typsend::oid <> 0 AND t.typreceive::oid <> 0
                 AND (t.typtype = 'e'
                      OR (a.atttypid < %(first)s AND (t.typelem = 0 OR t.typelem < %(first)s)))
               ), true) AS ok
        FROM pg_catalog.pg_attribute a
        JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
        WHERE a.attrelid = pg_catalog.format('%%I.%%I', %(schema)s::text, %(table)s::text)::regclass
          AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
        """,
        {"first": FIRST_USER_OID, "schema": schema, "table": table},
    ).fetchone()
    return bool(row["ok"])
