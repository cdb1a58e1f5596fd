"""The engine on a real hot standby: read-only sessions, and settle= as replay catching up."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql

from runbook_lib import pgbin
from runbook_lib.cluster import LocalCluster, server_os_user
from runbook_lib.compare import compare_databases
from runbook_lib.connection import Endpoint, connect
from runbook_lib.host import LOCAL
from runbook_lib.passfile import passfile_env, passfile_line
from runbook_lib.ports import free_ports
from runbook_lib.waiting import wait_until

DBNAME = "cmp_hs"


@pytest.fixture(scope="module")
def primary_and_standby(shared_lab) -> Iterator[tuple[Endpoint, Endpoint]]:
    primary = shared_lab.cluster("primary")
    with connect(primary.endpoint()) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DBNAME))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DBNAME)))
    with connect(primary.endpoint(DBNAME)) as conn:
        conn.execute("CREATE TABLE public.t (id int PRIMARY KEY, v text, n numeric)")
        conn.execute(
            "INSERT INTO public.t SELECT g, 'v' || g, g / 3.0 FROM generate_series(1, 30000) g"
        )
    root = shared_lab.root / "cmp-hot-standby"
    LOCAL.make_dir(root, owner=server_os_user(), mode=0o755)
    (port,) = free_ports(1, start=random.randrange(20000, 60000, 100))
    standby = LocalCluster("cmp-standby", root / "data", port, root / "standby.log")
    with passfile_env(primary.endpoint(), server_os_user()) as env:
        LOCAL.run(
            [pgbin.program("pg_basebackup"), "-h", primary.endpoint().host, "-p",
             str(primary.port), "-U", primary.superuser, "-D", str(standby.datadir),
             "-X", "stream", "-c", "fast"],
            user=server_os_user(), env=env,
        )  # fmt: skip
    # streaming: the walreceiver needs the primary's password, in a file of the server's user
    passfile = root / "pgpass"
    line = passfile_line(primary.endpoint(), shared_lab.password())
    LOCAL.write_text(passfile, line, owner=server_os_user(), mode=0o600)
    conninfo = (
        f"host={primary.endpoint().host} port={primary.port} user=postgres passfile={passfile}"
    )
    LOCAL.write_text(standby.datadir / "standby.signal", "", owner=server_os_user())
    standby.configure({
        "hot_standby": "on", "max_standby_streaming_delay": "5s",
        "primary_conninfo": f"'{conninfo}'",
    })  # fmt: skip
    standby.start()
    session = Path(os.environ["PGPASSFILE"])  # the copy keeps the primary's password
    line = passfile_line(standby.endpoint(), shared_lab.password())
    LOCAL.write_text(session, line + session.read_text(), mode=0o600)
    try:
        yield primary.endpoint(DBNAME), standby.endpoint(DBNAME)
    finally:
        standby.stop()
        LOCAL.remove_tree(root)
        with connect(primary.endpoint()) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(DBNAME)))


def _replayed(primary: Endpoint, standby: Endpoint):
    with connect(primary) as p:
        target = p.execute("SELECT pg_current_wal_lsn()::text AS l").fetchone()["l"]
    with connect(standby) as s:
        return s.execute(
            "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn AS done", [target]
        ).fetchone()["done"]


def test_a_hot_standby_compares_identical_and_replay_is_the_settle(primary_and_standby):
    primary, standby = primary_and_standby
    wait_until(lambda: _replayed(primary, standby), what="standby replay", timeout_s=60)
    labels = ("primary", "standby")
    result = compare_databases(primary, standby, labels=labels, progress=False, chunk_rows=5000)
    assert result.identical, result.summary

    with connect(standby) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
    with connect(primary) as conn:
        conn.execute("UPDATE public.t SET v = 'changed' WHERE id IN (11, 22222)")
        conn.execute("DELETE FROM public.t WHERE id = 333")
        conn.execute("INSERT INTO public.t VALUES (40000, 'new', 1)")
    calls = []

    def settle():  # the runbook's "standby replayed to the primary's LSN"
        calls.append(1)
        with connect(standby) as conn:
            conn.execute("SELECT pg_wal_replay_resume()")
        wait_until(lambda: _replayed(primary, standby), what="standby replay", timeout_s=60)

    paused = compare_databases(primary, standby, labels=labels, progress=False, chunk_rows=5000)
    assert set(zip(paused.differences["key"], paused.differences["kind"], strict=True)) == {
        ("11", "different"), ("22222", "different"), ("333", "missing primary"),
        ("40000", "missing standby"),
    }  # fmt: skip
    settled = compare_databases(
        primary, standby, labels=labels, progress=False, chunk_rows=5000, settle=settle
    )
    assert calls == [1]
    assert settled.identical, settled.summary
    assert settled.summary.iloc[0]["rows_standby"] == 30000
