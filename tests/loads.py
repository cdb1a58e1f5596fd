"""Application loads for the tests: pgbench at full speed and the lab's ledgered writer, each
counting the errors an application would have seen."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from runbook_lib import pgbin
from runbook_lib.connection import Endpoint
from runbook_lib.host import LOCAL
from runbook_lib.lab import lab as lab_module
from runbook_lib.lab.workload import read_ledger

PGBENCH_SLICE_S = 5


def pgbench_init(ep: Endpoint, scale: int) -> None:
    argv = [pgbin.program("pgbench"), "-i", "-q", "-s", str(scale), ep.dbname]
    LOCAL.run(argv, env=ep.libpq_env())


class Pgbench:
    """TPC-B at full speed (`pgbench -c 2`, unthrottled: every transaction updates one of the few
    branch rows) in slices of a few seconds until stopped; each slice's report is kept."""

    def __init__(self, ep: Endpoint, clients: int = 2) -> None:
        self.argv = [pgbin.program("pgbench"), "-n", "-c", str(clients), "-j", str(clients),
                     "-T", str(PGBENCH_SLICE_S), ep.dbname]  # fmt: skip
        self.env = {**os.environ, **ep.libpq_env()}
        self.reports: list[tuple[int, str]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            done = subprocess.run(
                self.argv, env=self.env, capture_output=True, text=True, check=False
            )
            self.reports.append((done.returncode, done.stdout + done.stderr))

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=PGBENCH_SLICE_S * 4)

    def transactions(self) -> int:
        found = [re.search(r"actually processed: (\d+)", text) for _, text in self.reports]
        return sum(int(m.group(1)) for m in found if m)

    def errors(self) -> list[str]:
        """What an application would have seen: failed transactions, aborted clients."""
        problems = []
        for code, text in self.reports:
            failed = re.search(r"number of failed transactions: (\d+)", text)
            if code != 0 or "aborted" in text or not failed or int(failed.group(1)):
                problems.append(text[-1500:])
        return problems


class Workload:
    """`runbook lab workload` in the background (inserts, updates, deletes, key changes, with a
    ledger of every commit), stopped with SIGTERM."""

    def __init__(
        self, the_lab: lab_module.Lab, name: str, rate: int = 20, server: str = "here"
    ) -> None:
        self.ledger = the_lab.root / "workload" / f"{name}.jsonl"
        argv = [sys.executable, "-m", "runbook_lib.cli", "lab", "workload",
                "--dir", str(the_lab.root), "--seconds", "0", "--rate", str(rate),
                "--server", server, "--ledger", str(self.ledger)]  # fmt: skip
        self.proc = LOCAL.start(argv, stdout_path=the_lab.root / "workload" / f"{name}.log")
        time.sleep(1.5)  # some writes before the bootstrap starts

    def stop(self) -> int:
        """Stop; the number of commits."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        return sum(1 for e in read_ledger(self.ledger) if e["op"] not in ("in_doubt", "failed"))

    def failures(self) -> list[dict]:
        return [e for e in read_ledger(self.ledger) if e["op"] == "failed"]


def ledger_of(path: Path) -> list[dict]:
    return list(read_ledger(path))
