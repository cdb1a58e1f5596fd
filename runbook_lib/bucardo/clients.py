"""The bootstrap's client programs (pg_dump, pg_restore, psql): at least as new as both servers,
so that a bootstrap from an older to a newer major version dumps with the newer pg_dump."""

from __future__ import annotations

from runbook_lib import pgbin, record
from runbook_lib.bucardo.config import BootstrapConfig
from runbook_lib.connection import server_major


def majors(cfg: BootstrapConfig) -> tuple[int, int]:
    """(source major, target major)."""
    return server_major(cfg.source), server_major(cfg.target_admin)


def client(cfg: BootstrapConfig, name: str) -> str:
    """The program's path, noted in the run's record."""
    path = pgbin.client(name, majors(cfg))
    record.record_program(name, path, pgbin.version_text(path))
    return path
