"""A notebook's parameters, declared once in its `parameters` cell (name: type = default  # help),
and checked before a kernel starts: papermill itself only warns about unknown names."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from runbook_lib.errors import ConfigurationError
from runbook_lib.redaction import redact

SECRET_NAME = re.compile(r"(?i)pass(word|wd)?$|secret|token")


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    default: str
    help: str


def declared_parameters(notebook: Path) -> dict[str, Parameter]:
    """The parameters cell of notebook, as declared (type annotation and trailing comment)."""
    import papermill

    found = papermill.inspect_notebook(str(notebook))
    return {
        name: Parameter(name, p["inferred_type_name"], p["default"], p["help"])
        for name, p in found.items()
    }


def parameters_table(notebook: Path) -> pd.DataFrame:
    return pd.DataFrame([vars(p) for p in declared_parameters(notebook).values()])


def _split_top_level(text: str, sep: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == sep and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    return parts


def value_matches(value: Any, annotation: str) -> bool:
    """Whether value fits an annotation: str, int, float, bool, list[X], dict[K, V], X | None."""
    annotation = annotation.strip()
    alternatives = _split_top_level(annotation, "|")
    if len(alternatives) > 1:
        return any(value_matches(value, alt) for alt in alternatives)
    if annotation in ("None", "NoneType"):
        return value is None
    match = re.fullmatch(r"(\w+)(?:\[(.*)\])?", annotation)
    if not match:
        return True  # an annotation we do not understand is not ours to enforce
    base, inner = match.group(1), match.group(2)
    if base == "bool":
        return isinstance(value, bool)
    if base == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if base == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if base == "str":
        return isinstance(value, str)
    if base in ("list", "List", "tuple"):
        if not isinstance(value, list | tuple):
            return False
        return inner is None or all(
            value_matches(v, _split_top_level(inner, ",")[0]) for v in value
        )
    if base in ("dict", "Dict"):
        if not isinstance(value, dict):
            return False
        if inner is None:
            return True
        key_t, val_t = (_split_top_level(inner, ",") + ["Any"])[:2]
        return all(value_matches(k, key_t) and value_matches(v, val_t) for k, v in value.items())
    return True


def secret_refusal(name: str) -> str:
    """Why a password-like value is refused (runbook run's parameters, runbook compare's
    connection strings): the same words everywhere."""
    return (
        f"{name} looks like a secret: passwords are never parameters (they would be recorded in "
        "the run archive, and every local user reads a command line); use PGPASSWORD, "
        "~/.pgpass (PGPASSFILE) or a service file"
    )


def check_parameters(notebook: Path, values: dict[str, Any]) -> None:
    """Refuse unknown names and values of the wrong type, naming the valid parameters."""
    declared = declared_parameters(notebook)
    unknown = sorted(set(values) - set(declared))
    problems = [
        secret_refusal(name)
        for name, value in values.items()
        if SECRET_NAME.search(name) or (isinstance(value, str) and redact(value) != value)
    ]
    if unknown:
        problems.append(f"unknown parameter(s) {', '.join(unknown)}")
    for name, value in values.items():
        if name in declared and not value_matches(value, declared[name].type):
            problems.append(
                f"{name} must be {declared[name].type}, got {type(value).__name__} {value!r}"
            )
    if problems:
        valid = ", ".join(f"{p.name} ({p.type})" for p in declared.values())
        raise ConfigurationError(
            f"{notebook.stem}: {'; '.join(problems)}. Valid parameters: {valid}"
        )
