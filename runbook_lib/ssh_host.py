"""A host reached over SSH, with the interface of LocalHost (host.py).

The system's OpenSSH client does the work: every remote command is an argv joined with
shlex.join (the remote shell only ever sees quoted words), host keys are checked against a
known_hosts file (StrictHostKeyChecking=yes, BatchMode=yes: keys or an agent, never a
password prompt), and one control master per host and login (socket in a private 0700
directory, kept for ControlPersist seconds) carries every command, so only the first pays for
the handshake. Files are written on the remote host by the same stdlib code as locally
(safe_files, run by the remote system python3): temporary file, fsync, rename, owner and mode.

Paths given to an SshHost are paths on that host and must be absolute.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import posixpath
import re
import shlex
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from runbook_lib import safe_files
from runbook_lib.errors import CommandFailed, ConfigurationError, PreconditionError
from runbook_lib.host import (
    LOCAL,
    SYSTEM_PYTHON,
    CommandResult,
    LocalHost,
    _stderr_tail,
    display_command,
)

log = logging.getLogger("runbook_lib")

SSH_PROGRAM = "ssh"
DEFAULT_CONNECT_TIMEOUT_S = 10
DEFAULT_CONTROL_PERSIST_S = 60
# A dead link is noticed after ALIVE_INTERVAL_S * ALIVE_COUNT seconds of silence.
ALIVE_INTERVAL_S = 5
ALIVE_COUNT = 3
SSH_ERROR_STATUS = 255
MAX_CONTROL_DIR_CHARS = 48  # + "/" + %C (40 hex) + ssh's temporary suffix (17) <= 107

_TARGET = re.compile(
    r"^(?:(?P<user>[A-Za-z_][A-Za-z0-9._-]*)@)?(?P<host>[A-Za-z0-9][A-Za-z0-9.-]*)(?::(?P<port>\d+))?$"
)

_HOST_KEY_SIGNS = (
    "Host key verification failed",
    "REMOTE HOST IDENTIFICATION HAS CHANGED",
    "host key is known",
    "No matching host key",
)
_AUTH_SIGNS = ("Permission denied",)
_UNREACHABLE_SIGNS = (
    "Connection timed out",
    "Connection refused",
    "No route to host",
    "Network is unreachable",
    "Could not resolve hostname",
    "Name or service not known",
    "Connection closed",
    "Connection reset",
    "Broken pipe",
    "Timeout, server",
    "timed out",
    "kex_exchange_identification",
    "mux_client",
    "Control socket connect",
)


class SshFailed(CommandFailed):
    """ssh itself failed (exit 255): the command may not have run. `kind` is `host key`,
    `authentication` or `unreachable`."""

    def __init__(self, host_name: str, kind: str, stderr_tail: str, command: str) -> None:
        self.host_name = host_name
        self.kind = kind
        super().__init__(f"ssh to {host_name} ({kind})", SSH_ERROR_STATUS, stderr_tail, command)


class HostUnreachable(PreconditionError):
    """The host does not answer over SSH (checked before anything was changed)."""


class HostKeyMismatch(ConfigurationError):
    """The host's key is not the one in known_hosts (or none is known)."""


class SshAuthenticationFailed(ConfigurationError):
    """The host refused our key (or agent) for that login."""


class MissingProgram(PreconditionError):
    """A program a step needs is not installed on the host."""


@dataclass(frozen=True)
class SshSettings:
    """How to reach hosts over SSH; None leaves the choice to ssh_config (or ssh's default)."""

    port: int | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    ssh_config: str | None = None
    control_dir: str | None = None
    connect_timeout_s: int = DEFAULT_CONNECT_TIMEOUT_S
    control_persist_s: int = DEFAULT_CONTROL_PERSIST_S


def parse_target(target: str) -> tuple[str | None, str, int | None]:
    """`user@host:port` (user and port optional) -> (user, host, port); anything else is
    refused (a target starting with `-` would be an ssh option)."""
    match = _TARGET.match(target.strip())
    if not match:
        raise ConfigurationError(
            f"{target!r} is not an SSH target: write host, user@host or user@host:port "
            "(for example postgres@db1.example.com); leave it empty for this machine"
        )
    port = int(match["port"]) if match["port"] else None
    return match["user"], match["host"], port


def host_for(
    target: str | None,
    *,
    port: int | None = None,
    identity_file: str | Path | None = None,
    known_hosts: str | Path | None = None,
    ssh_config: str | Path | None = None,
    control_dir: str | Path | None = None,
) -> LocalHost | SshHost:
    """The host a parameter such as `postgres@db1.example.com` names; empty: this machine."""
    if not target or not target.strip():
        return LOCAL
    user, hostname, target_port = parse_target(target)
    settings = SshSettings(
        port=target_port or port,
        identity_file=str(identity_file) if identity_file else None,
        known_hosts=str(known_hosts) if known_hosts else None,
        ssh_config=str(ssh_config) if ssh_config else None,
        control_dir=str(control_dir) if control_dir else None,
    )
    return SshHost(hostname, user=user, settings=settings)


def short_name(hostname: str) -> str:
    """db1 for db1.example.com; an address stays whole."""
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return hostname.split(".")[0]
    return hostname


def private_control_dir(path: str | None = None) -> str:
    """The directory of control sockets: ours, mode 0700, a real directory (not a link)."""
    path = path or f"/tmp/runbook-ssh-{os.geteuid()}"
    if len(path) > MAX_CONTROL_DIR_CHARS:
        raise ConfigurationError(
            f"{path} is too long for SSH control sockets (a socket path holds at most 107 "
            f"bytes, the socket name takes 58): choose a directory of at most "
            f"{MAX_CONTROL_DIR_CHARS} characters"
        )
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise PreconditionError(
            f"{path} must be a directory of uid {os.geteuid()} with mode 0700 (it holds SSH "
            "control sockets); remove it or choose another control_dir"
        )
    return path


def _classify(stderr: str) -> str | None:
    """What went wrong in ssh itself, from its messages; None: the remote command's own 255."""
    for kind, signs in (
        ("host key", _HOST_KEY_SIGNS),
        ("authentication", _AUTH_SIGNS),
        ("unreachable", _UNREACHABLE_SIGNS),
    ):
        if any(sign in stderr for sign in signs):
            return kind
    return "unreachable" if stderr.lstrip().startswith("ssh:") else None


_PY_READ = """import sys
try:
    data = open(sys.argv[1], "rb").read()
except FileNotFoundError as exc:
    print(exc, file=sys.stderr); sys.exit(2)
except PermissionError as exc:
    print(exc, file=sys.stderr); sys.exit(3)
sys.stdout.buffer.write(data)
"""
_PY_LIST = """import os, sys
p = sys.argv[1]
sys.stdout.write("\\0".join(sorted(os.listdir(p))) if os.path.isdir(p) else "")
"""
_PY_FREE = """import os, shutil, sys
p = os.path.abspath(sys.argv[1])
while not os.path.exists(p):
    p = os.path.dirname(p)
print(shutil.disk_usage(p).free)
"""
_PY_PID = """import os, sys
pid = int(sys.argv[1])
try:
    os.kill(pid, 0)
except ProcessLookupError:
    print("dead"); sys.exit()
except PermissionError:
    pass
try:
    state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
except (OSError, IndexError):
    state = "?"
print("dead" if state in ("Z", "X") else "alive")
"""
_SH_WHICH = 'for p; do command -v "$p" || echo "MISSING $p"; done; exit 0'


class SshHost:
    """A machine reached with the system's ssh client. `name` is its short name (db1)."""

    def __init__(
        self, hostname: str, *, user: str | None = None, settings: SshSettings | None = None
    ) -> None:
        parse_target(hostname)  # refuses anything that is not a plain host name or address
        self.hostname = hostname
        self.user = user
        self.settings = settings or SshSettings()
        self.name = short_name(hostname)
        self._login: str | None = user

    def __repr__(self) -> str:
        who = f"{self.user}@" if self.user else ""
        return f"SshHost({who}{self.hostname})"

    @property
    def target(self) -> str:
        return f"{self.user}@{self.hostname}" if self.user else self.hostname

    # -- the ssh command line -------------------------------------------------------------

    def ssh_argv(self, remote: str | None = None, *, master: bool = True) -> list[str]:
        """The local ssh command line running `remote` (already quoted) on this host."""
        s = self.settings
        argv = [SSH_PROGRAM]
        if s.ssh_config:
            argv += ["-F", s.ssh_config]
        options = {
            "BatchMode": "yes",
            "StrictHostKeyChecking": "yes",
            "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no",
            "ConnectTimeout": str(s.connect_timeout_s),
            "ServerAliveInterval": str(ALIVE_INTERVAL_S),
            "ServerAliveCountMax": str(ALIVE_COUNT),
        }
        if master:
            options["ControlMaster"] = "auto"
            options["ControlPath"] = f"{private_control_dir(s.control_dir)}/%C"
            options["ControlPersist"] = str(s.control_persist_s)
        else:
            options["ControlMaster"] = "no"
            options["ControlPath"] = "none"
        if s.known_hosts:
            options["UserKnownHostsFile"] = s.known_hosts
        if s.identity_file:
            options["IdentityFile"] = s.identity_file
            options["IdentitiesOnly"] = "yes"
        for key, value in options.items():
            argv += ["-o", f"{key}={value}"]
        if s.port:
            argv += ["-p", str(s.port)]
        if self.user:
            argv += ["-l", self.user]
        argv += ["-T", "--", self.hostname]
        if remote is not None:
            argv.append(remote)
        return argv

    def login_user(self) -> str:
        """The remote login name (from the target, or asked once: ssh_config may set it)."""
        if self._login is None:
            self._login = self._ssh(["id", "-un"]).stdout.strip()
        return self._login

    # -- programs -------------------------------------------------------------------------

    def command_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The variables a remote command gets on top of its login environment."""
        env = {"LANG": "C", "LC_ALL": "C"}
        if extra:
            if "PGPASSWORD" in extra:
                raise ConfigurationError(
                    f"a password cannot be sent to {self.name} on a command line: "
                    "give the remote program a password file (PGPASSFILE) on that host"
                )
            env.update(extra)
        return env

    def as_user(self, argv: Sequence[str], user: str | None) -> list[str]:
        """Prefix argv so it runs as `user` on the remote host (runuser when we log in as
        root, sudo -n otherwise)."""
        if user is None or user == self.login_user():
            return list(argv)
        if self.login_user() == "root":
            return ["runuser", "-u", user, "--", *argv]
        return ["sudo", "-n", "-u", user, "--", *argv]

    def describe(self, argv: Sequence[str], user: str | None = None) -> str:
        """How a plan shows the command: `on db1: runuser -u postgres -- pg_ctl ...`."""
        return f"on {self.name}: {display_command(self.as_user(argv, user))}"

    def remote_command(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        stdout_path: str | Path | None = None,
    ) -> str:
        """One string of shell-quoted words: `cd DIR && exec env K=V... [runuser ...] argv`."""
        assignments = [f"{k}={v}" for k, v in self.command_env(env).items()]
        wrapped = self.as_user(["env", *assignments, *argv], user)
        if cwd is None and wrapped[0] in ("runuser", "sudo"):
            cwd = "/"  # our login's home may be closed to the other user
        command = "exec " + shlex.join(wrapped)
        if stdout_path is not None:
            command += f" >>{shlex.quote(self._abs(stdout_path))} 2>&1 </dev/null"
        if cwd is not None:
            command = f"cd -- {shlex.quote(str(cwd))} && {command}"
        return command

    def _raise_for_ssh(self, stderr: str, shown: str) -> None:
        kind = _classify(stderr)
        if kind:
            raise SshFailed(self.name, kind, _stderr_tail(stderr), shown)

    def _ssh(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
        cwd: str | Path | None = None,
        timeout_s: float | None = None,
        check: bool = True,
        program: str | None = None,
    ) -> CommandResult:
        remote = self.remote_command(argv, user=user, env=env, cwd=cwd)
        shown = self.describe(argv, user)
        log.info("run: %s", shown)
        proc = subprocess.run(
            self.ssh_argv(remote),
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if proc.returncode == SSH_ERROR_STATUS:
            self._raise_for_ssh(proc.stderr, shown)
        result = CommandResult(
            tuple(self.as_user(argv, user)), proc.returncode, proc.stdout, proc.stderr
        )
        if check and proc.returncode != 0:
            raise CommandFailed(
                program or posixpath.basename(argv[0]),
                proc.returncode,
                _stderr_tail(proc.stderr),
                shown,
            )
        return result

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
        """Run argv on the host; CommandFailed on a non-zero exit, SshFailed when ssh itself
        failed (even with check=False: a host we cannot reach answers nothing)."""
        return self._ssh(
            argv, user=user, env=env, input=input, cwd=cwd, timeout_s=timeout_s, check=check
        )

    def start(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        stdout_path: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a long-running program on the host; returns the local ssh process, which
        lasts as long as the program. Its output is appended to stdout_path ON THE HOST."""
        remote = self.remote_command(argv, user=user, env=env, stdout_path=stdout_path)
        log.info("start: %s", self.describe(argv, user))
        return subprocess.Popen(
            self.ssh_argv(remote),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def pipeline(
        self,
        producer: Sequence[str],
        consumer: Sequence[str],
        *,
        user: str | None = None,
        producer_env: Mapping[str, str] | None = None,
        consumer_env: Mapping[str, str] | None = None,
    ) -> None:
        """producer | consumer, both on the host, each exit status checked."""
        left = self.ssh_argv(self.remote_command(producer, user=user, env=producer_env))
        right = self.ssh_argv(self.remote_command(consumer, user=user, env=consumer_env))
        log.info("run: %s | %s", self.describe(producer, user), display_command(consumer))
        p1 = subprocess.Popen(
            left, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        p2 = subprocess.Popen(
            right, stdin=p1.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert p1.stdout is not None
        p1.stdout.close()
        _, err2 = p2.communicate()
        err1 = p1.stderr.read() if p1.stderr else b""
        p1.wait()
        for argv, proc, err in ((producer, p1, err1), (consumer, p2, err2)):
            text = err.decode(errors="replace")
            if proc.returncode == SSH_ERROR_STATUS:
                self._raise_for_ssh(text, self.describe(argv, user))
            if proc.returncode != 0:
                raise CommandFailed(
                    posixpath.basename(argv[0]),
                    proc.returncode,
                    _stderr_tail(text),
                    self.describe(argv, user),
                )

    def which(self, program: str) -> str | None:
        return self.find_programs([program]).get(program)

    def find_programs(self, programs: Sequence[str], *, user: str | None = None) -> dict[str, str]:
        """Full paths of the programs found on the host's PATH (one round trip)."""
        out = self._ssh(["sh", "-c", _SH_WHICH, "sh", *programs], user=user).stdout
        found = {}
        for program, line in zip(programs, out.splitlines(), strict=False):
            if not line.startswith("MISSING "):
                found[program] = line.strip()
        return found

    # -- preflight ------------------------------------------------------------------------

    def check_reachable(self, timeout_s: float | None = None) -> str:
        """Log in and run `true`; a clear error (nothing changed) when that fails. Returns
        the login name. The default timeout covers a new connection's ConnectTimeout and a
        control master noticing its link is dead."""
        timeout = timeout_s or self.settings.connect_timeout_s + ALIVE_INTERVAL_S * ALIVE_COUNT
        try:
            self._ssh(["true"], timeout_s=timeout)
        except subprocess.TimeoutExpired:
            raise HostUnreachable(
                f"{self.name} ({self.target}) did not answer over SSH within {timeout:g} s; "
                "check the network and that sshd runs there"
            ) from None
        except SshFailed as exc:
            raise self._preflight_error(exc) from None
        return self.login_user()

    def _preflight_error(self, exc: SshFailed) -> Exception:
        where = f"{self.name} ({self.target})"
        if exc.kind == "host key":
            known = self.settings.known_hosts or "~/.ssh/known_hosts"
            return HostKeyMismatch(
                f"the host key of {where} is not the one in {known} (or none is known there): "
                f"verify the host's fingerprint, then fix {known}. ssh said: {exc.stderr_tail}"
            )
        if exc.kind == "authentication":
            return SshAuthenticationFailed(
                f"{where} refused our SSH key: install the operator's public key for that "
                f"login, or load the key into ssh-agent. ssh said: {exc.stderr_tail}"
            )
        return HostUnreachable(
            f"cannot reach {where} over SSH: {exc.stderr_tail}; check the address, the "
            "network and that sshd runs there"
        )

    def require_programs(
        self, programs: Sequence[str], *, user: str | None = None
    ) -> dict[str, str]:
        """Paths of programs that must exist on the host; MissingProgram names every absent one."""
        found = self.find_programs(programs, user=user)
        missing = [p for p in programs if p not in found]
        if missing:
            raise MissingProgram(
                f"{', '.join(missing)} not found on {self.name} (PATH of "
                f"{user or self.login_user()}): install it there, or give its full path"
            )
        return found

    # -- the control master ---------------------------------------------------------------

    def master_pid(self) -> int | None:
        """The pid of the control master for this host, when one runs."""
        proc = subprocess.run(
            [*self.ssh_argv()[:-2], "-O", "check", "--", self.hostname],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        match = re.search(r"pid=(\d+)", proc.stderr + proc.stdout)
        return int(match[1]) if proc.returncode == 0 and match else None

    def close(self) -> None:
        """Stop the control master (if any); the next command opens a new one."""
        subprocess.run(
            [*self.ssh_argv()[:-2], "-O", "exit", "--", self.hostname],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )

    # -- files ----------------------------------------------------------------------------

    def _abs(self, path: str | Path) -> str:
        text = str(path)
        if not PurePosixPath(text).is_absolute():
            raise ConfigurationError(f"{text!r}: a path on {self.name} must be absolute")
        return posixpath.normpath(text)

    def _python(self, script: str, *args: str, user: str | None = None, **kw) -> CommandResult:
        return self._ssh(
            [SYSTEM_PYTHON, "-I", "-S", "-c", script, *args], user=user, program="python3", **kw
        )

    def exists(self, path: str | Path) -> bool:
        return self._ssh(["test", "-e", self._abs(path)], check=False).returncode == 0

    def read_text(self, path: str | Path, *, user: str | None = None) -> str:
        result = self._python(_PY_READ, self._abs(path), user=user, check=False)
        if result.returncode == 2:
            raise FileNotFoundError(f"{path} on {self.name}: {result.stderr.strip()}")
        if result.returncode == 3:
            raise PermissionError(f"{path} on {self.name}: {result.stderr.strip()}")
        if result.returncode != 0:
            raise CommandFailed(
                "python3", result.returncode, _stderr_tail(result.stderr), f"read {path}"
            )
        return result.stdout

    def _other_user(self, user: str | None) -> bool:
        return bool(user) and self.login_user() == "root" and user != "root"

    def _safe_files(
        self, op: str, path: str, mode: int, *, owner: str | None, data: str | None
    ) -> CommandResult:
        """Run safe_files on the host: `op` as ourselves in a trusted directory, or, when the
        directory is not, the owner's own op as the owner (as LocalHost does)."""
        source = Path(safe_files.__file__).read_text()
        give = owner if self._other_user(owner) else "-"
        trusted = self._python(
            source, f"{op}-trusted", path, f"{mode:o}", give, input=data or "", check=False
        )
        if trusted.returncode == 0:
            return trusted
        if trusted.returncode != safe_files.UNTRUSTED_EXIT:
            raise CommandFailed(
                op, trusted.returncode, _stderr_tail(trusted.stderr), f"{op} {path} on {self.name}"
            )
        if not self._other_user(owner):
            raise PreconditionError(
                f"{posixpath.dirname(path)} on {self.name} is not a safe place for a file of "
                f"{owner or 'ours'}: {trusted.stderr.strip()}; give it an owner that controls "
                "the directory, or choose a directory only root controls"
            )
        log.info("%s %s on %s as %s (mode %04o)", op, path, self.name, owner, mode)
        return self._python(source, op, path, f"{mode:o}", user=owner, input=data or "")

    def write_text(
        self, path: str | Path, text: str, *, owner: str | None = None, mode: int = 0o600
    ) -> None:
        """Atomically (temporary file, fsync, rename), never through a symlink, with owner
        and mode set on the open file; same rules as LocalHost.write_text."""
        self._safe_files("write", self._abs(path), mode, owner=owner, data=text)

    def make_dir(self, path: str | Path, *, owner: str | None = None, mode: int = 0o700) -> bool:
        """Create the directory (missing parents 0755, ours); an existing one is left as it
        is. True when it was created."""
        target = self._abs(path)
        if self._ssh(["test", "-d", target], check=False).returncode == 0:
            return False
        parent = posixpath.dirname(target)
        if not self.exists(parent):
            self.make_dir(parent, mode=0o755)
        result = self._safe_files("mkdir", target, mode, owner=owner, data=None)
        return result.stdout.strip() != "exists"

    def chown(self, path: str | Path, owner: str, *, recursive: bool = False) -> None:
        """chown (-R) without following symlinks; only possible when we log in as root."""
        if self.login_user() != "root":
            return
        argv = ["chown", "-h", *(["-R"] if recursive else []), "--", f"{owner}:", self._abs(path)]
        result = self._ssh(argv, check=False)
        if "invalid user" in result.stderr:
            raise ConfigurationError(f"OS user {owner!r} does not exist on {self.name}")
        if result.returncode != 0:
            raise CommandFailed(
                "chown", result.returncode, _stderr_tail(result.stderr), self.describe(argv)
            )

    def list_dir(self, path: str | Path) -> list[str]:
        out = self._python(_PY_LIST, self._abs(path)).stdout
        return [name for name in out.split("\0") if name]

    def remove_tree(self, path: str | Path) -> None:
        self._ssh(["rm", "-r", "-f", "--", self._abs(path)])

    def remove_file(self, path: str | Path) -> None:
        """Remove one file (a symlink itself, never its target); absent is fine."""
        self._ssh(["rm", "-f", "--", self._abs(path)])

    def free_bytes(self, path: str | Path) -> int:
        return int(self._python(_PY_FREE, self._abs(path)).stdout.strip())

    def pid_alive(self, pid: int) -> bool:
        """Whether the process exists and is not a zombie (an exited child nobody reaped)."""
        return self._python(_PY_PID, str(int(pid))).stdout.strip() == "alive"
