"""Find PostgreSQL's programs: PG_BINDIR, pg_config --bindir, or /usr/lib/postgresql/*/bin."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from runbook_lib.errors import ConfigurationError

SERVER_PROGRAMS = ("initdb", "pg_ctl", "postgres")


def _has_server(bindir: Path) -> bool:
    return all((bindir / name).is_file() for name in SERVER_PROGRAMS)


def _candidates() -> list[Path]:
    found: list[Path] = []
    if env := os.environ.get("PG_BINDIR"):
        return [Path(env)]
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            found.append(Path(out.stdout.strip()))
    versioned = Path("/usr/lib/postgresql").glob("*/bin")
    found.extend(
        sorted(
            versioned,
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
            reverse=True,
        )
    )
    return found


def bindir() -> Path:
    """The directory holding initdb, pg_ctl and the client tools."""
    candidates = _candidates()
    for cand in candidates:
        if _has_server(cand):
            return cand
    where = ", ".join(str(c) for c in candidates) or "nowhere"
    raise ConfigurationError(
        f"PostgreSQL server programs (initdb, pg_ctl) not found (looked in {where}); "
        "install them with scripts/install-system-deps.sh or set PG_BINDIR"
    )


def program(name: str) -> str:
    """Full path of a PostgreSQL program such as pg_dump or pg_basebackup."""
    path = bindir() / name
    if not path.is_file():
        raise ConfigurationError(f"{name} not found in {path.parent}; set PG_BINDIR")
    return str(path)
