"""Step 1, read-only: everything the bootstrap needs is checked before anything changes."""

from __future__ import annotations

from typing import Any

import pandas as pd

from runbook_lib import record
from runbook_lib.bucardo import attoptions, catalog, clients, ctl, extensions, roles, sequences
from runbook_lib.bucardo.config import OBJECT_NAME, BootstrapConfig
from runbook_lib.bucardo.result import StepResult
from runbook_lib.bucardo.selection import TableSelection, select_tables
from runbook_lib.bucardo.superuser import check_server
from runbook_lib.connection import connect, server_version_text
from runbook_lib.errors import CommandFailed, ConfigurationError, PreconditionError, RunbookError


def _target_state(cfg: BootstrapConfig, checks: list[dict[str, Any]]) -> str:
    with connect(cfg.target_admin, application_name="runbook_bucardo_preflight") as admin:
        if not catalog.database_exists(admin, cfg.pgdatabase):
            checks.append(
                {
                    "check": "target database",
                    "ok": True,
                    "detail": f"{cfg.pgdatabase} absent on {cfg.pghost2}:{cfg.pgport2}: "
                    "will be created",
                }
            )
            return "absent, will be created"
        marker = catalog.read_marker(admin, cfg.pgdatabase)
    with connect(cfg.target, application_name="runbook_bucardo_preflight") as conn:
        tables = catalog.all_tables(conn)
    if marker and marker.sync == cfg.sync and marker.source == catalog.source_label(cfg):
        checks.append(
            {
                "check": "target database",
                "ok": True,
                "detail": "resuming this bootstrap (done so far: "
                f"{catalog.STAGE_TEXT[marker.stage]})",
            }
        )
        return f"resuming an earlier run of this bootstrap ({catalog.STAGE_TEXT[marker.stage]})"
    if tables:
        names = ", ".join(t["name"] for t in tables[:5])
        why = (
            f"made by another bootstrap ({marker.text()})" if marker else "not made by this runbook"
        )
        raise PreconditionError(
            f"target database {cfg.pgdatabase} on {cfg.pghost2}:{cfg.pgport2} is not empty "
            f"({len(tables)} tables, e.g. {names}) and {why}; point pghost2/pgport2 at an empty "
            "server or drop that database yourself; nothing was changed"
        )
    checks.append({"check": "target database", "ok": True, "detail": "exists and is empty"})
    return "exists and is empty"


def _control(cfg: BootstrapConfig, checks: list[dict[str, Any]]) -> bool:
    label = "Bucardo control cluster"
    try:
        with connect(cfg.control_admin, application_name="runbook_bucardo_preflight") as conn:
            su = conn.execute(
                "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user"
            ).fetchone()["rolsuper"]
            plperl = conn.execute(
                "SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'plperlu'"
            ).fetchone()
            exists = catalog.database_exists(conn, cfg.bucardo_dbname)
    except PreconditionError as exc:
        raise PreconditionError(f"{label}: {exc}; nothing was changed") from exc
    if not su:
        raise PreconditionError(
            f"{label}: role {cfg.bucardouser} must be a superuser "
            f"(CREATE ROLE {cfg.bucardouser} LOGIN SUPERUSER); nothing was changed"
        )
    if not plperl:
        raise PreconditionError(
            f"{label}: plperlu is not available on {cfg.bucardo_host}:"
            f"{cfg.bucardo_port}; install postgresql-plperl-NN; nothing was changed"
        )
    checks.append(
        {
            "check": "control cluster",
            "ok": True,
            "detail": f"{cfg.control_admin}: superuser, plperlu available",
        }
    )
    installed = False
    if exists:
        with connect(cfg.control, application_name="runbook_bucardo_preflight") as conn:
            installed = catalog.control_installed(conn)
            if installed:
                _check_control_objects(cfg, catalog.control_state(conn, cfg))
    checks.append(
        {
            "check": "control database",
            "ok": True,
            "detail": f"{cfg.bucardo_dbname}: "
            + ("installed" if installed else "will be installed"),
        }
    )
    return installed


def _check_control_objects(cfg: BootstrapConfig, state: dict[str, Any]) -> None:
    """Names already used in Bucardo for something else stop the run."""
    for name, ep in cfg.databases().items():
        db = state["dbs"].get(name)
        if db and (db["dbname"], db["dbhost"] or "", db["dbport"]) != (ep.dbname, ep.host, ep.port):
            raise ConfigurationError(
                f"Bucardo database {name!r} already exists for {db['dbname']} on "
                f"{db['dbhost']}:{db['dbport']}, not {ep.host}:{ep.port}/{ep.dbname}; choose "
                "other names for `here`/`there`; nothing was changed"
            )
    sync = state["sync"]
    if sync and (sync["herd"] != cfg.relgroup or sync["dbs"] != cfg.dbgroup):
        raise ConfigurationError(
            f"sync {cfg.sync!r} already exists for relgroup {sync['herd']!r} and dbgroup "
            f"{sync['dbs']!r} (not {cfg.relgroup!r}/{cfg.dbgroup!r}); choose another sync name; "
            "nothing was changed"
        )
    dbgroup = state["dbgroup"]
    if dbgroup is not None and set(dbgroup) - {cfg.here, cfg.there}:
        raise ConfigurationError(
            f"dbgroup {cfg.dbgroup!r} already holds databases {sorted(dbgroup)}; choose another "
            "dbgroup name; nothing was changed"
        )


def _table_rows(selection: TableSelection) -> list[dict[str, Any]]:
    replicated = set(selection.replicated)
    leaves: dict[str, int] = {}
    for p in selection.partitions:
        if p["partition"] in replicated:
            leaves[p["parent"]] = leaves.get(p["parent"], 0) + 1

    def note(r: dict[str, Any]) -> str:
        if r["relkind"] == "p":
            return f"partitioned: replicated through {leaves.get(r['name'], 0)} partitions"
        if r["name"] in selection.excluded:
            return f"{selection.excluded[r['name']]}: not replicated, copied once"
        return "" if r["name"] in replicated else "outside `tables`/`schemas`: copied once"

    return [
        {
            "table": r["name"],
            "replicated": r["name"] in replicated or r["name"] in leaves,
            "key": r["primary_key"] or ("unique index" if r["has_unique_index"] else None),
            "size_mb": round(r["bytes"] / 2**20, 2),
            "estimated_rows": r["estimated_rows"],
            "note": note(r),
        }
        for r in selection.rows
    ]


def _partition_checks(selection: TableSelection, checks: list[dict[str, Any]]) -> None:
    if selection.partitions:
        parents = sorted({p["parent"] for p in selection.partitions})
        checks.append(
            {
                "check": "partitioned tables",
                "ok": True,
                "detail": f"{', '.join(parents)}: replicated through their "
                f"{len(selection.partitions)} partitions (listed below). WARNING: a partition "
                "created after this bootstrap is not replicated until it is added to the "
                "relgroup (bucardo add table ... relgroup=...; bucardo validate)",
            }
        )
    if selection.foreign:
        checks.append(
            {
                "check": "foreign-table partitions",
                "ok": True,
                "detail": "neither copied nor replicated: " + ", ".join(selection.foreign),
            }
        )
    odd = [t for t in selection.replicated if not all(map(OBJECT_NAME.match, t.split(".", 1)))]
    if odd:
        raise PreconditionError(
            f"table names Bucardo's command line cannot take: {', '.join(odd)} (letters, digits, "
            "_ and $ only); rename them or leave them out with `tables`; nothing was changed"
        )


def _version_checks(cfg: BootstrapConfig, checks: list[dict[str, Any]]) -> None:
    """Client programs at least as new as both servers; column options the target rejects."""
    majors = clients.majors(cfg)
    for name in ("pg_dump", "pg_restore", "psql"):
        path = clients.client(cfg, name)  # ConfigurationError naming what to install
        checks.append(
            {"check": f"client {name}", "ok": True, "detail": f"{path} (servers: {majors})"}
        )
    with connect(cfg.source) as src, connect(cfg.target_admin) as dst:
        unknown = attoptions.unknown_on_target(attoptions.source_options(src), dst)
    if not unknown.empty:
        checks.append(
            {
                "check": "column options",
                "ok": True,
                "detail": attoptions.summary(unknown, done=False),
            }
        )


def _extension_checks(cfg: BootstrapConfig, checks: list[dict[str, Any]]) -> None:
    """Every extension of the source can be created on the target (the schema copy does)."""
    with connect(cfg.source) as src, connect(cfg.target_admin) as dst:
        used = extensions.source_extensions(src)
        missing = extensions.missing_on_target(used, dst)
        target_version = server_version_text(dst)
    if missing:
        listed = ", ".join(f"{name} {used[name]}" for name in missing)
        raise PreconditionError(
            f"the source database uses extensions that the target server "
            f"{cfg.pghost2}:{cfg.pgport2} (PostgreSQL {target_version}) does not have: {listed}; "
            "install them there (their package for that major), or drop them from the source "
            "database if nothing uses them; nothing was changed"
        )
    detail = ", ".join(f"{name} {version}" for name, version in used.items())
    checks.append(
        {"check": "extensions", "ok": True, "detail": f"available on the target: {detail}"}
    )


def _conflicts_text(cfg: BootstrapConfig) -> str:
    strategy = cfg.effective_conflict_strategy
    names = strategy.split()
    if len(names) == 2 and set(names) == {cfg.here, cfg.there}:
        return f"a row changed on both sides between two syncs: {names[0]}'s change wins"
    return f"a row changed on both sides between two syncs: Bucardo's {strategy} decides"


def _bucardo_host(cfg: BootstrapConfig, checks: list[dict[str, Any]]) -> None:
    """Bucardo's CLI and daemon can run where bucardo_ssh says: reachable, the host key known,
    the program installed and working, its OS user present."""
    bucardo = ctl.BucardoCtl(cfg)
    try:
        bucardo.host.check_reachable()
        program = bucardo.program()
        user = bucardo.os_user()
        version = bucardo.host.run([program, "--version"], user=user, timeout_s=60).stdout
    except CommandFailed as exc:
        raise PreconditionError(
            f"Bucardo does not run on {bucardo.host.name}: {exc}; nothing was changed"
        ) from exc
    except RunbookError as exc:
        raise type(exc)(f"Bucardo's host: {exc}; nothing was changed") from exc
    record.record_program("bucardo", program, version.strip(), host=bucardo.host.name)
    checks.append(
        {
            "check": "bucardo program",
            "ok": True,
            "detail": f"{bucardo.host.describe([program], user)}: {version.strip()}",
        }
    )


def preflight(cfg: BootstrapConfig) -> StepResult:
    """Check both servers, Bucardo, the tables and the target; raise before anything changes."""
    checks: list[dict[str, Any]] = []
    _bucardo_host(cfg, checks)
    needs = "Bucardo's triggers and session_replication_role"
    for ep, label in ((cfg.source, "source (here)"), (cfg.target_admin, "target (there)")):
        check_server(ep, label, needs, checks, "runbook_bucardo_preflight")
    with (
        connect(cfg.source, application_name="runbook_bucardo_preflight") as src,
        connect(cfg.target_admin, application_name="runbook_bucardo_preflight") as dst,
    ):
        checks += roles.role_checks(cfg, src, dst)
    with connect(cfg.source, application_name="runbook_bucardo_preflight") as conn:
        missing = [s for s in cfg.schemas if not catalog.schema_exists(conn, s)]
        if missing:
            raise ConfigurationError(
                f"schemas not found in {cfg.source}: {', '.join(missing)}; nothing was changed"
            )
        selection = select_tables(cfg, conn)
        plan = sequences.sequence_plan(cfg, conn, list(selection.replicated))
    _partition_checks(selection, checks)
    _control(cfg, checks)
    target = _target_state(cfg, checks)
    _version_checks(cfg, checks)
    _extension_checks(cfg, checks)
    if selection.excluded:
        checks.append(
            {
                "check": "tables Bucardo cannot replicate",
                "ok": True,
                "detail": "copied once, not replicated: "
                + "; ".join(f"{t} ({why})" for t, why in selection.excluded.items()),
            }
        )
    checks.append(
        {
            "check": "sequence strategy",
            "ok": True,
            "detail": f"{cfg.sequence_strategy} for {len(plan)} sequences used by the "
            "replicated tables (owned, identity, or called by a column default)",
        }
    )
    excluded = ", ".join(selection.excluded)
    parents = len({p["parent"] for p in selection.partitions})
    summary = (
        f"{len(selection.replicated)} tables to replicate"
        + (f" (the partitions of {parents} partitioned tables included)" if parents else "")
        + (f", left out: {excluded}" if excluded else "")
        + f"; {len(plan)} sequences; target: {target}; "
        + _conflicts_text(cfg)
    )
    return StepResult(
        "preflight",
        summary,
        already_done=False,
        tables={
            "checks": pd.DataFrame(checks),
            "tables": pd.DataFrame(_table_rows(selection)),
            "partitions": pd.DataFrame(
                selection.partitions,
                columns=["parent", "partition", "level", "via", "bounds", "kind"],
            ),
            "sequences": plan,
        },
    )
