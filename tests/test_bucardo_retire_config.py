"""The retire's parameters: the bootstrap's, checked the same way, plus `keep`, which has no
default; every problem is named at once, before anything is changed."""

from __future__ import annotations

import pytest
from test_bucardo_config import good

from runbook_lib import params as notebook_params
from runbook_lib.bucardo import retire
from runbook_lib.bucardo.retire_config import validate_retire_parameters
from runbook_lib.errors import ConfigurationError
from runbook_lib.execute import resolve_notebook


@pytest.mark.parametrize("keep", ["", "both", "HERE", None, 1])
def test_keep_must_name_here_or_there(keep):
    with pytest.raises(ConfigurationError, match="keep=.*name the database that stays"):
        validate_retire_parameters(**good(), keep=keep)


def test_a_bad_keep_is_reported_with_the_bootstraps_own_problems():
    with pytest.raises(ConfigurationError) as caught:
        validate_retire_parameters(**(good() | {"pgport": 0}), keep="old")
    assert "pgport=0" in str(caught.value) and "keep='old'" in str(caught.value)


@pytest.mark.parametrize("keep", ["here", "there"])
def test_keep_chooses_the_database_that_stays(keep):
    cfg = validate_retire_parameters(**good(), keep=keep)
    stays, goes = cfg.bootstrap.source, cfg.bootstrap.target
    if keep == "there":
        stays, goes = goes, stays
    assert (cfg.kept, cfg.retired) == (stays, goes)
    assert list(cfg.sides()) == [cfg.kept_name, cfg.retired_name]


def test_the_notebook_takes_the_bootstraps_parameters_plus_keep():
    bootstrap = notebook_params.declared_parameters(resolve_notebook("bucardo_bootstrap"))
    retiring = notebook_params.declared_parameters(resolve_notebook("bucardo_retire"))
    assert set(retiring) == set(bootstrap) | {"keep"}
    assert retiring["keep"].default in ('""', "''")


def test_every_changing_step_shows_a_plan_in_a_dry_run():
    assert [s.name for s in retire.STEPS if s.changes and s.plan is None] == []
