"""Step 3: base backup into the standby's data directory, recovery settings for the chosen mode,
and the standby started."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import PurePosixPath

import pandas as pd

from runbook_lib.cluster import server_os_user
from runbook_lib.connection import connect
from runbook_lib.display import TextWithTables
from runbook_lib.errors import PreconditionError, RunbookError
from runbook_lib.host import display_command
from runbook_lib.passfile import passfile_env
from runbook_lib.standby import versions
from runbook_lib.standby.config import StandbyConfig
from runbook_lib.standby.space import backup_need_mb, primary_size_mb, require_free
from runbook_lib.standby.tools import (
    archive_cleanup_command,
    archive_command,
    install_tools,
    install_tools_plan,
    recovery_end_command,
    restore_command,
)
from runbook_lib.waiting import wait_until

log = logging.getLogger("runbook_lib")

AUTO_CONF = "postgresql.auto.conf"
MARK = "# runbook warm standby:"
BACKUP_TIMEOUT_S = 3600
SIGNALS = {"standby": "standby.signal", "pg_standby": "recovery.signal"}


def recovery_settings(cfg: StandbyConfig, major: int) -> dict[str, str]:
    """The standby's settings for its mode and major version (written to postgresql.auto.conf)."""
    tools = cfg.standby_tools_dir
    settings = {
        "port": str(cfg.standby_port),
        "hot_standby": "on" if cfg.hot_standby else "off",
        "primary_conninfo": "",  # log shipping only: no streaming
        "restore_command": restore_command(cfg, tools),
        # follow the backup's timeline: a .history file left in the archive by an earlier
        # failover must not lead this standby onto another server's timeline
        "recovery_target_timeline": "current",
        # once promoted, the standby archives its own WAL into the same archive
        "archive_command": archive_command(cfg, tools, local=cfg.archive_on_standby_side),
    }
    if cfg.standby_listen_addresses:
        settings["listen_addresses"] = cfg.standby_listen_addresses
    if cfg.waiting and major >= versions.RECOVERY_PREFETCH_SINCE:
        # PostgreSQL 15's WAL prefetcher asks for the next segment while the current one is
        # still being replayed; the waiting restore command would stall replay (REFERENCE.md §2)
        settings["recovery_prefetch"] = "off"
    if cfg.waiting:
        settings["recovery_end_command"] = recovery_end_command(cfg)
        settings["archive_cleanup_command"] = ""
    else:
        settings["wal_retrieve_retry_interval"] = "1s"  # look for the next segment every second
        settings["archive_cleanup_command"] = (
            archive_cleanup_command(cfg, tools, major) if cfg.archive_cleanup else ""
        )
        settings["recovery_end_command"] = ""
    return settings


def _conf_value(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def merged_auto_conf(current: str, settings: dict[str, str]) -> str:
    """postgresql.auto.conf with our settings replacing any earlier line for the same names."""
    kept = []
    for line in current.splitlines():
        name = line.split("=", 1)[0].strip()
        if line.startswith(MARK) or (name in settings and "=" in line):
            continue
        kept.append(line)
    return "\n".join([*kept, *recovery_conf_lines(settings)]) + "\n"


def recovery_conf_lines(settings: dict[str, str]) -> list[str]:
    """Our block of postgresql.auto.conf: a marker line, then one line per setting."""
    ours = [f"{MARK} mode settings (written by runbook_lib.standby)"]
    return ours + [f"{k} = {_conf_value(v)}" for k, v in settings.items()]


@dataclass
class BuildResult(TextWithTables):
    status: str
    settings: pd.DataFrame

    def __repr__(self) -> str:
        return f"standby: {self.status}\n{self.settings.to_string(index=False)}"


def _datadir_state(cfg: StandbyConfig) -> str:
    host, datadir = cfg.standby_os_host, cfg.standby_datadir
    if host.exists(datadir / "PG_VERSION"):
        return "backup"
    if host.exists(datadir) and host.list_dir(datadir):
        return "not empty"
    return "empty"


def base_backup_argv(cfg: StandbyConfig) -> list[str]:
    """pg_basebackup (the standby machine's) into standby_datadir; the primary comes from the
    libpq environment."""
    return [
        versions.pg_basebackup(cfg),
        "--pgdata",
        str(cfg.standby_datadir),
        "--wal-method",
        "stream",
        "--checkpoint",
        "fast",
        "--label",
        "runbook warm standby",
        "--no-password",
    ]


def base_backup(cfg: StandbyConfig) -> None:
    """pg_basebackup from the primary into standby_datadir, run as the server's OS user (the
    files are its own from the start: no chown -R). Our libpq password for the primary, when
    one is used, reaches it through a private password file only that user reads."""
    user = server_os_user()
    with passfile_env(cfg.primary(), user, cfg.standby_os_host) as env:
        cfg.standby_os_host.run(
            base_backup_argv(cfg),
            user=user,
            env={**cfg.primary().libpq_env(), **env},
            timeout_s=BACKUP_TIMEOUT_S,
        )


def write_recovery_settings(cfg: StandbyConfig) -> dict[str, str]:
    host, datadir = cfg.standby_os_host, PurePosixPath(cfg.standby_datadir)
    settings = recovery_settings(cfg, versions.standby_major(cfg))
    auto = datadir / AUTO_CONF
    current = host.read_text(auto, user=server_os_user()) if host.exists(auto) else ""
    host.write_text(auto, merged_auto_conf(current, settings), owner=server_os_user(), mode=0o600)
    other = [s for m, s in SIGNALS.items() if m != cfg.mode]
    for name in other:
        if host.exists(datadir / name):
            raise PreconditionError(
                f"{datadir / name} exists but mode is {cfg.mode!r}: this data directory was set up "
                "for the other mode; remove it (and the data directory) to rebuild"
            )
    host.write_text(datadir / SIGNALS[cfg.mode], "", owner=server_os_user(), mode=0o600)
    return settings


def _refusal(cfg: StandbyConfig, state: str) -> str | None:
    """Why build_standby must not go on (the standby not running yet), or None."""
    if state == "not empty":
        return (
            f"{cfg.standby_datadir} is not empty and holds no data directory; "
            "empty it (or choose another standby_datadir), then re-run this step"
        )
    if cfg.waiting and cfg.standby_os_host.exists(cfg.trigger_file):
        return (
            f"the trigger file {cfg.trigger_file} exists: the standby would promote at once; "
            "remove it if no failover is wanted, then re-run this step"
        )
    return None


def backup_need(cfg: StandbyConfig) -> int:
    """MB a base backup of the primary needs on the standby's disk."""
    with connect(cfg.primary()) as conn:
        return backup_need_mb(primary_size_mb(conn))


def in_recovery(cfg: StandbyConfig) -> bool | None:
    """pg_is_in_recovery() on the standby; None when it does not accept connections (yet)."""
    try:
        with connect(cfg.standby("postgres")) as conn:
            return conn.execute("SELECT pg_catalog.pg_is_in_recovery() AS r").fetchone()["r"]
    except RunbookError:
        return None


def build_standby(cfg: StandbyConfig) -> BuildResult:
    """Base backup (unless already there), recovery settings for the mode, start the standby."""
    cluster = cfg.standby_cluster()
    state = _datadir_state(cfg)
    if cluster.is_running():
        status = "already done: the standby is running"
    else:
        if refusal := _refusal(cfg, state):
            raise PreconditionError(refusal)
        if state == "empty":
            require_free(
                cfg.standby_os_host, cfg.standby_datadir, backup_need(cfg), "the base backup"
            )
        install_tools(cfg.standby_os_host, cfg.standby_tools_dir, cfg.server_python)
        if state == "empty":
            if cfg.standby_os_host.exists(cfg.standby_datadir):
                cfg.standby_os_host.remove_tree(cfg.standby_datadir)  # pg_basebackup makes it 0700
            base_backup(cfg)
        write_recovery_settings(cfg)
        cluster.start()
        status = "base backup taken, standby started" if state == "empty" else "standby started"
    if cfg.hot_standby:
        wait_until(
            lambda: in_recovery(cfg) is not None,
            what="the standby to accept read-only connections",
            timeout_s=cfg.replay_timeout_s,
        )
        if not in_recovery(cfg) and not status.startswith("already"):
            raise PreconditionError(
                "the standby started but is not in recovery: it promoted itself (a stale trigger "
                f"file {cfg.trigger_file}?); read {cluster.logfile}"
            )
    settings = recovery_settings(cfg, versions.standby_major(cfg))
    table = pd.DataFrame({"setting": list(settings), "value": list(settings.values())})
    return BuildResult(status, table)


def plan_build(cfg: StandbyConfig) -> list[str]:
    """Dry run of build_standby: the tools it would install, the pg_basebackup command, the
    settings and signal file it would write, how it starts the standby; changes nothing."""
    host, cluster = cfg.standby_os_host, cfg.standby_cluster()
    if cluster.is_running():
        return ["already done: the standby is running; nothing to run"]
    state = _datadir_state(cfg)
    if refusal := _refusal(cfg, state):
        return [f"stop before any change: {refusal}"]
    user = server_os_user()
    owner = user or "this OS user"
    on = f"on {host.name}:"
    actions = []
    if state == "empty":
        actions.append(
            f"{on} check that {cfg.standby_datadir} has {backup_need(cfg)} MB free (the "
            "primary's size and a margin; stop otherwise)"
        )
    actions += install_tools_plan(host, cfg.standby_tools_dir, cfg.server_python)
    if state == "empty":
        if host.exists(cfg.standby_datadir):
            actions.append(
                f"{on} remove the empty directory {cfg.standby_datadir} (pg_basebackup "
                "creates it 0700)"
            )
        env = " ".join(f"{k}={v}" for k, v in cfg.primary().libpq_env().items())
        actions.append(
            f"{on} {display_command(host.as_user(base_backup_argv(cfg), user))}   (libpq: "
            f"{env}; our password for the primary, if one is used, in a private PGPASSFILE)"
        )
    else:
        actions.append(f"{cfg.standby_datadir} already holds a base backup: no pg_basebackup")
    auto = cfg.standby_datadir / AUTO_CONF
    actions.append(
        f"{on} write {auto} (owner {owner}, mode 0600), these lines replacing earlier ones for "
        "the same settings:"
    )
    actions += [
        f"    {line}"
        for line in recovery_conf_lines(recovery_settings(cfg, versions.standby_major(cfg)))
    ]
    actions.append(
        f"{on} create {cfg.standby_datadir / SIGNALS[cfg.mode]} (empty, owner {owner}, mode 0600)"
    )
    actions.append(f"{on} {display_command(host.as_user(cluster.start_argv(), user))}")
    if cfg.hot_standby:
        actions.append("wait until the standby accepts read-only connections, in recovery")
    return actions
