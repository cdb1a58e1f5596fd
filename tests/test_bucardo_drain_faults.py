"""The drain (step 6) under faults, with the workload writing throughout: the Bucardo daemon
killed with kill -9 mid-wait stops the step at once; a 3-second restart of the target does not
fail it; a re-run under load reports done; and nothing is lost."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from test_bucardo_bootstrap import (
    STEP_NAMES,
    Workload,
    assert_same_everywhere,
    config_of,
    run_steps,
)

from runbook_lib import bucardo as bb
from runbook_lib.bucardo.ctl import BucardoCtl
from runbook_lib.connection import connect
from runbook_lib.errors import PartiallyApplied
from runbook_lib.lab import lab as lab_module

pytestmark = pytest.mark.slow

DRAIN_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def pair(lab_factory) -> Iterator[tuple[lab_module.Lab, Workload]]:
    """Steps 1-5 done (autokick still off) while the workload writes; it keeps writing."""
    the_lab = lab_factory("bucardo-faults")
    workload = Workload(the_lab, "faults")
    try:
        run_steps(config_of(the_lab, drain_timeout_s=DRAIN_TIMEOUT_S), STEP_NAMES[:5])
        yield the_lab, workload
    finally:
        workload.stop()


def hold_rows_on_target(cfg: bb.BootstrapConfig, seconds: float, then=None) -> threading.Thread:
    """Row locks on the target for `seconds` block Bucardo's apply (the wait goes on), then
    `then()` runs while they are still held."""

    def run() -> None:
        try:
            with connect(cfg.target) as blocker, blocker.transaction():
                blocker.execute("SELECT id FROM public.bar FOR UPDATE").fetchall()
                time.sleep(seconds)
                if then:
                    then()
        except psycopg.OperationalError:
            pass  # then() restarted the server under this session

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    time.sleep(0.5)
    return thread


def test_drain_stops_within_seconds_when_the_daemon_is_killed_mid_wait(pair):
    the_lab, _ = pair
    cfg = config_of(the_lab, drain_timeout_s=DRAIN_TIMEOUT_S)
    bucardo = BucardoCtl(cfg)
    killed_at: list[float] = []

    def kill_daemon() -> None:
        killed_at.append(time.monotonic())
        os.kill(bucardo.mcp_pid(), signal.SIGKILL)

    holder = hold_rows_on_target(cfg, 10, then=kill_daemon)
    with pytest.raises(PartiallyApplied) as err:
        bb.enable_and_drain(cfg)
    stopped_after = time.monotonic() - killed_at[0]
    holder.join()
    message = str(err.value)
    print(f"drain stopped {stopped_after:.1f} s after kill -9 of the daemon")
    assert stopped_after < 10, "stops at once, not after drain_timeout_s"
    assert "autokick switched on" in message  # what this run had changed
    assert "is no longer running" in message and "Bucardo objects step (3)" in message
    assert "continues the wait" not in message
    # the advice works: step 3 starts the daemon again, step 6 then finishes
    assert "daemon (re)started" in bb.make_runbook(cfg).run("bucardo_objects").summary
    assert bb.enable_and_drain(cfg).already_done


def test_a_three_second_restart_of_the_target_during_the_drain_does_not_fail_it(pair, caplog):
    caplog.set_level(logging.INFO, logger="runbook_lib")
    the_lab, _ = pair
    cfg = config_of(the_lab, drain_timeout_s=DRAIN_TIMEOUT_S)
    there = the_lab.cluster("there")
    stopped: list[float] = []

    def restart_target() -> None:  # ends the blocker's own session too
        there.stop()
        stopped.append(time.monotonic())
        time.sleep(3)
        there.start()

    holder = hold_rows_on_target(cfg, 3, then=restart_target)
    result = bb.enable_and_drain(cfg)
    finished = time.monotonic()
    holder.join()
    assert stopped and stopped[0] < finished, "the restart happened during the wait"
    assert "failed, retrying" in caplog.text, "the probe met the restart and retried"
    assert result.already_done  # autokick was on: a re-run under load reports done
    assert "caught up" in result.summary


def test_rerun_under_load_reports_done_and_nothing_is_lost(pair):
    the_lab, workload = pair
    cfg = config_of(the_lab, drain_timeout_s=DRAIN_TIMEOUT_S)
    result = bb.make_runbook(cfg).run("enable_and_drain")
    assert result.already_done, result.summary
    committed = workload.stop()
    assert committed > 50, "the workload wrote throughout"
    assert_same_everywhere(cfg, workload.ledger)
