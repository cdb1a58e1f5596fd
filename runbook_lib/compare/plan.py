"""Pairing a table across the two sides: shared columns, key and hash path."""

from __future__ import annotations

from dataclasses import dataclass, field

from runbook_lib.compare.fingerprint import Range, TableSQL
from runbook_lib.compare.keys import TableInfo

CHUNK_ROWS = 1000  # rows per hash bucket: a mismatching bucket is downloaded without splitting


@dataclass
class TablePair:
    """One table as both sides have it, and what the comparison found."""

    name: str
    a: TableInfo | None
    b: TableInfo | None
    sql_a: TableSQL | None = None
    sql_b: TableSQL | None = None
    notes: list[str] = field(default_factory=list)
    schema_differs: bool = False
    chunks: list[Range] = field(default_factory=list)

    @property
    def keyed(self) -> bool:
        return bool(self.sql_a and self.sql_a.info.key)

    @property
    def key_width(self) -> int:
        return len(self.sql_a.info.key) if self.sql_a else 0


def pair_tables(
    name: str, a: TableInfo | None, b: TableInfo | None, *, fast: bool, labels: tuple[str, str]
) -> TablePair:
    pair = TablePair(name, a, b)
    if a is None or b is None:
        return pair
    b_cols = {c.name: c for c in b.columns}
    common = [c for c in a.columns if c.name in b_cols]
    only_a = [c.name for c in a.columns if c.name not in b_cols]
    only_b = [c.name for c in b.columns if c.name not in {x.name for x in a.columns}]
    for side_label, cols in ((labels[0], only_a), (labels[1], only_b)):
        if cols:
            pair.schema_differs = True
            pair.notes.append(f"columns only {side_label}: {', '.join(cols)}")
    hashing: dict[str, str] = {}
    for col in common:
        other = b_cols[col.name]
        if col.type != other.type:
            pair.schema_differs = True
            pair.notes.append(
                f"column {col.name} is {col.type} {labels[0]}, {other.type} {labels[1]}"
            )
        same = (col.type, col.hashing, col.labels) == (other.type, other.hashing, other.labels)
        hashing[col.name] = col.hashing if same else "text"
    names = tuple(c.name for c in common)
    key = _shared_key(a, b, b_cols)
    colls = [(a.column(k).collation, b_cols[k].collation) for k in key[0]]
    if any(x != y for x, y in colls):
        pair.notes.append(
            "key collations differ between the sides: keys that sort differently "
            "are matched across chunks"
        )
    pair.sql_a = TableSQL(_with_key(a, key), names, hashing, portable=not fast)
    pair.sql_b = TableSQL(_with_key(b, key), names, hashing, portable=not fast)
    if not key[0]:
        pair.notes.append("no primary key or unique NOT NULL index: whole-table fingerprint only")
    return pair


def _shared_key(a: TableInfo, b: TableInfo, b_cols: dict) -> tuple[tuple[str, ...], str]:
    for info in (a, b):
        if info.key and all(k in b_cols and k in {c.name for c in a.columns} for k in info.key):
            return info.key, info.key_source
    return (), "none"


def _with_key(info: TableInfo, key: tuple[tuple[str, ...], str]) -> TableInfo:
    from dataclasses import replace

    return replace(info, key=key[0], key_source=key[1])
