"""The hosts lab: real network hosts on this machine, one per server, reached over SSH.

Each host is a network namespace on a bridge with its own address, its own sshd (as root in the
namespace) and its own private file tree (sshd.py). PostgreSQL runs on `here`, `there`,
`control` (Bucardo's control database: Debian's 15, plperl, the `bucardo` role) and `primary`,
each listening on its host's address, port 5432, data directory /srv/postgresql/data, started
over SSH as `postgres`. `standby` has room for the warm standby (/srv/postgresql), `archive`
for the WAL archive (/srv/archive). The notebook runs in the root namespace as the operator.

DIR holds lab.json, .pgpass, parameters/ (one file per runbook and hosts.yaml), ssh/ (keys,
known_hosts, ssh_config) and logs/ (each sshd's log). `down` removes every process in the
lab's namespaces, the namespaces, the links, the bridge and the keys; a failed `up` does too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import signal
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from runbook_lib.cluster import LocalCluster
from runbook_lib.compare.conninfo import ConninfoEndpoint
from runbook_lib.errors import ConfigurationError, PreconditionError, RunbookError
from runbook_lib.host import LOCAL
from runbook_lib.lab import network, sample_data, sshd
from runbook_lib.passfile import passfile_line
from runbook_lib.ports import port_accepts
from runbook_lib.ssh_host import SshHost, SshSettings
from runbook_lib.waiting import wait_until

KIND = "hosts"
HOSTS = ("here", "there", "control", "primary", "standby", "archive")
SERVERS = ("here", "there", "control", "primary")  # hosts with a running PostgreSQL
SERVERS_WITH_SAMPLE = ("here", "primary")
PG_PORT = 5432
PG_DIR = "/srv/postgresql"
DATADIR = f"{PG_DIR}/data"
PG_LOG = f"{PG_DIR}/postgresql.log"
ARCHIVE_DIR = "/srv/archive"
BUCARDO_DIR = "/srv/bucardo"
SUPERUSER = "postgres"
BUCARDO_ROLE = "bucardo"
STATE_FILE = "lab.json"
DEFAULT_SRV_SIZE = "2g"
STOP_TIMEOUT_S = 15


@dataclass
class HostsLab:
    root: Path
    tag: str
    subnet: str
    scale: int = 1
    srv_size: str = DEFAULT_SRV_SIZE
    hosts: list[str] = field(default_factory=lambda: list(HOSTS))
    servers: list[str] = field(default_factory=lambda: list(SERVERS))
    sshd_pids: dict[str, int] = field(default_factory=dict)
    kind: str = KIND

    # -- where things are ---------------------------------------------------------------

    @property
    def passfile(self) -> Path:
        return self.root / ".pgpass"

    @property
    def ssh_dir(self) -> Path:
        return self.root / "ssh"

    @property
    def ssh_config(self) -> Path:
        """The operator's ssh_config: `ssh -F THIS postgres@primary` works."""
        return self.ssh_dir / "config"

    @property
    def known_hosts(self) -> Path:
        return self.ssh_dir / "known_hosts"

    @property
    def identity_file(self) -> Path:
        return self.ssh_dir / "id_ed25519"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def parameters_dir(self) -> Path:
        return self.root / "parameters"

    @property
    def workload_dir(self) -> Path:
        return self.root / "workload"

    @property
    def archive_dir(self) -> str:
        return ARCHIVE_DIR

    @property
    def bucardo_dir(self) -> str:
        return BUCARDO_DIR

    def _check_host(self, name: str) -> int:
        if name not in self.hosts:
            raise PreconditionError(f"the lab has no host {name!r}; it has {self.hosts}")
        return self.hosts.index(name)

    def address(self, name: str) -> str:
        return network.host_address(self.net, self._check_host(name))

    def addresses(self) -> dict[str, str]:
        return {name: self.address(name) for name in self.hosts}

    @property
    def net(self):
        return network.check_subnet_format(self.subnet)

    def netns(self, name: str) -> str:
        self._check_host(name)
        return network.netns_name(self.tag, name)

    def ssh_settings(self) -> SshSettings:
        return SshSettings(ssh_config=str(self.ssh_config))

    def ssh_target(self, name: str, user: str = SUPERUSER) -> str:
        """The parameter value naming the host: `postgres@primary` (resolved by ssh_config)."""
        self._check_host(name)
        return f"{user}@{name}"

    def host(self, name: str, user: str = SUPERUSER) -> SshHost:
        """The host as the runbooks see it: logged in as `user` (postgres by default; root
        can run as any user, at the cost of root's login)."""
        self._check_host(name)
        return SshHost(name, user=user, settings=self.ssh_settings())

    def cluster(self, name: str) -> LocalCluster:
        if name not in self.servers:
            raise PreconditionError(f"the lab runs PostgreSQL on {self.servers}, not {name!r}")
        return LocalCluster(
            name=name,
            datadir=Path(DATADIR),
            port=PG_PORT,
            logfile=Path(PG_LOG),
            host=self.host(name),
            listen_address=self.address(name),
        )

    def standby_cluster(self) -> LocalCluster:
        """Room for the warm standby on host `standby` (not created by the lab)."""
        return LocalCluster(
            name="standby",
            datadir=Path(DATADIR),
            port=PG_PORT,
            logfile=Path(PG_LOG),
            host=self.host("standby"),
            listen_address=self.address("standby"),
        )

    def endpoint(self, name: str, dbname: str = "postgres") -> ConninfoEndpoint:
        """A server's endpoint (`standby` included) from this machine; password in .pgpass."""
        address = self.address(name)
        params = {"host": address, "port": str(PG_PORT), "dbname": dbname, "user": SUPERUSER}
        params["passfile"] = str(self.passfile)
        return ConninfoEndpoint(
            address, PG_PORT, dbname, SUPERUSER, {}, tuple(sorted(params.items()))
        )

    def collect_logs(self, dest: Path) -> None:
        """Copy the sshd logs and each server's PostgreSQL log (read over SSH) to dest."""
        dest.mkdir(parents=True, exist_ok=True)
        for index in range(len(self.hosts)):
            if network.link_exists(network.veth_name(self.tag, index)):
                network.set_link(self.tag, index, up=True)  # a test may have left one cut
        for log_file in self.logs_dir.glob("*.log"):
            (dest / log_file.name).write_bytes(log_file.read_bytes())
        for name in self.servers:
            try:
                text = self.host(name).read_text(PG_LOG)
            except (RunbookError, OSError) as exc:
                text = f"(not read: {exc})\n"
            (dest / f"{name}-postgresql.log").write_text(text)

    def password(self) -> str:
        return self.passfile.read_text().splitlines()[0].rsplit(":", 1)[1]

    # -- state --------------------------------------------------------------------------

    def save(self) -> None:
        state = {k: v for k, v in asdict(self).items() if k != "root"}
        LOCAL.write_text(self.root / STATE_FILE, json.dumps(state, indent=2) + "\n")

    @classmethod
    def load(cls, root: Path) -> HostsLab:
        state = read_state(root)
        if state.get("kind") != KIND:
            raise PreconditionError(f"the lab in {root} is not a hosts lab (lab up --hosts)")
        return cls(root=root.absolute(), **state)


def read_state(root: Path) -> dict:
    path = root / STATE_FILE
    if not path.exists():
        raise PreconditionError(
            f"no lab in {root} (no {STATE_FILE}); run: runbook lab up --dir {root}"
        )
    return json.loads(path.read_text())


def is_hosts_lab(root: Path) -> bool:
    try:
        return read_state(root).get("kind") == KIND
    except PreconditionError:
        return False


def _tag(root: Path) -> str:
    return hashlib.sha256(str(root).encode()).hexdigest()[:5]


# -- up -------------------------------------------------------------------------------------


def up(
    root: Path,
    *,
    scale: int = 1,
    subnet: str | None = None,
    srv_size: str = DEFAULT_SRV_SIZE,
    servers: Sequence[str] = SERVERS,
) -> HostsLab:
    """Create and start the hosts lab; harmless when it is up. A failed start removes what it
    made (namespaces, links, processes, keys) before raising."""
    root = root.absolute()
    if os.geteuid() != 0:
        raise PreconditionError(
            "the hosts lab needs root (network namespaces, a bridge, one sshd per host); "
            "without root, use the one-machine lab: runbook lab up"
        )
    if (root / STATE_FILE).exists():
        if not is_hosts_lab(root):
            raise PreconditionError(f"{root} holds a one-machine lab: lab down --purge it first")
        lab = HostsLab.load(root)
        if _running(lab):
            for name in lab.servers:
                lab.cluster(name).start()  # a server someone stopped
            return lab
        down(root)  # a lab that is half there is rebuilt from scratch
    tag = _tag(root)
    net = network.check_subnet(subnet) if subnet else network.choose_subnet(int(tag, 16) % 512)
    unknown = set(servers) - set(SERVERS)
    if unknown:
        raise ConfigurationError(f"no lab server {sorted(unknown)}; servers are {list(SERVERS)}")
    lab = HostsLab(
        root=root, tag=tag, subnet=str(net), scale=scale, srv_size=srv_size, servers=list(servers)
    )
    try:
        _build(lab)
    except BaseException:
        down(root)
        raise
    return lab


def _running(lab: HostsLab) -> bool:
    return all(_alive(lab.sshd_pids.get(h)) for h in lab.hosts) and network.link_exists(
        network.bridge_name(lab.tag)
    )


def _build(lab: HostsLab) -> None:
    LOCAL.make_dir(lab.root, mode=0o711)
    for sub in ("parameters", "workload", "logs"):
        LOCAL.make_dir(lab.root / sub, mode=0o700)
    lab.save()
    _write_passfile(lab, secrets.token_urlsafe(18))
    _make_keys(lab)
    network.create_bridge(network.bridge_name(lab.tag), lab.net)
    for index, name in enumerate(lab.hosts):
        network.create_host_link(lab.tag, index, name, lab.net)
        lab.sshd_pids[name] = _start_sshd(lab, name)
        lab.save()
    for name in lab.hosts:
        _wait_for_sshd(lab, name)
    for name in lab.servers:
        _start_server(lab, name)
    for name in SERVERS_WITH_SAMPLE:
        if name in lab.servers:
            sample_data.create_sample_database(lab.endpoint(name), lab.scale)
    if "control" in lab.servers:
        from runbook_lib.lab.lab import _prepare_control

        _prepare_control(lab)
    from runbook_lib.lab.host_parameters import write_parameter_files

    write_parameter_files(lab)


def _write_passfile(lab: HostsLab, password: str) -> None:
    lines = [
        passfile_line(ConninfoEndpoint(address, PG_PORT, "*", user), password)
        for address in lab.addresses().values()
        for user in (SUPERUSER, BUCARDO_ROLE)
    ]
    LOCAL.write_text(lab.passfile, "".join(lines), mode=0o600)


def _make_keys(lab: HostsLab) -> None:
    """The operator's key, the hosts' key, a host key per sshd, known_hosts, ssh_config."""
    LOCAL.make_dir(lab.ssh_dir, mode=0o700)
    sshd.keygen(lab.identity_file, "runbook lab operator")
    sshd.keygen(lab.ssh_dir / "hosts_id_ed25519", "runbook lab hosts")
    keys = {}
    for name in lab.hosts:
        LOCAL.make_dir(lab.ssh_dir / name, mode=0o700)
        host_key = lab.ssh_dir / name / "ssh_host_ed25519_key"
        sshd.keygen(host_key, f"runbook lab host {name}")
        keys[(name, lab.address(name))] = sshd.public_key(host_key)
        config = sshd.sshd_config(lab.address(name))
        LOCAL.write_text(lab.ssh_dir / name / "sshd_config", config, mode=0o600)
    LOCAL.write_text(lab.known_hosts, sshd.known_hosts(keys), mode=0o644)
    authorized = [
        sshd.public_key(lab.identity_file),
        sshd.public_key(lab.ssh_dir / "hosts_id_ed25519"),
    ]
    LOCAL.write_text(lab.ssh_dir / "authorized_keys", "\n".join(authorized) + "\n", mode=0o644)
    addresses = lab.addresses()
    LOCAL.write_text(
        lab.ssh_config,
        sshd.ssh_config(addresses, str(lab.identity_file), str(lab.known_hosts)),
        mode=0o600,
    )
    LOCAL.write_text(  # what each lab user finds in ~/.ssh/config on every host
        lab.ssh_dir / "hosts_ssh_config",
        sshd.ssh_config(addresses, "~/.ssh/id_ed25519", "~/.ssh/known_hosts"),
        mode=0o644,
    )


def _start_sshd(lab: HostsLab, name: str) -> int:
    return sshd.start(
        lab.netns(name),
        authorized_keys=lab.ssh_dir / "authorized_keys",
        config=lab.ssh_dir / name / "sshd_config",
        host_key=lab.ssh_dir / name / "ssh_host_ed25519_key",
        hosts_key=lab.ssh_dir / "hosts_id_ed25519",
        hosts_ssh_config=lab.ssh_dir / "hosts_ssh_config",
        known_hosts_file=lab.known_hosts,
        srv_size=lab.srv_size,
        log_file=lab.logs_dir / f"{name}-sshd.log",
    )


def _wait_for_sshd(lab: HostsLab, name: str) -> None:
    pid = lab.sshd_pids[name]

    def ready() -> bool:
        if not _alive(pid):
            start_log = (lab.logs_dir / f"{name}-sshd.log").read_text(errors="replace")
            raise PreconditionError(f"sshd of lab host {name} exited at start: {start_log[-800:]}")
        return port_accepts(22, lab.address(name))

    wait_until(ready, what=f"sshd of lab host {name}", timeout_s=20, interval_s=0.05)
    lab.host(name).check_reachable()


def _start_server(lab: HostsLab, name: str) -> None:
    cluster = lab.cluster(name)
    cluster.init(password=lab.password())
    hba = (
        f"host all all {lab.subnet} scram-sha-256\n"
        f"host replication all {lab.subnet} scram-sha-256\n"
    )
    cluster.host.write_text(f"{DATADIR}/pg_hba.conf", hba, owner=SUPERUSER, mode=0o600)
    cluster.start()


# -- status, cut, heal ------------------------------------------------------------------------


def status(root: Path) -> pd.DataFrame:
    """One row per host: address, link, sshd pid, PostgreSQL (accepting or not)."""
    lab = HostsLab.load(root.absolute())
    rows = []
    for index, name in enumerate(lab.hosts):
        link_up = network.link_exists(network.veth_name(lab.tag, index)) and network.link_is_up(
            lab.tag, index
        )
        pid = lab.sshd_pids.get(name)
        serving = name in lab.servers and link_up and port_accepts(PG_PORT, lab.address(name))
        rows.append(
            {
                "host": name,
                "address": lab.address(name),
                "link": "up" if link_up else "cut",
                "sshd_pid": pid,
                "sshd": "up" if _alive(pid) else "down",
                "postgresql": (f"{PG_PORT} up" if serving else "down")
                if name in lab.servers
                else "",
                "ssh": lab.ssh_target(name),
            }
        )
    return pd.DataFrame(rows).astype({"sshd_pid": "Int64"})


def cut(root: Path, name: str) -> None:
    """Cut the host off the network (its link on the bridge goes down): packets to and from
    it are lost, connections hang as in a real partition."""
    lab = HostsLab.load(root.absolute())
    network.set_link(lab.tag, lab._check_host(name), up=False)


def heal(root: Path, name: str) -> None:
    lab = HostsLab.load(root.absolute())
    network.set_link(lab.tag, lab._check_host(name), up=True)


# -- down -----------------------------------------------------------------------------------


def _alive(pid: int | None) -> bool:
    """A live process (a zombie is dead; reaped when it is our child)."""
    if not pid:
        return False
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _stop_namespace(ns: str) -> None:
    """Every process in the namespace: PostgreSQL gets SIGQUIT (immediate shutdown, its shared
    memory released), the rest SIGTERM; SIGKILL for what is left after STOP_TIMEOUT_S."""
    pids = network.netns_pids(ns)
    for pid in pids:
        sig = signal.SIGQUIT if _comm(pid) == "postgres" else signal.SIGTERM
        _signal(pid, sig)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in network.netns_pids(ns):
        _signal(pid, signal.SIGKILL)
    wait_until(
        lambda: not any(_alive(p) for p in network.netns_pids(ns)),
        what=f"the processes of namespace {ns} to exit",
        timeout_s=STOP_TIMEOUT_S,
    )


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def down(root: Path, *, purge: bool = False) -> None:
    """Remove everything the hosts lab made: control masters, every process in its
    namespaces, the namespaces and links, the bridge, the keys; purge deletes DIR too."""
    root = root.absolute()
    try:
        lab = HostsLab.load(root)
    except PreconditionError:
        if purge and root.exists():
            LOCAL.remove_tree(root)
        return
    errors = []
    if lab.ssh_config.exists():
        for name in lab.hosts:
            for user in sshd.LAB_USERS:
                lab.host(name, user).close()
    for index, name in enumerate(lab.hosts):
        try:
            _stop_namespace(network.netns_name(lab.tag, name))
            for pid in [lab.sshd_pids.get(name)]:
                if _alive(pid) and _comm(pid) == "sshd":
                    _signal(pid, signal.SIGKILL)
            network.delete_host_link(lab.tag, index, name)
        except RunbookError as exc:
            errors.append(f"{name}: {exc}")
    network.delete_bridge(lab.tag)
    if lab.ssh_dir.exists():
        LOCAL.remove_tree(lab.ssh_dir)
    lab.sshd_pids = {}
    lab.save()
    if errors:
        raise PreconditionError("lab down left something behind: " + "; ".join(errors))
    if purge:
        LOCAL.remove_tree(root)
