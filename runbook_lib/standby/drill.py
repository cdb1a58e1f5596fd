"""Step 6: the failover drill. A marker row on the primary, WAL switched, archived and replayed;
then the standby is triggered (pg_promote() or the trigger file, by mode) and proven: out of
recovery, on a new timeline, marker present, a write accepted. Reports trigger to read-write."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from runbook_lib.cluster import server_os_user
from runbook_lib.connection import connect
from runbook_lib.display import TextWithTables
from runbook_lib.errors import PreconditionError, RunbookError
from runbook_lib.standby.config import SCHEMA, StandbyConfig
from runbook_lib.standby.replay import bring_standby_plan, bring_standby_to
from runbook_lib.waiting import wait_until

MARKER_NOTE = "failover drill marker, written on the primary"
AFTER_NOTE = "written on the promoted standby"
PROMOTE_SQL = "SELECT pg_catalog.pg_promote(wait => false)"
TRIGGER_CONTENT = "smart\n"  # deliver what the archive holds, then end recovery


@dataclass
class DrillResult(TextWithTables):
    mode: str
    marker: str
    marker_written_at: datetime | None
    marker_lsn: str
    trigger: str
    trigger_to_read_write_s: float | None
    timeline_before: int | None
    timeline_after: int
    history_file: str
    marker_present: bool
    write_after_promotion: bool
    status: str = "done"

    def __repr__(self) -> str:
        rows = [f"failover drill ({self.mode} mode): {self.status}"]
        rows += [f"  {k}: {v}" for k, v in vars(self).items() if k not in ("status", "mode")]
        return "\n".join(rows)


def _marker_table() -> sql.Composed:
    return sql.SQL("{}.failover_marker").format(sql.Identifier(SCHEMA))


def marker_insert_sql() -> sql.Composed:
    return sql.SQL("INSERT INTO {} (token, note) VALUES (%s, %s) RETURNING written_at").format(
        _marker_table()
    )


def write_after_promotion_sql() -> sql.Composed:
    return sql.SQL(
        "INSERT INTO {} (token, note) VALUES (%s, %s) ON CONFLICT (token) DO NOTHING"
    ).format(_marker_table())


def new_token() -> str:
    return f"drill-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"


def write_marker(primary: psycopg.Connection) -> dict[str, Any]:
    token = new_token()
    row = primary.execute(marker_insert_sql(), [token, MARKER_NOTE]).fetchone()
    lsn = primary.execute("SELECT pg_catalog.pg_current_wal_lsn()::text AS l").fetchone()["l"]
    return {"token": token, "written_at": row["written_at"], "lsn": lsn}


def _timeline_in_recovery(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT timeline_id FROM pg_catalog.pg_control_checkpoint()").fetchone()[
        "timeline_id"
    ]


def _try_write(cfg: StandbyConfig, token: str) -> bool:
    try:
        with connect(cfg.standby()) as conn:
            if conn.execute("SELECT pg_catalog.pg_is_in_recovery() AS r").fetchone()["r"]:
                return False
            conn.execute(write_after_promotion_sql(), [f"{token}-after", AFTER_NOTE])
        return True
    except (RunbookError, psycopg.Error):
        return False


def trigger(cfg: StandbyConfig, standby: psycopg.Connection) -> str:
    if cfg.waiting:
        # the waiting restore command sees it, delivers what the archive holds (smart), returns 1
        cfg.standby_os_host.write_text(cfg.trigger_file, TRIGGER_CONTENT, owner=server_os_user())
        return f"trigger file {cfg.trigger_file} (smart)"
    standby.execute(PROMOTE_SQL)
    return "pg_promote()"


def already_promoted(cfg: StandbyConfig) -> DrillResult | None:
    """A standby promoted by an earlier drill: read its proof instead of failing over again."""
    try:
        with connect(cfg.standby()) as conn:
            if conn.execute("SELECT pg_catalog.pg_is_in_recovery() AS r").fetchone()["r"]:
                return None
            marker = conn.execute(
                sql.SQL(
                    "SELECT token, written_at FROM {} WHERE note = %s ORDER BY written_at DESC"
                    " LIMIT 1"
                ).format(_marker_table()),
                [MARKER_NOTE],
            ).fetchone()
            wal = conn.execute(
                "SELECT pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()) AS w"
            ).fetchone()["w"]
    except RunbookError:
        return None
    timeline = int(wal[:8], 16)
    return DrillResult(
        cfg.mode,
        marker["token"] if marker else "",
        marker["written_at"] if marker else None,
        "",
        "",
        None,
        None,
        timeline,
        f"{timeline:08X}.history",
        marker is not None,
        True,
        status="already done: the standby was promoted earlier",
    )


NOT_WANTED = "skipped: failover_drill is false (the standby keeps replaying)"


def _stale_trigger(cfg: StandbyConfig) -> str | None:
    if cfg.waiting and cfg.standby_os_host.exists(cfg.trigger_file):
        return f"{cfg.trigger_file} already exists; the drill writes it itself"
    return None


def failover_drill(cfg: StandbyConfig) -> DrillResult | str:
    """Fail over to the standby and prove nothing committed before the marker was lost."""
    if not cfg.failover_drill:
        return NOT_WANTED
    if done := already_promoted(cfg):
        return done
    if stale := _stale_trigger(cfg):
        raise PreconditionError(stale)
    with connect(cfg.primary(), application_name="runbook failover drill") as primary:
        marker = write_marker(primary)
        bring_standby_to(cfg, primary)
    with connect(cfg.standby(), application_name="runbook failover drill") as standby:
        timeline_before = _timeline_in_recovery(standby)
        started = time.monotonic()
        how = trigger(cfg, standby)
        wait_until(
            lambda: _try_write(cfg, marker["token"]),
            what=f"the standby to accept writes after {how}",
            timeout_s=cfg.promote_timeout_s,
            interval_s=0.05,
        )
        elapsed = round(time.monotonic() - started, 3)
    return prove(cfg, marker, how, elapsed, timeline_before)


def prove(
    cfg: StandbyConfig, marker: dict[str, Any], how: str, elapsed: float, timeline_before: int
) -> DrillResult:
    with connect(cfg.standby()) as conn:
        in_recovery = conn.execute("SELECT pg_catalog.pg_is_in_recovery() AS r").fetchone()["r"]
        wal = conn.execute(
            "SELECT pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()) AS w"
        ).fetchone()["w"]
        present = (
            conn.execute(
                sql.SQL("SELECT count(*) AS n FROM {} WHERE token = %s").format(_marker_table()),
                [marker["token"]],
            ).fetchone()["n"]
            == 1
        )
    timeline = int(wal[:8], 16)
    history = f"{timeline:08X}.history"
    history_path = cfg.standby_datadir / "pg_wal" / history
    failures = []
    if in_recovery:
        failures.append("the standby is still in recovery")
    if timeline <= timeline_before:
        failures.append(f"no new timeline (still {timeline})")
    if not cfg.standby_os_host.exists(history_path):
        failures.append(f"{history_path} does not exist")
    if not present:
        failures.append(f"the marker {marker['token']} is missing: writes were lost")
    if cfg.waiting:
        try:
            wait_until(
                lambda: not cfg.standby_os_host.exists(cfg.trigger_file),
                what=f"recovery_end_command to remove {cfg.trigger_file}",
                timeout_s=10,
            )
        except RunbookError:
            failures.append(f"{cfg.trigger_file} was not removed by recovery_end_command")
    if failures:
        raise PreconditionError("failover drill failed: " + "; ".join(failures))
    return DrillResult(
        cfg.mode,
        marker["token"],
        marker["written_at"],
        marker["lsn"],
        how,
        elapsed,
        timeline_before,
        timeline,
        history,
        present,
        True,
    )


def _bound(statement: sql.Composed, values: list[str]) -> str:
    """A statement with its bound values shown in place, for a dry run's plan."""
    text = statement.as_string(None)
    for value in values:
        text = text.replace("%s", sql.Literal(value).as_string(None), 1)
    return text + ";"


def plan_drill(cfg: StandbyConfig) -> list[str]:
    """Dry run of failover_drill: the marker, the wait for archive and replay, the trigger and
    the proof; changes nothing."""
    if not cfg.failover_drill:
        return [NOT_WANTED]
    if done := already_promoted(cfg):
        return [done.status]
    if stale := _stale_trigger(cfg):
        return [f"stop before any change: {stale}"]
    token = "drill-<UTC time>-<random>"
    actions = [
        f"on the primary: {_bound(marker_insert_sql(), [token, MARKER_NOTE])}",
        *bring_standby_plan(),
    ]
    if cfg.waiting:
        actions.append(
            f"on {cfg.standby_os_host.name}: write the trigger file {cfg.trigger_file} containing "
            f"{TRIGGER_CONTENT.strip()!r} (owner {server_os_user() or 'this OS user'})"
        )
    else:
        actions.append(f"on the standby: {PROMOTE_SQL};")
    actions += [
        "wait until the standby leaves recovery and accepts this write: "
        + _bound(write_after_promotion_sql(), [f"{token}-after", AFTER_NOTE]),
        "prove: pg_is_in_recovery() false, a new timeline and its .history file in pg_wal, "
        "the marker row present"
        + (", the trigger file removed by recovery_end_command" if cfg.waiting else ""),
    ]
    return actions
