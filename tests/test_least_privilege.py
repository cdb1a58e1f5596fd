"""Least privilege: what the `postgres` account controls cannot redirect a write of root's, the
lab trusts nobody, and its files and records are their owner's only."""

from __future__ import annotations

import os
import pwd
import random
import stat
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from runbook_lib import standby
from runbook_lib.cluster import LocalCluster, server_os_user
from runbook_lib.errors import CommandFailed, PreconditionError
from runbook_lib.host import LOCAL
from runbook_lib.lab import lab as lab_module
from runbook_lib.lab.parameters import warm_standby_parameters
from runbook_lib.standby import backup, drill
from runbook_lib.standby import config as standby_config

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: the attacker is the postgres OS user"
)
VICTIM_TEXT = "root's own file: must never change\n"
POSTGRES = "postgres"


def as_postgres(*argv: str) -> None:
    subprocess.run(["runuser", "-u", POSTGRES, "--", *argv], check=True, cwd="/")


@pytest.fixture
def victims(postgres_dir):
    """Files only root may change (in a directory postgres may read), and a way to check them."""
    where = postgres_dir / "victims"
    where.mkdir()
    where.chmod(0o755)
    files = {}
    for name in ("a", "b", "c", "d"):
        path = where / name
        path.write_text(VICTIM_TEXT)
        path.chmod(0o644)
        files[name] = path

    def unchanged() -> None:
        for path in files.values():
            st = path.stat()
            assert path.read_text() == VICTIM_TEXT, f"{path} was written through a symlink"
            assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o644), f"{path} was chmod/chown'ed"
        assert sorted(p.name for p in where.iterdir()) == sorted(files), "a file appeared there"

    yield files, unchanged


@pytest.fixture
def postgres_owned(postgres_dir) -> Path:
    """A directory of the postgres user, as a data directory or the standby's parent is."""
    path = postgres_dir / "pgdir"
    LOCAL.make_dir(path, owner=POSTGRES, mode=0o700)
    return path


def plant(link: Path, target: Path) -> None:
    as_postgres("ln", "-sfn", str(target), str(link))


def test_write_text_replaces_a_planted_symlink_instead_of_writing_through_it(
    postgres_owned, victims
):
    files, unchanged = victims
    final = postgres_owned / "postgresql.auto.conf"
    plant(final, files["a"])
    plant(postgres_owned / ".postgresql.auto.conf.tmp", files["b"])  # the old fixed temp name
    LOCAL.write_text(final, "port = 5433\n", owner=POSTGRES, mode=0o600)
    unchanged()
    st = final.lstat()
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert pwd.getpwuid(st.st_uid).pw_name == POSTGRES
    assert final.read_text() == "port = 5433\n"


def test_a_planted_directory_symlink_leads_to_a_clear_failure_not_a_root_write(
    postgres_owned, victims
):
    files, unchanged = victims
    plant(postgres_owned / "data", files["a"].parent)
    with pytest.raises(CommandFailed, match="Permission denied"):
        LOCAL.write_text(postgres_owned / "data" / "standby.signal", "", owner=POSTGRES)
    unchanged()


def test_root_refuses_to_write_its_own_file_into_a_directory_postgres_controls(
    postgres_owned, victims
):
    files, unchanged = victims
    plant(postgres_owned / "runbook-restore-wal.py", files["a"])
    with pytest.raises(PreconditionError, match="not a safe place"):
        LOCAL.write_text(postgres_owned / "runbook-restore-wal.py", "print()\n", mode=0o755)
    with pytest.raises(PreconditionError, match="not a safe place"):
        LOCAL.make_dir(postgres_owned / "runbook-tools", mode=0o755)
    unchanged()


def test_make_dir_leaves_an_existing_directory_alone(postgres_dir):
    existing = postgres_dir / "mine"
    existing.mkdir(mode=0o750)
    existing.chmod(0o750)
    assert LOCAL.make_dir(existing, owner=POSTGRES, mode=0o700) is False
    st = existing.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o750)
    fresh = postgres_dir / "fresh"
    assert LOCAL.make_dir(fresh, owner=POSTGRES, mode=0o700) is True
    st = fresh.stat()
    assert (pwd.getpwuid(st.st_uid).pw_name, stat.S_IMODE(st.st_mode)) == (POSTGRES, 0o700)


def test_recursive_chown_never_follows_a_symlink_planted_by_postgres(postgres_owned, victims):
    files, unchanged = victims
    as_postgres("mkdir", "-p", str(postgres_owned / "base" / "1"))
    plant(postgres_owned / "base" / "1" / "16384", files["a"])
    plant(postgres_owned / "pg_wal", files["a"].parent)
    LOCAL.chown(postgres_owned, "nobody", recursive=True)
    unchanged()
    assert pwd.getpwuid((postgres_owned / "base" / "1").stat().st_uid).pw_name == "nobody"
    assert pwd.getpwuid((postgres_owned / "pg_wal").lstat().st_uid).pw_name == "nobody"


def test_cluster_configuration_files_never_follow_a_planted_symlink(postgres_owned, victims):
    files, unchanged = victims
    as_postgres("sh", "-c", f"echo '# initdb' > {postgres_owned}/postgresql.conf")
    plant(postgres_owned / "runbook_lab.conf", files["a"])
    plant(postgres_owned / "pg_hba.conf", files["b"])
    cluster = LocalCluster("victim", postgres_owned, 1, postgres_owned.parent / "victim.log")
    cluster.configure({"fsync": "on"})
    cluster.set_port(2)
    cluster.require_passwords()
    unchanged()
    assert "port = 2" in (postgres_owned / "runbook_lab.conf").read_text()
    assert "scram-sha-256" in (postgres_owned / "pg_hba.conf").read_text()


@pytest.mark.parametrize("mode", standby_config.MODES)
def test_standby_settings_signal_and_trigger_files_never_follow_a_planted_symlink(
    shared_lab, postgres_owned, victims, mode
):
    files, unchanged = victims
    datadir = postgres_owned / "data"
    as_postgres("mkdir", "-m", "700", str(datadir))
    params = warm_standby_parameters(shared_lab)
    params.update(
        mode=mode,
        standby_datadir=str(datadir),
        trigger_file=str(postgres_owned / "failover.trigger"),
    )
    cfg = standby.validate(**params)
    plant(datadir / backup.AUTO_CONF, files["a"])
    plant(datadir / backup.SIGNALS[mode], files["b"])
    plant(postgres_owned / "failover.trigger", files["c"])
    plant(postgres_owned / ".failover.trigger.tmp", files["d"])
    backup.write_recovery_settings(cfg)
    LOCAL.write_text(cfg.trigger_file, drill.TRIGGER_CONTENT, owner=server_os_user())
    unchanged()
    assert "restore_command" in (datadir / backup.AUTO_CONF).read_text()
    for path in (datadir / backup.AUTO_CONF, datadir / backup.SIGNALS[mode]):
        assert stat.S_ISREG(path.lstat().st_mode)
        assert pwd.getpwuid(path.lstat().st_uid).pw_name == POSTGRES


def test_wal_tools_belong_to_the_server_user_even_next_to_its_data(postgres_owned):
    from runbook_lib.standby.tools import install_tools

    tools = PurePosixPath(postgres_owned / "runbook-tools")
    install_tools(LOCAL, tools, "/usr/bin/python3")
    for path in Path(tools).iterdir():
        assert pwd.getpwuid(path.lstat().st_uid).pw_name == POSTGRES, path


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _owner(path: Path) -> str:
    return pwd.getpwuid(path.lstat().st_uid).pw_name


def test_lab_files_are_their_owners_only_and_its_servers_trust_nobody(shared_lab):
    root, servers = shared_lab.root, shared_lab.server_dir
    assert _mode(root) == 0o711 and _owner(root) == "root"
    for private in (shared_lab.passfile, root / "lab.json"):
        assert (_mode(private), _owner(private)) == (0o600, "root"), private
    for sub in ("parameters", "workload"):
        assert (_mode(root / sub), _owner(root / sub)) == (0o700, "root"), sub
    for name in (*lab_module.SERVER_NAMES, "logs", "archive", "standby"):
        assert (_mode(servers / name), _owner(servers / name)) == (0o700, POSTGRES), name
    for log in shared_lab.logs_dir.iterdir():
        assert _mode(log) == 0o600, log
    for name in lab_module.SERVER_NAMES:
        hba = LOCAL.read_text(shared_lab.cluster(name).datadir / "pg_hba.conf", user=POSTGRES)
        rules = [line.split() for line in hba.splitlines() if line and not line.startswith("#")]
        assert rules and all(r[-1] in ("scram-sha-256", "peer") for r in rules), (name, rules)
    for user in ("postgres", "bucardo"):  # no password: refused, whoever asks
        refused = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(shared_lab.ports["here"]), "-U", user, "-w",
             "-c", "select 1", "postgres"],
            capture_output=True, text=True, env={**os.environ, "PGPASSFILE": "/nonexistent"},
        )  # fmt: skip
        assert refused.returncode != 0 and "password" in refused.stderr
    header = (root / "parameters" / "warm_standby.yaml").read_text()
    assert f"export PGPASSFILE={shared_lab.passfile}" in header


@pytest.fixture
def private_home(tmp_path) -> Path:
    """A 0700 directory standing in for root's home (pytest's tmp_path is one already)."""
    home = tmp_path / "root-home"
    home.mkdir(mode=0o700)
    home.chmod(0o700)
    assert subprocess.run(["runuser", "-u", POSTGRES, "--", "test", "-x", str(home)]).returncode
    return home


def test_lab_in_a_directory_postgres_cannot_reach_puts_server_files_under_var_tmp(private_home):
    root = private_home / ".lab"
    the_lab = lab_module.up(root, first_port=random.randrange(20000, 60000, 100))
    try:
        assert the_lab.server_dir.parent == Path("/var/tmp")
        assert (_mode(the_lab.server_dir), _owner(the_lab.server_dir)) == (0o711, "root")
        assert lab_module.status(root)["state"].tolist()[:4] == ["up"] * 4
        assert the_lab.cluster("here").datadir.is_relative_to(the_lab.server_dir)
    finally:
        lab_module.down(root, purge=True)
    assert not the_lab.server_dir.exists() and not root.exists()


@pytest.mark.slow
def test_make_demo_works_from_a_clone_in_a_directory_only_root_can_enter(private_home):
    """`make demo` in a fresh clone inside a 0700 directory (root's home on Debian): the lab
    finds a place for its servers and both runbooks run. The clone borrows this checkout's
    virtualenv (its own would need the package index)."""
    repo = Path(__file__).resolve().parent.parent
    clone = private_home / "pg-runbooks"
    subprocess.run(["git", "clone", "--quiet", str(repo), str(clone)], check=True)
    venv = repo / ".venv"
    stamp = private_home / "venv-installed"
    stamp.touch()  # newer than the clone's pyproject.toml: no reinstall (this checkout's own
    # marker is left alone, so a later change of pyproject.toml still reinstalls here)
    try:
        result = subprocess.run(
            ["make", "demo", f"VENV={venv}", f"INSTALLED={stamp}"],
            cwd=clone,
            capture_output=True,
            text=True,
            timeout=1500,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "not reachable" not in result.stderr
        runs = [p for p in (clone / "runs").iterdir() if p.is_dir()]
        notebooks = sorted(p.stem for p in (clone / "notebooks").glob("*.ipynb"))
        assert sorted(r.name.split("-")[1] for r in runs) == notebooks, runs
        assert _mode(clone / "runs") == 0o700
        assert all(_mode(run) == 0o500 for run in runs)
    finally:
        subprocess.run(
            [str(venv / "bin" / "runbook"), "lab", "down", "--dir", ".lab", "--purge"],
            cwd=clone,
            capture_output=True,
        )
