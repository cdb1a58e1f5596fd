"""The `runbook` command: the lab, and running notebooks into the run archive."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from runbook_lib import cli_parameters
from runbook_lib.errors import PreconditionError, RunbookError

EXAMPLES = {
    "runbook": """examples:
  runbook lab up                       # throwaway servers on free loopback ports, in .lab/
  runbook run bucardo_bootstrap -f .lab/parameters/bucardo_bootstrap.yaml
  runbook open bucardo_bootstrap -f .lab/parameters/bucardo_bootstrap.yaml   # in JupyterLab
  runbook lab down --purge""",
    "lab": """examples:
  runbook lab up --scale 10
  runbook lab status
  runbook lab workload --seconds 60 --rate 50
  runbook lab down --purge""",
    "up": """examples:
  runbook lab up --dir /tmp/lab --scale 100   # about 1 GB of sample data
  runbook lab up --hosts --dir /tmp/hosts     # one network host per server, over SSH (root)
  runbook lab up --pg-version here=15,there=18   # an upgrade: bootstrap 15 -> 18""",
    "status": "example:\n  runbook lab status --dir /tmp/lab",
    "down": "example:\n  runbook lab down --purge    # stop every lab process, then delete .lab/",
    "restart": "example:\n  runbook lab restart primary",
    "cut": "example:\n  runbook lab cut standby     # hosts lab: partition the standby's host",
    "heal": "example:\n  runbook lab heal standby",
    "workload": """examples:
  runbook lab workload --seconds 120 --rate 30 --ledger /tmp/ledger.jsonl
  runbook lab workload --seconds 0 --server there   # the application moved to the new server""",
    "runs": """examples:
  runbook runs --last 5
  runbook runs show 20261128T101500Z-warm_standby-3f9a1c
  runbook runs close warm_standby-3f9a1c""",
    "show": "example:\n  runbook runs show warm_standby-3f9a1c",
    "close": "example:\n  runbook runs close bucardo_bootstrap-3f9a1c",
    "open": """examples:
  runbook open bucardo_bootstrap -f .lab/parameters/bucardo_bootstrap.yaml
  runbook open warm_standby -f prod.yaml -p dry_run true --no-server""",
    "params": "example:\n  runbook params bucardo_bootstrap",
    "compare": "",  # filled from runbook_lib.compare.cli
    "run": """examples:
  runbook run warm_standby -f .lab/parameters/warm_standby.yaml -p mode pg_standby
  runbook run notebooks/bucardo_bootstrap.ipynb -f prod.yaml -p copy_jobs 4
  runbook run bucardo_retire -f prod.yaml -p keep there   # the bootstrap's file, plus keep""",
}


def _notebook_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("notebook", help="notebook name in notebooks/ or path to an .ipynb")
    cli_parameters.add_arguments(parser, "YAML parameter file; repeatable, later files win")
    parser.add_argument(
        "--archive", type=Path, default=Path("runs"), help="run archive (default runs/)"
    )


def _parser() -> argparse.ArgumentParser:
    def sub(parent: Any, name: str, help_: str) -> argparse.ArgumentParser:
        return parent.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=EXAMPLES[name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    parser = argparse.ArgumentParser(
        prog="runbook",
        description="Jupyter runbooks for PostgreSQL replication without downtime.",
        epilog=EXAMPLES["runbook"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every command run")
    commands = parser.add_subparsers(dest="command", required=True)

    lab = sub(commands, "lab", "a local lab of throwaway PostgreSQL servers")
    lab_commands = lab.add_subparsers(dest="lab_command", required=True)
    for name, help_ in (
        ("up", "create and start the lab's servers (harmless when already up)"),
        ("status", "show each lab server: port, pid, up or down"),
        ("down", "stop every process the lab started"),
        ("restart", "restart one lab server"),
        ("workload", "write to a lab server continuously, recording a ledger of commits"),
        ("cut", "hosts lab: cut a host off the network (its link goes down)"),
        ("heal", "hosts lab: bring a cut host's link back"),
    ):
        p = sub(lab_commands, name, help_)
        p.add_argument(
            "--dir", type=Path, default=Path(".lab"), help="lab directory (default .lab)"
        )
        if name == "up":
            p.add_argument(
                "--scale", type=int, default=1, help="sample data size: 1 ~ 10 MB, 100 ~ 1 GB"
            )
            p.add_argument(
                "--pg-version",
                metavar="V|NAME=V,...",
                help="PostgreSQL major version of here, there and primary (14-18), or per "
                "server: here=15,there=18 (control stays on Debian's, for plperl)",
            )
            p.add_argument(
                "--pgbin",
                metavar="DIR|NAME=DIR,...",
                help="server binaries to run instead, for all or per server (like --pg-version)",
            )
            p.add_argument(
                "--hosts",
                action="store_true",
                help="one network host per server (namespaces, sshd, SSH), as root",
            )
            p.add_argument(
                "--subnet", help="hosts lab: a free /24 of 198.18.0.0/15 (default: chosen)"
            )
            p.add_argument(
                "--srv-size", default="2g", help="hosts lab: size of each host's private /srv"
            )
        if name in ("cut", "heal"):
            p.add_argument("host", help="here, there, control, primary, standby or archive")
        if name == "down":
            p.add_argument("--purge", action="store_true", help="also delete the lab directory")
        if name == "restart":
            p.add_argument("server", help="server name (here, there, control, primary)")
        if name == "workload":
            p.add_argument(
                "--seconds", type=float, required=True, help="how long (0: until stopped)"
            )
            p.add_argument(
                "--rate", type=float, default=20.0, help="changes per second (default 20)"
            )
            p.add_argument("--server", default="here", help="lab server to write to (default here)")
            p.add_argument(
                "--ledger", type=Path, help="ledger file (default DIR/workload/ledger-*.jsonl)"
            )
            p.add_argument("--seed", type=int, help="random seed")

    run = sub(commands, "run", "execute a runbook notebook into the run archive (runs/)")
    _notebook_arguments(run)
    opened = sub(
        commands,
        "open",
        "start an interactive run: check the parameters, make its folder in the run archive "
        "with the parameterized notebook, and open it in JupyterLab (interactive is set true)",
    )
    _notebook_arguments(opened)
    opened.add_argument(
        "--no-server",
        action="store_true",
        help="only make the run folder; do not start JupyterLab when none serves the archive",
    )

    runs = sub(commands, "runs", "list archived runs: when, notebook, status, duration, path")
    runs.add_argument("--archive", type=Path, default=Path("runs"), help="run archive")
    runs.add_argument("--last", type=int, help="only the N most recent runs")
    runs_commands = runs.add_subparsers(dest="runs_command")
    show = sub(runs_commands, "show", "print one run's summary.json")
    show.add_argument("run", help="run directory, its name, or a unique part of it")
    show.add_argument("--archive", type=Path, default=argparse.SUPPRESS, help="run archive")
    close = sub(
        runs_commands,
        "close",
        "end an interactive run: final status, notebook.html, then the folder is read-only",
    )
    close.add_argument("run", help="run directory, its name, or a unique part of it")
    close.add_argument("--archive", type=Path, default=argparse.SUPPRESS, help="run archive")
    close.add_argument(
        "--force", action="store_true", help="close even if a kernel still runs the notebook"
    )

    from runbook_lib.compare import cli as compare_cli

    EXAMPLES["compare"] = compare_cli.EXAMPLE
    compare_cli.add_arguments(
        sub(commands, "compare", "prove two databases hold the same rows, or list where not")
    )

    from runbook_lib.standby import cli as standby_cli

    EXAMPLES["standby-status"] = standby_cli.EXAMPLE
    standby_cli.add_arguments(
        sub(commands, "standby-status", "the warm standby's status report alone (for incidents)")
    )

    params = sub(commands, "params", "list a notebook's parameters with type, default and help")
    params.add_argument("notebook", help="notebook name in notebooks/ or path to an .ipynb")
    return parser


def _hosts_lab(args: argparse.Namespace) -> int:
    from runbook_lib.lab import hosts_lab

    if args.lab_command == "up":
        the_lab = hosts_lab.up(
            args.dir, scale=args.scale, subnet=args.subnet, srv_size=args.srv_size
        )
        print(hosts_lab.status(the_lab.root).to_string(index=False))
        print(
            f"\nparameter files: {the_lab.parameters_dir}/  ssh: ssh -F {the_lab.ssh_config} HOST"
        )
    elif args.lab_command == "status":
        print(hosts_lab.status(args.dir).to_string(index=False))
    elif args.lab_command == "down":
        hosts_lab.down(args.dir, purge=args.purge)
        print(f"lab in {args.dir} removed" + (" with its directory" if args.purge else ""))
    elif args.lab_command in ("cut", "heal"):
        getattr(hosts_lab, args.lab_command)(args.dir, args.host)
        print(f"{args.host}: link {'cut' if args.lab_command == 'cut' else 'healed'}")
    elif args.lab_command == "restart":
        hosts_lab.HostsLab.load(args.dir.absolute()).cluster(args.server).restart()
        print(f"{args.server} restarted")
    elif args.lab_command == "workload":
        return _workload(args)
    return 0


def _lab(args: argparse.Namespace) -> int:
    from runbook_lib.lab import hosts_lab, lab

    if getattr(args, "hosts", False) or hosts_lab.is_hosts_lab(args.dir):
        return _hosts_lab(args)
    if args.lab_command in ("cut", "heal"):
        raise PreconditionError(f"lab {args.lab_command} needs a hosts lab (lab up --hosts)")
    if args.lab_command == "up":
        from runbook_lib.lab import versions

        bindirs = versions.requested_bindirs(args.pg_version, args.pgbin)
        the_lab = lab.up(args.dir, scale=args.scale, bindirs=bindirs)
        print(lab.status(the_lab.root).to_string(index=False))
        print(f"\nparameter files: {the_lab.parameters_dir}/")
    elif args.lab_command == "status":
        print(lab.status(args.dir).to_string(index=False))
    elif args.lab_command == "down":
        lab.down(args.dir, purge=args.purge)
        print(f"lab in {args.dir} stopped" + (" and removed" if args.purge else ""))
    elif args.lab_command == "restart":
        lab.Lab.load(args.dir.absolute()).cluster(args.server).restart()
        print(f"{args.server} restarted")
    elif args.lab_command == "workload":
        return _workload(args)
    return 0


def _workload(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from runbook_lib.lab import hosts_lab, lab, sample_data, workload

    loader = hosts_lab.HostsLab if hosts_lab.is_hosts_lab(args.dir) else lab.Lab
    the_lab = loader.load(args.dir.absolute())
    ledger = args.ledger or the_lab.workload_dir / f"ledger-{datetime.now(UTC):%Y%m%dT%H%M%S}.jsonl"
    print(f"ledger: {ledger}", flush=True)
    summary = workload.run_workload(
        the_lab.endpoint(args.server, sample_data.SAMPLE_DBNAME),
        ledger,
        seconds=args.seconds,
        rate=args.rate,
        seed=args.seed,
    )
    print(
        f"committed {summary.committed} changes in {summary.seconds:.1f} s "
        f"({summary.in_doubt} in doubt, {summary.failed} failed); ledger: {summary.ledger}"
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    from runbook_lib import execute

    result = execute.run_notebook(args.notebook, cli_parameters.values(args), archive=args.archive)
    print(f"succeeded in {result.summary['duration_s']:.1f} s: {result.output.parent}")
    return 0


def _open(args: argparse.Namespace) -> int:
    from runbook_lib import jupyter, session

    run_dir = session.open_run(args.notebook, cli_parameters.values(args), archive=args.archive)
    notebook = run_dir / "notebook.ipynb"
    print(f"run folder: {run_dir}")
    server = jupyter.server_for(notebook)
    if server is None and not args.no_server:
        server = jupyter.start_server(args.archive.absolute())
        stop = f"jupyter server stop {server['port']}"
        print(f"started JupyterLab (pid {server['pid']}); stop it with: {stop}")
    if server is None:
        print(f"no JupyterLab serves {args.archive}; open {notebook} in one")
    else:
        print(f"open: {jupyter.notebook_url(server, notebook)}")
        if jupyter.saves_widget_state(server) is False:
            print(
                "note: this JupyterLab does not save widget state: turn on Settings > "
                "Save Widget State Automatically, or a reopened run shows no step panel"
            )
    print(f"when done: runbook runs close {run_dir.name} --archive {args.archive}")
    return 0


def _runs(args: argparse.Namespace) -> int:
    import json

    from runbook_lib import runs

    if args.runs_command == "close":
        from runbook_lib import session

        summary = session.close_run(args.archive, args.run, force=args.force)
        print(f"{summary['run_id']}: {summary['status']}; record sealed")
        return 0
    if args.runs_command == "show":
        print(json.dumps(runs.show_run(args.archive, args.run), indent=2))
        return 0
    table = runs.list_runs(args.archive, args.last)
    print(table.to_string(index=False) if not table.empty else f"no runs in {args.archive}")
    return 0


def _params(args: argparse.Namespace) -> int:
    import pandas as pd

    from runbook_lib import execute, params

    table = params.parameters_table(execute.resolve_notebook(args.notebook))
    with pd.option_context("display.max_colwidth", 80, "display.width", 200):
        print(table.to_string(index=False))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from runbook_lib.compare import cli as compare_cli

    return compare_cli.run(args)


def _standby_status(args: argparse.Namespace) -> int:
    from runbook_lib.standby import cli as standby_cli

    return standby_cli.run(args)


HANDLERS = {
    "lab": _lab,
    "run": _run,
    "open": _open,
    "runs": _runs,
    "params": _params,
    "compare": _compare,
    "standby-status": _standby_status,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from runbook_lib.execute import RunInterrupted

    try:
        return HANDLERS[args.command](args)
    except RunInterrupted as exc:
        print(f"runbook: interrupted: {exc}", file=sys.stderr)
        return 130
    except RunbookError as exc:
        print(f"runbook: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
