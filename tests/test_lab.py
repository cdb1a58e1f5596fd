"""The lab: real clusters on free loopback ports, started and stopped by pid."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import psycopg
import pytest

from runbook_lib.connection import connect
from runbook_lib.host import LOCAL
from runbook_lib.lab import lab as lab_module
from runbook_lib.lab import sample_data, workload


def test_lab_up_starts_every_server_and_status_shows_them_up(shared_lab):
    table = lab_module.status(shared_lab.root)
    servers = table.set_index("server")
    for name in lab_module.SERVER_NAMES:
        assert servers.loc[name, "state"] == "up"
        assert servers.loc[name, "port"] == shared_lab.ports[name]
        assert LOCAL.pid_alive(int(servers.loc[name, "pid"]))
    assert servers.loc["standby", "state"] == "absent"


def test_lab_sample_database_has_every_shape_the_runbooks_handle(shared_lab):
    with connect(shared_lab.endpoint("here", sample_data.SAMPLE_DBNAME)) as conn:
        tables = {
            f"{r['schemaname']}.{r['relname']}": r["n"]
            for r in conn.execute(
                "SELECT schemaname, relname, n_live_tup AS n FROM pg_stat_user_tables"
            )
        }
        keyless = conn.execute(
            "SELECT n.nspname || '.' || c.relname AS t FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind = 'r' AND n.nspname IN ('public', 'inventory')"
            " AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)"
        ).fetchall()
        fk = conn.execute("SELECT count(*) AS n FROM pg_constraint WHERE contype = 'f'").fetchone()[
            "n"
        ]
    assert {
        "public.foo",
        "public.bar",
        "public.order_lines",
        "public.sku_catalog",
        "public.CustomerNotes",
        "inventory.bins",
    } <= set(tables)
    assert all(n > 0 for n in tables.values())
    assert [r["t"] for r in keyless] == [sample_data.TABLE_WITHOUT_KEY]
    assert fk >= 1


def test_lab_up_twice_is_harmless_and_keeps_ports_and_data(shared_lab):
    before = dict(shared_lab.ports)
    pids = {n: shared_lab.cluster(n).pid() for n in lab_module.SERVER_NAMES}
    again = lab_module.up(shared_lab.root)
    assert again.ports == before
    assert {n: again.cluster(n).pid() for n in lab_module.SERVER_NAMES} == pids


def test_lab_writes_parameter_files_for_both_runbooks(shared_lab):
    import yaml

    files = {p.name for p in shared_lab.parameters_dir.glob("*.yaml")}
    assert {"bucardo_bootstrap.yaml", "warm_standby.yaml"} <= files
    params = yaml.safe_load((shared_lab.parameters_dir / "bucardo_bootstrap.yaml").read_text())
    assert params["pgport"] == shared_lab.ports["here"]
    assert params["pgport2"] == shared_lab.ports["there"]


def _listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_lab_up_skips_a_busy_port_instead_of_taking_it(lab_spot):
    root, first = lab_spot
    busy = _listen(first)
    try:
        the_lab = lab_module.up(root, first_port=first)
        assert first not in the_lab.ports.values()
        assert all(the_lab.cluster(n).is_running() for n in lab_module.SERVER_NAMES)

        # a stopped server whose port someone else took moves elsewhere on the next `up`
        there = the_lab.cluster("there")
        there.stop()
        taken = _listen(there.port)
        try:
            again = lab_module.up(root)
            assert again.ports["there"] != there.port
            assert again.cluster("there").is_running()
        finally:
            taken.close()
    finally:
        busy.close()


def test_lab_down_stops_every_process_it_started_and_purge_removes_the_directory(lab_factory):
    the_lab = lab_factory("down")
    pids = [the_lab.cluster(n).pid() for n in lab_module.SERVER_NAMES]
    assert all(pids)
    lab_module.down(the_lab.root)
    assert not any(LOCAL.pid_alive(p) for p in pids)
    assert (the_lab.root / "lab.json").exists()
    lab_module.down(the_lab.root, purge=True)
    assert not the_lab.root.exists()


def test_lab_status_without_a_lab_says_how_to_make_one(tmp_path):
    from runbook_lib.errors import PreconditionError

    with pytest.raises(PreconditionError, match="runbook lab up"):
        lab_module.status(tmp_path / "nowhere")


def test_workload_ledger_matches_what_is_in_the_database(shared_lab, tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    summary = workload.run_workload(
        shared_lab.endpoint("here", sample_data.SAMPLE_DBNAME), ledger, seconds=3, rate=60, seed=7
    )
    entries = list(workload.read_ledger(ledger))
    assert summary.committed == len(entries) > 50
    assert {e["op"] for e in entries} >= {"insert", "update", "delete", "rekey"}
    mismatches = workload.verify_ledger(
        shared_lab.endpoint("here", sample_data.SAMPLE_DBNAME), ledger
    )
    assert mismatches.empty, mismatches


def test_workload_ledger_check_detects_a_lost_write(shared_lab, tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    endpoint = shared_lab.endpoint("here", sample_data.SAMPLE_DBNAME)
    workload.run_workload(endpoint, ledger, seconds=1, rate=40, seed=3)
    last_insert = [
        e
        for e in workload.read_ledger(ledger)
        if e["op"] == "insert" and e["table"] == "public.foo"
    ][-1]
    with connect(endpoint) as conn:
        conn.execute("UPDATE public.foo SET note = 'lost' WHERE id = %s", [last_insert["key"]])
    mismatches = workload.verify_ledger(endpoint, ledger)
    assert list(mismatches["key"]) == [last_insert["key"]]


def test_workload_command_stops_cleanly_on_sigterm_and_writes_its_ledger(shared_lab, tmp_path):
    ledger = tmp_path / "cli-ledger.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runbook_lib.cli",
            "lab",
            "workload",
            "--dir",
            str(shared_lab.root),
            "--seconds",
            "0",
            "--rate",
            "30",
            "--ledger",
            str(ledger),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().startswith("ledger:")

    time.sleep(1.5)
    proc.terminate()
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "committed" in out
    assert workload.verify_ledger(
        shared_lab.endpoint("here", sample_data.SAMPLE_DBNAME), ledger
    ).empty


def test_lab_servers_listen_on_loopback_only(shared_lab):
    with psycopg.connect(
        host="127.0.0.1", port=shared_lab.ports["here"], user="postgres", dbname="postgres"
    ) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"


def test_workload_survives_a_restart_of_its_server_and_its_ledger_still_verifies(
    shared_lab, tmp_path
):
    import threading

    endpoint = shared_lab.endpoint("primary", sample_data.SAMPLE_DBNAME)
    ledger = tmp_path / "restart-ledger.jsonl"
    result = {}
    writer = threading.Thread(
        target=lambda: result.update(
            summary=workload.run_workload(endpoint, ledger, seconds=6, rate=40, seed=11)
        )
    )
    writer.start()
    time.sleep(1.5)
    shared_lab.cluster("primary").restart()
    writer.join(timeout=60)
    summary = result["summary"]
    entries = list(workload.read_ledger(ledger))
    assert summary.committed > 100
    assert entries[-1]["op"] != "in_doubt"  # it went on writing after the restart
    assert workload.verify_ledger(endpoint, ledger).empty


def test_an_exited_process_its_parent_has_not_reaped_is_not_alive():
    """lab down waits for each postmaster to exit; a stopped one lingers as a zombie until
    init reaps it, which must not count as running."""
    from pathlib import Path

    from runbook_lib.waiting import wait_until

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        stat = Path(f"/proc/{child.pid}/stat")
        wait_until(
            lambda: stat.read_text().rsplit(")", 1)[1].split()[0] == "Z",
            what="the child to exit",
            timeout_s=30,
            interval_s=0.01,
        )
        assert not LOCAL.pid_alive(child.pid)
        assert LOCAL.pid_alive(os.getpid())
    finally:
        child.wait()
