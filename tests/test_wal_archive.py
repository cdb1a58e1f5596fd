"""runbook-archive-wal, run as the server runs it: Debian's python3 -I -S on the script file."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from runbook_lib import wal_archive
from runbook_lib.cluster import server_os_user
from runbook_lib.host import LOCAL, CommandResult
from runbook_lib.waiting import wait_until

SERVER_PYTHON = "/usr/bin/python3"
SEGMENT = "000000010000000000000009"


def archive_cmd(
    *args: str | Path, user: str | None = None, cwd: Path | None = None
) -> CommandResult:
    argv = [SERVER_PYTHON, "-I", "-S", wal_archive.__file__, *map(str, args)]
    return LOCAL.run(argv, user=user, check=False, cwd=cwd, timeout_s=30)


@pytest.fixture
def datadir(tmp_path: Path) -> Path:
    (tmp_path / "data" / "pg_wal").mkdir(parents=True)
    (tmp_path / "archive").mkdir()
    (tmp_path / "data" / "pg_wal" / SEGMENT).write_bytes(os.urandom(64 * 1024))
    return tmp_path / "data"


def test_archive_copies_relative_walpath_into_archive(datadir: Path):
    archive = datadir.parent / "archive"
    result = archive_cmd("--archive", archive, f"pg_wal/{SEGMENT}", SEGMENT, cwd=datadir)
    assert result.returncode == 0, result.stderr
    assert (archive / SEGMENT).read_bytes() == (datadir / "pg_wal" / SEGMENT).read_bytes()
    assert os.listdir(archive) == [SEGMENT], "no temporary file may be left behind"


def test_archive_identical_existing_file_is_success(datadir: Path):
    archive = datadir.parent / "archive"
    args = ("--archive", archive, f"pg_wal/{SEGMENT}", SEGMENT)
    assert archive_cmd(*args, cwd=datadir).returncode == 0
    again = archive_cmd(*args, cwd=datadir)
    assert again.returncode == 0, again.stderr
    assert "identical" in again.stderr


def test_archive_different_existing_file_is_refused_and_kept(datadir: Path):
    archive = datadir.parent / "archive"
    (archive / SEGMENT).write_bytes(b"someone else's WAL")
    result = archive_cmd("--archive", archive, f"pg_wal/{SEGMENT}", SEGMENT, cwd=datadir)
    assert result.returncode == 1
    assert "refusing to overwrite" in result.stderr
    assert (archive / SEGMENT).read_bytes() == b"someone else's WAL"


def test_archive_missing_source_fails_with_exit_1(datadir: Path):
    archive = datadir.parent / "archive"
    result = archive_cmd("--archive", archive, "pg_wal/nothing", "nothing", cwd=datadir)
    assert result.returncode == 1
    assert os.listdir(archive) == []


def test_archive_missing_archive_directory_fails_with_exit_1(datadir: Path):
    result = archive_cmd(
        "--archive", datadir / "nowhere", f"pg_wal/{SEGMENT}", SEGMENT, cwd=datadir
    )
    assert result.returncode == 1
    assert "does not exist" in result.stderr


def test_archive_unwritable_directory_fails_as_server_os_user(postgres_dir: Path):
    user = server_os_user()
    archive, wal = postgres_dir / "archive", postgres_dir / "wal"
    LOCAL.make_dir(archive, owner=user, mode=0o500)
    LOCAL.make_dir(wal, owner=user, mode=0o755)
    LOCAL.write_text(wal / SEGMENT, "x" * 1000, owner=user, mode=0o600)
    result = archive_cmd("--archive", archive, wal / SEGMENT, SEGMENT, user=user)
    assert result.returncode == 1
    assert "Permission denied" in result.stderr
    assert os.listdir(archive) == []


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--archive"],
        ["--archive", "A", "p"],
        ["--archive", "A", "p", "../f"],
        ["--x", "A", "p", "f"],
        ["p", "f"],
    ],
)
def test_archive_bad_arguments_exit_2(args: list[str]):
    result = archive_cmd(*args)
    assert result.returncode == 2
    assert "usage:" in result.stderr


def leftovers(archive: Path) -> list[str]:
    return sorted(n for n in os.listdir(archive) if n.startswith("."))


def test_archive_io_error_mid_copy_removes_the_temporary_file(datadir: Path):
    """A source that fails on read (a directory: EISDIR once the copy starts) after the
    temporary file exists: the failure is reported and nothing is left in the archive."""
    archive = datadir.parent / "archive"
    (datadir / "pg_wal" / "broken").mkdir()
    result = archive_cmd("--archive", archive, "pg_wal/broken", SEGMENT, cwd=datadir)
    assert result.returncode == 1
    assert "cannot archive" in result.stderr
    assert os.listdir(archive) == []


def test_archive_reuses_and_removes_a_temporary_file_left_by_a_killed_attempt(datadir: Path):
    archive = datadir.parent / "archive"
    stale = archive / f".{SEGMENT}.{os.uname().nodename}.tmp"
    stale.write_bytes(b"half a segment from an attempt killed with SIGKILL")
    result = archive_cmd("--archive", archive, f"pg_wal/{SEGMENT}", SEGMENT, cwd=datadir)
    assert result.returncode == 0, result.stderr
    assert os.listdir(archive) == [SEGMENT]
    assert (archive / SEGMENT).read_bytes() == (datadir / "pg_wal" / SEGMENT).read_bytes()


def receive_cmd(archive: Path, size: int, *extra: str) -> subprocess.Popen[bytes]:
    argv = [SERVER_PYTHON, "-I", "-S", wal_archive.__file__, "--archive", str(archive)]
    argv += ["--receive", SEGMENT, "--size", str(size), *extra]
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=subprocess.PIPE)


def test_receive_stores_the_stream_and_refuses_different_content(tmp_path: Path):
    data = os.urandom(100_000)
    proc = receive_cmd(tmp_path, len(data))
    _, err = proc.communicate(data, timeout=30)
    assert proc.returncode == 0, err
    assert (tmp_path / SEGMENT).read_bytes() == data
    again = receive_cmd(tmp_path, len(data))
    _, err = again.communicate(data, timeout=30)
    assert again.returncode == 0 and b"identical" in err
    other = receive_cmd(tmp_path, len(data))
    _, err = other.communicate(os.urandom(len(data)), timeout=30)
    assert other.returncode == 1 and b"refusing to overwrite" in err
    assert (tmp_path / SEGMENT).read_bytes() == data
    assert leftovers(tmp_path) == []


def test_receive_of_a_cut_stream_fails_and_leaves_nothing(tmp_path: Path):
    proc = receive_cmd(tmp_path, 100_000)
    _, err = proc.communicate(b"x" * 1000, timeout=30)  # the connection broke after 1000 bytes
    assert proc.returncode == 1
    assert b"copied only 1000 of 100000" in err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_receive_killed_by_a_signal_mid_copy_removes_the_temporary_file(tmp_path: Path, sig):
    proc = receive_cmd(tmp_path, 100_000)
    assert proc.stdin is not None
    proc.stdin.write(b"x" * 1000)
    proc.stdin.flush()
    wait_until(lambda: leftovers(tmp_path), what="the temporary file", timeout_s=10)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert b"stopped by signal" in err
    assert os.listdir(tmp_path) == []


@pytest.fixture
def full_archive(postgres_dir: Path) -> Iterator[Path]:
    """A real 1 MB file system (tmpfs) as the archive, writable by the server's OS user."""
    archive = postgres_dir / "small-archive"
    archive.mkdir()
    owner = pwd.getpwnam(server_os_user() or pwd.getpwuid(os.geteuid()).pw_name)
    options = f"size=1m,mode=0700,uid={owner.pw_uid},gid={owner.pw_gid}"
    LOCAL.run(["mount", "-t", "tmpfs", "-o", options, "runbook-test-archive", str(archive)])
    try:
        yield archive
    finally:
        LOCAL.run(["umount", str(archive)])


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small file system needs root")
def test_archive_into_a_full_file_system_fails_and_leaves_no_temporary_file(
    postgres_dir: Path, full_archive: Path
):
    user = server_os_user()
    wal = postgres_dir / "wal"
    LOCAL.make_dir(wal, owner=user, mode=0o755)
    LOCAL.write_text(wal / SEGMENT, "x" * (3 * 2**20), owner=user, mode=0o600)
    result = archive_cmd("--archive", full_archive, wal / SEGMENT, SEGMENT, user=user)
    assert result.returncode == 1
    assert "No space left on device" in result.stderr
    assert os.listdir(full_archive) == []


def test_get_writes_an_archived_file_to_stdout_and_fails_when_absent(tmp_path: Path):
    data = os.urandom(70_000)
    (tmp_path / SEGMENT).write_bytes(data)
    argv = [SERVER_PYTHON, "-I", "-S", wal_archive.__file__, "--archive", str(tmp_path)]
    got = subprocess.run([*argv, "--get", SEGMENT], capture_output=True, timeout=30)
    assert got.returncode == 0 and got.stdout == data
    absent = subprocess.run([*argv, "--get", "00000002.history"], capture_output=True, timeout=30)
    assert absent.returncode == 1 and absent.stdout == b""


def test_cleanup_before_removes_older_segments_of_every_timeline_only(tmp_path: Path):
    names = [
        "000000010000000000000007",
        "000000010000000000000008.partial",
        "000000020000000000000008",
        "000000020000000000000009",
        "00000002.history",
        "000000010000000000000007.00000028.backup",
        "not-wal",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    result = archive_cmd("--archive", tmp_path, "--cleanup-before", "000000020000000000000009")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path)) == sorted(
        [
            "000000010000000000000007.00000028.backup",
            "000000020000000000000009",
            "00000002.history",
            "not-wal",
        ]
    )


def test_fetch_needs_ssh_and_receive_refuses_it():
    assert archive_cmd("--archive", "/a", "--fetch", SEGMENT, "pg_wal/x").returncode == 2
    bad = archive_cmd("--archive", "/a", "--ssh", "h", "--receive", SEGMENT, "--size", "1")
    assert bad.returncode == 2 and "far end" in bad.stderr


def test_receive_of_a_cut_stream_for_an_archived_segment_fails_without_touching_it(tmp_path):
    (tmp_path / SEGMENT).write_bytes(b"x" * 5000)
    proc = receive_cmd(tmp_path, 5000)
    _, err = proc.communicate(b"x" * 100, timeout=30)
    assert proc.returncode == 1 and b"ended 4900 bytes early" in err
    assert os.listdir(tmp_path) == [SEGMENT] and (tmp_path / SEGMENT).read_bytes() == b"x" * 5000
