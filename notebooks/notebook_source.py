"""Build a runbook notebook from a list of cells, committed without outputs.

The generators (make_*.py) hold each notebook's text; this holds how cells become a notebook:
("md", text) markdown, ("params", text) the cell tagged `parameters`, ("code", text) a step.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

Cells = list[tuple[str, str]]


def build(cells: Cells) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    for kind, text in cells:
        if kind == "md":
            nb.cells.append(new_markdown_cell(text))
        else:
            cell = new_code_cell(text)
            if kind == "params":
                cell.metadata["tags"] = ["parameters"]
            nb.cells.append(cell)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"  # stable ids: regenerating changes nothing
    return nb


def write(cells: Cells, path: Path) -> Path:
    nbformat.write(build(cells), path)
    return path
