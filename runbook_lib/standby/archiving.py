"""WAL archiving on the primary: the settings it needs, turning it on, and proving it works."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql

from runbook_lib.connection import connect
from runbook_lib.display import TextWithTables
from runbook_lib.errors import PreconditionError, RunbookError
from runbook_lib.host import display_command
from runbook_lib.standby.config import SCHEMA, TOOLS_DIRNAME, StandbyConfig
from runbook_lib.standby.space import MIN_ARCHIVE_FREE_MB, require_free
from runbook_lib.standby.tools import archive_command, install_tools, install_tools_plan
from runbook_lib.waiting import wait_until

log = logging.getLogger("runbook_lib")

RESTART_TIMEOUT_S = 180
ARCHIVE_PROOF_TIMEOUT_S = 60
NEEDS_RESTART = frozenset({"wal_level", "archive_mode"})


def setting_values(conn: psycopg.Connection, names: list[str]) -> dict[str, str]:
    rows = conn.execute(
        "SELECT name, setting FROM pg_catalog.pg_settings WHERE name = ANY(%s)", [names]
    ).fetchall()
    return {r["name"]: r["setting"] for r in rows}


def primary_tools_dir(conn: psycopg.Connection) -> PurePosixPath:
    """Where the archive command is installed on the primary's host: next to its data directory."""
    datadir = conn.execute("SELECT pg_catalog.current_setting('data_directory') AS d").fetchone()
    return PurePosixPath(datadir["d"]).parent / TOOLS_DIRNAME


def wanted_settings(cfg: StandbyConfig, conn: psycopg.Connection) -> dict[str, str]:
    current = setting_values(conn, ["wal_level"])
    wanted = {
        "archive_mode": "on",
        "archive_command": archive_command(
            cfg, primary_tools_dir(conn), local=cfg.archive_on_primary_side
        ),
        "archive_timeout": str(cfg.archive_timeout_s),
    }
    if current.get("wal_level") == "minimal":
        wanted["wal_level"] = "replica"
    return wanted


def archiving_plan(cfg: StandbyConfig, conn: psycopg.Connection) -> pd.DataFrame:
    """Per setting: current value, wanted value, whether changing it needs a restart."""
    wanted = wanted_settings(cfg, conn)
    current = setting_values(conn, list(wanted))
    rows = []
    for name, value in wanted.items():
        now = current.get(name, "")
        ok = now == value or (name == "archive_mode" and now == "always")
        rows.append(
            {
                "setting": name,
                "current": now,
                "wanted": now if ok else value,
                "change": not ok,
                "needs_restart": not ok and name in NEEDS_RESTART,
            }
        )
    return pd.DataFrame(rows)


def archiver_stats(conn: psycopg.Connection) -> dict[str, Any]:
    row = conn.execute(
        "SELECT archived_count, last_archived_wal, last_archived_time, failed_count,"
        " last_failed_wal, last_failed_time,"
        " (failed_count > 0 AND last_failed_time >"
        "   coalesce(last_archived_time, '-infinity'::timestamptz)) AS failing"
        " FROM pg_catalog.pg_stat_archiver"
    ).fetchone()
    return dict(row)


RELOAD_SQL = "SELECT pg_catalog.pg_reload_conf()"
SWITCH_WAL_SQL = "SELECT pg_catalog.pg_switch_wal()"


def alter_system_sql(setting: str, value: str) -> sql.Composed:
    return sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(setting), sql.Literal(value))


def runbook_objects_sql() -> list[sql.Composed]:
    """The heartbeat table (so an idle primary does not look late) and the failover marker
    table, in schema runbook_standby on the primary."""
    schema = sql.Identifier(SCHEMA)
    return [
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {}.heartbeat"
            " (id int PRIMARY KEY CHECK (id = 1), beat timestamptz NOT NULL)"
        ).format(schema),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {}.failover_marker (token text PRIMARY KEY,"
            " written_at timestamptz NOT NULL DEFAULT now(), note text)"
        ).format(schema),
    ]


def heartbeat_sql() -> sql.Composed:
    return sql.SQL(
        "INSERT INTO {}.heartbeat (id, beat) VALUES (1, now())"
        " ON CONFLICT (id) DO UPDATE SET beat = excluded.beat"
    ).format(sql.Identifier(SCHEMA))


def ensure_runbook_objects(conn: psycopg.Connection) -> None:
    for statement in runbook_objects_sql():
        conn.execute(statement)
    write_heartbeat(conn)


def write_heartbeat(conn: psycopg.Connection) -> None:
    conn.execute(heartbeat_sql())


def _sql_text(statement: sql.Composable | str) -> str:
    text = statement if isinstance(statement, str) else statement.as_string(None)
    return f"{text};"


def switch_and_wait_plan(what: str = "the primary") -> list[str]:
    """The statements switch_and_wait_archived runs, and what it then waits for."""
    return [
        f"on {what}: {_sql_text(heartbeat_sql())}",
        f"on {what}: {_sql_text(SWITCH_WAL_SQL)}",
        "wait until pg_stat_archiver.last_archived_wal covers the switched segment "
        "(stop if the archive_command fails)",
    ]


def segment_archived(stats: dict[str, Any], segment: str) -> bool:
    last = stats["last_archived_wal"] or ""
    return len(last) >= 24 and last[:24] >= segment and last[:8] == segment[:8]


def switch_and_wait_archived(
    conn: psycopg.Connection, timeout_s: float = ARCHIVE_PROOF_TIMEOUT_S
) -> dict[str, Any]:
    """Close the current WAL segment and wait until the archiver has it; raise if it fails."""
    before = archiver_stats(conn)
    write_heartbeat(conn)
    segment = conn.execute(
        "SELECT pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()) AS s"
    ).fetchone()["s"]
    started = time.monotonic()
    conn.execute(SWITCH_WAL_SQL)

    def probe() -> dict[str, Any]:
        return archiver_stats(conn)

    def settled(stats: dict[str, Any]) -> bool:
        failed_now = stats["failed_count"] > before["failed_count"] and stats["failing"]
        return segment_archived(stats, segment) or failed_now

    stats = wait_until(
        probe, settled, what=f"WAL segment {segment} to be archived", timeout_s=timeout_s
    )
    if not segment_archived(stats, segment):
        raise PreconditionError(
            f"archive_command failed for {stats['last_failed_wal']} at {stats['last_failed_time']} "
            f"(failed_count {stats['failed_count']}); read the primary's server log, and check "
            "that the archive directory exists and is writable by the server's OS user"
        )
    return {
        "segment": segment,
        "archived_as": stats["last_archived_wal"],
        "seconds": round(time.monotonic() - started, 2),
        "archived_count": stats["archived_count"],
        "failed_count": stats["failed_count"],
    }


@dataclass
class ArchivingResult(TextWithTables):
    status: str
    settings: pd.DataFrame
    proof: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        lines = [f"archiving: {self.status}", self.settings.to_string(index=False)]
        lines.append(
            f"proof: {self.proof['segment']} archived in {self.proof['seconds']} s "
            f"(archived_count {self.proof['archived_count']}, failed_count "
            f"{self.proof['failed_count']})"
        )
        lines += self.notes
        return "\n".join(lines)


def _restart_primary(cfg: StandbyConfig, reasons: list[str]) -> None:
    if not cfg.restart_primary_command:
        raise PreconditionError(
            f"{'; '.join(reasons)}: the primary must restart for this; nothing was changed. "
            "Set restart_primary_command (argv), or set these with ALTER SYSTEM and restart it "
            "yourself, then re-run this step"
        )
    log.info("restarting the primary: %s", "; ".join(reasons))  # a normal step, not a warning
    cfg.primary_os_host.run(restart_argv(cfg), timeout_s=RESTART_TIMEOUT_S)  # on its machine


def restart_argv(cfg: StandbyConfig) -> list[str]:
    return list(cfg.restart_primary_command)


def _reachable(cfg: StandbyConfig) -> bool:
    try:
        with connect(cfg.primary()) as conn:
            conn.execute("SELECT 1")
        return True
    except RunbookError:
        return False


def _restart_reasons(plan: pd.DataFrame) -> list[str]:
    return [
        f"{r.setting} {r.current} -> {r.wanted}"
        for r in plan[plan["change"]].itertuples()
        if r.needs_restart
    ]


def sets_archiving_up(plan: pd.DataFrame) -> bool:
    """Archiving is turned on or pointed somewhere new (not just a new archive_timeout)."""
    changing = set(plan.loc[plan["change"], "setting"])
    return bool(changing & {"archive_mode", "archive_command"})


def _tool_places(cfg: StandbyConfig, conn: psycopg.Connection) -> list[tuple[Any, PurePosixPath]]:
    """Where runbook-archive-wal must be installed: on the primary's machine, which runs it,
    and on the archive's machine when the segments go there over SSH (it receives them)."""
    places = [(cfg.primary_os_host, primary_tools_dir(conn))]
    if not (cfg.archive_on_primary_side and cfg.archive_on_standby_side):
        places.append((cfg.archive_os_host, cfg.archive_tools_dir))
    return places


def configure_archiving(cfg: StandbyConfig) -> ArchivingResult:
    """Step 2: ALTER SYSTEM the archive settings (restart only when needed), then prove it works:
    pg_switch_wal() and pg_stat_archiver advances without failures."""
    with connect(cfg.primary()) as conn:
        plan = archiving_plan(cfg, conn)
        changes = plan[plan["change"]]
        restart_reasons = _restart_reasons(plan)
        if restart_reasons and not cfg.restart_primary_command:
            _restart_primary(cfg, restart_reasons)  # raises, before any change
        if sets_archiving_up(plan):  # room for the first hours of WAL
            require_free(
                cfg.archive_os_host, cfg.archive_dir, MIN_ARCHIVE_FREE_MB, "setting archiving up"
            )
        installed = [
            install_tools(host, directory, cfg.server_python)
            for host, directory in _tool_places(cfg, conn)
        ]
        for r in changes.itertuples():
            conn.execute(alter_system_sql(r.setting, r.wanted))
        if len(changes):
            conn.execute(RELOAD_SQL)
    if restart_reasons:
        _restart_primary(cfg, restart_reasons)
        wait_until(
            lambda: _reachable(cfg),
            what="the primary to accept connections again",
            timeout_s=RESTART_TIMEOUT_S,
        )
    with connect(cfg.primary()) as conn:
        places = _tool_places(cfg, conn)
        wanted = dict(zip(plan["setting"], plan["wanted"], strict=True))
        wait_until(
            lambda: {k: v for k, v in setting_values(conn, list(wanted)).items() if wanted[k] != v},
            lambda diff: not diff,
            what="the primary to apply the archive settings (pg_reload_conf)",
            timeout_s=30,
        )
        ensure_runbook_objects(conn)
        proof = switch_and_wait_archived(conn)
        settings = archiving_plan(cfg, conn)
    if not len(changes):
        status = "already done: archiving was configured"
    elif restart_reasons:
        status = f"configured; primary restarted ({'; '.join(restart_reasons)})"
    else:
        status = "configured with a reload (no restart needed)"
    notes = [
        f"installed {', '.join(tools.changed)} in {tools.directory} on {host.name}"
        for (host, _), tools in zip(places, installed, strict=True)
        if tools.changed
    ]
    return ArchivingResult(status, settings.drop(columns=["change", "needs_restart"]), proof, notes)


def plan_archiving(cfg: StandbyConfig) -> list[str]:
    """Dry run of configure_archiving: what it would install, run and wait for, read from the
    primary's current settings; changes nothing."""
    with connect(cfg.primary()) as conn:
        places = _tool_places(cfg, conn)
        plan = archiving_plan(cfg, conn)
    changes = plan[plan["change"]]
    restart_reasons = _restart_reasons(plan)
    if restart_reasons and not cfg.restart_primary_command:
        return [
            f"stop before any change: {'; '.join(restart_reasons)} needs a restart of the "
            "primary and restart_primary_command is empty"
        ]
    actions = []
    if sets_archiving_up(plan):
        actions.append(
            f"on {cfg.archive_os_host.name}: check that {cfg.archive_dir} has at least "
            f"{MIN_ARCHIVE_FREE_MB} MB free (stop otherwise)"
        )
    for host, directory in places:
        actions += install_tools_plan(host, directory, cfg.server_python)
    actions += [
        f"on the primary: {_sql_text(alter_system_sql(r.setting, r.wanted))}"
        for r in changes.itertuples()
    ]
    if len(changes):
        actions.append(f"on the primary: {_sql_text(RELOAD_SQL)}")
    else:
        actions.append("archive settings already in place: no ALTER SYSTEM")
    if restart_reasons:
        actions.append(
            f"on {cfg.primary_os_host.name}: {display_command(restart_argv(cfg))}   (restarts "
            f"the primary: {'; '.join(restart_reasons)})"
        )
        actions.append("wait until the primary accepts connections again")
    actions += [
        f"on the primary: {_sql_text(s)}" for s in [*runbook_objects_sql(), heartbeat_sql()]
    ]
    actions += switch_and_wait_plan()
    return actions
