"""The Bucardo bootstrap across real network hosts: `here`, `there` and Bucardo's control
database each on its own host (network namespaces with their own sshd), the notebook in the root
namespace, Bucardo's CLI and daemon on the control host over SSH. The target's host is cut off
during the drain and again after the bootstrap while the workload writes: nothing is lost."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import yaml
from loads import Workload
from test_bucardo_bootstrap import assert_same_everywhere, outputs_text, run_steps

from runbook_lib import bucardo as bb
from runbook_lib.bucardo import ctl
from runbook_lib.compare.session import APPLICATION_NAME as COMPARE_APPLICATION
from runbook_lib.connection import connect
from runbook_lib.errors import PreconditionError
from runbook_lib.execute import run_notebook
from runbook_lib.lab import hosts_lab as hosts_lab_module
from runbook_lib.lab import network
from runbook_lib.ssh_host import HostKeyMismatch, HostUnreachable

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
]

SERVERS = ("here", "there", "control")
CUT_DURING_DRAIN_S = 20
CUT_AFTER_S = 30


def params_of(lab: hosts_lab_module.HostsLab, **overrides) -> dict:
    path = lab.parameters_dir / "bucardo_bootstrap.yaml"
    return yaml.safe_load(path.read_text()) | overrides


def config_of(lab: hosts_lab_module.HostsLab, **overrides) -> bb.BootstrapConfig:
    return bb.validate_parameters(**params_of(lab, **overrides))


@pytest.fixture(scope="module")
def lab(hosts_lab_factory, lab_factory) -> Iterator[hosts_lab_module.HostsLab]:
    """The hosts lab, its passwords in the session's PGPASSFILE (the operator's own); the
    schema dump this machine keeps for it is removed afterwards."""
    the_lab = hosts_lab_factory("bucardo-hosts", servers=SERVERS)
    lab_factory.add_passwords(the_lab)
    yield the_lab
    shutil.rmtree(config_of(the_lab).dump_dir, ignore_errors=True)


def nothing_changed(cfg: bb.BootstrapConfig) -> None:
    with connect(cfg.control_admin) as conn:
        row = conn.execute(
            "SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", [cfg.bucardo_dbname]
        ).fetchone()
        assert row is None, "the control database was installed"
    with connect(cfg.target_admin) as conn:
        row = conn.execute(
            "SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", [cfg.pgdatabase]
        ).fetchone()
        assert row is None, "the target database was created"


def test_preflight_refuses_an_unreachable_bucardo_host(lab):
    nobody = network.bridge_address(lab.net)  # the root namespace: no sshd listens there
    cfg = config_of(lab, bucardo_ssh=f"root@{nobody}")
    with pytest.raises(HostUnreachable, match="Bucardo's host: cannot reach .*nothing was changed"):
        bb.preflight(cfg)
    nothing_changed(cfg)


def test_preflight_refuses_a_wrong_host_key_for_bucardo_host(lab, tmp_path):
    keys = dict(line.split(None, 1) for line in lab.known_hosts.read_text().splitlines())
    control_names = next(k for k in keys if k.split(",")[0] == "control")
    there_key = next(v for k, v in keys.items() if k.split(",")[0] == "there")
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{control_names} {there_key}")
    cfg = config_of(lab, ssh_known_hosts=str(wrong))
    with pytest.raises(HostKeyMismatch, match="(?s)host key of control .*nothing was changed"):
        bb.preflight(cfg)
    nothing_changed(cfg)


def test_preflight_refuses_a_bucardo_host_without_bucardo(lab):
    cfg = config_of(lab)
    root = lab.host("control", user="root")
    program = root.which("bucardo")
    assert program, "Debian's bucardo package is visible on every lab host"
    # as if the package were not installed there: only in the control host's own mounts
    root.run(["mount", "--bind", "/dev/null", program])
    try:
        with pytest.raises(
            PreconditionError, match="bucardo program was not found on control.*nothing was changed"
        ):
            bb.preflight(cfg)
    finally:
        root.run(["umount", program])
    nothing_changed(cfg)
    ctl.control_host.cache_clear()


def test_dry_run_shows_each_bucardo_command_on_the_control_host(lab):
    cfg = config_of(lab)
    runbook = bb.make_runbook(cfg, dry_run=True)
    plans = "\n".join(repr(runbook.run(n)) for n in ("bucardo_objects", "enable_and_drain"))
    shown = [line.strip() for line in plans.splitlines() if "/usr/bin/bucardo " in line]
    assert shown and all(line.startswith("on control: runuser -u bucardo -- ") for line in shown)
    nothing_changed(cfg)


def cut_once_draining(lab: hosts_lab_module.HostsLab, cfg: bb.BootstrapConfig) -> threading.Thread:
    """Cut `there` off the network as soon as the drain switches autokick on, heal it later."""
    cut_at: list[float] = []

    def watch() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                with connect(cfg.control) as conn:
                    row = conn.execute(
                        "SELECT autokick FROM bucardo.sync WHERE name = %s", [cfg.sync]
                    ).fetchone()
            except (PreconditionError, psycopg.Error):
                row = None  # the control database is not (fully) installed yet
            if row and row["autokick"]:
                hosts_lab_module.cut(lab.root, "there")
                cut_at.append(datetime.now(UTC))
                time.sleep(CUT_DURING_DRAIN_S)
                hosts_lab_module.heal(lab.root, "there")
                return
            time.sleep(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.cut_at = cut_at  # type: ignore[attr-defined]
    thread.start()
    return thread


@pytest.fixture(scope="module")
def bootstrapped(lab, tmp_path_factory) -> Iterator[tuple]:
    workload = Workload(lab, "hosts")
    cfg = config_of(lab)
    watcher = cut_once_draining(lab, cfg)
    try:
        result = run_notebook(
            "bucardo_bootstrap", params_of(lab), archive=tmp_path_factory.mktemp("runs")
        )
        watcher.join(timeout=CUT_DURING_DRAIN_S + 30)
        # after the bootstrap: the target's host gone for 30 s while the source keeps writing
        hosts_lab_module.cut(lab.root, "there")
        time.sleep(CUT_AFTER_S)
        hosts_lab_module.heal(lab.root, "there")
        time.sleep(2)
    finally:
        hosts_lab_module.heal(lab.root, "there")
        committed = workload.stop()
    yield cfg, result, workload, committed, watcher.cut_at  # type: ignore[attr-defined]


def test_notebook_runs_bucardo_on_the_control_host_over_ssh(lab, bootstrapped):
    cfg, result, _, _, _ = bootstrapped
    text = outputs_text(result.output)
    assert "on control: runuser -u bucardo -- /usr/bin/bucardo: bucardo version 5.6" in text
    host = lab.host("control", user="root")
    pids = [
        int(host.read_text(f"{cfg.bucardo_rundir}/daemon/{name}").split()[0])
        for name in host.list_dir(f"{cfg.bucardo_rundir}/daemon")
        if name.endswith(".pid")
    ]
    assert pids and all(host.pid_alive(p) for p in pids), "the daemon runs on the control host"
    assert not Path(cfg.bucardo_rundir, "daemon").exists(), "nothing of Bucardo's runs here"
    assert (cfg.dump_dir / "schema.dump").is_file(), "pg_dump ran here, its dump kept here"


def test_a_cut_during_the_drain_and_after_it_loses_no_write(bootstrapped):
    cfg, result, workload, committed, cut_at = bootstrapped
    steps = json.loads((result.output.parent / "steps.json").read_text())
    drain = next(s for s in steps if s["step"] == "enable_and_drain")
    started = datetime.fromisoformat(drain["started_at"])
    assert cut_at and started <= cut_at[0] <= started + timedelta(seconds=drain["duration_s"]), (
        "the target's host was cut while the drain waited",
        cut_at,
        drain,
    )
    assert committed > 100, "the workload wrote throughout"
    assert workload.failures() == [], "the application saw no error"
    assert_same_everywhere(cfg, workload.ledger)


def test_verify_passes_after_the_partition_healed(bootstrapped):
    cfg, _, _, _, _ = bootstrapped
    (result,) = run_steps(cfg, ["verify"])  # raises DataMismatch or NotProven otherwise
    assert "identical" in repr(result)


def cut_once_comparing(lab: hosts_lab_module.HostsLab, cfg: bb.BootstrapConfig, seconds: float):
    """Cut `there` off the network once verify's comparison reads `here`, heal it later."""
    cut: list[bool] = []

    def watch() -> None:
        with connect(cfg.source) as conn:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                reading = conn.execute(
                    "SELECT 1 FROM pg_catalog.pg_stat_activity WHERE application_name = %s",
                    [COMPARE_APPLICATION],
                ).fetchone()
                if reading:
                    hosts_lab_module.cut(lab.root, "there")
                    cut.append(True)
                    time.sleep(seconds)
                    hosts_lab_module.heal(lab.root, "there")
                    return
                time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, cut


def test_verify_cut_off_mid_comparison_starts_again_and_passes(lab, bootstrapped):
    cfg, _, _, _, _ = bootstrapped
    watcher, cut = cut_once_comparing(lab, cfg, seconds=12)
    try:
        result = bb.verify_databases(cfg, progress=False)
    finally:
        watcher.join(timeout=60)
        hosts_lab_module.heal(lab.root, "there")
    assert cut, "the target's host was cut while verify compared"
    assert result.summary.startswith("identical")
    assert "started again after 1 lost connection(s)" in result.summary
