"""Short locks on a live database (runbook_lib.locks), against a real server: the runbook's
change waits its turn in short attempts, and the application transaction it competes with
neither fails nor waits long."""

from __future__ import annotations

import threading
import time

import pytest
from psycopg import sql

from runbook_lib.connection import connect
from runbook_lib.errors import WaitTimeout
from runbook_lib.locks import LOCK_TIMEOUT_MS, in_short_lock

TABLES = ("lock_a", "lock_b")


@pytest.fixture
def source(shared_lab):
    ep = shared_lab.endpoint("here", "postgres")
    with connect(ep) as conn:
        for t in TABLES:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(t)))
            conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, v int)").format(
                sql.Identifier(t)))  # fmt: skip
            conn.execute(sql.SQL("INSERT INTO {} VALUES (1, 0), (2, 0)").format(
                sql.Identifier(t)))  # fmt: skip
    yield ep
    with connect(ep) as conn:
        for t in TABLES:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(t)))


def test_a_change_waits_for_an_application_transaction_in_short_attempts(source):
    with connect(source) as app, connect(source) as runbook:
        app.execute("BEGIN")
        app.execute("UPDATE lock_a SET v = v + 1")  # holds lock_a's ROW EXCLUSIVE lock
        threading.Timer(1.0, lambda: app.execute("COMMIT")).start()
        t0 = time.monotonic()
        in_short_lock(
            runbook,
            lambda: runbook.execute(
                "CREATE TRIGGER t AFTER INSERT ON lock_a FOR EACH STATEMENT "
                "EXECUTE FUNCTION suppress_redundant_updates_trigger()"
            ),
            "a trigger on lock_a",
        )
        assert time.monotonic() - t0 >= 0.9  # it waited for the application, not around it
        assert (
            runbook.execute("SELECT count(*) AS n FROM pg_trigger WHERE tgname = 't'").fetchone()[
                "n"
            ]
            == 1
        )


def test_an_application_statement_queued_behind_a_change_waits_only_its_lock_timeout(source):
    """Another application statement (on another row: no conflict with the first transaction)
    queues behind the runbook's waiting ALTER; it is free again after LOCK_TIMEOUT_MS, not when
    the first application transaction ends, and nobody sees an error."""
    with connect(source) as first, connect(source) as second, connect(source) as runbook:
        first.execute("BEGIN")
        first.execute("UPDATE lock_b SET v = v + 1 WHERE id = 1")
        waits: list[float] = []

        def second_app() -> None:
            time.sleep(0.03)  # queued after the runbook's ALTER
            t0 = time.monotonic()
            second.execute("UPDATE lock_b SET v = v + 1 WHERE id = 2")  # autocommit
            waits.append(time.monotonic() - t0)

        worker = threading.Thread(target=second_app)
        worker.start()
        with pytest.raises(WaitTimeout):
            in_short_lock(
                runbook,
                lambda: runbook.execute("ALTER TABLE lock_b ADD COLUMN w int"),
                "a column on lock_b",
                retry_for_s=1.0,
            )
        worker.join(timeout=5)
        first.execute("COMMIT")
    assert waits and waits[0] < 3 * LOCK_TIMEOUT_MS / 1000, waits
