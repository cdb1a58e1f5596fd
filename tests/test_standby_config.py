"""The warm standby's parameters and the settings it writes, without servers."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest

from runbook_lib import params
from runbook_lib.errors import ConfigurationError
from runbook_lib.lab.lab import Lab
from runbook_lib.lab.parameters import warm_standby_parameters
from runbook_lib.standby import backup, config
from runbook_lib.standby.tools import archive_command, restore_command

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "warm_standby.ipynb"
EXAMPLE = Path(__file__).resolve().parent.parent / "parameters"


def good(**override: Any) -> dict[str, Any]:
    values = {
        "primary_host": "127.0.0.1",
        "primary_port": 5432,
        "pgsuperuser": "postgres",
        "pgdatabase": "widgets",
        "archive_dir": "/srv/wal archive",
        "standby_datadir": "/srv/standby/data",
        "standby_port": 5433,
        "mode": "standby",
        "trigger_file": "/srv/standby/failover.trigger",
        "archive_timeout_s": 60,
        "restart_primary_command": ["systemctl", "restart", "postgresql@15-main"],
        "hot_standby": True,
        "failover_drill": False,
    }
    values.update(override)
    return values


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"mode": "streaming"}, "mode must be one of"),
        ({"archive_dir": "relative/archive"}, "archive_dir must be an absolute path"),
        ({"standby_datadir": "/srv/../etc"}, "must not contain '..'"),
        ({"standby_port": 70000}, "standby_port must be a port"),
        ({"primary_port": True}, "primary_port must be a port"),
        ({"archive_timeout_s": 0}, "archive_timeout_s must be whole seconds"),
        ({"archive_timeout_s": 1.5}, "archive_timeout_s must be whole seconds"),
        ({"hot_standby": "yes"}, "hot_standby must be true or false"),
        ({"failover_drill": True, "hot_standby": False}, "failover_drill needs hot_standby"),
        ({"restart_primary_command": [""]}, "restart_primary_command must be a list"),
        ({"archive_dir": "/srv/standby/data/archive"}, "must not contain one another"),
        ({"trigger_file": "/srv/standby/data/trigger"}, "trigger_file must live outside"),
        ({"compare_schemas": "public"}, "compare_schemas must be a list"),
        ({"primary_ssh": "-oProxyCommand=x"}, "primary_ssh must be"),
        ({"standby_ssh": "a b"}, "standby_ssh must be"),
        ({"standby_address": "db 1"}, "standby_address must be"),
        ({"ssh_config": "ssh/config"}, "ssh_config must be an absolute path"),
        ({"primary_ssh": "postgres@db1"}, "set archive_server_ssh"),
        (
            {"mode": "pg_standby", "standby_ssh": "db2", "archive_ssh": "db3"},
            "pg_standby mode needs the archive on the standby's machine",
        ),
    ],
)
def test_validate_rejects_bad_parameters(override: dict[str, Any], message: str):
    with pytest.raises(ConfigurationError, match=message):
        config.validate(**good(**override))


def test_validate_accepts_a_command_line_string_as_argv():
    cfg = config.validate(**good(restart_primary_command="pg_ctlcluster 15 main restart"))
    assert cfg.restart_primary_command == ("pg_ctlcluster", "15", "main", "restart")
    assert config.validate(**good(restart_primary_command=[])).restart_primary_command == ()


def test_standby_mode_settings_use_cleanup_and_a_non_waiting_restore_command():
    cfg = config.validate(**good())
    settings = backup.recovery_settings(cfg, 15)
    restore = shlex.split(settings["restore_command"])
    assert restore[:2] == ["/bin/sh", str(cfg.standby_tools_dir / "runbook-restore-wal")]
    assert "--wait" not in restore and "--trigger" not in restore
    assert restore[-3:] == ["%f", "%p", "%r"]
    assert restore[restore.index("--archive") + 1] == "/srv/wal archive"  # quoted for the shell
    assert shlex.split(settings["archive_cleanup_command"])[1:] == ["/srv/wal archive", "%r"]
    assert "recovery_prefetch" not in settings
    assert settings["primary_conninfo"] == ""


def test_pg_standby_mode_settings_wait_turn_prefetch_off_and_remove_the_trigger():
    cfg = config.validate(**good(mode="pg_standby"))
    settings = backup.recovery_settings(cfg, 15)
    restore = shlex.split(settings["restore_command"])
    assert "--wait" in restore
    assert restore[restore.index("--trigger") + 1] == "/srv/standby/failover.trigger"
    assert "--cleanup" in restore
    assert settings["recovery_prefetch"] == "off"
    assert shlex.split(settings["recovery_end_command"]) == [
        "rm",
        "-f",
        "/srv/standby/failover.trigger",
    ]
    assert settings["archive_cleanup_command"] == ""


def test_pg_standby_mode_on_14_leaves_out_recovery_prefetch_which_14_does_not_know():
    cfg = config.validate(**good(mode="pg_standby"))
    assert "recovery_prefetch" not in backup.recovery_settings(cfg, 14)
    assert "--wait" in shlex.split(backup.recovery_settings(cfg, 14)["restore_command"])


def test_archive_cleanup_off_removes_nothing_in_either_mode():
    for mode in config.MODES:
        cfg = config.validate(**good(mode=mode, archive_cleanup=False))
        assert "--cleanup" not in restore_command(cfg, cfg.standby_tools_dir)
        assert backup.recovery_settings(cfg, 15)["archive_cleanup_command"] == ""


def test_merged_auto_conf_replaces_earlier_values_and_keeps_the_rest():
    current = (
        "# Do not edit this file manually!\narchive_mode = 'on'\nport = '5432'\n"
        f"{backup.MARK} old\nrestore_command = 'old'\n"
    )
    merged = backup.merged_auto_conf(current, {"port": "5433", "restore_command": "it's new"})
    assert "archive_mode = 'on'" in merged
    assert merged.count("port =") == 1 and "port = '5433'" in merged
    assert "restore_command = 'it''s new'" in merged
    assert merged.count(backup.MARK) == 1
    assert (
        backup.merged_auto_conf(merged, {"port": "5433", "restore_command": "it's new"}) == merged
    )


def test_lab_parameter_file_matches_the_notebook_parameters(tmp_path: Path):
    lab = Lab(tmp_path, {"primary": 5999}, 6000, 1)
    values = warm_standby_parameters(lab)
    declared = params.declared_parameters(NOTEBOOK)
    # interactive is the command's to set (runbook run: false, runbook open: true): a file that
    # says false would turn the confirmations off in JupyterLab
    assert set(values) == set(declared) - {"interactive"}
    params.check_parameters(NOTEBOOK, values)
    config.validate(**values)


def test_production_example_matches_the_notebook_parameters():
    import yaml

    values = yaml.safe_load((EXAMPLE / "warm_standby.example-production.yaml").read_text())
    assert set(values) == set(params.declared_parameters(NOTEBOOK))
    params.check_parameters(NOTEBOOK, values)
    config.validate(**values)


def test_the_archive_is_reached_over_ssh_only_from_a_machine_it_is_not_on():
    local = config.validate(**good())
    assert local.archive_on_primary_side and local.archive_on_standby_side
    assert "--ssh" not in restore_command(local, local.standby_tools_dir)

    # the notebook on the standby's machine (the archive there), the primary elsewhere
    on_standby = config.validate(
        **good(primary_ssh="postgres@db1", archive_server_ssh="postgres@db2")
    )
    assert not on_standby.archive_on_primary_side and on_standby.archive_on_standby_side
    command = archive_command(on_standby, on_standby.standby_tools_dir, local=False)
    assert "--ssh postgres@db2 " in command and "--remote-program" in command
    assert "runbook-restore-wal" in restore_command(on_standby, on_standby.standby_tools_dir)
    settings = backup.recovery_settings(on_standby, 15)
    assert "--ssh" not in settings["archive_command"], "promoted, it archives on its own disk"

    # an archive host of its own: the standby fetches over SSH and cleans up there
    own = config.validate(
        **good(primary_ssh="db1", standby_ssh="db2", archive_ssh="root@db3",
               archive_server_ssh="postgres@db3", server_ssh_options=["-F", "/etc/x"])
    )  # fmt: skip
    restore = restore_command(own, own.standby_tools_dir)
    assert restore.endswith("--fetch %f %p") and "--ssh postgres@db3" in restore
    assert "--ssh-option=-F --ssh-option=/etc/x" in restore
    settings = backup.recovery_settings(own, 15)
    assert settings["archive_cleanup_command"].endswith("--cleanup-before %r")
    assert "--ssh postgres@db3" in settings["archive_command"]

    # a shared mount: every server writes and reads archive_dir on its own disk
    shared = config.validate(**good(primary_ssh="db1", standby_ssh="db2", archive_shared=True))
    assert shared.archive_on_primary_side and shared.archive_on_standby_side
