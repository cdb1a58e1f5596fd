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
from psycopg.pq import TransactionStatus
from tqdm.auto import tqdm

from runbook_lib.bucardo.inflight import Hashes, KeyTracker, TableKeys, delta_key_texts, lookup
from runbook_lib.compare.fingerprint import Key, Range, key_of
from runbook_lib.compare.session import Side

SUSPECT_WINDOW_S = 10.0
MAX_SUSPECTS = 200_000  # per table held in memory; beyond, streamed (retire) or chunk by chunk
STREAM_BATCH = 5000  # suspect keys looked up on both sides at a time when streamed


@dataclass
class Outside:
    """One table after the first pass."""

    table: str
    equal: bool  # every row outside the suspect keys is the same on both sides
    rows: tuple[int, int]
    differing: dict[Key, Hashes] = field(default_factory=dict)  # suspects that differ
    streamed_differing: int = 0  # suspects beyond MAX_SUSPECTS (streamed) whose rows differ

    @property
    def changed(self) -> int:
        """Suspect keys whose rows differ between the two snapshots."""
        return len(self.differing) + self.streamed_differing


def _suspects_sql(tk: TableKeys, side: int, limit: bool = True) -> sql.Composed:
    """The suspect keys logged on `side`, at most MAX_SUSPECTS + 1 of them unless not `limit`."""
    delta, track = tk.deltas[side]  # type: ignore[misc]
    return sql.SQL(
        "SELECT DISTINCT {texts} FROM {delta} d WHERE d.txntime >= "
        "pg_catalog.clock_timestamp() - make_interval(secs => %s) OR NOT EXISTS "
        "(SELECT 1 FROM {track} tr WHERE tr.txntime = d.txntime AND tr.target = %s)"
        + (f" LIMIT {MAX_SUSPECTS + 1}" if limit else "")
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
        return [
            lookup(self.side, tk.sql(self.which), ks) if ks else {}
            for tk, ks in zip(tables, keys, strict=True)
        ]

    def end(self) -> None:
        """Leave the snapshot; after an error too (a lost connection has none to leave)."""
        if self.side.conn.info.transaction_status in (
            TransactionStatus.INTRANS,
            TransactionStatus.INERROR,
        ):
            self.side.conn.execute("COMMIT")


@dataclass
class _Streamed:
    """The rows of the suspects streamed from one side: per side (rows, sum of row hashes)."""

    totals: list[list[int]] = field(default_factory=lambda: [[0, 0], [0, 0]])
    differing: int = 0


def _stream_beyond(
    tracker: KeyTracker, tk: TableKeys, big: int, small: set[Key], window_s: float
) -> _Streamed:
    """Every suspect of side `big` not in `small`, read from a cursor in its snapshot batch by
    batch, and its rows on both sides: memory bounded whatever the number of keys."""
    sides, out = tracker.sides, _Streamed()
    width = len(tk.sql(big).info.key)
    target = tracker.cfg.delta_target
    with sides[big].conn.cursor(name="runbook_suspects") as cursor:
        cursor.execute(_suspects_sql(tk, big, limit=False), [window_s, target])
        while batch := cursor.fetchmany(STREAM_BATCH):
            keys = [k for k in (key_of(r, width) for r in batch) if k not in small]
            found = tracker.both(
                lambda keys=keys: lookup(sides[0], tk.sql(0), keys),
                lambda keys=keys: lookup(sides[1], tk.sql(1), keys),
            )
            for side, rows in enumerate(found):
                out.totals[side][0] += len(rows)
                out.totals[side][1] += sum(rows.values())
            out.differing += sum(1 for k in keys if found[0].get(k) != found[1].get(k))
    return out


def _in_memory(
    a: set[Key] | None, b: set[Key] | None, stream: bool
) -> tuple[list | None, int | None]:
    """The suspects of both sides to hold in memory, and the side whose suspects are streamed
    instead (only with `stream`, and only one side), or (None, None): too many to set aside."""
    if a is None or b is None:
        return None, None
    big = [side for side, keys in enumerate((a, b)) if len(keys) > MAX_SUSPECTS]
    if not big:
        return sorted(a | b), None
    if stream and len(big) == 1:
        return sorted(b if big == [0] else a), big[0]
    return None, None


def compare_outside(
    tracker: KeyTracker,
    names: list[str],
    progress: bool,
    window_s: float = SUSPECT_WINDOW_S,
    stream: bool = False,
) -> list[Outside]:
    """The first pass over `names` ('schema.table'); tables that are equal outside their suspect
    keys come back equal, with the suspects that differ; the others come back not equal.
    window_s: changes logged this recently are suspects too, replicated or not (0: only the
    changes not replicated). More than MAX_SUSPECTS suspects on one side are streamed when
    `stream` (nothing to fall back on), else the table comes back not equal."""
    tables = [tracker.table(name) for name in names]
    keyed = [tk for tk in tables if tk.pair.keyed and tk.pair.sql_b is not None]
    with tqdm(total=2 * len(keyed), unit="table", desc="verify", disable=not progress) as bar:
        readers = (
            _SideReader(tracker, 0, bar, window_s),
            _SideReader(tracker, 1, bar, window_s),
        )
        both = tracker.both
        both(readers[0].begin, readers[1].begin)
        try:
            totals = both(lambda: readers[0].totals(keyed), lambda: readers[1].totals(keyed))
            suspects = both(lambda: readers[0].suspects(keyed), lambda: readers[1].suspects(keyed))
            held = [_in_memory(a, b, stream) for a, b in zip(*suspects, strict=True)]
            wanted = [ks or [] for ks, _ in held]
            rows = both(
                lambda: readers[0].rows_of(keyed, wanted),
                lambda: readers[1].rows_of(keyed, wanted),
            )
            streamed = {
                i: _stream_beyond(tracker, keyed[i], big, set(held[i][0] or []), window_s)
                for i, (_, big) in enumerate(held)
                if big is not None
            }
        finally:
            both(readers[0].end, readers[1].end)
    keyed_names = {tk.name for tk in keyed}
    out = [Outside(tk.name, False, (0, 0)) for tk in tables if tk.name not in keyed_names]
    for i, tk in enumerate(keyed):
        (na, sa), (nb, sb) = totals[0][i], totals[1][i]
        if held[i][0] is None:  # Bucardo cannot tell which keys it moves: chunk by chunk
            out.append(Outside(tk.name, False, (na, nb)))
            continue
        ra, rb = rows[0][i], rows[1][i]
        beyond = streamed.get(i, _Streamed())
        (ma, ta), (mb, tb) = beyond.totals
        outside_a = (na - len(ra) - ma, sa - sum(ra.values()) - ta)
        outside_b = (nb - len(rb) - mb, sb - sum(rb.values()) - tb)
        differing = {k: (ra.get(k), rb.get(k)) for k in held[i][0] if ra.get(k) != rb.get(k)}
        out.append(
            Outside(
                tk.name,
                outside_a == outside_b,
                (na, nb),
                differing,
                streamed_differing=beyond.differing,
            )
        )
    return out
