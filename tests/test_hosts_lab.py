"""SshHost against real sshd in real network namespaces, and the hosts lab itself."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from runbook_lib.connection import connect
from runbook_lib.errors import CommandFailed, ConfigurationError, PreconditionError
from runbook_lib.host import LOCAL
from runbook_lib.lab import hosts_lab as hosts_lab_module
from runbook_lib.lab import network
from runbook_lib.ports import port_accepts
from runbook_lib.ssh_host import (
    HostKeyMismatch,
    HostUnreachable,
    MissingProgram,
    SshAuthenticationFailed,
    SshFailed,
    SshHost,
    SshSettings,
    host_for,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


@pytest.fixture
def control_dir() -> Iterator[Path]:
    """A control directory of the test's own (short: socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="rbcm-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _fresh(lab: hosts_lab_module.HostsLab, name: str, control: Path, **settings) -> SshHost:
    """The host with a control directory of its own: the first command opens a new connection."""
    options = {"ssh_config": str(lab.ssh_config), "control_dir": str(control), **settings}
    return SshHost(lab.address(name), user="postgres", settings=SshSettings(**options))


def test_host_for_builds_local_or_ssh_hosts_and_refuses_option_like_targets():
    assert host_for("") is LOCAL
    assert host_for("  ") is LOCAL
    remote = host_for("postgres@db1.example.com:2222", known_hosts="/k")
    assert (remote.user, remote.hostname, remote.name) == ("postgres", "db1.example.com", "db1")
    assert remote.settings.port == 2222 and remote.settings.known_hosts == "/k"
    assert host_for("198.18.7.11").name == "198.18.7.11"
    for bad in ("-oProxyCommand=x", "a b", "user@", "db1;rm"):
        with pytest.raises(ConfigurationError, match="not an SSH target"):
            host_for(bad)


def test_commands_run_as_argv_with_every_word_quoted(hosts_lab):
    host = hosts_lab.host("here")
    words = ["a b", "$HOME", ";", "'q'", '"d"', "*", "`id`", ""]
    out = host.run(["printf", "%s|", *words]).stdout
    assert out == "|".join(words) + "|"
    assert host.describe(["pg_ctl", "-D", "/x"]) == "on here: pg_ctl -D /x"


def test_runs_as_postgres_from_a_postgres_or_a_root_login(hosts_lab):
    assert hosts_lab.host("here").run(["id", "-un"]).stdout.strip() == "postgres"
    as_root = hosts_lab.host("here", "root")
    assert as_root.login_user() == "root"
    assert as_root.run(["id", "-un"], user="postgres").stdout.strip() == "postgres"
    assert as_root.describe(["true"], "postgres") == "on here: runuser -u postgres -- true"
    env = as_root.run(["sh", "-c", 'echo "$X $LANG"'], user="postgres", env={"X": "1 2"})
    assert env.stdout.strip() == "1 2 C"


def test_a_failing_command_names_program_status_and_host(hosts_lab):
    with pytest.raises(CommandFailed) as caught:
        hosts_lab.host("here").run(["sh", "-c", "echo oops >&2; exit 3"])
    assert caught.value.returncode == 3 and "oops" in str(caught.value)
    assert caught.value.command.startswith("on here: sh -c")
    assert hosts_lab.host("here").run(["false"], check=False).returncode == 1


def test_start_and_pipeline_run_on_the_host_and_check_every_status(hosts_lab):
    host = hosts_lab.host("here")
    log = "/srv/postgresql/t-start.log"
    proc = host.start(["sh", "-c", "echo started on $(hostname -I)"], stdout_path=log)
    assert proc.wait(timeout=30) == 0
    assert host.read_text(log).strip() == f"started on {hosts_lab.address('here')}"
    host.pipeline(["printf", "a\\nb\\n"], ["sh", "-c", f"wc -l > {log}"])
    assert host.read_text(log).strip() == "2"
    with pytest.raises(CommandFailed, match="on here: sh -c 'exit 4'"):
        host.pipeline(["sh", "-c", "exit 4"], ["cat"])
    host.remove_file(log)


def test_files_are_written_atomically_with_owner_and_mode(hosts_lab):
    root = hosts_lab.host("there", "root")
    assert root.make_dir("/srv/t-files/sub", owner="postgres", mode=0o750) is True
    assert root.make_dir("/srv/t-files/sub", owner="postgres", mode=0o700) is False
    root.write_text("/srv/t-files/sub/a.conf", "one\n", owner="postgres", mode=0o640)
    stat = root.run(
        ["stat", "-c", "%U %a", "/srv/t-files", "/srv/t-files/sub", "/srv/t-files/sub/a.conf"]
    )
    assert stat.stdout.split("\n")[:3] == ["root 755", "postgres 750", "postgres 640"]
    assert root.read_text("/srv/t-files/sub/a.conf", user="postgres") == "one\n"
    # a symlink at the target is replaced, never followed
    root.run(["ln", "-s", "/srv/t-files/victim", "/srv/t-files/sub/link"])
    root.write_text("/srv/t-files/sub/link", "two\n", owner="postgres")
    assert not root.exists("/srv/t-files/victim")
    assert root.list_dir("/srv/t-files/sub") == ["a.conf", "link"]  # no temporary file left
    root.remove_file("/srv/t-files/sub/link")
    root.remove_file("/srv/t-files/sub/link")  # absent is fine
    assert root.list_dir("/srv/t-files/sub") == ["a.conf"]
    with pytest.raises(FileNotFoundError):
        root.read_text("/srv/t-files/none")
    root.chown("/srv/t-files", "bucardo", recursive=True)
    assert root.run(["stat", "-c", "%U", "/srv/t-files/sub/a.conf"]).stdout.strip() == "bucardo"
    with pytest.raises(ConfigurationError, match="absolute"):
        root.write_text("relative.txt", "x")
    root.remove_tree("/srv/t-files")
    assert not root.exists("/srv/t-files")


def test_a_postgres_login_writes_in_its_own_directory_and_is_refused_elsewhere(hosts_lab):
    host = hosts_lab.host("there")
    host.write_text("/srv/postgresql/t-own.txt", "mine\n", owner="postgres", mode=0o600)
    assert host.run(["stat", "-c", "%U %a", "/srv/postgresql/t-own.txt"]).stdout.split() == [
        "postgres",
        "600",
    ]
    with pytest.raises(CommandFailed):  # /srv is root's: no permission, nothing written
        host.write_text("/srv/t-not-mine.txt", "x")
    assert not host.exists("/srv/t-not-mine.txt")
    host.remove_file("/srv/postgresql/t-own.txt")


def test_free_space_and_processes_are_the_hosts_own(hosts_lab):
    host = hosts_lab.host("primary")
    free = host.free_bytes("/srv/postgresql/not/yet/there")
    df = host.run(["df", "-B1", "--output=avail", "/srv"]).stdout.split()[-1]
    assert abs(free - int(df)) < 64 * 1024 * 1024
    assert free <= 2 * 1024**3  # the host's /srv is its own 2 GB file system, not ours
    assert free != LOCAL.free_bytes("/srv")
    pid = hosts_lab.cluster("primary").pid()
    assert pid is not None and host.pid_alive(pid)
    sleeper = host.run(["sh", "-c", "sleep 0.1 & echo $!"]).stdout.strip()
    host.run(["sleep", "0.3"])
    assert not host.pid_alive(int(sleeper))


def test_the_control_master_carries_every_command(hosts_lab, control_dir):
    host = _fresh(hosts_lab, "control", control_dir)
    log = hosts_lab.logs_dir / "control-sshd.log"

    def logins() -> int:
        return len(re.findall(r"Accepted publickey for postgres", log.read_text()))

    before = logins()
    host.run(["true"])
    master = host.master_pid()
    assert master is not None
    for _ in range(10):
        host.run(["true"])
        host.exists("/srv")
    assert host.master_pid() == master
    assert logins() == before + 1
    host.close()
    assert host.master_pid() is None


def test_preflight_names_an_unreachable_host(hosts_lab, control_dir):
    nobody = SshHost(
        network.bridge_address(hosts_lab.net),  # the root namespace: no sshd listens there
        user="postgres",
        settings=SshSettings(known_hosts=str(hosts_lab.known_hosts), control_dir=str(control_dir)),
    )
    with pytest.raises(HostUnreachable, match="cannot reach .* over SSH"):
        nobody.check_reachable()
    with pytest.raises(SshFailed, match="unreachable"):
        nobody.exists("/srv")  # never a silent False


def test_preflight_names_a_wrong_or_unknown_host_key(hosts_lab, control_dir):
    known = hosts_lab.known_hosts.read_text().splitlines()
    keys = {line.split()[0].split(",")[0]: line.split(None, 1)[1] for line in known}
    wrong = control_dir / "known_hosts"
    wrong.write_text(f"{hosts_lab.address('here')} {keys['there']}\n")
    settings = SshSettings(
        known_hosts=str(wrong),
        identity_file=str(hosts_lab.identity_file),
        control_dir=str(control_dir),
    )
    host = SshHost(hosts_lab.address("here"), user="postgres", settings=settings)
    with pytest.raises(HostKeyMismatch, match="host key of .* is not the one in"):
        host.check_reachable()
    wrong.write_text("")
    with pytest.raises(HostKeyMismatch):
        host.check_reachable()


def test_preflight_names_a_refused_key(hosts_lab, control_dir):
    stranger = control_dir / "stranger"
    LOCAL.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)])
    settings = SshSettings(
        known_hosts=str(hosts_lab.known_hosts),
        identity_file=str(stranger),
        control_dir=str(control_dir),
    )
    host = SshHost(hosts_lab.address("here"), user="postgres", settings=settings)
    with pytest.raises(SshAuthenticationFailed, match="refused our SSH key"):
        host.check_reachable()


def test_preflight_names_every_missing_program(hosts_lab):
    host = hosts_lab.host("control")
    found = host.require_programs(["psql", "python3"])
    assert found["psql"].endswith("/psql")
    with pytest.raises(MissingProgram, match="no-such-prog-1, no-such-prog-2 not found on control"):
        host.require_programs(["psql", "no-such-prog-1", "no-such-prog-2"])
    assert host.which("no-such-prog-1") is None


def test_each_host_has_a_private_file_tree(hosts_lab):
    here, there = hosts_lab.host("here"), hosts_lab.host("there")
    here.write_text("/srv/postgresql/t-private", "here only\n")
    here.run(["touch", "/tmp/t-private"])
    assert here.exists("/srv/postgresql/t-private") and here.exists("/tmp/t-private")
    assert not there.exists("/srv/postgresql/t-private")
    assert not there.exists("/tmp/t-private")
    assert not Path("/srv/postgresql/t-private").exists() and not Path("/tmp/t-private").exists()
    here.remove_file("/srv/postgresql/t-private")


def test_hosts_reach_each_other_by_name_over_ssh(hosts_lab):
    out = hosts_lab.host("primary").run(["ssh", "archive", "cat", "/proc/sys/kernel/hostname"])
    assert out.returncode == 0
    addr = hosts_lab.host("primary").run(
        ["ssh", "archive", "sh", "-c", shlex.quote("echo $SSH_CONNECTION")]
    )
    assert addr.stdout.split()[2] == hosts_lab.address("archive")


def test_servers_listen_on_their_hosts_address(hosts_lab):
    for name in hosts_lab.servers:
        with connect(hosts_lab.endpoint(name)) as conn:
            address = conn.execute("SELECT host(inet_server_addr()) AS a").fetchone()["a"]
        assert address == hosts_lab.address(name)
    with connect(hosts_lab.endpoint("control")) as conn:
        role = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = 'bucardo'").fetchone()
    assert role == {"rolsuper": True}


def test_parameter_files_name_hosts_that_host_for_reaches(hosts_lab):
    params = yaml.safe_load((hosts_lab.parameters_dir / "warm_standby.yaml").read_text())
    assert params["primary_host"] == hosts_lab.address("primary")
    for key in ("primary_ssh", "standby_ssh", "archive_ssh"):
        host = host_for(params[key], ssh_config=params["ssh_config"])
        assert host.name == key.removesuffix("_ssh")
        assert host.run(["hostname", "-I"]).stdout.split() == [hosts_lab.address(host.name)]
    bucardo = yaml.safe_load((hosts_lab.parameters_dir / "bucardo_bootstrap.yaml").read_text())
    control = host_for(bucardo["bucardo_ssh"], ssh_config=bucardo["ssh_config"])
    assert control.run(["id", "-un"], user="bucardo").stdout.strip() == "bucardo"


def test_cut_makes_a_host_unreachable_and_heal_restores_it(hosts_lab, control_dir):
    try:
        hosts_lab_module.cut(hosts_lab.root, "standby")
        host = _fresh(hosts_lab, "standby", control_dir, connect_timeout_s=2)
        with pytest.raises(HostUnreachable):
            host.check_reachable()
        assert not port_accepts(22, hosts_lab.address("standby"))
        status = hosts_lab_module.status(hosts_lab.root).set_index("host")
        assert status.loc["standby", "link"] == "cut" and status.loc["here", "link"] == "up"
    finally:
        hosts_lab_module.heal(hosts_lab.root, "standby")
    assert _fresh(hosts_lab, "standby", control_dir).check_reachable() == "postgres"


def test_subnets_never_overlap_the_machines_networks(hosts_lab):
    with pytest.raises(PreconditionError, match="overlaps"):
        network.check_subnet(hosts_lab.subnet)  # the lab's own bridge holds it now
    with pytest.raises(ConfigurationError):
        network.check_subnet("192.0.2.0/24")
    with pytest.raises(ConfigurationError):
        network.check_subnet("10.0.0.0/24")
    chosen = network.choose_subnet(0)
    assert not any(chosen.overlaps(n) for n in network.networks_in_use() if n.version == 4)


def test_down_leaves_no_namespace_link_process_or_key(hosts_lab_factory):
    lab = hosts_lab_factory("down", servers=("here",))
    host = lab.host("here")
    host.run(["sh", "-c", "sleep 300 >/dev/null 2>&1 &"])  # a stray process on the host
    pids = [*lab.sshd_pids.values(), lab.cluster("here").pid()]
    master = host.master_pid()
    namespaces = [lab.netns(name) for name in lab.hosts]
    assert all(network.netns_exists(ns) for ns in namespaces)
    hosts_lab_module.down(lab.root)
    assert not any(network.netns_exists(ns) for ns in namespaces)
    assert not network.link_exists(network.bridge_name(lab.tag))
    assert not any(
        network.link_exists(network.veth_name(lab.tag, i)) for i in range(len(lab.hosts))
    )
    assert not any(hosts_lab_module._alive(pid) for pid in [*pids, master])
    assert not lab.ssh_dir.exists()
    hosts_lab_module.down(lab.root, purge=True)
    assert not lab.root.exists()


def test_a_failed_up_removes_what_it_made(hosts_lab_factory):
    root = hosts_lab_factory.parent / "failing"
    with pytest.raises(PreconditionError, match="sshd of lab host here exited"):
        hosts_lab_module.up(root, servers=(), srv_size="not-a-size")
    tag = hosts_lab_module._tag(root.absolute())
    assert not network.link_exists(network.bridge_name(tag))
    assert not any(network.netns_exists(network.netns_name(tag, n)) for n in hosts_lab_module.HOSTS)
    assert not (root / "ssh").exists()
    hosts_lab_module.down(root, purge=True)
