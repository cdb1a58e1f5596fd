"""Find PostgreSQL's programs: PG_BINDIR, pg_config --bindir, /usr/lib/postgresql/*/bin, the
programs on PATH, and the builds of other versions the project installs (runbook_lib.pgversions).

Server programs (initdb, pg_ctl, postgres) must be of the server's own major version
(`server_bindir`); client programs (pg_dump, pg_restore, psql, pg_basebackup) must be at least as
new as every server they talk to (`client`): the oldest such version is taken, PG_BINDIR first
when it is new enough."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from runbook_lib import pgversions
from runbook_lib.errors import ConfigurationError

SERVER_PROGRAMS = ("initdb", "pg_ctl", "postgres")


def _has_server(bindir: Path) -> bool:
    return all((bindir / name).is_file() for name in SERVER_PROGRAMS)


def _pg_config_bindir() -> list[Path]:
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            return [Path(out.stdout.strip())]
    return []


def _by_version(paths: Iterable[Path]) -> list[Path]:
    def key(p: Path) -> int:
        name = p.parent.name
        return int(name) if name.isdigit() else 0

    return sorted(paths, key=key, reverse=True)


def _candidates() -> list[Path]:
    """The default server's bindir first: PG_BINDIR alone when set, else pg_config's, then
    Debian's versioned directories, newest first."""
    if env := os.environ.get("PG_BINDIR"):
        return [Path(env)]
    return [*_pg_config_bindir(), *_by_version(Path("/usr/lib/postgresql").glob("*/bin"))]


def _all_candidates() -> list[Path]:
    """Every directory that may hold client programs, PG_BINDIR first."""
    found = [*_candidates(), *_pg_config_bindir()]
    found += _by_version(Path("/usr/lib/postgresql").glob("*/bin"))
    found += _by_version(pgversions.cache_dir().glob("*/bin"))
    found += [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    unique: list[Path] = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


def bindir() -> Path:
    """The directory holding initdb, pg_ctl and the client tools of the default version."""
    candidates = _candidates()
    for cand in candidates:
        if _has_server(cand):
            return cand
    where = ", ".join(str(c) for c in candidates) or "nowhere"
    raise ConfigurationError(
        f"PostgreSQL server programs (initdb, pg_ctl) not found (looked in {where}); "
        "install them with scripts/install-system-deps.sh or set PG_BINDIR"
    )


@functools.cache
def version_text(path: str) -> str | None:
    """What a program says with --version (its first line), or None."""
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0] if out.returncode == 0 and lines else None


@functools.cache
def program_major(path: str) -> int | None:
    """The major version a PostgreSQL program reports with --version (None if it does not)."""
    found = re.search(r"\(PostgreSQL\) (\d+)", version_text(path) or "")
    return int(found.group(1)) if found else None


def server_bindir(major: int) -> Path:
    """A bindir with the server programs of exactly `major` (for initdb, pg_ctl, postgres)."""
    pgversions.require_supported(major * 10000, f"the server to run (PostgreSQL {major})")
    for cand in [*_candidates(), *_all_candidates()]:
        if _has_server(cand) and program_major(str(cand / "postgres")) == major:
            return cand
    raise ConfigurationError(
        f"no PostgreSQL {major} server programs found; install them with "
        f"`python -m runbook_lib.pgversions {major}` (or `make test-versions`), or set PG_BINDIR"
    )


def client(name: str, majors: Iterable[int]) -> str:
    """Full path of client program `name` at least as new as every server major in `majors`
    (the oldest that is; PG_BINDIR's when it qualifies)."""
    need = max(majors, default=0)
    usable: list[tuple[int, int, str]] = []
    for rank, cand in enumerate(_all_candidates()):
        path = cand / name
        major = program_major(str(path)) if path.is_file() else None
        if major is not None and major >= need:
            usable.append((0 if rank == 0 and os.environ.get("PG_BINDIR") else 1, major, str(path)))
    if not usable:
        raise ConfigurationError(
            f"no {name} of PostgreSQL {need} or later found (looked in PG_BINDIR, pg_config, "
            f"/usr/lib/postgresql/*/bin, {pgversions.cache_dir()}/*/bin and PATH); install the "
            f"client programs of {need} (`python -m runbook_lib.pgversions {need}`)"
        )
    return min(usable)[2]


def program(name: str, directory: Path | None = None) -> str:
    """Full path of a PostgreSQL program such as pg_dump or pg_basebackup, from `directory` or
    the default version's bindir."""
    where = directory or bindir()
    path = where / name
    if not path.is_file():
        raise ConfigurationError(f"{name} not found in {where}; set PG_BINDIR")
    return str(path)
