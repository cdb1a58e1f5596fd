"""Read-only comparison sessions with pinned settings, so both servers render values alike."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from runbook_lib import pgversions
from runbook_lib.connection import Endpoint, connect

APPLICATION_NAME = "runbook compare"

# Every value that is hashed or sent back as text is rendered under these settings on both sides.
PINNED_SETTINGS = {
    "default_transaction_read_only": "on",  # safe on a hot standby and on a live primary
    "search_path": "",  # every name is qualified; format_type() qualifies non-catalog types
    "TimeZone": "UTC",  # timestamptz compares as an instant, whatever each server's zone
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",
    "bytea_output": "hex",
    "lc_monetary": "C",
    "max_parallel_workers_per_gather": "0",  # one core per server: both scans run side by side
}


@dataclass
class Side:
    """One of the two databases being compared, with its open session."""

    label: str
    endpoint: Endpoint
    conn: psycopg.Connection
    major: int

    def now(self) -> datetime:
        return self.conn.execute("SELECT pg_catalog.clock_timestamp() AS t").fetchone()["t"]

    def close(self) -> None:
        self.conn.close()


def open_side(label: str, endpoint: Endpoint) -> Side:
    """Connect (PreconditionError when impossible) and pin the session settings."""
    conn = connect(endpoint, application_name=APPLICATION_NAME)
    try:
        major = pgversions.require_supported(conn.info.server_version, f"{label} {endpoint}")
        conn.execute(
            "SELECT pg_catalog.set_config(name, value, false) "
            "FROM unnest(%s::text[], %s::text[]) AS s(name, value)",
            [list(PINNED_SETTINGS), list(PINNED_SETTINGS.values())],
        )
    except BaseException:
        conn.close()
        raise
    return Side(label, endpoint, conn, major)


def open_sides(labels: tuple[str, str], a: Endpoint, b: Endpoint) -> tuple[Side, Side]:
    side_a = open_side(labels[0], a)
    try:
        return side_a, open_side(labels[1], b)
    except BaseException:
        side_a.close()
        raise
