"""The machines of a warm standby (primary, standby, archive), each reached from where the
notebook runs: this machine when its SSH target is empty, else over SSH."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from runbook_lib import pgbin, pgversions, ssh_host
from runbook_lib.errors import ConfigurationError
from runbook_lib.host import LOCAL, LocalHost, display_command


def check_ssh_target(name: str, value: Any) -> str:
    if value in (None, ""):
        return ""
    try:
        ssh_host.parse_target(value)
    except (ConfigurationError, AttributeError):
        raise ConfigurationError(
            f"{name} must be [user@]host (how ssh reaches that machine) or empty for this "
            f"machine, got {value!r}"
        ) from None
    return value


def machine(target: str) -> str:
    """The machine of an SSH target (user@db1 and db1 are the same machine; "" is this one)."""
    return target.rpartition("@")[2]


def host_for(target: str, settings: dict[str, str]) -> LocalHost:
    """This machine for "", else the SSH host for target (ssh_host.SshHost, with the
    notebook's ssh_config, known hosts and key when given)."""
    return ssh_host.host_for(target, **{k: v or None for k, v in settings.items()})


def on(host: LocalHost) -> str:
    """The prefix of a plan line: which machine does it."""
    return f"on {host.name}:"


def shown(host: LocalHost, argv: list[str], user: str | None = None) -> str:
    """A command as a plan shows it: `on db1: runuser -u postgres -- pg_ctl ...`."""
    return f"{on(host)} {display_command(host.as_user(argv, user))}"


def server_bindir(host: LocalHost, major: int) -> PurePosixPath:
    """The bindir of PostgreSQL `major` on host: Debian's, else the runbooks' own build
    (runbook_lib.pgversions) in the system cache."""
    if host is LOCAL:
        return PurePosixPath(pgbin.server_bindir(major))
    candidates = [
        PurePosixPath("/usr/lib/postgresql", str(major), "bin"),
        PurePosixPath(str(pgversions.SYSTEM_CACHE), str(major), "bin"),
    ]
    for bindir in candidates:
        if host.exists(bindir / "postgres"):
            return bindir
    raise ConfigurationError(
        f"no PostgreSQL {major} server programs on {host.name} (looked in "
        f"{', '.join(map(str, candidates))}): install PostgreSQL {major} there"
    )


def pg_program(host: LocalHost, name: str, major: int | None = None) -> str:
    """Full path of a PostgreSQL program on host, of version `major` when given: as pgbin finds
    it here, elsewhere from `pg_config --bindir` or the newest /usr/lib/postgresql/N/bin."""
    if major is not None:
        path = server_bindir(host, major) / name
        if host is LOCAL or host.exists(path):
            return pgbin.program(name, Path(str(path.parent))) if host is LOCAL else str(path)
        raise ConfigurationError(f"{name} not found on {host.name} in {path.parent}")
    if host is LOCAL:
        return pgbin.program(name)
    candidates = []
    found = host.run(["pg_config", "--bindir"], check=False)
    if found.returncode == 0 and found.stdout.strip():
        candidates.append(PurePosixPath(found.stdout.strip()))
    versions = [v for v in host.list_dir("/usr/lib/postgresql") if v.isdigit()]
    candidates += [
        PurePosixPath("/usr/lib/postgresql", v, "bin")
        for v in sorted(versions, key=int, reverse=True)
    ]
    for bindir in candidates:
        if host.exists(bindir / name):
            return str(bindir / name)
    looked = ", ".join(map(str, candidates)) or "nowhere"
    raise ConfigurationError(
        f"{name} not found on {host.name} (looked in {looked}): install PostgreSQL's server "
        "package there"
    )
