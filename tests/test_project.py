"""Project hygiene: notebooks are the source (edited in JupyterLab, no generator), the conda
environment matches pyproject, CLI help."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def _requirement_name(spec: str) -> str:
    return re.split(r"[\[<>=!~ ;]", spec, maxsplit=1)[0].strip().lower()


def test_environment_yml_names_every_runtime_dependency_of_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {_requirement_name(d) for d in project["dependencies"]}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda = {_requirement_name(d) for d in env["dependencies"] if isinstance(d, str)}
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert wanted <= conda, f"missing from environment.yml: {sorted(wanted - conda)}"
    assert "-e ." in pip


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebooks_are_committed_without_outputs(notebook):
    nb = json.loads(notebook.read_text())
    dirty = [i for i, c in enumerate(nb["cells"]) if c.get("outputs") or c.get("execution_count")]
    assert not dirty, f"{notebook.name}: cells {dirty} hold outputs; strip them"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebooks_have_one_documented_parameters_cell(notebook):
    import papermill

    nb = json.loads(notebook.read_text())
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    params = papermill.inspect_notebook(str(notebook))
    assert params
    undocumented = [
        n for n, p in params.items() if not p["help"] or p["inferred_type_name"] == "None"
    ]
    assert not undocumented, f"parameters without a type or help: {undocumented}"


COMMANDS = [
    [],
    ["lab"],
    ["lab", "up"],
    ["lab", "status"],
    ["lab", "down"],
    ["lab", "restart"],
    ["lab", "workload"],
    ["run"],
    ["open"],
    ["runs"],
    ["runs", "close"],
    ["standby-status"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "runbook")
def test_every_cli_command_has_help_with_an_example(command):
    out = subprocess.run(
        [sys.executable, "-m", "runbook_lib.cli", *command, "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "example" in out.lower()
    assert "runbook " in out.split("example", 1)[1]


def test_readme_quick_start_is_two_commands():
    readme = (REPO / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = quick.split("```", 2)[1]
    commands = [
        line for line in block.splitlines()[1:] if line.strip() and not line.startswith("#")
    ]
    assert commands == ["make demo", "make test"]


PARAMETER_FILES = sorted((REPO / "parameters").glob("*.yaml"))


@pytest.mark.parametrize("path", PARAMETER_FILES, ids=[p.name for p in PARAMETER_FILES])
def test_every_parameter_file_fits_its_notebook(path):
    from runbook_lib import execute, params

    notebook = execute.resolve_notebook(path.name.split(".", 1)[0])
    values = execute.load_parameter_files([path])
    params.check_parameters(notebook, values)  # raises on unknown names or wrong types


def test_lab_parameter_files_fit_their_notebooks(shared_lab):
    from runbook_lib import execute, params

    for path in shared_lab.parameters_dir.glob("*.yaml"):
        notebook = execute.resolve_notebook(path.stem)
        params.check_parameters(notebook, execute.load_parameter_files([path]))


LIBRARY_CALL_CELL = (ast.Import, ast.ImportFrom, ast.Assign, ast.Expr)


def _library_call_problems(source: str) -> list[str]:
    """What makes a code cell more than library calls: definitions, control flow, imports from
    elsewhere, statements other than a call (or a name shown as the cell's value)."""
    problems = []
    for statement in ast.parse(source).body:
        if not isinstance(statement, LIBRARY_CALL_CELL):
            problems.append(f"{type(statement).__name__} (logic belongs in runbook_lib)")
        elif isinstance(statement, ast.ImportFrom | ast.Import):
            names = [statement.module] if isinstance(statement, ast.ImportFrom) else []
            names += [] if names else [a.name for a in statement.names]
            if not all(n and n.split(".")[0] == "runbook_lib" for n in names):
                problems.append(f"imports {names}: only runbook_lib")
        elif not isinstance(statement.value, ast.Call | ast.Name):
            problems.append(f"{ast.unparse(statement)}: not a call")
    return problems


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_code_cells_are_library_calls_without_logic(notebook):
    nb = json.loads(notebook.read_text())
    found = {
        i: problems
        for i, cell in enumerate(nb["cells"])
        if cell["cell_type"] == "code"
        and "parameters" not in cell["metadata"].get("tags", [])
        and (problems := _library_call_problems("".join(cell["source"])))
    }
    assert not found, f"{notebook.name}: cells that hold more than library calls: {found}"


def test_notebooks_folder_holds_only_notebooks():
    others = [p.name for p in (REPO / "notebooks").iterdir() if p.suffix != ".ipynb"]
    assert not others, "the notebooks are their own source: edit them in JupyterLab"
