"""The retire runbook's parameters: the bootstrap's own (the same parameter file works for both
notebooks) plus `keep`, the database that stays. Validated at once, before anything changes."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from runbook_lib.bucardo.config import BootstrapConfig, validate_parameters
from runbook_lib.connection import Endpoint
from runbook_lib.errors import ConfigurationError

SIDES = ("here", "there")


@dataclass(frozen=True)
class RetireConfig:
    """The bootstrap's configuration and the side that stays (`here` or `there`)."""

    bootstrap: BootstrapConfig
    keep: str

    @property
    def retire(self) -> str:
        return "there" if self.keep == "here" else "here"

    def name_of(self, side: str) -> str:
        """Bucardo's name for a side (the `here`/`there` parameters)."""
        return self.bootstrap.here if side == "here" else self.bootstrap.there

    def endpoint_of(self, side: str) -> Endpoint:
        return self.bootstrap.source if side == "here" else self.bootstrap.target

    @property
    def kept(self) -> Endpoint:
        return self.endpoint_of(self.keep)

    @property
    def retired(self) -> Endpoint:
        return self.endpoint_of(self.retire)

    @property
    def kept_name(self) -> str:
        return self.name_of(self.keep)

    @property
    def retired_name(self) -> str:
        return self.name_of(self.retire)

    def sides(self) -> dict[str, Endpoint]:
        """Bucardo name -> endpoint, the kept database first."""
        return {self.kept_name: self.kept, self.retired_name: self.retired}


def _keep_problem(keep: Any) -> str | None:
    if keep in SIDES:
        return None
    return (
        f"keep={keep!r}: name the database that stays, `here` (pghost/pgport, the bootstrap's "
        "source) or `there` (pghost2/pgport2, the bootstrap's target; after an upgrade, the new "
        "server)"
    )


def validate_retire_parameters(keep: Any = "", **params: Any) -> RetireConfig:
    """The bootstrap's checks plus `keep`; every problem at once; nothing is changed."""
    problem = _keep_problem(keep)
    try:
        bootstrap = validate_parameters(**params)
    except ConfigurationError as exc:
        if problem:
            raise ConfigurationError(f"{exc}\n- {problem}") from None
        raise
    if problem:
        raise ConfigurationError(
            f"bucardo_retire parameters are invalid; nothing was changed:\n- {problem}"
        )
    return RetireConfig(bootstrap, keep)


def from_namespace(namespace: dict[str, Any]) -> RetireConfig:
    """validate_retire_parameters with the notebook's parameter variables (its globals())."""
    names = [f.name for f in fields(BootstrapConfig)] + ["keep"]
    return validate_retire_parameters(**{n: namespace[n] for n in names if n in namespace})
