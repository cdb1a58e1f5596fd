"""Parameter files for the hosts lab: every server on its own host, reached over SSH.

`<server>_ssh` names how to reach a server's machine (`postgres@primary`, resolved through the
lab's ssh_config given as `ssh_config`); addresses are the hosts' own. hosts.yaml lists every
host with its address, SSH targets and private directories, for tests and people alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runbook_lib.lab import sample_data
from runbook_lib.lab.parameters import write_yaml_files

if TYPE_CHECKING:
    from runbook_lib.lab.hosts_lab import HostsLab


def ssh_parameters(lab: HostsLab) -> dict[str, Any]:
    return {
        "ssh_config": str(lab.ssh_config),
        "ssh_known_hosts": str(lab.known_hosts),
        "ssh_identity_file": str(lab.identity_file),
    }


def bucardo_bootstrap_parameters(lab: HostsLab) -> dict[str, Any]:
    from runbook_lib.lab.hosts_lab import PG_PORT

    return {
        "pgdatabase": sample_data.SAMPLE_DBNAME,
        "pghost": lab.address("here"),
        "pgport": PG_PORT,
        "pghost2": lab.address("there"),
        "pgport2": PG_PORT,
        "pgsuperuser": "postgres",
        "bucardouser": "bucardo",
        "here": "here",
        "there": "there",
        "tables": [],
        "schemas": list(sample_data.SAMPLE_SCHEMAS),
        "relgroup": "widgets_rels",
        "dbgroup": "widgets_dbs",
        "sync": "widgets_sync",
        "bucardo_host": lab.address("control"),
        "bucardo_port": PG_PORT,
        "bucardo_dbname": "bucardo",
        "bucardo_rundir": lab.bucardo_dir,
        "bucardo_os_user": "bucardo",
        "copy_roles": False,
        "conflict_strategy": "",
        "sequence_strategy": "interleave",
        "copy_jobs": 2,
        "drain_timeout_s": 300,
        "verify_timeout_s": 300,
        "bucardo_ssh": lab.ssh_target("control", "root"),
        **ssh_parameters(lab),
    }


def warm_standby_parameters(lab: HostsLab) -> dict[str, Any]:
    """Primary, standby and archive each on a host of its own. The notebook logs in to the
    archive's host as root (its tools go next to /srv/archive, in root's /srv); the servers'
    WAL commands reach it as postgres with the lab's host key (~postgres/.ssh on every host).
    The primary restarts with pg_ctl on its own host."""
    from runbook_lib import pgbin
    from runbook_lib.lab.hosts_lab import DATADIR, PG_DIR, PG_LOG, PG_PORT

    restart = [pgbin.program("pg_ctl"), "-D", DATADIR, "-l", PG_LOG, "-m", "fast", "-w"]
    return {
        "primary_host": lab.address("primary"),
        "primary_port": PG_PORT,
        "pgsuperuser": "postgres",
        "pgdatabase": sample_data.SAMPLE_DBNAME,
        "primary_ssh": lab.ssh_target("primary"),
        "standby_ssh": lab.ssh_target("standby"),
        "archive_ssh": lab.ssh_target("archive", "root"),
        "archive_server_ssh": lab.ssh_target("archive"),
        "archive_shared": False,
        "server_ssh_options": [],
        "archive_dir": lab.archive_dir,
        "standby_datadir": f"{PG_DIR}/data",
        "standby_port": PG_PORT,
        "standby_address": lab.address("standby"),
        "standby_listen_addresses": lab.address("standby"),
        "mode": "standby",
        "trigger_file": f"{PG_DIR}/failover.trigger",
        "archive_timeout_s": 10,
        "restart_primary_command": [*restart, "-t", "60", "restart"],
        "hot_standby": True,
        "failover_drill": True,
        "archive_cleanup": True,
        "compare_schemas": list(sample_data.SAMPLE_SCHEMAS),
        "server_python": "/usr/bin/python3",
        "observe_s": 10,
        "replay_timeout_s": 60,
        "promote_timeout_s": 30,
        "dry_run": False,
        **ssh_parameters(lab),
    }


def hosts_table(lab: HostsLab) -> dict[str, Any]:
    from runbook_lib.lab.hosts_lab import DATADIR, PG_PORT

    hosts = {}
    for name in lab.hosts:
        hosts[name] = {
            "address": lab.address(name),
            "ssh": lab.ssh_target(name),
            "ssh_root": lab.ssh_target(name, "root"),
            "netns": lab.netns(name),
            "postgresql": {"port": PG_PORT, "datadir": DATADIR} if name in lab.servers else None,
        }
    return {
        "subnet": lab.subnet,
        "passfile": str(lab.passfile),
        **ssh_parameters(lab),
        "hosts": hosts,
    }


def write_parameter_files(lab: HostsLab) -> None:
    files = {
        "bucardo_bootstrap.yaml": bucardo_bootstrap_parameters(lab),
        "warm_standby.yaml": warm_standby_parameters(lab),
        "hosts.yaml": hosts_table(lab),
    }
    header = (
        f"# Written by `runbook lab up --hosts` for the lab in {lab.root}: one network host\n"
        f"# per server in {lab.subnet}, reached over SSH (ssh -F {lab.ssh_config} HOST).\n"
        "# Paths of servers are paths on their own host. Passwords are in:\n"
        f"#   export PGPASSFILE={lab.passfile}\n"
    )
    write_yaml_files(lab.parameters_dir, files, header)
