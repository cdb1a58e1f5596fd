"""Step 4: how the standby is doing: archiver on the primary, replay on the standby, the archive
itself, and lag sampled over a short window while a heartbeat row is written every second."""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import pandas as pd
import psycopg
from matplotlib.figure import Figure
from psycopg import sql

from runbook_lib.connection import connect
from runbook_lib.display import TextWithTables, fields_table, human_bytes
from runbook_lib.errors import RunbookError
from runbook_lib.host import LocalHost
from runbook_lib.standby.archiving import archiver_stats, setting_values, write_heartbeat
from runbook_lib.standby.config import SCHEMA, StandbyConfig

SAMPLE_INTERVAL_S = 1.0
LAG_MARGIN_S = 5.0  # replay lag is expected within archive_timeout_s plus this
READY_BACKLOG_LIMIT = 2
BYTE_FIELDS = ("byte_lag",)


def primary_snapshot(conn: psycopg.Connection) -> dict[str, Any]:
    row = dict(
        conn.execute(
            "SELECT pg_catalog.pg_current_wal_lsn()::text AS current_lsn,"
            " (SELECT count(*) FROM pg_catalog.pg_ls_archive_statusdir()"
            "   WHERE name LIKE '%%.ready') AS ready_to_archive"
        ).fetchone()
    )
    row.update(setting_values(conn, ["archive_mode", "archive_timeout"]))
    row.update(archiver_stats(conn))
    return row


def _standby_conn(cfg: StandbyConfig) -> psycopg.Connection | None:
    if not cfg.hot_standby:
        return None
    try:
        return connect(cfg.standby(), application_name="runbook standby status")
    except RunbookError:
        return None


def standby_snapshot(conn: psycopg.Connection) -> dict[str, Any]:
    query = sql.SQL(
        "SELECT pg_catalog.pg_is_in_recovery() AS in_recovery,"
        " coalesce(pg_catalog.pg_last_wal_replay_lsn(), pg_catalog.pg_current_wal_lsn())::text"
        "   AS replay_lsn,"
        " pg_catalog.pg_last_xact_replay_timestamp() AS last_replayed_commit,"
        " (SELECT beat FROM {}.heartbeat WHERE id = 1) AS replayed_heartbeat"
    ).format(sql.Identifier(SCHEMA))
    return dict(conn.execute(query).fetchone())


def sample(
    primary: psycopg.Connection, standby: psycopg.Connection, heartbeat: bool = True
) -> dict[str, Any]:
    """One lag measurement: heartbeat written, standby read, then primary read.

    Without the heartbeat (a dry run writes nothing) time_lag_s is not measured: the age of an
    old heartbeat says nothing about lag."""
    if heartbeat:
        write_heartbeat(primary)
    s = standby_snapshot(standby)
    p = primary.execute(
        "SELECT now() AS at, pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(),"
        " %s::pg_lsn)::bigint AS byte_lag",
        [s["replay_lsn"]],
    ).fetchone()
    beat = s["replayed_heartbeat"]
    return {
        "at": p["at"],
        "replay_lsn": s["replay_lsn"],
        "byte_lag": int(p["byte_lag"]),
        "time_lag_s": (p["at"] - beat).total_seconds() if beat is not None and heartbeat else None,
        "in_recovery": s["in_recovery"],
    }


def observe_lag(
    cfg: StandbyConfig,
    seconds: float,
    interval_s: float = SAMPLE_INTERVAL_S,
    *,
    heartbeat: bool = True,
) -> pd.DataFrame:
    """Sample lag every interval_s for `seconds`, writing a heartbeat on the primary each time.

    time_lag_s is the age, on the primary's clock, of the newest heartbeat the standby replayed."""
    standby = _standby_conn(cfg)
    if standby is None:
        return pd.DataFrame(columns=["t_s", "byte_lag", "time_lag_s"])
    rows = []
    with standby, connect(cfg.primary(), application_name="runbook heartbeat") as primary:
        started = time.monotonic()
        while True:
            row = sample(primary, standby, heartbeat)
            row["t_s"] = round(time.monotonic() - started, 2)
            rows.append(row)
            if time.monotonic() - started + interval_s > seconds:
                break
            time.sleep(interval_s)
    return pd.DataFrame(rows)[["t_s", "at", "replay_lsn", "byte_lag", "time_lag_s", "in_recovery"]]


def archive_bytes(host: LocalHost, archive: PurePosixPath) -> int:
    """Bytes of the archive's files (du, so that it works the same on any machine)."""
    out = host.run(["du", "-s", "-B1", "--apparent-size", str(archive)]).stdout
    return int(out.split()[0])


def archive_usage(cfg: StandbyConfig) -> dict[str, Any]:
    host, archive = cfg.archive_os_host, cfg.archive_dir
    names = host.list_dir(archive)
    size = archive_bytes(host, archive) if names else 0
    return {
        "archive_dir": f"{archive} on {host.name}",
        "files": len(names),
        "segments": sum(1 for n in names if len(n) == 24),
        "history_files": sum(1 for n in names if n.endswith(".history")),
        "partial_files": sum(1 for n in names if n.endswith(".partial")),
        "temporary_files": sum(1 for n in names if n.startswith(".") and n.endswith(".tmp")),
        "size_mb": round(size / 2**20, 1),
        "free_mb": round(host.free_bytes(archive) / 2**20),
    }


@dataclass
class StandbyStatus(TextWithTables):
    primary: pd.DataFrame
    standby: pd.DataFrame
    archive: pd.DataFrame
    lag: pd.DataFrame
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def plot(self) -> Figure:
        """Byte and time lag over the observation window (a matplotlib figure)."""
        fig = Figure(figsize=(8, 3))
        ax1 = fig.add_subplot()
        if len(self.lag):
            ax1.plot(self.lag["t_s"], self.lag["byte_lag"] / 2**20, color="tab:blue")
            ax2 = ax1.twinx()
            time_lag = pd.to_numeric(self.lag["time_lag_s"], errors="coerce")
            ax2.plot(self.lag["t_s"], time_lag, color="tab:red")
            ax2.set_ylabel("time lag (s)", color="tab:red")
        ax1.set_xlabel("seconds into the observation window")
        ax1.set_ylabel("byte lag (MB)", color="tab:blue")
        ax1.set_title("standby replay lag")
        fig.tight_layout()
        return fig

    def __repr__(self) -> str:
        parts = [
            "PROBLEMS:\n" + "\n".join(f"  - {p}" for p in self.problems)
            if self.problems
            else "no problems seen"
        ]
        for title, df in (
            ("primary", self.primary),
            ("standby", self.standby),
            ("archive", self.archive),
        ):
            parts.append(f"{title}:\n{df.T.to_string(header=False)}")
        if len(self.lag):
            parts.append(self._lag_summary())
        return "\n\n".join(parts)

    def _lag_summary(self) -> str:
        time_max = pd.to_numeric(self.lag["time_lag_s"], errors="coerce").max()
        time_text = f"{time_max:.1f} s" if pd.notna(time_max) else "not measured (no heartbeat)"
        return (
            f"lag over {self.lag['t_s'].iloc[-1]:.0f} s: byte lag max "
            f"{human_bytes(self.lag['byte_lag'].max())}, time lag max {time_text}"
        )

    def _repr_html_(self) -> str:
        problems = "".join(f"<li>{html.escape(p)}</li>" for p in self.problems)
        parts = [f"<b>PROBLEMS</b><ul>{problems}</ul>" if problems else "<p>no problems seen</p>"]
        for title, df in (
            ("primary", self.primary),
            ("standby", self.standby),
            ("archive", self.archive),
        ):
            values = df.iloc[0].to_dict() if len(df) else {}
            parts.append(
                f"<div style='display:inline-block;vertical-align:top;margin-right:2em'>"
                f"<b>{title}</b>{fields_table(values, BYTE_FIELDS)}</div>"
            )
        if len(self.lag):
            parts.append(f"<p>{html.escape(self._lag_summary())}</p>")
        return "\n".join(parts)


def problems_seen(
    cfg: StandbyConfig, primary: dict[str, Any], standby: dict[str, Any], lag: pd.DataFrame
) -> list[str]:
    found = []
    if primary["failing"]:
        found.append(
            f"archiving is FAILING: {primary['failed_count']} failures, the last for "
            f"{primary['last_failed_wal']} at {primary['last_failed_time']} (last success: "
            f"{primary['last_archived_wal']} at {primary['last_archived_time']}); pg_wal grows "
            "until this is fixed: read the primary's server log and check that the archive "
            "directory is writable by the server's OS user"
        )
    if primary["ready_to_archive"] > READY_BACKLOG_LIMIT:
        found.append(f"{primary['ready_to_archive']} WAL segments wait to be archived")
    if primary["archive_mode"] not in ("on", "always"):
        found.append(f"archive_mode is {primary['archive_mode']} on the primary")
    if standby["running"] is False:
        found.append("the standby is not running")
    elif standby.get("in_recovery") is False:
        found.append("the standby is not in recovery: it has been promoted")
    limit = cfg.archive_timeout_s + LAG_MARGIN_S + SAMPLE_INTERVAL_S
    if len(lag) and lag["time_lag_s"].notna().any() and lag["time_lag_s"].iloc[-1] > limit:
        found.append(
            f"replay lag {lag['time_lag_s'].iloc[-1]:.1f} s is above archive_timeout_s + "
            f"{LAG_MARGIN_S:g} s"
        )
    return found


LOW_ARCHIVE_MB = 64  # a few segments: below this, archiving is about to fail


def archive_report(cfg: StandbyConfig) -> tuple[dict[str, Any], list[str]]:
    """The archive's numbers, or why they could not be read (its machine cut off, say)."""
    try:
        usage = archive_usage(cfg)
    except RunbookError as exc:
        where = f"{cfg.archive_dir} on {cfg.archive_os_host.name}"
        return {"archive_dir": where, "error": str(exc)}, [f"the archive cannot be read: {exc}"]
    found = []
    if usage["free_mb"] < LOW_ARCHIVE_MB:
        found.append(
            f"the archive has {usage['free_mb']} MB free: a segment that does not fit fails "
            "archiving (free space there)"
        )
    if usage["temporary_files"]:
        found.append(f"{usage['temporary_files']} temporary files in the archive (a copy running?)")
    return usage, found


def standby_report(cfg: StandbyConfig) -> tuple[dict[str, Any], list[str]]:
    """Whether the standby runs, asked on its machine, or why that machine did not answer."""
    state: dict[str, Any] = {"port": cfg.standby_port}
    try:
        state["running"] = cfg.standby_cluster().is_running()
    except RunbookError as exc:
        state.update(running=False, error=str(exc))
        return state, [f"the standby's machine {cfg.standby_os_host.name} did not answer: {exc}"]
    return state, []


def status(
    cfg: StandbyConfig, observe_s: float | None = None, *, heartbeat: bool = True
) -> StandbyStatus:
    """Step 4 (read-only but for the heartbeat row): archiver, replay, archive, lag window.
    heartbeat=False (a dry run) writes nothing: byte lag only, no time lag. Works on its own
    during an incident: an unreachable machine or a full archive is reported, not raised."""
    standby, found = standby_report(cfg)
    lag = pd.DataFrame(columns=["t_s", "byte_lag", "time_lag_s"])
    if standby["running"]:
        seconds = cfg.observe_s if observe_s is None else observe_s
        lag = observe_lag(cfg, seconds, heartbeat=heartbeat)
        if len(lag):
            last = lag.iloc[-1]
            standby.update(
                {
                    "in_recovery": bool(last["in_recovery"]),
                    "replay_lsn": last["replay_lsn"],
                    "byte_lag": int(last["byte_lag"]),
                    "time_lag_s": last["time_lag_s"],
                }
            )
        else:
            standby["in_recovery"] = None  # hot_standby off: no connections
    with connect(cfg.primary(), application_name="runbook standby status") as conn:
        primary = primary_snapshot(conn)  # after the window: the archiver may have moved
    archive, archive_problems = archive_report(cfg)
    if "error" in standby:
        standby["running"] = None  # unknown, not "not running"
    found = problems_seen(cfg, primary, standby, lag) + found + archive_problems
    return StandbyStatus(
        primary=pd.DataFrame([primary]),
        standby=pd.DataFrame([standby]),
        archive=pd.DataFrame([archive]),
        lag=lag,
        problems=found,
    )
