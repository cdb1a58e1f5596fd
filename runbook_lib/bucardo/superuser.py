"""The first check of both Bucardo preflights, on each database: reachable, a supported major
version, and a superuser connection (Bucardo's triggers, session_replication_role and dropping
its schema all need one)."""

from __future__ import annotations

from typing import Any

from runbook_lib import pgversions
from runbook_lib.connection import Endpoint, connect, server_version_num, server_version_text
from runbook_lib.errors import PreconditionError

NOTHING = "nothing was changed"


def check_server(
    ep: Endpoint, label: str, needs: str, checks: list[dict[str, Any]], application_name: str
) -> int:
    """The server's version number, after adding a check row each for reachable and superuser;
    PreconditionError (nothing changed) naming what to do when it is not. `needs`: what the
    runbook does that a superuser must do."""
    try:
        with connect(ep, application_name=application_name) as conn:
            version = server_version_num(conn)
            version_text = server_version_text(conn)
            superuser = conn.execute(
                "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user"
            ).fetchone()["rolsuper"]
    except PreconditionError as exc:
        raise PreconditionError(f"{label}: {exc}; {NOTHING}") from exc
    checks.append(
        {"check": f"{label} reachable", "ok": True, "detail": f"{ep}, PostgreSQL {version_text}"}
    )
    pgversions.require_supported(version, f"{label} {ep}")
    if not superuser:
        raise PreconditionError(
            f"{label}: {ep.user} is not a superuser on {ep.host}:{ep.port}; {needs} need one: "
            f"use a superuser as pgsuperuser; {NOTHING}"
        )
    checks.append({"check": f"{label} superuser", "ok": True, "detail": ep.user})
    return version
