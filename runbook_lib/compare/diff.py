"""Finding the rows: split a mismatching chunk until small, then merge (key, row hash) of both."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runbook_lib.compare.fingerprint import Key, Range, TableSQL, key_of
from runbook_lib.compare.session import Side

FANOUT = 16  # sub-ranges per split at least (composite keys: exactly; cut by a CASE chain)
MAX_FANOUT = 64  # single-column keys: enough sub-ranges to reach DOWNLOAD_ROWS in one split
DOWNLOAD_ROWS = 2000  # at most this many rows per side: fetch (key, hash) and merge

Both = Callable[[Callable[[], Any], Callable[[], Any]], tuple[Any, Any]]


@dataclass
class Finding:
    """Differing keys found in one table: key -> (row hash on side a, row hash on side b)."""

    cap: int
    rows: dict[Key, tuple[int | None, int | None]] = field(default_factory=dict)

    @property
    def full(self) -> bool:
        return len(self.rows) >= self.cap

    def add(self, key: Key, ha: int | None, hb: int | None) -> bool:
        """Record a differing key; False when the cap left it out."""
        if key in self.rows:  # seen in another chunk: the sides order this key differently
            old_a, old_b = self.rows.pop(key)
            ha = ha if ha is not None else old_a
            hb = hb if hb is not None else old_b
            if ha == hb:
                return True
            self.rows[key] = (ha, hb)
            return True
        if len(self.rows) >= self.cap:
            return False
        self.rows[key] = (ha, hb)
        return True


def kind(ha: int | None, hb: int | None, labels: tuple[str, str]) -> str:
    if ha is None:
        return f"missing {labels[0]}"
    if hb is None:
        return f"missing {labels[1]}"
    return "different"


@dataclass
class Driller:
    side_a: Side
    side_b: Side
    sql_a: TableSQL
    sql_b: TableSQL
    both: Both

    def _run(self, side: Side, built: tuple) -> list[dict]:
        query, params = built
        return side.conn.execute(query, params).fetchall()

    def _pair(self, make: Callable[[TableSQL], tuple]) -> tuple[list[dict], list[dict]]:
        qa, qb = make(self.sql_a), make(self.sql_b)
        return self.both(lambda: self._run(self.side_a, qa), lambda: self._run(self.side_b, qb))

    def hashes(self, rows: list[dict]) -> dict[Key, int]:
        width = len(self.sql_a.info.key)
        return {key_of(r, width): int(r["h"]) for r in rows}

    def fingerprint(self, rng: Range) -> tuple[tuple[int, int], tuple[int, int]]:
        ra, rb = self._pair(lambda s: s.fingerprint(rng))
        return (ra[0]["n"], int(ra[0]["s"])), (rb[0]["n"], int(rb[0]["s"]))

    def drill(self, rng: Range, na: int, nb: int, found: Finding) -> bool:
        """Add the differing keys of `rng` to `found`; False when it stopped at the cap."""
        if found.full:
            return False
        if max(na, nb) <= DOWNLOAD_ROWS:
            return self._merge(rng, found)
        side, table_sql = (self.side_a, self.sql_a) if na >= nb else (self.side_b, self.sql_b)
        width = len(table_sql.info.key)
        rows = max(na, nb)
        fanout = FANOUT if width > 1 else min(MAX_FANOUT, max(FANOUT, -(-rows // DOWNLOAD_ROWS)))
        step = math.ceil(rows / fanout)
        cuts = [key_of(r, width) for r in self._run(side, table_sql.quantiles(rng, step))]
        cuts = [c for c in cuts if c != rng.lo]
        if not cuts:
            return self._merge(rng, found)
        ra, rb = self._pair(lambda s: s.buckets(rng, cuts))
        fa = {r["b"]: (r["n"], int(r["s"])) for r in ra}
        fb = {r["b"]: (r["n"], int(r["s"])) for r in rb}
        edges = [rng.lo, *cuts, rng.hi]
        complete = True
        for i in range(len(cuts) + 1):
            a, b = fa.get(i, (0, 0)), fb.get(i, (0, 0))
            if a != b:
                complete = self.drill(Range(edges[i], edges[i + 1]), a[0], b[0], found) and complete
        return complete

    def _merge(self, rng: Range, found: Finding) -> bool:
        ra, rb = self._pair(lambda s: s.download(rng))
        ha, hb = self.hashes(ra), self.hashes(rb)
        complete = True
        for key in sorted(ha.keys() | hb.keys()):
            a, b = ha.get(key), hb.get(key)
            if a != b:
                complete = found.add(key, a, b) and complete
        return complete

    def recheck(self, keys: list[Key]) -> dict[Key, tuple[int | None, int | None]]:
        """Current row hashes of `keys` on both sides; keys that now agree are left out."""
        ra, rb = self._pair(lambda s: s.lookup(keys))
        ha, hb = self.hashes(ra), self.hashes(rb)
        return {k: (ha.get(k), hb.get(k)) for k in keys if ha.get(k) != hb.get(k)}
