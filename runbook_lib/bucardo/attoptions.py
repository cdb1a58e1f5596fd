"""Column options (`ALTER TABLE ... ALTER COLUMN ... SET (name=value)`) the target server does not
know. Debian's PostgreSQL 15.20 stores `pg_attver=<n>` on every column it creates; a dump carries
it and PostgreSQL 18 rejects it (`unrecognized parameter "pg_attver"`). Such options are found on
the source, tried on the target inside a transaction that is rolled back, and left out of the
schema restore: the step's result names each one."""

from __future__ import annotations

import re

import pandas as pd
import psycopg

SOURCE_OPTIONS = """
SELECT n.nspname AS schema, c.relname AS table, a.attname AS column,
       split_part(o.opt, '=', 1) AS option, substr(o.opt, strpos(o.opt, '=') + 1) AS value
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL unnest(a.attoptions) AS o(opt)
WHERE a.attoptions IS NOT NULL AND a.attnum > 0 AND NOT a.attisdropped
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'bucardo')
  AND n.nspname NOT LIKE 'pg\\_%%'
ORDER BY 1, 2, 3, 4
"""
PROBE_TABLE = "runbook_attoption_probe"
# `ALTER TABLE ONLY t ALTER COLUMN c SET (a=1, b=2);` as pg_dump writes it, on one line
_SET_LINE = re.compile(
    r"^(?P<head>ALTER TABLE ONLY \S+(?: \S+)*? ALTER COLUMN \S+(?: \S+)*? SET )"
    r"\((?P<opts>[^()]*)\);$"
)


def source_options(conn: psycopg.Connection) -> pd.DataFrame:
    """Every column option set on the source's user tables: schema, table, column, option, value."""
    rows = conn.execute(SOURCE_OPTIONS).fetchall()
    return pd.DataFrame(rows, columns=["schema", "table", "column", "option", "value"])


def _accepted(conn: psycopg.Connection, option: str, value: str) -> bool:
    """Whether the server takes `option=value` on a column (tried on a temporary table in a
    transaction that is always rolled back: nothing is left behind)."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", option) or not re.fullmatch(r"[-+.\w]+", value):
        return False  # not something pg_dump would write unquoted: treat as unknown
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(f"CREATE TEMPORARY TABLE {PROBE_TABLE} (a integer)")
            conn.execute(f"ALTER TABLE {PROBE_TABLE} ALTER COLUMN a SET ({option}={value})")
    except (psycopg.errors.InvalidParameterValue, psycopg.errors.SyntaxError):
        return False
    return True


def unknown_on_target(source: pd.DataFrame, target: psycopg.Connection) -> pd.DataFrame:
    """The rows of `source` whose option the target rejects."""
    if source.empty:
        return source
    tried = source.drop_duplicates("option")
    rejected = {r.option for r in tried.itertuples() if not _accepted(target, r.option, r.value)}
    return source[source["option"].isin(rejected)].reset_index(drop=True)


def without_options(script: str, unknown: set[str]) -> tuple[str, int]:
    """The restore script with `unknown` options left out of every column SET line (a line left
    with no option is dropped); also how many options were removed."""
    kept: list[str] = []
    removed = 0
    for line in script.splitlines(keepends=True):
        found = _SET_LINE.match(line.rstrip("\n"))
        if not found:
            kept.append(line)
            continue
        opts = [o.strip() for o in found["opts"].split(",")]
        left = [o for o in opts if o.split("=", 1)[0] not in unknown]
        removed += len(opts) - len(left)
        if left:
            kept.append(f"{found['head']}({', '.join(left)});\n")
    return "".join(kept), removed


def summary(unknown: pd.DataFrame, *, done: bool = True) -> str:
    """One sentence naming the options left out (or to be) and how many columns carry them."""
    parts = [
        f"{name} on {len(group)} column(s) of {group['table'].nunique()} table(s)"
        for name, group in unknown.groupby("option")
    ]
    verb = "were" if done else "will be"
    return f"column options the target's PostgreSQL does not know {verb} left out: " + "; ".join(
        parts
    )
