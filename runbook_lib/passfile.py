"""Passwords handed to programs that run as another OS user (pg_basebackup as `postgres`,
Bucardo as `bucardo`): a libpq password file only that user can read, never argv or a log."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from runbook_lib.connection import Endpoint, connect
from runbook_lib.host import LOCAL

if TYPE_CHECKING:
    from runbook_lib.ssh_host import Host

PASSFILE_ENV = "PGPASSFILE"


def password_in_use(endpoint: Endpoint) -> str | None:
    """The password libpq sends for `endpoint` from our own credentials (PGPASSWORD, the
    password file, a service file), or None when the server asked for none."""
    with connect(endpoint) as conn:
        return conn.info.password if conn.pgconn.used_password else None


def _escape(field: str) -> str:
    return field.replace("\\", "\\\\").replace(":", "\\:")


def passfile_line(endpoint: Endpoint, password: str) -> str:
    """One .pgpass line for the endpoint's host, port and user, any database (replication too)."""
    parts = [endpoint.host, str(endpoint.port), "*", endpoint.user, password]
    return ":".join(_escape(p) for p in parts) + "\n"


def write_passfile(path: Path, user: str | None, lines: list[str], host: Host = LOCAL) -> None:
    """A 0600 password file owned by `user` (None: ourselves), written without following links."""
    host.write_text(path, "".join(lines), owner=user, mode=0o600)


@contextmanager
def passfile_env(
    endpoint: Endpoint, user: str | None, host: Host = LOCAL
) -> Iterator[dict[str, str]]:
    """libpq environment for a program run as `user` against `endpoint`: PGPASSFILE naming a
    private copy of the password we use there (in a fresh 0711 directory of ours, the file 0600
    owned by `user`), removed afterwards. Empty when no password is used."""
    password = password_in_use(endpoint)
    if password is None:
        yield {}
        return
    directory = _private_directory(host)
    try:
        path = directory / "pgpass"
        write_passfile(path, user, [passfile_line(endpoint, password)], host)
        yield {PASSFILE_ENV: str(path)}
    finally:
        if host is LOCAL:
            shutil.rmtree(directory, ignore_errors=True)
        else:
            host.remove_tree(directory)


def _private_directory(host: Host) -> Path:
    """A fresh 0711 directory of ours on host: `user` may reach the file in it, not list it."""
    if host is LOCAL:
        directory = Path(tempfile.mkdtemp(prefix="runbook-pgpass-"))
        directory.chmod(0o711)
        return directory
    made = host.run(["mktemp", "-d", "/tmp/runbook-pgpass-XXXXXXXXXX"]).stdout.strip()
    host.run(["chmod", "0711", made])
    return Path(made)
