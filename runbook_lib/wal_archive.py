"""runbook-archive-wal: an archive_command that copies WAL durably and never overwrites.

    archive_command = 'python3 -I -S runbook-archive-wal.py --archive DIR %p %f'
    archive_command = 'python3 -I -S runbook-archive-wal.py --archive DIR --ssh HOST %p %f'

Copies %p (relative to the data directory) to DIR/%f through a temporary file in DIR: the copy is
fsynced, then hard-linked into place (which fails if DIR/%f appeared meanwhile), then the
directory is fsynced. An existing DIR/%f with identical content is success (the server may
archive the same file twice after a crash); different content is an error.

With --ssh HOST the archive is on another machine, with no shared file system: the segment is
streamed over the system's OpenSSH client (BatchMode, the host key checked, timeouts so that a
cut network fails the command instead of hanging it) to this same program on HOST, run there as
`--receive`, which applies the same rules to DIR on its own disk (like Barman's
barman-wal-archive and `barman put-wal`). `--get` sends one archived file to stdout, for a
restore command on a standby whose archive lives on another host.

The temporary file is removed on every failure path: no space, an I/O error, a short copy, a
broken connection, SIGTERM/SIGINT/SIGHUP. Its name is fixed per segment and host, so a temporary
file left by a process killed with SIGKILL is reused (under a lock) and removed by the next
attempt for that segment, which the server makes after a failure.

Exit status: 0 archived (or already archived), 1 failed, 2 bad arguments. Messages on stderr land
in the server log; pg_stat_archiver counts the failures.

Standard library only, and only modules built into the interpreter (errno, os, sys, _signal):
the server runs this as its own OS user with `python3 -I -S`.
"""

import _signal
import errno
import os
import sys

PROG = "runbook-archive-wal"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SSH_DEFAULTS = (
    "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10",
    "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=2",
)  # fmt: skip
CHUNK = 1 << 20
# copy_file_range is not available here: copy with read and write instead
NO_COPY_FILE_RANGE = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM)

USAGE = f"""usage: {PROG} --archive DIR [--no-fsync] [SSH] WALPATH WALFILE
       {PROG} --archive DIR --ssh HOST [SSH] --fetch WALFILE DEST
       {PROG} --archive DIR [SSH] --cleanup-before WALFILE
       {PROG} --archive DIR [--no-fsync] --receive WALFILE --size BYTES
       {PROG} --archive DIR --get WALFILE

Archive WALPATH (%p) as DIR/WALFILE (%f): fsynced, atomic, never overwriting.

  --archive DIR            the WAL archive (required; on HOST with --ssh)
  --no-fsync               skip fsync (only for throwaway test setups)
  --fetch WALFILE DEST     a restore_command (%f %p): copy WALFILE from the archive on HOST to
                           DEST, atomically and never over an existing DEST (exit 1: not there)
  --cleanup-before WALFILE an archive_cleanup_command (%r): remove archived segments older than
                           WALFILE, as pg_archivecleanup does
  --receive WALFILE        read WALFILE's BYTES bytes from stdin into DIR (far end of --ssh)
  --size BYTES             with --receive: how many bytes to expect (fewer is a failure)
  --get WALFILE            write DIR/WALFILE to stdout (far end of --fetch; exit 1: not there)
  --segment-size BYTES     with --fetch: a segment must have this size (default 16777216)

SSH, when the archive is on another machine (no shared file system):
  --ssh HOST               [user@]host of the archive: the work is done there by this program
  --ssh-option OPT         one more argument for ssh, such as -F/etc/ssh/archive_config
                           (repeatable)
  --ssh-program PATH       the OpenSSH client (default /usr/bin/ssh)
  --remote-program PATH    this program on HOST (default: the same path as here), run there
                           with the same python3 as here
  --ssh-control-dir DIR    share one SSH connection per host between calls (a control master
                           kept 60 s, its socket in DIR: created 0700, ours, at most
                           48 characters); without it every call opens a new connection

exit status: 0 archived or already archived with identical content (fetched, cleaned up),
1 failed or not found, 2 bad arguments
"""


def say(message):
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.stderr.flush()


class Usage(Exception):
    pass


class Interrupted(Exception):
    """A termination signal arrived: unwind (finally blocks remove the temporary file)."""


VALUE_OPTIONS = {
    "--archive": "archive",
    "--ssh": "ssh",
    "--ssh-program": "ssh_program",
    "--ssh-control-dir": "control_dir",
    "--remote-program": "remote_program",
    "--receive": "receive",
    "--size": "size",
    "--get": "get",
    "--cleanup-before": "cleanup_before",
    "--segment-size": "segment_size",
}
MODES = ("receive", "get", "cleanup_before", "fetch")


class Args:
    def __init__(self):
        self.archive = self.ssh = self.receive = self.size = self.get = None
        self.cleanup_before, self.fetch, self.segment_size = None, None, str(16 * 1024 * 1024)
        self.ssh_program, self.remote_program = "/usr/bin/ssh", None
        self.control_dir = None
        self.ssh_options, self.fsync, self.positional = [], True, []


def parse_args(argv):
    args = Args()
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg in ("-h", "--help"):
            sys.stdout.write(USAGE)
            sys.exit(EXIT_OK)
        name, eq, value = arg.partition("=")
        if arg == "--no-fsync":
            args.fsync = False
        elif arg == "--fetch":
            args.fetch = True
        elif name in VALUE_OPTIONS or name == "--ssh-option":
            if not eq:
                if i >= len(argv):
                    raise Usage(f"option {name} needs a value")
                value = argv[i]
                i += 1
            if name == "--ssh-option":
                args.ssh_options.append(value)
            else:
                setattr(args, VALUE_OPTIONS[name], value)
        elif arg.startswith("--") and arg != "--":
            raise Usage(f"unknown option {arg}")
        else:
            args.positional.append(arg)
    return check_args(args)


def check_args(args):
    if not args.archive:
        raise Usage("--archive DIR is required")
    modes = [m for m in MODES if getattr(args, m) is not None]
    if len(modes) > 1:
        raise Usage("--receive, --get, --fetch and --cleanup-before exclude one another")
    mode = modes[0] if modes else "archive"
    if mode in ("receive", "get") and args.ssh:
        raise Usage(f"--{mode} is the far end of --ssh: it works on its own disk")
    if mode == "fetch" and not args.ssh:
        raise Usage("--fetch needs --ssh HOST (a local archive is read by runbook-restore-wal)")
    wanted = {"archive": 2, "fetch": 2}.get(mode, 0)
    if len(args.positional) != wanted:
        raise Usage(f"expected {wanted} arguments, got {len(args.positional)}")
    if mode == "receive":
        if args.size is None or not args.size.isdigit():
            raise Usage("--receive needs --size BYTES")
        args.size = int(args.size)
    if not args.segment_size.isdigit():
        raise Usage("--segment-size needs a number of bytes")
    args.segment_size = int(args.segment_size)
    args.mode = mode
    args.walfile = {
        "archive": args.positional[-1:] and args.positional[-1],
        "fetch": args.positional[:1] and args.positional[0],
        "receive": args.receive,
        "get": args.get,
        "cleanup_before": args.cleanup_before,
    }[mode]
    if not args.walfile or "/" in args.walfile or args.walfile[0] == ".":
        raise Usage(f"WALFILE must be a plain file name, got {args.walfile!r}")
    return args


# ----- signals: unwind so that finally blocks run


TERMINATING = (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP)


def on_signal(signum, frame):
    for sig in TERMINATING:
        _signal.signal(sig, _signal.SIG_IGN)  # one unwinding is enough
    raise Interrupted(signum)


def catch_signals():
    for sig in TERMINATING:
        _signal.signal(sig, on_signal)


# ----- the archive side: temporary file, fsync, link, never overwrite


def copy_fd(fdin, fdout, size):
    copied = 0
    try:
        while copied < size:
            n = os.copy_file_range(fdin, fdout, size - copied)
            if n == 0:
                break
            copied += n
    except OSError as exc:
        if exc.errno not in NO_COPY_FILE_RANGE:
            raise  # no space, an I/O error: a real failure
        os.lseek(fdin, copied, os.SEEK_SET)
        os.lseek(fdout, copied, os.SEEK_SET)
        copied = copy_stream(fdin, fdout, size, copied)
    return copied


def copy_stream(fdin, fdout, size, copied=0):
    while copied < size:
        chunk = os.read(fdin, min(CHUNK, size - copied))
        if not chunk:
            break
        view = memoryview(chunk)
        while view:
            view = view[os.write(fdout, view) :]
        copied += len(chunk)
    return copied


def same_content(a, b):
    if os.stat(a).st_size != os.stat(b).st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x = fa.read(CHUNK)
            if x != fb.read(CHUNK):
                return False
            if not x:
                return True


def stream_matches(fdin, size, dest):
    """Whether `size` bytes read from fdin equal dest's content (all of the stream is read);
    None when the stream ends early."""
    same = os.stat(dest).st_size == size
    with open(dest, "rb") as f:
        left = size
        while left > 0:
            chunk = os.read(fdin, min(CHUNK, left))
            if not chunk:
                say(f"the stream ended {left} bytes early: nothing compared, nothing written")
                return None
            same = same and chunk == f.read(len(chunk))
            left -= len(chunk)
    return same


def already_there(same, dest):
    """EXIT_OK when dest holds the same content, EXIT_FAILED (with a message) when it differs
    (or, None, could not be compared)."""
    if same is None:
        return EXIT_FAILED
    if same:
        say(f"{dest} already archived with identical content")
        return EXIT_OK
    say(
        f"refusing to overwrite {dest}: it exists with different content; investigate before "
        "removing it (two servers archiving into one directory?)"
    )
    return EXIT_FAILED


def temp_path(archive, name):
    """One name per segment and host: a file left by a killed attempt is reused by the next."""
    return os.path.join(archive, f".{name}.{os.uname().nodename}.tmp")


def open_temp(tmp):
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.lockf(fd, os.F_TLOCK, 0)
    except OSError:
        os.close(fd)
        busy = "another process is archiving this segment right now"
        raise OSError(errno.EAGAIN, busy, tmp) from None
    os.ftruncate(fd, 0)
    return fd


def store(archive, name, fill, size, fsync):
    """fill(fd) writes the content into a temporary file in archive, which then becomes
    archive/name, durably and without overwriting; the temporary file never stays behind."""
    dest = os.path.join(archive, name)
    tmp = temp_path(archive, name)
    fdout = None
    try:
        fdout = open_temp(tmp)
        copied = fill(fdout)
        if copied != size:
            say(f"copied only {copied} of {size} bytes of {name}")
            return EXIT_FAILED
        if fsync:
            os.fsync(fdout)
        try:
            os.link(tmp, dest)
        except FileExistsError:
            return already_there(same_content(tmp, dest), dest)
        except OSError:  # a filesystem without hard links
            if os.path.lexists(dest):
                return already_there(same_content(tmp, dest), dest)
            os.rename(tmp, dest)
    finally:
        remove_temp(tmp, fdout)
    if fsync:
        fsync_dir(archive)
    return EXIT_OK


def remove_temp(tmp, fd):
    """Unlink before closing: our lock keeps a concurrent attempt from reusing it meanwhile."""
    try:
        if fd is not None:
            os.unlink(tmp)
    except FileNotFoundError:
        pass
    finally:
        if fd is not None:
            os.close(fd)


def fsync_dir(path):
    dirfd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def archive_local(args):
    walpath = args.positional[0]
    dest = os.path.join(args.archive, args.walfile)
    if os.path.lexists(dest):
        return already_there(same_content(walpath, dest), dest)
    fdin = os.open(walpath, os.O_RDONLY)
    try:
        size = os.fstat(fdin).st_size
        return store(
            args.archive, args.walfile, lambda fd: copy_fd(fdin, fd, size), size, args.fsync
        )
    finally:
        os.close(fdin)


def receive(args):
    dest = os.path.join(args.archive, args.walfile)
    if os.path.lexists(dest):
        return already_there(stream_matches(0, args.size, dest), dest)
    return store(
        args.archive,
        args.walfile,
        lambda fd: copy_stream(0, fd, args.size),
        args.size,
        args.fsync,
    )


def get(args):
    try:
        fdin = os.open(os.path.join(args.archive, args.walfile), os.O_RDONLY)
    except FileNotFoundError:
        return EXIT_FAILED
    try:
        size = os.fstat(fdin).st_size
        return EXIT_OK if copy_stream(fdin, 1, size) == size else EXIT_FAILED
    finally:
        os.close(fdin)


HEX = frozenset("0123456789ABCDEF")


def segment_name(name):
    """A WAL segment's file name (24 hex digits), or a .partial one (pg_archivecleanup's rule)."""
    return len(name) in (24, 32) and set(name[:24]) <= HEX and name[24:] in ("", ".partial")


def cleanup_before(args):
    """Remove archived segments older than WALFILE (of any timeline), like pg_archivecleanup."""
    limit = args.walfile[8:24]
    for name in os.listdir(args.archive):
        if segment_name(name) and name[8:24] < limit:
            try:  # noqa: SIM105 (contextlib would cost start-up time)
                os.unlink(os.path.join(args.archive, name))
            except FileNotFoundError:
                pass
    return EXIT_OK


# ----- the near side of --ssh: the work is done on the archive's machine


def shell_quote(word):
    if word and all(c.isalnum() or c in "@%+=:,./-_" for c in word):
        return word
    return "'" + word.replace("'", "'\"'\"'") + "'"


MAX_CONTROL_DIR = 48  # the socket path (DIR/ + 40 hex + ssh's temporary suffix) <= 107 bytes
CONTROL_PERSIST_S = 60


def control_options(directory):
    """ssh options sharing one connection per host through a socket in directory, or none
    (each call connects anew) when the directory cannot be ours alone."""
    if not directory:
        return []
    if len(directory) > MAX_CONTROL_DIR:
        say(f"--ssh-control-dir {directory} is longer than {MAX_CONTROL_DIR} characters: unused")
        return []
    try:  # noqa: SIM105 (contextlib would cost start-up time)
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(directory)
    if not (st.st_mode & 0o170000 == 0o040000 and st.st_uid == os.geteuid()) or st.st_mode & 0o77:
        say(f"--ssh-control-dir {directory} is not a 0700 directory of ours: unused")
        return []
    return ["-o", "ControlMaster=auto", "-o", f"ControlPath={directory}/%C",
            "-o", f"ControlPersist={CONTROL_PERSIST_S}"]  # fmt: skip


def ssh_argv(args, *words):
    remote = args.remote_program or os.path.abspath(sys.argv[0])
    python = [sys.executable or "/usr/bin/python3", "-I", "-S"]  # the same interpreter there
    words = (*python, remote, "--archive", args.archive, *words)
    line = " ".join(shell_quote(w) for w in words)
    options = [*SSH_DEFAULTS, *control_options(args.control_dir), *args.ssh_options]
    return [args.ssh_program, *options, "--", args.ssh, line]


def over_ssh(argv, stdin=None, stdout=None):
    """Run ssh with these descriptors as its stdin and stdout; its exit status."""
    pid = os.fork()
    if pid == 0:
        try:
            for fd, target in ((stdin, 0), (stdout, 1)):
                if fd is not None:
                    os.dup2(fd, target)
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    try:
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    except Interrupted:
        os.kill(pid, _signal.SIGTERM)
        os.waitpid(pid, 0)
        raise


def ssh_failure(args, doing, status):
    what = "ssh could not connect or the connection broke" if status == 255 else "it failed"
    say(f"{doing} {args.ssh}:{args.archive} failed (exit status {status}: {what})")
    return EXIT_FAILED


def send_over_ssh(args):
    fdin = os.open(args.positional[0], os.O_RDONLY)
    try:
        words = ["--receive", args.walfile, "--size", str(os.fstat(fdin).st_size)]
        status = over_ssh(ssh_argv(args, *words, *([] if args.fsync else ["--no-fsync"])), fdin)
    finally:
        os.close(fdin)
    if status == 0:
        return EXIT_OK
    ssh_failure(args, f"archiving {args.walfile} to", status)
    say("the server retries; pg_wal keeps the segment meanwhile")
    return EXIT_FAILED


def fetch(args):
    """restore_command: WALFILE from the archive on HOST into DEST (never over it)."""
    dest = args.positional[1]
    tmp = os.path.join(os.path.dirname(dest), f".{args.walfile}.{os.uname().nodename}.tmp")
    fd = None
    try:
        fd = open_temp(tmp)
        status = over_ssh(ssh_argv(args, "--get", args.walfile), stdout=fd)
        if status != 0:
            return EXIT_FAILED if status == 1 else ssh_failure(args, "fetching from", status)
        size = os.fstat(fd).st_size
        if segment_name(args.walfile) and size != args.segment_size:
            say(f"{args.walfile} from {args.ssh} has {size} bytes, not {args.segment_size}")
            return EXIT_FAILED
        os.link(tmp, dest)  # fails if DEST exists: never overwrite
    finally:
        remove_temp(tmp, fd)
    return EXIT_OK


def run(args):
    if args.mode == "get":
        return get(args)
    if args.mode == "fetch":
        return fetch(args)
    if args.ssh:
        if args.mode == "cleanup_before":
            status = over_ssh(ssh_argv(args, "--cleanup-before", args.walfile))
            return EXIT_OK if status == 0 else ssh_failure(args, "cleaning up", status)
        return send_over_ssh(args)
    if not os.path.isdir(args.archive):
        say(f"archive directory {args.archive} does not exist or is not a directory")
        return EXIT_FAILED
    if args.mode == "cleanup_before":
        return cleanup_before(args)
    return receive(args) if args.mode == "receive" else archive_local(args)


def main(argv=None):
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except Usage as exc:
        say(f"error: {exc}")
        sys.stderr.write(USAGE.split("\n\n")[0] + "\n")
        return EXIT_USAGE
    try:
        catch_signals()
        return run(args)
    except Interrupted as exc:
        say(f"stopped by signal {exc.args[0]} while working on {args.walfile}; nothing left behind")
        return EXIT_FAILED
    except OSError as exc:
        doing = {"archive": "archive", "receive": "archive"}.get(args.mode, args.mode)
        say(
            f"cannot {doing} {args.walfile} ({args.archive}): {exc.strerror or exc} "
            f"({exc.filename or args.walfile})"
            + ("; pg_wal keeps growing until this is fixed" if doing == "archive" else "")
        )
        return EXIT_FAILED
    except Exception as exc:  # never a traceback, never an exit status >= 126
        say(f"unexpected error archiving {args.walfile}: {type(exc).__name__}: {exc}")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
