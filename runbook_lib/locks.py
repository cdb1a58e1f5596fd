"""Short locks on a live database: the application waits a little, and never fails because of us.

A runbook statement that needs a lock an application transaction holds (ALTER SEQUENCE, CREATE
TRIGGER) queues every later application statement behind it. So each such change runs in its own
transaction, touching one object, with a `lock_timeout` far below `deadlock_timeout`: it gives up
quickly instead of making others wait, and it can never be the other end of a deadlock the server
would resolve by killing an application transaction (our own `deadlock_timeout` is shorter still,
so if a cycle ever formed, our session is the one that reports it). Then it tries again.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
from psycopg import errors

from runbook_lib.errors import WaitTimeout

log = logging.getLogger("runbook_lib")

LOCK_TIMEOUT_MS = 100
OWN_DEADLOCK_TIMEOUT_MS = 50
RETRY_FOR_S = 120.0
MAX_PAUSE_S = 0.5

T = TypeVar("T")


def in_short_lock(
    conn: psycopg.Connection,
    change: Callable[[], T],
    what: str,
    *,
    retry_for_s: float = RETRY_FOR_S,
) -> T:
    """Run `change` (statements on `conn`) in one transaction that waits at most
    LOCK_TIMEOUT_MS for each lock; retry with a pause until it gets through."""
    deadline = time.monotonic() + retry_for_s
    attempts = 0
    while True:
        attempts += 1
        try:
            with conn.transaction():
                conn.execute(
                    "SELECT pg_catalog.set_config('lock_timeout', %s, true), "
                    "pg_catalog.set_config('deadlock_timeout', %s, true)",
                    [f"{LOCK_TIMEOUT_MS}ms", f"{OWN_DEADLOCK_TIMEOUT_MS}ms"],
                )
                return change()
        except (errors.LockNotAvailable, errors.DeadlockDetected) as exc:
            if time.monotonic() >= deadline:
                raise WaitTimeout(
                    f"a lock for {what} (busy in every one of {attempts} short attempts)",
                    retry_for_s,
                    str(exc).strip(),
                ) from exc
            log.debug("%s: lock busy (attempt %d), trying again", what, attempts)
            time.sleep(random.uniform(0.05, MAX_PAUSE_S))
