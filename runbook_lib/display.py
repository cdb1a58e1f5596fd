"""How step results show in a notebook: text for logs and terminals, HTML for JupyterLab and the
archived HTML, PNG for figures (whatever matplotlib backend the kernel has)."""

from __future__ import annotations

import dataclasses
import datetime as dt
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
            out.append(frame_html(piece))
        elif piece.strip():
            out.append(f"<pre>{html.escape(piece.strip())}</pre>")
    return "\n".join(out)


def frame_html(frame: pd.DataFrame) -> str:
    """A DataFrame as an HTML table for people: no NaN, floats rounded, and a wide table
    scrolls inside its own box instead of widening the page."""
    frame = frame.copy()
    for column in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[column]):  # None as well as NaN
            frame[column] = frame[column].astype(object).where(frame[column].notna(), "")
    table = frame.to_html(index=False, na_rep="", float_format=humane)
    return f"<div style='overflow-x:auto;max-width:100%'>{table}</div>"


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


def human_bytes(count: float | None) -> str:
    """A byte count as pg_size_pretty writes it (1024-based): 512 bytes, 16 MB, 1.5 GB."""
    if count is None or pd.isna(count):
        return ""
    value = float(count)
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            shown = f"{value:.0f}" if unit == "bytes" or value >= 100 else f"{value:.1f}"
            return f"{shown.removesuffix('.0')} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def humane(value: Any) -> str:
    """A value for a person: empty for missing, floats rounded, times to the second."""
    if value is None or (not isinstance(value, str | bool) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}".rstrip("0").rstrip(".")
    if isinstance(value, pd.Timestamp | dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    return str(value)


def fields_table(values: dict[str, Any], byte_fields: tuple[str, ...] = ()) -> str:
    """One record as a two-column HTML table (field, value), sizes in human units."""
    rows = "".join(
        f"<tr><th style='text-align:left'>{html.escape(name)}</th>"
        f"<td style='text-align:left'>"
        f"{html.escape(human_bytes(v) if name in byte_fields else humane(v))}</td></tr>"
        for name, v in values.items()
    )
    return f"<table>{rows}</table>"
