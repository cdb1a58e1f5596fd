"""What a step returns: a one-line summary plus tables, readable as text and as HTML."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import pandas as pd


@dataclass
class StepResult:
    step: str
    summary: str
    already_done: bool = False
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.tables[name]

    def __repr__(self) -> str:
        head = f"{self.step}: {'already done; ' if self.already_done else ''}{self.summary}"
        parts = [head]
        for name, df in self.tables.items():
            parts.append(f"\n{name}:\n{df.to_string(index=False) if len(df) else '(none)'}")
        return "\n".join(parts)

    def _repr_html_(self) -> str:
        done = " <em>(already done)</em>" if self.already_done else ""
        parts = [
            f"<p><strong>{html.escape(self.step)}</strong>{done}: {html.escape(self.summary)}</p>"
        ]
        for name, df in self.tables.items():
            parts.append(f"<p><em>{html.escape(name)}</em></p>")
            parts.append(df.to_html(index=False) if len(df) else "<p>(none)</p>")
        return "\n".join(parts)
