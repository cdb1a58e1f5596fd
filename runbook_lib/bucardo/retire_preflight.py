"""Retire step 1, read-only: the sync exists (or an earlier run of this retire got this far), both
masters are caught up, the database that goes takes no application writes, nothing else uses
Bucardo there. Bad input stops here, before anything is changed."""

from __future__ import annotations

from typing import Any

import pandas as pd
from psycopg import sql

from runbook_lib.bucardo import (
    catalog,
    ctl,
    drain,
    queue,
    retire_leftovers,
    retire_state,
    retire_stop,
)
from runbook_lib.bucardo.objects import MARKER_TABLE
from runbook_lib.bucardo.result import StepResult
from runbook_lib.bucardo.retire_config import RetireConfig
from runbook_lib.bucardo.retire_sequences import sequence_table
from runbook_lib.bucardo.superuser import NOTHING, check_server
from runbook_lib.connection import connect
from runbook_lib.errors import ConfigurationError, PreconditionError, WaitTimeout

QUIET_S = 5  # the retired database must have taken no application write for this long
CAUGHT_UP_WAIT_S = 60.0


def _control(
    cfg: RetireConfig, checks: list[dict[str, Any]]
) -> tuple[dict[str, list[str]], list[str]]:
    """This sync's objects in the control database, and the other syncs there."""
    b = cfg.bootstrap
    with connect(b.control_admin, application_name="runbook_bucardo_retire") as admin:
        exists = catalog.database_exists(admin, b.bucardo_dbname)
    if not exists:
        checks.append({"check": "control database", "ok": True, "detail": "absent"})
        return {}, []
    with connect(b.control, application_name="runbook_bucardo_retire") as conn:
        left = retire_leftovers.in_control(conn, b)
        others = retire_leftovers.other_syncs(conn, b)
        state = catalog.control_state(conn, b) if catalog.control_installed(conn) else None
    sync = state["sync"] if state else None
    if sync and (sync["herd"] != b.relgroup or sync["dbs"] != b.dbgroup):
        raise ConfigurationError(
            f"sync {b.sync!r} uses relgroup {sync['herd']!r} and dbgroup {sync['dbs']!r}, not "
            f"{b.relgroup!r}/{b.dbgroup!r}: these are not the parameters of its bootstrap; "
            f"{NOTHING}"
        )
    if state and state["dbgroup"] and set(state["dbgroup"]) != {b.here, b.there}:
        raise ConfigurationError(
            f"dbgroup {b.dbgroup!r} holds {sorted(state['dbgroup'])}, not {b.here} and {b.there}; "
            f"{NOTHING}"
        )
    detail = ", ".join(f"{k} {', '.join(v)}" for k, v in left.items()) or "nothing of this sync"
    checks.append({"check": "control database", "ok": True, "detail": detail})
    return left, others


def _refuse_other_syncs(cfg: RetireConfig, others: list[str]) -> None:
    if others:
        raise PreconditionError(
            f"Bucardo's control database {cfg.bootstrap.control} also runs sync(s) "
            f"{', '.join(others)}: this runbook stops the daemon and removes Bucardo's schema "
            f"from both masters, which would stop them too; retire them first or separately; "
            f"{NOTHING}"
        )


def _masters(cfg: RetireConfig, checks: list[dict[str, Any]]) -> None:
    """What of Bucardo each master holds; refused when another sync shares its schema."""
    for name, ep in cfg.sides().items():
        with connect(ep, application_name="runbook_bucardo_retire") as conn:
            syncs = retire_leftovers.syncs_on_master(conn)
            left = retire_leftovers.on_master(conn)
        others = [s for s in syncs if s != cfg.bootstrap.sync]
        if others:
            raise PreconditionError(
                f"Bucardo also captures changes on {name} ({ep}) for sync(s) {', '.join(others)}; "
                f"its schema there is shared with them and cannot be removed; {NOTHING}"
            )
        checks.append({
            "check": f"Bucardo on {name}",
            "ok": True,
            "detail": f"{len(left['triggers'])} triggers, {len(left['functions'])} functions, "
            f"schemas {left['schemas'] or 'none'}",
        })  # fmt: skip


def _retired_writes(cfg: RetireConfig) -> list[dict[str, Any]]:
    """Changes the application made on the retired database in the last QUIET_S seconds (its
    own changes are logged in its delta tables; Bucardo's writes there are not)."""
    with connect(cfg.retired, application_name="runbook_bucardo_retire") as conn:
        rows = []
        for d in queue.delta_names(conn, cfg.bootstrap.sync):
            if catalog.bucardo_table_name(d["tablename"]) == MARKER_TABLE:
                continue  # the bootstrap's own marker rows (its step 8)
            n = conn.execute(
                sql.SQL(
                    "SELECT count(*) AS n FROM {} WHERE txntime > "
                    "pg_catalog.clock_timestamp() - make_interval(secs => %s)"
                ).format(sql.Identifier("bucardo", catalog.unquote(d["deltaname"]))),
                [QUIET_S],
            ).fetchone()["n"]
            if n:
                rows.append({"table": d["tablename"], "changes": n})
    return rows


def _live_checks(cfg: RetireConfig, checks: list[dict[str, Any]]) -> str:
    """Replication not stopped yet: the retired side is quiet, and either the daemon runs and
    has caught up, or it is down with nothing of the retired side left to replicate."""
    b = cfg.bootstrap
    writes = _retired_writes(cfg)
    if writes:
        tables = ", ".join(f"{w['table']} ({w['changes']})" for w in writes)
        raise PreconditionError(
            f"the application still writes to {cfg.retired_name} ({cfg.retired}), the database "
            f"that goes: changes in the last {QUIET_S} s on {tables}. Writes there after "
            f"replication stops would be lost: move the application to {cfg.kept_name} "
            f"({cfg.kept}) first, or keep {cfg.retire} instead; {NOTHING}"
        )
    checks.append({
        "check": f"{cfg.retired_name} quiet",
        "ok": True,
        "detail": f"no application write in the last {QUIET_S} s",
    })  # fmt: skip
    pid = ctl.BucardoCtl(b).mcp_pid()
    if not pid:
        return _daemon_down(cfg, checks)
    checks.append({"check": "Bucardo daemon", "ok": True, "detail": f"MCP pid {pid}"})
    try:
        state = drain.wait_caught_up(b, timeout_s=min(b.drain_timeout_s, CAUGHT_UP_WAIT_S),
                                     kick=False)  # fmt: skip
    except WaitTimeout as exc:
        raise PreconditionError(
            f"Bucardo is not caught up: changes logged before this check are still pending after "
            f"{exc.timeout_s:g} s ({exc.last_observed!r}); see {b.bucardo_rundir}/daemon/"
            f"log.bucardo; {NOTHING}"
        ) from exc
    checks.append({
        "check": "caught up",
        "ok": True,
        "detail": f"every change logged before this check is replicated (now pending, written "
        f"since: {state.pending}; last run {state.last_status!r})",
    })  # fmt: skip
    return "replication runs and is caught up"


def _daemon_down(cfg: RetireConfig, checks: list[dict[str, Any]]) -> str:
    """No daemon (stopped by hand, or an earlier run of this retire stopped it and was cut off
    before recording it): fine as long as every change made on the retired side got across."""
    b = cfg.bootstrap
    if pending := retire_stop.retired_pending(cfg):
        raise PreconditionError(
            f"the Bucardo daemon is not running (no live pid in {b.bucardo_rundir}/daemon) and "
            f"{pending} changes made on {cfg.retired_name} have not reached {cfg.kept_name}: "
            "start it (re-run the bootstrap's Bucardo objects step) and let it catch up before "
            f"retiring; {NOTHING}"
        )
    checks.append({
        "check": "Bucardo daemon",
        "ok": True,
        "detail": f"not running; nothing made on {cfg.retired_name} is waiting to reach "
        f"{cfg.kept_name}, so replication counts as stopped (the final verify is skipped; the "
        "proof at the stop compares the two)",
    })  # fmt: skip
    return f"the daemon is not running and {cfg.retired_name} has nothing left to replicate"


def preflight(cfg: RetireConfig) -> StepResult:
    """Check the servers, Bucardo and the sync; raise before anything changes."""
    b = cfg.bootstrap
    checks: list[dict[str, Any]] = [
        {"check": "database that stays", "ok": True, "detail": f"{cfg.kept_name}: {cfg.kept}"},
        {"check": "database that goes", "ok": True, "detail": f"{cfg.retired_name}: {cfg.retired}"},
    ]  # fmt: skip
    if not ctl.program():
        raise PreconditionError(
            f"the bucardo program was not found (PATH or $BUCARDO_PROGRAM); {NOTHING}"
        )
    needs = "dropping Bucardo's triggers and schema"
    for ep, label in (
        (cfg.kept, f"{cfg.kept_name} (stays)"),
        (cfg.retired, f"{cfg.retired_name} (goes)"),
    ):
        check_server(ep, label, needs, checks, "runbook_bucardo_retire")
    control, others = _control(cfg, checks)
    record = retire_state.read(cfg)
    if not record and "sync" not in control:
        raise PreconditionError(
            f"there is no sync {b.sync!r} in Bucardo's control database {b.control} and no "
            f"record of an earlier retire on {cfg.retired_name}: check `sync`, `keep` and the "
            f"connection parameters (syncs there: {', '.join(others) or 'none'}); {NOTHING}"
        )
    _refuse_other_syncs(cfg, others)
    _masters(cfg, checks)
    if record and record.kept != cfg.kept_name:
        raise ConfigurationError(
            f"an earlier run of this retire kept {record.kept}, not {cfg.kept_name} (record on "
            f"{cfg.retired}); replication is already stopped: re-run with the same `keep`; "
            f"{NOTHING}"
        )
    if record:
        progress = f"resuming: replication stopped at {record.stopped_at:%Y-%m-%d %H:%M:%S %Z}"
    else:
        progress = _live_checks(cfg, checks)
    checks.append({"check": "retire progress", "ok": True, "detail": progress})
    return StepResult(
        "preflight",
        f"keep {cfg.kept_name} ({cfg.kept}), retire {cfg.retired_name} ({cfg.retired}); "
        + progress,
        tables={"checks": pd.DataFrame(checks), "sequences": sequence_table(cfg)},
    )
