"""The bucardo command-line program, always with our own rc file (never /etc/bucardorc, which
holds a password and port 5432). Passwords for Bucardo's connections come from .pgpass or
PGPASSFILE, never from the rc file or argv."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from runbook_lib.bucardo.config import BootstrapConfig
from runbook_lib.errors import CommandFailed, PreconditionError
from runbook_lib.host import LOCAL, CommandResult
from runbook_lib.waiting import wait_until

PROGRAM_ENV = "BUCARDO_PROGRAM"
RC_NAME = "bucardorc"
MCP_PIDFILE = "bucardo.mcp.pid"
COMMAND_TIMEOUT_S = 300
STOP_TIMEOUT_S = 60
START_TIMEOUT_S = 60


def program() -> str | None:
    """Path of the bucardo program ($BUCARDO_PROGRAM, else `bucardo` on PATH), None if absent."""
    name = os.environ.get(PROGRAM_ENV, "bucardo")
    if "/" in name:
        return name if LOCAL.exists(name) and os.access(name, os.X_OK) else None
    return LOCAL.which(name)


class BucardoCtl:
    """Runs `bucardo --bucardorc RUNDIR/bucardorc ...` for one bootstrap's control database."""

    def __init__(self, cfg: BootstrapConfig) -> None:
        self.cfg = cfg
        self.rundir = cfg.bucardo_rundir
        self.rcfile = cfg.bucardo_rundir / RC_NAME

    def program(self) -> str:
        found = program()
        if not found:
            raise PreconditionError(
                "the bucardo program was not found (PATH or $BUCARDO_PROGRAM); install Bucardo 5.6 "
                "with scripts/install-system-deps.sh (Debian package bucardo)"
            )
        return found

    def write_rc(self) -> None:
        c = self.cfg
        LOCAL.make_dir(self.rundir, mode=0o755)
        text = (
            "# written by runbook_lib.bucardo: no password here (.pgpass / PGPASSFILE)\n"
            f"dbhost = {c.bucardo_host}\n"
            f"dbport = {c.bucardo_port}\n"
            f"dbname = {c.bucardo_dbname}\n"
            f"dbuser = {c.bucardouser}\n"
            f"piddir = {self.rundir}\n"
            f"logdest = {self.rundir}\n"
        )
        LOCAL.write_text(self.rcfile, text, mode=0o600)

    def argv(self, args: Sequence[str]) -> list[str]:
        return [self.program(), "--bucardorc", str(self.rcfile), "--quiet", *args]

    def install_args(self) -> list[str]:
        c = self.cfg
        return ["install", "--batch", "--dbhost", c.bucardo_host, "--dbport", str(c.bucardo_port),
                "--dbname", c.bucardo_dbname, "--dbuser", c.bucardouser,
                "--piddir", str(self.rundir)]  # fmt: skip

    def start_args(self, reason: str) -> list[str]:
        return ["start", "--logdest", str(self.rundir), "--piddir", str(self.rundir), reason]

    def run(
        self, args: Sequence[str], *, check: bool = True, timeout_s: float = COMMAND_TIMEOUT_S
    ) -> CommandResult:
        if not LOCAL.exists(self.rcfile):
            self.write_rc()
        return LOCAL.run(self.argv(args), check=check, timeout_s=timeout_s, cwd=self.rundir)

    def install(self) -> None:
        self.write_rc()
        self.run(self.install_args())

    # -- the daemon ---------------------------------------------------------------------------

    def mcp_pidfile(self) -> int | None:
        """The pid in the MCP's pid file, alive or not (None: no file)."""
        try:
            return int(LOCAL.read_text(self.rundir / MCP_PIDFILE).split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def mcp_pid(self) -> int | None:
        """The running MCP's pid, None when there is none."""
        pid = self.mcp_pidfile()
        return pid if pid and _running(pid) else None

    def pid_running(self, pid: int) -> bool:
        return _running(pid)

    def controller_running(self, sync: str) -> bool:
        path = self.rundir / f"bucardo.ctl.sync.{sync}.pid"
        try:
            pid = int(LOCAL.read_text(path).split()[0])
        except (OSError, ValueError, IndexError):
            return False
        return _running(pid)

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
            LOCAL.remove_file(self.rundir / MCP_PIDFILE)

    def wait_for_controller(self) -> None:
        wait_until(
            lambda: self.controller_running(self.cfg.sync),
            what=f"Bucardo's controller for sync {self.cfg.sync} (log: {self.rundir}/log.bucardo)",
            timeout_s=START_TIMEOUT_S,
            interval_s=0.3,
        )

    def stop(self) -> None:
        """`bucardo stop` only drops a stop file: wait until the processes are gone."""
        pid = self.mcp_pid()
        if not pid:
            return
        self.run(["stop", "--piddir", str(self.rundir)])
        wait_until(
            lambda: not _running(pid),
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


def _running(pid: int) -> bool:
    """Alive and not a zombie (a stopped daemon's MCP can linger as one)."""
    if not LOCAL.pid_alive(pid):
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"
