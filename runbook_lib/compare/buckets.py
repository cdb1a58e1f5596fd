"""Hash-bucket chunks: fingerprints in one sequential pass per side, whatever the heap's order.

A table's rows are cut into buckets by a hash of the key (fingerprint.Bucket), not by key
ranges: each side reads its heap once, in its own physical order, in block-range slices (short
statements, safe on a hot standby), and adds up per bucket. Only mismatching buckets are read
again: big ones are split into finer buckets (one more pass over the rows of those buckets),
small ones are downloaded as (key, row hash) and merged, a batch at a time.

A big table's slices may be read by several sessions per side at once (Readers): the server's
own max_parallel_workers_per_gather says how many cores a query may take there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from runbook_lib.compare.diff import DOWNLOAD_ROWS, Both, Finding
from runbook_lib.compare.fingerprint import Key, Slice, TableSQL, key_of
from runbook_lib.compare.session import Side, open_side

SLICE_PAGES = 65536  # 512 MB of heap per statement: a few seconds, far from recovery conflicts
MAX_BUCKETS = 16384  # groups per pass: well inside work_mem, and the lists the client keeps
DOWNLOAD_BATCH_ROWS = 100_000  # rows of (key, row hash) held per side at once
TID_RANGE_SCAN_MAJOR = 14
MIN_PARALLEL_PAGES = 8192  # 64 MB: a smaller table is read by one session per side
MAX_WORKERS = 4
Print = tuple[int, int]
Item = tuple[int, Print, Print]  # a mismatching bucket: residue, fingerprint on a, on b


def slices(side: Side, sql_: TableSQL, workers: int = 1) -> list[Slice]:
    """Block ranges covering the heap, the last one open-ended (rows added meanwhile are read):
    SLICE_PAGES each, or smaller so that `workers` sessions share a big table. One slice for
    partitioned tables and before PostgreSQL 14."""
    info = sql_.info
    if info.relkind != "r" or side.major < TID_RANGE_SCAN_MAJOR:
        return [Slice()]
    size = SLICE_PAGES
    if workers > 1 and info.pages >= MIN_PARALLEL_PAGES:
        size = min(size, math.ceil(info.pages / (workers * 2)))
    if info.pages <= size:
        return [Slice()]
    cuts = list(range(size, info.pages, size))
    return [Slice(lo, hi) for lo, hi in zip([0, *cuts], [*cuts, None], strict=True)]


@dataclass
class Readers:
    """The sessions reading one side: its own, and up to `workers` - 1 more opened on first use
    (same pinned settings, read-only)."""

    side: Side
    workers: int = 1
    extra: list[Side] = field(default_factory=list)
    used: int = 1  # the most sessions that read at once

    def each(self, parts: list[Slice], fn: Callable[[Side, Slice], Any]) -> list[Any]:
        """fn(session, slice) for every slice, spread over the sessions; results in slice order."""
        count = min(self.workers, len(parts))
        if count <= 1:
            return [fn(self.side, part) for part in parts]
        while len(self.extra) < count - 1:
            self.extra.append(open_side(self.side.label, self.side.endpoint))
        sessions = [self.side, *self.extra[: count - 1]]
        self.used = max(self.used, count)
        results: list[Any] = [None] * len(parts)

        def work(k: int) -> None:
            for i in range(k, len(parts), count):
                results[i] = fn(sessions[k], parts[i])

        with ThreadPoolExecutor(count, thread_name_prefix=f"compare-{self.side.label}") as pool:
            for future in [pool.submit(work, k) for k in range(count)]:
                future.result()
        return results

    def close(self) -> None:
        for session in self.extra:
            session.close()


def server_workers(side: Side) -> int:
    """Sessions per side for big tables: what the server lets one query use (its
    max_parallel_workers_per_gather as configured, not as this session pins it), 1 to 4."""
    row = side.conn.execute(
        "SELECT reset_val::int AS n FROM pg_catalog.pg_settings "
        "WHERE name = 'max_parallel_workers_per_gather'"
    ).fetchone()
    return max(1, min(MAX_WORKERS, row["n"] if row else 1))


def bucket_count(rows: int, chunk_rows: int) -> int:
    return max(1, min(MAX_BUCKETS, math.ceil(rows / chunk_rows)))


def sliced(side: Side, parts: list[Slice], make: Callable[[Slice], tuple]) -> Iterator[dict]:
    """Rows of make(slice) over every slice, one short statement each."""
    for part in parts:
        query, params = make(part)
        yield from side.conn.execute(query, params)


def total(readers: Readers, sql_: TableSQL, parts: list[Slice], done: Callable[[], None]):
    def one(side: Side, part: Slice) -> Print:
        query, params = sql_.total(part)
        row = side.conn.execute(query, params).fetchone()
        done()
        return row["n"], int(row["s"])

    prints = readers.each(parts, one)
    return sum(p[0] for p in prints), sum(p[1] for p in prints)


def bucket_prints(
    readers: Readers,
    sql_: TableSQL,
    parts: list[Slice],
    modulus: int,
    within: tuple[int, list[int]] | None = None,
) -> dict[int, Print]:
    """Fingerprint of every bucket modulo `modulus` that has rows (within `within`)."""

    def one(side: Side, part: Slice) -> list[dict]:
        query, params = sql_.bucket_prints(modulus, part, within)
        return side.conn.execute(query, params).fetchall()

    prints: dict[int, Print] = {}
    for rows in readers.each(parts, one):
        for row in rows:
            n, s = prints.get(row["b"], (0, 0))
            prints[row["b"]] = (n + row["n"], s + int(row["s"]))
    return prints


@dataclass
class BucketDriller:
    """Lists the differing keys of mismatching buckets of one table."""

    readers_a: Readers
    readers_b: Readers
    sql_a: TableSQL
    sql_b: TableSQL
    slices_a: list[Slice]
    slices_b: list[Slice]
    both: Both

    def _pair(self, fn: Callable[[Readers, TableSQL, list[Slice]], Any]) -> tuple[Any, Any]:
        return self.both(
            lambda: fn(self.readers_a, self.sql_a, self.slices_a),
            lambda: fn(self.readers_b, self.sql_b, self.slices_b),
        )

    def prints(
        self, modulus: int, within: tuple[int, list[int]] | None = None
    ) -> tuple[dict[int, Print], dict[int, Print]]:
        return self._pair(lambda r, s, parts: bucket_prints(r, s, parts, modulus, within))

    def drill(self, modulus: int, items: list[Item], found: Finding) -> set[int]:
        """Add the differing keys of the buckets `items` (residue, print a, print b) to `found`;
        return the residues not fully listed (the cap was reached)."""
        small = [i for i in items if max(i[1][0], i[2][0]) <= DOWNLOAD_ROWS]
        big = [i for i in items if max(i[1][0], i[2][0]) > DOWNLOAD_ROWS]
        left = self._download_all(modulus, small, found)
        if big:
            left |= self._split(modulus, big, found)
        return left

    def _split(self, modulus: int, items: list[Item], found: Finding):
        """Finer buckets for big mismatching ones: one pass over their rows per side."""
        if found.full:
            return {r for r, _, _ in items}
        rows = max(max(a[0], b[0]) for _, a, b in items)
        factor = max(2, math.ceil(rows * 2 / DOWNLOAD_ROWS))
        factor = max(2, min(factor, MAX_BUCKETS // len(items)))
        finer = modulus * factor
        fa, fb = self.prints(finer, (modulus, [r for r, _, _ in items]))
        subs = [
            (r, fa.get(r, (0, 0)), fb.get(r, (0, 0)))
            for r in sorted(fa.keys() | fb.keys())
            if fa.get(r) != fb.get(r)
        ]
        return {r % modulus for r in self.drill(finer, subs, found)}

    def _download_all(self, modulus: int, items: list[Item], found: Finding):
        left: set[int] = set()
        batch: list[int] = []
        rows = 0
        for residue, a, b in items:
            size = max(a[0], b[0])
            room = found.cap - len(found.rows)  # each bucket holds at least one differing key
            if batch and (rows + size > DOWNLOAD_BATCH_ROWS or len(batch) >= room):
                left |= self._download(modulus, batch, found)
                batch, rows = [], 0
            if found.full:
                left.add(residue)
                continue
            batch.append(residue)
            rows += size
        if batch:
            left |= self._download(modulus, batch, found)
        return left

    def _download(self, modulus: int, residues: list[int], found: Finding) -> set[int]:
        def fetch(readers: Readers, s: TableSQL, parts: list[Slice]) -> dict[Key, tuple[int, int]]:
            width = len(s.info.key)
            rows = sliced(readers.side, parts, lambda p: s.bucket_rows(modulus, residues, p))
            return {key_of(r, width): (r["b"], int(r["h"])) for r in rows}

        ra, rb = self._pair(fetch)
        left = set()
        for key in sorted(ra.keys() | rb.keys()):
            a, b = ra.get(key), rb.get(key)
            ha, hb = (a[1] if a else None), (b[1] if b else None)
            if ha != hb and not found.add(key, ha, hb):
                left.add((a or b)[0])
        return left
