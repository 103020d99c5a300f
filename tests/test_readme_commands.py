"""Every ``optiloss ...`` example of README.md and docs/*.md runs as written: parsed by the real parser,
every study, transfer and experiment file it names loaded by the real settings loader, the losses it
gives parsed and screened, and every study it reads made by an earlier example (no training).

An example that would exit 2 (an unknown option, a key out of range, a subset larger than the data
set, a missing file) fails here. The pages run in order: README top to bottom on a fresh clone after
``make demo`` (which makes ``digits-base``), then each docs page after README. Placeholders are
written in capitals (``STUDY``, ``SOURCE_STUDY``; ``TRIAL`` stands for a trial number).
"""

from __future__ import annotations

import contextlib
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from optiloss.cli import (
    EVALUATE_OPTIONS,
    SEARCH_OPTIONS,
    TRANSFER_OPTIONS,
    TUNE_OPTIONS,
    build_parser,
    setting_values,
)
from optiloss.experiment import load_experiment
from optiloss.genome.named import named_losses
from optiloss.scoring import load_data
from optiloss.settings import RunSettings, SearchConfig, TransferConfig

from conftest import ROOT

README = ROOT / "README.md"
PAGES = (README, *sorted((ROOT / "docs").glob("*.md")))
SHELL_FENCES = ("```bash", "```sh", "```shell", "```console")
MADE_BY_MAKE_DEMO = frozenset({"digits-base"})
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*")
PLACEHOLDER_VALUES = {"TRIAL": "0"}


@dataclass(frozen=True)
class Example:
    page: Path
    line: int
    text: str

    @property
    def argv(self) -> list[str]:
        words = shlex.split(self.text, comments=True)
        for stop in (">", "|", "&&", ";", "2>&1"):  # the command, not what the shell does with it
            if stop in words:
                words = words[: words.index(stop)]
        return [PLACEHOLDER_VALUES.get(word, word) for word in words[1:]]

    def __str__(self) -> str:
        page = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page.name
        return f"{page}:{self.line}: {self.text}"


def examples(page: Path) -> list[Example]:
    """The ``optiloss`` lines of the page's shell code blocks, continuation lines joined."""
    found, fence, pending, start = [], False, "", 0
    for number, line in enumerate(page.read_text().splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = not fence and stripped in SHELL_FENCES
            continue
        if not fence:
            continue
        if not pending:
            start = number
        pending += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if stripped.endswith("\\"):
            continue
        command, pending = pending, ""
        command = command.removeprefix("$ ").removeprefix(".venv/bin/")
        if command.startswith("optiloss "):
            found.append(Example(page, start, command))
    return found


def _data_checked(settings: RunSettings) -> None:
    """What a training would refuse first about the data: a subset larger than digits, a folder that
    is not there (folders outside the repository are the reader's own)."""
    if settings.dataset == "digits":
        load_data(settings, progress=False)
    elif settings.dataset.startswith("folder:"):
        folder = settings.dataset.removeprefix("folder:")
        if not Path(folder).is_absolute() and not folder.startswith("~"):
            assert (ROOT / folder / "train").is_dir(), f"folder {folder} is not in the repository"


def _sources(args) -> list[str]:
    return ([args.source] if args.source else []) + (args.sources or [])


def check(example: Example, made: set[str]) -> None:
    """Parse ``example``, load what it names, check the studies it reads; add the studies it makes."""
    try:
        args = build_parser().parse_args(example.argv)
    except SystemExit as exit_:
        pytest.fail(f"{example}\n  the parser refuses it (exit {exit_.code})")
    reads: list[str] = []
    losses = dict(args.loss) if getattr(args, "loss", None) else None
    if args.command == "search":
        config = SearchConfig.load(args.config, {**setting_values(args, SEARCH_OPTIONS), "losses": losses})
        named_losses(config.losses, config.nodes, config.constants)
        _data_checked(config)
        made.update(one.resolved_study_name for one in config.per_augmentation())
    elif args.command == "transfer":
        config = TransferConfig.load(
            args.config, {**setting_values(args, TRANSFER_OPTIONS), "losses": losses}
        )
        named_losses(config.losses, 5)
        _data_checked(config)
        reads += _sources(args)
        assert reads, f"{example}: no source study"
    elif args.command == "evaluate":
        config = SearchConfig.load(args.config, setting_values(args, EVALUATE_OPTIONS))
        assert len(config.per_augmentation()) == 1
        if not PLACEHOLDER.fullmatch(args.formula):
            named_losses({"given": args.formula}, config.nodes)
        _data_checked(config)
    elif args.command == "tune":
        config = SearchConfig.load(args.config, setting_values(args, TUNE_OPTIONS))
        reads += [args.study] if args.study else []
    elif args.command == "experiment":
        experiment = load_experiment(args.file)
        made.update(experiment.study_names().values())
    elif args.command in ("pareto", "show", "export", "recheck"):
        reads.append(args.study)
        if losses:
            named_losses(losses, 5)
    elif args.command == "matrix":
        reads += args.studies or []
        prefix = args.prefix or args.dataset
        if prefix:
            assert any(name.startswith(prefix + "-") for name in made), (
                f"{example}\n  no study {prefix}-<augmentation> is made before it"
            )
    for name in reads:
        assert PLACEHOLDER.fullmatch(name) or name in made, (
            f"{example}\n  reads the study {name!r}, which no earlier example (nor make demo) makes"
        )


def _ordered_checks() -> list[tuple[Example, frozenset[str]]]:
    """Every example with the studies made before it: README's in order, each docs page after README."""
    made = set(MADE_BY_MAKE_DEMO)
    readme = examples(README)
    # the names each example may read, collected without checking (the checks run one test apiece)
    for example in readme:
        _collect_made(example, made)
    after_readme = frozenset(made)
    ordered = []
    running = set(MADE_BY_MAKE_DEMO)
    for example in readme:
        ordered.append((example, frozenset(running)))
        _collect_made(example, running)
    for page in PAGES[1:]:
        running = set(after_readme)
        for example in examples(page):
            ordered.append((example, frozenset(running)))
            _collect_made(example, running)
    return ordered


def _collect_made(example: Example, made: set[str]) -> None:
    try:
        args = build_parser().parse_args(example.argv)
    except SystemExit:
        return  # its own test reports it
    try:
        if args.command == "search":
            config = SearchConfig.load(args.config, setting_values(args, SEARCH_OPTIONS))
            made.update(one.resolved_study_name for one in config.per_augmentation())
        elif args.command == "experiment":
            made.update(load_experiment(args.file).study_names().values())
    except Exception:  # noqa: BLE001 - its own test reports it
        return


with contextlib.chdir(ROOT):  # the examples name files relative to the repository root
    CHECKS = _ordered_checks()


@pytest.mark.parametrize("example, made", CHECKS, ids=[str(example)[:90] for example, _ in CHECKS])
def test_the_example_runs_as_written(example, made, monkeypatch):
    monkeypatch.chdir(ROOT)
    check(example, set(made))


def test_the_pages_show_the_basic_loop_in_order():
    commands = [example.argv[0] for example in examples(README)]
    for first, then in (("search", "pareto"), ("pareto", "show"), ("show", "export")):
        assert first in commands and then in commands
    assert commands.index("pareto") < commands.index("show") < commands.index("export")
    assert "evaluate" in commands and "experiment" in commands
    assert "EvolvedLoss" in README.read_text()
    assert len(README.read_text().splitlines()) <= 250, (
        "README.md is a page a newcomer reads: at most 250 lines"
    )


def test_a_broken_example_is_caught(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    page = tmp_path / "page.md"
    page.write_text(
        "```bash\n"
        "optiloss transfer digits-base --config studies/transfer-smoke-cpu.toml \\\n"
        "  --dataset digits\n"
        "optiloss pareto cifar10-base\n"
        "optiloss search --no-such-option\n"
        "```\n"
    )
    smoke, unmade, unknown = examples(page)
    assert smoke.line == 2 and smoke.argv[-2:] == ["--dataset", "digits"]
    with pytest.raises(Exception, match="subset 3000 is larger than digits's 1437 training images"):
        check(smoke, set(MADE_BY_MAKE_DEMO))
    with pytest.raises(AssertionError, match="reads the study 'cifar10-base'"):
        check(unmade, set(MADE_BY_MAKE_DEMO))
    with pytest.raises(pytest.fail.Exception, match="the parser refuses it"):
        check(unknown, set(MADE_BY_MAKE_DEMO))
