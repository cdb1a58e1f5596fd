"""Telling a change in flight from a difference, key by key, while the application keeps writing.

The comparison reads each master in its own snapshot, so under load it finds keys that differ only
because a change has not reached the other side yet. Each such key is followed in rounds; every
round first waits until Bucardo has replicated every change logged before it (a mark), then reads
the key again on both sides and looks for it in Bucardo's delta tables:

- equal on both sides now: *in flight*, proven equal;
- still different, but changed since the last round or with a change logged and not yet replicated
  (a delta row with no track row for this sync's target): *in flight*, followed further;
- still different, unchanged over two rounds with nothing pending: *different*.

A hot key (it changes in every round) is proven by holding it still: its row is locked FOR SHARE
SKIP LOCKED (never waiting, so never part of a deadlock) on one side, in one short transaction for
all hot keys, until the other side shows the same row hash, at most HOLD_S. An application
transaction that wants the row waits that long at most, and never fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from runbook_lib.bucardo import catalog, queue
from runbook_lib.bucardo.config import BootstrapConfig
from runbook_lib.compare.fingerprint import Key, TableSQL, key_of
from runbook_lib.compare.keys import load_table
from runbook_lib.compare.names import parse_table_name
from runbook_lib.compare.parallel import BothSides
from runbook_lib.compare.plan import TablePair, pair_tables
from runbook_lib.compare.session import Side, open_side
from runbook_lib.connection import connect

STABLE_ROUNDS = 2  # unchanged and nothing pending this many rounds in a row: different
HOLD_S = 0.8  # longest a hot row is held FOR SHARE: an application waits less than a second
ALIGN_S = 1.0  # longest wait for the running sync to end before a hold starts
DIFFERENT_GRACE_S = 20.0  # once a key is shown different, follow the others this long at most
ROUND_WAIT_S = 30.0  # longest wait in one round for Bucardo to replicate the followed keys
POLL_S = 0.02
LOOKUP_BATCH = 5000
MARK_POLL_S = 0.05
KICK_AFTER_S = 5.0
FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)
HOT_KEYS_PER_ROUND = 500  # per table and side
LOCKER_SETTINGS = {
    "default_transaction_read_only": "off",  # FOR SHARE needs a read-write transaction
    "lock_timeout": "50ms",
    "statement_timeout": "5s",
    "idle_in_transaction_session_timeout": "2s",  # if this process stalls, the server lets go
}

Hashes = tuple[int | None, int | None]


@dataclass
class KeyState:
    seen: Hashes
    stable_rounds: int = 0
    in_flight_rounds: int = 0
    lock_side: int = 0  # where to hold it still: the side its pending changes come from
    changed_on: int | None = None
    verdict: str = "pending"  # pending | in flight | different
    how: str = ""


@dataclass
class TableKeys:
    name: str
    pair: TablePair
    deltas: list[tuple[str, str] | None]  # per side: (delta table, track table)
    keys: dict[Key, KeyState] = field(default_factory=dict)

    def sql(self, side: int) -> TableSQL:
        table_sql = self.pair.sql_a if side == 0 else self.pair.sql_b
        assert table_sql is not None
        return table_sql

    def pending(self) -> list[Key]:
        return [k for k, st in self.keys.items() if st.verdict == "pending"]

    def count(self, verdict: str) -> int:
        return sum(1 for st in self.keys.values() if st.verdict == verdict)


def lookup(side: Side, table_sql: TableSQL, keys: list[Key], lock: bool = False) -> dict:
    width = len(table_sql.info.key)
    out: dict[Key, int] = {}
    for i in range(0, len(keys), LOOKUP_BATCH):
        query, params = table_sql.lookup(keys[i : i + LOOKUP_BATCH])
        if lock:
            query = query + sql.SQL(" FOR SHARE OF t SKIP LOCKED")
        for r in side.conn.execute(query, params):
            out[key_of(r, width)] = int(r["h"])
    return out


def delta_key_texts(key: tuple[str, ...]) -> sql.Composed:
    """A delta table's key columns as text, named k0, k1, ... as the comparison names them."""
    return sql.SQL(", ").join(
        sql.SQL("d.{}::text AS {}").format(sql.Identifier(k), sql.Identifier(f"k{i}"))
        for i, k in enumerate(key)
    )


def _pending_sql(info, delta: str, track: str) -> sql.Composed:
    """The keys among %s (text arrays) with a change logged before %s and not yet replicated to
    target %s."""
    key = info.key
    return sql.SQL(
        "SELECT DISTINCT {texts} FROM {delta} d JOIN unnest({arrays}) AS u({names}) ON {join} "
        "WHERE d.txntime <= %s AND NOT EXISTS (SELECT 1 FROM {track} tr "
        "WHERE tr.txntime = d.txntime AND tr.target = %s)"
    ).format(
        texts=delta_key_texts(key),
        delta=sql.Identifier("bucardo", delta),
        arrays=sql.SQL(", ").join(sql.SQL("%s::text[]") for _ in key),
        names=sql.SQL(", ").join(sql.Identifier(f"u{i}") for i in range(len(key))),
        join=sql.SQL(" AND ").join(
            sql.SQL("d.{} = u.{}::{}").format(
                sql.Identifier(k), sql.Identifier(f"u{i}"), sql.SQL(info.column(k).type)
            )
            for i, k in enumerate(key)
        ),
        track=sql.Identifier("bucardo", track),
    )


class KeyTracker:
    """Both masters' sessions (reads, and row locks for hot keys) and the keys being followed."""

    def __init__(self, cfg: BootstrapConfig, labels: tuple[str, str], *, hold: bool = True) -> None:
        self.cfg = cfg
        self.hold = hold  # False (a dry run): no row is ever locked
        self.labels = labels
        eps = (cfg.source, cfg.target)
        self.sides = [open_side(labels[0], eps[0])]
        self.lockers: list[Side] = []
        try:
            self.sides.append(open_side(labels[1], eps[1]))
            for i in (0, 1):
                self.lockers.append(self._open_locker(i))
        except BaseException:
            self.close()
            raise
        # the comparison engine's rule: the fast row hash when both majors are the same
        self.fast = self.sides[0].major == self.sides[1].major
        self.both = BothSides()
        self.tables: dict[str, TableKeys] = {}
        self.locks_held = 0
        self.longest_hold_s = 0.0
        self.first_different_at: float | None = None

    def _open_locker(self, side: int) -> Side:
        ep = (self.cfg.source, self.cfg.target)[side]
        locker = open_side(self.labels[side], ep)
        locker.conn.execute(
            "SELECT pg_catalog.set_config(name, value, false) "
            "FROM unnest(%s::text[], %s::text[]) AS s(name, value)",
            [list(LOCKER_SETTINGS), list(LOCKER_SETTINGS.values())],
        )
        return locker

    def close(self) -> None:
        for side in [*self.sides, *self.lockers]:
            side.close()
        if hasattr(self, "both"):
            self.both.close()

    def __enter__(self) -> KeyTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what to follow
    def table(self, table: str) -> TableKeys:
        """The table as both sides have it (paired as the comparison engine pairs it)."""
        if table not in self.tables:
            schema, name = parse_table_name(table)
            infos = [load_table(s.conn, schema, name) for s in self.sides]
            pair = pair_tables(table, infos[0], infos[1], fast=self.fast, labels=self.labels)
            deltas = [self._delta_of(s.conn, f"{schema}.{name}") for s in self.sides]
            self.tables[table] = TableKeys(table, pair, deltas)
        return self.tables[table]

    def follow(self, table: str, found: dict[Key, Hashes]) -> None:
        tk = self.table(table)
        for key, hashes in found.items():
            if key not in tk.keys or tk.keys[key].verdict != "pending":
                tk.keys[key] = KeyState(hashes)

    def _delta_of(self, conn: psycopg.Connection, table: str) -> tuple[str, str] | None:
        for r in queue.delta_names(conn, self.cfg.sync):
            if catalog.bucardo_table_name(r["tablename"]) == table:
                return catalog.unquote(r["deltaname"]), catalog.unquote(r["trackname"])
        return None

    def pending_count(self) -> int:
        return sum(len(t.pending()) for t in self.tables.values())

    # -- one round
    def _pending_deltas(
        self, side: int, tk: TableKeys, keys: list[Key], before: datetime = FAR_FUTURE
    ) -> set[Key] | None:
        """Keys with a change logged (before `before`) that Bucardo has not replicated yet;
        None when this side's delta table cannot tell."""
        delta = tk.deltas[side]
        if delta is None:
            return None
        conn = self.sides[side].conn
        info = tk.sql(side).info
        query = _pending_sql(info, *delta)
        out: set[Key] = set()
        for i in range(0, len(keys), LOOKUP_BATCH):
            batch = keys[i : i + LOOKUP_BATCH]
            params = [[k[j] for k in batch] for j in range(len(info.key))]
            try:
                rows = conn.execute(query, [*params, before, self.cfg.delta_target]).fetchall()
            except psycopg.errors.UndefinedColumn:  # Bucardo keyed the table differently
                return None
            out.update(key_of(r, len(info.key)) for r in rows)
        return out

    def wait_for_mark(self, timeout_s: float, kick: Callable[[], object] | None) -> bool:
        """Until every change of a followed key logged before now (each side's own clock) is
        replicated; False when `timeout_s` passed first (the keys stay in flight). `kick` is
        called once if it takes longer than KICK_AFTER_S."""
        marks = [side.now() for side in self.sides]
        started = time.monotonic()
        kicked = kick is None
        while True:
            waiting = 0
            for tk in self.tables.values():
                keys = tk.pending()
                for side in (0, 1):
                    if keys:
                        found = self._pending_deltas(side, tk, keys, marks[side])
                        waiting += len(found) if found is not None else 0
            if not waiting:
                return True
            elapsed = time.monotonic() - started
            if elapsed >= timeout_s:
                return False
            if not kicked and elapsed >= KICK_AFTER_S:
                kicked = True
                kick()
            time.sleep(MARK_POLL_S)

    def _read_side(self, side: int, tk: TableKeys, keys: list[Key]):
        return lookup(self.sides[side], tk.sql(side), keys), self._pending_deltas(side, tk, keys)

    def observe(self, *, after_mark: bool = True) -> None:
        """Read every pending key again on both sides and classify it (`after_mark`: Bucardo
        has replicated their changes logged before this round, so an unchanged difference with
        nothing pending counts towards *different*)."""
        for tk in self.tables.values():
            keys = tk.pending()
            if not keys:
                continue
            (ha, pa), (hb, pb) = self.both(
                lambda tk=tk, keys=keys: self._read_side(0, tk, keys),
                lambda tk=tk, keys=keys: self._read_side(1, tk, keys),
            )
            for key in keys:
                st = tk.keys[key]
                now = (ha.get(key), hb.get(key))
                if now[0] == now[1]:
                    st.verdict, st.how = "in flight", "equal when read again"
                    continue
                pending = pa is None or pb is None or key in pa or key in pb
                if pa is not None and pb is not None and (key in pa) != (key in pb):
                    st.changed_on = st.lock_side = 0 if key in pa else 1
                if pending or now != st.seen:
                    st.in_flight_rounds += 1
                    st.stable_rounds = 0
                elif after_mark:
                    st.stable_rounds += 1
                    if st.stable_rounds >= STABLE_ROUNDS:
                        st.verdict, st.how = "different", "unchanged, nothing pending in Bucardo"
                        if self.first_different_at is None:
                            self.first_different_at = time.monotonic()
                st.seen = now

    def hot(self) -> dict[str, list[Key]]:
        """Keys still moving after a round: changed or pending in two observations."""
        return {
            name: [k for k in tk.pending() if tk.keys[k].in_flight_rounds >= 2]
            for name, tk in self.tables.items()
        }

    def hold_and_match(self, hot: dict[str, list[Key]], deadline: float) -> None:
        """Hot keys: held FOR SHARE on one side while the other side catches up (each key on
        one side per round)."""
        by_side = [
            {
                name: [k for k in keys if self.tables[name].keys[k].lock_side == side][
                    :HOT_KEYS_PER_ROUND
                ]
                for name, keys in hot.items()
            }
            for side in (0, 1)
        ]
        for side, groups in enumerate(by_side):
            groups = {n: ks for n, ks in groups.items() if ks}
            if groups and time.monotonic() < deadline:
                try:
                    self._hold(side, groups, deadline)
                except psycopg.OperationalError:  # e.g. the server ended a hold this process
                    self._reopen_locker(side)  # stalled in: the keys are tried again later

    def _reopen_locker(self, side: int) -> None:
        self.lockers[side].close()
        self.lockers[side] = self._open_locker(side)

    def _between_sync_runs(self) -> None:
        """Wait (briefly) for the sync run in progress to end: a run that starts after the rows
        are held carries their last change, so the hold is about one run long."""
        until = time.monotonic() + ALIGN_S
        with connect(self.cfg.control, application_name="runbook_bucardo_verify") as control:
            while time.monotonic() < until:
                running = control.execute(
                    "SELECT count(*) AS n FROM bucardo.syncrun WHERE sync = %s AND ended IS NULL",
                    [self.cfg.sync],
                ).fetchone()["n"]
                if not running:
                    return
                time.sleep(POLL_S)

    def _hold(self, side: int, groups: dict[str, list[Key]], deadline: float) -> None:
        locker, other = self.lockers[side], self.sides[1 - side]
        held: dict[str, dict[Key, int]] = {}
        self._between_sync_runs()
        started = time.monotonic()  # from the first row locked to the commit that frees them
        until = min(started + HOLD_S, deadline)
        with locker.conn.transaction():
            for name, keys in groups.items():
                held[name] = lookup(locker, self.tables[name].sql(side), keys, lock=True)
            self.locks_held += sum(len(h) for h in held.values())
            while any(held.values()) and time.monotonic() < until:
                for name, rows in held.items():
                    if rows and time.monotonic() < until:
                        self._match(name, rows, other, side)
                if any(held.values()):
                    time.sleep(POLL_S)
        self.longest_hold_s = max(self.longest_hold_s, time.monotonic() - started)
        for name, keys in groups.items():
            for key in keys:
                st = self.tables[name].keys[key]
                if st.verdict == "pending" and st.changed_on is None:
                    st.lock_side = 1 - side  # no side known to change it: try the other

    def _match(self, name: str, rows: dict[Key, int], other: Side, side: int) -> None:
        """Held keys whose row on the other side now hashes the same: proven."""
        tk = self.tables[name]
        current = lookup(other, tk.sql(1 - side), list(rows))
        for key in [k for k, h in rows.items() if current.get(k) == h]:
            st = tk.keys[key]
            st.verdict = "in flight"
            st.how = f"equal while held still on {self.labels[side]}"
            del rows[key]


def follow_until_proven(
    tracker: KeyTracker, deadline: float, kick: Callable[[], object] | None
) -> int:
    """Rounds until every key is classified or the deadline passes; returns the rounds run."""
    tracker.observe(after_mark=False)  # what has landed since the first pass is proven now
    rounds = 0
    while tracker.pending_count() and time.monotonic() < deadline:
        if tracker.first_different_at is not None:
            deadline = min(deadline, tracker.first_different_at + DIFFERENT_GRACE_S)
        rounds += 1
        tracker.wait_for_mark(min(ROUND_WAIT_S, deadline - time.monotonic()), kick)
        tracker.observe()
        hot = tracker.hot()
        if tracker.hold and any(hot.values()):
            tracker.hold_and_match(hot, deadline)
    return rounds
