"""The restore_command's shell front door (runbook-restore-wal, installed next to the Python
command): run as the server runs it, `sh -c` on the line runbook_lib.standby writes. It hands
over staged segments without starting Python and leaves everything else to the Python command."""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest
from test_wal_restore import SEG, STAGING, names, seg_name, wait_for

from runbook_lib.cluster import server_os_user
from runbook_lib.host import LOCAL, CommandResult
from runbook_lib.standby.tools import install_tools


class Standby:
    """An archive, a data directory in recovery, and the restore command installed with a
    python3 that notes each start in a file: how the test tells the shell from Python."""

    def __init__(self, root: Path, *extra: str) -> None:
        self.archive, self.datadir = root / "archive", root / "data"
        self.archive.mkdir()
        self.pg_wal = self.datadir / "pg_wal"
        self.pg_wal.mkdir(parents=True)
        (self.datadir / "standby.signal").touch()
        self.starts = root / "python-starts"
        python = root / "python3"
        python.write_text(f'#!/bin/sh\necho start >>{self.starts}\nexec /usr/bin/python3 "$@"\n')
        python.chmod(0o755)
        tools = install_tools(LOCAL, PurePosixPath(root / "tools"), str(python))
        self.starts.unlink(missing_ok=True)  # the install compiled the modules with it
        self.command = ["/bin/sh", str(tools.restore_front), "--archive", str(self.archive)]
        self.command += ["--segment-size", str(SEG), "--prefetch", "3", "--verbose", *extra]

    def archive_segments(self, numbers, timeline: int = 1) -> None:
        for n in numbers:
            name = seg_name(n, timeline)
            (self.archive / name).write_bytes((name.encode() * SEG)[:SEG])

    def restore(self, walfile: str, dest: str = "RECOVERYXLOG", restart: str = "") -> CommandResult:
        line = shlex.join([*self.command, walfile, str(self.pg_wal / dest)])
        line += f" {shlex.quote(restart or walfile)}"
        return LOCAL.run(["/bin/sh", "-c", line], check=False, timeout_s=30)

    def python_starts(self) -> int:
        return len(self.starts.read_text().splitlines()) if self.starts.exists() else 0

    def staged(self) -> set[str]:
        directory = self.pg_wal / STAGING
        if not directory.exists():
            return set()
        return {p.name for p in directory.iterdir() if len(p.name) == 24}

    def served(self, walfile: str, dest: str = "RECOVERYXLOG") -> bool:
        return (self.pg_wal / dest).read_bytes() == (self.archive / walfile).read_bytes()


@pytest.fixture
def root(postgres_dir: Path, request) -> Path:
    """A directory of this test's that the server's OS user can reach (it owns the tools)."""
    path = postgres_dir / request.node.name.replace("/", "_")
    path.mkdir(mode=0o755)
    return path


@pytest.fixture
def standby(root: Path) -> Iterator[Standby]:
    box = Standby(root)
    yield box
    (box.datadir / "standby.signal").unlink(missing_ok=True)
    wait_for(lambda: not (box.pg_wal / STAGING / "prefetch.pid").exists())


def test_staged_segments_are_handed_over_by_the_shell_and_the_window_follows(standby):
    standby.archive_segments(range(1, 12))
    first = standby.restore(seg_name(1))
    assert first.returncode == 0, first.stderr
    assert standby.python_starts() == 1
    for n in range(2, 9):
        (standby.pg_wal / "RECOVERYXLOG").unlink()
        wait_for(lambda n=n: seg_name(n) in standby.staged())
        result = standby.restore(seg_name(n))
        assert result.returncode == 0, result.stderr
        assert "(staged)" in result.stderr
        assert standby.served(seg_name(n))
    assert standby.python_starts() == 1, "every staged segment was handed over by the shell"
    wait_for(lambda: standby.staged() == names([9, 10, 11]))


def test_a_destination_that_exists_is_never_replaced_by_a_staged_segment(standby):
    standby.archive_segments(range(1, 4))
    assert standby.restore(seg_name(1), "A").returncode == 0
    wait_for(lambda: standby.staged() == names([2, 3]))
    (standby.pg_wal / "B").write_bytes(b"old")
    result = standby.restore(seg_name(2), "B")
    assert result.returncode == 1
    assert "refusing to overwrite" in result.stderr
    assert (standby.pg_wal / "B").read_bytes() == b"old"


def test_a_staged_file_older_or_newer_than_the_archived_one_goes_to_python(standby):
    standby.archive_segments(range(1, 4))
    assert standby.restore(seg_name(1), "A").returncode == 0
    wait_for(lambda: standby.staged() == names([2, 3]))
    replaced = standby.archive / seg_name(2)
    replaced.write_bytes(b"r" * SEG)  # the archive's file changed after it was staged
    os.utime(replaced, ns=(time.time_ns(), time.time_ns() + 10**9))
    starts = standby.python_starts()
    result = standby.restore(seg_name(2), "B")
    assert result.returncode == 0, result.stderr
    assert standby.python_starts() == starts + 1
    assert (standby.pg_wal / "B").read_bytes() == b"r" * SEG


def test_an_existing_trigger_file_sends_even_a_staged_segment_to_python(root):
    trigger = root / "failover.trigger"
    box = Standby(root, "--wait", "--trigger", str(trigger))
    try:
        box.archive_segments(range(1, 4))
        assert box.restore(seg_name(1), "A").returncode == 0
        wait_for(lambda: box.staged() == names([2, 3]))
        trigger.write_text("fast")
        result = box.restore(seg_name(2), "B")
        assert result.returncode == 1
        assert "fast failover" in result.stderr
        assert not (box.pg_wal / "B").exists()
    finally:
        (box.datadir / "standby.signal").unlink()
        wait_for(lambda: not (box.pg_wal / STAGING / "prefetch.pid").exists())


def test_cleanup_after_a_shell_hand_over_is_done_by_the_prefetcher(root):
    box = Standby(root, "--wait", "--cleanup")
    try:
        box.archive_segments(range(1, 8))
        assert box.restore(seg_name(2), "A", restart=seg_name(1)).returncode == 0
        wait_for(lambda: seg_name(3) in box.staged())
        result = box.restore(seg_name(3), "B", restart=seg_name(3))
        assert result.returncode == 0, result.stderr
        assert "(staged)" in result.stderr and box.python_starts() == 1
        archived = lambda: {p.name for p in box.archive.iterdir()}  # noqa: E731
        wait_for(lambda: archived() == names(range(3, 8)))
        assert not [p for p in (box.pg_wal / STAGING).iterdir() if p.name.startswith("cleanup")]
    finally:
        (box.datadir / "standby.signal").unlink()
        wait_for(lambda: not (box.pg_wal / STAGING / "prefetch.pid").exists())


@pytest.mark.parametrize("request_name", ["00000002.history", "000000010000000000000002.partial"])
def test_requests_other_than_segments_go_to_python(standby, request_name):
    (standby.archive / request_name).write_text("1\t0/2000000\tno recovery target specified\n")
    result = standby.restore(request_name, "H")
    assert result.returncode == 0, result.stderr
    assert standby.python_starts() == 1


@pytest.mark.parametrize(
    "args, status",
    [(["--help"], 0), (["--bogus"], 2), (["--archive"], 2), ([seg_name(1)], 2)],
)
def test_arguments_the_shell_does_not_handle_get_pythons_answer(root, args, status):
    tools = install_tools(LOCAL, PurePosixPath(root / "tools"), "/usr/bin/python3")
    result = LOCAL.run(["/bin/sh", str(tools.restore_front), *args], check=False)
    assert result.returncode == status, result.stderr


def test_a_missing_interpreter_is_not_found_not_an_abort_of_recovery(root):
    python = root / "python3"
    python.symlink_to("/usr/bin/python3")
    tools = install_tools(LOCAL, PurePosixPath(root / "tools"), str(python))
    python.unlink()
    result = LOCAL.run(
        ["/bin/sh", str(tools.restore_front), "--archive", str(root), seg_name(1), "X"],
        check=False,
    )
    assert result.returncode == 1
    assert "is missing" in result.stderr


def test_the_front_door_runs_as_the_server_os_user(postgres_dir: Path):
    user = server_os_user()
    box_root = postgres_dir / "front"
    LOCAL.make_dir(box_root, owner=user, mode=0o755)
    tools = install_tools(LOCAL, PurePosixPath(box_root / "tools"), "/usr/bin/python3")
    archive, pg_wal = box_root / "archive", box_root / "data" / "pg_wal"
    for directory in (archive, box_root / "data", pg_wal):
        LOCAL.make_dir(directory, owner=user, mode=0o755)
    LOCAL.write_text(archive / seg_name(1), "w" * SEG, owner=user, mode=0o644)
    line = shlex.join(
        ["/bin/sh", str(tools.restore_front), "--archive", str(archive)]
        + ["--segment-size", str(SEG), seg_name(1), str(pg_wal / "X"), seg_name(1)]
    )
    result = LOCAL.run(["/bin/sh", "-c", line], user=user, check=False)
    assert result.returncode == 0, result.stderr
    assert (pg_wal / "X").read_text() == "w" * SEG
