"""Table names as people write them (`public."CustomerNotes"`) and as catalogs hold them."""

from __future__ import annotations

import re

from runbook_lib.errors import ConfigurationError

_PLAIN = re.compile(r"^[a-z_][a-z0-9_$]*$")
# Reserved words that must be quoted even when lower case (the common ones; display only).
_RESERVED = frozenset(
    [
        "all",
        "analyse",
        "analyze",
        "and",
        "any",
        "array",
        "as",
        "asc",
        "asymmetric",
        "both",
        "case",
        "cast",
        "check",
        "collate",
        "column",
        "constraint",
        "create",
        "current_catalog",
        "current_date",
        "current_role",
        "current_time",
        "current_timestamp",
        "current_user",
        "default",
        "deferrable",
        "desc",
        "distinct",
        "do",
        "else",
        "end",
        "except",
        "false",
        "fetch",
        "for",
        "foreign",
        "from",
        "grant",
        "group",
        "having",
        "in",
        "initially",
        "intersect",
        "into",
        "lateral",
        "leading",
        "limit",
        "localtime",
        "localtimestamp",
        "not",
        "null",
        "offset",
        "on",
        "only",
        "or",
        "order",
        "placing",
        "primary",
        "references",
        "returning",
        "select",
        "session_user",
        "some",
        "symmetric",
        "table",
        "then",
        "to",
        "trailing",
        "true",
        "union",
        "unique",
        "user",
        "using",
        "variadic",
        "when",
        "where",
        "window",
        "with",
    ]
)


def quote_ident(name: str) -> str:
    """Quote an identifier only when PostgreSQL would need it (as quote_ident() does)."""
    if _PLAIN.match(name) and name not in _RESERVED:
        return name
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, table: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(table)}"


def _parts(text: str) -> list[str]:
    parts: list[str] = []
    i, n = 0, len(text)
    while i <= n:
        if i < n and text[i] == '"':
            j, buf = i + 1, []
            while True:
                if j >= n:
                    raise ConfigurationError(f"unbalanced double quote in table name {text!r}")
                if text[j] == '"':
                    if j + 1 < n and text[j + 1] == '"':
                        buf.append('"')
                        j += 2
                        continue
                    break
                buf.append(text[j])
                j += 1
            parts.append("".join(buf))
            i = j + 1
        else:
            j = text.find(".", i)
            j = n if j < 0 else j
            word = text[i:j].strip()
            if not word:
                raise ConfigurationError(f"empty name part in table name {text!r}")
            parts.append(word.lower())
            i = j
        if i < n and text[i] != ".":
            raise ConfigurationError(f"unexpected character after a quoted name in {text!r}")
        i += 1
    return parts


def parse_table_name(text: str, default_schema: str = "public") -> tuple[str, str]:
    """'schema.table', '"Schema"."Table"' or 'table' -> (schema, table), folding unquoted parts."""
    parts = _parts(text.strip())
    if len(parts) == 1:
        return default_schema, parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise ConfigurationError(
        f"table name {text!r} has {len(parts)} parts; write schema.table (quote mixed case)"
    )
