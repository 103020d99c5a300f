"""One settings model: every shipped TOML loads, and a key is checked the same way in search and transfer."""

from pathlib import Path

import pytest

from optiloss.errors import UsageError
from optiloss.settings import RunSettings, SearchConfig, TransferConfig
from optiloss.train import TrainSettings

from conftest import ROOT, run_cli

STUDIES = [
    path for path in sorted((ROOT / "studies").glob("*.toml")) if not path.name.startswith("experiment-")
]
"""The search and transfer files (the experiment files have their own test, tests/test_experiment.py)."""


def test_the_studies_folder_holds_search_and_transfer_files():
    names = [path.name for path in STUDIES]
    assert "digits-demo.toml" in names and sum(name.startswith("transfer-") for name in names) >= 5


@pytest.mark.parametrize("path", STUDIES, ids=lambda path: path.name)
def test_every_shipped_study_file_loads(path: Path):
    settings_class = TransferConfig if path.name.startswith("transfer-") else SearchConfig
    fine_tunes = "pretrained = true" in path.read_text()  # its weights file comes with --weights
    settings = settings_class.load(path, {"weights": "model.safetensors"} if fine_tunes else None)
    assert isinstance(settings, RunSettings)
    assert settings.train_settings().epochs == settings.epochs


@pytest.mark.parametrize("settings_class", [SearchConfig, TransferConfig])
@pytest.mark.parametrize(
    "key, value, message",
    [
        ("device", "gpu", "device must be one of auto, cpu, cuda, cuda:N (a GPU index), got 'gpu'"),
        ("epochs", 0, "epochs must be >= 1, got 0"),
        ("batch_size", "128", "batch_size must be an integer, got '128'"),
        ("mixed_precision", "yes", "mixed_precision must be true or false, got 'yes'"),
        ("learning_rate", True, "learning_rate must be a number, got True"),
        ("corruption_severity", 9, "corruption_severity must be between 1 and 5, got 9"),
        ("dataset", "imagenet", "dataset must be one of digits, cifar10"),
        ("epoch", 3, "unknown key 'epoch'; allowed keys: dataset,"),
    ],
)
def test_bad_value_refused_in_one_line_naming_the_key_in_both_settings(settings_class, key, value, message):
    with pytest.raises(UsageError) as caught:
        settings_class.from_mapping({key: value}, "my.toml")
    assert str(caught.value).startswith("my.toml: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_keys_of_one_kind_only_are_refused_by_the_other():
    with pytest.raises(UsageError, match="unknown key 'top_k'"):
        SearchConfig.from_mapping({"top_k": 3})
    with pytest.raises(UsageError, match="unknown key 'population_size'"):
        TransferConfig.from_mapping({"population_size": 10})
    with pytest.raises(UsageError, match="augmentation must be one of base, cutout, mixup, randaug, all "):
        TransferConfig.from_mapping({"augmentation": "all5"})


def test_train_settings_are_built_from_the_shared_keys():
    search = SearchConfig.from_mapping(
        {
            "epochs": 3,
            "batch_size": 64,
            "mixed_precision": False,
            "deterministic": True,
            "learning_rate": 0.01,
        }
    )
    assert search.train_settings() == TrainSettings(
        epochs=3, batch_size=64, learning_rate=0.01, mixed_precision=False, deterministic=True
    )
    transfer = TransferConfig.from_mapping({"compile": True})
    assert transfer.train_settings() == TrainSettings(
        epochs=200, batch_size=128, learning_rate=1e-3, compile=True
    )


def test_options_override_the_file_and_their_errors_say_so(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('model = "wrn-10-1"\nepochs = 5\n')
    assert TransferConfig.load(path, {"epochs": 7, "seeds": None}).epochs == 7
    with pytest.raises(UsageError, match=f"{path} with options: seeds must be >= 1, got 0"):
        TransferConfig.load(path, {"seeds": 0})


def test_a_transfer_file_with_a_bad_device_exits_2_in_one_line(tmp_path, sqlite_url):
    path = tmp_path / "t.toml"
    path.write_text('device = "gpu"\n')
    result = run_cli("transfer", "digits-base", "--config", str(path), "--storage", sqlite_url)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"optiloss: error: {path}: device must be one of auto, cpu, cuda, cuda:N (a GPU index), got 'gpu'"
    )


def test_a_search_surrogate_is_not_a_transfer_model():
    with pytest.raises(UsageError, match="model 'airbench' is a search surrogate; transfer to wrn-DEPTH"):
        TransferConfig.from_mapping({"model": "airbench"})


@pytest.mark.parametrize("name", ["cnn", "surrogate"])
def test_a_search_surrogate_is_not_a_transfer_model_under_its_old_name_either(name):
    with pytest.raises(UsageError, match=f"model {name!r} is a search surrogate"):
        TransferConfig.from_mapping({"model": name})


def test_every_key_declares_its_help_once_and_the_cli_options_come_from_the_fields():
    from optiloss.cli import (
        EVALUATE_OPTIONS,
        ONE_AUGMENTATION_HELP,
        SEARCH_OPTIONS,
        TRANSFER_OPTIONS,
        build_parser,
    )
    from optiloss.settings import default_text, help_without_default, key_info

    for owner in (SearchConfig, TransferConfig):
        undocumented = [key for key in owner.keys() if not key_info(owner, key).help]
        assert not undocumented, (owner.__name__, undocumented)
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for command, owner, keys in (
        ("search", SearchConfig, SEARCH_OPTIONS),
        ("transfer", TransferConfig, TRANSFER_OPTIONS),
        ("evaluate", SearchConfig, EVALUATE_OPTIONS),
    ):
        options = {action.dest: action for action in commands[command]._actions}
        for key in keys:
            # the commands that train under one augmentation offer no all5
            narrowed = key == "augmentation" and command != "search"
            expected = ONE_AUGMENTATION_HELP if narrowed else key_info(owner, key).help
            # each option's help ends with its default (the same as docs/configuration.md's)
            shown = f"{help_without_default(expected)} (default: {default_text(owner, key)})"
            assert options[key].help == shown, (command, key)
            assert options[key].option_strings == ["--" + key.replace("_", "-")]


def test_warmup_is_a_setting_and_a_subclass_keeps_the_limits_of_a_key_it_redefaults():
    assert SearchConfig.from_mapping({"warmup_fraction": 0.3}).train_settings().warmup_fraction == 0.3
    with pytest.raises(UsageError, match="warmup_fraction must be between 0.0 and 0.9, got 1.5"):
        SearchConfig.from_mapping({"warmup_fraction": 1.5})
    for owner in (SearchConfig, TransferConfig):  # batch_size is redeclared in both with another default
        with pytest.raises(UsageError, match="batch_size must be >= 2, got 1"):
            owner.from_mapping({"batch_size": 1})
