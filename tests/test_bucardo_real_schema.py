"""The Bucardo bootstrap on a schema shaped like real production ones: a table partitioned by
month with a default partition and a two-level branch, foreign keys between partitions and other
tables, a domain, an enum, a tsvector kept by a trigger, array and bytea columns, and sequences
made by hand and used only through column defaults (one shared by two tables), all under a
writer that inserts, updates and deletes at full speed."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from datetime import date, timedelta

import psycopg
import pytest
import yaml

from runbook_lib import bucardo as bb
from runbook_lib.compare import compare_databases
from runbook_lib.connection import connect
from runbook_lib.lab import lab as lab_module
from runbook_lib.waiting import wait_until

pytestmark = pytest.mark.slow

SHOP_DDL = """
CREATE SCHEMA shop;
CREATE DOMAIN shop.email AS text CHECK (VALUE LIKE '%@%');
CREATE TYPE shop.status AS ENUM ('new', 'paid', 'shipped');
CREATE SEQUENCE shop.ids;        -- made by hand, no OWNED BY: shared by customers and notes
CREATE SEQUENCE shop.order_no;   -- made by hand, used only by the orders' default

CREATE TABLE shop.customers (
    id bigint PRIMARY KEY DEFAULT nextval('shop.ids'),
    email shop.email NOT NULL,
    tags text[] NOT NULL DEFAULT '{}',
    avatar bytea,
    search tsvector
);
CREATE FUNCTION shop.customers_search() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.search := to_tsvector('simple', NEW.email || ' ' || array_to_string(NEW.tags, ' '));
    RETURN NEW;
END $$;
CREATE TRIGGER customers_search BEFORE INSERT OR UPDATE ON shop.customers
    FOR EACH ROW EXECUTE FUNCTION shop.customers_search();

CREATE TABLE shop.orders (
    id bigint NOT NULL DEFAULT nextval('shop.order_no'),
    placed date NOT NULL,
    customer bigint NOT NULL REFERENCES shop.customers,
    status shop.status NOT NULL DEFAULT 'new',
    total numeric(12, 2),
    PRIMARY KEY (id, placed)
) PARTITION BY RANGE (placed);
CREATE TABLE shop.orders_2026_10 PARTITION OF shop.orders
    FOR VALUES FROM ('2026-10-01') TO ('2026-11-01');
CREATE TABLE shop.orders_2026_11 PARTITION OF shop.orders
    FOR VALUES FROM ('2026-11-01') TO ('2026-12-01') PARTITION BY HASH (id);
CREATE TABLE shop.orders_2026_11_a PARTITION OF shop.orders_2026_11
    FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE shop.orders_2026_11_b PARTITION OF shop.orders_2026_11
    FOR VALUES WITH (MODULUS 2, REMAINDER 1);
CREATE TABLE shop.orders_other PARTITION OF shop.orders DEFAULT;

CREATE TABLE shop.order_notes (
    id bigint PRIMARY KEY DEFAULT nextval('shop.ids'),
    order_id bigint NOT NULL,
    placed date NOT NULL,
    note text,
    FOREIGN KEY (order_id, placed) REFERENCES shop.orders
);

INSERT INTO shop.customers (email, tags, avatar)
SELECT 'c' || g || '@example.com', ARRAY['t' || g % 7, 'vip'], decode(md5(g::text), 'hex')
FROM generate_series(1, 2000) g;
INSERT INTO shop.orders (placed, customer, status, total)
SELECT DATE '2026-09-15' + (g % 120), 1 + g % 2000, (ARRAY['new','paid','shipped'])[1 + g % 3]::shop.status, g % 1000
FROM generate_series(1, 20000) g;
INSERT INTO shop.order_notes (order_id, placed, note)
SELECT id, placed, 'note ' || id FROM shop.orders WHERE id % 5 = 0;
"""  # noqa: E501

LEAVES = {
    "shop.orders_2026_10",
    "shop.orders_2026_11_a",
    "shop.orders_2026_11_b",
    "shop.orders_other",
}


class ShopWriter:
    """Inserts, updates and deletes as fast as it can on one master; counts the errors it saw."""

    def __init__(self, ep) -> None:
        self.ep = ep
        self.errors: list[str] = []
        self.commits = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _one(self, conn: psycopg.Connection, rng: random.Random) -> None:
        with conn.transaction():
            customer = conn.execute(
                "INSERT INTO shop.customers (email, tags) VALUES (%s, %s) RETURNING id",
                [f"w{rng.randrange(10**9)}@example.com", ["new"]],
            ).fetchone()["id"]
            placed = date(2026, 9, 20) + timedelta(days=rng.randrange(100))
            order = conn.execute(
                "INSERT INTO shop.orders (placed, customer, total) VALUES (%s, %s, %s) "
                "RETURNING id",
                [placed, customer, rng.randrange(1000)],
            ).fetchone()["id"]
            conn.execute(
                "INSERT INTO shop.order_notes (order_id, placed, note) VALUES (%s, %s, 'w')",
                [order, placed],
            )
            conn.execute(
                "UPDATE shop.orders SET status = 'paid', total = total + 1 "
                "WHERE id = %s AND placed = DATE '2026-09-15' + (%s::int %% 120)",
                [rng.randrange(1, 20000), rng.randrange(20000)],
            )
            conn.execute(
                "UPDATE shop.customers SET tags = tags || 'seen'::text WHERE id = %s",
                [rng.randrange(1, 2000)],
            )
            conn.execute(
                "DELETE FROM shop.order_notes WHERE id = (SELECT min(id) FROM shop.order_notes "
                "WHERE note = 'w')"
            )

    def _run(self) -> None:
        rng = random.Random(7)
        with connect(self.ep) as conn:
            while not self.stopping.is_set():
                try:
                    self._one(conn, rng)
                    self.commits += 1
                except psycopg.Error as exc:
                    self.errors.append(str(exc).strip())

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def shop(lab_factory) -> Iterator[tuple]:
    the_lab: lab_module.Lab = lab_factory("bucardo-shop")
    params = yaml.safe_load((the_lab.parameters_dir / "bucardo_bootstrap.yaml").read_text())
    cfg = bb.validate_parameters(**params | {"schemas": ["shop"], "verify_timeout_s": 240})
    with connect(cfg.source) as conn:
        conn.execute(SHOP_DDL)
    writer = ShopWriter(cfg.source)
    try:
        runbook = bb.make_runbook(cfg)
        results = {step.name: runbook.run(step.name) for step in bb.runbook.STEPS}
        yield cfg, results, writer
    finally:
        writer.stop()


def test_preflight_maps_each_partitioned_table_to_its_leaf_partitions(shop):
    _, results, _ = shop
    partitions = results["preflight"].tables["partitions"]
    assert set(partitions["partition"]) == LEAVES
    assert set(partitions["parent"]) == {"shop.orders"}
    checks = results["preflight"].tables["checks"]
    assert checks["detail"].str.contains("created after this bootstrap is not replicated").any()


def test_preflight_lists_sequences_used_only_through_defaults(shop):
    _, results, _ = shop
    sequences = results["preflight"].tables["sequences"].set_index("sequence")
    assert set(sequences.index) == {"shop.ids", "shop.order_no"}
    assert "shop.customers.id" in sequences.loc["shop.ids", "used by"]
    assert "shop.order_notes.id" in sequences.loc["shop.ids", "used by"]
    assert sequences.loc["shop.order_no", "how"] == "column default only"


def test_partitions_replicate_and_verify_under_load_without_application_errors(shop):
    cfg, results, writer = shop
    assert "identical" in results["verify"].summary
    writer.stop()
    assert writer.errors == []
    assert writer.commits > 100
    bb.wait_caught_up(cfg, timeout_s=120, strict=True)
    comparison = compare_databases(cfg.source, cfg.target, schemas=["shop"], progress=False)
    assert comparison.identical, comparison.summary.to_string()


def test_inserts_on_both_masters_afterwards_take_no_duplicate_key(shop):
    cfg, _, writer = shop
    writer.stop()
    made = {}
    for name, ep in cfg.databases().items():
        with connect(ep) as conn, conn.transaction():
            customer = conn.execute(
                "INSERT INTO shop.customers (email) VALUES (%s) RETURNING id", [f"{name}@x.y"]
            ).fetchone()["id"]
            order = conn.execute(
                "INSERT INTO shop.orders (placed, customer) VALUES ('2026-11-20', %s) RETURNING id",
                [customer],
            ).fetchone()["id"]
            note = conn.execute(
                "INSERT INTO shop.order_notes (order_id, placed) VALUES (%s, '2026-11-20') "
                "RETURNING id",
                [order],
            ).fetchone()["id"]
            made[name] = (customer, order, note)
    assert made[cfg.here][0] % 2 == 1 and made[cfg.there][0] % 2 == 0  # interleaved
    for name, ep in cfg.databases().items():
        other = cfg.there if name == cfg.here else cfg.here
        customer, _, note = made[other]
        with connect(ep) as conn:
            wait_until(
                lambda conn=conn, note=note: (
                    conn.execute("SELECT 1 FROM shop.order_notes WHERE id = %s", [note]).fetchone()
                    is not None
                ),
                what=f"the rows written on {other} on {name}",
                timeout_s=60,
                interval_s=0.2,
            )
    bb.wait_caught_up(cfg, timeout_s=120, strict=True)
    assert compare_databases(cfg.source, cfg.target, schemas=["shop"], progress=False).identical
