"""runbook-archive-wal, run as the server runs it: Debian's python3 -I -S on the script file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runbook_lib import wal_archive
from runbook_lib.cluster import server_os_user
from runbook_lib.host import LOCAL, CommandResult

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
