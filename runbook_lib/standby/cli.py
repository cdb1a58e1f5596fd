"""`runbook standby-status -f PARAMS`: the warm standby's status report on its own, for an
incident (a full archive, a failing archive_command) when the notebook's earlier steps would
stop. Read-only but for the heartbeat row (none with --no-heartbeat).

Exit status: 0 no problems seen, 1 problems (listed first), 2 error (bad parameters, no
connection to the primary, ...).
"""

from __future__ import annotations

import argparse
import sys

from runbook_lib import cli_parameters

EXAMPLE = """examples:
  runbook standby-status -f parameters/my-standby.yaml
  runbook standby-status -f .lab/parameters/warm_standby.yaml --observe 0 --no-heartbeat

exit status: 0 no problems seen, 1 problems (listed first), 2 error"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cli_parameters.add_arguments(
        parser, "the warm standby's YAML parameter file; repeatable, later files win"
    )
    parser.add_argument(
        "--observe", type=float, help="seconds of lag sampling (default: observe_s)"
    )
    parser.add_argument(
        "--no-heartbeat", action="store_true", help="write nothing on the primary (no time lag)"
    )


def run(args: argparse.Namespace) -> int:
    from runbook_lib import execute, params, standby
    from runbook_lib.errors import RunbookError

    try:
        values = cli_parameters.values(args)
        params.check_parameters(execute.resolve_notebook("warm_standby"), values)
        cfg = standby.from_namespace(values)
        report = standby.status(cfg, args.observe, heartbeat=not args.no_heartbeat)
    except RunbookError as exc:
        print(f"runbook standby-status: error: {exc}", file=sys.stderr)
        return 2
    print(repr(report))
    return 0 if report.ok else 1
