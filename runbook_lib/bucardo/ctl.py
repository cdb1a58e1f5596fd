"""The bucardo command-line program, always with our own rc file (never /etc/bucardorc, which
holds a password and port 5432). Passwords for Bucardo's connections come from .pgpass or
PGPASSFILE, never from the rc file or argv.

The CLI and its daemon run on the control database's host: this machine, or the one
`bucardo_ssh` names (over SSH). As root there, they run as the `bucardo` OS user (Debian's package
creates it), never as root. The run directory stays ours (0711: the rc file, Bucardo's private
password file, the schema dump); Bucardo writes its pid files and logs only in RUNDIR/daemon,
which it owns. With Bucardo on another host, RUNDIR exists on both: the schema dump here, the rest
there."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

from runbook_lib.bucardo.config import BootstrapConfig
from runbook_lib.errors import CommandFailed, PreconditionError, RunbookError
from runbook_lib.host import LOCAL, CommandResult
from runbook_lib.passfile import PASSFILE_ENV, passfile_line, password_in_use, write_passfile
from runbook_lib.ssh_host import Host, host_for
from runbook_lib.waiting import wait_until

PROGRAM_ENV = "BUCARDO_PROGRAM"
RC_NAME = "bucardorc"
PASSFILE_NAME = "bucardo.pgpass"
DAEMON_DIRNAME = "daemon"
OS_USER = "bucardo"
MCP_PIDFILE = "bucardo.mcp.pid"
COMMAND_TIMEOUT_S = 300
STOP_TIMEOUT_S = 60
START_TIMEOUT_S = 60


def program(host: Host = LOCAL) -> str | None:
    """Path of the bucardo program on host (this machine: $BUCARDO_PROGRAM, else `bucardo` on
    PATH), None if absent."""
    name = os.environ.get(PROGRAM_ENV, "bucardo") if host is LOCAL else "bucardo"
    if "/" in name:
        return name if LOCAL.exists(name) and os.access(name, os.X_OK) else None
    return host.which(name)


def os_user(name: str = OS_USER, host: Host = LOCAL) -> str | None:
    """The OS user Bucardo runs as on host: `name` (bucardo_os_user) when we are root there,
    else the user we are (None)."""
    if not host.is_root():
        return None
    if not host.user_exists(name):
        raise PreconditionError(
            f"there is no OS user {name!r} (bucardo_os_user) on {host.name}: Bucardo never runs "
            f"as root; install Debian's bucardo package (it creates `bucardo`), `adduser --system "
            f"--group {name}`, or name another user"
        )
    return name


@functools.cache
def control_host(cfg: BootstrapConfig) -> Host:
    """Where Bucardo's CLI and daemon run: this machine, or the SSH target `bucardo_ssh` (one
    host object per configuration: it keeps the login it asked for)."""
    return host_for(
        cfg.bucardo_ssh,
        ssh_config=cfg.ssh_config or None,
        known_hosts=cfg.ssh_known_hosts or None,
        identity_file=cfg.ssh_identity_file or None,
    )


def log_location(cfg: BootstrapConfig) -> str:
    """Where to read Bucardo's log, as a person would look for it (`on HOST: path` when the
    daemon runs on another machine)."""
    path = f"{daemon_dir(cfg.bucardo_rundir)}/log.bucardo"
    host = control_host(cfg)
    return path if host is LOCAL else f"{path} on {host.name}"


def daemon_dir(rundir: Path) -> Path:
    """Where Bucardo writes its pid files and logs (owned by its OS user)."""
    return rundir / DAEMON_DIRNAME


class BucardoCtl:
    """Runs `bucardo --bucardorc RUNDIR/bucardorc ...` for one bootstrap's control database."""

    def __init__(self, cfg: BootstrapConfig) -> None:
        self.cfg = cfg
        self.host = control_host(cfg)
        self.rundir = cfg.bucardo_rundir
        self.daemondir = daemon_dir(cfg.bucardo_rundir)
        self.rcfile = cfg.bucardo_rundir / RC_NAME
        self.passfile = cfg.bucardo_rundir / PASSFILE_NAME

    def os_user(self) -> str | None:
        return os_user(self.cfg.bucardo_os_user, self.host)

    def program(self) -> str:
        found = program(self.host)
        if not found:
            raise PreconditionError(
                f"the bucardo program was not found on {self.host.name} (PATH or "
                "$BUCARDO_PROGRAM); install Bucardo 5.6 there (Debian package bucardo; here: "
                "scripts/install-system-deps.sh)"
            )
        return found

    def write_rc(self) -> None:
        """The rc file (no password: 0644 for Bucardo's user), the daemon directory (Bucardo's),
        and Bucardo's own password file when our connections use passwords."""
        c = self.cfg
        self.host.make_dir(self.rundir, mode=0o711)
        self.host.make_dir(self.daemondir, owner=self.os_user(), mode=0o700)
        text = (
            "# written by runbook_lib.bucardo: no password here (.pgpass / PGPASSFILE)\n"
            f"dbhost = {c.bucardo_host}\n"
            f"dbport = {c.bucardo_port}\n"
            f"dbname = {c.bucardo_dbname}\n"
            f"dbuser = {c.bucardouser}\n"
            f"piddir = {self.daemondir}\n"
            f"logdest = {self.daemondir}\n"
        )
        self.host.write_text(self.rcfile, text, mode=0o644)
        self.write_passfile()

    def write_passfile(self) -> None:
        """RUNDIR/bucardo.pgpass, 0600 and Bucardo's: the passwords our libpq uses for the
        control database and both masters (those Bucardo stores in bucardo.db anyway)."""
        c = self.cfg
        lines = []
        for ep in (c.control_admin, *c.databases().values()):
            password = password_in_use(ep.with_dbname("postgres"))
            if password:
                lines.append(passfile_line(ep, password))
        if lines:
            write_passfile(self.passfile, self.os_user(), lines, self.host)
        else:
            self.host.remove_file(self.passfile)

    def env(self) -> dict[str, str]:
        return {PASSFILE_ENV: str(self.passfile)} if self.host.exists(self.passfile) else {}

    def program_argv(self, args: Sequence[str]) -> list[str]:
        return [self.program(), "--bucardorc", str(self.rcfile), "--quiet", *args]

    def shown(self, args: Sequence[str]) -> str:
        """The command as it runs (on its host, as Bucardo's OS user): what dry-run plans show."""
        return self.host.describe(self.program_argv(args), self.os_user())

    def install_args(self) -> list[str]:
        c = self.cfg
        return ["install", "--batch", "--dbhost", c.bucardo_host, "--dbport", str(c.bucardo_port),
                "--dbname", c.bucardo_dbname, "--dbuser", c.bucardouser,
                "--piddir", str(self.daemondir)]  # fmt: skip

    def start_args(self, reason: str) -> list[str]:
        return ["start", "--logdest", str(self.daemondir), "--piddir", str(self.daemondir), reason]

    def run(
        self, args: Sequence[str], *, check: bool = True, timeout_s: float = COMMAND_TIMEOUT_S
    ) -> CommandResult:
        if not self.host.exists(self.rcfile):
            self.write_rc()
        return self.host.run(
            self.program_argv(args),
            user=self.os_user(),
            env=self.env(),
            check=check,
            timeout_s=timeout_s,
            cwd=self.daemondir,
        )

    def install(self) -> None:
        self.write_rc()
        self.run(self.install_args())

    # -- the daemon ---------------------------------------------------------------------------

    def mcp_pidfile(self) -> int | None:
        """The pid in the MCP's pid file, alive or not (None: no file)."""
        try:
            return int(self.host.read_text(self.daemondir / MCP_PIDFILE).split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def mcp_pid(self) -> int | None:
        """The running MCP's pid, None when there is none."""
        pid = self.mcp_pidfile()
        return pid if pid and running(self.host, pid) else None

    def pid_running(self, pid: int) -> bool:
        return running(self.host, pid)

    def controller_running(self, sync: str) -> bool:
        path = self.daemondir / f"bucardo.ctl.sync.{sync}.pid"
        try:
            pid = int(self.host.read_text(path).split()[0])
        except (OSError, ValueError, IndexError):
            return False
        return running(self.host, pid)

    def start(self, reason: str) -> None:
        """Start the daemon (restart when running) and wait until the sync's controller runs."""
        if self.mcp_pid():
            self.stop()
        self._remove_stale_pidfile()
        self.run(self.start_args(reason))
        self.wait_for_controller()

    def _remove_stale_pidfile(self) -> None:
        """A daemon killed with kill -9 leaves its pid file; `bucardo start` removes it only when
        the pid is gone, and refuses while it is an unreaped zombie (seen in containers)."""
        if self.mcp_pidfile() and not self.mcp_pid():
            self.host.remove_file(self.daemondir / MCP_PIDFILE)

    def wait_for_controller(self) -> None:
        wait_until(
            lambda: self.controller_running(self.cfg.sync),
            what=f"Bucardo's controller for sync {self.cfg.sync} "
            f"(log: {self.daemondir}/log.bucardo)",
            timeout_s=START_TIMEOUT_S,
            interval_s=0.3,
        )

    def stop(self) -> None:
        """`bucardo stop` only drops a stop file: wait until the processes are gone."""
        pid = self.mcp_pid()
        if not pid:
            return
        self.run(["stop", "--piddir", str(self.daemondir)])
        wait_until(
            lambda: not running(self.host, pid),
            what=f"Bucardo MCP pid {pid} to exit",
            timeout_s=STOP_TIMEOUT_S,
            interval_s=0.3,
        )

    def kick_args(self, timeout_s: int) -> list[str]:
        return ["kick", self.cfg.sync, str(max(1, int(timeout_s)))]

    def kick(self, timeout_s: int) -> int:
        """Kick the sync and wait up to timeout_s (0 is refused: it would wait forever).
        Exit status: 0 done, 1 timed out, 2 killed, 3 error."""
        timeout_s = max(1, int(timeout_s))
        try:
            self.run(self.kick_args(timeout_s), timeout_s=timeout_s + 60)
        except CommandFailed as exc:
            if exc.returncode in (1, 2):
                return exc.returncode
            raise
        return 0


def running(host: Host, pid: int) -> bool:
    """Alive on host and not a zombie (a stopped daemon's MCP can linger as one)."""
    if not host.pid_alive(pid):
        return False
    try:
        state = host.read_text(f"/proc/{pid}/stat").rsplit(")", 1)[1].split()[0]
    except (OSError, RunbookError, IndexError):
        return True
    return state != "Z"
