"""Ready-to-use parameter files for both runbooks, pointing at the lab's servers."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from runbook_lib.host import LOCAL
from runbook_lib.lab import sample_data
from runbook_lib.ports import LOOPBACK

if TYPE_CHECKING:
    from runbook_lib.lab.lab import Lab


def bucardo_bootstrap_parameters(lab: Lab) -> dict[str, Any]:
    return {
        "pgdatabase": sample_data.SAMPLE_DBNAME,
        "pghost": LOOPBACK,
        "pgport": lab.ports["here"],
        "pghost2": LOOPBACK,
        "pgport2": lab.ports["there"],
        "pgsuperuser": "postgres",
        "bucardouser": "bucardo",
        "here": "here",
        "there": "there",
        "tables": [],
        "schemas": list(sample_data.SAMPLE_SCHEMAS),
        "relgroup": "widgets_rels",
        "dbgroup": "widgets_dbs",
        "sync": "widgets_sync",
        "bucardo_host": LOOPBACK,
        "bucardo_port": lab.ports["control"],
        "bucardo_dbname": "bucardo",
        "bucardo_rundir": str(lab.bucardo_dir),
        "bucardo_os_user": "bucardo",
        "copy_roles": False,
        "conflict_strategy": "",
        "sequence_strategy": "interleave",
        "copy_jobs": 2,
        "drain_timeout_s": 300,
        "verify_timeout_s": 300,
    }


def bucardo_retire_parameters(lab: Lab) -> dict[str, Any]:
    """The bootstrap's parameters; the new server (`there`) stays, as after an upgrade."""
    return {"keep": "there", **bucardo_bootstrap_parameters(lab)}


def warm_standby_parameters(lab: Lab) -> dict[str, Any]:
    restart = [
        sys.executable,
        "-m",
        "runbook_lib.cli",
        "lab",
        "restart",
        "primary",
        "--dir",
        str(lab.root),
    ]
    return {
        "primary_host": LOOPBACK,
        "primary_port": lab.ports["primary"],
        "pgsuperuser": "postgres",
        "pgdatabase": sample_data.SAMPLE_DBNAME,
        "primary_ssh": "",
        "standby_ssh": "",
        "archive_ssh": "",
        "archive_server_ssh": "",
        "archive_shared": False,
        "server_ssh_options": [],
        "ssh_config": "",
        "ssh_known_hosts": "",
        "ssh_identity_file": "",
        "archive_dir": str(lab.archive_dir),
        "standby_datadir": str(lab.standby_datadir),
        "standby_port": lab.standby_port,
        "standby_address": LOOPBACK,
        "standby_listen_addresses": "",
        "mode": "standby",
        "trigger_file": str(lab.root / "standby" / "failover.trigger"),
        "archive_timeout_s": 10,
        "restart_primary_command": restart,
        "hot_standby": True,
        "failover_drill": True,
        "archive_cleanup": True,
        "compare_schemas": list(sample_data.SAMPLE_SCHEMAS),
        "server_python": "/usr/bin/python3",
        "observe_s": 10,
        "replay_timeout_s": 60,
        "promote_timeout_s": 30,
        "dry_run": False,
    }


def write_parameter_files(lab: Lab) -> None:
    files = {
        "bucardo_bootstrap.yaml": bucardo_bootstrap_parameters(lab),
        "bucardo_retire.yaml": bucardo_retire_parameters(lab),
        "warm_standby.yaml": warm_standby_parameters(lab),
    }
    header = (
        f"# Written by `runbook lab up` for the lab in {lab.root}: local throwaway servers.\n"
        f"# Their files (data, logs, WAL archive, Bucardo's run directory): {lab.server_dir}\n"
        "# They ask for a password (scram-sha-256), kept in the lab's password file:\n"
        f"#   export PGPASSFILE={lab.passfile}\n"
    )
    write_yaml_files(lab.parameters_dir, files, header)


def write_yaml_files(directory: Path, files: dict[str, dict[str, Any]], header: str) -> None:
    """Each parameter set as DIRECTORY/NAME, in YAML under the comment `header`."""
    for name, params in files.items():
        LOCAL.write_text(directory / name, header + yaml.safe_dump(params, sort_keys=False))
