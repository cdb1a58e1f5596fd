"""The WAL commands the servers run themselves: installed as plain files the server's OS user can
execute with the system's python3, and the command strings that call them."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from runbook_lib import wal_archive, wal_restore
from runbook_lib.cluster import server_os_user
from runbook_lib.errors import PreconditionError
from runbook_lib.host import LocalHost, display_command
from runbook_lib.standby.config import (
    ARCHIVE_SCRIPT,
    RESTORE_FRONT,
    RESTORE_SCRIPT,
    StandbyConfig,
)
from runbook_lib.standby.machines import pg_program

RESTORE_SLEEP_S = 0.1  # pg_standby mode: how often the waiting restore command looks again


# The commands are installed as a small launcher plus the module it imports: the module is
# precompiled by the server's python3, so each call skips compiling ~300 lines (about 1-2 ms of
# the ~13 ms a 16 MB segment costs). A stale or missing .pyc only costs that time again.
LAUNCHER = """\
#!{python} -IS
\"\"\"{command}: installed by runbook_lib.standby; the code is {module}.py next to this file.\"\"\"
import sys

sys.path.insert(0, {directory!r})
from {module} import main

sys.exit(main())
"""
COMMANDS = {
    RESTORE_SCRIPT: ("runbook-restore-wal", "runbook_wal_restore", wal_restore),
    ARCHIVE_SCRIPT: ("runbook-archive-wal", "runbook_wal_archive", wal_archive),
}
# The restore command's front door, a POSIX shell script: during a catch-up most requests are for
# a segment already staged, which it hands over without the ~6 ms start of a Python interpreter.
RESTORE_FRONT_SOURCE = Path(wal_restore.__file__).with_name("wal_restore_front.sh")


@dataclass(frozen=True)
class InstalledTools:
    directory: PurePosixPath
    changed: list[str]

    @property
    def restore_script(self) -> PurePosixPath:
        return self.directory / RESTORE_SCRIPT

    @property
    def restore_front(self) -> PurePosixPath:
        return self.directory / RESTORE_FRONT

    @property
    def archive_script(self) -> PurePosixPath:
        return self.directory / ARCHIVE_SCRIPT


@dataclass(frozen=True)
class ToolFile:
    path: PurePosixPath
    text: str
    mode: int
    summary: str


def tool_files(directory: PurePosixPath, python: str) -> list[ToolFile]:
    """Every file install_tools writes into directory: per command its module and launcher."""
    files = []
    for launcher, (command, module_name, module) in COMMANDS.items():
        files.append(
            ToolFile(
                directory / f"{module_name}.py",
                Path(module.__file__).read_text(),
                0o644,
                f"{command}'s code (a copy of {module.__name__})",
            )
        )
        files.append(
            ToolFile(
                directory / launcher,
                LAUNCHER.format(
                    python=python, command=command, module=module_name, directory=str(directory)
                ),
                0o755,
                f"{command} launcher: `{python} -I -S` running {module_name}.main()",
            )
        )
    files.append(
        ToolFile(
            directory / RESTORE_FRONT,
            restore_front_text(directory, python),
            0o755,
            "runbook-restore-wal, the restore_command: hands over staged segments, "
            f"else runs {RESTORE_SCRIPT}",
        )
    )
    return files


def restore_front_text(directory: PurePosixPath, python: str) -> str:
    text = RESTORE_FRONT_SOURCE.read_text()
    text = text.replace("@SERVER_PYTHON@", shlex.quote(python))
    return text.replace("@PYTHON_COMMAND@", shlex.quote(str(directory / RESTORE_SCRIPT)))


def compile_argv(python: str, directory: PurePosixPath) -> list[str]:
    """Precompile the modules with the interpreter the server runs them with."""
    modules = [str(f.path) for f in tool_files(directory, python) if f.path.suffix == ".py"]
    return [python, "-I", "-m", "py_compile", *modules]


def _check_python(host: LocalHost, python: str) -> None:
    if not host.exists(python):
        raise PreconditionError(
            f"{python} does not exist on {host.name}: the server runs the WAL commands with it; "
            "install python3 there or set server_python"
        )


def _stale(host: LocalHost, file: ToolFile) -> bool:
    if not host.exists(file.path):
        return True
    return host.read_text(file.path, user=server_os_user()) != file.text


def install_tools(host: LocalHost, directory: PurePosixPath, python: str) -> InstalledTools:
    """Install both commands into directory (owned by the server's OS user, who alone runs
    them; launchers 0755), precompiled by `python`, the interpreter the server runs them with,
    as that user; unchanged files stay."""
    _check_python(host, python)
    owner = server_os_user()
    host.make_dir(directory, owner=owner, mode=0o755)
    changed = []
    for file in tool_files(directory, python):
        if _stale(host, file):
            host.write_text(file.path, file.text, owner=owner, mode=file.mode)
            changed.append(file.path.name)
    host.run(compile_argv(python, directory), user=owner)
    return InstalledTools(directory, changed)


def install_tools_plan(host: LocalHost, directory: PurePosixPath, python: str) -> list[str]:
    """What install_tools would do, read-only: the directory, each file it would (re)write, and
    the compile command."""
    _check_python(host, python)
    owner = server_os_user() or "this OS user"
    actions = (
        []
        if host.exists(directory)
        else [f"on {host.name}: create directory {directory} (owner {owner}, mode 0755)"]
    )
    for file in tool_files(directory, python):
        if _stale(host, file):
            actions.append(
                f"on {host.name}: write {file.path} (owner {owner}, mode {file.mode:04o}, "
                f"{len(file.text)} bytes): {file.summary}"
            )
    compile_line = display_command(host.as_user(compile_argv(python, directory), server_os_user()))
    actions.append(f"on {host.name}: {compile_line}")
    return actions


def _conf_string(command: list[str]) -> str:
    """A shell command line, quoted for the shell the server runs it with."""
    return " ".join(a if a in ("%f", "%p", "%r") else shlex.quote(a) for a in command)


def _archive_program(cfg: StandbyConfig, tools_dir: PurePosixPath) -> list[str]:
    return [cfg.server_python, "-I", "-S", str(tools_dir / ARCHIVE_SCRIPT), "--archive"]


SSH_CONTROL_DIRNAME = "ssh"  # in the tools directory: the WAL commands' SSH control sockets


def _over_ssh(cfg: StandbyConfig, tools_dir: PurePosixPath) -> list[str]:
    """Options of runbook-archive-wal working on the archive's machine over SSH, sharing one
    connection between calls (a control master whose socket is in the tools directory)."""
    argv = [
        "--ssh",
        cfg.archive_target,
        "--remote-program",
        str(cfg.archive_tools_dir / ARCHIVE_SCRIPT),
    ]
    argv += ["--ssh-control-dir", str(tools_dir / SSH_CONTROL_DIRNAME)]
    for option in cfg.server_ssh_options:
        argv.append(f"--ssh-option={option}")
    return argv


def archive_command(cfg: StandbyConfig, tools_dir: PurePosixPath, *, local: bool) -> str:
    """The archive_command of a server whose tools are in tools_dir; `local`: archive_dir is on
    that server's own disk (or a shared mount), else the segment goes over SSH."""
    argv = [*_archive_program(cfg, tools_dir), str(cfg.archive_dir)]
    if not local:
        argv += _over_ssh(cfg, tools_dir)
    return _conf_string([*argv, "%p", "%f"])


def restore_command(cfg: StandbyConfig, tools_dir: PurePosixPath) -> str:
    if not cfg.archive_on_standby_side:  # the archive on a machine of its own: fetch over SSH
        argv = [*_archive_program(cfg, tools_dir), str(cfg.archive_dir), *_over_ssh(cfg, tools_dir)]
        return _conf_string([*argv, "--fetch", "%f", "%p"])
    argv = ["/bin/sh", str(tools_dir / RESTORE_FRONT), "--archive", str(cfg.archive_dir)]
    if cfg.waiting:
        argv += ["--wait", "--sleep", str(RESTORE_SLEEP_S), "--trigger", str(cfg.trigger_file)]
        if cfg.archive_cleanup:
            argv.append("--cleanup")
    return _conf_string([*argv, "%f", "%p", "%r"])


def archive_cleanup_command(cfg: StandbyConfig, tools_dir: PurePosixPath, major: int) -> str:
    """The archive's cleanup as the standby's server runs it: over SSH on the archive's
    machine, else pg_archivecleanup of the standby's major version on its own."""
    if not cfg.archive_on_standby_side:
        argv = [*_archive_program(cfg, tools_dir), str(cfg.archive_dir), *_over_ssh(cfg, tools_dir)]
        return _conf_string([*argv, "--cleanup-before", "%r"])
    program = pg_program(cfg.standby_os_host, "pg_archivecleanup", major)
    return _conf_string([program, str(cfg.archive_dir), "%r"])


def recovery_end_command(cfg: StandbyConfig) -> str:
    return _conf_string(["rm", "-f", str(cfg.trigger_file)])
