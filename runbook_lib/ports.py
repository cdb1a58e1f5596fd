"""Loopback TCP ports: which are free, without taking any from anyone."""

from __future__ import annotations

import socket
from collections.abc import Iterable

from runbook_lib.errors import PreconditionError

LOOPBACK = "127.0.0.1"


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_accepts(port: int, host: str = LOOPBACK, timeout_s: float = 0.5) -> bool:
    """Whether something listens on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def free_ports(
    count: int, *, start: int, exclude: Iterable[int] = (), limit: int = 2000
) -> list[int]:
    """`count` free ports from `start` upwards, skipping busy ones and `exclude`."""
    excluded = set(exclude)
    found: list[int] = []
    for port in range(start, start + limit):
        if port not in excluded and port_is_free(port):
            found.append(port)
            if len(found) == count:
                return found
    raise PreconditionError(f"no {count} free loopback ports found in {start}..{start + limit}")
