"""Benchmark of the Bucardo bootstrap against the seed's shell procedure, in one run.

    .venv/bin/python bench/bootstrap_bench.py                # scale 1 (~10 MB), a minute or so
    .venv/bin/python bench/bootstrap_bench.py --scale 100    # ~1 GB (the issue's target size)
    .venv/bin/python bench/bootstrap_bench.py --scale 100 --no-whole   # data copy only

Two throwaway labs at the same scale (lab A, then lab B), no workload. Printed, as ratios against
baselines measured in the same run:

- read alone: `pg_dump --data-only -N bucardo > /dev/null` (also warms the cache for both);
- data copy: the seed's pipeline (`pg_dump --schema-only | psql`, then
  `pg_dump --data-only -N bucardo | psql` with session_replication_role=replica, into a scratch
  database on `there`) against the notebook's steps 2 + 4 in lab A (pre-data structure; parallel
  streamed COPY from one snapshot, then keys and indexes), taken from the run record's cell times;
  target ratio 0.45 or less at --scale 100;
- whole procedure: the notebook (`runbook run`, every step, verify included) in lab A against the
  seed's bare shell procedure in lab B (schema | psql, bucardo install, add db/table/dbgroup/sync,
  data-only | psql, autokick on, start, reload, kick with a timeout);
- the notebook kernel's peak memory (largest child process of this script, which also runs the
  small pg_dump/psql children): it must not grow with --scale.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from runbook_lib import pgbin  # noqa: E402
from runbook_lib.connection import connect  # noqa: E402
from runbook_lib.execute import run_notebook  # noqa: E402
from runbook_lib.host import LOCAL  # noqa: E402
from runbook_lib.lab import lab as lab_module  # noqa: E402

SCRATCH_DB = "seed_copy"


def _timed(fn, *args, **kwargs) -> float:
    t0 = time.monotonic()
    fn(*args, **kwargs)
    return time.monotonic() - t0


def _env(the_lab, server: str, dbname: str, replica: bool = False) -> dict[str, str]:
    env = the_lab.endpoint(server, dbname).libpq_env()
    if replica:
        env["PGOPTIONS"] = "-c session_replication_role=replica"
    return env


def _psql(the_lab, server: str, dbname: str, command: str) -> None:
    LOCAL.run(
        [pgbin.program("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", command],
        env=_env(the_lab, server, dbname),
    )


def read_alone(the_lab) -> float:
    return _timed(
        LOCAL.run,
        [pgbin.program("pg_dump"), "--data-only", "-N", "bucardo", "-f", "/dev/null"],
        env=_env(the_lab, "here", "widgets"),
    )


def seed_copy(the_lab, dbname: str) -> float:
    """The seed's pipeline: schema-only | psql, then data-only | psql with the replica role."""

    def run() -> None:
        _psql(the_lab, "there", "postgres", f"CREATE DATABASE {dbname}")
        psql = [pgbin.program("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
        LOCAL.pipeline(
            [pgbin.program("pg_dump"), "--schema-only"],
            psql,
            producer_env=_env(the_lab, "here", "widgets"),
            consumer_env=_env(the_lab, "there", dbname),
        )
        LOCAL.pipeline(
            [pgbin.program("pg_dump"), "--data-only", "-N", "bucardo"],
            psql,
            producer_env=_env(the_lab, "here", "widgets"),
            consumer_env=_env(the_lab, "there", dbname, replica=True),
        )

    return _timed(run)


def seed_whole(the_lab) -> float:
    """The seed's bare shell procedure (REFERENCE §1), kick included so the backlog drains."""
    params = yaml.safe_load((the_lab.parameters_dir / "bucardo_bootstrap.yaml").read_text())
    rundir = Path(params["bucardo_rundir"])
    rc = rundir / "seedrc"
    rc.write_text(
        f"dbhost = 127.0.0.1\ndbport = {the_lab.ports['control']}\ndbname = bucardo\n"
        f"dbuser = bucardo\npiddir = {rundir}\nlogdest = {rundir}\n"
    )
    here, there = the_lab.ports["here"], the_lab.ports["there"]

    def bucardo(*args: str) -> None:
        LOCAL.run(["bucardo", "--bucardorc", str(rc), "--quiet", *args], cwd=rundir, timeout_s=900)

    def run() -> None:
        seed_copy_schema_only(the_lab)
        bucardo(
            "install",
            "--batch",
            "--dbhost",
            "127.0.0.1",
            "--dbport",
            str(the_lab.ports["control"]),
            "--dbname",
            "bucardo",
            "--dbuser",
            "bucardo",
            "--piddir",
            str(rundir),
        )
        for name, port in (("here", here), ("there", there)):
            bucardo(
                "add",
                "db",
                name,
                "dbname=widgets",
                "host=127.0.0.1",
                f"port={port}",
                "user=postgres",
                "--force",  # the control server cannot log in before it has the password:
            )
        with connect(the_lab.endpoint("control", "bucardo")) as conn, conn.transaction():
            conn.execute("SET LOCAL log_statement = 'none'")  # as `add db pass=...` would store
            conn.execute("UPDATE bucardo.db SET dbpass = %s", [the_lab.password()])
        tables = [
            "public.foo",
            "public.bar",
            "public.order_lines",
            "public.sku_catalog",
            "public.CustomerNotes",
            "inventory.bins",
        ]
        bucardo("add", "table", *tables, "relgroup=myrels", "db=here")
        bucardo("add", "dbgroup", "mydbs", "here:source", "there:source")
        bucardo("add", "sync", "mysync", "relgroup=myrels", "dbs=mydbs", "autokick=0")
        psql = [pgbin.program("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
        LOCAL.pipeline(
            [pgbin.program("pg_dump"), "--data-only", "-N", "bucardo"],
            psql,
            producer_env=_env(the_lab, "here", "widgets"),
            consumer_env=_env(the_lab, "there", "widgets", replica=True),
        )
        bucardo("update", "sync", "mysync", "autokick=1")
        bucardo("start", "--logdest", str(rundir), "--piddir", str(rundir))
        bucardo("reload", "config")
        bucardo("kick", "mysync", "600")

    return _timed(run)


def seed_copy_schema_only(the_lab) -> None:
    _psql(the_lab, "there", "postgres", "CREATE DATABASE widgets")
    LOCAL.pipeline(
        [pgbin.program("pg_dump"), "--schema-only"],
        [pgbin.program("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"],
        producer_env=_env(the_lab, "here", "widgets"),
        consumer_env=_env(the_lab, "there", "widgets"),
    )


def notebook(the_lab, archive: Path) -> tuple[float, dict[str, float]]:
    params = yaml.safe_load((the_lab.parameters_dir / "bucardo_bootstrap.yaml").read_text())
    params["copy_jobs"] = 2
    t0 = time.monotonic()
    result = run_notebook("bucardo_bootstrap", params, archive=archive)
    wall = time.monotonic() - t0
    summary = json.loads((result.output.parent / "summary.json").read_text())
    cells = {s["title"]: s["duration_s"] for s in summary["steps"]}
    return wall, cells


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=int, default=1, help="lab scale: 1 ~ 10 MB, 100 ~ 1 GB")
    ap.add_argument("--no-whole", action="store_true", help="skip the whole-procedure comparison")
    ap.add_argument("--dir", type=Path, help="parent directory for the labs (default: a temp dir)")
    args = ap.parse_args()
    parent = args.dir or Path(tempfile.mkdtemp(prefix="bootstrap-bench-"))
    parent.mkdir(parents=True, exist_ok=True)
    parent.chmod(0o755)
    labs = []
    try:
        t0 = time.monotonic()
        lab_a = lab_module.up(parent / "a", scale=args.scale, first_port=47000)
        os.environ["PGPASSFILE"] = str(lab_a.passfile)  # the lab's servers want its password
        labs.append(lab_a)
        print(f"lab A at scale {args.scale} built in {time.monotonic() - t0:.0f} s", flush=True)
        read_s = min(read_alone(lab_a) for _ in range(2))
        seed_s = seed_copy(lab_a, SCRATCH_DB)
        _psql(lab_a, "there", "postgres", f"DROP DATABASE {SCRATCH_DB}")
        wall_s, cells = notebook(lab_a, parent / "runs")
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        ours_copy_s = cells["2. Target schema"] + cells["4. Data copy"]
        print(f"\nscale {args.scale}")
        print(f"  read alone (pg_dump --data-only > /dev/null)      {read_s:8.2f} s")
        print(f"  seed pipeline (schema | psql, data | psql)        {seed_s:8.2f} s   1.00")
        print(
            f"  notebook steps 2 + 4 (pre-data, copy, keys)       {ours_copy_s:8.2f} s   "
            f"{ours_copy_s / seed_s:4.2f}  (target <= 0.45 at --scale 100)"
        )
        print(f"    step 4 alone                                    {cells['4. Data copy']:8.2f} s")
        print(f"  notebook kernel peak memory (largest child)       {peak_mb:8.0f} MB")
        if not args.no_whole:
            lab_module.down(lab_a.root, purge=True)
            labs.remove(lab_a)
            lab_b = lab_module.up(parent / "b", scale=args.scale, first_port=47100)
            os.environ["PGPASSFILE"] = str(lab_b.passfile)
            labs.append(lab_b)
            read_alone(lab_b)
            seed_whole_s = seed_whole(lab_b)
            print(
                f"  seed bare shell procedure (whole, with kick)      {seed_whole_s:8.2f} s   1.00"
            )
            print(
                f"  notebook, every step (verify included)            {wall_s:8.2f} s   "
                f"{wall_s / seed_whole_s:4.2f}"
            )
        else:
            print(f"  notebook, every step (verify included)            {wall_s:8.2f} s")
        print("  per cell: " + ", ".join(f"{k}={v:.2f}s" for k, v in cells.items()))
    finally:
        for the_lab in labs:
            lab_module.down(the_lab.root, purge=True)
        if not args.dir:
            shutil.rmtree(parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
