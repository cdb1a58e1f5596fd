"""The warm standby runbook's parameters, checked once before anything changes."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any

from runbook_lib.cluster import LocalCluster
from runbook_lib.connection import Endpoint, database_name
from runbook_lib.errors import ConfigurationError
from runbook_lib.host import LocalHost
from runbook_lib.ports import LOOPBACK
from runbook_lib.standby.machines import check_ssh_target, host_for, machine

MODES = ("standby", "pg_standby")
TOOLS_DIRNAME = "runbook-tools"
RESTORE_SCRIPT = "runbook-restore-wal.py"
RESTORE_FRONT = "runbook-restore-wal"  # the restore_command: hands staged segments over in sh
ARCHIVE_SCRIPT = "runbook-archive-wal.py"
SCHEMA = "runbook_standby"  # heartbeat and failover marker tables on the primary


@dataclass(frozen=True)
class StandbyConfig:
    primary_host: str
    primary_port: int
    pgsuperuser: str
    pgdatabase: str
    archive_dir: PurePosixPath
    standby_datadir: PurePosixPath
    standby_port: int
    mode: str
    trigger_file: PurePosixPath
    archive_timeout_s: int
    restart_primary_command: tuple[str, ...]
    hot_standby: bool
    failover_drill: bool
    archive_cleanup: bool
    compare_schemas: tuple[str, ...]
    server_python: str
    observe_s: float
    replay_timeout_s: float
    promote_timeout_s: float
    # how each machine is reached: [user@]host over SSH, "" = the machine the notebook runs on
    primary_ssh: str = ""
    standby_ssh: str = ""
    archive_ssh: str = ""
    archive_server_ssh: str = ""
    archive_shared: bool = False
    standby_address: str = LOOPBACK
    standby_listen_addresses: str = ""
    server_ssh_options: tuple[str, ...] = ()
    ssh_config: str = ""
    ssh_known_hosts: str = ""
    ssh_identity_file: str = ""

    @property
    def ssh_settings(self) -> dict[str, str]:
        """How the notebook's SSH finds its config, known hosts and key ("" : ssh's own)."""
        return {
            "ssh_config": self.ssh_config,
            "known_hosts": self.ssh_known_hosts,
            "identity_file": self.ssh_identity_file,
        }

    @cached_property
    def primary_os_host(self) -> LocalHost:
        return host_for(self.primary_ssh, self.ssh_settings)

    @cached_property
    def standby_os_host(self) -> LocalHost:
        return host_for(self.standby_ssh, self.ssh_settings)

    @cached_property
    def archive_os_host(self) -> LocalHost:
        return host_for(self.archive_ssh, self.ssh_settings)

    @property
    def archive_target(self) -> str:
        """How the servers' WAL commands reach the archive's machine over SSH."""
        return self.archive_server_ssh or self.archive_ssh

    @property
    def archive_on_primary_side(self) -> bool:
        """The primary's archive command writes archive_dir on its own disk (the archive is on
        the primary's machine, or a mount shared with the archive's machine)."""
        return self.archive_shared or machine(self.archive_ssh) == machine(self.primary_ssh)

    @property
    def archive_on_standby_side(self) -> bool:
        """The standby's restore command reads archive_dir on its own disk."""
        return self.archive_shared or machine(self.archive_ssh) == machine(self.standby_ssh)

    @property
    def waiting(self) -> bool:
        """pg_standby mode: recovery.signal and a restore command that waits."""
        return self.mode == "pg_standby"

    def primary(self, dbname: str | None = None) -> Endpoint:
        return Endpoint(
            self.primary_host, self.primary_port, dbname or self.pgdatabase, self.pgsuperuser
        )

    def standby(self, dbname: str | None = None) -> Endpoint:
        return Endpoint(
            self.standby_address, self.standby_port, dbname or self.pgdatabase, self.pgsuperuser
        )

    def standby_cluster(self) -> LocalCluster:
        """The standby's cluster, with the server programs of its major version (the
        primary's, until a base backup is there)."""
        from runbook_lib.standby.versions import standby_bindir

        datadir = Path(self.standby_datadir)
        return LocalCluster(
            name="standby",
            datadir=datadir,
            port=self.standby_port,
            logfile=datadir.parent / f"{datadir.name}.log",
            superuser=self.pgsuperuser,
            host=self.standby_os_host,
            listen_address=self.standby_address,
            bindir=standby_bindir(self),
        )

    @property
    def standby_tools_dir(self) -> PurePosixPath:
        return self.standby_datadir.parent / TOOLS_DIRNAME

    @property
    def archive_tools_dir(self) -> PurePosixPath:
        """Where runbook-archive-wal is installed on the archive's machine (the far end of
        the servers' SSH when the archive is not on their disk)."""
        return self.archive_dir.parent / TOOLS_DIRNAME


def _absolute(name: str, value: Any) -> PurePosixPath:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigurationError(f"{name} must be an absolute path, got {value!r}")
    path = PurePosixPath(value)
    if ".." in path.parts or "'" in value:
        raise ConfigurationError(f"{name} must not contain '..' or quotes, got {value!r}")
    return path


def _port(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigurationError(f"{name} must be a port number 1..65535, got {value!r}")
    return value


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be true or false, got {value!r}")
    return value


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive number, got {value!r}")
    return value


def _name(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _argv(value: Any, name: str = "restart_primary_command") -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):  # a command line typed by hand: split it like a shell would
        value = shlex.split(value)
    if not isinstance(value, list | tuple) or not all(isinstance(a, str) and a for a in value):
        raise ConfigurationError(f"{name} must be a list of arguments (argv), got {value!r}")
    return tuple(value)


def _address(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() or c in "'\\" for c in value):
        raise ConfigurationError(f"{name} must be a host name or address, got {value!r}")
    return value


def validate(
    *,
    primary_host: str,
    primary_port: int,
    pgsuperuser: str,
    pgdatabase: str = "",
    archive_dir: str,
    standby_datadir: str,
    standby_port: int,
    mode: str,
    trigger_file: str,
    archive_timeout_s: int,
    restart_primary_command: list[str] | str | None,
    hot_standby: bool,
    failover_drill: bool,
    archive_cleanup: bool = True,
    compare_schemas: list[str] | None = None,
    server_python: str = "/usr/bin/python3",
    observe_s: float = 15,
    replay_timeout_s: float = 120,
    promote_timeout_s: float = 60,
    primary_ssh: str = "",
    standby_ssh: str = "",
    archive_ssh: str = "",
    archive_server_ssh: str = "",
    archive_shared: bool = False,
    standby_address: str = LOOPBACK,
    standby_listen_addresses: str = "",
    server_ssh_options: list[str] | None = None,
    ssh_config: str = "",
    ssh_known_hosts: str = "",
    ssh_identity_file: str = "",
    dry_run: bool = False,
    interactive: bool = False,
) -> StandbyConfig:
    """Check every parameter; raise ConfigurationError (before anything changes) on bad input.

    dry_run and interactive are checked here with the rest, but they steer the Runbook
    (runbook_lib.standby.runbook.make_runbook), not the steps, so the config does not hold them."""
    _bool("dry_run", dry_run)
    _bool("interactive", interactive)
    if mode not in MODES:
        raise ConfigurationError(f"mode must be one of {MODES}, got {mode!r}")
    if (
        isinstance(archive_timeout_s, bool)
        or not isinstance(archive_timeout_s, int)
        or not (1 <= archive_timeout_s <= 3600)
    ):
        raise ConfigurationError(
            f"archive_timeout_s must be whole seconds 1..3600 (about 60 is usual), got "
            f"{archive_timeout_s!r}"
        )
    schemas = compare_schemas if compare_schemas is not None else ["public"]
    if not isinstance(schemas, list | tuple) or not all(isinstance(s, str) and s for s in schemas):
        raise ConfigurationError(f"compare_schemas must be a list of schema names, got {schemas!r}")
    cfg = StandbyConfig(
        primary_host=_name("primary_host", primary_host),
        primary_port=_port("primary_port", primary_port),
        pgsuperuser=_name("pgsuperuser", pgsuperuser),
        pgdatabase=_name("pgdatabase", database_name(pgdatabase)),
        archive_dir=_absolute("archive_dir", archive_dir),
        standby_datadir=_absolute("standby_datadir", standby_datadir),
        standby_port=_port("standby_port", standby_port),
        mode=mode,
        trigger_file=_absolute("trigger_file", trigger_file),
        archive_timeout_s=archive_timeout_s,
        restart_primary_command=_argv(restart_primary_command),
        hot_standby=_bool("hot_standby", hot_standby),
        failover_drill=_bool("failover_drill", failover_drill),
        archive_cleanup=_bool("archive_cleanup", archive_cleanup),
        compare_schemas=tuple(schemas),
        server_python=str(_absolute("server_python", server_python)),
        observe_s=_positive("observe_s", observe_s),
        replay_timeout_s=_positive("replay_timeout_s", replay_timeout_s),
        promote_timeout_s=_positive("promote_timeout_s", promote_timeout_s),
        primary_ssh=check_ssh_target("primary_ssh", primary_ssh),
        standby_ssh=check_ssh_target("standby_ssh", standby_ssh),
        archive_ssh=check_ssh_target("archive_ssh", archive_ssh),
        archive_server_ssh=check_ssh_target("archive_server_ssh", archive_server_ssh),
        archive_shared=_bool("archive_shared", archive_shared),
        standby_address=_address("standby_address", standby_address),
        standby_listen_addresses=_listen("standby_listen_addresses", standby_listen_addresses),
        server_ssh_options=_argv(server_ssh_options, "server_ssh_options"),
        ssh_config=_optional_path("ssh_config", ssh_config),
        ssh_known_hosts=_optional_path("ssh_known_hosts", ssh_known_hosts),
        ssh_identity_file=_optional_path("ssh_identity_file", ssh_identity_file),
    )
    if cfg.failover_drill and not cfg.hot_standby:
        raise ConfigurationError(
            "failover_drill needs hot_standby = true: the drill reads the standby's replay "
            "position before it triggers; turn hot_standby on or the drill off"
        )
    inside = (cfg.archive_dir, cfg.standby_datadir)
    if cfg.archive_dir == cfg.standby_datadir or any(
        a in b.parents for a in inside for b in inside
    ):
        raise ConfigurationError("archive_dir and standby_datadir must not contain one another")
    if cfg.standby_datadir in cfg.trigger_file.parents:
        raise ConfigurationError("trigger_file must live outside standby_datadir")
    over_ssh = not (cfg.archive_on_primary_side and cfg.archive_on_standby_side)
    if over_ssh and not cfg.archive_target:
        raise ConfigurationError(
            "the archive is on this machine and a server elsewhere must reach it over SSH: set "
            "archive_server_ssh to [user@]host as that server reaches this machine"
        )
    if cfg.waiting and not cfg.archive_on_standby_side:
        raise ConfigurationError(
            "pg_standby mode needs the archive on the standby's machine (archive_ssh equal to "
            "standby_ssh) or a shared mount (archive_shared: true): its restore command waits "
            "for segments by looking into archive_dir; use mode standby with an archive host"
        )
    return cfg


def _optional_path(name: str, value: Any) -> str:
    return "" if value in (None, "") else str(_absolute(name, value))


def _listen(name: str, value: Any) -> str:
    if not isinstance(value, str) or "'" in value or "\\" in value:
        raise ConfigurationError(f"{name} must be listen_addresses text (or empty), got {value!r}")
    return value


def from_namespace(namespace: dict[str, Any]) -> StandbyConfig:
    """validate() with the notebook's parameter variables (its globals())."""
    import inspect

    names = inspect.signature(validate).parameters
    return validate(**{n: namespace[n] for n in names if n in namespace})
