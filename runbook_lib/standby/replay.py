"""Bringing the standby up to a point on the primary: switch WAL, wait archived, wait replayed."""

from __future__ import annotations

import psycopg

from runbook_lib.connection import connect
from runbook_lib.errors import RunbookError
from runbook_lib.standby.archiving import switch_and_wait_archived, switch_and_wait_plan
from runbook_lib.standby.config import StandbyConfig
from runbook_lib.waiting import wait_until

CURRENT_LSN_SQL = "SELECT pg_catalog.pg_current_wal_lsn()::text AS l"


def replayed_past(cfg: StandbyConfig, lsn: str) -> str | None:
    """The standby's replay LSN when it has passed lsn, else None (also when unreachable)."""
    try:
        with connect(cfg.standby("postgres")) as conn:
            row = conn.execute(
                "SELECT pg_catalog.pg_last_wal_replay_lsn()::text AS replay,"
                " pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_last_wal_replay_lsn(), %s::pg_lsn) >= 0"
                "   AS passed",
                [lsn],
            ).fetchone()
    except RunbookError:
        return None
    return row["replay"] if row["passed"] else None


def last_replay_lsn(cfg: StandbyConfig) -> str | None:
    try:
        with connect(cfg.standby("postgres")) as conn:
            return conn.execute("SELECT pg_catalog.pg_last_wal_replay_lsn()::text AS l").fetchone()[
                "l"
            ]
    except RunbookError:
        return None


def wait_replayed(cfg: StandbyConfig, lsn: str) -> str:
    """Wait until the standby's replay LSN passes lsn; return the replay LSN."""
    return wait_until(
        lambda: replayed_past(cfg, lsn),
        what=f"the standby to replay past {lsn} (is the restore_command failing? see its log)",
        timeout_s=cfg.replay_timeout_s,
        interval_s=0.1,
    )


def bring_standby_to(cfg: StandbyConfig, primary: psycopg.Connection) -> dict[str, str]:
    """Everything committed on the primary so far, archived and replayed on the standby."""
    lsn = primary.execute(CURRENT_LSN_SQL).fetchone()["l"]
    proof = switch_and_wait_archived(primary, timeout_s=cfg.replay_timeout_s)
    after_switch = primary.execute(CURRENT_LSN_SQL).fetchone()["l"]
    replay = wait_replayed(cfg, lsn)
    return {
        "target_lsn": lsn,
        "segment": proof["segment"],
        "replay_lsn": replay,
        "primary_lsn_after_switch": after_switch,
    }


def bring_standby_plan() -> list[str]:
    """What bring_standby_to runs and waits for."""
    return [
        f"on the primary: {CURRENT_LSN_SQL};",
        *switch_and_wait_plan(),
        "wait until the standby's pg_last_wal_replay_lsn() passes that LSN",
    ]
