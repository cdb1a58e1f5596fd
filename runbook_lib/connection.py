"""Admin connections: autocommit, rows as dicts (they load straight into pandas)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

from runbook_lib import record
from runbook_lib.errors import ConfigurationError, PreconditionError
from runbook_lib.redaction import redact

CONNECT_TIMEOUT_S = 10
# A server cut off the network (no reset, packets lost) would leave a query waiting for the
# kernel's retransmission limit, about 15 minutes: probe an idle connection after 5 s, every 2 s,
# give up after 3 lost probes, and drop unacknowledged sends after 15 s.
DEAD_PEER_SETTINGS = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 15_000,
}


@dataclass(frozen=True)
class Endpoint:
    """Where a database is, without secrets: libpq finds passwords in PGPASSWORD/.pgpass/service."""

    host: str
    port: int
    dbname: str
    user: str
    options: dict[str, str] = field(default_factory=dict)

    def conninfo_kwargs(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "dbname": self.dbname, "user": self.user}

    def with_dbname(self, dbname: str) -> Endpoint:
        return Endpoint(self.host, self.port, dbname, self.user, dict(self.options))

    def libpq_env(self) -> dict[str, str]:
        """The same endpoint as libpq environment variables, for pg_dump, psql and friends."""
        return {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGDATABASE": self.dbname,
            "PGUSER": self.user,
        }

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.dbname}"


def database_name(value: object, parameter: str = "pgdatabase") -> object:
    """The database parameter, or libpq's PGDATABASE when it is empty; neither: refused."""
    if value not in ("", None):
        return value
    from_env = os.environ.get("PGDATABASE", "")
    if not from_env:
        raise ConfigurationError(
            f"{parameter} is not set and PGDATABASE is not in the environment: give the name of "
            f"the database (parameter {parameter}, or export PGDATABASE before starting "
            "JupyterLab or the run); nothing was changed"
        )
    return from_env


def connect(endpoint: Endpoint, *, application_name: str = "runbook_lib") -> psycopg.Connection:
    """Open an autocommit dict-row connection, or raise PreconditionError saying why not."""
    try:
        conn = psycopg.connect(
            **{**DEAD_PEER_SETTINGS, **endpoint.conninfo_kwargs()},  # the operator's own win
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name=application_name,
        )
    except psycopg.OperationalError as exc:
        raise PreconditionError(
            f"cannot connect to {endpoint}: {redact(str(exc).strip())}; "
            "check host, port, user, and that the password is in PGPASSWORD, ~/.pgpass or a "
            "service file"
        ) from exc
    record.record_server_version(
        f"{endpoint.host}:{endpoint.port}",
        conn.info.parameter_status("server_version") or "",
        server_program(endpoint, conn),
    )
    return conn


_REMOTE_PROGRAMS: dict[str, str | None] = {}  # host:port:version -> what the server said


def server_program(endpoint: Endpoint, conn: psycopg.Connection) -> str | None:
    """The postgres binary serving conn: on this machine, the backend's own executable (when we
    may inspect its process); elsewhere, the BINDIR the server reports in pg_config (superusers
    only, asked once per server); None when neither can be read."""
    if endpoint.host in ("127.0.0.1", "localhost", "::1"):
        try:
            return os.readlink(f"/proc/{conn.info.backend_pid}/exe")
        except OSError:
            return None
    where = f"{endpoint.host}:{endpoint.port}:{conn.info.server_version}"
    if where not in _REMOTE_PROGRAMS:
        try:
            row = conn.execute(
                "SELECT setting FROM pg_catalog.pg_config WHERE name = 'BINDIR'"
            ).fetchone()
        except psycopg.errors.InsufficientPrivilege:
            row = None
        _REMOTE_PROGRAMS[where] = f"{row['setting']}/postgres" if row else None
    return _REMOTE_PROGRAMS[where]


def server_version_num(conn: psycopg.Connection) -> int:
    return int(conn.info.server_version)


def server_major(endpoint: Endpoint) -> int:
    """The server's major version (14 for 14.x), asked over a short connection."""
    with connect(endpoint, application_name="runbook_lib version") as conn:
        return server_version_num(conn) // 10000


def server_version_text(conn: psycopg.Connection) -> str:
    """The version as people write it: 15.20 (not 150020)."""
    return (conn.info.parameter_status("server_version") or "").split(" ")[0]
