"""A PostgreSQL cluster on a host: initdb, start, stop, status, settings. Server processes run
as the `postgres` OS user when we are root (initdb refuses root); files in its data directory
are read and written as that user."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from runbook_lib import pgbin
from runbook_lib.connection import Endpoint
from runbook_lib.errors import PreconditionError, RunbookError
from runbook_lib.host import LOCAL, LocalHost
from runbook_lib.ports import LOOPBACK, port_accepts
from runbook_lib.waiting import wait_until

SERVER_OS_USER = "postgres"
START_TIMEOUT_S = 60


def server_os_user() -> str | None:
    """The OS user server processes run as: `postgres` when root, else ourselves (None)."""
    return SERVER_OS_USER if os.geteuid() == 0 else None


@dataclass
class LocalCluster:
    """A cluster whose data directory lives on `host`, listening on `listen_address` only
    (loopback unless the cluster is on a host of its own)."""

    name: str
    datadir: Path
    port: int
    logfile: Path
    superuser: str = "postgres"
    host: LocalHost = field(default=LOCAL, repr=False)  # or an SshHost (ssh_host.py)
    listen_address: str = LOOPBACK
    bindir: Path | None = None  # its server programs (on its host); None: pgbin's default

    def endpoint(self, dbname: str = "postgres") -> Endpoint:
        return Endpoint(self.listen_address, self.port, dbname, self.superuser)

    def program(self, name: str) -> str:
        """A server program of this cluster's version (on another host: as found there)."""
        if self.bindir is not None and self.host is not LOCAL:
            return str(PurePosixPath(self.bindir) / name)
        return pgbin.program(name, self.bindir)

    def pg_ctl_argv(self, *args: str) -> list[str]:
        """The pg_ctl command line for this cluster (run as the server's OS user)."""
        return [self.program("pg_ctl"), "-D", str(self.datadir), *args]

    def start_argv(self) -> list[str]:
        return self.pg_ctl_argv("-l", str(self.logfile), "-w", "-t", str(START_TIMEOUT_S), "start")

    def _pg_ctl(self, *args: str, check: bool = True):
        return self.host.run(
            self.pg_ctl_argv(*args),
            user=server_os_user(),
            check=check,
            timeout_s=START_TIMEOUT_S + 30,
        )

    def initialized(self) -> bool:
        return self.host.exists(self.datadir / "PG_VERSION")

    def init(self, settings: dict[str, str] | None = None, *, password: str | None = None) -> None:
        """initdb, then our settings in a conf file of our own. With `password` the superuser
        gets it and TCP connections need it (scram-sha-256); without, TCP is refused to all
        (`reject`) until pg_hba.conf says otherwise. Local sockets (off in the lab) use peer."""
        if self.initialized():
            return
        owner = server_os_user()
        self.host.make_dir(self.datadir, owner=owner, mode=0o700)
        pwfile = self.datadir.parent / f".{self.datadir.name}.initdb-password"
        argv = [
            self.program("initdb"), "-D", str(self.datadir), "-U", self.superuser,
            "--auth-local=peer", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
        ]  # fmt: skip
        if password is None:
            argv.append("--auth-host=reject")
        else:
            argv += ["--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
            self.host.write_text(pwfile, password + "\n", owner=owner, mode=0o600)
        try:
            self.host.run(argv, user=owner)
        finally:
            if password is not None:
                self.host.remove_file(pwfile)
        self.configure(settings or {})

    def configure(self, settings: dict[str, str]) -> None:
        """Set the lab's base settings plus `settings` in a conf file included last."""
        base = {
            "port": str(self.port),
            "listen_addresses": f"'{self.listen_address}'",
            "unix_socket_directories": "''",
            "fsync": "off",
            "logging_collector": "off",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
        }
        base.update(settings)
        text = "".join(f"{k} = {v}\n" for k, v in base.items())
        conf = self.datadir / "runbook_lab.conf"
        self.host.write_text(conf, text, owner=server_os_user(), mode=0o600)
        main_conf = self.datadir / "postgresql.conf"
        current = self.host.read_text(main_conf, user=server_os_user())
        include = "include_if_exists = 'runbook_lab.conf'\n"
        if include not in current:
            self.host.write_text(main_conf, current + include, owner=server_os_user(), mode=0o600)

    def set_port(self, port: int) -> None:
        """Move a stopped cluster to another port."""
        conf = self.datadir / "runbook_lab.conf"
        current = self.host.read_text(conf, user=server_os_user())
        lines = [line for line in current.splitlines() if not line.startswith("port =")]
        self.host.write_text(
            conf, "\n".join([f"port = {port}", *lines]) + "\n", owner=server_os_user(), mode=0o600
        )
        self.port = port

    def require_passwords(self) -> None:
        """Make every TCP connection (replication too) authenticate with scram-sha-256."""
        hba = (
            f"host all all {self.listen_address}/32 scram-sha-256\n"
            f"host replication all {self.listen_address}/32 scram-sha-256\n"
        )
        self.host.write_text(self.datadir / "pg_hba.conf", hba, owner=server_os_user(), mode=0o600)
        if self.is_running():
            self._pg_ctl("reload")

    def pid(self) -> int | None:
        """The postmaster's pid when it is running, else None."""
        pidfile = self.datadir / "postmaster.pid"
        try:
            first = self.host.read_text(pidfile).splitlines()[0]
        except (FileNotFoundError, IndexError, PermissionError):
            return None
        pid = int(first)
        return pid if self.host.pid_alive(pid) else None

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self) -> None:
        if self.is_running():
            return
        if port_accepts(self.port, self.listen_address):
            raise PreconditionError(
                f"port {self.port} is taken by another program; cluster {self.name} cannot start"
            )
        self.host.make_dir(self.logfile.parent, owner=server_os_user(), mode=0o700)
        if not self.host.exists(self.logfile):
            self.host.write_text(self.logfile, "", owner=server_os_user(), mode=0o600)
        self.host.run(self.start_argv(), user=server_os_user(), timeout_s=START_TIMEOUT_S + 30)

    def stop(self, mode: str = "fast") -> None:
        pid = self.pid()
        if pid is None:
            return
        self._pg_ctl("-m", mode, "-w", "-t", str(START_TIMEOUT_S), "stop")
        # pg_ctl returns once the pid file is gone, a moment before the postmaster exits
        wait_until(
            lambda: not self.host.pid_alive(pid),
            what=f"postmaster {pid} of {self.name} to exit",
            timeout_s=START_TIMEOUT_S,
            interval_s=0.05,
        )

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.host.read_text(self.logfile, user=server_os_user())
        except (FileNotFoundError, RunbookError):
            return ""
        return "\n".join(text.splitlines()[-lines:])
