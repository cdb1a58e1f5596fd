"""The `-f FILE` / `-p NAME VALUE` options every command taking a notebook's parameters shares."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml


def add_arguments(parser: argparse.ArgumentParser, files_help: str) -> None:
    parser.add_argument(
        "-f",
        "--parameters-file",
        dest="files",
        action="append",
        type=Path,
        default=[],
        help=files_help,
    )
    parser.add_argument(
        "-p",
        "--parameter",
        dest="params",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="one parameter; VALUE is read as YAML",
    )


def values(args: argparse.Namespace) -> dict[str, Any]:
    """The files' parameters, later files winning, then each -p."""
    from runbook_lib import execute

    parameters = execute.load_parameter_files(args.files)
    for name, value in args.params:
        parameters[name] = yaml.safe_load(value)
    return parameters
