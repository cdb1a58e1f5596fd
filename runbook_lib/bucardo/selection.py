"""Which tables the sync replicates: `tables`, or every keyed table of `schemas`.

Bucardo 5.6 replicates plain tables only (`add table` looks for relkind 'r'), so a partitioned
table is replicated through its leaf partitions: naming the parent (at any level of the tree)
means all its leaves, and the empty list includes the leaves of every partitioned table of
`schemas`. A partition created after `add sync` is not replicated until it is added."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from runbook_lib.bucardo import catalog
from runbook_lib.bucardo.config import BootstrapConfig
from runbook_lib.errors import ConfigurationError, PreconditionError


@dataclass(frozen=True)
class TableSelection:
    replicated: tuple[str, ...]  # schema.table of plain tables and leaf partitions
    excluded: dict[str, str]  # tables of `schemas` Bucardo cannot replicate -> why (copied once)
    rows: list[dict[str, Any]]  # top-level tables (plain and partitioned), as in the catalog
    partitions: list[dict[str, Any]] = field(default_factory=list)  # parent -> leaf, per leaf
    foreign: tuple[str, ...] = ()  # foreign-table partitions: neither copied nor replicated

    @property
    def without_key(self) -> tuple[str, ...]:
        return tuple(t for t, why in self.excluded.items() if why == NO_KEY)


NO_KEY = "no primary key or unique index"
GENERATED = "generated columns (Bucardo's COPY cannot write them)"


def _keyed(rel: dict[str, Any]) -> bool:
    return bool(rel["primary_key"] or rel["has_unique_index"])


class _Tree:
    """The catalog's relations, with each partitioned table's leaves."""

    def __init__(self, rels: list[dict[str, Any]]) -> None:
        self.by_name = {r["name"]: r for r in rels}
        self.leaves: dict[str, list[dict[str, Any]]] = {}
        for r in rels:
            if r["is_partition"] and r["relkind"] != "p":
                for parent in r["ancestors"]:
                    self.leaves.setdefault(parent, []).append(r)

    def expand(self, name: str) -> list[dict[str, Any]]:
        rel = self.by_name[name]
        return self.leaves.get(name, []) if rel["relkind"] == "p" else [rel]

    def mapping(self, parents: list[str]) -> list[dict[str, Any]]:
        rows = []
        for parent in parents:
            for leaf in self.leaves.get(parent, []):
                rows.append(
                    {
                        "parent": parent,
                        "partition": leaf["name"],
                        "level": len(leaf["ancestors"]),
                        "via": " > ".join(reversed(leaf["ancestors"])),
                        "bounds": leaf["bounds"],
                        "kind": "foreign table" if leaf["relkind"] == "f" else "table",
                    }
                )
        return rows


def select_tables(cfg: BootstrapConfig, conn: psycopg.Connection) -> TableSelection:
    """The replicated tables (raises on bad input, before anything changes)."""
    tree = _Tree(catalog.relations(conn))
    top = [r for r in tree.by_name.values() if not r["is_partition"] and r["relkind"] != "f"]
    if cfg.tables:
        unknown = [t for t in cfg.tables if t not in tree.by_name]
        if unknown:
            raise ConfigurationError(
                f"tables not found in {cfg.source}: {', '.join(unknown)} (names are case-sensitive "
                "'schema.table'; a partitioned table or a partition); fix `tables`; nothing was "
                "changed"
            )
        asked = list(cfg.tables)
    else:
        asked = [r["name"] for r in top if r["schema"] in cfg.schemas]
    leaves = [leaf for name in asked for leaf in tree.expand(name)]
    foreign = tuple(dict.fromkeys(r["name"] for r in leaves if r["relkind"] == "f"))
    plain = list(dict.fromkeys(r["name"] for r in leaves if r["relkind"] == "r"))
    no_key = [t for t in plain if not _keyed(tree.by_name[t])]
    generated = [t for t in plain if tree.by_name[t]["has_generated_columns"]]
    excluded = {t: NO_KEY for t in no_key} | {t: GENERATED for t in generated}
    if cfg.tables and foreign:
        raise PreconditionError(
            f"foreign tables cannot be replicated: {', '.join(foreign)}; remove them from "
            "`tables`; nothing was changed"
        )
    if cfg.tables and excluded:
        raise PreconditionError(
            "Bucardo cannot replicate "
            + "; ".join(f"{t}: {why}" for t, why in excluded.items())
            + ": add a key on the source (for a partitioned table, on the parent) or remove them "
            "from `tables`; nothing was changed"
        )
    replicated = tuple(t for t in plain if t not in excluded)
    if not replicated:
        raise PreconditionError(
            f"no table with a key in {'`tables`' if cfg.tables else f'schemas {list(cfg.schemas)}'}"
            f" of {cfg.source}; check `tables`/`schemas`; nothing was changed"
        )
    parents = [n for n in dict.fromkeys(asked) if tree.by_name[n]["relkind"] == "p"]
    return TableSelection(
        replicated=replicated,
        excluded=excluded,
        rows=top,
        partitions=tree.mapping(parents),
        foreign=foreign,
    )
