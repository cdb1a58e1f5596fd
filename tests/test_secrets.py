"""No password, in any form, in a run's archive, its logs (every statement logged) or any command
line during the run; no daemon as root; every record its owner's only."""

from __future__ import annotations

import base64
import os
import pwd
import stat
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest

from runbook_lib.connection import connect
from runbook_lib.lab import lab as lab_module

PASSWORD = "Zq7-distinctive-Secr3t"
NOTEBOOKS = ["warm_standby", "bucardo_bootstrap"]


def _forms(secret: str) -> list[str]:
    return [
        secret,
        urllib.parse.quote(secret),
        base64.b64encode(secret.encode()).decode(),
        secret.encode().hex(),
    ]


class CommandLineSampler:
    """Samples every process's command line while a run goes on."""

    def __init__(self, ours: str, lab_dir: Path) -> None:
        self.seen: set[str] = set()
        self.ours = ours.encode()  # in the environment of processes our run started
        self.lab_dir = str(lab_dir)  # or their working directory (Perl's $0 overwrites environ)
        self.processes: set[tuple[int, str]] = set()  # (uid, command line) of those
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
                        uid = os.stat(f"/proc/{pid}").st_uid
                    except OSError:
                        continue
                    line = raw.replace(b"\0", b" ").decode(errors="replace")
                    self.seen.add(line)
                    if self._ours(pid):
                        self.processes.add((uid, line))
            self.samples += 1
            self._stop.wait(0.1)

    def _ours(self, pid: str) -> bool:
        """Other sessions run tests on this machine too: keep what our run started."""
        try:
            if self.ours in Path(f"/proc/{pid}/environ").read_bytes():
                return True
            return os.readlink(f"/proc/{pid}/cwd").startswith(self.lab_dir)
        except OSError:
            return False

    def __enter__(self) -> CommandLineSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _password_lab(lab_factory, tmp_path) -> tuple[lab_module.Lab, Path]:
    the_lab = lab_factory("secrets")
    for name in lab_module.SERVER_NAMES:
        with connect(the_lab.endpoint(name)) as conn:
            for role in ("postgres", "bucardo"):
                exists = conn.execute(
                    "SELECT 1 FROM pg_roles WHERE rolname = %s", [role]
                ).fetchone()
                if exists:
                    conn.execute(f"ALTER ROLE {role} PASSWORD '{PASSWORD}'")
            conn.execute("ALTER SYSTEM SET log_statement = 'all'")  # from now on, every statement
        the_lab.cluster(name).require_passwords()  # and a reload
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:*:*:postgres:{PASSWORD}\n127.0.0.1:*:*:bucardo:{PASSWORD}\n")
    pgpass.chmod(0o600)
    return the_lab, pgpass


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_run_against_password_servers_never_records_or_shows_the_password(
    lab_factory, tmp_path, notebook
):
    if not (Path(__file__).resolve().parent.parent / "notebooks" / f"{notebook}.ipynb").exists():
        pytest.skip(f"no {notebook} notebook")
    the_lab, pgpass = _password_lab(lab_factory, tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
    env["PGPASSFILE"] = str(pgpass)
    # without the password file the servers refuse us: the test exercises real authentication
    refused = subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(the_lab.ports["here"]),
            "-U",
            "postgres",
            "-w",
            "-c",
            "select 1",
        ],
        capture_output=True,
        text=True,
        env={**env, "PGPASSFILE": "/nonexistent"},
    )
    assert refused.returncode != 0 and "password" in refused.stderr
    archive = tmp_path / "runs"
    result, sampler = _sampled_run(the_lab, notebook, env, archive, tmp_path)
    _assert_nothing_leaked(result, sampler, archive, the_lab, notebook)
    if notebook == "bucardo_bootstrap":  # then retire it, as after an upgrade
        archive = tmp_path / "retire-runs"
        result, sampler = _sampled_run(the_lab, "bucardo_retire", env, archive, tmp_path)
        _assert_nothing_leaked(result, sampler, archive, the_lab, "bucardo_retire")


def _sampled_run(the_lab, notebook, env, archive, tmp_path):
    """`runbook run NOTEBOOK` with the lab's parameters, every command line sampled meanwhile."""
    ours = f"RUNBOOK_RUN_DIR={archive.absolute()}/"
    with CommandLineSampler(ours, the_lab.server_dir) as sampler:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "runbook_lib.cli",
                "run",
                notebook,
                "-f",
                str(the_lab.parameters_dir / f"{notebook}.yaml"),
                "--archive",
                str(archive),
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=900,
        )
    return result, sampler


def _assert_nothing_leaked(result, sampler, archive, the_lab, notebook) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    assert sampler.samples > 10
    forms = _forms(PASSWORD)
    leaks = [line for line in sampler.seen if any(f in line for f in forms)]
    assert not leaks, f"password on a command line: {leaks}"
    files = [p for p in archive.rglob("*") if p.is_file()]
    files += [p for p in the_lab.logs_dir.rglob("*") if p.is_file()]
    files += [p for p in the_lab.bucardo_dir.rglob("*") if p.is_file()]
    assert any(p.name == "summary.json" for p in files)
    bucardo_passfile = the_lab.bucardo_dir / "bucardo.pgpass"  # Bucardo's own, and only its
    for path in files:
        text = path.read_bytes().decode(errors="replace")
        if path == bucardo_passfile:
            assert (_owner(path), _mode(path)) == ("bucardo", 0o600)
            continue
        assert not any(f in text for f in forms), f"password found in {path}"
    assert PASSWORD not in result.stdout + result.stderr
    server = "primary" if notebook == "warm_standby" else "control"
    assert "statement: " in (the_lab.logs_dir / f"{server}.log").read_text()
    assert_owner_only(archive, the_lab)
    assert_no_root_daemon(sampler, notebook)


def _owner(path: Path) -> str:
    return pwd.getpwuid(path.lstat().st_uid).pw_name


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def assert_owner_only(archive: Path, the_lab: lab_module.Lab) -> None:
    """The run archive sealed for its owner (0500/0400); the Bucardo run directory ours
    (0711: files 0600 but the password-free rc file), its daemon directory Bucardo's."""
    assert _mode(archive) == 0o700
    for path in archive.rglob("*"):
        assert _mode(path) == (0o500 if path.is_dir() else 0o400), path
    rundir = the_lab.bucardo_dir
    if not (rundir / "bucardorc").exists():
        return
    assert (_owner(rundir), _mode(rundir)) == ("root", 0o711)
    for path in rundir.iterdir():
        if path.name == "daemon":
            assert (_owner(path), _mode(path)) == ("bucardo", 0o700)
        elif path.name == "bucardorc":
            assert (_owner(path), _mode(path)) == ("root", 0o644)
        elif path.name != "bucardo.pgpass":
            assert (_owner(path), _mode(path)) == ("root", 0o600), path
    for path in (rundir / "daemon").iterdir():
        assert _owner(path) == "bucardo" and not _mode(path) & 0o077, path


DAEMONS = ("Bucardo", "/usr/bin/bucardo", "bin/postgres ", "postgres: ", "pg_basebackup")


def assert_no_root_daemon(sampler: CommandLineSampler, notebook: str) -> None:
    """Root starts programs only through runuser: no Bucardo, server or backup process of root."""
    by_root = [
        cmd
        for uid, cmd in sampler.processes
        if uid == 0
        and not cmd.startswith("runuser")
        and not cmd.endswith(" --version ")  # pgbin asking a program its version: no daemon
        and any(d in cmd for d in DAEMONS)
    ]
    assert not by_root, f"run as root: {by_root}"
    if notebook == "bucardo_bootstrap":
        bucardo_uid = pwd.getpwnam("bucardo").pw_uid
        mcp = [cmd for uid, cmd in sampler.processes if "Bucardo Master Control" in cmd]
        assert mcp, "the daemon was never seen"
        assert all(uid == bucardo_uid for uid, cmd in sampler.processes if "Bucardo Master" in cmd)
