"""Stored settings (pg_db_role_setting's "name=value" strings) written back as `SET name = ...`.

The value is stored as the server prints it. Most settings take it back as one literal; the list
settings below (pg_dump's variable_is_guc_list_quote) are stored as a list of identifiers and must
be given back as one literal per element, as pg_dump does (SplitGUCList)."""

from __future__ import annotations

from psycopg import sql

LIST_QUOTED = frozenset(
    {
        "local_preload_libraries",
        "search_path",
        "session_preload_libraries",
        "shared_preload_libraries",
        "temp_tablespaces",
        "unix_socket_directories",
    }
)


def split_entry(entry: str) -> tuple[str, str]:
    """'name=value' -> (name, value); the name never holds '='."""
    name, _, value = entry.partition("=")
    return name, value


def split_guc_list(value: str) -> list[str]:
    """Elements of a stored list setting: comma-separated, double quotes with "" inside."""
    items: list[str] = []
    i, n = 0, len(value)
    while True:
        while i < n and value[i].isspace():
            i += 1
        if i < n and value[i] == '"':
            i += 1
            item = []
            while i < n:
                if value[i] == '"':
                    if i + 1 < n and value[i + 1] == '"':
                        item.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                item.append(value[i])
                i += 1
            items.append("".join(item))
        else:
            start = i
            while i < n and value[i] != ",":
                i += 1
            items.append(value[start:i].strip())
        while i < n and value[i].isspace():
            i += 1
        if i >= n:
            return items
        i += 1  # the comma


def set_clause(entry: str) -> sql.Composed:
    """`SET name = value` (or `= 'a', 'b'` for a list setting) for one stored entry."""
    name, value = split_entry(entry)
    if name.lower() in LIST_QUOTED:
        rhs = sql.SQL(", ").join(sql.Literal(v) for v in split_guc_list(value))
    else:
        rhs = sql.Literal(value)
    return sql.SQL("SET {} = {}").format(sql.Identifier(*name.split(".")), rhs)
