"""No password, in any form, in a run's archive, its logs or any command line during the run."""

from __future__ import annotations

import base64
import os
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

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
                    except OSError:
                        continue
                    self.seen.add(raw.replace(b"\0", b" ").decode(errors="replace"))
            self.samples += 1
            self._stop.wait(0.1)

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
        the_lab.cluster(name).require_passwords()
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
    with CommandLineSampler() as sampler:
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
    assert result.returncode == 0, result.stderr[-3000:]
    assert sampler.samples > 10
    forms = _forms(PASSWORD)
    leaks = [line for line in sampler.seen if any(f in line for f in forms)]
    assert not leaks, f"password on a command line: {leaks}"
    files = [p for p in archive.rglob("*") if p.is_file()]
    files += [p for p in (the_lab.root / "logs").rglob("*") if p.is_file()]
    files += [p for p in (the_lab.root / "bucardo").rglob("*") if p.is_file()]
    assert any(p.name == "summary.json" for p in files)
    for path in files:
        text = path.read_bytes().decode(errors="replace")
        assert not any(f in text for f in forms), f"password found in {path}"
    assert PASSWORD not in result.stdout + result.stderr
