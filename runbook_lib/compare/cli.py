"""`runbook compare A B`: the engine for any two databases, from the command line.

Exit status: 0 identical, 1 different, 2 error (bad arguments, no connection, ...).
"""

from __future__ import annotations

import argparse
import sys

EXAMPLE = """examples:
  runbook compare "host=db1 dbname=shop" "host=db2 dbname=shop"
  runbook compare shop_primary shop_standby --schemas public,sales --max-keys 50
  runbook compare postgresql://app@db1/shop postgresql://app@db2/shop \\
      --tables public.orders,'public."OrderLines"' --portable

Connection strings, URIs or service names (pg_service.conf); passwords come from libpq's usual
sources (PGPASSWORD, ~/.pgpass, the service file): one on the command line is refused.
exit status: 0 identical, 1 different, 2 error"""


def _names(text: str) -> list[str]:
    """Split 'a.b,"C,D".e' on commas outside double quotes."""
    out, buf, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            out.append("".join(buf).strip())
            buf = []
        else:
            buf.append(ch)
    out.append("".join(buf).strip())
    return [n for n in out if n]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("conninfo_a", metavar="CONNINFO_A", help="first database (A)")
    parser.add_argument("conninfo_b", metavar="CONNINFO_B", help="second database (B)")
    parser.add_argument("--tables", type=_names, help="comma-separated schema.table names")
    parser.add_argument(
        "--schemas", type=_names, default=["public"], help="schemas to compare (default public)"
    )
    parser.add_argument(
        "--portable", action="store_true", help="text hashes (any major versions; slower)"
    )
    parser.add_argument(
        "--max-keys", type=int, default=20, help="differing keys listed per table (default 20)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from runbook_lib.compare import compare_databases, endpoint_from_conninfo
    from runbook_lib.errors import RunbookError
    from runbook_lib.params import secret_refusal
    from runbook_lib.redaction import redact

    for name, conninfo in (("CONNINFO_A", args.conninfo_a), ("CONNINFO_B", args.conninfo_b)):
        if redact(conninfo) != conninfo:
            print(f"runbook compare: error: {secret_refusal(name)}", file=sys.stderr)
            return 2
    try:
        a = endpoint_from_conninfo(args.conninfo_a)
        b = endpoint_from_conninfo(args.conninfo_b)
        result = compare_databases(
            a, b, tables=args.tables, schemas=args.schemas, portable=args.portable,
            max_keys=args.max_keys, labels=("a", "b"), progress=not args.no_progress,
        )  # fmt: skip
    except RunbookError as exc:
        print(f"runbook compare: error: {exc}", file=sys.stderr)
        return 2
    print(f"a = {a}\nb = {b}\n")
    shown = result.summary[["table", "rows_a", "rows_b", "verdict", "example_keys", "note"]]
    with pd.option_context("display.max_colwidth", 60, "display.width", 200):
        print(shown.to_string(index=False))
        if not result.differences.empty:
            print("\ndiffering keys:")
            print(result.differences.to_string(index=False))
    print("\nidentical" if result.identical else f"\nDIFFERENT: {result.describe()}")
    return 0 if result.identical else 1
