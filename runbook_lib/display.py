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
