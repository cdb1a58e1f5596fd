"""Endpoints from libpq connection strings or service names, for `runbook compare`.

The password, when a connection string carries one, is kept for libpq but never shown: str(),
repr() and error messages name user, host, port and database only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from runbook_lib.connection import Endpoint
from runbook_lib.errors import ConfigurationError
from runbook_lib.redaction import redact


@dataclass(frozen=True)
class ConninfoEndpoint(Endpoint):
    """An Endpoint that connects with every libpq keyword of a connection string."""

    params: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def conninfo_kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    def libpq_env(self) -> dict[str, str]:
        """The connection string as libpq environment variables (for pg_dump, psql, ...);
        a password, if the string had one, goes to PGPASSWORD, never to an argv."""
        env = {_ENV[k]: v for k, v in self.params if k in _ENV}
        if "service" not in dict(self.params):  # without a service, pin the resolved parts
            env = super().libpq_env() | env
        return env

    def with_dbname(self, dbname: str) -> ConninfoEndpoint:
        params = tuple((k, v) for k, v in self.params if k != "dbname") + (("dbname", dbname),)
        return ConninfoEndpoint(self.host, self.port, dbname, self.user, {}, params)

    def __str__(self) -> str:
        service = dict(self.params).get("service")
        where = f"{self.user}@{self.host}:{self.port}/{self.dbname}"
        return f"service={service} ({where})" if service else where

    def __repr__(self) -> str:
        return f"ConninfoEndpoint({self})"


_ENV = {
    "host": "PGHOST", "hostaddr": "PGHOSTADDR", "port": "PGPORT", "dbname": "PGDATABASE",
    "user": "PGUSER", "password": "PGPASSWORD", "passfile": "PGPASSFILE",
    "service": "PGSERVICE", "options": "PGOPTIONS", "application_name": "PGAPPNAME",
    "connect_timeout": "PGCONNECT_TIMEOUT", "sslmode": "PGSSLMODE", "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY", "sslrootcert": "PGSSLROOTCERT", "target_session_attrs":
    "PGTARGETSESSIONATTRS",
}  # fmt: skip


def endpoint_from_conninfo(conninfo: str) -> ConninfoEndpoint:
    """'host=db1 dbname=app', 'postgresql://u@db1/app' or a bare service name ('app_prod').

    Unset parts are shown as libpq would resolve them from PG* variables (the connection itself
    is left to libpq, including the service file and ~/.pgpass).
    """
    text = conninfo.strip()
    if text and "=" not in text and "://" not in text:
        text = f"service={text}"
    try:
        params = {k: str(v) for k, v in conninfo_to_dict(text).items() if v is not None}
    except psycopg.ProgrammingError as exc:
        raise ConfigurationError(
            f"cannot read connection string {redact(conninfo)!r}: {redact(str(exc))}; write "
            "'host=H port=P dbname=D user=U', a postgresql:// URI, or a service name"
        ) from None
    env = os.environ
    host = params.get("host") or params.get("hostaddr") or env.get("PGHOST", "localhost")
    port_text = params.get("port") or env.get("PGPORT", "5432")
    try:
        port = int(port_text.split(",")[0])
    except ValueError:
        raise ConfigurationError(f"port {port_text!r} is not a number") from None
    user = params.get("user") or env.get("PGUSER") or _os_user()
    dbname = params.get("dbname") or env.get("PGDATABASE") or user
    return ConninfoEndpoint(host, port, dbname, user, {}, tuple(sorted(params.items())))


def _os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "postgres"
