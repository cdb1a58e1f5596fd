"""runbook-restore-wal, run as the server runs it: Debian's python3 -I -S on the script file."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from runbook_lib import wal_restore
from runbook_lib.cluster import server_os_user
from runbook_lib.host import LOCAL, CommandResult
from runbook_lib.standby.tools import install_tools

SERVER_PYTHON = "/usr/bin/python3"
SEG = 8192  # a small --segment-size keeps the tests fast; the bench uses real 16 MB segments
SEGMENT = "000000010000000000000005"


def restore(*args: str | Path, user: str | None = None) -> CommandResult:
    argv = [SERVER_PYTHON, "-I", "-S", wal_restore.__file__, *map(str, args)]
    return LOCAL.run(argv, user=user, check=False, timeout_s=30)


def timed_restore(*args: str | Path) -> tuple[CommandResult, float]:
    started = time.monotonic()
    result = restore(*args)
    return result, time.monotonic() - started


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    archive, pg_wal = tmp_path / "archive", tmp_path / "pg_wal"
    archive.mkdir()
    pg_wal.mkdir()
    return archive, pg_wal


def segment(archive: Path, name: str = SEGMENT, size: int = SEG, fill: bytes = b"w") -> Path:
    path = archive / name
    path.write_bytes((fill * size)[:size])
    return path


def later(seconds: float, action) -> threading.Thread:
    def run() -> None:
        time.sleep(seconds)
        action()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def opts(archive: Path, *extra: str) -> list[str]:
    return ["--archive", str(archive), "--segment-size", str(SEG), *extra]


def test_restore_copies_segment_to_destination_and_exits_0(dirs):
    archive, pg_wal = dirs
    src = segment(archive, fill=b"abc")
    result = restore(*opts(archive), SEGMENT, pg_wal / "RECOVERYXLOG")
    assert result.returncode == 0, result.stderr
    assert (pg_wal / "RECOVERYXLOG").read_bytes() == src.read_bytes()
    assert sorted(os.listdir(pg_wal)) == ["RECOVERYXLOG"], "no temporary file may be left behind"


def test_restore_absent_segment_without_wait_exits_1_at_once(dirs):
    archive, pg_wal = dirs
    result, elapsed = timed_restore(*opts(archive), SEGMENT, pg_wal / "RECOVERYXLOG")
    assert result.returncode == 1
    assert elapsed < 1.0
    assert not (pg_wal / "RECOVERYXLOG").exists()


@pytest.mark.parametrize("name", ["00000002.history", "000000010000000000000002.00000028.backup"])
def test_restore_history_and_backup_requests_never_wait(dirs, name):
    archive, pg_wal = dirs
    absent, elapsed = timed_restore(*opts(archive, "--wait"), name, pg_wal / "RECOVERYHISTORY")
    assert absent.returncode == 1
    assert elapsed < 1.0, "a .history/.backup request must be answered at once, even with --wait"
    (archive / name).write_text("1\t0/3000000\tno recovery target specified\n")
    present = restore(*opts(archive, "--wait"), name, pg_wal / "RECOVERYHISTORY")
    assert present.returncode == 0, present.stderr
    assert (pg_wal / "RECOVERYHISTORY").read_text() == (archive / name).read_text()


def test_restore_never_overwrites_a_different_existing_destination(dirs):
    archive, pg_wal = dirs
    segment(archive, fill=b"new")
    dest = pg_wal / "RECOVERYXLOG"
    dest.write_bytes(b"old" * 10)
    result = restore(*opts(archive), SEGMENT, dest)
    assert result.returncode == 1
    assert "refusing to overwrite" in result.stderr
    assert dest.read_bytes() == b"old" * 10


def test_restore_same_file_asked_twice_succeeds(dirs):
    archive, pg_wal = dirs
    segment(archive)
    dest = pg_wal / "RECOVERYXLOG"
    assert restore(*opts(archive), SEGMENT, dest).returncode == 0
    again = restore(*opts(archive), SEGMENT, dest)
    assert again.returncode == 0, again.stderr
    dest.unlink()
    assert restore(*opts(archive), SEGMENT, dest).returncode == 0
    assert dest.stat().st_size == SEG


def test_restore_with_wait_returns_when_segment_appears(dirs):
    archive, pg_wal = dirs
    writer = later(0.8, lambda: segment(archive))
    result, elapsed = timed_restore(
        *opts(archive, "--wait", "--sleep", "0.05"), SEGMENT, pg_wal / "X"
    )
    writer.join()
    assert result.returncode == 0, result.stderr
    assert 0.7 < elapsed < 5
    assert (pg_wal / "X").stat().st_size == SEG


def test_restore_partial_segment_is_not_ready_until_full_size(dirs):
    archive, pg_wal = dirs
    segment(archive, size=SEG // 2)  # an archiver still copying
    short, _ = timed_restore(*opts(archive, "--wait", "--max-wait", "0.5"), SEGMENT, pg_wal / "X")
    assert short.returncode == 1
    assert "partly copied" in short.stderr
    assert not (pg_wal / "X").exists()

    writer = later(0.5, lambda: segment(archive, size=SEG))
    full = restore(
        *opts(archive, "--wait", "--sleep", "0.05", "--max-wait", "10"), SEGMENT, pg_wal / "X"
    )
    writer.join()
    assert full.returncode == 0, full.stderr
    assert (pg_wal / "X").stat().st_size == SEG


def test_restore_partial_segment_without_wait_is_not_delivered(dirs):
    archive, pg_wal = dirs
    segment(archive, size=SEG - 1)
    result = restore(*opts(archive, "--retries", "1"), SEGMENT, pg_wal / "X")
    assert result.returncode == 1
    assert not (pg_wal / "X").exists()


def test_restore_max_wait_gives_up_with_exit_1(dirs):
    archive, pg_wal = dirs
    result, elapsed = timed_restore(
        *opts(archive, "--wait", "--max-wait", "0.6"), SEGMENT, pg_wal / "X"
    )
    assert result.returncode == 1
    assert 0.6 <= elapsed < 3
    assert "gave up" in result.stderr


def test_restore_fast_trigger_fails_over_at_once_even_with_segment_ready(dirs):
    archive, pg_wal = dirs
    segment(archive)
    trigger = archive.parent / "trigger"
    trigger.write_text("fast\n")
    result, elapsed = timed_restore(
        *opts(archive, "--wait", "--trigger", trigger), SEGMENT, pg_wal / "X"
    )
    assert result.returncode == 1
    assert elapsed < 1.0
    assert "fast failover" in result.stderr
    assert not (pg_wal / "X").exists()


@pytest.mark.parametrize("content", ["smart", "", "  SMART\n"])
def test_restore_smart_trigger_delivers_archived_segments_then_fails_over(dirs, content):
    archive, pg_wal = dirs
    segment(archive)
    trigger = archive.parent / "trigger"
    trigger.write_text(content)
    args = opts(archive, "--wait", "--trigger", str(trigger))
    delivered = restore(*args, SEGMENT, pg_wal / "X")
    assert delivered.returncode == 0, delivered.stderr
    assert (pg_wal / "X").stat().st_size == SEG
    nxt, elapsed = timed_restore(*args, "000000010000000000000006", pg_wal / "Y")
    assert nxt.returncode == 1
    assert elapsed < 1.0
    assert "smart failover" in nxt.stderr


def test_restore_smart_trigger_waits_for_a_partly_copied_segment(dirs):
    archive, pg_wal = dirs
    segment(archive, size=100)
    trigger = archive.parent / "trigger"
    trigger.write_text("smart")
    writer = later(0.5, lambda: segment(archive))
    args = opts(archive, "--wait", "--sleep", "0.05", "--trigger", str(trigger), "--max-wait", "10")
    result = restore(*args, SEGMENT, pg_wal / "X")
    writer.join()
    assert result.returncode == 0, result.stderr
    assert (pg_wal / "X").stat().st_size == SEG


def test_restore_trigger_created_while_waiting_ends_the_wait(dirs):
    archive, pg_wal = dirs
    trigger = archive.parent / "trigger"
    toucher = later(0.6, lambda: trigger.write_text(""))
    args = opts(archive, "--wait", "--sleep", "0.05", "--trigger", str(trigger))
    result, elapsed = timed_restore(*args, SEGMENT, pg_wal / "X")
    toucher.join()
    assert result.returncode == 1
    assert 0.5 < elapsed < 3


def test_restore_cleanup_keeps_everything_from_restartfile_on(dirs):
    archive, pg_wal = dirs
    names = {
        "000000010000000000000001": False,
        "000000010000000000000002": False,
        "000000010000000000000002.partial": False,
        "000000010000000000000003": True,  # %r itself is still needed
        "000000010000000000000004": True,
        "000000020000000000000002": False,  # older, on another timeline
        "000000020000000000000004": True,
        "00000002.history": True,
        "000000010000000000000002.00000028.backup": True,
        "README": True,
    }
    for name in names:
        segment(archive, name)
    result = restore(
        *opts(archive, "--cleanup"),
        "000000010000000000000004",
        pg_wal / "X",
        "000000010000000000000003",
    )
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(archive)) == sorted(n for n, kept in names.items() if kept)


def test_restore_cleanup_does_nothing_when_restore_fails(dirs):
    archive, pg_wal = dirs
    old = segment(archive, "000000010000000000000001")
    result = restore(*opts(archive, "--cleanup"), SEGMENT, pg_wal / "X", "000000010000000000000004")
    assert result.returncode == 1
    assert old.exists()


def test_restore_retries_a_failing_copy_then_exits_1(dirs):
    archive, pg_wal = dirs
    (archive / "00000003.history").mkdir()  # present, but cannot be read as a file
    result, elapsed = timed_restore(
        *opts(archive, "--retries", "3", "--sleep", "0.2"), "00000003.history", pg_wal / "X"
    )
    assert result.returncode == 1
    assert "after 3 attempts" in result.stderr
    assert elapsed >= 0.4


@pytest.mark.parametrize(
    "args",
    [
        [],
        [SEGMENT, "pg_wal/X"],  # no --archive
        ["--archive"],
        ["--archive", "A", SEGMENT],
        ["--archive", "A", "--sleep", "soon", SEGMENT, "X"],
        ["--archive", "A", "--frobnicate", SEGMENT, "X"],
        ["--archive", "A", "../etc/passwd", "X"],
        ["--archive", "A", "--cleanup", SEGMENT, "X"],  # --cleanup without %r
    ],
)
def test_restore_bad_arguments_exit_2(args, tmp_path):
    result = restore(*[str(tmp_path / a) if a == "A" else a for a in args])
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_restore_missing_archive_directory_exits_2_not_126(tmp_path):
    result = restore("--archive", tmp_path / "nowhere", SEGMENT, tmp_path / "X")
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_restore_help_exits_0():
    result = restore("--help")
    assert result.returncode == 0
    assert "--max-wait" in result.stdout


def test_restore_runs_as_server_os_user_from_the_installed_tools(postgres_dir: Path):
    archive, pg_wal = postgres_dir / "archive", postgres_dir / "pg_wal"
    user = server_os_user()
    for d in (archive, pg_wal):
        LOCAL.make_dir(d, owner=user, mode=0o755)
    tools = install_tools(LOCAL, PurePosixPath(postgres_dir / "tools"), SERVER_PYTHON)
    segment(archive)
    argv = [SERVER_PYTHON, "-I", "-S", str(tools.restore_script), *opts(archive)]
    result = LOCAL.run([*argv, SEGMENT, str(pg_wal / "X")], user=user, check=False)
    assert result.returncode == 0, result.stderr
    assert (pg_wal / "X").stat().st_size == SEG
    absent = LOCAL.run(
        [*argv, "000000010000000000000099", str(pg_wal / "Y")], user=user, check=False
    )
    assert absent.returncode == 1


def imported_modules(*args: str) -> set[str]:
    result = LOCAL.run([SERVER_PYTHON, "-I", "-S", "-X", "importtime", *args], check=False)
    return {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}


def test_restore_imports_nothing_beyond_a_bare_interpreter():
    bare = imported_modules("-c", "pass")
    extra = imported_modules(wal_restore.__file__, "--help") - bare
    allowed = {"os", "stat", "_stat", "posixpath", "genericpath", "_collections_abc", "time"}
    assert extra <= allowed, f"start-up cost: the restore command imports {sorted(extra)}"


# ----- catch-up: segments staged ahead by a background child during recovery

STAGING = "runbook-restore-staging"


@pytest.fixture
def recovering(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """An archive and a data directory in recovery (standby.signal): the prefetcher runs."""
    archive, datadir = tmp_path / "archive", tmp_path / "data"
    archive.mkdir()
    (datadir / "pg_wal").mkdir(parents=True)
    signal = datadir / "standby.signal"
    signal.touch()
    yield archive, datadir / "pg_wal"
    signal.unlink(missing_ok=True)  # recovery ends: the prefetcher cleans up and exits
    wait_for(lambda: not (datadir / "pg_wal" / STAGING / "prefetch.pid").exists())


def wait_for(condition, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return value


def seg_name(number: int, timeline: int = 1) -> str:
    return f"{timeline:08X}{0:08X}{number:08X}"


def archive_segments(archive: Path, numbers, timeline: int = 1) -> None:
    for n in numbers:
        name = seg_name(n, timeline)
        segment(archive, name, fill=name.encode())


def staged(pg_wal: Path) -> set[str]:
    directory = pg_wal / STAGING
    return (
        {p.name for p in directory.iterdir() if len(p.name) == 24} if directory.exists() else set()
    )


def names(numbers, timeline: int = 1) -> set[str]:
    return {seg_name(n, timeline) for n in numbers}


def test_catch_up_stages_the_next_segments_and_serves_them_without_copying(recovering):
    archive, pg_wal = recovering
    archive_segments(archive, range(1, 11))
    args = opts(archive, "--prefetch", "3", "--verbose")
    first = restore(*args, seg_name(1), pg_wal / "RECOVERYXLOG")
    assert first.returncode == 0, first.stderr
    wait_for(lambda: staged(pg_wal) == names([2, 3, 4]))
    (pg_wal / "RECOVERYXLOG").unlink()
    second = restore(*args, seg_name(2), pg_wal / "RECOVERYXLOG")
    assert second.returncode == 0, second.stderr
    assert "(staged)" in second.stderr
    assert (pg_wal / "RECOVERYXLOG").read_bytes() == (archive / seg_name(2)).read_bytes()
    wait_for(lambda: staged(pg_wal) == names([3, 4, 5]))  # the window follows the requests
    assert oct((pg_wal / STAGING).stat().st_mode & 0o777) == "0o700"


def test_pg_standby_mode_serves_staged_segments_too(recovering):
    archive, pg_wal = recovering
    archive_segments(archive, range(1, 5))
    args = opts(archive, "--wait", "--prefetch", "2", "--verbose")
    assert restore(*args, seg_name(1), pg_wal / "X").returncode == 0
    wait_for(lambda: staged(pg_wal) == names([2, 3]))
    result = restore(*args, seg_name(2), pg_wal / "Y")
    assert result.returncode == 0, result.stderr
    assert "(staged)" in result.stderr
    assert (pg_wal / "Y").read_bytes() == (archive / seg_name(2)).read_bytes()


def test_staging_holds_at_most_prefetch_segments_whatever_the_backlog(recovering):
    archive, pg_wal = recovering
    archive_segments(archive, range(1, 41))
    args = opts(archive, "--prefetch", "4")
    seen = []
    for n in range(1, 21):
        dest = pg_wal / f"R{n}"
        assert restore(*args, seg_name(n), dest).returncode == 0
        assert dest.read_bytes() == (archive / seg_name(n)).read_bytes()
        seen.append(staged(pg_wal))
    wait_for(lambda: staged(pg_wal) == names(range(21, 25)))
    assert max(len(s) for s in seen) <= 4
    sizes = [p.stat().st_size for p in (pg_wal / STAGING).iterdir() if len(p.name) == 24]
    assert sum(sizes) <= 4 * SEG
    assert not [p for p in (pg_wal / STAGING).iterdir() if p.name.endswith(".tmp")]


def test_a_partial_or_changed_staged_file_is_never_served(dirs):
    archive, pg_wal = dirs  # not in recovery: no prefetcher, the staged files are planted
    archive_segments(archive, [5, 6, 7])
    staging = pg_wal / STAGING
    staging.mkdir()
    (staging / seg_name(5)).write_bytes(b"x" * (SEG // 2))  # partial
    (staging / seg_name(6)).write_bytes(b"x" * SEG)  # full size, other content
    (staging / f".{seg_name(7)}.99999.tmp").write_bytes(b"x" * SEG)  # a copy in progress
    for n in (5, 6, 7):
        result = restore(*opts(archive), seg_name(n), pg_wal / f"R{n}")
        assert result.returncode == 0, result.stderr
        assert (pg_wal / f"R{n}").read_bytes() == (archive / seg_name(n)).read_bytes()
    assert staged(pg_wal) == set(), "a staged file that does not match is removed"


def test_a_staged_file_never_overwrites_an_existing_destination(recovering):
    archive, pg_wal = recovering
    archive_segments(archive, range(1, 4))
    args = opts(archive, "--prefetch", "2")
    assert restore(*args, seg_name(1), pg_wal / "A").returncode == 0
    wait_for(lambda: staged(pg_wal) == names([2, 3]))
    (pg_wal / "B").write_bytes(b"old")
    result = restore(*args, seg_name(2), pg_wal / "B")
    assert result.returncode == 1
    assert "refusing to overwrite" in result.stderr
    assert (pg_wal / "B").read_bytes() == b"old"


def test_after_a_timeline_switch_only_the_new_timeline_is_served_and_staged(recovering):
    archive, pg_wal = recovering
    archive_segments(archive, range(1, 9), timeline=1)
    archive_segments(archive, range(5, 9), timeline=2)  # the primary was promoted in segment 5
    (archive / "00000002.history").write_text("1\t0/5000000\tno recovery target specified\n")
    args = opts(archive, "--prefetch", "3")
    assert restore(*args, seg_name(4, 1), pg_wal / "A").returncode == 0
    wait_for(lambda: staged(pg_wal) == names([5, 6, 7], timeline=1))
    history = restore(*args, "00000002.history", pg_wal / "H")
    assert history.returncode == 0, history.stderr
    result = restore(*args, seg_name(5, 2), pg_wal / "B")
    assert result.returncode == 0, result.stderr
    assert (pg_wal / "B").read_bytes() == (archive / seg_name(5, 2)).read_bytes()
    wait_for(lambda: staged(pg_wal) == names([6, 7, 8], timeline=2))


def test_staged_segments_are_removed_when_recovery_ends(recovering):
    archive, pg_wal = recovering
    archive_segments(archive, range(1, 6))
    assert restore(*opts(archive, "--prefetch", "3"), seg_name(1), pg_wal / "A").returncode == 0
    wait_for(lambda: staged(pg_wal) == names([2, 3, 4]))
    (pg_wal.parent / "standby.signal").unlink()  # promoted
    wait_for(lambda: not staged(pg_wal) and not (pg_wal / STAGING / "prefetch.pid").exists())


def test_no_prefetch_when_disabled_or_caught_up(recovering):
    archive, pg_wal = recovering
    archive_segments(archive, range(1, 4))
    assert restore(*opts(archive, "--prefetch", "0"), seg_name(1), pg_wal / "A").returncode == 0
    assert not (pg_wal / STAGING).exists()
    assert restore(*opts(archive), seg_name(3), pg_wal / "B").returncode == 0  # the last one
    time.sleep(0.2)
    assert staged(pg_wal) == set()
    assert not (pg_wal / STAGING / "prefetch.pid").exists()


def test_a_segment_being_staged_is_waited_for_not_copied_twice(dirs):
    """The request catches up with the prefetcher while it copies that very segment: it waits
    for the staged file (whole, renamed into place) instead of copying the archive's again."""
    archive, pg_wal = dirs
    archive_segments(archive, [5])
    staging = pg_wal / STAGING
    staging.mkdir()
    (staging / "prefetch.pid").write_text(str(os.getpid()))  # a live prefetcher: this test
    tmp = staging / f".{seg_name(5)}.{os.getpid()}.tmp"
    tmp.write_bytes(b"half a copy")

    def staged_now() -> None:
        tmp.write_bytes((archive / seg_name(5)).read_bytes())
        info = (archive / seg_name(5)).stat()
        os.utime(tmp, ns=(info.st_atime_ns, info.st_mtime_ns))
        tmp.rename(staging / seg_name(5))

    thread = later(0.2, staged_now)
    result = restore(*opts(archive, "--verbose"), seg_name(5), pg_wal / "R")
    thread.join()
    assert result.returncode == 0, result.stderr
    assert "(staged)" in result.stderr
    assert (pg_wal / "R").read_bytes() == (archive / seg_name(5)).read_bytes()
    assert staged(pg_wal) == set()


def test_a_killed_prefetcher_left_a_zombie_is_not_waited_for(dirs):
    """A prefetcher killed mid-copy leaves its lock and temporary file; until whoever adopted it
    reaps it, it is a zombie, which kill(pid, 0) still finds: it counts as gone, so the request
    copies the segment at once instead of waiting for a copy that never ends."""
    archive, pg_wal = dirs
    archive_segments(archive, [5])
    staging = pg_wal / STAGING
    staging.mkdir()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        wait_for(lambda: Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z")
        (staging / "prefetch.pid").write_text(str(pid))
        (staging / f".{seg_name(5)}.{pid}.tmp").write_bytes(b"half a copy")
        assert wal_restore.live_prefetcher(str(staging)) is None
        result = restore(*opts(archive), seg_name(5), pg_wal / "R")
        assert result.returncode == 0, result.stderr
        assert (pg_wal / "R").read_bytes() == (archive / seg_name(5)).read_bytes()
    finally:
        os.waitpid(pid, 0)
    assert wal_restore.live_prefetcher(str(staging)) is None
    (staging / "prefetch.pid").write_text(str(os.getpid()))
    assert wal_restore.live_prefetcher(str(staging)) == os.getpid()
