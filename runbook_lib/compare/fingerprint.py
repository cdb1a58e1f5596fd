"""The SQL of a comparison, for one table on one side: row hashes, chunk fingerprints, key ranges.

A chunk's fingerprint is `count(*)` and the sum of 64-bit row hashes over its rows: order does
not matter, so no sort and constant memory. A chunk is a key range (`Range`, read through the key's
index) or a hash bucket (`Bucket`: the rows whose key hashes to `residue` modulo `modulus`, read by
one sequential pass whatever the heap's order, in block-range slices). Two row hashes exist:

- fast (same major version): `hashint8extended(hash_record_extended(ROW(...), 0), 0)` over the
  columns (the outer hash mixes: the inner one is linear in the column hashes), with enums,
  json, intervals, numerics, composites and other types that hash looser than they print cast to
  text (hash_numeric() sees only the digits: 1.0 and 1.00, 5 and -5, NaN and Infinity hash alike).
- portable (any versions, or on request): the first 64 bits of `md5(ROW(...)::text)`, floats as
  their IEEE bits, under the session settings pinned in `session.py`.

Key values travel as text and come back cast to the key column's type on each side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from psycopg import sql

from runbook_lib.compare.keys import TableInfo

Key = tuple[str, ...]
POSITIVE = 9223372036854775807  # key hashes are masked to non-negative bigints
INT_KEYS = frozenset(("raw", t) for t in ("smallint", "integer", "bigint"))


@dataclass(frozen=True)
class Bucket:
    """The rows whose key hash is `residue` modulo `modulus` (a refinement to modulus m * f splits
    bucket r into the residues r, r + m, ..., r + (f - 1) * m)."""

    modulus: int
    residue: int


@dataclass(frozen=True)
class Slice:
    """Heap blocks lo <= block < hi (hi None: to the end); a TID range scan on PostgreSQL 14+."""

    lo: int = 0
    hi: int | None = None


@dataclass(frozen=True)
class Range:
    """Keys k with lo <= k < hi; None is unbounded."""

    lo: Key | None = None
    hi: Key | None = None


@dataclass(frozen=True)
class TableSQL:
    """Query builder for one table on one side, hashing `columns` (names shared by both sides)."""

    info: TableInfo
    columns: tuple[str, ...]
    hashing: dict[str, str]  # column -> 'raw' | 'float' | 'text' (agreed by both sides)
    portable: bool

    # ----- pieces
    @property
    def relation(self) -> sql.Composable:
        only = sql.SQL("ONLY ") if self.info.relkind == "r" else sql.SQL("")
        return only + sql.Identifier(self.info.schema, self.info.name)

    def _col(self, name: str) -> sql.Composable:
        return sql.SQL("t.") + sql.Identifier(name)

    def _value_exprs(self, columns: Sequence[str] | None = None) -> list[sql.Composable]:
        exprs: list[sql.Composable] = []
        for name in self.columns if columns is None else columns:
            col, how = self._col(name), self.hashing[name]
            if self.portable:
                if how == "float":
                    func = "float4send" if self.info.column(name).type == "real" else "float8send"
                    col = sql.SQL("pg_catalog.{}({})").format(sql.SQL(func), col)
                exprs.append(col)
            elif how in ("raw", "float"):
                exprs.append(col)
            else:
                exprs.append(col + sql.SQL("::text"))
        return exprs

    def row_hash(self) -> sql.Composable:
        row = sql.SQL("ROW({})").format(sql.SQL(", ").join(self._value_exprs()))
        if self.portable:
            return sql.SQL(
                "('x' || pg_catalog.left(pg_catalog.md5(({})::text), 16))::bit(64)::bigint"
            ).format(row)
        # hash_record_extended combines column hashes linearly, so a plain sum would not see
        # values swapped between rows; hashing the row hash again mixes it non-linearly.
        return sql.SQL(
            "pg_catalog.hashint8extended(pg_catalog.hash_record_extended({}, 0), 0)"
        ).format(row)

    def key_hash(self) -> sql.Composable:
        """A non-negative bigint that depends on the key's value alone, the same on both sides:
        an integer key's extended hash; else the fast path hashes as the row hash does (text for
        looser types, collatable keys under "C"), the portable path takes 64 bits of the md5 of
        the key's text."""
        key = self.info.key
        mask = sql.SQL(str(POSITIVE))
        if len(key) == 1 and (self.hashing[key[0]], self.info.column(key[0]).type) in INT_KEYS:
            # hash partitioning relies on this function: it is the same in every version since 11
            return sql.SQL("(pg_catalog.hashint8extended({}, 0) & {})").format(
                self._col(key[0]), mask
            )
        if self.portable:
            row = sql.SQL("ROW({})").format(sql.SQL(", ").join(self._value_exprs(key)))
            return sql.SQL(
                "(('x' || pg_catalog.left(pg_catalog.md5(({})::text), 16))::bit(64)::bigint & {})"
            ).format(row, mask)
        parts = []
        for name in key:
            col = self._col(name)
            if self.hashing[name] not in ("raw", "float"):
                col = col + sql.SQL("::text")
            elif self.info.column(name).collation is not None:
                col = col + sql.SQL(' COLLATE "C"')
            parts.append(col)
        return sql.SQL("(pg_catalog.hash_record_extended(ROW({}), 0) & {})").format(
            sql.SQL(", ").join(parts), mask
        )

    def _bucket(self, modulus: int) -> sql.Composable:
        return sql.SQL("pg_catalog.mod({}, {})").format(self.key_hash(), sql.Literal(modulus))

    def _slice_where(self, part: Slice) -> sql.Composable:
        def tid(block: int) -> sql.Composable:
            return sql.SQL("{}::pg_catalog.tid").format(sql.Literal(f"({block},0)"))

        conds = []
        if part.lo:
            conds.append(sql.SQL("t.ctid >= {}").format(tid(part.lo)))
        if part.hi is not None:
            conds.append(sql.SQL("t.ctid < {}").format(tid(part.hi)))
        return sql.SQL(" AND ").join(conds) if conds else sql.SQL("true")

    def _in_buckets(self, modulus: int, residues: Sequence[int] | None, params: list):
        if residues is None:
            return sql.SQL("true")
        params.append(list(residues))
        return sql.SQL("{} = ANY(%s::bigint[])").format(self._bucket(modulus))

    def _key_expr(self) -> sql.Composable:
        cols = [self._col(k) for k in self.info.key]
        if len(cols) == 1:
            return cols[0]
        return sql.SQL("ROW({})").format(sql.SQL(", ").join(cols))

    def _key_texts(self) -> sql.Composable:
        return sql.SQL(", ").join(
            sql.SQL("{}::text AS {}").format(self._col(k), sql.Identifier(f"k{i}"))
            for i, k in enumerate(self.info.key)
        )

    def _literal_key(self, key: Key, params: list | None) -> sql.Composable:
        """A key value cast to the key's type: bound when `params` is a list, else inlined
        (quoted by sql.Literal) so the planner folds it into a constant."""
        parts = []
        for name, value in zip(self.info.key, key, strict=True):
            cast = sql.SQL(self.info.column(name).type)
            if params is None:
                parts.append(sql.SQL("{}::{}").format(sql.Literal(value), cast))
                continue
            params.append(value)
            parts.append(sql.SQL("%s::{}").format(cast))
        if len(parts) == 1:
            return parts[0]
        return sql.SQL("ROW({})").format(sql.SQL(", ").join(parts))

    def _where(self, rng: Range, params: list) -> sql.Composable:
        conds: list[sql.Composable] = []
        key = self._key_expr()
        if rng.lo is not None:
            conds.append(sql.SQL("{} >= {}").format(key, self._literal_key(rng.lo, params)))
        if rng.hi is not None:
            conds.append(sql.SQL("{} < {}").format(key, self._literal_key(rng.hi, params)))
        return sql.SQL(" AND ").join(conds) if conds else sql.SQL("true")

    # ----- queries: each returns (query, params)
    def fingerprint(self, rng: Range = Range()) -> tuple[sql.Composable, list]:
        params: list = []
        where = self._where(rng, params)
        query = sql.SQL(
            "SELECT count(*) AS n, coalesce(sum({h}), 0) AS s FROM {rel} t WHERE {where}"
        ).format(h=self.row_hash(), rel=self.relation, where=where)
        return query, params

    def total(self, part: Slice = Slice()) -> tuple[sql.Composable, list]:
        """The fingerprint of every row in the slice: the least a proof of equality reads."""
        query = sql.SQL(
            "SELECT count(*) AS n, coalesce(sum({h}), 0) AS s FROM {rel} t WHERE {where}"
        ).format(h=self.row_hash(), rel=self.relation, where=self._slice_where(part))
        return query, []

    def bucket_prints(
        self,
        modulus: int,
        part: Slice = Slice(),
        within: tuple[int, Sequence[int]] | None = None,
    ) -> tuple[sql.Composable, list]:
        """Fingerprints of the buckets modulo `modulus` that have rows in the slice, as b, n, s;
        `within` (m, residues): only the rows of those buckets modulo m."""
        params: list = []
        inside = self._in_buckets(*within, params) if within else sql.SQL("true")
        query = sql.SQL(
            "SELECT {b} AS b, count(*) AS n, coalesce(sum({h}), 0) AS s FROM {rel} t "
            "WHERE {part} AND {inside} GROUP BY 1"
        ).format(
            b=self._bucket(modulus),
            h=self.row_hash(),
            rel=self.relation,
            part=self._slice_where(part),
            inside=inside,
        )
        return query, params

    def bucket_rows(
        self, modulus: int, residues: Sequence[int], part: Slice = Slice()
    ) -> tuple[sql.Composable, list]:
        """(bucket b, key as text, row hash h) of every row of these buckets in the slice."""
        params: list = []
        inside = self._in_buckets(modulus, residues, params)
        query = sql.SQL(
            "SELECT {b} AS b, {keys}, {h} AS h FROM {rel} t WHERE {part} AND {inside}"
        ).format(
            b=self._bucket(modulus),
            keys=self._key_texts(),
            h=self.row_hash(),
            rel=self.relation,
            part=self._slice_where(part),
            inside=inside,
        )
        return query, params

    def lookup(self, keys: Sequence[Key]) -> tuple[sql.Composable, list]:
        """(key as text, row hash) of the rows with these keys (those that exist)."""
        params: list = [[k[i] for k in keys] for i in range(len(self.info.key))]
        arrays = sql.SQL(", ").join(sql.SQL("%s::text[]") for _ in self.info.key)
        names = sql.SQL(", ").join(sql.Identifier(f"u{i}") for i in range(len(self.info.key)))
        join = sql.SQL(" AND ").join(
            sql.SQL("{} = u.{}::{}").format(
                self._col(k), sql.Identifier(f"u{i}"), sql.SQL(self.info.column(k).type)
            )
            for i, k in enumerate(self.info.key)
        )
        query = sql.SQL(
            "SELECT {keys}, {h} AS h FROM {rel} t JOIN unnest({arrays}) AS u({names}) ON {join}"
        ).format(
            keys=self._key_texts(),
            h=self.row_hash(),
            rel=self.relation,
            arrays=arrays,
            names=names,
            join=join,
        )
        return query, params


def key_of(row: dict, width: int) -> Key:
    return tuple(row[f"k{i}"] for i in range(width))
