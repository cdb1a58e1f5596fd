"""Step results show as HTML tables and figures as PNG, in JupyterLab and in the archived HTML."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from runbook_lib.display import TextWithTables, figure_image, text_to_html
from runbook_lib.steps import Runbook, Step


@dataclass
class _Result(TextWithTables):
    counts: pd.DataFrame
    note: str

    def __repr__(self) -> str:
        return f"3 of 3 tables match\n{self.counts.to_string(index=False)}\n{self.note}"


def test_text_report_becomes_html_with_its_dataframes_as_tables():
    counts = pd.DataFrame({"table": ["public.foo", "public.<bar>"], "rows": [3, 4]})
    shown = _Result(counts, "primary was idle")._repr_html_()
    assert "<table" in shown and "<td>public.foo</td>" in shown
    assert "&lt;bar&gt;" in shown  # escaped
    assert shown.index("3 of 3 tables match") < shown.index("<table") < shown.index("primary was")


def test_a_frame_not_printed_in_the_text_is_not_invented():
    assert "<table" not in text_to_html("nothing here", [pd.DataFrame({"a": [1]})])


class _Plotted:
    def plot(self):
        from matplotlib.figure import Figure

        fig = Figure(figsize=(2, 1))
        fig.add_subplot().plot([0, 1], [1, 0])
        return fig


def test_runbook_plot_is_a_png_image_whatever_the_backend():
    image = figure_image(_Plotted().plot())
    assert image.data[:8] == b"\x89PNG\r\n\x1a\n"
    rb = Runbook("demo", [Step("status", "Status", lambda ctx: _Plotted(), changes=False)], None)
    assert "has not run" in rb.plot("status")
    rb.run("status")
    assert rb.plot("status").data[:4] == b"\x89PNG"
