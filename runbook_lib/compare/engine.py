"""compare_databases: prove two databases hold the same rows, or list where they differ.

1. Pair the tables (columns, key, hash path).
2. Fingerprint every table on both servers at the same time: one sequential pass per side over
   its heap, in its own physical order (block-range slices), adding up the row hashes.
3. Where the two fingerprints differ, cut the table into buckets by a hash of the key (a
   function of the key, so the same on both sides whatever the rows' order) and fingerprint
   them in one more pass; drill into mismatching buckets (buckets.py) to list differing keys,
   up to max_keys per table. A table without a key has one chunk: the whole table.
4. When anything differs and the caller gave `settle` (its "wait until quiesced"), call it once,
   re-check the differing keys and buckets, and report only what persists.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd
from tqdm.auto import tqdm

from runbook_lib.compare import buckets
from runbook_lib.compare.buckets import BucketDriller, Readers
from runbook_lib.compare.diff import Driller, Finding, kind
from runbook_lib.compare.fingerprint import Bucket, Range, Slice
from runbook_lib.compare.keys import list_tables, load_table
from runbook_lib.compare.names import parse_table_name, qualified
from runbook_lib.compare.parallel import BothSides
from runbook_lib.compare.plan import CHUNK_ROWS, TablePair, pair_tables
from runbook_lib.compare.result import Comparison
from runbook_lib.compare.session import Side, open_sides
from runbook_lib.connection import Endpoint
from runbook_lib.errors import ConfigurationError

EXAMPLE_KEYS_SHOWN = 5
Print = tuple[int, int]


@dataclass
class TableState:
    pair: TablePair
    prints_a: list[Print] = field(default_factory=list)
    prints_b: list[Print] = field(default_factory=list)
    mismatched: list[int] = field(default_factory=list)
    incomplete: set[int] = field(default_factory=set)  # chunks not fully listed (cap reached)
    found: Finding | None = None
    rows_a: int | None = None
    rows_b: int | None = None
    settled: bool = False
    totals: list[Print | None] = field(default_factory=lambda: [None, None])  # whole table
    slices: list[list[Slice]] = field(default_factory=list)  # per side: the heap's block ranges

    @property
    def modulus(self) -> int:
        """Bucket count when the table is cut into hash buckets, else 0."""
        first = self.pair.chunks[0] if self.pair.chunks else None
        return first.modulus if isinstance(first, Bucket) else 0

    @property
    def different(self) -> bool:
        listed = bool(self.found and self.found.rows) or bool(self.incomplete)
        return self.pair.schema_differs or listed or (bool(self.mismatched) and not self.settled)

    def refresh_rows(self) -> None:
        if self.prints_a:
            self.rows_a = sum(p[0] for p in self.prints_a)
            self.rows_b = sum(p[0] for p in self.prints_b)
        else:
            self.rows_a, self.rows_b = (t[0] if t else None for t in self.totals)


def _validate(max_keys: int, labels: Sequence[str]) -> tuple[str, str]:
    if not isinstance(max_keys, int) or max_keys < 1:
        raise ConfigurationError(f"max_keys must be a positive integer, got {max_keys!r}")
    if len(labels) != 2 or not all(labels) or labels[0] == labels[1]:
        raise ConfigurationError(f"labels must be two different non-empty names, got {labels!r}")
    return str(labels[0]), str(labels[1])


def _table_names(
    side_a: Side, side_b: Side, tables: list[str] | None, schemas: Sequence[str]
) -> list[tuple[str, str]]:
    if tables is not None:
        return list(dict.fromkeys(parse_table_name(t) for t in tables))
    names = set(list_tables(side_a.conn, schemas)) | set(list_tables(side_b.conn, schemas))
    return sorted({parse_table_name(n) for n in names})


class _Progress:
    """A bar by chunks: a table's share advances as the slower side reads its slices; once both
    sides are read its chunk count is known exactly (it depends on the exact row count)."""

    def __init__(self, sizes: list[int], enabled: bool) -> None:
        self.sizes = sizes
        self.read = [[0.0] * len(sizes), [0.0] * len(sizes)]
        self.bar = tqdm(total=sum(sizes), unit="chunk", desc="compare", disable=not enabled)
        self.lock = threading.Lock()

    def advance(self, side: int, table: int, fraction: float) -> None:
        with self.lock:
            self.read[side][table] = fraction
            self._show()

    def resize(self, table: int, chunks: int) -> None:
        with self.lock:
            self.sizes[table] = chunks
            self.bar.total = sum(self.sizes)
            self._show()

    def _show(self) -> None:
        done = zip(self.sizes, *self.read, strict=True)
        self.bar.n = sum(int(size * min(a, b)) for size, a, b in done)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _estimated_chunks(state: TableState, chunk_rows: int) -> int:
    if not state.pair.keyed:
        return 1
    infos = (state.pair.a, state.pair.b)
    rows = max(i.estimated_rows if i.estimated_rows >= 0 else i.pages * 50 for i in infos if i)
    return buckets.bucket_count(int(rows), chunk_rows)


def _fingerprint_all(readers: Readers, which: int, states: list[TableState], progress: _Progress):
    """One pass per table over this side's heap: the whole table's fingerprint."""
    side = readers.side
    started = side.now()
    for index, state in enumerate(states):
        table_sql = state.pair.sql_a if which == 0 else state.pair.sql_b
        parts = state.slices[which]
        done = iter(range(1, len(parts) + 1))

        def step(index=index, parts=parts, done=done) -> None:
            progress.advance(which, index, next(done) / len(parts))

        state.totals[which] = buckets.total(readers, table_sql, parts, step)
    return {"started": started, "finished": side.now(), "workers": readers.used}


def compare_databases(
    a: Endpoint,
    b: Endpoint,
    *,
    tables: list[str] | None = None,
    schemas: Sequence[str] = ("public",),
    portable: bool = False,
    max_keys: int = 20,
    settle: Callable[[], object] | None = None,
    labels: Sequence[str] = ("here", "there"),
    progress: bool = True,
    chunk_rows: int = CHUNK_ROWS,
    workers: int | None = None,
) -> Comparison:
    """Compare every table of `schemas` (or `tables`) between `a` and `b`, read-only.

    Returns a Comparison: `identical`, a per-table `summary`, the differing keys (`differences`,
    at most `max_keys` per table) and `read_at` (server clock when each side was read).
    `portable=True` forces the text-hash path that any two PostgreSQL versions agree on (it is
    used anyway when the major versions differ). `settle`, when given, is called once if
    anything differs; differences are then re-checked and only those that persist are reported.
    `workers`: sessions per side reading a big table (default: the server's own
    max_parallel_workers_per_gather, at most 4); `read_at` says how many each side used.
    """
    labels = _validate(max_keys, labels)
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ConfigurationError(f"workers must be a positive integer, got {workers!r}")
    side_a, side_b = open_sides(labels, a, b)
    readers = []
    try:
        readers = [Readers(s, workers or buckets.server_workers(s)) for s in (side_a, side_b)]
        with BothSides() as both:
            run = _Run(side_a, side_b, both, max_keys, *readers)
            return _compare(run, tables, schemas, portable, settle, labels, progress, chunk_rows)
    finally:
        for reader in readers:
            reader.close()
        side_a.close()
        side_b.close()


@dataclass
class _Run:
    side_a: Side
    side_b: Side
    both: BothSides
    max_keys: int
    readers_a: Readers
    readers_b: Readers


def _compare(run: _Run, tables, schemas, portable, settle, labels, progress, chunk_rows):
    side_a, side_b, both = run.side_a, run.side_b, run.both
    fast = not portable and side_a.major == side_b.major
    names = _table_names(side_a, side_b, tables, schemas)
    infos = both(
        lambda: [load_table(side_a.conn, *n) for n in names],
        lambda: [load_table(side_b.conn, *n) for n in names],
    )
    nowhere = [qualified(*n) for n, ia, ib in zip(names, *infos, strict=True) if not (ia or ib)]
    if nowhere:
        raise ConfigurationError(
            f"no table {', '.join(nowhere)} on either side ({side_a.endpoint}, {side_b.endpoint}); "
            "check the names (schema.table, double quotes for mixed case)"
        )
    states = [
        TableState(pair_tables(qualified(*name), ia, ib, fast=fast, labels=labels))
        for name, ia, ib in zip(names, *infos, strict=True)
    ]
    both_present = [s for s in states if s.pair.a is not None and s.pair.b is not None]
    for state in both_present:
        state.slices = [
            buckets.slices(side_a, state.pair.sql_a, run.readers_a.workers),
            buckets.slices(side_b, state.pair.sql_b, run.readers_b.workers),
        ]

    bar = _Progress([_estimated_chunks(s, chunk_rows) for s in both_present], progress)
    try:
        read_a, read_b = both(
            lambda: _fingerprint_all(run.readers_a, 0, both_present, bar),
            lambda: _fingerprint_all(run.readers_b, 1, both_present, bar),
        )
        for index, state in enumerate(both_present):
            _plan(state, chunk_rows)
            bar.resize(index, len(state.pair.chunks))
    finally:
        bar.close()
    read_at = {labels[0]: read_a, labels[1]: read_b}

    for state in both_present:
        state.refresh_rows()
        if state.totals[0] != state.totals[1]:
            _fingerprint_chunks(run, state)
            pairs = zip(state.prints_a, state.prints_b, strict=True)
            state.mismatched = [i for i, (x, y) in enumerate(pairs) if x != y]
            _drill(run, state, state.mismatched)

    unsettled = [s for s in both_present if s.mismatched]
    if settle is not None and unsettled:
        settle()
        read_at["settled"] = {labels[0]: side_a.now(), labels[1]: side_b.now()}
        for state in unsettled:
            _recheck(run, state)

    _count_missing(states, side_a, side_b)
    return _result(states, read_at, labels, fast)


def _plan(state: TableState, chunk_rows: int) -> None:
    """Hash buckets of about chunk_rows rows (by the exact count just read); no key: one chunk."""
    if not state.pair.keyed:
        state.pair.chunks = [Range()]
        return
    modulus = buckets.bucket_count(max(t[0] for t in state.totals), chunk_rows)
    state.pair.chunks = [Bucket(modulus, r) for r in range(modulus)]


def _fingerprint_chunks(run: _Run, state: TableState) -> None:
    """The tables' fingerprints differ: fingerprint each chunk (one more pass per side)."""
    if not state.modulus:
        state.prints_a, state.prints_b = [state.totals[0]], [state.totals[1]]
        return
    pa, pb = _bucket_driller(run, state).prints(state.modulus)
    state.prints_a = [pa.get(r, (0, 0)) for r in range(state.modulus)]
    state.prints_b = [pb.get(r, (0, 0)) for r in range(state.modulus)]
    state.refresh_rows()


def _bucket_driller(run: _Run, state: TableState) -> BucketDriller:
    assert state.pair.sql_a and state.pair.sql_b
    return BucketDriller(
        run.readers_a, run.readers_b, state.pair.sql_a, state.pair.sql_b, *state.slices, run.both
    )


def _driller(run: _Run, state: TableState) -> Driller:
    assert state.pair.sql_a and state.pair.sql_b
    return Driller(run.side_a, run.side_b, state.pair.sql_a, state.pair.sql_b, run.both)


def _drill(run: _Run, state: TableState, chunks: list[int]) -> None:
    if state.found is None:
        state.found = Finding(run.max_keys)
    if not state.pair.keyed:
        state.incomplete.update(chunks)
        return
    items = [(i, state.prints_a[i], state.prints_b[i]) for i in chunks]
    state.incomplete |= _bucket_driller(run, state).drill(state.modulus, items, state.found)


def _recheck(run: _Run, state: TableState) -> None:
    """After settle: keep the keys that still differ, re-fingerprint the chunks that differed,
    and list the ones the cap had left unlisted. New differences in listed chunks are in flight."""
    driller = _driller(run, state)
    before = list(state.found.rows) if state.found else []
    unlisted = state.incomplete
    state.found, state.incomplete, state.settled = Finding(run.max_keys), set(), True
    if before:
        for key, hashes in driller.recheck(before).items():
            state.found.add(key, *hashes)
    if state.modulus:
        within = (state.modulus, state.mismatched)
        pa, pb = _bucket_driller(run, state).prints(state.modulus, within)
        for i in state.mismatched:
            state.prints_a[i], state.prints_b[i] = pa.get(i, (0, 0)), pb.get(i, (0, 0))
    else:
        for i in state.mismatched:
            state.prints_a[i], state.prints_b[i] = driller.fingerprint(state.pair.chunks[i])
    still = [i for i in state.mismatched if state.prints_a[i] != state.prints_b[i]]
    state.refresh_rows()
    state.mismatched = still
    _drill(run, state, [i for i in still if i in unlisted])


def _count_missing(states: list[TableState], side_a: Side, side_b: Side) -> None:
    """A table on one side only: count its rows there (no comparison is possible)."""
    from psycopg import sql

    for state in states:
        if state.pair.a is not None and state.pair.b is not None:
            continue
        for info, side, attr in (
            (state.pair.a, side_a, "rows_a"),
            (state.pair.b, side_b, "rows_b"),
        ):
            if info is not None:
                only = sql.SQL("ONLY ") if info.relkind == "r" else sql.SQL("")
                query = sql.SQL("SELECT count(*) AS n FROM {}{}").format(
                    only, sql.Identifier(info.schema, info.name)
                )
                setattr(state, attr, side.conn.execute(query).fetchone()["n"])


def _key_text(key: tuple[str, ...]) -> str:
    return key[0] if len(key) == 1 else "(" + ", ".join(key) + ")"


def _result(
    states: list[TableState], read_at: dict, labels: tuple[str, str], fast: bool
) -> Comparison:
    la, lb = labels
    summary_rows, diff_rows = [], []
    for state in states:
        pair = state.pair
        keys = sorted(state.found.rows.items()) if state.found else []
        if pair.a is None:
            verdict = f"missing {la}"
        elif pair.b is None:
            verdict = f"missing {lb}"
        elif state.different:
            verdict = "different"
        else:
            verdict = "identical"
        for key, (ha, hb) in keys:
            diff_rows.append(
                {"table": pair.name, "key": _key_text(key), "kind": kind(ha, hb, labels)}
            )
        info = pair.sql_a.info if pair.sql_a else None
        notes = list(pair.notes)
        if pair.keyed and state.mismatched and not keys and not state.incomplete:
            notes.append(
                "chunks differed but no differing row was left when drilled: rows changed "
                "while being read; compare a quiesced pair (settle=)"
            )
        method = "typed hashes" if fast else "md5 of text"
        summary_rows.append(
            {
                "table": pair.name,
                f"rows_{la}": state.rows_a,
                f"rows_{lb}": state.rows_b,
                "chunks": len(pair.chunks),
                "chunks_different": len(state.mismatched),
                "verdict": verdict,
                "differing_keys": len(keys),
                "more_keys": bool(state.incomplete),
                "example_keys": ", ".join(_key_text(k) for k, _ in keys[:EXAMPLE_KEYS_SHOWN]),
                "key": (", ".join(info.key) + f" ({info.key_source})") if info and info.key else "",
                "method": "" if info is None else method,
                "note": "; ".join(notes),
            }
        )
    summary = pd.DataFrame(summary_rows, columns=_SUMMARY_COLUMNS(la, lb))
    for col in (f"rows_{la}", f"rows_{lb}"):
        summary[col] = summary[col].astype("Int64")
    differences = pd.DataFrame(diff_rows, columns=["table", "key", "kind"])
    identical = bool((summary["verdict"] == "identical").all())
    found = {s.pair.name: dict(s.found.rows) for s in states if s.found and s.found.rows}
    incomplete = {s.pair.name for s in states if s.incomplete}
    return Comparison(
        identical, summary, differences, read_at, labels, found=found, incomplete=incomplete
    )


def _SUMMARY_COLUMNS(la: str, lb: str) -> list[str]:  # noqa: N802
    return [
        "table", f"rows_{la}", f"rows_{lb}", "chunks", "chunks_different", "verdict",
        "differing_keys", "more_keys", "example_keys", "key", "method", "note",
    ]  # fmt: skip
