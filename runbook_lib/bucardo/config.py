"""The bootstrap's parameters, validated once: bad input stops the run before anything changes."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from runbook_lib.connection import Endpoint, database_name
from runbook_lib.errors import ConfigurationError
from runbook_lib.ssh_host import parse_target

# Bucardo object names and the database/role names the runbook creates or logs in as: lower case,
# no quoting needed anywhere (Bucardo's own check is ^[a-zA-Z]\w*$; upper case would be folded by
# some of its commands and not by others).
SIMPLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# Existing schema and table names are matched exactly against the catalog; upper case is allowed
# (they already exist), quotes, spaces and punctuation are not.
OBJECT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
HOST_NAME = re.compile(r"^[A-Za-z0-9._:-]+$")
BUCARDO_STRATEGIES = ("bucardo_latest", "bucardo_latest_all_tables", "bucardo_abort")
UNIMPLEMENTED_STRATEGIES = (
    "bucardo_source",
    "bucardo_target",
    "bucardo_skip",
    "bucardo_random",
    "bucardo_custom",
)
SEQUENCE_STRATEGIES = ("interleave", "none")
MAX_COPY_JOBS = 32
# absent or empty: libpq's PGDATABASE; Bucardo on this machine; ssh's own configuration
OPTIONAL = {
    "pgdatabase": "",
    "bucardo_ssh": "",
    "ssh_config": "",
    "ssh_known_hosts": "",
    "ssh_identity_file": "",
}
MAX_SYNC_NAME = 42  # Bucardo names the truncate trigger bucardo_note_trunc_<sync> up to this


@dataclass(frozen=True)
class BootstrapConfig:
    """Validated parameters of notebooks/bucardo_bootstrap.ipynb (names as in the notebook)."""

    pgdatabase: str
    pghost: str
    pgport: int
    pghost2: str
    pgport2: int
    pgsuperuser: str
    bucardouser: str
    here: str
    there: str
    tables: tuple[str, ...]
    schemas: tuple[str, ...]
    relgroup: str
    dbgroup: str
    sync: str
    bucardo_host: str
    bucardo_port: int
    bucardo_dbname: str
    bucardo_ssh: str
    ssh_config: str
    ssh_known_hosts: str
    ssh_identity_file: str
    bucardo_rundir: Path
    bucardo_os_user: str
    copy_roles: bool
    conflict_strategy: str
    sequence_strategy: str
    copy_jobs: int
    drain_timeout_s: float
    verify_timeout_s: float

    @property
    def source(self) -> Endpoint:
        return Endpoint(self.pghost, self.pgport, self.pgdatabase, self.pgsuperuser)

    @property
    def target(self) -> Endpoint:
        return Endpoint(self.pghost2, self.pgport2, self.pgdatabase, self.pgsuperuser)

    @property
    def target_admin(self) -> Endpoint:
        """The target server's maintenance database (the target database may not exist yet)."""
        return self.target.with_dbname("postgres")

    @property
    def control(self) -> Endpoint:
        return Endpoint(self.bucardo_host, self.bucardo_port, self.bucardo_dbname, self.bucardouser)

    @property
    def control_admin(self) -> Endpoint:
        return self.control.with_dbname("postgres")

    @property
    def dump_dir(self) -> Path:
        """Where the schema dump and restore lists are kept on this machine (pg_dump and
        pg_restore run here): Bucardo's run directory when Bucardo runs here too, else a
        private directory of ours named after the sync and the two databases (a later
        bootstrap between other servers never finds this one's dump)."""
        if not self.bucardo_ssh:
            return self.bucardo_rundir
        pair = f"{self.source}>{self.target}".encode()
        name = f"bucardo-{self.sync}-{hashlib.sha256(pair).hexdigest()[:12]}"
        return Path.home() / ".local" / "state" / "pg-runbooks" / name

    @property
    def effective_conflict_strategy(self) -> str:
        """The strategy given, or the default: a priority list with `here` first."""
        return self.conflict_strategy or f"{self.here} {self.there}"

    @property
    def delta_target(self) -> str:
        """How Bucardo names this sync's target in the track tables."""
        return f"dbgroup {self.dbgroup}"

    def databases(self) -> dict[str, Endpoint]:
        """Bucardo name -> endpoint, for both masters."""
        return {self.here: self.source, self.there: self.target}


def _this_machine_only(host: Any) -> bool:
    """A name that means a different machine on every host: loopback, or a socket directory."""
    if not isinstance(host, str):
        return False
    return host == "localhost" or host.startswith(("127.", "/")) or host == "::1"


def ssh_target_problems(name: str, value: Any) -> list[str]:
    """Empty (this machine) or an SSH target ssh cannot mistake for an option."""
    if value == "":
        return []
    try:
        parse_target(value)
    except (ConfigurationError, TypeError, AttributeError) as exc:
        return [f"{name}={value!r}: {exc}"]
    return []


def _problems(p: dict[str, Any]) -> list[str]:
    problems: list[str] = []

    def check(cond: bool, message: str) -> None:
        if not cond:
            problems.append(message)

    def simple(name: str) -> None:
        value = p[name]
        check(
            isinstance(value, str) and bool(SIMPLE_NAME.match(value)),
            f"{name}={value!r}: use lower-case letters, digits and _ (start with a letter; no "
            "quotes, spaces, upper case or ;)",
        )

    for name in (
        "pgdatabase",
        "pgsuperuser",
        "bucardouser",
        "here",
        "there",
        "relgroup",
        "dbgroup",
        "sync",
        "bucardo_dbname",
        "bucardo_os_user",
    ):
        simple(name)
    if isinstance(p["sync"], str) and len(p["sync"]) > MAX_SYNC_NAME:
        problems.append(
            f"sync={p['sync']!r}: at most {MAX_SYNC_NAME} characters (longer names make Bucardo "
            "name its triggers at random)"
        )
    check(
        p["bucardo_os_user"] != "root",
        "bucardo_os_user='root': Bucardo never runs as root; name its own OS user (bucardo)",
    )
    if p["here"] == p["there"]:
        problems.append(f"here and there must differ (both are {p['here']!r})")
    for name in ("pghost", "pghost2", "bucardo_host"):
        value = p[name]
        check(
            isinstance(value, str) and bool(HOST_NAME.match(value)),
            f"{name}={value!r}: a host name or address, without spaces",
        )
    for name in ("pgport", "pgport2", "bucardo_port"):
        value = p[name]
        check(
            isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536,
            f"{name}={value!r}: a TCP port number (1-65535)",
        )
    schemas = p["schemas"]
    if not isinstance(schemas, list | tuple) or not schemas:
        problems.append(f"schemas={schemas!r}: a non-empty list of schema names")
    else:
        for s in schemas:
            check(
                isinstance(s, str) and bool(OBJECT_NAME.match(s)) and s != "bucardo",
                f"schemas: {s!r} is not a plain schema name (no quotes, spaces or ;; not bucardo)",
            )
    tables = p["tables"]
    if not isinstance(tables, list | tuple):
        problems.append(
            f"tables={tables!r}: a list of 'schema.table' (empty: every table with a key)"
        )
    else:
        for t in tables:
            parts = t.split(".") if isinstance(t, str) else []
            check(
                len(parts) == 2 and all(OBJECT_NAME.match(x) for x in parts),
                f"tables: {t!r} is not 'schema.table' with plain names (no quotes, spaces or ;)",
            )
        if len(set(tables)) != len(tables):
            problems.append("tables: a table is listed twice")
    problems += ssh_target_problems("bucardo_ssh", p["bucardo_ssh"])
    if p["bucardo_ssh"]:
        for name in ("pghost", "pghost2", "bucardo_host"):
            if _this_machine_only(p[name]):
                problems.append(
                    f"{name}={p[name]!r} with bucardo_ssh={p['bucardo_ssh']!r}: Bucardo's daemon "
                    "on that host would reach its own machine; give an address both this "
                    "machine and Bucardo's host reach"
                )
    for name in ("ssh_config", "ssh_known_hosts", "ssh_identity_file"):
        value = p[name]
        check(
            isinstance(value, str) and (not value or value.startswith("/")) and "\n" not in value,
            f"{name}={value!r}: empty (ssh's own default) or an absolute file path",
        )
    rundir = p["bucardo_rundir"]
    check(
        isinstance(rundir, str) and rundir.startswith("/") and "\n" not in rundir,
        f"bucardo_rundir={rundir!r}: an absolute directory path (Bucardo's pid files and logs)",
    )
    check(isinstance(p["copy_roles"], bool), f"copy_roles={p['copy_roles']!r}: true or false")
    strategy = p["conflict_strategy"]
    if not isinstance(strategy, str):
        problems.append(f"conflict_strategy={strategy!r}: a string")
    elif strategy in UNIMPLEMENTED_STRATEGIES:
        problems.append(
            f"conflict_strategy={strategy!r} is documented but not implemented by Bucardo 5.6 "
            "(the first conflict would pause the sync); use a priority list such as "
            f"'{p['here']} {p['there']}', or one of {', '.join(BUCARDO_STRATEGIES)}"
        )
    elif strategy and strategy not in BUCARDO_STRATEGIES:
        names = strategy.split()
        check(
            sorted(names) == sorted([p["here"], p["there"]]),
            f"conflict_strategy={strategy!r}: empty (priority list, here first), one of "
            f"{', '.join(BUCARDO_STRATEGIES)}, or a priority list naming both databases such as "
            f"'{p['here']} {p['there']}'",
        )
    check(
        p["sequence_strategy"] in SEQUENCE_STRATEGIES,
        f"sequence_strategy={p['sequence_strategy']!r}: one of {', '.join(SEQUENCE_STRATEGIES)}",
    )
    jobs = p["copy_jobs"]
    check(
        isinstance(jobs, int) and not isinstance(jobs, bool) and 1 <= jobs <= MAX_COPY_JOBS,
        f"copy_jobs={jobs!r}: an integer from 1 to {MAX_COPY_JOBS}",
    )
    for name in ("drain_timeout_s", "verify_timeout_s"):
        timeout = p[name]
        check(
            isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout > 0,
            f"{name}={timeout!r}: a positive number of seconds",
        )
    return problems


def validate_parameters(**params: Any) -> BootstrapConfig:
    """Check every parameter (all problems at once); raise ConfigurationError, change nothing."""
    names = [f.name for f in fields(BootstrapConfig)]
    params = {**OPTIONAL, **params}
    missing = [n for n in names if n not in params]
    unknown = [n for n in params if n not in names]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing: {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown: {', '.join(unknown)}")
        raise ConfigurationError(f"bucardo_bootstrap parameters: {'; '.join(parts)}")
    params = {**params, "pgdatabase": database_name(params["pgdatabase"])}
    problems = _problems(params)
    if problems:
        raise ConfigurationError(
            "bucardo_bootstrap parameters are invalid; nothing was changed:\n- "
            + "\n- ".join(problems)
        )
    values = dict(params)
    values["tables"] = tuple(params["tables"])
    values["schemas"] = tuple(params["schemas"])
    values["bucardo_rundir"] = Path(params["bucardo_rundir"])
    values["drain_timeout_s"] = float(params["drain_timeout_s"])
    values["verify_timeout_s"] = float(params["verify_timeout_s"])
    return BootstrapConfig(**values)


def from_namespace(namespace: dict[str, Any]) -> BootstrapConfig:
    """validate_parameters with the notebook's parameter variables (its globals())."""
    names = [f.name for f in fields(BootstrapConfig)]
    return validate_parameters(**{n: namespace[n] for n in names if n in namespace})
