"""A host runs programs and owns files. Every external program and every file written for a
server goes through one, so that a remote host (SSH) can later take the local one's place."""

from __future__ import annotations

import logging
import os
import pwd
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from runbook_lib import safe_files
from runbook_lib.errors import CommandFailed, ConfigurationError, PreconditionError, RunbookError
from runbook_lib.redaction import redact

log = logging.getLogger("runbook_lib")

STDERR_TAIL_LINES = 12
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's own: every OS user can run it


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def display_command(argv: Sequence[str]) -> str:
    """The command line as a person would type it, with secrets removed."""
    return redact(shlex.join(argv))


def _stderr_tail(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return redact("\n".join(lines[-STDERR_TAIL_LINES:]))


class LocalHost:
    """The machine this Python process runs on."""

    name = "localhost"

    def __repr__(self) -> str:
        return "LocalHost()"

    # -- programs -------------------------------------------------------------------------

    def command_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"LANG": "C", "LC_ALL": "C"})
        if extra:
            env.update(extra)
        return env

    def as_user(self, argv: Sequence[str], user: str | None) -> list[str]:
        """Prefix argv so it runs as `user` (only needed, and only possible, when root)."""
        if user is None or os.geteuid() != 0 or pwd.getpwuid(os.geteuid()).pw_name == user:
            return list(argv)
        return ["runuser", "-u", user, "--", *argv]

    def describe(self, argv: Sequence[str], user: str | None = None) -> str:
        """How a plan shows the command (a remote host prefixes `on NAME: `)."""
        return display_command(self.as_user(argv, user))

    def run(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
        cwd: str | Path | None = None,
        timeout_s: float | None = None,
        check: bool = True,
    ) -> CommandResult:
        """Run argv (never a shell string); raise CommandFailed on a non-zero exit."""
        full = self.as_user(argv, user)
        if cwd is None and full[0] == "runuser":
            cwd = "/"  # our working directory may be closed to the other user
        log.info("run: %s", display_command(full))
        proc = subprocess.run(
            full,
            input=input,
            capture_output=True,
            text=True,
            env=self.command_env(env),
            cwd=cwd,
            timeout=timeout_s,
            check=False,
        )
        result = CommandResult(tuple(full), proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise CommandFailed(
                Path(argv[0]).name,
                proc.returncode,
                _stderr_tail(proc.stderr),
                display_command(full),
            )
        return result

    def start(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        stdout_path: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a long-running program in its own session; its output goes to stdout_path."""
        full = self.as_user(argv, user)
        log.info("start: %s", display_command(full))
        out = open(stdout_path, "ab") if stdout_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            return subprocess.Popen(
                full,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.command_env(env),
                start_new_session=True,
            )
        finally:
            if stdout_path:
                out.close()

    def pipeline(
        self,
        producer: Sequence[str],
        consumer: Sequence[str],
        *,
        user: str | None = None,
        producer_env: Mapping[str, str] | None = None,
        consumer_env: Mapping[str, str] | None = None,
    ) -> None:
        """producer | consumer, checking both exit statuses (a shell pipe would hide one)."""
        left = self.as_user(producer, user)
        right = self.as_user(consumer, user)
        log.info("run: %s | %s", display_command(left), display_command(right))
        p1 = subprocess.Popen(
            left, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.command_env(producer_env)
        )
        p2 = subprocess.Popen(
            right,
            stdin=p1.stdout,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.command_env(consumer_env),
        )
        assert p1.stdout is not None
        p1.stdout.close()  # so the producer gets SIGPIPE if the consumer dies
        _, err2 = p2.communicate()
        err1 = p1.stderr.read() if p1.stderr else b""
        p1.wait()
        for argv, proc, err in ((producer, p1, err1), (consumer, p2, err2)):
            if proc.returncode != 0:
                raise CommandFailed(
                    Path(argv[0]).name,
                    proc.returncode,
                    _stderr_tail(err.decode(errors="replace")),
                    display_command(argv),
                )

    def which(self, program: str) -> str | None:
        return shutil.which(program)

    # -- files ----------------------------------------------------------------------------

    def exists(self, path: str | Path) -> bool:
        return Path(path).exists()

    def read_text(self, path: str | Path, *, user: str | None = None) -> str:
        """The file's text; read as `user` (the owner of the directory) when that is another OS
        user, so that a symlink it planted cannot make us read a file it may not."""
        if self._other_user(user):
            return self.run(["cat", "--", str(path)], user=user).stdout
        return Path(path).read_text()

    def _other_user(self, user: str | None) -> bool:
        return bool(user) and os.geteuid() == 0 and pwd.getpwuid(os.geteuid()).pw_name != user

    def _ids(self, owner: str | None) -> tuple[int, int]:
        if not owner or os.geteuid() != 0:
            return -1, -1
        try:
            entry = pwd.getpwnam(owner)
        except KeyError as exc:
            raise ConfigurationError(f"OS user {owner!r} does not exist on {self.name}") from exc
        return entry.pw_uid, entry.pw_gid

    def _as_owner(self, owner: str, op: str, path: Path, mode: int, data: str | None) -> None:
        """Do a file operation as `owner` with the same code (safe_files run by the system's
        python3, which every user can execute)."""
        source = Path(safe_files.__file__).read_text()
        argv = [SYSTEM_PYTHON, "-I", "-S", "-c", source, op, str(path), f"{mode:o}"]
        full = self.as_user(argv, owner)
        log.info("%s %s as %s (mode %04o)", op, path, owner, mode)
        proc = subprocess.run(
            full, input=data or "", capture_output=True, text=True, cwd="/", check=False
        )
        if proc.returncode != 0:
            raise CommandFailed(
                f"{op} as {owner}", proc.returncode, _stderr_tail(proc.stderr), f"{op} {path}"
            )

    def _in_parent(self, target: Path, owner: str | None, as_owner: tuple, here):
        """`here(dir_fd)` in target's directory when only root (or we) control it; otherwise, in
        a directory of `owner`, the operation `as_owner` (op, mode, data) done as `owner`
        (returns None); anywhere else refused."""
        try:
            dir_fd = safe_files.open_trusted_dir(str(target.parent))
        except safe_files.UntrustedDirectory as exc:
            if not self._other_user(owner):
                raise self._untrusted(target, owner, exc) from None
            op, mode, data = as_owner
            self._as_owner(owner, op, target, mode, data)
            return None
        try:
            return here(dir_fd)
        finally:
            os.close(dir_fd)

    def _untrusted(self, path: Path, owner: str | None, exc: OSError) -> RunbookError:
        return PreconditionError(
            f"{path.parent} is not a safe place for a file of {owner or 'ours'}: {exc}; give "
            "it an owner that controls the directory, or choose a directory only root controls"
        )

    def write_text(
        self, path: str | Path, text: str, *, owner: str | None = None, mode: int = 0o600
    ) -> None:
        """Write atomically without following a symlink (exclusive temporary file, rename),
        with `owner` and `mode` set on the open file. In a directory only root (or we) control
        it is done here; in a directory of `owner` it is done as `owner`; elsewhere refused."""
        target = Path(path).absolute()
        self._in_parent(
            target, owner, ("write", mode, text),
            lambda fd: safe_files.write_at(fd, target.name, text.encode(), mode, *self._ids(owner)),
        )  # fmt: skip

    def make_dir(self, path: str | Path, *, owner: str | None = None, mode: int = 0o700) -> bool:
        """Create the directory (and missing parents, 0755, ours) with `owner` and `mode`;
        one that exists is left exactly as it is. True when it was created."""
        target = Path(path).absolute()
        if target.is_dir():
            return False
        if not target.parent.exists():
            self.make_dir(target.parent, mode=0o755)
        made = self._in_parent(
            target, owner, ("mkdir", mode, None),
            lambda fd: safe_files.mkdir_at(fd, target.name, mode, *self._ids(owner)),
        )  # fmt: skip
        return True if made is None else made

    def chown(self, path: str | Path, owner: str, *, recursive: bool = False) -> None:
        """chown (-R) without following any symlink: descriptors all the way down (os.fwalk)."""
        uid, gid = self._ids(owner)
        if uid == -1:
            return
        os.chown(path, uid, gid, follow_symlinks=False)
        if recursive and Path(path).is_dir() and not Path(path).is_symlink():
            for _top, dirs, files, top_fd in os.fwalk(path, follow_symlinks=False):
                for name in dirs + files:
                    os.chown(name, uid, gid, dir_fd=top_fd, follow_symlinks=False)

    def list_dir(self, path: str | Path) -> list[str]:
        p = Path(path)
        return sorted(x.name for x in p.iterdir()) if p.is_dir() else []

    def remove_tree(self, path: str | Path) -> None:
        shutil.rmtree(path, ignore_errors=False)  # descriptor-based: never follows a symlink

    def remove_file(self, path: str | Path) -> None:
        """Remove one file (a symlink itself, never its target); absent is fine."""
        Path(path).unlink(missing_ok=True)

    def free_bytes(self, path: str | Path) -> int:
        """Free space on the filesystem holding path (or its nearest existing parent)."""
        p = Path(path).absolute()
        while not p.exists():
            p = p.parent
        return shutil.disk_usage(p).free

    def check_reachable(self) -> str:
        """This machine is always reachable; returns who we are (as SshHost does)."""
        return pwd.getpwuid(os.geteuid()).pw_name

    def is_root(self) -> bool:
        return os.geteuid() == 0

    def user_exists(self, user: str) -> bool:
        try:
            pwd.getpwnam(user)
        except KeyError:
            return False
        return True

    def pid_alive(self, pid: int) -> bool:
        """Whether pid runs. An exited process its parent has not reaped yet (a zombie: a
        stopped postmaster waits there for init, here up to 2 s) is not alive."""
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True  # no /proc: the signal said it exists
        return stat.rsplit(")", 1)[1].split()[0] != "Z"


LOCAL = LocalHost()
