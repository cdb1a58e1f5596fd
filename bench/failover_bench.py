"""Warm standby in both modes on a throwaway lab: steady replay lag against archive_timeout_s,
and failover time (trigger to read-write), measured in the same run.

    .venv/bin/python bench/failover_bench.py [--archive-timeout 10] [--observe 30] [--drills 3]

For each mode the standby is built from scratch, lag is sampled every second for --observe
seconds while a heartbeat row is written on the primary (time lag = age of the newest heartbeat
the standby replayed), then the failover drill runs --drills times (each on a rebuilt standby).
Targets (issue 6): failover within 3 s in both modes; steady lag within archive_timeout_s + 5 s.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path

from runbook_lib import standby
from runbook_lib.lab import lab as lab_module
from runbook_lib.lab.parameters import warm_standby_parameters

FAILOVER_TARGET_S = 3.0
LAG_MARGIN_S = 5.0


def reset_standby(cfg: standby.StandbyConfig) -> None:
    cfg.standby_cluster().stop(mode="immediate")
    host = cfg.standby_os_host
    if host.exists(cfg.standby_datadir):
        host.remove_tree(cfg.standby_datadir)
    if host.exists(cfg.trigger_file):
        Path(cfg.trigger_file).unlink()


def bench_mode(values: dict, mode: str, observe_s: float, drills: int) -> dict:
    cfg = standby.validate(**{**values, "mode": mode})
    reset_standby(cfg)
    standby.build_standby(cfg)
    lag = standby.status(cfg, observe_s=observe_s).lag
    steady = lag[lag["t_s"] >= cfg.archive_timeout_s]  # after one full archive_timeout
    times = []
    for _ in range(drills):
        reset_standby(cfg)
        standby.build_standby(cfg)
        times.append(standby.failover_drill(cfg).trigger_to_read_write_s)
    reset_standby(cfg)
    return {
        "mode": mode,
        "lag_median_s": float(steady["time_lag_s"].median()),
        "lag_max_s": float(steady["time_lag_s"].max()),
        "lag_bound_s": cfg.archive_timeout_s + LAG_MARGIN_S,
        "failover_median_s": statistics.median(times),
        "failover_max_s": max(times),
        "failover_all_s": times,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive-timeout", type=int, default=10)
    parser.add_argument("--observe", type=float, default=30)
    parser.add_argument("--drills", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["standby", "pg_standby"])
    args = parser.parse_args()
    parent = Path(tempfile.mkdtemp(prefix="failover-bench-"))
    parent.chmod(0o755)
    root = parent / "lab"
    try:
        the_lab = lab_module.up(root, first_port=random.randrange(20000, 60000, 100))
        os.environ["PGPASSFILE"] = str(the_lab.passfile)  # the lab's servers want its password
        values = {
            **warm_standby_parameters(the_lab),
            "archive_timeout_s": args.archive_timeout,
            "failover_drill": True,
        }
        standby.configure_archiving(standby.validate(**values))
        results = [bench_mode(values, m, args.observe, args.drills) for m in args.modes]
    finally:
        lab_module.down(root, purge=True)
        parent.rmdir()
    print(
        f"archive_timeout_s = {args.archive_timeout}, lag observed {args.observe:g} s per mode, "
        f"{args.drills} drills per mode"
    )
    print(
        f"{'mode':12} {'lag p50 s':>10} {'lag max s':>10} {'max/bound':>10} "
        f"{'failover p50 s':>15} {'failover max s':>15} {'max/3 s':>8}"
    )
    for r in results:
        print(
            f"{r['mode']:12} {r['lag_median_s']:10.2f} {r['lag_max_s']:10.2f} "
            f"{r['lag_max_s'] / r['lag_bound_s']:10.2f} {r['failover_median_s']:15.3f} "
            f"{r['failover_max_s']:15.3f} {r['failover_max_s'] / FAILOVER_TARGET_S:8.2f}"
        )
    if len(results) == 2:
        a, b = results
        print(
            f"failover {b['mode']} / {a['mode']}: "
            f"{b['failover_median_s'] / a['failover_median_s']:.2f}x"
        )
    ok = all(
        r["lag_max_s"] <= r["lag_bound_s"] and r["failover_max_s"] <= FAILOVER_TARGET_S
        for r in results
    )
    print("targets met" if ok else "TARGETS MISSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
