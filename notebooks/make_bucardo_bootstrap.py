"""Write notebooks/bucardo_bootstrap.ipynb, without outputs.

Run: .venv/bin/python notebooks/make_bucardo_bootstrap.py
"""

from __future__ import annotations

from pathlib import Path

import notebook_source

PARAMETERS = """\
pgdatabase: str = "widgets"  # database to replicate (same name on both servers)
pghost: str = "here.example.com"  # source server (it keeps taking writes throughout)
pgport: int = 5432  # source port
pghost2: str = "there.example.com"  # target server (the database is created there)
pgport2: int = 5432  # target port
pgsuperuser: str = "postgres"  # superuser on both servers (password: .pgpass, never here)
bucardouser: str = "bucardo"  # superuser role of Bucardo's control cluster
here: str = "here"  # Bucardo's name for the source database
there: str = "there"  # Bucardo's name for the target database
tables: list[str] = []  # 'schema.table' (exact case); empty: all keyed tables of schemas
schemas: list[str] = ["public"]  # schemas whose keyed tables are replicated when `tables` is empty
relgroup: str = "widgets_rels"  # Bucardo relgroup holding the tables
dbgroup: str = "widgets_dbs"  # Bucardo dbgroup: here and there, both as source
sync: str = "widgets_sync"  # Bucardo sync name
bucardo_host: str = "localhost"  # host of Bucardo's control database (installed when missing)
bucardo_port: int = 5432  # port of Bucardo's control database
bucardo_dbname: str = "bucardo"  # name of Bucardo's control database
bucardo_rundir: str = "/var/run/bucardo"  # Bucardo's pid files, logs, rc file and the schema dump
copy_roles: bool = False  # copy roles (pg_dumpall --roles-only) to the target first
conflict_strategy: str = ""  # empty: priority list here first; or bucardo_latest
sequence_strategy: str = "interleave"  # interleave (here odd, there even), or none
copy_jobs: int = 2  # tables copied in parallel
drain_timeout_s: float = 600  # how long to wait for the backlog to replicate
dry_run: bool = False  # run read-only steps; show the commands and SQL of changing steps instead of running them
interactive: bool = True  # JupyterLab: confirm each changing step in the step panel (runbook run sets False)
"""  # noqa: E501 (the contract's exact text for dry_run and interactive)

CELLS = [
    (
        "md",
        "# Bootstrap Bucardo master/master replication\n\n"
        "Adds a second master (`there`) to a live database (`here`) with no downtime and no "
        "data lost: change capture starts first, the data is copied from a snapshot taken "
        "after it, the backlog is then replicated, and both databases are compared. Every "
        "step can be re-run: it detects work already done. Passwords come from `.pgpass`, "
        "`PGPASSFILE` or a service file, never from parameters.",
    ),
    ("params", PARAMETERS),
    (
        "md",
        "## Parameters check\nEvery parameter is validated at once; a bad value stops here, "
        "before anything is changed.",
    ),
    (
        "code",
        "from runbook_lib import bucardo as bb\n\ncfg = bb.from_namespace(globals())\ncfg",
    ),
    (
        "md",
        "## Steps\nEvery step below is one `runbook.run(...)` call; the panel shows each step's "
        "state and duration. In JupyterLab, in a run started with `runbook open`: run all "
        "cells first (read-only steps run; a step that changes a server waits in its cell), "
        "then run each step with the panel's button, ticking the confirmation for a step that "
        "changes servers (or tick it and re-run the step's cell); the result lands in the "
        "step's own cell. With `dry_run` the read-only steps (1, 7) run and "
        "the changing ones show the exact commands and SQL they would run instead; nothing is "
        "changed.",
    ),
    (
        "code",
        "from runbook_lib.panel import step_panel\n\n"
        "runbook = bb.make_runbook(cfg, dry_run=dry_run, interactive=interactive)\n"
        "step_panel(runbook)",
    ),
    (
        "md",
        "## 1. Preflight (read-only)\nBoth servers reachable, superuser, Bucardo present, "
        "plperlu on the control cluster, every table keyed (tables without a key are named "
        "and left out, or stop the run when listed explicitly), the target absent, empty or "
        "a resumed run of this bootstrap, and the sequences behind serial/identity columns "
        "with the strategy that will be applied.",
    ),
    ("code", 'runbook.run("preflight")'),
    (
        "md",
        "## 2. Target schema\nThe target database is created and the source's structure "
        "(pre-data: types, tables, sequences, functions) restored. Keys, indexes and "
        "constraints are built after the data (step 4); Bucardo's triggers are never "
        "copied. A marker table `runbook_bootstrap.marker` is created on the source for "
        "step 8.",
    ),
    ("code", 'runbook.run("target_schema")'),
    (
        "md",
        "## 3. Bucardo objects\nBucardo's control database (installed when missing), both "
        "databases, the relgroup, the dbgroup with both as `source`, and the sync with "
        "`autokick=0` and an explicit conflict strategy. From here on every change on either "
        "side is logged in the delta queue. The daemon is (re)started after the sync exists "
        "so that its purge process runs.",
    ),
    ("code", 'runbook.run("bucardo_objects")'),
    (
        "md",
        "## 4. Data copy\nAll tables streamed in parallel (`copy_jobs`) from one snapshot "
        "taken now, after `add sync`, into the target with `session_replication_role=replica`; "
        "then keys, indexes and constraints are built. Rows written meanwhile are in the "
        "delta queue.",
    ),
    ("code", 'runbook.run("data_copy")'),
    (
        "md",
        "## 5. Sequences\nBefore both sides take writes: with `interleave`, every sequence "
        "behind a replicated serial/identity column counts by 2, odd on `here`, even on "
        "`there`, restarted above every id either side has used.",
    ),
    ("code", 'runbook.run("sequences")'),
    (
        "md",
        "## 6. Enable and drain\nAutokick on, reload, kick, and wait until every change "
        "logged before this step is replicated (the backlog does not drain by itself).",
    ),
    ("code", 'runbook.run("enable_and_drain")'),
    ("code", 'runbook.plot("enable_and_drain")'),
    (
        "md",
        "## 7. Verify\nExact row counts and content fingerprints per table on both sides. "
        "Keys that differ while writes flow are re-checked after the next drain; only "
        "differences that persist count, and then this cell fails.",
    ),
    ("code", 'runbook.run("verify")'),
    ("md", "## 8. Both directions\nA marker row written on each side must appear on the other."),
    ("code", 'runbook.run("both_directions")'),
]


if __name__ == "__main__":
    print(notebook_source.write(CELLS, Path(__file__).with_name("bucardo_bootstrap.ipynb")))
