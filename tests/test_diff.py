"""volreg-diff: the settings checklist against Keras for composed configs."""

import subprocess

import pytest

from volreg.diff import MISSING, check_settings, compose_config, main, same_value
from volreg.settings_catalog import SETTINGS, by_name


def mismatches(overrides, config_dir=None):
    checks = check_settings(compose_config(overrides, config_dir))
    return {check.setting.name for check in checks if not check.matches_keras}


def test_keras_faithful_matches_every_setting():
    assert mismatches(["model=keras_faithful"]) == set()


def test_pytorch_default_differs_in_every_setting():
    checks = check_settings(compose_config(["model=pytorch_default"]))

    assert {check.setting.name for check in checks if not check.matches_keras} == {
        setting.name for setting in SETTINGS
    }
    assert all(check.matches_port for check in checks)


@pytest.mark.parametrize("setting", [setting.name for setting in SETTINGS])
def test_fix_and_break_move_one_setting(setting):
    every = {item.name for item in SETTINGS}

    assert mismatches(["model=pytorch_default", f"fix={setting}"]) == every - {setting}
    assert mismatches(["model=keras_faithful", f"break={setting}"]) == {setting}


def test_catalogue_keys_exist_in_config():
    for check in check_settings(compose_config([])):
        assert check.value is not MISSING, check.setting.key


def test_users_experiment_file(tmp_path):
    experiment = tmp_path / "experiment"
    experiment.mkdir()
    (experiment / "mine.yaml").write_text(
        "# @package _global_\nmodel:\n  net:\n    bn_eps: 1.0e-5\ndata:\n  shuffle: false\n"
    )

    assert mismatches(["experiment=mine"], tmp_path) == {"bn_eps", "shuffle"}


def test_cli_marks_mismatches_with_effect(capsys):
    assert main(["model=keras_faithful", "break=target_layout"]) == 0
    output = capsys.readouterr().out

    assert "1 setting(s) differ from Keras" in output
    assert by_name("target_layout").effect in output
    assert output.count("DIFF") == 1


def test_cli_reports_config_errors(capsys):
    assert main(["model=nonexistent"]) == 2
    assert "did not compose" in capsys.readouterr().err


def test_console_script_runs():
    result = subprocess.run(
        ["volreg-diff", "model=pytorch_default"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert f"{len(SETTINGS)} setting(s) differ from Keras" in result.stdout


def test_numbers_compare_by_value():
    assert same_value(0.001, 1e-3)
    assert same_value(True, True)
    assert not same_value(1, True)
    assert not same_value(1e-5, 1e-3)
