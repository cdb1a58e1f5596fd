"""Step 5: row counts per table, primary against standby, once the standby has replayed up to
the primary's current LSN."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from runbook_lib.compare.counts import row_counts
from runbook_lib.compare.keys import list_tables
from runbook_lib.connection import connect
from runbook_lib.display import TextWithTables
from runbook_lib.errors import PreconditionError
from runbook_lib.standby.backup import in_recovery
from runbook_lib.standby.config import StandbyConfig
from runbook_lib.standby.replay import CURRENT_LSN_SQL, bring_standby_to, last_replay_lsn

LABELS = ("primary", "standby")


@dataclass
class CountComparison(TextWithTables):
    replayed_to: dict[str, str]
    counts: pd.DataFrame
    primary_quiet: bool
    settled: bool = True  # False: counted where the standby was, without a WAL switch

    @property
    def all_match(self) -> bool:
        return bool(self.counts["match"].all())

    def __repr__(self) -> str:
        matching = int(self.counts["match"].sum())
        head = (
            f"standby replayed to {self.replayed_to['replay_lsn']} (primary was at "
            f"{self.replayed_to['target_lsn']}): {matching} of {len(self.counts)} tables match"
        )
        if not self.settled:
            head = (
                f"standby at replay LSN {self.replayed_to['replay_lsn']}, primary at "
                f"{self.replayed_to['target_lsn']}, not brought up to date (that needs a WAL "
                f"switch on the primary; a dry run changes nothing): {matching} of "
                f"{len(self.counts)} tables match, differences may be in flight"
            )
        elif not self.all_match and not self.primary_quiet:
            head += " (the primary took writes while counting: differences may be in flight)"
        return f"{head}\n{self.counts.to_string(index=False)}"


def compare_row_counts(cfg: StandbyConfig, *, settle: bool = True) -> CountComparison | str:
    """Exact count(*) per table in compare_schemas on both servers (needs hot_standby).

    settle=False (a dry run) counts without first switching WAL and waiting for replay: it
    writes nothing, and differences may be in flight."""
    if not cfg.hot_standby:
        return "skipped: hot_standby is off, so the standby cannot be queried"
    if in_recovery(cfg) is False:
        return "skipped: the standby has been promoted; it no longer follows the primary"
    with connect(cfg.primary()) as primary:
        if settle:
            replayed = bring_standby_to(cfg, primary)
        else:
            now = primary.execute(CURRENT_LSN_SQL).fetchone()["l"]
            replayed = {
                "target_lsn": now,
                "replay_lsn": last_replay_lsn(cfg) or "",
                "primary_lsn_after_switch": "",
            }
        tables = list_tables(primary, list(cfg.compare_schemas))
        if not tables:
            raise PreconditionError(
                f"no tables in schemas {list(cfg.compare_schemas)} on the primary; "
                "set compare_schemas"
            )
        counts = row_counts(cfg.primary(), cfg.standby(), tables, labels=LABELS)
        now = primary.execute(CURRENT_LSN_SQL).fetchone()["l"]
    quiet = settle and now == replayed["primary_lsn_after_switch"]
    result = CountComparison(replayed, counts, quiet, settled=settle)
    if quiet and not result.all_match:
        differing = counts.loc[~counts["match"], "table"].tolist()
        raise PreconditionError(
            f"the standby differs from an idle primary after replaying to its LSN: {differing}; "
            "the standby is not a faithful copy: rebuild it and read both servers' logs"
        )
    return result
