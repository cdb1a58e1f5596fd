"""The warm standby with primary, standby and archive each on its own network host (the hosts
lab: namespaces, real sshd, PostgreSQL over SSH), the notebook in the root namespace: preflight
refusals that change nothing, the notebook end to end under the lab workload, the archive's host
cut for 30 s under load and healed, then the standby's for 10 s, and a failover drill that
proves no commit was lost."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from test_standby_integration import ledger_before, marker_on, start_workload, stop_workload

from runbook_lib import standby
from runbook_lib.cluster import server_os_user
from runbook_lib.connection import connect
from runbook_lib.errors import RunbookError
from runbook_lib.execute import run_notebook
from runbook_lib.host import LOCAL
from runbook_lib.lab import hosts_lab as hosts_lab_module
from runbook_lib.lab.host_parameters import warm_standby_parameters
from runbook_lib.lab.hosts_lab import HostsLab
from runbook_lib.lab.workload import verify_ledger
from runbook_lib.standby.archiving import (
    archiver_stats,
    segment_archived,
    switch_and_wait_archived,
)
from runbook_lib.standby.tools import install_tools
from runbook_lib.waiting import wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

CUT_S = 30
STANDBY_CUT_S = 10


@pytest.fixture(scope="module")
def lab(hosts_lab_factory) -> Iterator[HostsLab]:
    """PostgreSQL on the primary's host only; the standby's and the archive's hosts are empty."""
    the_lab = hosts_lab_factory("ws-hosts", servers=("primary",))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PGPASSFILE", str(the_lab.passfile))
        yield the_lab


def values(lab: HostsLab, **changes: Any) -> dict[str, Any]:
    return {**warm_standby_parameters(lab), "observe_s": 3, **changes}


def untouched(lab: HostsLab) -> dict[str, Any]:
    """What a refused run must leave as it was: the primary's archive settings, the archive, the
    standby's directory, the tools directories."""
    with connect(lab.endpoint("primary")) as conn:
        settings = conn.execute(
            "SELECT name, setting FROM pg_catalog.pg_settings WHERE name LIKE 'archive%'"
            " ORDER BY name"
        ).fetchall()
    return {
        "settings": settings,
        "archive": lab.host("archive", "root").list_dir("/srv"),
        "archive_dir": lab.host("archive").list_dir(lab.archive_dir),
        "standby": lab.host("standby").list_dir("/srv/postgresql"),
        "primary": lab.host("primary").list_dir("/srv/postgresql"),
    }


def refused(lab: HostsLab, params: dict[str, Any], match: str, cut: str = "") -> str:
    """Preflight stops with a message matching `match` and changes nothing (with `cut`, that
    host is cut off the network during preflight)."""
    before = untouched(lab)
    # preflight opens connections of its own: a control master left by untouched() (kept
    # 60 s) would skip the host key check, and a cut would be noticed only after its keep-alives
    for name in ("primary", "standby", "archive"):
        for login in ("postgres", "root"):
            lab.host(name, login).close()
    if cut:
        hosts_lab_module.cut(lab.root, cut)
    try:
        with pytest.raises(RunbookError, match=match) as caught:
            standby.preflight(standby.validate(**params))
    finally:
        if cut:
            hosts_lab_module.heal(lab.root, cut)
    assert untouched(lab) == before, "a refused preflight changes nothing"
    return str(caught.value)


def test_dry_run_plans_say_which_machine_runs_each_command_and_change_nothing(lab):
    before = untouched(lab)
    runbook = standby.make_runbook(standby.validate(**values(lab)), dry_run=True)
    assert runbook.run("preflight").checks["ok"].all()
    archiving = runbook.run("configure_archiving").actions
    build = runbook.run("build_standby").actions
    assert any(a.startswith("on primary: /usr/bin/python3 -I -m py_compile") for a in archiving)
    assert any(a.startswith("on archive: runuser -u postgres --") for a in archiving)
    assert any(a.startswith("on primary: /usr/lib/postgresql/") and "restart" in a
               for a in archiving)  # fmt: skip
    assert any(a.startswith("on standby: /usr/lib/postgresql/") and "pg_basebackup" in a
               for a in build)  # fmt: skip
    assert any("--ssh postgres@archive" in a and "--fetch %f %p" in a for a in build)
    assert untouched(lab) == before


def test_preflight_stops_on_an_unreachable_host_a_wrong_host_key_or_a_missing_program(
    lab, tmp_path
):
    message = refused(lab, values(lab), "standby machine reachable", cut="standby")
    assert "cannot reach standby" in message

    wrong = tmp_path / "known_hosts"  # the archive's entry carries the primary's key
    lines = lab.known_hosts.read_text().splitlines()
    key_of = {line.split()[0]: line.split(None, 1)[1] for line in lines if line.strip()}
    primary_key = next(v for k, v in key_of.items() if "primary" in k.split(","))
    wrong.write_text(
        "".join(
            f"{k} {primary_key if 'archive' in k.split(',') else v}\n" for k, v in key_of.items()
        )
    )
    message = refused(lab, values(lab, ssh_known_hosts=str(wrong)), "archive machine reachable")
    assert "host key" in message

    # a python3 that exists on the primary's and the standby's hosts but not on the archive's
    python = "/srv/postgresql/python3"
    for name in ("primary", "standby"):
        lab.host(name).run(["cp", "/usr/bin/python3", python])
    try:
        message = refused(lab, values(lab, server_python=python), "server_python on the archive")
        assert "missing on archive" in message
    finally:
        for name in ("primary", "standby"):
            lab.host(name).remove_file(python)


def marker_replayed(cfg: standby.StandbyConfig, token: str) -> bool:
    try:
        with connect(cfg.standby()) as conn:
            row = conn.execute(
                "SELECT count(*) AS n FROM runbook_standby.failover_marker WHERE token = %s",
                [token],
            ).fetchone()
    except RunbookError:
        return False
    return row["n"] == 1


def cut_archive_host_under_load(lab: HostsLab, cfg: standby.StandbyConfig) -> None:
    """30 s without the archive's host: archiving fails and the primary keeps its WAL; a
    marker written meanwhile reaches the standby once the link is back."""
    with connect(cfg.primary()) as conn:
        before = archiver_stats(conn)
        hosts_lab_module.cut(lab.root, "archive")
        cut_at = time.monotonic()
        try:
            token = f"cut-{time.time_ns()}"
            conn.execute(
                "INSERT INTO runbook_standby.failover_marker (token, note) VALUES (%s, %s)",
                [token, "written while the archive's host was cut off"],
            )
            segment = conn.execute(
                "SELECT pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()) AS s"
            ).fetchone()["s"]
            conn.execute("SELECT pg_catalog.pg_switch_wal()")
            failing = wait_until(
                lambda: archiver_stats(conn),
                lambda s: s["failed_count"] > before["failed_count"] and s["failing"],
                what="archive_command to fail while the archive's host is cut",
                timeout_s=CUT_S,
            )
            kept = conn.execute(
                "SELECT name FROM pg_catalog.pg_ls_waldir() WHERE name = %s", [segment]
            ).fetchall()
            assert kept, f"the primary keeps {segment} while it cannot be archived"
            health = standby.status(cfg, observe_s=1)
            assert any("archiving is FAILING" in p for p in health.problems), health.problems
            assert failing["last_failed_wal"] in repr(health)
            time.sleep(max(0.0, CUT_S - (time.monotonic() - cut_at)))
            end_of_cut = archiver_stats(conn)
            assert end_of_cut["failing"] and not segment_archived(end_of_cut, segment)
        finally:
            hosts_lab_module.heal(lab.root, "archive")
        # the attempts hanging on the dead link fail after heal too: wait for the backlog
        resumed = wait_until(
            lambda: archiver_stats(conn),
            lambda s: segment_archived(s, segment) and not s["failing"],
            what="archiving to resume after heal",
            timeout_s=120,
        )
        assert resumed["failed_count"] > before["failed_count"]
    wait_until(
        lambda: marker_replayed(cfg, token),
        what=f"the standby to replay the marker {token} written during the cut",
        timeout_s=120,
    )


def cut_standby_host_under_load(lab: HostsLab, cfg: standby.StandbyConfig) -> None:
    """10 s without the standby's host: the primary keeps archiving (the archive has a host of
    its own), the status report names the machine that does not answer, and a marker archived
    meanwhile reaches the standby once the link is back."""
    hosts_lab_module.cut(lab.root, "standby")
    cut_at = time.monotonic()
    try:
        with connect(cfg.primary()) as conn:
            token = f"standby-cut-{time.time_ns()}"
            conn.execute(
                "INSERT INTO runbook_standby.failover_marker (token, note) VALUES (%s, %s)",
                [token, "written while the standby's host was cut off"],
            )
            switch_and_wait_archived(conn)
        health = standby.status(cfg, observe_s=1)
        assert any("did not answer" in p for p in health.problems), health.problems
        time.sleep(max(0.0, STANDBY_CUT_S - (time.monotonic() - cut_at)))
    finally:
        hosts_lab_module.heal(lab.root, "standby")
    wait_until(
        lambda: marker_replayed(cfg, token),
        what=f"the standby to replay the marker {token} archived during its cut",
        timeout_s=120,
    )


@pytest.mark.slow
def test_notebook_across_hosts_survives_cut_archive_and_standby_hosts_and_fails_over_losslessly(
    lab, tmp_path
):
    cfg = standby.validate(**values(lab, failover_drill=False))
    ledger = tmp_path / "ledger.jsonl"
    # archiving first: turning archive_mode on restarts the primary (pg_ctl over SSH), which the
    # workload would not survive; the notebook then finds step 2 done
    standby.configure_archiving(cfg)
    workload = start_workload(lab.root, ledger, tmp_path / "workload.log")
    try:
        first = run_notebook("warm_standby", values(lab, failover_drill=False), archive=tmp_path)
        steps = [(s["step"], s["status"]) for s in first.summary["steps"]]
        assert steps == [(step.name, "done") for step in standby.STEPS]
        assert cfg.standby_cluster().is_running(), "the standby runs on the standby's host"
        assert not Path(cfg.standby_datadir).exists(), "nothing of it on this machine"

        cut_archive_host_under_load(lab, cfg)
        cut_standby_host_under_load(lab, cfg)

        final = run_notebook("warm_standby", values(lab, failover_drill=True), archive=tmp_path)
        assert workload.poll() is None, (tmp_path / "workload.log").read_text()
    finally:
        stop_workload(workload)
    servers = final.summary["versions"]["servers"]  # at the hosts' own addresses
    assert servers and all(
        entry["program"] == "/usr/lib/postgresql/15/bin/postgres" for entry in servers.values()
    ), servers
    drill = [s for s in final.summary["steps"] if s["step"] == "failover_drill"]
    assert drill[0]["status"] == "done"
    marker = marker_on(cfg)
    assert marker is not None, "the drill's marker is on the promoted standby"
    checked = ledger_before(ledger, marker["written_at"], tmp_path / "before-marker.jsonl")
    assert checked > 100, f"the workload committed only {checked} checkable changes"
    mismatches = verify_ledger(cfg.standby(), tmp_path / "before-marker.jsonl")
    assert mismatches.empty, mismatches.head(20).to_string()
    archived = lab.host("archive").list_dir(lab.archive_dir)
    assert "00000002.history" in archived, "the promoted standby archives to the archive's host"
    assert not [n for n in archived if n.startswith(".")], "no temporary file left"


def test_preflight_checks_that_a_shared_archive_is_one_directory_on_every_machine(lab):
    shared = values(lab, archive_shared=True, archive_server_ssh="")
    message = refused(lab, shared, "archive_dir shared")  # /srv is private to each host
    assert "not the same directory" in message

    # outside the hosts' private trees every namespace sees the same files, as with a share
    parent = Path(tempfile.mkdtemp(prefix="runbook-shared-", dir="/var/tmp"))
    try:
        parent.chmod(0o755)
        archive = parent / "archive"
        LOCAL.make_dir(archive, owner=server_os_user(), mode=0o700)
        checks = standby.preflight(standby.validate(**{**shared, "archive_dir": str(archive)}))
        rows = checks.checks[checks.checks["check"] == "archive_dir shared"]
        assert len(rows) == 2 and rows["ok"].all(), rows.to_string()
        assert os.listdir(archive) == [], "the probe files are removed"
    finally:
        shutil.rmtree(parent)


def test_pg_standby_mode_with_the_archive_on_the_standbys_host_fails_over_by_trigger_file(
    hosts_lab_factory, monkeypatch
):
    """The other shape: the archive in the standby machine's /srv (the primary sends over SSH,
    the waiting restore command reads its own disk), failed over with the trigger file."""
    lab = hosts_lab_factory("ws-hosts-pg-standby", servers=("primary",))
    monkeypatch.setenv("PGPASSFILE", str(lab.passfile))
    archive_dir = "/srv/postgresql/archive"
    lab.host("standby").make_dir(archive_dir, owner="postgres", mode=0o700)
    params = values(
        lab,
        mode="pg_standby",
        archive_ssh=lab.ssh_target("standby"),
        archive_server_ssh="",
        archive_dir=archive_dir,
    )
    cfg = standby.validate(**params)
    assert cfg.archive_on_standby_side and not cfg.archive_on_primary_side
    standby.preflight(cfg)
    standby.configure_archiving(cfg)
    standby.build_standby(cfg)
    result = standby.failover_drill(cfg)
    assert result.marker_present and result.timeline_after == result.timeline_before + 1
    assert result.trigger.startswith("trigger file")
    assert not lab.host("standby").exists(cfg.trigger_file), "recovery_end_command removed it"
    archived = lab.host("standby").list_dir(archive_dir)
    assert "00000002.history" in archived and not [n for n in archived if n.startswith(".")]
    assert not lab.host("archive").list_dir(lab.archive_dir), "the archive host is not used"


def test_an_archive_command_stopped_mid_transfer_leaves_nothing_on_the_archive_host(lab):
    """SIGTERM to runbook-archive-wal --ssh while the segment streams: ssh is stopped, the far
    end sees a short stream and removes its temporary file; nothing is archived."""
    primary, archive = lab.host("primary"), lab.host("archive", "root")
    tools, far_tools = PurePosixPath("/srv/postgresql/runbook-tools"), PurePosixPath("/srv/tools")
    install_tools(primary, tools, "/usr/bin/python3")
    install_tools(archive, far_tools, "/usr/bin/python3")
    target = "/srv/archive/stopped"
    archive.make_dir(target, owner="postgres", mode=0o700)
    primary.run(["sh", "-c", "head -c 600000000 /dev/zero > /srv/postgresql/big"])
    sender = [
        "/usr/bin/python3", "-I", "-S", str(tools / "runbook-archive-wal.py"),
        "--archive", target, "--ssh", "postgres@archive",
        "--remote-program", str(far_tools / "runbook-archive-wal.py"),
        "/srv/postgresql/big", "000000010000000000000042",
    ]  # fmt: skip
    script = 'echo $$ > /srv/postgresql/sender.pid; exec "$@"'
    primary.start(["sh", "-c", script, "sh", *sender], stdout_path="/srv/postgresql/sender.log")
    try:
        wait_until(
            lambda: archive.list_dir(target),
            what="the temporary file on the archive's host",
            timeout_s=30,
            interval_s=0.02,
        )
        pid = int(primary.read_text("/srv/postgresql/sender.pid"))
        primary.run(["kill", "-TERM", str(pid)])
        wait_until(lambda: not primary.pid_alive(pid), what="the sender to stop", timeout_s=30)
        wait_until(
            lambda: not archive.list_dir(target), what="the far end to clean up", timeout_s=30
        )
        assert "stopped by signal 15" in primary.read_text("/srv/postgresql/sender.log")
    finally:
        primary.run(["rm", "-f", "/srv/postgresql/big", "/srv/postgresql/sender.pid"])
