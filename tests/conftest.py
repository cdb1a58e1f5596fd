"""Fixtures: real PostgreSQL clusters started by the suite itself, logs kept when a test fails."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runbook_lib import pgbin
from runbook_lib.errors import CommandFailed
from runbook_lib.host import LOCAL
from runbook_lib.lab import hosts_lab as hosts_lab_module
from runbook_lib.lab import lab as lab_module

REPO = Path(__file__).resolve().parent.parent
KEPT_LOGS = REPO / "test-logs"


DEFAULT_PG_VERSIONS = "18"  # `make test`; `make test-versions` passes 14,16,17


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--pg-versions",
        default=DEFAULT_PG_VERSIONS,
        help="PostgreSQL majors the version tests (marker `versions`) run on, besides Debian's "
        f"15 that every other test uses (default {DEFAULT_PG_VERSIONS}); their binaries come "
        "from `python -m runbook_lib.pgversions MAJOR`",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test taking `pg_version` runs once per major of --pg-versions."""
    if "pg_version" in metafunc.fixturenames:
        majors = [int(v) for v in metafunc.config.getoption("pg_versions").split(",") if v]
        metafunc.parametrize("pg_version", majors, ids=[f"pg{m}" for m in majors])


def pytest_report_header(config: pytest.Config) -> str:
    try:
        bindir = pgbin.bindir()
    except Exception as exc:  # the header must not break collection
        return f"PostgreSQL: not found ({exc})"
    version = (
        (bindir / "PG_VERSION").read_text().strip() if (bindir / "PG_VERSION").exists() else ""
    )
    others = config.getoption("pg_versions")
    return (
        f"PostgreSQL binaries: {bindir} {version}".strip()
        + f"; version tests on {others}; running as uid {os.geteuid()}"
    )


def _lab_parent() -> Path:
    """A directory the postgres OS user can traverse (pytest's tmp_path is mode 700 for root)."""
    parent = Path(tempfile.mkdtemp(prefix="runbook-tests-"))
    parent.chmod(0o755)
    return parent


def _random_first_port() -> int:
    # concurrent test sessions on one machine should not race for the same ports
    return random.randrange(20000, 60000, 100)


class LabFactory:
    """Makes labs for tests; keeps their server logs under test-logs/ when a test failed.

    Every lab's servers want its generated password: the session's PGPASSFILE (0600) gathers
    the .pgpass lines of every lab made, as an operator's own password file would."""

    def __init__(self) -> None:
        self.parent = _lab_parent()
        self.labs: list[lab_module.Lab] = []
        self.failed = False
        self.passfile = self.parent / "session.pgpass"
        LOCAL.write_text(self.passfile, "", mode=0o600)
        self.previous_passfile = os.environ.get("PGPASSFILE")
        os.environ["PGPASSFILE"] = str(self.passfile)

    def __call__(
        self, name: str = "lab", scale: int = 1, bindirs: dict[str, str] | None = None
    ) -> lab_module.Lab:
        root = self.parent / f"{name}-{len(self.labs)}"
        try:
            the_lab = self._up(root, scale, bindirs)
        except CommandFailed:
            # a port found free can be taken by another machine user before the server binds
            # it (seen once with other sessions' labs running): keep the logs, try other ports
            keep = KEPT_LOGS / f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{root.name}-failed-up"
            if (root / "logs").is_dir():
                shutil.copytree(root / "logs", keep, dirs_exist_ok=True)
            lab_module.down(root, purge=True)
            the_lab = self._up(root, scale, bindirs)
        self.labs.append(the_lab)
        self.add_passwords(the_lab)
        return the_lab

    @staticmethod
    def _up(root: Path, scale: int, bindirs: dict[str, str] | None) -> lab_module.Lab:
        return lab_module.up(root, scale=scale, first_port=_random_first_port(), bindirs=bindirs)

    def add_passwords(self, the_lab: lab_module.Lab) -> None:
        """The newest lab's lines first: libpq takes the first match, and a port of a lab
        purged earlier in the session may belong to this one now."""
        lines = the_lab.passfile.read_text() + self.passfile.read_text()
        LOCAL.write_text(self.passfile, lines, mode=0o600)

    def close(self) -> None:
        for the_lab in self.labs:
            if self.failed and the_lab.logs_dir.exists():  # a test may have purged it
                keep = KEPT_LOGS / f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{the_lab.root.name}"
                shutil.copytree(the_lab.logs_dir, keep, dirs_exist_ok=True)
                for log in (the_lab.server_dir / "standby").glob("*.log"):
                    shutil.copy2(log, keep / f"standby-{log.name}")
                if the_lab.bucardo_dir.exists():
                    shutil.copytree(
                        the_lab.bucardo_dir,
                        keep / "bucardo",
                        dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.pid", "*.pgpass", "*.dump*"),
                    )
            lab_module.down(the_lab.root, purge=True)
        shutil.rmtree(self.parent, ignore_errors=True)
        if self.previous_passfile is None:
            os.environ.pop("PGPASSFILE", None)
        else:
            os.environ["PGPASSFILE"] = self.previous_passfile


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    report = yield
    if report.failed:
        item.session.config.stash.setdefault(_FAILED, []).append(item.nodeid)
    return report


_FAILED = pytest.StashKey[list]()


@pytest.fixture(scope="session")
def lab_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., lab_module.Lab]]:
    """Session-wide maker of fresh labs (a test that changes servers takes its own)."""
    factory = LabFactory()
    yield factory
    factory.failed = bool(request.config.stash.get(_FAILED, []))
    factory.close()


@pytest.fixture
def postgres_dir() -> Iterator[Path]:
    """A directory the server OS user can reach (pytest's tmp_path is private to root)."""
    parent = _lab_parent()
    yield parent
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def lab_spot() -> Iterator[tuple[Path, int]]:
    """A directory for a lab the test manages itself, and a first port to try."""
    parent = _lab_parent()
    yield parent / "lab", _random_first_port()
    if (parent / "lab").exists():
        lab_module.down(parent / "lab", purge=True)
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_lab(lab_factory: LabFactory) -> lab_module.Lab:
    """One lab for tests that only read, or write only to their own objects."""
    return lab_factory("shared")


class HostsLabFactory:
    """Makes hosts labs (network namespaces, sshd, PostgreSQL over SSH: needs root); removes
    them at the end of the session, keeping their logs under test-logs/ when a test failed."""

    def __init__(self) -> None:
        self.parent = _lab_parent()
        self.labs: list[hosts_lab_module.HostsLab] = []
        self.failed = False

    def __call__(self, name: str = "hosts", **options) -> hosts_lab_module.HostsLab:
        if os.geteuid() != 0:
            pytest.skip("a hosts lab needs root (network namespaces)")
        root = self.parent / f"{name}-{len(self.labs)}"
        the_lab = hosts_lab_module.up(root, **options)
        self.labs.append(the_lab)
        return the_lab

    def close(self) -> None:
        for the_lab in self.labs:
            if self.failed and the_lab.sshd_pids:
                keep = KEPT_LOGS / f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{the_lab.root.name}"
                the_lab.collect_logs(keep)
            hosts_lab_module.down(the_lab.root, purge=True)
        shutil.rmtree(self.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def hosts_lab_factory(request: pytest.FixtureRequest) -> Iterator[HostsLabFactory]:
    """Session-wide maker of hosts labs: `hosts_lab_factory("name", servers=(...))`."""
    factory = HostsLabFactory()
    yield factory
    factory.failed = bool(request.config.stash.get(_FAILED, []))
    factory.close()


@pytest.fixture(scope="session")
def hosts_lab(hosts_lab_factory: HostsLabFactory) -> hosts_lab_module.HostsLab:
    """One hosts lab for tests that only read or write their own objects: every host up,
    PostgreSQL on here, there, control, primary. Its .pgpass is in the session's PGPASSFILE
    when lab_factory is used too; otherwise use lab.endpoint(name), which names it."""
    return hosts_lab_factory("shared-hosts")
