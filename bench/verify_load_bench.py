"""Benchmark: the bootstrap's verify step under full pgbench load against the same pair quiet.

    .venv/bin/python bench/verify_load_bench.py                  # pgbench scale 50 (5 M accounts)
    .venv/bin/python bench/verify_load_bench.py --pgbench-scale 10 --repeat 3   # rounds weigh more

One throwaway lab: pgbench tables (plus the lab's sample data) on `here`, bootstrapped through
the drain with no load. Then, in the same run, alternately: verify on the quiet pair, and verify
while `pgbench -c 2` runs unthrottled (TPC-B: every transaction updates a branch, a teller and an
account row, so some rows are always in flight). Printed: each time, the keys the loaded verify
followed and proved, and the ratio loaded / quiet (target: 2 or less). The machine is shared and
noisy: compare ratios within one run, never absolute times across runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from loads import Pgbench, pgbench_init  # noqa: E402

from runbook_lib import bucardo as bb  # noqa: E402
from runbook_lib.lab import lab as lab_module  # noqa: E402


def _timed_verify(cfg: bb.BootstrapConfig) -> tuple[float, str]:
    t0 = time.monotonic()
    result = bb.make_runbook(cfg).run("verify")
    return time.monotonic() - t0, result.summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pgbench-scale", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    parent = Path(tempfile.mkdtemp(prefix="verify-bench-", dir="/var/tmp"))
    parent.chmod(0o755)
    the_lab = lab_module.up(parent / "lab", scale=1)
    os.environ["PGPASSFILE"] = str(the_lab.passfile)  # the lab's servers want its password
    try:
        params = yaml.safe_load((the_lab.parameters_dir / "bucardo_bootstrap.yaml").read_text())
        cfg = bb.validate_parameters(**params | {"verify_timeout_s": 600})
        pgbench_init(cfg.source, args.pgbench_scale)
        runbook = bb.make_runbook(cfg)
        for step in ("preflight", "target_schema", "bucardo_objects", "data_copy",
                     "sequences", "enable_and_drain"):  # fmt: skip
            runbook.run(step)
        quiet, loaded = [], []
        for i in range(args.repeat):
            bb.wait_caught_up(cfg, timeout_s=300, strict=True)
            seconds, _ = _timed_verify(cfg)
            quiet.append(seconds)
            print(f"quiet  #{i + 1}: {seconds:6.2f} s", flush=True)
            pgbench = Pgbench(cfg.source)
            time.sleep(3)  # at full speed before verify starts
            try:
                seconds, summary = _timed_verify(cfg)
            finally:
                pgbench.stop()
            loaded.append(seconds)
            print(f"loaded #{i + 1}: {seconds:6.2f} s  ({summary})", flush=True)
            print(f"  pgbench: {pgbench.transactions()} transactions, errors: "
                  f"{len(pgbench.errors())}", flush=True)  # fmt: skip
        ratio = statistics.median(loaded) / statistics.median(quiet)
        print(f"verify under full pgbench load / quiet (medians): {ratio:.2f}  (target <= 2)")
    finally:
        lab_module.down(the_lab.root, purge=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
