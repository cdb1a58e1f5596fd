"""Step 7 (compare the two masters) and step 8 (a marker written on each side reaches the other).

The comparison uses the shared engine (runbook_lib.compare): exact row counts and chunked,
order-independent fingerprints. Writes may still flow, so mismatching keys are re-checked after
`settle` (everything written before it is replicated); only differences that persist count."""

from __future__ import annotations

import time
import uuid
from functools import partial

import pandas as pd

from runbook_lib.bucardo import catalog, drain
from runbook_lib.bucardo.config import BootstrapConfig
from runbook_lib.bucardo.objects import MARKER_TABLE, replicated_tables
from runbook_lib.bucardo.result import StepResult
from runbook_lib.connection import connect
from runbook_lib.errors import PreconditionError
from runbook_lib.waiting import wait_until

MARKER_TIMEOUT_S = 60


def quoted(name: str) -> str:
    """'schema.Table' (exact case) -> '"schema"."Table"' for the comparison engine."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in catalog.split_name(name))


def verify_databases(
    cfg: BootstrapConfig, *, progress: bool = True, kick: bool = True
) -> StepResult:
    """Compare every replicated table on both masters; raise when a difference persists."""
    from runbook_lib.compare import compare_databases

    tables = [t for t in replicated_tables(cfg) if t != MARKER_TABLE]
    comparison = compare_databases(
        cfg.source,
        cfg.target,
        tables=[quoted(t) for t in tables],
        schemas=cfg.schemas,
        settle=partial(drain.settle, cfg, kick=kick),
        labels=(cfg.here, cfg.there),
        progress=progress,
    )
    result = StepResult(
        "verify",
        f"{len(tables)} tables compared: "
        + ("identical" if comparison.identical else "DIFFERENCES persist after a drain"),
        tables={"summary": comparison.summary, "differences": comparison.differences},
    )
    if not comparison.identical:
        comparison.raise_if_different()
    return result


MARKER_INSERT = f"INSERT INTO {MARKER_TABLE} (id, written_on) VALUES (%s, %s)"


def plan_both_directions(cfg: BootstrapConfig) -> list[str]:
    return [
        f"on {ep}: {MARKER_INSERT % (repr(name + '-<uuid>'), repr(name))}; then wait up to "
        f"{MARKER_TIMEOUT_S} s for it on {other}"
        for name, ep, other in (
            (cfg.here, cfg.source, cfg.there),
            (cfg.there, cfg.target, cfg.here),
        )
    ]


def both_directions(cfg: BootstrapConfig) -> StepResult:
    """Write a marker row on each master; each must appear on the other within the timeout."""
    rows = []
    pairs = (
        (cfg.here, cfg.source, cfg.there, cfg.target),
        (cfg.there, cfg.target, cfg.here, cfg.source),
    )
    for name, ep, other_name, other in pairs:
        token = f"{name}-{uuid.uuid4()}"
        with connect(ep) as conn:
            conn.execute(MARKER_INSERT, [token, name])
        t0 = time.monotonic()
        with connect(other) as conn:

            def seen(conn=conn, token=token) -> bool:
                return (
                    conn.execute(
                        f"SELECT 1 FROM {MARKER_TABLE} WHERE id = %s",
                        [token],
                    ).fetchone()
                    is not None
                )

            try:
                wait_until(
                    seen,
                    what=f"marker {token} from {name} on {other_name}",
                    timeout_s=MARKER_TIMEOUT_S,
                    interval_s=0.1,
                )
            except Exception as exc:
                raise PreconditionError(
                    f"a row written on {name} did not reach {other_name} within "
                    f"{MARKER_TIMEOUT_S} s; see {cfg.bucardo_rundir}/daemon/log.bucardo"
                ) from exc
        rows.append(
            {
                "direction": f"{name} -> {other_name}",
                "marker": token,
                "seconds": round(time.monotonic() - t0, 2),
            }
        )
    return StepResult(
        "both directions",
        "a marker written on each side reached the other",
        tables={"markers": pd.DataFrame(rows)},
    )
