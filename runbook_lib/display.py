"""How step results show in a notebook: text for logs and terminals, HTML for JupyterLab and the
archived HTML, PNG for figures (whatever matplotlib backend the kernel has)."""

from __future__ import annotations

import dataclasses
import html
import io
from typing import Any

import pandas as pd


def _frames(result: Any) -> list[pd.DataFrame]:
    return [
        value
        for f in dataclasses.fields(result)
        if isinstance(value := getattr(result, f.name), pd.DataFrame)
    ]


def text_to_html(text: str, frames: list[pd.DataFrame]) -> str:
    """A text report's HTML: each DataFrame printed in it (to_string) becomes an HTML table."""
    pieces: list[str | pd.DataFrame] = [text]
    for frame in frames:
        block = frame.to_string(index=False)
        split: list[str | pd.DataFrame] = []
        for piece in pieces:
            if isinstance(piece, str) and block in piece:
                before, after = piece.split(block, 1)
                split += [before, frame, after]
            else:
                split.append(piece)
        pieces = split
    out = []
    for piece in pieces:
        if isinstance(piece, pd.DataFrame):
            out.append(piece.to_html(index=False))
        elif piece.strip():
            out.append(f"<pre>{html.escape(piece.strip())}</pre>")
    return "\n".join(out)


class TextWithTables:
    """Mixin for step results (dataclasses with a text __repr__ that prints their DataFrames)."""

    def _repr_html_(self) -> str:
        return text_to_html(repr(self), _frames(self))


def figure_image(figure: Any) -> Any:
    """A matplotlib figure as a PNG image object that every Jupyter frontend shows."""
    from IPython.display import Image

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return Image(data=buffer.getvalue(), format="png")


@dataclasses.dataclass(frozen=True)
class Waiting:
    """What a step cell shows until its step runs: why it waits, or that it runs."""

    title: str
    reason: str

    def __repr__(self) -> str:
        return f"{self.title}: {self.reason}"

    def _repr_html_(self) -> str:
        return (
            f"<div style='color:#555'><b>{html.escape(self.title)}</b>: "
            f"<i>{html.escape(self.reason)}</i></div>"
        )


@dataclasses.dataclass(frozen=True)
class StepFailure:
    """A step that failed when started from the step panel, shown in its cell: an expected stop
    (RunbookError) as its message, anything else with its traceback."""

    title: str
    error: BaseException
    traceback: str

    def expected(self) -> bool:
        from runbook_lib.errors import RunbookError

        return isinstance(self.error, RunbookError)

    def __repr__(self) -> str:
        detail = "" if self.expected() else f"\n{self.traceback}"
        return f"{self.title} failed: {type(self.error).__name__}: {self.error}{detail}"

    def _repr_html_(self) -> str:
        detail = "" if self.expected() else f"<pre>{html.escape(self.traceback)}</pre>"
        return (
            "<div style='border-left:4px solid #c62828;padding:4px 8px'>"
            f"<b>{html.escape(self.title)} failed</b>: {html.escape(type(self.error).__name__)}: "
            f"{html.escape(str(self.error))}{detail}</div>"
        )
