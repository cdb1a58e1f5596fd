"""The WAL commands the servers run themselves: installed as plain files the server's OS user can
execute with the system's python3, and the command strings that call them."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from runbook_lib import pgbin, wal_archive, wal_restore
from runbook_lib.errors import PreconditionError
from runbook_lib.host import LocalHost
from runbook_lib.standby.config import ARCHIVE_SCRIPT, RESTORE_SCRIPT, StandbyConfig

RESTORE_SLEEP_S = 0.1  # pg_standby mode: how often the waiting restore command looks again


@dataclass(frozen=True)
class InstalledTools:
    directory: PurePosixPath
    changed: list[str]

    @property
    def restore_script(self) -> PurePosixPath:
        return self.directory / RESTORE_SCRIPT

    @property
    def archive_script(self) -> PurePosixPath:
        return self.directory / ARCHIVE_SCRIPT


def install_tools(host: LocalHost, directory: PurePosixPath, python: str) -> InstalledTools:
    """Copy both scripts into directory (mode 0755, world-readable); unchanged files stay."""
    if not host.exists(python):
        raise PreconditionError(
            f"{python} does not exist on {host.name}: the server runs the WAL commands with it; "
            "install python3 there or set server_python"
        )
    host.make_dir(directory, mode=0o755)
    changed = []
    for name, module in ((RESTORE_SCRIPT, wal_restore), (ARCHIVE_SCRIPT, wal_archive)):
        text = Path(module.__file__).read_text()
        target = directory / name
        if not host.exists(target) or host.read_text(target) != text:
            host.write_text(target, text, mode=0o755)
            changed.append(name)
    return InstalledTools(directory, changed)


def _conf_string(command: list[str]) -> str:
    """A shell command line, quoted for the shell the server runs it with."""
    return " ".join(a if a in ("%f", "%p", "%r") else shlex.quote(a) for a in command)


def archive_command(python: str, tools_dir: PurePosixPath, archive_dir: PurePosixPath) -> str:
    script = str(tools_dir / ARCHIVE_SCRIPT)
    return _conf_string([python, "-I", "-S", script, "--archive", str(archive_dir), "%p", "%f"])


def restore_command(cfg: StandbyConfig, tools_dir: PurePosixPath) -> str:
    argv = [cfg.server_python, "-I", "-S", str(tools_dir / RESTORE_SCRIPT)]
    argv += ["--archive", str(cfg.archive_dir)]
    if cfg.waiting:
        argv += ["--wait", "--sleep", str(RESTORE_SLEEP_S), "--trigger", str(cfg.trigger_file)]
        if cfg.archive_cleanup:
            argv.append("--cleanup")
    return _conf_string([*argv, "%f", "%p", "%r"])


def archive_cleanup_command(cfg: StandbyConfig) -> str:
    return _conf_string([pgbin.program("pg_archivecleanup"), str(cfg.archive_dir), "%r"])


def recovery_end_command(cfg: StandbyConfig) -> str:
    return _conf_string(["rm", "-f", str(cfg.trigger_file)])
