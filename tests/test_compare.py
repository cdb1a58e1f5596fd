"""The verification engine against real servers: `here` holds cmp_a, `there` holds cmp_b."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from psycopg import sql

from runbook_lib.compare import (
    DataMismatch,
    compare_databases,
    endpoint_from_conninfo,
    list_tables,
    row_counts,
)
from runbook_lib.connection import Endpoint, connect
from runbook_lib.errors import ConfigurationError

DB_A, DB_B = "cmp_a", "cmp_b"


def _recreate(server: Endpoint, dbname: str) -> Endpoint:
    with connect(server.with_dbname("postgres")) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    return server.with_dbname(dbname)


@pytest.fixture(scope="module")
def pair(shared_lab) -> Iterator[tuple[Endpoint, Endpoint]]:
    a = _recreate(shared_lab.endpoint("here"), DB_A)
    b = _recreate(shared_lab.endpoint("there"), DB_B)
    yield a, b
    for server, dbname in (
        (shared_lab.endpoint("here"), DB_A),
        (shared_lab.endpoint("there"), DB_B),
    ):
        with connect(server) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(dbname)))


def run(endpoint: Endpoint, statements: str, *params) -> None:
    with connect(endpoint) as conn:
        conn.execute(statements, params or None)


def both(pair, statements: str) -> None:
    for endpoint in pair:
        run(endpoint, statements)


def compare(pair, schema: str, **kwargs):
    kwargs.setdefault("progress", False)
    return compare_databases(*pair, schemas=(schema,), **kwargs)


def verdicts(result) -> dict[str, str]:
    return dict(zip(result.summary["table"], result.summary["verdict"], strict=True))


def found(result) -> set[tuple[str, str, str]]:
    return set(result.differences.itertuples(index=False, name=None))


SHAPES_TEMPLATE = """
CREATE SCHEMA {s};
CREATE TYPE {s}.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE {s}.int_key (id int PRIMARY KEY, v text, m {s}.mood, j json, jb jsonb,
                             n numeric, n2 numeric(10, 2), ts timestamptz, f float8, iv interval,
                             arr int[], b bytea);
INSERT INTO {s}.int_key
SELECT g, 'v' || g, (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::{s}.mood,
       json_build_object('g', g), jsonb_build_object('g', g, 'h', 'x'), g / 7.0, g / 3.0,
       timestamptz '2024-01-01 00:00+00' + g * interval '1 hour', g / 9.0, g * interval '1 min',
       ARRAY[g, g + 1], decode(md5(g::text), 'hex')
FROM generate_series(1, 30000) g;
CREATE TABLE {s}.bigint_key (id bigint PRIMARY KEY, v text);
INSERT INTO {s}.bigint_key SELECT g::bigint * 1000000007, 'x' || g FROM generate_series(1, 5000) g;
CREATE TABLE {s}.text_key (k text PRIMARY KEY, v int);
INSERT INTO {s}.text_key SELECT 'key ' || md5(g::text), g FROM generate_series(1, 20000) g;
CREATE TABLE {s}.uuid_key (k uuid PRIMARY KEY, v int);
INSERT INTO {s}.uuid_key SELECT md5('u' || g)::uuid, g FROM generate_series(1, 20000) g;
CREATE TABLE {s}.composite_key (a int, b text, c date, v text, PRIMARY KEY (a, b, c));
INSERT INTO {s}.composite_key
SELECT g % 97, 'b' || (g % 13), date '2024-01-01' + g, 'v' || g FROM generate_series(1, 30000) g;
CREATE TABLE {s}.unique_index_only (code text NOT NULL, v int);
CREATE UNIQUE INDEX ON {s}.unique_index_only (code);
INSERT INTO {s}.unique_index_only SELECT 'c' || g, g FROM generate_series(1, 3000) g;
CREATE TABLE {s}."Mixed Case" ("Id" int PRIMARY KEY, "Value" text);
INSERT INTO {s}."Mixed Case" SELECT g, 'v' || g FROM generate_series(1, 100) g;
CREATE TABLE {s}.no_key (v text, n int);
INSERT INTO {s}.no_key SELECT 'dup', 1 FROM generate_series(1, 3) g;
CREATE TABLE {s}.empty (id int PRIMARY KEY, v text);
"""


def shapes_sql(schema: str) -> str:
    return SHAPES_TEMPLATE.replace("{s}", schema)


@pytest.fixture(scope="module")
def shapes(pair):
    both(pair, shapes_sql("shapes"))
    # the enum's labels get other OIDs on the second side: a value added in between
    run(pair[1], "ALTER TYPE shapes.mood ADD VALUE 'meh' BEFORE 'ok'")
    return pair


@pytest.mark.parametrize("portable", [False, True], ids=["fast", "portable"])
def test_identical_tables_in_every_key_shape_are_identical(shapes, portable):
    result = compare(shapes, "shapes", portable=portable, chunk_rows=4000)
    assert verdicts(result) == {t: "identical" for t in result.summary["table"]}
    assert len(result.summary) == 9
    assert result.identical
    assert result.differences.empty
    summary = result.summary.set_index("table")
    assert summary.loc["shapes.composite_key", "rows_here"] == 30000
    assert summary.loc["shapes.composite_key", "rows_there"] == 30000
    assert summary.loc["shapes.composite_key", "chunks"] > 3  # chunked, not one scan
    assert summary.loc["shapes.unique_index_only", "key"].startswith("code (unique index")
    assert "whole-table" in summary.loc["shapes.no_key", "note"]
    assert summary.loc["shapes.empty", "rows_here"] == 0
    assert summary.loc['shapes."Mixed Case"', "rows_there"] == 100
    assert set(summary["method"]) == {"md5 of text" if portable else "typed hashes"}
    result.raise_if_different()  # does not raise


CHANGES = {
    "changed.int_key": ("UPDATE changed.int_key SET jb = jb || '{\"z\": 1}' WHERE id = 12345",
                        "12345", "different"),
    "changed.bigint_key": ("UPDATE changed.bigint_key SET v = NULL WHERE id = 4000000028",
                           "4000000028", "different"),
    "changed.text_key": ("DELETE FROM changed.text_key WHERE v = 777",
                         None, "missing there"),
    "changed.uuid_key": ("UPDATE changed.uuid_key SET v = -1 WHERE k = md5('u42')::uuid",
                         "1c7082c8-4e57-6341-de71-3934775ff522", "different"),
    "changed.composite_key": ("INSERT INTO changed.composite_key VALUES (5, 'b5', '1999-1-1', '')",
                              "(5, b5, 1999-01-01)", "missing here"),
    "changed.unique_index_only": ("UPDATE changed.unique_index_only SET v = 0 WHERE code = 'c99'",
                                  "c99", "different"),
    'changed."Mixed Case"': ("""DELETE FROM changed."Mixed Case" WHERE "Id" = 100""",
                             "100", "missing there"),
    "changed.no_key": ("DELETE FROM changed.no_key WHERE ctid = '(0,1)'", None, None),
}  # fmt: skip


@pytest.fixture(scope="module")
def changed(pair):
    both(pair, shapes_sql("changed"))
    for change, _, _ in CHANGES.values():
        run(pair[1], change)
    return pair


@pytest.mark.parametrize("portable", [False, True], ids=["fast", "portable"])
def test_one_changed_row_per_table_is_found_by_key_in_every_key_shape(changed, portable):
    result = compare(changed, "changed", portable=portable, chunk_rows=4000)
    assert not result.identical
    expected = {t: "different" for t in CHANGES} | {"changed.empty": "identical"}
    assert verdicts(result) == expected
    listed = result.differences.groupby("table")
    for table, (_, key, kind) in CHANGES.items():
        if kind is None:  # no key: the table is different, rows cannot be listed
            assert table not in listed.groups
            continue
        rows = listed.get_group(table)
        assert list(rows["kind"]) == [kind], table
        if key is not None:
            assert list(rows["key"]) == [key], table
    text_key = listed.get_group("changed.text_key")["key"].iloc[0]
    with connect(changed[0]) as conn:
        assert conn.execute(
            "SELECT v FROM changed.text_key WHERE k = %s", [text_key]
        ).fetchone() == {"v": 777}


@pytest.fixture(scope="module")
def million(pair):
    both(pair, """
        CREATE SCHEMA big;
        CREATE TABLE big.t (id int PRIMARY KEY, a int NOT NULL, b text);
        INSERT INTO big.t SELECT g, g % 1000, 'row ' || g FROM generate_series(1, 1000000) g;
    """)  # fmt: skip
    both(pair, "VACUUM ANALYZE big.t")
    return pair


def test_one_changed_value_in_a_million_rows_is_found_by_key(million):
    run(million[1], "UPDATE big.t SET a = a + 1 WHERE id = 654321")
    try:
        result = compare(million, "big")
    finally:
        run(million[1], "UPDATE big.t SET a = a - 1 WHERE id = 654321")
    assert found(result) == {("big.t", "654321", "different")}
    row = result.summary.iloc[0]
    assert (row["rows_here"], row["rows_there"], row["chunks_different"]) == (1000000, 1000000, 1)
    assert row["chunks"] >= 8
    with pytest.raises(DataMismatch, match=r"big\.t: different \(keys 654321\)"):
        result.raise_if_different()


def test_a_row_missing_on_either_side_is_reported_with_the_side(million):
    run(million[0], "DELETE FROM big.t WHERE id = 10")
    run(million[1], "DELETE FROM big.t WHERE id = 999999")
    try:
        result = compare(million, "big", labels=("primary", "standby"))
    finally:
        run(million[0], "INSERT INTO big.t VALUES (10, 10, 'row 10')")
        run(million[1], "INSERT INTO big.t VALUES (999999, 999, 'row 999999')")
    assert found(result) == {
        ("big.t", "10", "missing primary"),
        ("big.t", "999999", "missing standby"),
    }
    assert list(result.summary.columns[1:3]) == ["rows_primary", "rows_standby"]
    assert compare(million, "big").identical  # restored


def test_null_empty_string_and_the_text_null_are_all_different(pair):
    both(pair, "CREATE SCHEMA nulls; CREATE TABLE nulls.t (id int PRIMARY KEY, v text, w text)")
    run(
        pair[0],
        "INSERT INTO nulls.t VALUES (1, NULL, 'x'), (2, '', 'x'), (3, 'NULL', 'x'),"
        " (4, NULL, NULL), (5, '', '')",
    )
    run(pair[1], "INSERT INTO nulls.t VALUES (1, '', 'x'), (2, 'NULL', 'x'), (3, NULL, 'x'),"
                 " (4, NULL, NULL), (5, '', '')")  # fmt: skip
    for portable in (False, True):
        result = compare(pair, "nulls", portable=portable)
        assert found(result) == {("nulls.t", k, "different") for k in ("1", "2", "3")}, portable


def test_numeric_scale_counts_and_timestamptz_compares_as_an_instant(pair):
    """Documented: 1.0 and 1.00 differ in an unconstrained numeric (they print differently);
    a numeric(p,s) column stores both as the same value. timestamptz is an instant: the same
    moment written in other time zones (and read by servers in other zones) is equal, while a
    timestamp without time zone is compared as written."""
    both(pair, """
        CREATE SCHEMA values_;
        CREATE TABLE values_.t (id int PRIMARY KEY, n numeric, n2 numeric(8, 2),
                                ts timestamptz, local_ts timestamp)
    """)  # fmt: skip
    run(pair[1], f"ALTER DATABASE {DB_B} SET timezone = 'Asia/Tokyo'")
    try:
        with connect(pair[0]) as conn:
            conn.execute("SET TimeZone = 'America/New_York'")
            conn.execute(
                "INSERT INTO values_.t VALUES (1, 1.0, 1.0, '2024-03-10 01:30', NULL),"
                " (2, 2.5, 2.5, NULL, '2024-01-01 10:00'), (3, 3, 3, NULL, NULL)"
            )
        with connect(pair[1]) as conn:
            conn.execute("SET TimeZone = 'Asia/Kolkata'")
            conn.execute(
                "INSERT INTO values_.t VALUES (1, 1.0, 1.00, '2024-03-10 12:00+05:30', NULL),"
                " (2, 2.5, 2.50, NULL, '2024-01-01 11:00'), (3, 3.00, 3, NULL, NULL)"
            )
        for portable in (False, True):
            result = compare(pair, "values_", portable=portable)
            # 1: same instant, n2 equal after the column's scale -> equal
            # 2: timestamp without time zone differs; 3: numeric 3 vs 3.00 differs
            assert found(result) == {
                ("values_.t", "2", "different"),
                ("values_.t", "3", "different"),
            }, portable
    finally:
        run(pair[1], f"ALTER DATABASE {DB_B} RESET timezone")  # fmt: skip


def test_enum_and_json_columns_compare_by_value_as_written(pair):
    """Enums compare by label (not OID); json by its text (whitespace counts, it is kept);
    jsonb by value (key order and spacing are not kept by jsonb itself)."""
    both(pair, "CREATE SCHEMA docs")
    run(pair[0], "CREATE TYPE docs.color AS ENUM ('red', 'green')")
    run(pair[1], "CREATE TYPE docs.color AS ENUM ('green', 'red')")  # other order, other OIDs
    both(pair, "CREATE TABLE docs.t (id int PRIMARY KEY, c docs.color, j json, jb jsonb)")
    run(
        pair[0],
        """INSERT INTO docs.t VALUES (1, 'red', '{"a": 1}', '{"a": 1, "b": 2}'),
                    (2, 'green', '{"a": 1}', '{"a": 1}'), (3, 'red', '[1,2]', '[1, 2]')""",
    )
    run(
        pair[1],
        """INSERT INTO docs.t VALUES (1, 'red', '{"a": 1}', '{"b": 2,   "a": 1}'),
                    (2, 'green', '{"a":1}', '{"a": 1}'), (3, 'green', '[1,2]', '[1, 2]')""",
    )
    for portable in (False, True):
        result = compare(pair, "docs", portable=portable)
        assert found(result) == {("docs.t", "2", "different"), ("docs.t", "3", "different")}


def test_a_table_on_one_side_only_is_reported_not_a_crash(pair):
    both(pair, "CREATE SCHEMA lonely; CREATE TABLE lonely.shared (id int PRIMARY KEY)")
    run(
        pair[0],
        "CREATE TABLE lonely.only_here (id int PRIMARY KEY); "
        "INSERT INTO lonely.only_here VALUES (1), (2)",
    )
    run(pair[1], "CREATE TABLE lonely.only_there (id int PRIMARY KEY)")  # fmt: skip
    result = compare(pair, "lonely")
    assert verdicts(result) == {
        "lonely.shared": "identical",
        "lonely.only_here": "missing there",
        "lonely.only_there": "missing here",
    }
    summary = result.summary.set_index("table")
    assert summary.loc["lonely.only_here", "rows_here"] == 2
    assert pd.isna(summary.loc["lonely.only_here", "rows_there"])
    with pytest.raises(DataMismatch, match="only_here: missing there"):
        result.raise_if_different()
    with pytest.raises(ConfigurationError, match="on either side"):
        compare(pair, "lonely", tables=["lonely.nowhere"])


def test_a_column_on_one_side_only_makes_the_table_different(pair):
    both(pair, "CREATE SCHEMA cols")
    run(
        pair[0], "CREATE TABLE cols.t (id int PRIMARY KEY, v int); INSERT INTO cols.t VALUES (1, 1)"
    )
    run(pair[1], "CREATE TABLE cols.t (id int PRIMARY KEY, v int, extra text); "
                 "INSERT INTO cols.t VALUES (1, 1, NULL)")  # fmt: skip
    result = compare(pair, "cols")
    assert verdicts(result) == {"cols.t": "different"}
    assert "columns only there: extra" in result.summary["note"].iloc[0]
    assert result.differences.empty  # the shared columns agree


def test_differences_beyond_max_keys_are_counted_not_listed(pair):
    both(pair, "CREATE SCHEMA many; CREATE TABLE many.t (id int PRIMARY KEY, v int)")
    run(pair[0], "INSERT INTO many.t SELECT g, g FROM generate_series(1, 50000) g")
    run(
        pair[1],
        "INSERT INTO many.t SELECT g, g FROM generate_series(1, 50000) g WHERE g % 100 <> 0",
    )
    result = compare(pair, "many", max_keys=7, chunk_rows=5000)
    row = result.summary.iloc[0]
    assert (row["verdict"], row["differing_keys"], bool(row["more_keys"])) == ("different", 7, True)
    assert len(result.differences) == 7
    assert set(result.differences["kind"]) == {"missing there"}
    assert all(int(k) % 100 == 0 for k in result.differences["key"])
    assert row["rows_here"] - row["rows_there"] == 500


def test_settle_is_called_once_and_only_persisting_differences_are_reported(pair):
    both(pair, "CREATE SCHEMA live; CREATE TABLE live.t (id int PRIMARY KEY, v text)")
    run(pair[0], "INSERT INTO live.t SELECT g, 'v' || g FROM generate_series(1, 20000) g")
    run(
        pair[1],
        "INSERT INTO live.t SELECT g, 'v' || g FROM generate_series(1, 20000) g "
        "WHERE g NOT IN (5, 6, 15000)",
    )
    run(pair[1], "UPDATE live.t SET v = 'stale' WHERE id IN (7, 16000)")  # fmt: skip
    calls = []

    def settle():  # replication catches up on everything but key 15000 and 16000
        calls.append(1)
        run(pair[1], "INSERT INTO live.t VALUES (5, 'v5'), (6, 'v6'); "
                     "UPDATE live.t SET v = 'v7' WHERE id = 7")  # fmt: skip

    result = compare(pair, "live", settle=settle, chunk_rows=5000)
    assert calls == [1]
    assert found(result) == {("live.t", "15000", "missing there"), ("live.t", "16000", "different")}
    assert "settled" in result.read_at
    assert result.read_at["here"]["started"] <= result.read_at["settled"]["here"]
    assert result.summary.iloc[0]["rows_there"] == 19999  # counted again after settling

    run(pair[1], "INSERT INTO live.t VALUES (15000, 'v15000'); "
                 "UPDATE live.t SET v = 'v16000' WHERE id = 16000")  # fmt: skip
    calls.clear()
    assert compare(pair, "live", settle=settle).identical
    assert calls == []  # nothing differed: no need to wait


def test_row_counts_are_exact_on_both_sides_with_the_estimate(million):
    run(million[1], "DELETE FROM big.t WHERE id > 999990")
    try:
        counts = row_counts(*million, ["big.t"], labels=("a", "b"))
    finally:
        run(million[1], "INSERT INTO big.t SELECT g, g % 1000, 'row ' || g "
                        "FROM generate_series(999991, 1000000) g")  # fmt: skip
    assert list(counts.columns) == [
        "table",
        "rows_a",
        "rows_b",
        "difference",
        "match",
        "estimate_a",
    ]
    row = counts.iloc[0]
    assert (row["rows_a"], row["rows_b"], row["difference"], bool(row["match"])) == (
        1000000, 999990, 10, False,
    )  # fmt: skip
    assert row["estimate_a"] == 1000000  # analyzed after loading


def test_list_tables_quotes_mixed_case_names(shapes):
    names = list_tables(shapes[0], ["shapes"])
    assert 'shapes."Mixed Case"' in names
    assert "shapes.int_key" in names
    result = compare(shapes, "shapes", tables=['shapes."Mixed Case"', "SHAPES.Int_Key"])
    assert list(result.summary["table"]) == ['shapes."Mixed Case"', "shapes.int_key"]


def test_cli_exit_status_and_output_never_show_the_password(pair, capsys):
    from runbook_lib.cli import main

    both(pair, "CREATE SCHEMA cli; CREATE TABLE cli.t (id int PRIMARY KEY, v int)")
    a, b = pair
    conninfo_a = f"host={a.host} port={a.port} dbname={a.dbname} user={a.user}"
    conninfo_b = f"postgresql://{b.user}@{b.host}:{b.port}/{b.dbname}"
    args = [conninfo_a, conninfo_b, "--schemas", "cli", "--no-progress"]
    assert main(["compare", *args]) == 0
    run(b, "INSERT INTO cli.t VALUES (42, 1)")
    assert main(["compare", *args, "--max-keys", "3"]) == 1
    out = capsys.readouterr()
    assert "42" in out.out and "missing a" in out.out
    broken = f"host={a.host} port=1 dbname=x user={a.user}"
    assert main(["compare", broken, conninfo_b, "--no-progress"]) == 2
    assert "cannot connect" in capsys.readouterr().err
    assert "s3cr3t" not in repr(endpoint_from_conninfo(conninfo_a)) + str(
        endpoint_from_conninfo(conninfo_a)
    )
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--help"])
    assert exc.value.code == 0
    assert "runbook compare" in capsys.readouterr().out


@pytest.mark.parametrize(
    "conninfo",
    ["host=127.0.0.1 port=1 dbname=x password=s3cr3t", "postgresql://u:s3cr3t@127.0.0.1:1/x"],
)
def test_cli_refuses_a_password_on_its_command_line_without_echoing_it(conninfo, capsys):
    from runbook_lib.cli import main
    from runbook_lib.params import secret_refusal

    assert main(["compare", conninfo, "host=127.0.0.1 port=1", "--no-progress"]) == 2
    out = capsys.readouterr()
    assert secret_refusal("CONNINFO_A") in out.err
    assert "s3cr3t" not in out.out + out.err


def test_endpoint_from_a_service_name_uses_the_service(tmp_path, monkeypatch, pair):
    a = pair[0]
    (tmp_path / "pg_service.conf").write_text(
        f"[cmp_here]\nhost={a.host}\nport={a.port}\ndbname={a.dbname}\nuser={a.user}\n"
    )
    monkeypatch.setenv("PGSERVICEFILE", str(tmp_path / "pg_service.conf"))
    endpoint = endpoint_from_conninfo("cmp_here")
    assert "service=cmp_here" in str(endpoint)
    assert endpoint.libpq_env() == {"PGSERVICE": "cmp_here"}
    with_password = endpoint_from_conninfo("service=cmp_here password=s3cr3t sslmode=disable")
    assert with_password.libpq_env()["PGPASSWORD"] == "s3cr3t"  # env only, never argv or str
    assert "s3cr3t" not in str(with_password) + repr(with_password)
    with connect(endpoint) as conn:
        assert conn.execute("SELECT current_database() AS d").fetchone() == {"d": DB_A}


def test_bad_arguments_raise_configuration_error(pair):
    with pytest.raises(ConfigurationError, match="max_keys"):
        compare(pair, "public", max_keys=0)
    with pytest.raises(ConfigurationError, match="labels"):
        compare(pair, "public", labels=("x", "x"))
    with pytest.raises(ConfigurationError, match="not a number"):
        endpoint_from_conninfo("host=a port=abc")
    with pytest.raises(ConfigurationError, match="cannot read connection string") as exc:
        endpoint_from_conninfo("host='db1 password=s3cr3t")
    assert "s3cr3t" not in str(exc.value)


def test_partitioned_table_is_compared_whole_and_its_partitions_are_not_listed(pair):
    both(pair, """
        CREATE SCHEMA parts;
        CREATE TABLE parts.events (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
        CREATE TABLE parts.events_low PARTITION OF parts.events FOR VALUES FROM (0) TO (5000);
        CREATE TABLE parts.events_high PARTITION OF parts.events FOR VALUES FROM (5000) TO (20000);
        INSERT INTO parts.events SELECT g, 'v' || g FROM generate_series(1, 12000) g;
    """)  # fmt: skip
    run(pair[1], "UPDATE parts.events SET v = 'x' WHERE id = 7000")
    assert list_tables(pair[0], ["parts"]) == ["parts.events"]
    result = compare(pair, "parts", chunk_rows=3000)
    assert found(result) == {("parts.events", "7000", "different")}
    assert result.summary.iloc[0]["rows_here"] == 12000
    assert result.summary.iloc[0]["chunks"] > 1


def test_a_role_that_may_only_select_can_compare(pair, tmp_path, monkeypatch):
    """Read-only: no writes, no temporary tables (the role may create neither)."""
    passfile = tmp_path / "pgpass"  # the lab's servers want a password from every role
    passfile.write_text(
        "127.0.0.1:*:*:cmp_reader:reader-pw\n" + Path(os.environ["PGPASSFILE"]).read_text()
    )
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    both(pair, """
        CREATE SCHEMA ro;
        CREATE TABLE ro.t (id int PRIMARY KEY, v text);
        INSERT INTO ro.t SELECT g, 'v' || g FROM generate_series(1, 5000) g;
    """)  # fmt: skip
    run(pair[1], "DELETE FROM ro.t WHERE id = 4321")
    for endpoint in pair:
        run(endpoint, "DROP ROLE IF EXISTS cmp_reader; "
            "CREATE ROLE cmp_reader LOGIN PASSWORD 'reader-pw'; "
            f"REVOKE TEMPORARY ON DATABASE {endpoint.dbname} FROM PUBLIC; "
            "GRANT USAGE ON SCHEMA ro TO cmp_reader; "
            "GRANT SELECT ON ro.t TO cmp_reader")  # fmt: skip
    readers = tuple(Endpoint(e.host, e.port, e.dbname, "cmp_reader") for e in pair)
    try:
        result = compare(readers, "ro", chunk_rows=1000)
        assert found(result) == {("ro.t", "4321", "missing there")}
    finally:
        for endpoint in pair:
            run(endpoint, "DROP OWNED BY cmp_reader; DROP ROLE cmp_reader; "
                f"GRANT TEMPORARY ON DATABASE {endpoint.dbname} TO PUBLIC")  # fmt: skip


def test_progress_bar_counts_chunks(pair, capsys):
    both(pair, "CREATE SCHEMA bar; CREATE TABLE bar.t (id int PRIMARY KEY)")
    both(pair, "INSERT INTO bar.t SELECT generate_series(1, 20000)")
    result = compare_databases(*pair, schemas=("bar",), progress=True, chunk_rows=2000)
    assert result.identical
    chunks = int(result.summary.iloc[0]["chunks"])
    assert chunks > 3
    assert f"{chunks}/{chunks}" in capsys.readouterr().err


@pytest.fixture(scope="module")
def shuffled(pair):
    """The same 60,000 rows, stored in key order on one side and in another order on the other."""
    both(pair, "CREATE SCHEMA shuffled; CREATE TABLE shuffled.t "
               "(id bigint PRIMARY KEY, v text, doc jsonb, n numeric, at timestamptz)")  # fmt: skip
    rows = (
        "INSERT INTO shuffled.t SELECT g, 'v' || g, jsonb_build_object('g', g), g / 7.0, "
        "timestamptz '2024-01-01 00:00+00' + g * interval '1 min' "
        "FROM generate_series(1, 60000) g ORDER BY {}"
    )
    run(pair[0], rows.format("g"))
    run(pair[1], rows.format("md5(g::text)"))
    both(pair, "VACUUM ANALYZE shuffled.t")
    return pair


def physical_order_differs(pair) -> bool:
    query = "SELECT array_agg(id) AS ids FROM (SELECT id FROM shuffled.t ORDER BY ctid LIMIT 50) s"
    with connect(pair[0]) as a, connect(pair[1]) as b:
        return a.execute(query).fetchone() != b.execute(query).fetchone()


@pytest.mark.parametrize("portable", [False, True], ids=["fast", "portable"])
def test_rows_stored_in_another_physical_order_are_identical_and_differences_exact(
    shuffled, portable
):
    assert physical_order_differs(shuffled)
    assert compare(shuffled, "shuffled", portable=portable).identical
    run(shuffled[1], "UPDATE shuffled.t SET doc = doc || '{\"x\": 1}' WHERE id IN (3, 45678); "
                     "DELETE FROM shuffled.t WHERE id = 59999; "
                     "INSERT INTO shuffled.t VALUES (70000, 'new', '{}', 1, now())")  # fmt: skip
    try:
        result = compare(shuffled, "shuffled", portable=portable)
    finally:
        run(shuffled[1], "DELETE FROM shuffled.t WHERE id IN (3, 45678, 70000); "
                         "INSERT INTO shuffled.t SELECT g, 'v' || g, jsonb_build_object('g', g), "
                         "g / 7.0, timestamptz '2024-01-01 00:00+00' + g * interval '1 min' "
                         "FROM unnest(ARRAY[3, 45678, 59999]) g")  # fmt: skip
    assert found(result) == {
        ("shuffled.t", "3", "different"),
        ("shuffled.t", "45678", "different"),
        ("shuffled.t", "59999", "missing there"),
        ("shuffled.t", "70000", "missing here"),
    }
    row = result.summary.iloc[0]
    assert (row["rows_here"], row["rows_there"]) == (60000, 60000)
    assert row["chunks_different"] == 4


def test_a_table_read_in_many_slices_is_compared_exactly(shuffled, monkeypatch):
    """Block-range slices (short statements, one pass in physical order) add up per bucket;
    big buckets are split before their keys are downloaded."""
    from runbook_lib.compare import buckets

    monkeypatch.setattr(buckets, "SLICE_PAGES", 7)
    run(shuffled[0], "UPDATE shuffled.t SET v = 'changed' WHERE id IN (1, 30000, 60000)")
    try:
        result = compare(shuffled, "shuffled", chunk_rows=20000)  # 3 buckets of ~20,000 rows
    finally:
        run(shuffled[0], "UPDATE shuffled.t SET v = 'v' || id WHERE id IN (1, 30000, 60000)")
    assert found(result) == {("shuffled.t", k, "different") for k in ("1", "30000", "60000")}
    assert result.summary.iloc[0]["chunks"] == 3
    assert compare(shuffled, "shuffled").identical


def test_max_keys_stops_listing_in_hash_buckets_and_says_more(shuffled):
    run(shuffled[1], "UPDATE shuffled.t SET n = -n WHERE id % 1000 = 0")
    try:
        result = compare(shuffled, "shuffled", max_keys=5)
    finally:
        run(shuffled[1], "UPDATE shuffled.t SET n = -n WHERE id % 1000 = 0")
    row = result.summary.iloc[0]
    assert (row["differing_keys"], bool(row["more_keys"])) == (5, True)
    assert all(int(k) % 1000 == 0 for k in result.differences["key"])


def test_numeric_sign_and_special_values_are_differences(pair):
    """hash_numeric() hashes the digits only: 5 and -5, NaN and Infinity would hash alike."""
    both(pair, "CREATE SCHEMA signs; CREATE TABLE signs.t (id int PRIMARY KEY, n numeric, "
               "n2 numeric(8, 2))")  # fmt: skip
    run(pair[0], "INSERT INTO signs.t VALUES (1, 5, 1), (2, 1, -2.5), (3, 'NaN', 0), "
                 "(4, '-Infinity', 0), (5, NULL, 0), (6, -7, 7)")  # fmt: skip
    run(pair[1], "INSERT INTO signs.t VALUES (1, -5, 1), (2, 1, 2.5), (3, 'Infinity', 0), "
                 "(4, 'Infinity', 0), (5, 'NaN', 0), (6, -7, 7)")  # fmt: skip
    for portable in (False, True):
        result = compare(pair, "signs", portable=portable)
        assert found(result) == {("signs.t", str(k), "different") for k in range(1, 6)}, portable


def test_a_big_table_is_read_by_several_sessions_per_side(shuffled, monkeypatch):
    from runbook_lib.compare import buckets

    monkeypatch.setattr(buckets, "MIN_PARALLEL_PAGES", 10)  # 60,000 rows count as big here
    assert compare(shuffled, "shuffled", workers=3).identical
    run(shuffled[1], "DELETE FROM shuffled.t WHERE id IN (17, 31000)")
    try:
        result = compare(shuffled, "shuffled", workers=3)
    finally:
        run(shuffled[1], "INSERT INTO shuffled.t SELECT g, 'v' || g, jsonb_build_object('g', g), "
                         "g / 7.0, timestamptz '2024-01-01 00:00+00' + g * interval '1 min' "
                         "FROM unnest(ARRAY[17, 31000]) g")  # fmt: skip
    assert found(result) == {("shuffled.t", "17", "missing there"),
                             ("shuffled.t", "31000", "missing there")}  # fmt: skip
    assert result.read_at["here"]["workers"] == result.read_at["there"]["workers"] == 3
    assert result.summary.iloc[0]["rows_there"] == 59998
    with pytest.raises(ConfigurationError, match="workers"):
        compare(shuffled, "shuffled", workers=0)


# (id, value on `here`, value on `there`) per column; the ids in DIFFERENT must be reported,
# every other row is equal on both sides.
STRICT_VALUES = {
    "jb jsonb": [
        (1, "'5'", "'-5'"),  # jsonb's own hash ignores a number's sign
        (2, "'[[1], 2]'", "'[[1, 2]]'"),  # ... and where a container ends
        (3, """'{"a": {"b": 1}, "c": 2}'""", """'{"a": {"b": 1, "c": 2}}'"""),
        (4, """'{"a": 1.0}'""", """'{"a": 1.00}'"""),  # ... and a number's scale (it prints)
        (5, "NULL", "'\"\"'"),
        (6, """'{"b": 2, "a": [1, 2]}'""", """'{"a": [1, 2],   "b": 2}'"""),  # equal
    ],
    "f float8": [(7, "'-0'", "'0'"), (8, "'NaN'", "'NaN'"), (9, "NULL", "0"), (10, "1e-300", "0")],
    "r real": [(11, "'-0'", "'0'")],
    "i bigint": [(12, "0", "4294967297"), (13, "-1", "-4294967296"), (14, "NULL", "0")],
    "ts timestamptz": [
        (15, "'infinity'", "'-infinity'"),
        (16, "'-infinity'", "'2000-01-01 00:00+00'"),
        (17, "NULL", "'2000-01-01 00:00+00'"),
        (18, "'2024-06-01 12:00+02'", "'2024-06-01 10:00+00'"),  # the same instant: equal
        (19, "'2024-06-01 12:00+00'", "'2024-06-01 12:00:00.000001+00'"),
    ],
    "arr int[]": [(20, "'{1,2}'", "'{{1},{2}}'"), (21, "'[0:1]={1,2}'", "'{1,2}'")],
    "d date": [(22, "'infinity'", "'-infinity'"), (23, "NULL", "'2000-01-01'")],
    "u uuid": [(24, "NULL", "'00000000-0000-0000-0000-000000000000'")],
    "b bool": [(25, "NULL", "false")],
    "n numeric": [(26, "1.0", "1.00"), (27, "NULL", "'NaN'")],
    "m strict.mood": [(28, "'ok'", "'sad'"), (29, "NULL", "'sad'")],
}
DIFFERENT = set(range(1, 30)) - {6, 8, 18}


def test_values_that_print_differently_are_differences_on_both_hash_paths(pair):
    """Equal exactly when the values print alike: the cases where a type's own hash (what a
    faster row hash could use) is looser than its text, and NULL against each kind's zero."""
    columns = ", ".join(STRICT_VALUES)
    both(pair, f"CREATE SCHEMA strict; CREATE TYPE strict.mood AS ENUM ('sad', 'ok'); "
               f"CREATE TABLE strict.t (id int PRIMARY KEY, {columns}, x int, y int)")  # fmt: skip
    for side in (0, 1):
        rows = [
            f"INSERT INTO strict.t (id, {col.split()[0]}) VALUES ({i}, {values[side]})"
            for col, cases in STRICT_VALUES.items()
            for i, *values in cases
        ]
        # values swapped between two columns, and between two rows
        rows.append(f"INSERT INTO strict.t (id, x, y) VALUES (30, {1 + side}, {2 - side})")
        rows.append(f"INSERT INTO strict.t (id, x, y) VALUES (31, {1 + side}, 2)")
        rows.append(f"INSERT INTO strict.t (id, x, y) VALUES (32, {2 - side}, 2)")
        run(pair[side], "; ".join(rows))
    for portable in (False, True):
        result = compare(pair, "strict", portable=portable, max_keys=100)
        expected = {("strict.t", str(k), "different") for k in DIFFERENT | {30, 31, 32}}
        assert sorted(int(k) for _, k, _ in found(result) ^ expected) == [], portable


def test_the_widest_table_postgresql_allows_is_compared(pair):
    """The fast row hash nests one step per column: 1600 columns must still compose and run."""
    columns = ", ".join(f"c{i} int" for i in range(1599))
    both(pair, f"CREATE SCHEMA wide; CREATE TABLE wide.t (id int PRIMARY KEY, {columns})")
    both(pair, "INSERT INTO wide.t (id, c0, c1598) SELECT g, g, g FROM generate_series(1, 3) g")
    run(pair[1], "UPDATE wide.t SET c1598 = 0 WHERE id = 2")
    for portable in (False, True):
        assert found(compare(pair, "wide", portable=portable)) == {("wide.t", "2", "different")}


def test_an_enum_label_added_during_a_comparison_still_hashes_by_its_text(pair):
    """Enums hash by their label's position among the labels read when the comparison began;
    a label added since falls back to its text, so two new labels never hash alike."""
    from dataclasses import replace

    from runbook_lib.compare.fingerprint import TableSQL
    from runbook_lib.compare.keys import load_table
    from runbook_lib.compare.session import open_side

    run(pair[0], "CREATE SCHEMA late; CREATE TYPE late.e AS ENUM ('a', 'b', 'c'); "
                 "CREATE TABLE late.t (id int PRIMARY KEY, m late.e); "
                 "INSERT INTO late.t VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, NULL)")  # fmt: skip
    side = open_side("here", pair[0])
    try:
        info = load_table(side.conn, "late", "t")
        assert info.column("m").hashing == "enum"
        only_a = replace(info, columns=(info.columns[0], replace(info.columns[1], labels=("a",))))
        row_hash = TableSQL(only_a, ("m",), {"m": "enum"}, portable=False).row_hash()
        query = sql.SQL("SELECT {} AS h FROM late.t t ORDER BY id").format(row_hash)
        hashes = [r["h"] for r in side.conn.execute(query)]
    finally:
        side.close()
    assert len(set(hashes)) == 4  # a by position, b and c by text, NULL
