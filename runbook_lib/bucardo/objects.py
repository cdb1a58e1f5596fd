"""Step 3: Bucardo's control database, its databases, relgroup, dbgroup and sync (autokick off,
explicit conflict strategy), then the daemon, (re)started after the sync exists so that its purge
process runs. Capture of changes starts when `add sync` returns."""

from __future__ import annotations

from typing import Any

import pandas as pd

from runbook_lib.bucardo import catalog, ctl, queue, triggers
from runbook_lib.bucardo.config import BootstrapConfig
from runbook_lib.bucardo.ctl import BucardoCtl, daemon_dir
from runbook_lib.bucardo.result import StepResult
from runbook_lib.bucardo.selection import select_tables
from runbook_lib.connection import connect
from runbook_lib.errors import PartiallyApplied, PreconditionError
from runbook_lib.passfile import password_in_use

MARKER_TABLE = f"{catalog.MARKER_SCHEMA}.{catalog.MARKER_TABLE}"


def replicated_tables(cfg: BootstrapConfig) -> tuple[str, ...]:
    """The tables of the relgroup: the selected ones plus the runbook's marker table."""
    with connect(cfg.source) as conn:
        selected = select_tables(cfg, conn).replicated
    return (*selected, MARKER_TABLE) if MARKER_TABLE not in selected else selected


CONFIG_SETTINGS_SQL = (
    "UPDATE bucardo.bucardo_config SET setting = %s WHERE name = %s AND setting IS DISTINCT FROM %s"
)


def control_settings(cfg: BootstrapConfig) -> dict[str, str]:
    """Bucardo's files go to the run directory (the Debian defaults need /var/log/bucardo)."""
    rundir = daemon_dir(cfg.bucardo_rundir)
    return {
        "piddir": str(rundir),
        "reason_file": str(rundir / "restart.reason"),
        "warning_file": str(rundir / "warning.log"),
        "log_conflict_file": str(rundir / "conflict.log"),
    }


def control_installed(cfg: BootstrapConfig) -> bool:
    with connect(cfg.control_admin) as admin:
        exists = catalog.database_exists(admin, cfg.bucardo_dbname)
    if not exists:
        return False
    with connect(cfg.control) as conn:
        if catalog.control_installed(conn):
            return True
    raise PreconditionError(
        f"database {cfg.bucardo_dbname} exists on {cfg.bucardo_host}:{cfg.bucardo_port} "
        "without Bucardo's schema; drop it or choose another bucardo_dbname"
    )


def ensure_control_database(cfg: BootstrapConfig, bucardo: BucardoCtl) -> bool:
    """Install Bucardo's control database when missing; point its files at the run directory."""
    installed = control_installed(cfg)
    if not installed:
        bucardo.install()
    with connect(cfg.control) as conn:
        for name, value in control_settings(cfg).items():
            conn.execute(CONFIG_SETTINGS_SQL, [value, name, value])
    return not installed


DBPASS_SQL = "UPDATE bucardo.db SET dbpass = %s WHERE name = %s AND dbpass IS DISTINCT FROM %s"
# the bound value would be written to the control server's log with log_statement = mod or all
QUIET_SQL = "SET LOCAL log_statement = 'none'"


def share_passwords(cfg: BootstrapConfig) -> list[str]:
    """Bucardo's control server logs in to both masters itself (its plperlu validation and the
    daemon through bucardo.db_getconn), so it needs the password libpq uses for pgsuperuser
    there, when one is used (PGPASSWORD, the password file or a service file). It is stored in
    bucardo.db as `bucardo add db pass=...` would, but through a bound parameter, in a
    transaction that turns statement logging off (the bucardo role is a superuser): never on a
    command line, in a log or in the notebook."""
    stored = []
    with connect(cfg.control) as control:
        for name, ep in cfg.databases().items():
            password = password_in_use(ep)
            if not password:
                continue
            with control.transaction():
                control.execute(QUIET_SQL)
                if control.execute(DBPASS_SQL, [password, name, password]).rowcount:
                    stored.append(name)
    return stored


# Bucardo 5.6 asks whether a table has pending changes with a LIMIT 1 anti-join of its delta and
# track tables that the planner runs as a nested loop; under a sustained write load (deltas are
# purged only after 45 s) that is quadratic: sync runs were seen taking 10 s, then 67 s, falling
# ever further behind at 700 tps, and 0.3-1 s each with nested loops off in Bucardo's sessions.
BUCARDO_SESSION_OPTIONS = "options='-c enable_nestloop=off'"
DBCONN_SQL = "UPDATE bucardo.db SET dbconn = %s WHERE name = %s AND dbconn = ''"


def tune_sessions(cfg: BootstrapConfig) -> tuple[list[str], list[str]]:
    """Bucardo's own connections to both masters plan its delta queries without nested loops
    (`dbconn`, kept across daemon restarts); returns (tuned now, left alone: the operator's own
    connection options)."""
    tuned, kept = [], []
    with connect(cfg.control) as control:
        for name in cfg.databases():
            if control.execute(DBCONN_SQL, [BUCARDO_SESSION_OPTIONS, name]).rowcount:
                tuned.append(name)
            else:
                row = control.execute(
                    "SELECT dbconn FROM bucardo.db WHERE name = %s", [name]
                ).fetchone()
                if row and row["dbconn"] != BUCARDO_SESSION_OPTIONS:
                    kept.append(name)
    return tuned, kept


EMPTY_STATE = {"dbs": {}, "relgroup": False, "relgroup_tables": [], "dbgroup": None, "sync": None}


def object_commands(
    cfg: BootstrapConfig, state: dict[str, Any], tables: tuple[str, ...]
) -> list[tuple[str, list[str]]]:
    """(what, bucardo arguments) for every object missing from the control database."""
    commands = []
    for name, ep in cfg.databases().items():
        if name not in state["dbs"]:
            args = ["add", "db", name, f"dbname={ep.dbname}", f"host={ep.host}",
                    f"port={ep.port}", f"user={ep.user}"]  # fmt: skip
            commands.append((f"added db {name}", args))
    missing = [t for t in tables if t not in state["relgroup_tables"]]
    if missing:
        commands.append((
            f"added {len(missing)} tables to relgroup {cfg.relgroup}",
            ["add", "table", *missing, f"relgroup={cfg.relgroup}", f"db={cfg.here}"],
        ))  # fmt: skip
    if state["dbgroup"] is None:
        commands.append((
            f"added dbgroup {cfg.dbgroup}",
            ["add", "dbgroup", cfg.dbgroup, f"{cfg.here}:source", f"{cfg.there}:source"],
        ))  # fmt: skip
    if state["sync"] is None:
        commands.append((
            f"added sync {cfg.sync} (autokick=0)",
            ["add", "sync", cfg.sync, f"relgroup={cfg.relgroup}", f"dbs={cfg.dbgroup}",
             "autokick=0", f"conflict_strategy={cfg.effective_conflict_strategy}"],
        ))  # fmt: skip
    elif missing:
        # tables added to an existing relgroup reach the sync's triggers only on validation
        commands.append((f"validated sync {cfg.sync}", ["validate", cfg.sync]))
    return commands


def plan_bucardo_objects(cfg: BootstrapConfig) -> list[str]:
    """What create_bucardo_objects would run now (read-only)."""
    bucardo = BucardoCtl(cfg)
    actions = [f"write {bucardo.rcfile} (connection settings, no password)"]
    installed = control_installed(cfg)
    state = EMPTY_STATE
    if installed:
        with connect(cfg.control) as conn:
            state = catalog.control_state(conn, cfg)
    else:
        actions.append(bucardo.shown(bucardo.install_args()))
    for name, value in control_settings(cfg).items():
        actions.append(f"on {cfg.control}: UPDATE bucardo.bucardo_config SET setting = "
                       f"'{value}' WHERE name = '{name}'")  # fmt: skip
    commands = object_commands(cfg, state, replicated_tables(cfg))
    actions += [bucardo.shown(a) for _, a in commands if a[:2] == ["add", "db"]]
    actions.append(
        f"on {cfg.control}: UPDATE bucardo.db SET dbconn = {BUCARDO_SESSION_OPTIONS!r} WHERE "
        "name = <each master> AND dbconn = ''  # Bucardo's delta check without nested loops"
    )
    actions.append(
        f"on {cfg.control}: UPDATE bucardo.db SET dbpass = <the password libpq uses for "
        f"{cfg.pgsuperuser} on each master, if any> WHERE name = ...  # bound, never displayed"
    )
    actions += _trigger_plan(cfg, list(replicated_tables(cfg)))
    actions += [bucardo.shown(a) for _, a in commands if a[:2] != ["add", "db"]]
    actions.append(
        "then on each master, per table in its own short transaction: CREATE OR REPLACE TRIGGER "
        "bucardo_delta / the truncate trigger with Bucardo's own functions (capture starts)"
    )
    if state["sync"] is None or not bucardo.mcp_pid():
        actions.append(bucardo.shown(bucardo.start_args("<reason>")))
    return actions


def _trigger_plan(cfg: BootstrapConfig, tables: list[str]) -> list[str]:
    lines = []
    for ep in cfg.databases().values():
        try:
            with connect(ep) as conn:
                now = triggers.existing(conn, tables)
        except PreconditionError:  # the target database does not exist yet
            now = {t: {} for t in tables}
        for table in tables:
            if triggers.DELTA_TRIGGER not in now[table]:
                stmts = triggers.TriggerSQL(table, cfg.sync).placeholders()
                lines.append(triggers.plan_line(ep, stmts))
    return lines


def create_bucardo_objects(cfg: BootstrapConfig) -> StepResult:
    """Add what is missing (databases, tables, dbgroup, sync), then make sure the daemon runs."""
    with connect(cfg.target_admin) as admin:
        marker = catalog.read_marker(admin, cfg.pgdatabase)
    if not marker or not marker.reached("schema"):
        raise PreconditionError("the target has no structure yet; run the target schema step first")
    bucardo = BucardoCtl(cfg)
    bucardo.write_rc()
    done: list[str] = []
    if ensure_control_database(cfg, bucardo):
        done.append(f"installed control database {cfg.bucardo_dbname}")
    tables = replicated_tables(cfg)
    with connect(cfg.control) as conn:
        state = catalog.control_state(conn, cfg)
    created_sync = state["sync"] is None
    commands = object_commands(cfg, state, tables)
    for what, args in [c for c in commands if c[1][:2] == ["add", "db"]]:
        bucardo.run(args)
        done.append(what)
    if stored := share_passwords(cfg):  # before anything makes Bucardo's server log in
        done.append(f"login passwords shared with Bucardo for {', '.join(stored)}")
    tuned, kept = tune_sessions(cfg)
    if tuned:
        done.append(f"Bucardo's sessions on {', '.join(tuned)} plan without nested loops")
    if kept:
        done.append(
            f"WARNING: {', '.join(kept)} keep their own dbconn; add {BUCARDO_SESSION_OPTIONS} "
            "to it, or Bucardo falls behind under a sustained write load"
        )
    for name, ep in cfg.databases().items():
        if placed := triggers.install_placeholders(cfg, ep, list(tables)):
            done.append(
                f"placeholder triggers on {len(placed)} tables of {name} (one short lock each, "
                "so that Bucardo locks no table)"
            )
    for what, args in [c for c in commands if c[1][:2] != ["add", "db"]]:
        bucardo.run(args)
        done.append(what)
    for name, ep in cfg.databases().items():
        if switched := triggers.install_capture(cfg, ep, list(tables)):
            done.append(f"change capture switched on for {len(switched)} tables of {name}")
    with connect(cfg.control) as conn:
        state = catalog.control_state(conn, cfg)
    _verify(cfg, state, tables, done)
    if created_sync or not bucardo.mcp_pid() or not bucardo.controller_running(cfg.sync):
        bucardo.start(f"runbook bucardo_bootstrap: sync {cfg.sync} added")
        done.append("daemon (re)started")
    objects = pd.DataFrame(
        [
            {
                "object": "database",
                "name": n,
                "detail": f"{d['dbhost']}:{d['dbport']}/{d['dbname']}",
            }
            for n, d in state["dbs"].items()
        ]
        + [
            {
                "object": "relgroup",
                "name": cfg.relgroup,
                "detail": f"{len(state['relgroup_tables'])} tables",
            }
        ]
        + [
            {
                "object": "dbgroup",
                "name": cfg.dbgroup,
                "detail": ", ".join(f"{d}:{r}" for d, r in state["dbgroup"].items()),
            }
        ]
        + [
            {
                "object": "sync",
                "name": cfg.sync,
                "detail": f"autokick={state['sync']['autokick']}, conflict_strategy="
                f"{state['sync']['conflict_strategy']!r}, daemon pid {bucardo.mcp_pid()}",
            }
        ]
    )
    return StepResult(
        "bucardo objects",
        "; ".join(done) if done else "every object exists and the daemon runs",
        already_done=not done,
        tables={"objects": objects, "delta queue": queue.delta_queue(cfg)},
    )


def _verify(cfg: BootstrapConfig, state: dict, tables: tuple[str, ...], done: list[str]) -> None:
    missing = set(tables) - set(state["relgroup_tables"])
    if (
        missing
        or not state["sync"]
        or state["dbgroup"] != {cfg.here: "source", cfg.there: "source"}
    ):
        raise PartiallyApplied(
            "the Bucardo objects step",
            done,
            f"Bucardo's objects are incomplete after adding them: tables missing "
            f"{sorted(missing)}, dbgroup {state['dbgroup']}, sync {state['sync']}; see "
            f"{ctl.log_location(cfg)}",
        )
    for name, ep in cfg.databases().items():
        with connect(ep) as conn:
            not_captured = triggers.capture_missing(conn, cfg.sync, list(tables))
        if not_captured:
            raise PartiallyApplied(
                "the Bucardo objects step",
                done,
                f"change capture is not installed on {name} for {sorted(not_captured)}; see "
                f"{ctl.log_location(cfg)}",
            )
