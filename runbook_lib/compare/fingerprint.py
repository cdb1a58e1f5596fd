"""The SQL of a comparison, for one table on one side: row hashes, chunk fingerprints, key ranges.

A chunk's fingerprint is `count(*)` and the sum of 64-bit row hashes over its rows: order does
not matter, so no sort and constant memory. A chunk is a key range (`Range`, read through the key's
index) or a hash bucket (`Bucket`: the rows whose key hash is `residue` modulo `modulus`, read by
one sequential pass whatever the heap's order, in block-range slices). Two row hashes exist:

- fast (same major version): a chain of typed hashes, each column's value hashed with the hash
  of the columns before it as its seed (`STEPS`: bigints as both halves, floats with the sign of
  zero, timestamptz as microseconds; numeric, jsonb, enums, arrays and every other type whose
  own hash is looser than its text as text, under "C"). Each step mixes non-linearly, so values
  swapped between rows or columns change the sum; a NULL hashes as a fixed value with another
  seed. No record is built per row (hash_record_extended(ROW(...)) cost 15 % more on the bench's
  6-column table); text output is most of what is left (jsonb's is half of the jsonb table's).
- portable (any versions, or on request): the first 64 bits of `md5(ROW(...)::text)`, floats as
  their IEEE bits, under the session settings pinned in `session.py`.

Both treat two values as equal exactly when they print alike under those settings (numeric 1.0
and 1.00 differ, -0.0 and 0.0 differ, jsonb key order and spacing do not count as jsonb itself
drops them, timestamptz is an instant), NULL differs from every value.

Key values travel as text and come back cast to the key column's type on each side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from psycopg import sql

from runbook_lib.compare.keys import TableInfo

Key = tuple[str, ...]
POSITIVE = 9223372036854775807  # key hashes are masked to non-negative bigints
INT_KEYS = frozenset((("int", "smallint"), ("int", "integer"), ("int8", "bigint")))
EPOCH = "'2000-01-01 00:00:00+00'::pg_catalog.timestamptz"

# kind -> (value when NULL, step: the hash of value {v} seeded with {h}); a column's kind comes
# from keys.HASH_KINDS. A nullable column's NULL hashes as that value with another seed.
STEPS = {
    # hashint8extended folds the halves together (0 and 4294967297 hash alike): both halves
    "int8": ("0", "pg_catalog.hashint8extended({v} >> 32, pg_catalog.hashint8extended({v}, {h}))"),
    "int": ("0", "pg_catalog.hashint4extended({v}, {h})"),
    "bool": ("false", "pg_catalog.hashint4extended({v}::pg_catalog.int4, {h})"),
    "float": ("0", "pg_catalog.hashfloat8extended({v}, {h})"),  # -0.0: seed flags
    "timestamp": (
        "'2000-01-01'::pg_catalog.timestamp",
        "pg_catalog.timestamp_hash_extended({v}, {h})",
    ),
    # microseconds since 2000 (an interval's hash, as cheap as a bigint's); infinities: seed flags
    "timestamptz": (EPOCH, f"pg_catalog.interval_hash_extended({{v}} - {EPOCH}, {{h}})"),
    "uuid": (
        "'00000000-0000-0000-0000-000000000000'::pg_catalog.uuid",
        "pg_catalog.uuid_hash_extended({v}, {h})",
    ),
    "text": ("''", "pg_catalog.hashtextextended({v}, {h})"),
    # an enum by its label's position among the labels both sides have (sorted); another label
    # (added since the comparison began) by its text's hash
    "enum": ("0", "pg_catalog.hashint8extended({v}, {h})"),
}
# Types hashed through their own hash function, reached as an array of one element (an array's
# hash ignores the seed for a NULL element: NULL is replaced by a value here too).
RAW_NULLS = {
    "oid": "0",
    "date": "'2000-01-01'",
    "time": "'00:00'",
    "timetz": "'00:00+00'",
    "bytea": "''",
    "inet": "'0.0.0.0'",
    "cidr": "'0.0.0.0/0'",
    "macaddr": "'00:00:00:00:00:00'",
    "macaddr8": "'00:00:00:00:00:00:00:00'",
}
STEPS |= {
    kind: (
        f"{null}::pg_catalog.{kind}",
        f"pg_catalog.hash_array_extended(ARRAY[{{v}}::pg_catalog.{kind}], {{h}})",
    )
    for kind, null in RAW_NULLS.items()
}


_SEED = sql.SQL("")  # where a step takes the hash of the columns before it


def _seed_constant(column: int, flag: int) -> sql.Composable:
    """A fixed 64-bit constant per column and flag (splitmix64), XORed into the seed."""
    x = (column * 4 + flag + 1) * 0x9E3779B97F4A7C15 % 2**64
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 % 2**64
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB % 2**64
    x ^= x >> 31
    return sql.SQL("({})::pg_catalog.int8").format(sql.SQL(str(x - 2**64 if x >= 2**63 else x)))


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
    hashing: dict[str, str]  # column -> its kind in STEPS (agreed by both sides)
    portable: bool

    # ----- pieces
    @property
    def relation(self) -> sql.Composable:
        only = sql.SQL("ONLY ") if self.info.relkind == "r" else sql.SQL("")
        return only + sql.Identifier(self.info.schema, self.info.name)

    def _col(self, name: str) -> sql.Composable:
        return sql.SQL("t.") + sql.Identifier(name)

    def _portable_row(self, columns: Sequence[str]) -> sql.Composable:
        """ROW(...) of the columns as the portable hash renders them: floats as their bits."""
        exprs: list[sql.Composable] = []
        for name in columns:
            col = self._col(name)
            if self.hashing[name] == "float":
                func = "float4send" if self.info.column(name).type == "real" else "float8send"
                col = sql.SQL("pg_catalog.{}({})").format(sql.SQL(func), col)
            exprs.append(col)
        return sql.SQL("ROW({})").format(sql.SQL(", ").join(exprs))

    def _text(self, name: str) -> sql.Composable:
        return sql.SQL('({})::pg_catalog.text COLLATE pg_catalog."C"').format(self._col(name))

    def _seed_flags(self, index: int, name: str) -> sql.Composable | None:
        """What the value alone does not tell, as a constant XORed into the seed (or None): NULL,
        a zero float's sign, an infinite timestamptz's sign."""
        col, kind = self._col(name), self.hashing[name]
        cases = []
        if not self.info.column(name).not_null:
            cases.append(sql.SQL("WHEN {} IS NULL THEN {}").format(col, _seed_constant(index, 0)))
        if kind == "float":
            cases.append(sql.SQL("WHEN {c} <> 0 THEN 0 WHEN {c}::pg_catalog.text = '-0' THEN {k}")
                         .format(c=col, k=_seed_constant(index, 1)))  # fmt: skip
        if kind == "timestamptz":
            epoch = sql.SQL(EPOCH)
            cases.append(sql.SQL("WHEN pg_catalog.isfinite({}) THEN 0").format(col))
            cases.append(
                sql.SQL("WHEN {} > {} THEN {}").format(col, epoch, _seed_constant(index, 1))
            )
            cases.append(
                sql.SQL("WHEN {} < {} THEN {}").format(col, epoch, _seed_constant(index, 2))
            )
        if not cases:
            return None
        return sql.SQL("CASE {} ELSE 0 END").format(sql.SQL(" ").join(cases))

    def _enum_position(self, name: str) -> sql.Composable:
        column = self.info.column(name)
        assert column.labels is not None
        cases = [
            sql.SQL("WHEN {}::{} THEN {}").format(
                sql.Literal(label), sql.SQL(column.type), sql.SQL(str(position))
            )
            for position, label in enumerate(column.labels, start=1)
        ]
        return sql.SQL("CASE {} {} ELSE pg_catalog.hashtextextended({}, 0) END").format(
            self._col(name), sql.SQL(" ").join(cases), self._text(name)
        )

    def _steps(self, index: int, name: str) -> list[sql.Composed]:
        """How column `name` wraps the seed (the hash of the columns before it): each holds
        _SEED once, innermost first."""
        kind, column = self.hashing[name], self.info.column(name)
        steps = []
        flags = self._seed_flags(index, name)
        if flags is not None:
            steps.append(sql.SQL("({} # {})").format(_SEED, flags))
        null_value, step = STEPS[kind]
        value = self._text(name) if kind == "text" else self._col(name)
        if kind == "enum":
            value = self._enum_position(name)
        if kind == "timestamptz":  # infinities hash as the epoch, told apart by the seed
            value = sql.SQL("CASE WHEN pg_catalog.isfinite({c}) THEN {c} ELSE {e} END").format(
                c=value, e=sql.SQL(EPOCH)
            )
        elif not column.not_null:
            value = sql.SQL("coalesce({}, {})").format(value, sql.SQL(null_value))
        steps.append(sql.SQL(step).format(v=value, h=_SEED))
        return steps

    def row_hash(self) -> sql.Composable:
        if self.portable:
            row = self._portable_row(self.columns)
            return sql.SQL(
                "('x' || pg_catalog.left(pg_catalog.md5(({})::text), 16))::bit(64)::bigint"
            ).format(row)
        # the chain nests as deep as the table is wide (up to 1600 columns): composed flat,
        # as the parts before every seed, the first seed, then the parts after every seed
        before: list[list[sql.Composable]] = []
        after: list[sql.Composable] = []
        for index, name in enumerate(self.columns):
            for step in self._steps(index, name):
                parts = list(step)
                hole = next(i for i, part in enumerate(parts) if part is _SEED)
                before.append(parts[:hole])
                after.extend(parts[hole + 1 :])
        first = [part for parts in reversed(before) for part in parts]
        return sql.Composed([*first, sql.SQL("0::pg_catalog.int8"), *after])

    def key_hash(self) -> sql.Composable:
        """A non-negative bigint that depends on the key's value alone, the same on both sides:
        an integer key's extended hash; else the fast path hashes the key columns as a record
        (text for the kinds hashed as text, collatable keys under "C"), the portable path takes
        64 bits of the md5 of the key's text."""
        key = self.info.key
        mask = sql.SQL(str(POSITIVE))
        if len(key) == 1 and (self.hashing[key[0]], self.info.column(key[0]).type) in INT_KEYS:
            # hash partitioning relies on this function: it is the same in every version since 11
            return sql.SQL("(pg_catalog.hashint8extended({}, 0) & {})").format(
                self._col(key[0]), mask
            )
        if self.portable:
            row = self._portable_row(key)
            return sql.SQL(
                "(('x' || pg_catalog.left(pg_catalog.md5(({})::text), 16))::bit(64)::bigint & {})"
            ).format(row, mask)
        as_text = ("text", "enum")  # an enum's own hash is its OID's, other on each server
        parts = [self._text(k) if self.hashing[k] in as_text else self._col(k) for k in key]
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
