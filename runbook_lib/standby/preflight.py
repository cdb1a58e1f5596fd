"""Step 1: read-only checks before anything changes, on every machine of the standby.

Free space is shown, not demanded: the steps that need it check it themselves (archiving when it
sets archiving up, the build before its base backup), so that during an incident (a full
archive) preflight still passes and the status step is reached."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from runbook_lib import pgversions, wal_archive
from runbook_lib.cluster import server_os_user
from runbook_lib.connection import connect, server_version_num, server_version_text
from runbook_lib.display import TextWithTables
from runbook_lib.errors import PreconditionError, RunbookError
from runbook_lib.host import LocalHost
from runbook_lib.ports import port_accepts
from runbook_lib.standby import versions
from runbook_lib.standby.archiving import archiving_plan, sets_archiving_up
from runbook_lib.standby.config import StandbyConfig
from runbook_lib.standby.machines import pg_program
from runbook_lib.standby.space import (
    MIN_ARCHIVE_FREE_MB,
    backup_need_mb,
    free_mb,
    primary_size_mb,
)


@dataclass
class Preflight(TextWithTables):
    checks: pd.DataFrame
    restart_needed: list[str]

    def __repr__(self) -> str:
        lines = [self.checks.to_string(index=False)]
        if self.restart_needed:
            lines.append(
                "the archiving step will RESTART the primary: " + "; ".join(self.restart_needed)
            )
        return "\n".join(lines)


class Checks:
    """The rows of the preflight table, and what the checks learned on the way."""

    def __init__(self, cfg: StandbyConfig) -> None:
        self.cfg = cfg
        self.rows: list[dict] = []
        self.restart: list[str] = []
        self.primary_mb: int | None = None
        self.archiving_changes = False
        self.unreachable: set[str] = set()
        self.primary_ok = False

    def add(self, check: str, ok: bool, observed: object, note: str = "") -> None:
        self.rows.append({"check": check, "ok": bool(ok), "observed": str(observed), "note": note})

    def reachable(self, host: LocalHost) -> bool:
        return host.name not in self.unreachable


def _machines(cfg: StandbyConfig) -> list[tuple[str, LocalHost]]:
    roles = [("primary", cfg.primary_os_host), ("standby", cfg.standby_os_host)]
    roles.append(("archive", cfg.archive_os_host))
    return roles


def check_machines(c: Checks) -> None:
    """Each machine answers (over SSH: reachable, host key known and matching)."""
    seen: set[str] = set()
    for role, host in _machines(c.cfg):
        if host.name in seen:
            continue
        seen.add(host.name)
        try:
            check = getattr(host, "check_reachable", None)  # an SshHost: clear messages
            check() if check else host.run(["true"])
            c.add(f"{role} machine reachable", True, host.name)
        except RunbookError as exc:
            c.unreachable.add(host.name)
            c.add(f"{role} machine reachable", False, host.name, str(exc))


def check_primary(c: Checks) -> None:
    cfg = c.cfg
    try:
        conn = connect(cfg.primary())
    except RunbookError as exc:
        c.add("primary reachable", False, exc)
        return
    with conn:
        c.add("primary reachable", True, cfg.primary())
        superuser = conn.execute(
            "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user"
        ).fetchone()["rolsuper"]
        note = "" if superuser else "ALTER SYSTEM, pg_switch_wal and pg_basebackup need a superuser"
        c.add("superuser", superuser, cfg.pgsuperuser, note)
        version = server_version_num(conn)
        supported = version // 10000 in pgversions.SUPPORTED_MAJORS
        first, last = pgversions.SUPPORTED_MAJORS[0], pgversions.SUPPORTED_MAJORS[-1]
        c.add("server version", supported, server_version_text(conn), f"needs {first} to {last}")
        if not supported:
            return
        c.primary_ok = True
        c.primary_mb = primary_size_mb(conn)
        _settings(c, archiving_plan(cfg, conn))


def _settings(c: Checks, plan: pd.DataFrame) -> None:
    c.archiving_changes = sets_archiving_up(plan)
    for r in plan.itertuples():
        note = "unchanged"
        if r.change:
            note = "will change" + (
                " (needs a RESTART of the primary)" if r.needs_restart else " (reload)"
            )
            if r.needs_restart:
                c.restart.append(f"{r.setting} {r.current} -> {r.wanted}")
        c.add(f"setting {r.setting}", True, r.current, note)
    if c.restart and not c.cfg.restart_primary_command:
        c.add(
            "restart_primary_command",
            False,
            "(empty)",
            "the primary needs a restart for archiving: set restart_primary_command",
        )


def check_versions(c: Checks) -> None:
    """The standby's machine can run the primary's major version (programs, data directory)."""
    cfg = c.cfg
    if not c.primary_ok or not c.reachable(cfg.standby_os_host):
        return
    problem = versions.mismatch(cfg)
    if problem:
        c.add("standby version", False, problem, "same major version on both sides")
        return
    bindir = cfg.standby_cluster().bindir
    c.add("standby version", True, f"PostgreSQL {versions.primary_major(cfg)}", str(bindir))


def _space_note(have: int, need: int | None, step: str) -> str:
    if need is None:
        return f"{step} checks it"
    if have >= need:
        return f"enough for {step} (needs {need} MB)"
    return f"LOW: {step} will stop until {need} MB are free (monitoring still works)"


def check_archive(c: Checks) -> None:
    cfg, host = c.cfg, c.cfg.archive_os_host
    if not c.reachable(host):
        return
    exists = host.exists(cfg.archive_dir)
    note = "" if exists else "create it, owned by the server's OS user"
    c.add("archive_dir exists", exists, f"{cfg.archive_dir} on {host.name}", note)
    if exists:
        have = free_mb(host, cfg.archive_dir)
        note = "shown only: archiving is set up"
        if c.archiving_changes:
            note = _space_note(have, MIN_ARCHIVE_FREE_MB, "the archiving step")
        c.add("archive_dir free space", True, f"{have} MB", note)


def check_standby(c: Checks) -> None:
    cfg, host = c.cfg, c.cfg.standby_os_host
    if not c.reachable(host):
        return
    datadir = cfg.standby_datadir
    try:
        cluster = cfg.standby_cluster()
    except RunbookError:
        cluster = None  # the primary's version is unknown or has no programs there: see above
    running = cluster is not None and cluster.is_running()
    built = host.exists(datadir / "PG_VERSION")
    empty = not host.exists(datadir) or not host.list_dir(datadir)
    note = "already holds the standby (later steps skip the backup)" if built else ""
    if not built and not empty:
        note = "not empty: choose an empty or absent directory"
    c.add("standby_datadir empty", empty or built, f"{datadir} on {host.name}", note)
    c.add("standby_datadir parent exists", host.exists(datadir.parent), datadir.parent)
    need = None if built or c.primary_mb is None else backup_need_mb(c.primary_mb)
    c.add(
        "standby_datadir free space",
        True,
        f"{free_mb(host, datadir)} MB",
        "shown only: the standby is built" if built else _space_note(
            free_mb(host, datadir), need, "the base backup"
        ),
    )  # fmt: skip
    port_ok = running or not port_accepts(cfg.standby_port, cfg.standby_address)
    note = "the standby listens there already" if running else ""
    c.add(
        "standby_port free",
        port_ok,
        f"{cfg.standby_address}:{cfg.standby_port}",
        note or ("" if port_ok else "another program listens there"),
    )
    if cfg.waiting:
        trigger = cfg.trigger_file
        note = "a stale trigger ends recovery at once"
        c.add("trigger_file absent", not host.exists(trigger), trigger, note)
        note = "must be writable by the server's OS user"
        c.add("trigger_file directory", host.exists(trigger.parent), trigger.parent, note)
    if cluster is None:
        return
    for program, find in (
        ("pg_basebackup", lambda: versions.pg_basebackup(cfg)),
        (
            "pg_archivecleanup",
            lambda: pg_program(host, "pg_archivecleanup", versions.standby_major(cfg)),
        ),
    ):
        try:
            path, ok = find(), True
        except RunbookError as exc:
            path, ok = str(exc), False
        c.add(program, ok, path)


def check_python(c: Checks) -> None:
    """The interpreter the servers run the WAL commands with, on every machine that runs one."""
    cfg = c.cfg
    machines = [("primary", cfg.primary_os_host), ("standby", cfg.standby_os_host)]
    if not (cfg.archive_on_primary_side and cfg.archive_on_standby_side):
        machines.append(("archive", cfg.archive_os_host))
    seen: set[str] = set()
    for role, host in machines:
        if host.name in seen or not c.reachable(host):
            continue
        seen.add(host.name)
        ok = host.exists(cfg.server_python)
        note = "runs the WAL commands as the server's OS user"
        if not ok:
            note = f"missing on {host.name}: install python3 there or set server_python"
        c.add(
            f"server_python on the {role} machine", ok, f"{cfg.server_python} on {host.name}", note
        )


def server_ssh_argv(cfg: StandbyConfig, *remote: str) -> list[str]:
    """ssh as the servers' WAL commands run it, to the archive's machine."""
    return [
        "ssh",
        *wal_archive.SSH_DEFAULTS,
        *cfg.server_ssh_options,
        "--",
        cfg.archive_target,
        *remote,
    ]


def check_server_ssh(c: Checks) -> None:
    """Without a shared file system, the servers' own SSH to the archive's machine: as the
    server's OS user, with its keys and known hosts, the archive directory writable there."""
    cfg = c.cfg
    sides = []
    if not cfg.archive_on_primary_side:
        sides.append(("primary", cfg.primary_os_host))
    if not cfg.archive_on_standby_side:
        sides.append(("standby", cfg.standby_os_host))
    for role, host in sides:
        if not c.reachable(host):
            continue
        argv = server_ssh_argv(
            cfg, "test", "-d", str(cfg.archive_dir), "-a", "-w", str(cfg.archive_dir)
        )
        result = host.run(argv, user=server_os_user(), check=False, timeout_s=60)
        ok = result.returncode == 0
        note = ""
        if not ok:
            tail = result.stderr.strip().splitlines()[-1:] or [f"exit status {result.returncode}"]
            note = (
                f"{tail[0]}: the server's OS user on the {role} machine needs an SSH key "
                f"accepted by {cfg.archive_target} and its host key in known_hosts, and "
                f"{cfg.archive_dir} writable there"
            )
        c.add(
            f"{role} server reaches the archive over SSH",
            ok,
            f"{host.name} -> {cfg.archive_target}",
            note,
        )


def check_shared_mount(c: Checks) -> None:
    """archive_shared: a file written from one side must be seen from the other (a probe file,
    removed at once)."""
    cfg = c.cfg
    if not cfg.archive_shared:
        return
    for writer, reader in (
        (cfg.primary_os_host, cfg.archive_os_host),
        (cfg.archive_os_host, cfg.standby_os_host),
    ):
        if writer.name == reader.name or not (c.reachable(writer) and c.reachable(reader)):
            continue
        token = secrets.token_hex(8)
        probe = cfg.archive_dir / f".runbook-shared-probe-{token}"
        try:
            writer.write_text(probe, token, owner=server_os_user(), mode=0o644)
            seen = reader.exists(probe) and reader.read_text(probe, user=server_os_user()) == token
        except RunbookError as exc:
            seen = False
            c.add("archive_dir shared", False, f"{writer.name} -> {reader.name}", str(exc))
            continue
        finally:
            writer.remove_file(probe)
        note = "" if seen else "not the same directory: mount the same share on both machines"
        c.add("archive_dir shared", seen, f"written on {writer.name}, read on {reader.name}", note)


CHECKS: list[Callable[[Checks], None]] = [
    check_machines,
    check_primary,
    check_versions,
    check_archive,
    check_standby,
    check_python,
    check_server_ssh,
    check_shared_mount,
]


def preflight(cfg: StandbyConfig) -> Preflight:
    """Step 1: every machine reachable, the primary reachable as superuser, WAL and archive
    settings (and whether a restart is needed), the archive, the standby's data directory and
    port, the programs the servers run. Changes nothing (a shared archive gets a probe file,
    removed at once). Free space is shown; the steps that need it check it."""
    c = Checks(cfg)
    for check in CHECKS:
        check(c)
    checks = pd.DataFrame(c.rows)
    failed = checks[~checks["ok"]]
    if len(failed):
        detail = "; ".join(f"{r.check}: {r.observed} {r.note}".strip() for r in failed.itertuples())
        raise PreconditionError(f"preflight failed ({len(failed)} checks): {detail}")
    return Preflight(checks, c.restart)
