"""runbook-archive-wal: an archive_command that copies WAL durably and never overwrites.

    archive_command = 'python3 -I -S runbook-archive-wal.py --archive DIR %p %f'

Copies %p (relative to the data directory) to DIR/%f through a temporary file in DIR: the copy is
fsynced, then hard-linked into place (which fails if DIR/%f appeared meanwhile), then the
directory is fsynced. An existing DIR/%f with identical content is success (the server may
archive the same file twice after a crash); different content is an error.

Exit status: 0 archived (or already archived), 1 failed, 2 bad arguments. Messages on stderr land
in the server log; pg_stat_archiver counts the failures.

Standard library only, and only modules built into the interpreter (os, sys): the server runs
this as its own OS user with `python3 -I -S`.
"""

import os
import sys

PROG = "runbook-archive-wal"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

USAGE = f"""usage: {PROG} --archive DIR [--no-fsync] WALPATH WALFILE

Archive WALPATH (%p) as DIR/WALFILE (%f): fsynced, atomic, never overwriting.

  --archive DIR   the WAL archive (required)
  --no-fsync      skip fsync (only for throwaway test setups)

exit status: 0 archived or already archived with identical content, 1 failed, 2 bad arguments
"""


def say(message):
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.stderr.flush()


class Usage(Exception):
    pass


def parse_args(argv):
    archive, fsync, positional = None, True, []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg in ("-h", "--help"):
            sys.stdout.write(USAGE)
            sys.exit(EXIT_OK)
        if arg == "--no-fsync":
            fsync = False
        elif arg == "--archive":
            if i >= len(argv):
                raise Usage("option --archive needs a value")
            archive = argv[i]
            i += 1
        elif arg.startswith("--archive="):
            archive = arg.partition("=")[2]
        elif arg.startswith("--") and arg != "--":
            raise Usage(f"unknown option {arg}")
        else:
            positional.append(arg)
    if not archive:
        raise Usage("--archive DIR is required")
    if len(positional) != 2:
        raise Usage(f"expected WALPATH WALFILE, got {len(positional)} arguments")
    walpath, walfile = positional
    if not walfile or "/" in walfile or walfile in (".", ".."):
        raise Usage(f"WALFILE must be a plain file name, got {walfile!r}")
    return archive, walpath, walfile, fsync


def copy_fd(fdin, fdout, size):
    copied = 0
    try:
        while copied < size:
            n = os.copy_file_range(fdin, fdout, size - copied)
            if n == 0:
                break
            copied += n
    except OSError:
        os.lseek(fdin, copied, os.SEEK_SET)
        os.lseek(fdout, copied, os.SEEK_SET)
        while copied < size:
            chunk = os.read(fdin, min(1 << 20, size - copied))
            if not chunk:
                break
            os.write(fdout, chunk)
            copied += len(chunk)
    return copied


def same_content(a, b):
    if os.stat(a).st_size != os.stat(b).st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x = fa.read(1 << 20)
            if x != fb.read(1 << 20):
                return False
            if not x:
                return True


def already_there(src, dest):
    """EXIT_OK when dest holds src's content, EXIT_FAILED (with a message) when it differs."""
    if same_content(src, dest):
        say(f"{dest} already archived with identical content")
        return EXIT_OK
    say(
        f"refusing to overwrite {dest}: it exists with different content; investigate before "
        "removing it (two servers archiving into one directory?)"
    )
    return EXIT_FAILED


def archive_file(archive, src, name, fsync):
    dest = os.path.join(archive, name)
    if os.path.lexists(dest):
        return already_there(src, dest)
    tmp = os.path.join(archive, f".{name}.{os.getpid()}.tmp")
    fdin = os.open(src, os.O_RDONLY)
    try:
        size = os.fstat(fdin).st_size
        fdout = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            copied = copy_fd(fdin, fdout, size)
            if fsync:
                os.fsync(fdout)
        finally:
            os.close(fdout)
    finally:
        os.close(fdin)
    try:
        if copied != size:
            say(f"copied only {copied} of {size} bytes of {src}")
            return EXIT_FAILED
        try:
            os.link(tmp, dest)
        except FileExistsError:
            return already_there(src, dest)
        except OSError:  # a filesystem without hard links
            if os.path.lexists(dest):
                return already_there(src, dest)
            os.rename(tmp, dest)
    finally:
        try:  # noqa: SIM105 (contextlib would cost start-up time)
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    if fsync:
        dirfd = os.open(archive, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
    return EXIT_OK


def main(argv=None):
    try:
        archive, walpath, walfile, fsync = parse_args(sys.argv[1:] if argv is None else argv)
    except Usage as exc:
        say(f"error: {exc}")
        sys.stderr.write(USAGE.split("\n\n")[0] + "\n")
        return EXIT_USAGE
    if not os.path.isdir(archive):
        say(f"archive directory {archive} does not exist or is not a directory")
        return EXIT_FAILED
    try:
        return archive_file(archive, walpath, walfile, fsync)
    except OSError as exc:
        say(
            f"cannot archive {walfile} into {archive}: {exc.strerror or exc} "
            f"({exc.filename or walpath}); pg_wal keeps growing until this is fixed"
        )
        return EXIT_FAILED
    except Exception as exc:  # never a traceback, never an exit status >= 126
        say(f"unexpected error archiving {walfile}: {type(exc).__name__}: {exc}")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
