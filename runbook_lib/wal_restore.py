"""runbook-restore-wal: a restore_command for WAL-archiving standbys (successor of pg_standby).

    restore_command = '/bin/sh TOOLS/runbook-restore-wal --archive DIR [opts] %f %p %r'

(that is the shell front door, wal_restore_front.sh, which hands over segments already staged
and runs this module, `python3 -I -S TOOLS/runbook-restore-wal.py`, for everything else)

Copies %f from the archive to %p: never over an existing file, atomically (a temporary file in
%p's directory, then a hard link that fails if %p appeared meanwhile). `.history` and `.backup`
requests are answered at once. Without --wait (standby mode) an absent file is "not found" at
once. With --wait (pg_standby mode) it sleeps and re-checks until the file is there at full
segment size, the trigger file appears, or --max-wait passes. Trigger content `fast` ends
recovery at once; empty or `smart` first delivers what the archive already holds.

Catch-up (both modes): after restoring a segment during recovery (standby.signal or
recovery.signal next to %p's directory), a detached child process copies the next --prefetch
segments of the same timeline from the archive into a private staging directory inside %p's
directory (pg_wal: the same filesystem, and base backups skip its contents), like
`barman-wal-restore --parallel`. A later request for a staged segment only checks it and links
it into place: same size as the archive's file, same modification time (copied from the
archive's file when staged), full segment size. Anything else is discarded and copied from the
archive as usual. The shell front door does the same hand-over without starting Python
(checking the time to the nanosecond, not the size: only whole files are renamed into the
staging directory); the prefetcher notices which segments vanished, moves its window on, and
cleans the archive (--cleanup) up to the restart files the front door leaves as markers. A
request for the very segment the prefetcher is copying waits for it (at most STAGED_WAIT_S)
instead of copying it a second time. Staged files are written under a temporary
name and renamed when complete; their number is bounded by --prefetch, the space by the same
and the free space of the filesystem; files outside the window after the latest request
(older, or another timeline) are removed, and all of them when recovery ends or nothing is
requested for a while.

Exit status: 0 restored, 1 not found / failover / copy failed, 2 bad arguments. Never 126 or more
(that would abort recovery). Messages go to stderr, which lands in the server log.

Standard library only, and only modules built into the interpreter (posix, sys, time): the
server runs this as its own OS user with `python3 -I -S`, where every import costs start-up time
(`os` alone, with posixpath and collections.abc, costs about 1 ms: a sixth of a `cp`), and it
exits without the interpreter's teardown. The interpreter's own start (about 5 ms of CPU here)
is the floor of a call: a `cp` of a 16 MB segment costs about as much.
"""

import posix
import sys
import time

PROG = "runbook-restore-wal"
EXIT_RESTORED, EXIT_NOT_FOUND, EXIT_USAGE = 0, 1, 2
DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
HEX = frozenset("0123456789ABCDEF")
DEFAULT_PREFETCH = 8
STAGING = "runbook-restore-staging"
LOCK, LATEST = "prefetch.pid", "latest"  # in the staging directory
RECOVERY_SIGNALS = ("standby.signal", "recovery.signal")
POLL_S = 0.02  # the prefetcher looks for consumed segments this often
LINGER_S = 30.0  # staged segments nobody asks for are removed after this long
STALE_LOCK_S = 10.0  # a prefetcher refreshes its lock file far more often than this
RESERVE_FRACTION = 0.05  # never fill the staging filesystem beyond 95 %
STAGED_WAIT_S = 2.0  # a request waits this long at most for the segment being staged
STAGED_POLL_S = 0.001
CLEANUP_MARK = "cleanup-"  # + a restart file: left in the staging directory by the shell front end
CLEANUP_EVERY_S = 1.0  # the prefetcher cleans the archive as marked at most this often

USAGE = f"""usage: {PROG} --archive DIR [--wait] [--trigger FILE] [--sleep S] [--max-wait S]
       [--retries N] [--cleanup] [--segment-size BYTES] [--prefetch N] [--staging DIR]
       [--verbose] WALFILE DEST [RESTARTFILE]

Restore WALFILE (%f) from the archive DIR into DEST (%p). With --cleanup, remove archived
segments older than RESTARTFILE (%r) after a successful restore (only for an archive that serves
this standby alone).

  --archive DIR        the WAL archive (required)
  --wait               pg_standby mode: wait for an absent segment instead of failing at once
  --trigger FILE       with --wait: stop waiting when FILE exists (content 'fast': at once;
                       empty or 'smart': after restoring every segment already archived)
  --sleep S            seconds between checks while waiting (default 0.1)
  --max-wait S         give up waiting after S seconds (default 0: wait until triggered)
  --retries N          attempts for a copy that fails (default 3)
  --cleanup            remove archived segments older than RESTARTFILE after restoring
  --segment-size BYTES WAL segment size (default 16777216)
  --prefetch N         during recovery, stage up to N following segments in the background
                       (default 8; 0: never)
  --staging DIR        where staged segments wait (default: DEST's directory/{STAGING});
                       must be on DEST's filesystem
  --verbose            report every restore, not only failures

exit status: 0 restored, 1 not found or failover, 2 bad arguments
"""


# ----- paths, without importing os and posixpath


def join(directory, name):
    if not directory:
        return name
    return directory + name if directory.endswith("/") else directory + "/" + name


def dirname(path):
    head = path[: path.rfind("/") + 1]
    return head.rstrip("/") or head


def basename(path):
    return path[path.rfind("/") + 1 :]


def abspath(path):
    return path if path.startswith("/") else join(posix.getcwd(), path)


def exists(path, stat=posix.stat):
    try:
        stat(path)
    except (OSError, ValueError):
        return False
    return True


def lexists(path):
    return exists(path, posix.lstat)


def isdir(path):
    try:
        return posix.stat(path).st_mode & 0o170000 == 0o040000
    except (OSError, ValueError):
        return False


def stat_or_none(path):
    try:
        return posix.stat(path)
    except OSError:
        return None


def say(message):
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.stderr.flush()


class Usage(Exception):
    pass


def parse_args(argv):
    opts = {
        "archive": None,
        "wait": False,
        "trigger": None,
        "sleep": 0.1,
        "max_wait": 0.0,
        "retries": 3,
        "cleanup": False,
        "segment_size": DEFAULT_SEGMENT_SIZE,
        "prefetch": DEFAULT_PREFETCH,
        "staging": None,
        "verbose": False,
    }
    valued = {
        "--archive": ("archive", str),
        "--trigger": ("trigger", str),
        "--sleep": ("sleep", float),
        "--max-wait": ("max_wait", float),
        "--retries": ("retries", int),
        "--segment-size": ("segment_size", int),
        "--prefetch": ("prefetch", int),
        "--staging": ("staging", str),
    }
    flags = {"--wait": "wait", "--cleanup": "cleanup", "--verbose": "verbose"}
    positional = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg in ("-h", "--help"):
            sys.stdout.write(USAGE)
            sys.exit(EXIT_RESTORED)
        if arg == "--":
            positional.extend(argv[i:])
            break
        if not arg.startswith("--") or arg == "-":
            positional.append(arg)
            continue
        name, eq, value = arg.partition("=")
        if name in flags and not eq:
            opts[flags[name]] = True
        elif name in valued:
            if not eq:
                if i >= len(argv):
                    raise Usage(f"option {name} needs a value")
                value = argv[i]
                i += 1
            key, kind = valued[name]
            try:
                opts[key] = kind(value)
            except ValueError:
                raise Usage(f"option {name}: invalid value {value!r}") from None
        else:
            raise Usage(f"unknown option {arg}")
    if opts["archive"] is None:
        raise Usage("--archive DIR is required")
    if not 2 <= len(positional) <= 3:
        raise Usage(f"expected WALFILE DEST [RESTARTFILE], got {len(positional)} arguments")
    if opts["sleep"] <= 0 or opts["max_wait"] < 0 or opts["retries"] < 1:
        raise Usage("--sleep must be > 0, --max-wait >= 0 and --retries >= 1")
    if opts["segment_size"] <= 0:
        raise Usage("--segment-size must be positive")
    if opts["prefetch"] < 0:
        raise Usage("--prefetch must be >= 0")
    walfile = positional[0]
    if not walfile or "/" in walfile or walfile in (".", ".."):
        raise Usage(f"WALFILE must be a plain file name, got {walfile!r}")
    opts["walfile"], opts["dest"] = walfile, positional[1]
    opts["restartfile"] = positional[2] if len(positional) == 3 else None
    if opts["cleanup"] and not opts["restartfile"]:
        raise Usage("--cleanup needs RESTARTFILE (%r)")
    if opts["staging"] is None:
        opts["staging"] = join(dirname(opts["dest"]) or ".", STAGING)
    return opts


def is_segment_name(name):
    return len(name) == 24 and all(c in HEX for c in name)


def is_immediate(name):
    """Requests answered at once, present or not: timeline history and backup history files."""
    return name.endswith(".history") or name.endswith(".backup")


def file_size(path):
    try:
        st = posix.stat(path)
    except FileNotFoundError:
        return None
    return st.st_size


def copy_fd(fdin, fdout, size):
    """Copy size bytes between file descriptors, kernel-side when possible."""
    copied = 0
    try:
        while copied < size:
            n = posix.copy_file_range(fdin, fdout, size - copied)
            if n == 0:
                break
            copied += n
    except OSError:  # no copy_file_range for these files (old kernel, odd filesystem)
        posix.lseek(fdin, copied, 0)
        posix.lseek(fdout, copied, 0)
        while copied < size:
            chunk = posix.read(fdin, min(1 << 20, size - copied))
            if not chunk:
                break
            posix.write(fdout, chunk)
            copied += len(chunk)
    return copied


def same_content(a, b):
    if posix.stat(a).st_size != posix.stat(b).st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x = fa.read(1 << 20)
            if x != fb.read(1 << 20):
                return False
            if not x:
                return True


def deliver(src, dest, expected_size):
    """Copy src to dest through a temporary file next to dest; never replace an existing dest.

    Returns None on success, else a message. expected_size: required size (None: any)."""
    tmp = join(dirname(dest) or ".", f".{basename(dest)}.{posix.getpid()}.tmp")
    fdin = posix.open(src, posix.O_RDONLY)
    try:
        size = posix.fstat(fdin).st_size
        if expected_size is not None and size != expected_size:
            return f"{src} is {size} bytes, not {expected_size}: still being copied?"
        fdout = posix.open(tmp, posix.O_WRONLY | posix.O_CREAT | posix.O_EXCL, 0o600)
        try:
            copied = copy_fd(fdin, fdout, size)
        finally:
            posix.close(fdout)
    finally:
        posix.close(fdin)
    try:
        if copied != size:
            return f"copied {copied} of {size} bytes of {src}"
        try:
            posix.link(tmp, dest)  # fails if dest exists: never overwrite
        except FileExistsError:
            return None if same_content(src, dest) else f"{dest} exists with other content"
        except OSError:  # a filesystem without hard links
            if exists(dest):
                return None if same_content(src, dest) else f"{dest} exists with other content"
            posix.rename(tmp, dest)
        return None
    finally:
        try:  # noqa: SIM105 (contextlib would cost start-up time)
            posix.unlink(tmp)
        except FileNotFoundError:
            pass


# ----- staging: segments copied ahead by a background child, taken by later calls


def next_segment(name, segment_size):
    """The segment after `name` on the same timeline."""
    per_id = 0x100000000 // segment_size
    log, seg = int(name[8:16], 16), int(name[16:24], 16) + 1
    if seg >= per_id:
        log, seg = log + 1, 0
    return f"{name[:8]}{log:08X}{seg:08X}"


def take_staged(opts, src, expected_size):
    """Link the staged copy of the requested segment to DEST when it is complete and still
    matches the archive's file (size and modification time); remove it either way."""
    staged = join(opts["staging"], opts["walfile"])
    st = stat_or_none(staged)
    if st is None and wait_for_staging(opts["staging"], opts["walfile"]):
        st = stat_or_none(staged)
    if st is None:
        return False
    taken = False
    try:
        archived = posix.stat(src)
        same = (st.st_size, st.st_mtime_ns) == (archived.st_size, archived.st_mtime_ns)
        if same and st.st_size == expected_size:
            posix.link(staged, opts["dest"])  # fails if DEST exists: never overwrite
            taken = True
        elif opts["verbose"]:
            say(f"discarding staged {opts['walfile']}: it differs from the archive's file")
    except OSError:
        pass  # DEST appeared, or the archive's file is gone: the usual path decides
    try:  # noqa: SIM105 (contextlib would cost start-up time)
        posix.unlink(staged)
    except OSError:
        pass
    if taken and opts["verbose"]:
        say(f"restored {opts['walfile']} (staged)")
    return taken


def wait_for_staging(staging, name):
    """When the live prefetcher is copying `name` right now, wait (at most STAGED_WAIT_S) until
    it is staged: cheaper than copying it a second time. True when it is staged."""
    pid = live_prefetcher(staging)
    if pid is None:
        return False
    tmp, staged = join(staging, f".{name}.{pid}.tmp"), join(staging, name)
    deadline = time.monotonic() + STAGED_WAIT_S
    while exists(tmp) and not exists(staged) and time.monotonic() < deadline:
        time.sleep(STAGED_POLL_S)
    return exists(staged)


def data_directory(dest):
    return dirname(abspath(dirname(dest) or "."))


def in_recovery(datadir):
    return any(exists(join(datadir, f)) for f in RECOVERY_SIGNALS)


def write_latest(staging, name):
    tmp = join(staging, f".{LATEST}.{posix.getpid()}")
    fd = posix.open(tmp, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC, 0o600)
    try:
        posix.write(fd, name.encode())
    finally:
        posix.close(fd)
    posix.replace(tmp, join(staging, LATEST))


def read_latest(staging):
    try:
        with open(join(staging, LATEST)) as f:
            name = f.read(64).strip()
    except OSError:
        return None
    return name if is_segment_name(name) else None


def live_prefetcher(staging):
    """The pid of the prefetcher staging into this directory, or None when none is alive."""
    path = join(staging, LOCK)
    try:
        age = time.time() - posix.stat(path).st_mtime
        with open(path) as f:
            pid = int(f.read(32) or "0")
    except (OSError, ValueError):
        return None
    if age > STALE_LOCK_S or pid <= 0:
        return None
    return pid if alive(pid) else None


def alive(pid):
    """The process exists and is not a zombie (a killed prefetcher stays one until whoever
    adopted it reaps it, which some init processes never do)."""
    try:
        posix.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read(512)
    except OSError:
        return True  # no /proc to ask: kill() said it exists
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state not in (b"Z", b"X")


def take_lock(staging):
    path = join(staging, LOCK)
    for _ in range(2):
        try:
            fd = posix.open(path, posix.O_WRONLY | posix.O_CREAT | posix.O_EXCL, 0o600)
        except FileExistsError:
            if live_prefetcher(staging):
                return False
            try:  # noqa: SIM105
                posix.unlink(path)  # left by a prefetcher that died
            except FileNotFoundError:
                pass
            continue
        posix.write(fd, str(posix.getpid()).encode())
        posix.close(fd)
        return True
    return False


def start_prefetch(opts):
    """After a segment was restored during recovery: note it as the latest request and make sure
    a prefetcher is staging what follows it (a detached child; this process returns at once)."""
    name, staging = opts["walfile"], opts["staging"]
    if not opts["prefetch"] or not is_segment_name(name):
        return
    if not in_recovery(data_directory(opts["dest"])):
        return
    try:  # noqa: SIM105
        posix.mkdir(staging, 0o700)
    except FileExistsError:
        pass
    write_latest(staging, name)
    wanted = window(name, opts["prefetch"], opts["segment_size"])
    if file_size(join(opts["archive"], wanted[0])) is None:
        # caught up: nothing to stage; drop what no later request can take (other timeline)
        remove_files(staging, staged_names(staging) - set(wanted))
        return
    if live_prefetcher(staging):
        return  # it reads the latest request and follows it
    if posix.fork() == 0:  # the child: detach from the caller's output and stage
        try:
            null = posix.open("/dev/null", posix.O_RDWR)
            for fd in (0, 1, 2):
                posix.dup2(null, fd)
            posix.closerange(3, 1024)  # nothing of the server's stays open in a lingering child
            prefetch(opts)
        finally:
            posix._exit(0)


def listing(staging):
    try:
        return posix.listdir(staging)
    except OSError:
        return []


def segments(entries):
    return {n for n in entries if is_segment_name(n)}


def staged_names(staging):
    return segments(listing(staging))


def newest_taken(latest, vanished):
    """The latest request, knowing that the `vanished` staged segments were handed over."""
    taken = [n for n in vanished if n[:8] == latest[:8] and n > latest]
    return max(taken) if taken else latest


def clean_as_marked(opts, entries):
    """Clean the archive up to the newest restart file the shell front end left as a marker when
    it handed over a staged segment with --cleanup; then drop those markers."""
    marks = [n for n in entries if n.startswith(CLEANUP_MARK)]
    if not marks:
        return
    cleanup(opts["archive"], max((m[len(CLEANUP_MARK) :] for m in marks), key=lambda n: n[8:]))
    remove_files(opts["staging"], marks)


def window(latest, count, segment_size):
    names = []
    for _ in range(count):
        latest = next_segment(latest, segment_size)
        names.append(latest)
    return names


def remove_files(staging, names):
    for name in names:
        try:  # noqa: SIM105
            posix.unlink(join(staging, name))
        except OSError:
            pass


def room_for(staging, size, count):
    """Staging one more segment leaves the filesystem room: the whole window and 5 %."""
    st = posix.statvfs(staging)
    free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    return free - size >= max(size * count, total * RESERVE_FRACTION)


def stage(opts, name):
    """Copy one segment into the staging directory under a temporary name, give it the archive
    file's modification time, then rename it: a staged name only ever holds a whole file."""
    src = join(opts["archive"], name)
    dest = join(opts["staging"], name)
    tmp = join(opts["staging"], f".{name}.{posix.getpid()}.tmp")
    fdin = posix.open(src, posix.O_RDONLY)
    try:
        st = posix.fstat(fdin)
        if st.st_size != opts["segment_size"]:
            return False  # still being archived
        fdout = posix.open(tmp, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC, 0o600)
        try:
            copied = copy_fd(fdin, fdout, st.st_size)
        finally:
            posix.close(fdout)
    finally:
        posix.close(fdin)
    try:
        if copied != st.st_size:
            return False
        posix.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        posix.rename(tmp, dest)
        return True
    finally:
        remove_files(opts["staging"], [basename(tmp)] if exists(tmp) else [])


def prefetch(opts):
    """Keep the --prefetch segments after the latest request staged, following the requests,
    until nothing is left to stage or to hand out; then remove what nobody asked for."""
    staging, size, count = opts["staging"], opts["segment_size"], opts["prefetch"]
    datadir = data_directory(opts["dest"])
    if not take_lock(staging):
        return
    lock = join(staging, LOCK)
    try:
        for leftover in listing(staging):  # temporary files of a prefetcher that died
            if leftover.endswith(".tmp"):
                remove_files(staging, [leftover])
        requested = latest = None
        since = cleaned = time.monotonic()
        kept = set()  # the staged segments left in place at the last look
        while in_recovery(datadir):
            posix.utime(lock)
            noted = read_latest(staging)
            if noted is None:
                break
            entries = listing(staging)
            staged = segments(entries)
            if noted != requested:  # a request the Python command served (or a new timeline)
                newest = requested = noted
            else:  # staged segments that vanished were handed over by the shell front end
                newest = newest_taken(latest, kept - staged)
            if newest != latest:
                latest, since = newest, time.monotonic()
            if time.monotonic() - cleaned > CLEANUP_EVERY_S:
                clean_as_marked(opts, entries)
                cleaned = time.monotonic()
            wanted = window(latest, count, size)
            remove_files(staging, staged - set(wanted))
            kept = staged & set(wanted)
            todo = next((n for n in wanted if n not in staged), None)
            ready = todo and file_size(join(opts["archive"], todo)) == size
            if ready and room_for(staging, size, count) and stage(opts, todo):
                kept.add(todo)
                continue
            if not kept or time.monotonic() - since > LINGER_S:
                break
            time.sleep(POLL_S)
        remove_files(staging, staged_names(staging))
        clean_as_marked(opts, listing(staging))
    finally:
        remove_files(staging, [LOCK])


def restore(opts, src, expected_size):
    """Copy with retries; return an exit status."""
    dest = opts["dest"]
    if lexists(dest):
        if same_content(src, dest):
            say(f"{dest} already holds {opts['walfile']}; nothing to do")
            return EXIT_RESTORED
        say(f"refusing to overwrite {dest}: it exists with content other than {src}")
        return EXIT_NOT_FOUND
    if expected_size is not None and take_staged(opts, src, expected_size):
        return EXIT_RESTORED
    problem = None
    for attempt in range(1, opts["retries"] + 1):
        try:
            problem = deliver(src, dest, expected_size)
        except OSError as exc:
            problem = f"{exc.strerror or exc} ({exc.filename or src})"
        if problem is None:
            if opts["verbose"]:
                say(f"restored {opts['walfile']}")
            return EXIT_RESTORED
        if attempt < opts["retries"]:
            time.sleep(opts["sleep"])
    say(f"could not restore {opts['walfile']} after {opts['retries']} attempts: {problem}")
    return EXIT_NOT_FOUND


def read_trigger(path):
    """None: no trigger; else 'fast' or 'smart'."""
    if not path:
        return None
    try:
        with open(path) as f:
            content = f.read(64).strip().lower()
    except FileNotFoundError:
        return None
    except OSError as exc:
        say(f"trigger file {path} exists but cannot be read ({exc.strerror}): failing over (smart)")
        return "smart"
    if content in ("", "smart", "fast"):
        return content or "smart"
    say(f"trigger file {path} holds {content!r}, not 'fast' or 'smart': assuming smart")
    return "smart"


def cleanup(archive, restartfile):
    """Remove archived segments (and .partial ones) older than restartfile; keep the rest."""
    if not is_segment_name(restartfile):
        say(f"not cleaning up: {restartfile!r} is not a WAL segment name")
        return
    keep_from = restartfile[8:]
    removed = 0
    for name in posix.listdir(archive):
        base = name[:-8] if name.endswith(".partial") else name
        if is_segment_name(base) and base[8:] < keep_from:
            try:
                posix.unlink(join(archive, name))
                removed += 1
            except FileNotFoundError:
                pass
            except OSError as exc:
                say(f"cleanup: cannot remove {name}: {exc.strerror}")
    return removed


def run(opts):
    archive = opts["archive"]
    if not isdir(archive):
        say(f"archive directory {archive} does not exist or is not a directory")
        return EXIT_USAGE
    name = opts["walfile"]
    src = join(archive, name)
    segment = is_segment_name(name)
    expected = opts["segment_size"] if segment else None

    def ready():
        size = file_size(src)
        return size is not None and (expected is None or size == expected)

    if is_immediate(name) or not opts["wait"]:
        if file_size(src) is None:
            return EXIT_NOT_FOUND  # PostgreSQL asks for absent files all the time: no message
        status = restore(opts, src, expected)
    else:
        status = wait_and_restore(opts, src, ready)
    if status == EXIT_RESTORED and segment:
        try:
            start_prefetch(opts)
        except OSError as exc:  # the segment is restored: staging is only an optimisation
            say(f"not prefetching: {exc.strerror or exc} ({exc.filename or opts['staging']})")
    if status == EXIT_RESTORED and opts["cleanup"]:
        cleanup(archive, opts["restartfile"])
    return status


def wait_and_restore(opts, src, ready):
    name = opts["walfile"]
    started = time.monotonic()
    while True:
        trigger = read_trigger(opts["trigger"])
        if trigger == "fast":
            say(f"fast failover: trigger file {opts['trigger']} found; not restoring {name}")
            return EXIT_NOT_FOUND
        if ready():
            return restore(opts, src, opts["segment_size"] if is_segment_name(name) else None)
        present = file_size(src) is not None
        if trigger == "smart" and not present:
            say(f"smart failover: trigger file {opts['trigger']} found and {name} not archived")
            return EXIT_NOT_FOUND
        waited = time.monotonic() - started
        if opts["max_wait"] and waited >= opts["max_wait"]:
            state = "only partly copied" if present else "not in the archive"
            say(f"gave up after {waited:.1f} s: {name} is {state}")
            return EXIT_NOT_FOUND
        time.sleep(opts["sleep"])


def main(argv=None):
    """The exit status for argv; run as the command (argv None), exit at once with it instead:
    the interpreter's teardown costs about 1 ms, a fifth of copying a segment."""
    status = command(sys.argv[1:] if argv is None else argv)
    if argv is None:
        sys.stdout.flush()
        sys.stderr.flush()
        posix._exit(status)
    return status


def command(argv):
    try:
        opts = parse_args(argv)
    except Usage as exc:
        say(f"error: {exc}")
        sys.stderr.write(USAGE.split("\n\n")[0] + "\n")
        return EXIT_USAGE
    try:
        return run(opts)
    except OSError as exc:
        say(f"error: {exc.strerror or exc} ({exc.filename or opts['archive']})")
        return EXIT_NOT_FOUND
    except Exception as exc:  # never a traceback in the server log, never an exit status >= 126
        say(f"unexpected error: {type(exc).__name__}: {exc}")
        return EXIT_NOT_FOUND


if __name__ == "__main__":
    sys.exit(main())
