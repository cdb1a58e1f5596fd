"""Verify's first pass: each master read once, in one snapshot per side, and compared outside the
keys Bucardo is still moving.

Under load a chunked comparison finds some changed key in nearly every chunk and has to read the
table again to find them. Here each side instead takes a snapshot (both at the same moment), sums
every table's row hashes once, and, in the same snapshot, reads from Bucardo's delta tables the
keys it may still be moving: changes not yet replicated, and changes logged in the last
SUSPECT_WINDOW_S seconds. Those keys' rows are subtracted from both sums (the fingerprint is a
sum, so that is exact). Equal sums prove every other row equal; the suspect keys whose rows
differ between the two snapshots are then followed one by one (inflight.py). The window is only
a hint: if it missed a key, the sums differ and the table is compared chunk by chunk instead, so
nothing is ever called equal that was not read equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg import sql
from tqdm.auto import tqdm

from runbook_lib.bucardo.inflight import Hashes, KeyTracker, TableKeys, delta_key_texts, lookup
from runbook_lib.compare.fingerprint import Key, Range, key_of
from runbook_lib.compare.session import Side

SUSPECT_WINDOW_S = 10.0
MAX_SUSPECTS = 200_000  # per table: more than that, and the table is compared chunk by chunk


@dataclass
class Outside:
    """One table after the first pass."""

    table: str
    equal: bool  # every row outside the suspect keys is the same on both sides
    rows: tuple[int, int]
    differing: dict[Key, Hashes] = field(default_factory=dict)  # suspects that differ


def _suspects_sql(tk: TableKeys, side: int) -> sql.Composed:
    delta, track = tk.deltas[side]  # type: ignore[misc]
    return sql.SQL(
        "SELECT DISTINCT {texts} FROM {delta} d WHERE d.txntime >= "
        "pg_catalog.clock_timestamp() - make_interval(secs => %s) OR NOT EXISTS "
        "(SELECT 1 FROM {track} tr WHERE tr.txntime = d.txntime AND tr.target = %s)"
    ).format(
        texts=delta_key_texts(tk.sql(side).info.key),
        delta=sql.Identifier("bucardo", delta),
        track=sql.Identifier("bucardo", track),
    )


def _total(side: Side, tk: TableKeys, which: int) -> tuple[int, int]:
    query, params = tk.sql(which).fingerprint(Range())
    row = side.conn.execute(query, params).fetchone()
    return int(row["n"]), int(row["s"])


def _suspects(
    side: Side, tk: TableKeys, which: int, target: str, window_s: float
) -> set[Key] | None:
    if tk.deltas[which] is None:
        return None
    rows = side.conn.execute(_suspects_sql(tk, which), [window_s, target]).fetchall()
    return {key_of(r, len(tk.sql(which).info.key)) for r in rows}


class _SideReader:
    """One side's snapshot: totals of every table, then its suspect keys, then their rows."""

    def __init__(self, tracker: KeyTracker, which: int, bar: tqdm, window_s: float) -> None:
        self.tracker, self.which, self.bar, self.window_s = tracker, which, bar, window_s
        self.side = tracker.sides[which]

    def begin(self) -> None:
        self.side.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        self.side.conn.execute("SELECT 1")  # the snapshot is taken here, on both sides at once

    def totals(self, tables: list[TableKeys]) -> list[tuple[int, int]]:
        out = []
        for tk in tables:
            out.append(_total(self.side, tk, self.which))
            self.bar.update(1)
        return out

    def suspects(self, tables: list[TableKeys]) -> list[set[Key] | None]:
        target = self.tracker.cfg.delta_target
        return [_suspects(self.side, tk, self.which, target, self.window_s) for tk in tables]

    def rows_of(self, tables: list[TableKeys], keys: list[list[Key]]) -> list[dict[Key, int]]:
        try:
            return [
                lookup(self.side, tk.sql(self.which), ks) if ks else {}
                for tk, ks in zip(tables, keys, strict=True)
            ]
        finally:
            self.side.conn.execute("COMMIT")


def compare_outside(
    tracker: KeyTracker, names: list[str], progress: bool, window_s: float = SUSPECT_WINDOW_S
) -> list[Outside]:
    """The first pass over `names` ('schema.table'); tables that are equal outside their suspect
    keys come back equal, with the suspects that differ; the others come back not equal.
    window_s: changes logged this recently are suspects too, replicated or not (0: only the
    changes not replicated)."""
    tables = [tracker.table(name) for name in names]
    keyed = [tk for tk in tables if tk.pair.keyed and tk.pair.sql_b is not None]
    with tqdm(total=2 * len(keyed), unit="table", desc="verify", disable=not progress) as bar:
        readers = (
            _SideReader(tracker, 0, bar, window_s),
            _SideReader(tracker, 1, bar, window_s),
        )
        both = tracker.both
        both(readers[0].begin, readers[1].begin)
        totals = both(lambda: readers[0].totals(keyed), lambda: readers[1].totals(keyed))
        suspects = both(lambda: readers[0].suspects(keyed), lambda: readers[1].suspects(keyed))
        union = [
            sorted(a | b) if a is not None and b is not None and len(a | b) <= MAX_SUSPECTS
            else None
            for a, b in zip(*suspects, strict=True)
        ]  # fmt: skip
        wanted = [ks or [] for ks in union]
        rows = both(
            lambda: readers[0].rows_of(keyed, wanted), lambda: readers[1].rows_of(keyed, wanted)
        )
    keyed_names = {tk.name for tk in keyed}
    out = [Outside(tk.name, False, (0, 0)) for tk in tables if tk.name not in keyed_names]
    for i, tk in enumerate(keyed):
        (na, sa), (nb, sb) = totals[0][i], totals[1][i]
        if union[i] is None:  # Bucardo cannot tell which keys it moves: chunk by chunk
            out.append(Outside(tk.name, False, (na, nb)))
            continue
        ra, rb = rows[0][i], rows[1][i]
        outside_a = (na - len(ra), sa - sum(ra.values()))
        outside_b = (nb - len(rb), sb - sum(rb.values()))
        differing = {k: (ra.get(k), rb.get(k)) for k in union[i] if ra.get(k) != rb.get(k)}
        out.append(Outside(tk.name, outside_a == outside_b, (na, nb), differing))
    return out
