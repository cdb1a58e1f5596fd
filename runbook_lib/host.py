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

from runbook_lib.errors import CommandFailed, ConfigurationError
from runbook_lib.redaction import redact

log = logging.getLogger("runbook_lib")

STDERR_TAIL_LINES = 12


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

    def read_text(self, path: str | Path) -> str:
        return Path(path).read_text()

    def write_text(
        self, path: str | Path, text: str, *, owner: str | None = None, mode: int = 0o644
    ) -> None:
        """Write atomically (temp file then rename), then set owner and mode."""
        target = Path(path)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text)
        os.chmod(tmp, mode)
        if owner:
            self.chown(tmp, owner)
        os.replace(tmp, target)

    def make_dir(self, path: str | Path, *, owner: str | None = None, mode: int = 0o700) -> None:
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        os.chmod(p, mode)
        if owner:
            self.chown(p, owner)

    def chown(self, path: str | Path, owner: str, *, recursive: bool = False) -> None:
        if os.geteuid() != 0:
            return
        try:
            entry = pwd.getpwnam(owner)
        except KeyError as exc:
            raise ConfigurationError(f"OS user {owner!r} does not exist on {self.name}") from exc
        os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
        if recursive:
            for top, dirs, files in os.walk(path):
                for name in dirs + files:
                    os.chown(
                        os.path.join(top, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False
                    )

    def list_dir(self, path: str | Path) -> list[str]:
        p = Path(path)
        return sorted(x.name for x in p.iterdir()) if p.is_dir() else []

    def remove_file(self, path: str | Path) -> None:
        Path(path).unlink(missing_ok=True)

    def remove_tree(self, path: str | Path) -> None:
        shutil.rmtree(path, ignore_errors=False)

    def free_bytes(self, path: str | Path) -> int:
        """Free space on the filesystem holding path (or its nearest existing parent)."""
        p = Path(path).absolute()
        while not p.exists():
            p = p.parent
        return shutil.disk_usage(p).free

    def pid_alive(self, pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


LOCAL = LocalHost()
