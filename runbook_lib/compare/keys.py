"""What a table looks like on one side: its columns, how to hash them, and the key to chunk by."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from runbook_lib.compare.names import qualified

# How each built-in type is hashed on the fast path (fingerprint.STEPS), by its base type: its own
# extended hash where that hash is exact (equal exactly when the values print alike) and cheap.
# Everything else is hashed as its text: numeric (hash_numeric() sees the digits alone: 5 = -5,
# 1.0 = 1.00), jsonb (its hash ignores number signs and scales and where containers end),
# arrays (their hash ignores dimensions), enums (hashed by OID), json, interval, composites.
HASH_KINDS = {
    "int8": "int8",
    "int2": "int",
    "int4": "int",
    "bool": "bool",
    "float4": "float",
    "float8": "float",
    "timestamptz": "timestamptz",
    "timestamp": "timestamp",
    "uuid": "uuid",
    # hashed as they are through their type's hash (fingerprint.raw_step): the kind is the type
    **{t: t for t in ("oid", "date", "time", "timetz", "bytea", "inet", "cidr", "macaddr")},
    "macaddr8": "macaddr8",
}
ENUM_LABELS_MAX = 16  # an enum with more labels is hashed as text (a CASE over them costs more)


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type() under an empty search_path: usable in a cast
    hashing: str  # a kind of fingerprint.STEPS: 'text', 'int8', 'float' (raw bits when portable)...
    not_null: bool
    collation: str | None
    labels: tuple[str, ...] | None = None  # an enum's labels, sorted: hashed by position


@dataclass(frozen=True)
class TableInfo:
    """One table on one side."""

    schema: str
    name: str
    relkind: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]  # columns of the primary key or a unique index on NOT NULL columns
    key_source: str  # 'primary key', 'unique index NAME' or 'none'
    pages: int
    estimated_rows: float

    @property
    def display(self) -> str:
        return qualified(self.schema, self.name)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def _hashing(row: dict) -> str:
    if row["labels"] is not None and len(row["labels"]) <= ENUM_LABELS_MAX:
        return "enum"
    builtin = row["base_nsp"] == "pg_catalog"  # arrays are named _int4 and so on: text
    return HASH_KINDS.get(row["base_type"], "text") if builtin else "text"


def list_tables(conn_or_endpoint, schemas: Sequence[str]) -> list[str]:
    """'schema.table' names (quoted where needed) of the tables in `schemas`, sorted."""
    from runbook_lib.connection import Endpoint, connect

    if isinstance(conn_or_endpoint, Endpoint):
        with connect(conn_or_endpoint) as conn:
            return list_tables(conn, schemas)
    rows = conn_or_endpoint.execute(
        "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
        "ORDER BY n.nspname, c.relname",
        [list(schemas)],
    ).fetchall()
    return [qualified(r["nspname"], r["relname"]) for r in rows]


def load_table(conn: psycopg.Connection, schema: str, name: str) -> TableInfo | None:
    """The table's shape on this side, or None when it does not exist there."""
    rel = conn.execute(
        "SELECT c.oid, c.relkind, c.reltuples, "
        "  CASE WHEN c.relkind = 'p' "
        "    THEN (SELECT coalesce(sum(pg_catalog.pg_relation_size(p.relid)), 0) "
        "          FROM pg_catalog.pg_partition_tree(c.oid) p) "
        "    ELSE pg_catalog.pg_relation_size(c.oid) END "
        "  / pg_catalog.current_setting('block_size')::int AS pages "
        "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        [schema, name],
    ).fetchone()
    if rel is None:
        return None
    cols = conn.execute(
        "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type, "
        "  a.atttypmod AS typmod, a.attnotnull, "
        "  (SELECT co.collname FROM pg_catalog.pg_collation co WHERE co.oid = a.attcollation) "
        "    AS coll, "
        "  bn.nspname AS base_nsp, b.typname AS base_type, "
        "  CASE WHEN t.typtype = 'e' THEN ARRAY(SELECT e.enumlabel FROM pg_catalog.pg_enum e "
        '    WHERE e.enumtypid = t.oid ORDER BY e.enumlabel COLLATE "C") END AS labels '
        "FROM pg_catalog.pg_attribute a "
        "JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
        "JOIN pg_catalog.pg_type b "
        "  ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END "
        "JOIN pg_catalog.pg_namespace bn ON bn.oid = b.typnamespace "
        "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        [rel["oid"]],
    ).fetchall()
    columns = tuple(
        Column(
            r["attname"],
            r["type"],
            _hashing(r),
            r["attnotnull"],
            r["coll"],
            tuple(r["labels"]) if r["labels"] is not None else None,
        )
        for r in cols
    )
    key, source = _choose_key(conn, rel["oid"], {c.name: c for c in columns})
    return TableInfo(
        schema,
        name,
        rel["relkind"],
        columns,
        key,
        source,
        int(rel["pages"]),
        float(rel["reltuples"]),
    )


def _choose_key(
    conn: psycopg.Connection, oid: int, columns: dict[str, Column]
) -> tuple[tuple[str, ...], str]:
    """The primary key, else the narrowest unique index over NOT NULL plain columns."""
    indexes = conn.execute(
        "SELECT i.indisprimary, c.relname, "
        "  ARRAY(SELECT a.attname FROM unnest((i.indkey::int2[])[0:i.indnkeyatts - 1]) "
        "        WITH ORDINALITY AS k(attnum, pos) "
        "        JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "        ORDER BY k.pos) AS cols "
        "FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = %s AND i.indisunique AND i.indisvalid AND i.indpred IS NULL "
        "  AND i.indexprs IS NULL "
        "ORDER BY i.indisprimary DESC, i.indnkeyatts, c.relname",
        [oid],
    ).fetchall()
    for index in indexes:
        cols = tuple(index["cols"])
        if cols and all(columns[c].not_null for c in cols):
            source = "primary key" if index["indisprimary"] else f"unique index {index['relname']}"
            return cols, source
    return (), "none"
