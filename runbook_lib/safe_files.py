"""Files and directories created without following symlinks.

A file is written to a temporary name created with O_EXCL|O_NOFOLLOW next to its final name,
given its owner and mode through the open descriptor, then renamed over the final name (a
symlink there is replaced, never followed). Stdlib only and self-contained: a host runs this
very source as another OS user (`python3 -I -S -c <this file> write PATH MODE < data`) when the
directory belongs to that user, so nothing that user controls can redirect a write of ours.

In-process writes go only into a trusted directory: every directory on the way owned by root or
by us and not writable by others unless sticky (like /tmp), every symlink on the way ours.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import sys

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
MAX_SYMLINKS = 40


class UntrustedDirectory(OSError):
    """A directory on the way is controlled by another user: do not write there as ourselves."""


def _check_component(fd: int, where: str) -> None:
    st = os.fstat(fd)
    if st.st_uid not in (0, os.geteuid()):
        raise UntrustedDirectory(f"{where} is owned by uid {st.st_uid}")
    writable_by_others = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable_by_others and not st.st_mode & stat.S_ISVTX:
        raise UntrustedDirectory(f"{where} is writable by other users and not sticky")


def open_trusted_dir(path: str) -> int:
    """A descriptor of directory `path`, reached component by component: each directory owned
    by root or us, a symlink followed only when root or we own it (one another user planted
    could lead anywhere, a root-owned directory included); UntrustedDirectory otherwise."""
    pending = os.path.abspath(path)
    for _ in range(MAX_SYMLINKS):
        found = _walk(pending)
        if isinstance(found, int):
            return found
        pending = found
    raise UntrustedDirectory(f"{path}: too many levels of symbolic links")


def _walk(path: str) -> int | str:
    """Open `path` without following links: its descriptor, or the path to walk next after a
    trusted symlink (or a `..`) was met."""
    parts = [p for p in path.split("/") if p and p != "."]
    fd, where = os.open("/", DIR_FLAGS), "/"
    try:
        _check_component(fd, where)
        for i, part in enumerate(parts):
            rest = parts[i + 1 :]
            if part == "..":  # `where` holds no symlink: its parent is lexical
                os.close(fd)
                return os.path.join(os.path.dirname(where), *rest)
            st = os.stat(part, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                if st.st_uid not in (0, os.geteuid()):
                    raise UntrustedDirectory(
                        f"{os.path.join(where, part)} is a symlink of uid {st.st_uid}"
                    )
                target = os.readlink(part, dir_fd=fd)
                os.close(fd)
                return os.path.join(where, target, *rest)
            nxt = os.open(part, DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd, where = nxt, os.path.join(where, part)
            _check_component(fd, where)
        return fd
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise


def write_at(dir_fd: int, name: str, data: bytes, mode: int, uid: int = -1, gid: int = -1) -> None:
    """Write `name` in the directory `dir_fd` through an exclusive temporary file and a rename."""
    tmp = f".{name}.{secrets.token_hex(8)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
    try:
        try:
            if uid != -1:
                os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def mkdir_at(dir_fd: int, name: str, mode: int, uid: int = -1, gid: int = -1) -> bool:
    """Create directory `name` with exactly `mode` (and owner); False when it already exists,
    which is then left as it is (never re-chmod'ed or re-chown'ed)."""
    try:
        os.mkdir(name, 0o700, dir_fd=dir_fd)
    except FileExistsError:
        return False
    fd = os.open(name, DIR_FLAGS | os.O_NOFOLLOW, dir_fd=dir_fd)
    try:
        if uid != -1:
            os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return True


def _parent_fd(path: str) -> tuple[int, str]:
    directory, name = os.path.split(os.path.abspath(path))
    return os.open(directory, DIR_FLAGS), name


UNTRUSTED_EXIT = 3  # `*-trusted` ops: the directory is not only root's (or ours)


def _owner_ids(owner: str) -> tuple[int, int]:
    if owner == "-":
        return -1, -1
    import pwd

    entry = pwd.getpwnam(owner)
    return entry.pw_uid, entry.pw_gid


def _trusted(op: str, path: str, mode: int, owner: str) -> int:
    """A write or mkdir done by us (root) in a directory only root or we control, the result
    given to `owner` ("-": ours): what a local host does in-process, for a remote host."""
    directory, name = os.path.split(os.path.abspath(path))
    try:
        dir_fd = open_trusted_dir(directory)
    except UntrustedDirectory as exc:
        print(f"untrusted directory: {exc}", file=sys.stderr)
        return UNTRUSTED_EXIT
    try:
        if op == "write-trusted":
            write_at(dir_fd, name, sys.stdin.buffer.read(), mode, *_owner_ids(owner))
        else:
            print("created" if mkdir_at(dir_fd, name, mode, *_owner_ids(owner)) else "exists")
    finally:
        os.close(dir_fd)
    return 0


def main(argv: list[str]) -> int:
    """As another user: `write PATH MODE` (data on stdin) or `mkdir PATH MODE`; on a remote
    host as ourselves: `write-trusted|mkdir-trusted PATH MODE OWNER` (OWNER "-": ours)."""
    if len(argv) == 4 and argv[0] in ("write-trusted", "mkdir-trusted"):
        return _trusted(argv[0], argv[1], int(argv[2], 8), argv[3])
    if len(argv) != 3 or argv[0] not in ("write", "mkdir"):
        print("usage: write|mkdir PATH OCTAL_MODE", file=sys.stderr)
        return 2
    op, path, mode = argv[0], argv[1], int(argv[2], 8)
    dir_fd, name = _parent_fd(path)
    try:
        if op == "write":
            write_at(dir_fd, name, sys.stdin.buffer.read(), mode)
        else:
            mkdir_at(dir_fd, name, mode)
    finally:
        os.close(dir_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
