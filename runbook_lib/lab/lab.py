"""The lab: throwaway clusters on free loopback ports, described by DIR/lab.json.

Servers: `here` (the source, holding the sample database), `there` (empty: the bootstrap's
target), `control` (Bucardo's control database, with plperl and the `bucardo` superuser role) and
`primary` (a second sample server, the warm standby runbook's primary). The warm standby's
archive directory and the room for its data directory belong to the lab too.

The servers' files (data directories, logs, WAL archive, Bucardo's run directory) need a place
the `postgres` and `bucardo` OS users can reach: DIR itself when they can, else a directory of
ours under /var/tmp (a clone in root's home, mode 0700). DIR keeps the operator's files:
lab.json, the parameter files, the workload ledgers and `.pgpass` (0600) with the servers'
generated password: the lab's servers ask for it (scram-sha-256), they trust nobody.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import secrets
import signal
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from psycopg import sql

from runbook_lib.cluster import LocalCluster, server_os_user
from runbook_lib.compare.conninfo import ConninfoEndpoint
from runbook_lib.connection import connect
from runbook_lib.errors import PreconditionError, WaitTimeout
from runbook_lib.host import LOCAL
from runbook_lib.lab import sample_data
from runbook_lib.passfile import passfile_line
from runbook_lib.ports import LOOPBACK, free_ports, port_is_free
from runbook_lib.waiting import wait_until

DEFAULT_LAB_DIR = Path(".lab")
SERVER_NAMES = ("here", "there", "control", "primary")
SERVERS_WITH_SAMPLE = ("here", "primary")
FIRST_PORT = 55432
STATE_FILE = "lab.json"
PASSFILE = ".pgpass"
BUCARDO_ROLE = "bucardo"
SUPERUSER = "postgres"
BUCARDO_OS_USER = "bucardo"
SERVER_DIR_PARENT = Path("/var/tmp")


@dataclass
class Lab:
    """A lab directory and what it holds."""

    root: Path
    ports: dict[str, int]
    standby_port: int
    scale: int
    server_dir: Path | None = None  # where the servers' files live; None: root itself
    bindirs: dict[str, str] = field(default_factory=dict)  # server -> its binaries (lab.versions)

    def __post_init__(self) -> None:
        if self.server_dir is None:
            self.server_dir = self.root

    @property
    def passfile(self) -> Path:
        return self.root / PASSFILE

    @property
    def archive_dir(self) -> Path:
        return self.server_dir / "archive"

    @property
    def standby_datadir(self) -> Path:
        return self.server_dir / "standby" / "data"

    @property
    def bucardo_dir(self) -> Path:
        return self.server_dir / "bucardo"

    @property
    def logs_dir(self) -> Path:
        return self.server_dir / "logs"

    @property
    def parameters_dir(self) -> Path:
        return self.root / "parameters"

    @property
    def workload_dir(self) -> Path:
        return self.root / "workload"

    def cluster(self, name: str) -> LocalCluster:
        if name not in self.ports:
            raise PreconditionError(f"the lab has no server {name!r}; it has {sorted(self.ports)}")
        return LocalCluster(
            name=name,
            datadir=self.server_dir / name,
            port=self.ports[name],
            logfile=self.logs_dir / f"{name}.log",
            bindir=self.bindir(name),
        )

    def bindir(self, name: str) -> Path | None:
        """The server's binaries (the standby runs its primary's); None: the default version."""
        chosen = self.bindirs.get("primary" if name == "standby" else name)
        return Path(chosen) if chosen else None

    def standby_cluster(self) -> LocalCluster:
        return LocalCluster(
            "standby",
            self.standby_datadir,
            self.standby_port,
            self.logs_dir / "standby.log",
            bindir=self.bindir("standby"),
        )

    def endpoint(self, name: str, dbname: str = "postgres") -> ConninfoEndpoint:
        """A lab server's endpoint; its password comes from the lab's .pgpass."""
        port = self.standby_port if name == "standby" else self.cluster(name).port
        params = {"host": LOOPBACK, "port": str(port), "dbname": dbname, "user": SUPERUSER}
        params["passfile"] = str(self.passfile)
        return ConninfoEndpoint(
            LOOPBACK, port, dbname, SUPERUSER, {}, tuple(sorted(params.items()))
        )

    def password(self) -> str:
        line = self.passfile.read_text().splitlines()[0]
        return line.rsplit(":", 1)[1]

    def save(self, password: str | None = None) -> None:
        """lab.json, and .pgpass (0600) for every server of the lab as postgres and bucardo."""
        state = {
            "ports": self.ports,
            "standby_port": self.standby_port,
            "scale": self.scale,
            "server_dir": str(self.server_dir),
            "bindirs": self.bindirs,
        }
        LOCAL.write_text(self.root / STATE_FILE, json.dumps(state, indent=2) + "\n")
        password = password or self.password()
        ports = [*self.ports.values(), self.standby_port]
        lines = [
            passfile_line(ConninfoEndpoint(LOOPBACK, port, "*", user), password)
            for port in ports
            for user in (SUPERUSER, BUCARDO_ROLE)
        ]
        LOCAL.write_text(self.passfile, "".join(lines), mode=0o600)

    @classmethod
    def load(cls, root: Path) -> Lab:
        path = root / STATE_FILE
        if not path.exists():
            raise PreconditionError(
                f"no lab in {root} (no {STATE_FILE}); run: runbook lab up --dir {root}"
            )
        state = json.loads(path.read_text())
        root = root.absolute()
        server_dir = Path(state.get("server_dir", root))
        return cls(
            root,
            state["ports"],
            state["standby_port"],
            state["scale"],
            server_dir,
            state.get("bindirs", {}),
        )


def _allocate_ports(first_port: int) -> tuple[dict[str, int], int]:
    ports = free_ports(len(SERVER_NAMES) + 1, start=first_port)
    return dict(zip(SERVER_NAMES, ports[:-1], strict=True)), ports[-1]


def _reclaim_port(lab: Lab, name: str) -> None:
    """A stopped server whose port someone else took moves to a free port (never steals it)."""
    cluster = lab.cluster(name)
    if cluster.is_running() or port_is_free(cluster.port):
        return
    used = set(lab.ports.values()) | {lab.standby_port}
    (new_port,) = free_ports(1, start=FIRST_PORT, exclude=used)
    cluster.set_port(new_port)
    lab.ports[name] = new_port


def _ensure_standby_port_free(lab: Lab) -> None:
    standby = lab.standby_cluster()
    if standby.is_running() or port_is_free(lab.standby_port):
        return
    used = set(lab.ports.values()) | {lab.standby_port}
    (lab.standby_port,) = free_ports(1, start=FIRST_PORT, exclude=used)


def _prepare_control(lab: Lab) -> None:
    with connect(lab.endpoint("control")) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", [BUCARDO_ROLE]
        ).fetchone()
        if not exists:
            conn.execute("SET log_statement = 'none'")  # the password is in the statement
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                    sql.Identifier(BUCARDO_ROLE), sql.Literal(lab.password())
                )
            )


def _os_users() -> list[str]:
    """The OS users that must reach the servers' files: postgres, and bucardo when it exists."""
    users = [u for u in (server_os_user(), BUCARDO_OS_USER) if u]
    return [u for u in users if _user_exists(u)] if os.geteuid() == 0 else []


def _user_exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def _reachable(path: Path) -> bool:
    """Whether every server OS user can traverse path (a clone in root's home: no)."""
    return all(
        LOCAL.run(["test", "-x", str(path)], user=u, check=False).returncode == 0
        for u in _os_users()
    )


def choose_server_dir(root: Path) -> Path:
    """DIR when the servers' OS users reach it, else /var/tmp/pg-runbooks-UID-HASH: created here
    (0711) or, when it exists, only if it is a real directory of ours."""
    if _reachable(root):
        return root
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    path = SERVER_DIR_PARENT / f"pg-runbooks-{os.geteuid()}-{digest}"
    LOCAL.make_dir(path, mode=0o711)
    st = path.lstat()
    if not path.is_dir() or path.is_symlink() or st.st_uid != os.geteuid():
        raise PreconditionError(
            f"{path} exists but is not a directory of ours: remove it, then run lab up again"
        )
    return path


def _server_dirs(lab: Lab) -> None:
    owner = server_os_user()
    for sub in ("archive", "standby", "logs"):
        LOCAL.make_dir(lab.server_dir / sub, owner=owner, mode=0o700)
    LOCAL.make_dir(lab.bucardo_dir, mode=0o711)  # Bucardo's run directory: see bucardo.ctl


def up(
    root: Path = DEFAULT_LAB_DIR,
    *,
    scale: int = 1,
    first_port: int = FIRST_PORT,
    bindirs: dict[str, str] | None = None,
) -> Lab:
    """Create (when new) and start every server of the lab; harmless when already up.
    `bindirs` (server -> binaries, see lab.versions) applies to a new lab only."""
    root = root.absolute()
    LOCAL.make_dir(root, mode=0o711)
    password = None
    try:
        lab = Lab.load(root)
    except PreconditionError:
        ports, standby_port = _allocate_ports(first_port)
        lab = Lab(root, ports, standby_port, scale, choose_server_dir(root), bindirs or {})
        password = secrets.token_urlsafe(18)
    if bindirs and bindirs != lab.bindirs:
        raise PreconditionError(
            f"the lab in {root} runs {lab.bindirs or 'the default binaries'}, not {bindirs}: "
            f"run `runbook lab down --dir {root} --purge` first"
        )
    _server_dirs(lab)
    for sub in ("parameters", "workload"):
        LOCAL.make_dir(root / sub, mode=0o700)
    lab.save(password)
    for name in SERVER_NAMES:
        cluster = lab.cluster(name)
        if cluster.initialized():
            _reclaim_port(lab, name)
        else:
            cluster.init(password=lab.password())
        lab.save()
        lab.cluster(name).start()
    _ensure_standby_port_free(lab)
    lab.save()
    for name in SERVERS_WITH_SAMPLE:
        sample_data.create_sample_database(lab.endpoint(name), lab.scale)
    _prepare_control(lab)
    from runbook_lib.lab.parameters import write_parameter_files

    write_parameter_files(lab)
    return lab


def status(root: Path = DEFAULT_LAB_DIR) -> pd.DataFrame:
    """One row per server: name, port, pid, up or down, data directory."""
    lab = Lab.load(root.absolute())
    clusters = [lab.cluster(n) for n in SERVER_NAMES]
    clusters.append(lab.standby_cluster())
    rows = []
    for c in clusters:
        pid = c.pid() if c.initialized() else None
        rows.append(
            {
                "server": c.name,
                "port": c.port,
                "pid": pid,
                "state": "up" if pid else ("down" if c.initialized() else "absent"),
                "datadir": str(c.datadir),
                "binaries": str(c.bindir or "default"),
            }
        )
    for pidfile in sorted((lab.bucardo_dir / "daemon").glob("*.pid")):
        pid = _read_pid(pidfile)
        rows.append(
            {
                "server": f"bucardo:{pidfile.stem}",
                "port": None,
                "pid": pid,
                "state": "up" if pid and LOCAL.pid_alive(pid) else "down",
                "datadir": str(lab.bucardo_dir),
            }
        )
    return pd.DataFrame(rows).astype({"port": "Int64", "pid": "Int64"})


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _bucardo_pids(lab: Lab) -> list[int]:
    """Live Bucardo processes of the lab: pids from its daemon directory, kept only when the
    process belongs to Bucardo's OS user (or us): a pid file is no licence to signal anything."""
    as_root = os.geteuid() == 0 and _user_exists(BUCARDO_OS_USER)
    allowed = pwd.getpwnam(BUCARDO_OS_USER).pw_uid if as_root else os.geteuid()
    pids = []
    for pidfile in sorted((lab.bucardo_dir / "daemon").glob("*.pid")):
        pid = _read_pid(pidfile)
        try:
            owner = os.stat(f"/proc/{pid}").st_uid if pid else None
        except OSError:
            continue
        if owner == allowed:
            pids.append(pid)
    return pids


def _stop_bucardo(lab: Lab) -> None:
    """Stop Bucardo processes the lab's runs started: their pid files live in DIR/bucardo."""
    pids = _bucardo_pids(lab)
    for pid in pids:
        if LOCAL.pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
    for pid in pids:
        try:
            wait_until(
                lambda p=pid: not LOCAL.pid_alive(p),
                what=f"bucardo pid {pid} to exit",
                timeout_s=15,
            )
        except WaitTimeout:
            if LOCAL.pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def down(root: Path = DEFAULT_LAB_DIR, *, purge: bool = False) -> None:
    """Stop every process the lab started (Bucardo, standby, servers); purge deletes DIR."""
    root = root.absolute()
    try:
        lab = Lab.load(root)
    except PreconditionError:
        if purge and root.exists():
            LOCAL.remove_tree(root)
        return
    _stop_bucardo(lab)
    for cluster in [lab.standby_cluster(), *(lab.cluster(n) for n in SERVER_NAMES)]:
        if cluster.initialized():
            cluster.stop(mode="immediate" if purge else "fast")
    if purge:
        if lab.server_dir != lab.root and lab.server_dir.exists():
            LOCAL.remove_tree(lab.server_dir)
        LOCAL.remove_tree(root)
