"""The lab: throwaway clusters on free loopback ports, described by DIR/lab.json.

Servers: `here` (the source, holding the sample database), `there` (empty: the bootstrap's
target), `control` (Bucardo's control database, with plperl and the `bucardo` superuser role) and
`primary` (a second sample server, the warm standby runbook's primary). The warm standby's
archive directory and the room for its data directory belong to the lab too.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from runbook_lib.cluster import LocalCluster, server_os_user
from runbook_lib.connection import Endpoint, connect
from runbook_lib.errors import PreconditionError
from runbook_lib.host import LOCAL
from runbook_lib.lab import sample_data
from runbook_lib.ports import free_ports, port_is_free
from runbook_lib.waiting import wait_until

DEFAULT_LAB_DIR = Path(".lab")
SERVER_NAMES = ("here", "there", "control", "primary")
SERVERS_WITH_SAMPLE = ("here", "primary")
FIRST_PORT = 55432
STATE_FILE = "lab.json"
BUCARDO_ROLE = "bucardo"


@dataclass
class Lab:
    """A lab directory and what it holds."""

    root: Path
    ports: dict[str, int]
    standby_port: int
    scale: int

    @property
    def archive_dir(self) -> Path:
        return self.root / "archive"

    @property
    def standby_datadir(self) -> Path:
        return self.root / "standby" / "data"

    @property
    def bucardo_dir(self) -> Path:
        return self.root / "bucardo"

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
            datadir=self.root / name,
            port=self.ports[name],
            logfile=self.root / "logs" / f"{name}.log",
        )

    def endpoint(self, name: str, dbname: str = "postgres") -> Endpoint:
        return self.cluster(name).endpoint(dbname)

    def save(self) -> None:
        state = {"ports": self.ports, "standby_port": self.standby_port, "scale": self.scale}
        LOCAL.write_text(self.root / STATE_FILE, json.dumps(state, indent=2) + "\n")

    @classmethod
    def load(cls, root: Path) -> Lab:
        path = root / STATE_FILE
        if not path.exists():
            raise PreconditionError(
                f"no lab in {root} (no {STATE_FILE}); run: runbook lab up --dir {root}"
            )
        state = json.loads(path.read_text())
        return cls(root.absolute(), state["ports"], state["standby_port"], state["scale"])


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
    standby = LocalCluster(
        "standby", lab.standby_datadir, lab.standby_port, lab.root / "logs" / "standby.log"
    )
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
            conn.execute(f"CREATE ROLE {BUCARDO_ROLE} LOGIN SUPERUSER")


def up(root: Path = DEFAULT_LAB_DIR, *, scale: int = 1, first_port: int = FIRST_PORT) -> Lab:
    """Create (when new) and start every server of the lab; harmless when already up."""
    root = root.absolute()
    LOCAL.make_dir(root, mode=0o755)
    try:
        lab = Lab.load(root)
    except PreconditionError:
        ports, standby_port = _allocate_ports(first_port)
        lab = Lab(root, ports, standby_port, scale)
    owner = server_os_user()
    for sub in ("archive", "standby", "bucardo"):
        LOCAL.make_dir(root / sub, owner=owner, mode=0o755 if sub != "archive" else 0o700)
    for sub in ("logs", "parameters", "workload"):
        LOCAL.make_dir(root / sub, mode=0o755)
    for name in SERVER_NAMES:
        cluster = lab.cluster(name)
        if cluster.initialized():
            _reclaim_port(lab, name)
        else:
            cluster.init()
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
    clusters.append(
        LocalCluster(
            "standby", lab.standby_datadir, lab.standby_port, lab.root / "logs" / "standby.log"
        )
    )
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
            }
        )
    for pidfile in sorted(lab.bucardo_dir.glob("*.pid")):
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


def _stop_bucardo(lab: Lab) -> None:
    """Stop Bucardo processes the lab's runs started: their pid files live in DIR/bucardo."""
    pids = [p for f in lab.bucardo_dir.glob("*.pid") if (p := _read_pid(f))]
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
        except Exception:
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
    standby = LocalCluster(
        "standby", lab.standby_datadir, lab.standby_port, lab.root / "logs" / "standby.log"
    )
    for cluster in [standby, *(lab.cluster(n) for n in SERVER_NAMES)]:
        if cluster.initialized():
            cluster.stop(mode="immediate" if purge else "fast")
    if purge:
        LOCAL.remove_tree(root)
