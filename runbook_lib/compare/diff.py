"""Differing keys as found (Finding), and reading chunks and keys again on both sides (Driller)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runbook_lib.compare.fingerprint import Key, Range, TableSQL, key_of
from runbook_lib.compare.session import Side

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

    def recheck(self, keys: list[Key]) -> dict[Key, tuple[int | None, int | None]]:
        """Current row hashes of `keys` on both sides; keys that now agree are left out."""
        ra, rb = self._pair(lambda s: s.lookup(keys))
        ha, hb = self.hashes(ra), self.hashes(rb)
        return {k: (ha.get(k), hb.get(k)) for k in keys if ha.get(k) != hb.get(k)}
