"""What a comparison returns: a verdict per table, the differing keys, when each side was read."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from runbook_lib.errors import RunbookError

VERDICTS = ("identical", "different")


class DataMismatch(RunbookError):
    """The two databases do not hold the same rows."""


@dataclass
class Comparison:
    identical: bool
    summary: pd.DataFrame
    differences: pd.DataFrame
    read_at: dict
    labels: tuple[str, str] = ("here", "there")
    notes: list[str] = field(default_factory=list)
    # per table: differing key -> (row hash on side a, on side b), None where the row is absent
    found: dict[str, dict[tuple[str, ...], tuple[int | None, int | None]]] = field(
        default_factory=dict
    )
    incomplete: set[str] = field(default_factory=set)  # tables with more differing keys than listed

    def different_tables(self) -> list[str]:
        return list(self.summary.loc[self.summary["verdict"] != "identical", "table"])

    def describe(self) -> str:
        """One line per table that differs, with example keys."""
        lines = []
        for row in self.summary.itertuples(index=False):
            if row.verdict == "identical":
                continue
            detail = f"{row.table}: {row.verdict}"
            if row.example_keys:
                detail += f" (keys {row.example_keys}{' ...' if row.more_keys else ''})"
            elif row.note:
                detail += f" ({row.note})"
            lines.append(detail)
        return "; ".join(lines)

    def raise_if_different(self) -> None:
        if self.identical:
            return
        raise DataMismatch(
            f"{len(self.different_tables())} table(s) differ between {self.labels[0]} and "
            f"{self.labels[1]}: {self.describe()}. If writes were still arriving, wait until the "
            "pair is quiesced (pass settle=) and compare again; otherwise inspect these rows on "
            "both sides before going on."
        )

    def _repr_html_(self) -> str:
        verdict = "identical" if self.identical else "DIFFERENT"
        return f"<p><b>Comparison: {verdict}</b></p>" + self.summary.to_html(index=False)

    def __repr__(self) -> str:
        verdict = "identical" if self.identical else "DIFFERENT"
        return f"Comparison: {verdict}\n{self.summary.to_string(index=False)}"
