"""Which PostgreSQL binaries each lab server runs: `--pg-version 17` (every sample server),
`--pg-version here=15,there=18`, or `--pgbin DIR` / `--pgbin there=DIR` for any installed build.

Bucardo's control server always runs the default version: it needs plperl, which only Debian's
packages carry. The standby runs its primary's binaries."""

from __future__ import annotations

from pathlib import Path

from runbook_lib import pgbin, pgversions
from runbook_lib.errors import ConfigurationError

VERSIONED_SERVERS = ("here", "there", "primary")


def _assignments(spec: str, option: str) -> dict[str, str]:
    """'X' (every versioned server) or 'name=X,name=X'."""
    if "=" not in spec:
        return dict.fromkeys(VERSIONED_SERVERS, spec.strip())
    found: dict[str, str] = {}
    for part in spec.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in VERSIONED_SERVERS or not value.strip():
            raise ConfigurationError(
                f"{option} {spec!r}: give VALUE or NAME=VALUE[,NAME=VALUE] with NAME one of "
                f"{', '.join(VERSIONED_SERVERS)} (control always runs Debian's build, with plperl)"
            )
        found[name] = value.strip()
    return found


def _bindir_of_version(value: str) -> Path:
    if not value.isdigit() or int(value) not in pgversions.SUPPORTED_MAJORS:
        raise ConfigurationError(
            f"--pg-version {value!r}: choose a major version among "
            f"{', '.join(map(str, pgversions.SUPPORTED_MAJORS))}"
        )
    return pgbin.server_bindir(int(value))


def _checked_bindir(value: str) -> Path:
    path = Path(value).absolute()
    major = pgbin.program_major(str(path / "postgres")) if (path / "postgres").is_file() else None
    if major is None or not (path / "initdb").is_file() or not (path / "pg_ctl").is_file():
        raise ConfigurationError(f"--pgbin {value}: no PostgreSQL server programs there")
    pgversions.require_supported(major * 10000, f"--pgbin {value}")
    return path


def requested_bindirs(pg_version: str | None, pgbin_dirs: str | None) -> dict[str, str]:
    """Server name -> bindir for the servers given a version; the rest use the default."""
    chosen: dict[str, str] = {}
    if pg_version:
        for name, value in _assignments(pg_version, "--pg-version").items():
            chosen[name] = str(_bindir_of_version(value))
    if pgbin_dirs:
        for name, value in _assignments(pgbin_dirs, "--pgbin").items():
            chosen[name] = str(_checked_bindir(value))
    return chosen


def bindir_major(bindir: str | None) -> int:
    """The major version of a lab server's binaries (the default's when None)."""
    path = Path(bindir) if bindir else pgbin.bindir()
    major = pgbin.program_major(str(path / "postgres"))
    if major is None:
        raise ConfigurationError(f"{path}/postgres does not report its version")
    return major
