"""JupyterLab servers for interactive runs: find one serving a run folder, or start one.

A server started here serves the run archive (never notebooks/, so a session cannot touch the
committed runbooks), listens on loopback only, and saves widget state into the notebook, so a
reopened run shows its step panel as it was instead of "model not found".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

from runbook_lib.errors import RunbookError, WaitTimeout
from runbook_lib.execute import private_umask
from runbook_lib.ports import LOOPBACK

SETTINGS = {"@jupyter-widgets/jupyterlab-manager/plugin.jupyterlab-settings": {"saveState": True}}
STATE_DIR = ".jupyterlab"  # in the archive: hidden from the file browser


def running_servers() -> list[dict[str, Any]]:
    from jupyter_server.serverapp import list_running_servers

    return list(list_running_servers())


def server_for(path: Path) -> dict[str, Any] | None:
    """A running server whose root holds path."""
    for server in running_servers():
        if path.resolve().is_relative_to(Path(server["root_dir"]).resolve()):
            return server
    return None


def notebook_url(server: dict[str, Any], notebook: Path) -> str:
    relative = notebook.resolve().relative_to(Path(server["root_dir"]).resolve())
    token = f"?token={server['token']}" if server.get("token") else ""
    return f"{server['url'].rstrip('/')}/lab/tree/{quote(relative.as_posix())}{token}"


def write_settings(root: Path) -> Path:
    """The user settings a runbook server runs with (saved widget state)."""
    settings = root / STATE_DIR / "settings"
    for name, values in SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values, indent=2) + "\n")
    return settings


def server_argv(root: Path, *, port: int = 0, token: str | None = None) -> list[str]:
    """The command line of a runbook JupyterLab server serving root."""
    argv = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        f"--ServerApp.ip={LOOPBACK}",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.user_settings_dir={write_settings(root)}",
        f"--LabApp.workspaces_dir={root / STATE_DIR / 'workspaces'}",
    ]
    argv += [f"--ServerApp.port={port}"] if port else []
    argv += [f"--IdentityProvider.token={token}"] if token is not None else []
    return argv + (["--allow-root"] if os.geteuid() == 0 else [])


def start_server(root: Path, timeout_s: float = 60) -> dict[str, Any]:
    """Start a server for root in the background (it outlives this command); wait until it is
    listed as running."""
    log = root / STATE_DIR / "server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with private_umask(), log.open("ab") as out:  # the kernels' records: the owner's only
        process = subprocess.Popen(
            server_argv(root), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = next((s for s in running_servers() if s.get("pid") == process.pid), None)
        if found is not None:
            return found
        if process.poll() is not None:
            raise RunbookError(f"JupyterLab exited with status {process.returncode}; see {log}")
        time.sleep(0.5)
    raise WaitTimeout(f"JupyterLab to start (log: {log})", timeout_s, "not listening")


def _get(server: dict[str, Any], path: str) -> Any:
    request = urllib.request.Request(
        f"{server['url'].rstrip('/')}/{path}",
        headers={"Authorization": f"token {server.get('token', '')}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def saves_widget_state(server: dict[str, Any]) -> bool | None:
    """Whether the server's JupyterLab saves widget state with notebooks (None: unknown)."""
    try:
        found = _get(server, "lab/api/settings/@jupyter-widgets/jupyterlab-manager:plugin")
    except (OSError, ValueError):
        return None
    return bool(found.get("settings", {}).get("saveState"))


def notebook_has_kernel(notebook: Path) -> bool:
    """Whether a running server has a kernel session on notebook."""
    server = server_for(notebook)
    if server is None:
        return False
    relative = notebook.resolve().relative_to(Path(server["root_dir"]).resolve()).as_posix()
    try:
        sessions = _get(server, "api/sessions")
    except (OSError, ValueError):
        return False
    return any(s.get("path") == relative for s in sessions)
