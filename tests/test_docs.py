"""The generated parts of the documentation are current, and every setting option shows its default."""

import re

from optiloss import docs_gen
from optiloss.cli import build_parser
from optiloss.settings import SearchConfig, TransferConfig, default_text


def test_the_configuration_page_is_generated_from_the_settings_fields():
    page = docs_gen.CONFIGURATION_PAGE.read_text()
    assert docs_gen.render(page) == page, "docs/configuration.md is stale: run python -m optiloss.docs_gen"
    for owner in (SearchConfig, TransferConfig):  # every key has its row
        for key in owner.keys():
            assert re.search(rf"^\| `{key}` \|", page, re.MULTILINE), key


def test_the_check_mode_finds_a_stale_page(tmp_path, capsys):
    page = tmp_path / "configuration.md"
    text = docs_gen.CONFIGURATION_PAGE.read_text()
    page.write_text(text.replace("| `subset` |", "| `subset_old` |"))
    assert docs_gen.main(["--check", "--page", str(page)]) == 1
    assert "stale" in capsys.readouterr().err
    assert docs_gen.main(["--page", str(page)]) == 0
    assert page.read_text() == text and docs_gen.main(["--check", "--page", str(page)]) == 0


def test_every_setting_option_shows_its_default_and_the_registries_build_the_help():
    commands = build_parser()._subparsers._group_actions[0].choices
    for name, command in commands.items():
        for action in command._actions:
            if action.option_strings == ["-h", "--help"] or action.help is None:
                continue
            if action.dest in SearchConfig.keys() or action.dest in TransferConfig.keys():
                assert "default" in action.help, (name, action.dest, action.help)
    search = {action.dest: action.help for action in commands["search"]._actions}
    assert "(default: digits)" in search["dataset"] and "caltech101" in search["dataset"]
    assert "guided:" in search["sampler"] and "(default: nsga2)" in search["sampler"]
    assert default_text(SearchConfig, "batch_size") == "the surrogate's: cnn 128, airbench 1024"
    assert default_text(TransferConfig, "batch_size") == "128"
    assert default_text(SearchConfig, "objectives") == '["accuracy", "robustness"]'
