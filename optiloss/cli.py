"""The ``optiloss`` command. It only translates arguments; the library does the work."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NoReturn

from optiloss.errors import OptilossError, UsageError

INTERRUPTED_EXIT_CODE = 130
BROKEN_PIPE_EXIT_CODE = 141
"""128 + SIGPIPE, as a Unix tool whose reader went away (`optiloss pareto STUDY | head`) exits."""


class _Parser(argparse.ArgumentParser):
    """argparse with the project's error shape: one line naming what to do, exit code 2. No
    abbreviated options, so a storage URL is always behind ``--storage`` (and masked when echoed)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        # an argument echoed back (a storage URL) shows no password
        message = re.sub(r"://([^:/@\s]+):[^@\s]*@", r"://\1:***@", message)
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def _device(text: str) -> str:
    if text in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", text):
        return text
    raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from auto, cpu, cuda, cuda:N)")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--port must be a number, got {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"--port must be between 1 and 65535, got {port}")
    return port


def _loss(text: str) -> tuple[str, str]:
    name, equals, formula = text.partition("=")
    if not equals or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name.strip()) or not formula.strip():
        raise argparse.ArgumentTypeError(
            f"--loss {text!r}: write NAME=FORMULA, e.g. "
            "--loss 'mine=-(y * ln(|p| + eps))' (NAME: letters, digits, _)"
        )
    return name.strip(), formula.strip()


def _loss_option(parser: argparse.ArgumentParser, what: str, *, repeatable: bool = True) -> None:
    more = "repeatable; adds to the config's [losses] table" if repeatable else "one only"
    parser.add_argument(
        "--loss",
        type=_loss,
        action="append",
        metavar="NAME=FORMULA",
        help=f"a loss written as a formula (as `optiloss show` prints it), {what}; {more}",
    )


def _losses(args: argparse.Namespace) -> dict[str, str] | None:
    return dict(args.loss) if args.loss else None


def add_storage_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="SQLAlchemy URL of the study database (default: $OPTILOSS_STORAGE "
        "or sqlite:///storage/optiloss.db)",
    )


CONDITION_OPTIONS = ("label_noise_rate", "label_noise_kind", "noisy_validation", "imbalance_ratio")
"""The data conditions (label noise, imbalance): options of every command that takes training settings."""
SEARCH_OPTIONS = (
    "dataset",
    "data_root",
    "image_size",
    "subset",
    "download",
    "augmentation",
    "n_trials",
    "study_name",
    "seed",
    "device",
    "workers",
    "sampler",
    *CONDITION_OPTIONS,
)
"""The search config keys ``optiloss search`` takes as options (every key can be set in its TOML)."""
TRANSFER_OPTIONS = (
    "model",
    "dataset",
    "augmentation",
    "top_k",
    "seeds",
    "epochs",
    "batch_size",
    "learning_rate",
    "image_size",
    "subset",
    "data_root",
    "weights",
    "device",
    "select",
    "corruptions",
    *CONDITION_OPTIONS,
)
TUNE_OPTIONS = (
    *("dataset", "augmentation", "epochs", "subset", "image_size", "data_root", "device", "seed"),
    *CONDITION_OPTIONS,
)
EVALUATE_OPTIONS = (
    *("dataset", "augmentation", "epochs", "subset", "image_size", "data_root", "device"),
    *CONDITION_OPTIONS,
)
_OPTION_TYPES = {"device": _device}
"""Option values argparse checks beyond the key's type (a device names a GPU index)."""
ONE_AUGMENTATION_HELP = "base, cutout, mixup, randaug or all: this command trains under one"
"""``--augmentation`` of the commands that train under one augmentation (no ``all5``)."""


def add_setting_options(
    parser: argparse.ArgumentParser,
    owner: type,
    keys: Sequence[str],
    narrowed: Mapping[str, tuple[tuple[str, ...], str]] | None = None,
) -> None:
    """One ``--key-name`` option per settings key, built from the field (type, choices, help, metavar).
    An option left out is None, which :meth:`~optiloss.settings.Settings.load` ignores, so the TOML
    file's value or the default stays. ``narrowed``: key -> (the words this command accepts, its help),
    for a command that takes fewer values than the key allows (one augmentation, not ``all5``)."""
    from dataclasses import replace

    from optiloss.settings import default_text, help_without_default, key_info

    for key in keys:
        info = key_info(owner, key)
        if narrowed and key in narrowed:
            accepted, help_text = narrowed[key]
            info = replace(info, limits=accepted, help=help_text)
        # every option says what it is when left out (the file's value, else this default)
        info = replace(info, help=f"{help_without_default(info.help)} (default: {default_text(owner, key)})")
        flag = "--" + key.replace("_", "-")
        if info.kind is bool:
            parser.add_argument(flag, dest=key, action="store_true", default=None, help=info.help)
            continue
        # allowed words are shown, and checked by the settings like the TOML's (one message for both)
        words = info.limits if info.limits and isinstance(info.limits[0], str) else None
        parser.add_argument(
            flag,
            dest=key,
            type=_OPTION_TYPES.get(key, info.kind),
            metavar=info.metavar or ("{" + ",".join(map(str, words)) + "}" if words else key.upper()),
            help=info.help,
        )


def setting_values(args: argparse.Namespace, keys: Sequence[str]) -> dict[str, Any]:
    """The values of the options :func:`add_setting_options` added (None where not given)."""
    return {key: getattr(args, key) for key in keys}


TABLE_FORMATS = ("table", "csv", "json")
"""``--format`` of the commands that print rows."""


def add_format_option(
    parser: argparse.ArgumentParser, choices: tuple[str, ...] = TABLE_FORMATS, more: str = ""
) -> None:
    """``--format``, the first of ``choices`` by default (its help says so, then ``more``)."""
    parser.add_argument("--format", choices=choices, default=choices[0], help=f"default: {choices[0]}{more}")


def add_output_option(parser: argparse.ArgumentParser, where: str) -> None:
    """``--output DIR`` (default :data:`~optiloss.storage.REPORTS_DIR`); ``where`` says what goes there."""
    from optiloss.storage import REPORTS_DIR

    parser.add_argument(
        "--output", default=REPORTS_DIR, metavar="DIR", help=f"{where} (default {REPORTS_DIR})"
    )


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device`` of the commands without a settings file (default auto)."""
    parser.add_argument(
        "--device", type=_device, default="auto", help="auto, cpu, cuda or cuda:N (default auto)"
    )


def add_no_progress_option(parser: argparse.ArgumentParser, help_text: str = "no progress bar") -> None:
    parser.add_argument("--no-progress", action="store_true", help=help_text)


class Command:
    """One ``optiloss`` command, declared once: its name and help, its options (:meth:`add_arguments`,
    the shared ones through the ``add_*_option`` functions) beside what it does with them
    (:meth:`take_action`), as in Optuna's CLI. A new command is a subclass listed in :data:`COMMANDS`."""

    name: ClassVar[str]
    help: ClassVar[str]
    description: ClassVar[str | None] = None
    on_interrupt: ClassVar[str] = "nothing was written. Run it again with"
    """What an interrupted run left, before the command line that continues it."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare the command's arguments and options on its subparser."""

    def take_action(self, args: argparse.Namespace) -> int:
        """Run the command with the parsed ``args``; returns the exit code."""
        raise NotImplementedError


class SearchCommand(Command):
    name = "search"
    help = "create or continue a loss search"
    description = (
        "Create or continue a loss-search study until it holds "
        "--n-trials COMPLETE trials, then print its Pareto set."
    )
    on_interrupt = "the study is saved. Resume with"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from optiloss.settings import SearchConfig

        parser.add_argument("config", nargs="?", help="study TOML file (see studies/); options override it")
        add_setting_options(parser, SearchConfig, SEARCH_OPTIONS)
        add_storage_option(parser)
        _loss_option(parser, "trained in the first generation beside the zoo")
        add_no_progress_option(parser)

    def take_action(self, args: argparse.Namespace) -> int:
        from optiloss.report import dashboard_hooks, format_rows, pareto_rows, pareto_verdict, search_summary
        from optiloss.search import run_searches
        from optiloss.settings import SearchConfig
        from optiloss.storage import mask_url, open_storage
        from optiloss.studies import load_study

        config = SearchConfig.load(
            args.config, {**setting_values(args, SEARCH_OPTIONS), "losses": _losses(args)}
        )
        outcomes = run_searches(
            config, args.storage, progress=not args.no_progress, hooks=dashboard_hooks(config)
        )
        for outcome in outcomes:
            study = outcome.study
            if study is None:
                study = load_study(open_storage(outcome.storage_url, create=False), outcome.study_name)
            print(
                f"\nPareto set of {outcome.study_name} ({outcome.complete_after} complete trials, "
                f"{outcome.rejected} genomes rejected this run):"
            )
            print(format_rows(pareto_rows(study)))
            print(pareto_verdict(study))
            print(search_summary(study))
        print(
            "\nWatch it in optuna-dashboard:  "
            + shlex.join(["optiloss", "dashboard", "--storage", mask_url(outcomes[0].storage_url)])
        )
        given = [f"{outcome.study_name}: {line}" for outcome in outcomes for line in outcome.given]
        if given:
            print("\n" + "\n".join(given))
        return 0


class StudiesCommand(Command):
    name = "studies"
    help = "list studies with trial counts and best values"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_storage_option(parser)
        add_format_option(parser)

    def take_action(self, args: argparse.Namespace) -> int:
        from optiloss.report import format_rows, study_rows
        from optiloss.storage import open_storage

        print(format_rows(study_rows(open_storage(args.storage, create=False)), args.format))
        return 0


class ParetoCommand(Command):
    name = "pareto"
    help = "print a study's Pareto set with formulas"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("study", help="study name")
        add_storage_option(parser)
        add_format_option(parser)

    def take_action(self, args: argparse.Namespace) -> int:
        from optiloss.report import format_rows, pareto_rows, pareto_verdict, search_summary
        from optiloss.storage import open_storage
        from optiloss.studies import load_study

        study = load_study(open_storage(args.storage, create=False), args.study)
        print(format_rows(pareto_rows(study), args.format))
        if args.format == "table":
            print(pareto_verdict(study))
            print(search_summary(study))
        return 0


class ShowCommand(Command):
    name = "show"
    help = "print one trial's loss"
    formats: ClassVar[tuple[str, ...]] = ("text", "latex", "python", "module")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("study", help="study name")
        parser.add_argument("trial", type=int, help="trial number")
        add_storage_option(parser)
        add_format_option(parser, self.formats, "; module is what export prints")

    def take_action(self, args: argparse.Namespace) -> int:
        from optiloss.report import show_trial
        from optiloss.storage import open_storage
        from optiloss.studies import load_study

        study = load_study(open_storage(args.storage, create=False), args.study)
        print(show_trial(study, args.trial, args.format))
        return 0


class ExportCommand(ShowCommand):
    name = "export"
    help = "print a standalone PyTorch module (nn.Module) for one loss"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("study", help="study name")
        parser.add_argument("trial", type=int, help="trial number")
        add_storage_option(parser)
        parser.set_defaults(format="module")


class TransferCommand(Command):
    name = "transfer"
    help = "retrain a search's best losses on a larger model"
    description = (
        "Train the top-k losses of SOURCE_STUDY (by accuracy, one per behaviour, or from its "
        "Pareto set), or of several studies pooled with --from, the losses given with --loss, "
        "cross-entropy and the zoo with several seeds; report test accuracy and robustness with "
        "tests against cross-entropy."
    )
    on_interrupt = "the study is saved. Resume with"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from optiloss.settings import TransferConfig

        parser.add_argument(
            "source",
            metavar="SOURCE_STUDY",
            nargs="?",
            help="the search study (or give one or more with --from)",
        )
        parser.add_argument(
            "--from",
            dest="sources",
            action="append",
            metavar="STUDY",
            help="a source study; repeat to pool the losses of several (e.g. all five augmentation studies)",
        )
        _loss_option(parser, "transferred beside the selected ones")
        parser.add_argument(
            "--config", metavar="TOML", help="a studies/transfer-*.toml file; options override it"
        )
        add_storage_option(parser)
        add_setting_options(parser, TransferConfig, TRANSFER_OPTIONS, _one_augmentation())
        add_output_option(parser, "where the Markdown, CSV and plot go")

    def take_action(self, args: argparse.Namespace) -> int:
        from optiloss.report import format_rows
        from optiloss.report.experiments import paper_table, save_transfer_report
        from optiloss.settings import TransferConfig
        from optiloss.storage import open_storage
        from optiloss.studies import load_study
        from optiloss.transfer import run_transfer, transfer_table

        config = TransferConfig.load(
            args.config, {**setting_values(args, TRANSFER_OPTIONS), "losses": _losses(args)}
        )
        sources = ([args.source] if args.source else []) + (args.sources or [])
        if not sources:
            raise UsageError(
                "name the source study: optiloss transfer SOURCE_STUDY, or --from STUDY (repeatable)"
            )
        storage = open_storage(args.storage, create=False)
        study = run_transfer(sources if len(sources) > 1 else sources[0], config, storage)
        source = load_study(storage, sources[0]) if len(sources) == 1 else None
        table = transfer_table(study, source, config.top_k, config.select)
        print(format_rows(paper_table(table)))
        print()
        print(format_rows([{k: v for k, v in row.items() if k != "formula"} for row in table.rows]))
        if table.fidelity:
            print(
                f"\nfidelity (surrogate accuracy vs transfer accuracy, {table.fidelity['losses']} losses): "
                f"Spearman {table.fidelity['spearman']:.3f}, Kendall {table.fidelity['kendall']:.3f}"
            )
        paths = save_transfer_report(study, table, args.output)
        print("wrote " + ", ".join(map(str, paths)))
        return 0


class RecheckCommand(Command):
    name = "recheck"
    help = "re-train a study's Pareto set with new seeds"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from optiloss.settings import RecheckSettings

        parser.add_argument("study", help="study name")
        add_storage_option(parser)
        parser.add_argument(
            "--seeds",
            type=int,
            default=RecheckSettings.seeds,
            metavar="S",
            help=f"fresh seeds per loss (default {RecheckSettings.seeds})",
        )
        add_device_option(parser)
        add_format_option(parser)
        _loss_option(parser, "retrained beside the Pareto set")

    def take_action(self, args: argparse.Namespace) -> int:
        from optiloss.recheck import recheck, recheck_verdict
        from optiloss.report import format_rows

        if args.seeds < 1:
            raise UsageError("--seeds must be at least 1")
        rows = recheck(args.study, args.storage, args.seeds, device=args.device, losses=_losses(args))
        print(format_rows(rows, args.format))
        if args.format == "table":
            print(recheck_verdict(rows))
        return 0


class EvaluateCommand(Command):
    name = "evaluate"
    help = "is this loss better than cross-entropy here? train both with several seeds"
    description = (
        "Train the loss FORMULA and cross-entropy on the search surrogate with the same seeds, "
        "score both on the test split (which no search sees) and print them with Welch's "
        "p-value."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from optiloss.settings import SearchConfig

        parser.add_argument(
            "formula", metavar="FORMULA", help="e.g. '-(y * ln(|p| + eps))' (as `show` prints)"
        )
        parser.add_argument(
            "--config", metavar="TOML", help="a study TOML (see studies/); options override it"
        )
        parser.add_argument("--seeds", type=int, default=3, metavar="S", help="seeds per loss (default 3)")
        add_setting_options(parser, SearchConfig, EVALUATE_OPTIONS, _one_augmentation())
        add_format_option(parser)

    def take_action(self, args: argparse.Namespace) -> int:
        from optiloss.evaluate import evaluate_loss
        from optiloss.report import format_rows
        from optiloss.settings import SearchConfig

        if args.seeds < 1:
            raise UsageError("--seeds must be at least 1")
        config = SearchConfig.load(args.config, setting_values(args, EVALUATE_OPTIONS))
        if len(config.per_augmentation()) > 1:
            raise UsageError("evaluate trains under one augmentation: base, cutout, mixup, randaug or all")
        comparison = evaluate_loss(args.formula, config, args.seeds)
        print(format_rows(comparison.rows(), args.format))
        if args.format == "table":  # the data line before the verdict, which stays the last line
            print(_data_line(config))
            print(_verdict_line(comparison, config))
        return 0


class TuneCommand(Command):
    name = "tune"
    help = "tune one loss's constants (CMA-ES) on the search surrogate, then optionally test it"
    description = (
        "Create or continue a plain Optuna study over the constants of one loss (structure "
        "fixed): a search trial (STUDY TRIAL), a formula (--loss NAME=FORMULA) or a zoo loss (--zoo NAME), "
        "scored on the validation split like a search trial; CMA-ES for two or more constants, TPE for "
        "one. --evaluate S then trains the tuned loss and --against (default cross-entropy; a zoo "
        "loss, or another tune study's best) with S fresh seeds on the test split, with Welch's p."
    )
    on_interrupt = "the tune study keeps its finished trials. Continue it with"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from optiloss.genome import BASELINE
        from optiloss.settings import SearchConfig

        parser.add_argument("study", nargs="?", help="a search study holding the loss to tune")
        parser.add_argument("trial", nargs="?", type=int, help="the trial of that study")
        _loss_option(parser, "whose constants to tune", repeatable=False)
        parser.add_argument(
            "--zoo", metavar="NAME", help="a zoo loss with constants, e.g. label_smoothing_0.1 or poly1"
        )
        parser.add_argument(
            "--config", metavar="TOML", help="search settings (a study TOML); options override it"
        )
        add_setting_options(parser, SearchConfig, TUNE_OPTIONS, _one_augmentation())
        parser.add_argument(
            "--n-trials", type=int, default=30, metavar="N", help="COMPLETE tune trials (default 30)"
        )
        add_storage_option(parser)
        parser.add_argument("--study-name", metavar="NAME", help="default: {search study}-tune-{loss}")
        parser.add_argument(
            "--evaluate", type=int, default=0, metavar="S", help="then test with S fresh seeds"
        )
        parser.add_argument(
            "--against",
            default=BASELINE,
            metavar="NAME",
            help="what --evaluate compares with: a zoo loss or a tune study (its best constants)",
        )
        add_no_progress_option(parser)

    def take_action(self, args: argparse.Namespace) -> int:
        from optiloss.evaluate import compare_losses
        from optiloss.report import format_rows
        from optiloss.tune import baseline_loss, tune_loss

        if args.loss and len(args.loss) > 1:
            raise UsageError(f"tune tunes one loss: --loss is given {len(args.loss)} times")
        given = [bool(args.study), bool(args.loss), bool(args.zoo)]
        if sum(given) != 1 or (args.study and args.trial is None):
            raise UsageError("name one loss to tune: STUDY TRIAL, --loss NAME=FORMULA or --zoo NAME")
        if args.n_trials < 1 or args.evaluate < 0:
            raise UsageError("--n-trials must be at least 1 and --evaluate at least 0")
        start, label, config = self._loss_to_tune(args)
        if len(config.per_augmentation()) > 1:
            raise UsageError("tune trains under one augmentation: base, cutout, mixup, randaug or all")
        outcome = tune_loss(
            start,
            label,
            config,
            args.storage,
            n_trials=args.n_trials,
            study_name=args.study_name,
            progress=not args.no_progress,
        )
        start_text = "" if outcome.start_accuracy is None else f" (as given: {outcome.start_accuracy:.4f})"
        print(f"\nbest constants of {label}: {outcome.best.formula}")
        print(f"validation accuracy {outcome.best_accuracy:.4f}{start_text}, {outcome.study.study_name}")
        print("selected as the best of its trials on the validation split: test it with --evaluate S")
        if args.evaluate:
            baseline, baseline_name = baseline_loss(args.against, config, args.storage)
            comparison = compare_losses(outcome.best, baseline, baseline_name, config, args.evaluate)
            print(format_rows(comparison.rows()))
            print(_data_line(config))
            print(_verdict_line(comparison, config))
        return 0

    @staticmethod
    def _loss_to_tune(args: argparse.Namespace) -> tuple[Any, str, Any]:
        """(genome, label, search settings) of the loss the options name."""
        from optiloss.genome.named import named_losses
        from optiloss.records import SearchTrialRecord, StudyKey
        from optiloss.settings import SearchConfig
        from optiloss.storage import open_storage
        from optiloss.studies import get_trial, load_study, trial_genome
        from optiloss.tune import zoo_loss

        options = setting_values(args, TUNE_OPTIONS)
        if args.study:
            source = load_study(open_storage(args.storage, create=False), args.study)
            trial = get_trial(source, args.trial)
            stored = source.user_attrs.get(StudyKey.CONFIG) or {}
            config = SearchConfig.load(None, {**stored, **options})
            return trial_genome(source, trial), SearchTrialRecord.from_trial(trial).label(), config
        config = SearchConfig.load(args.config, options)
        if args.loss:
            label, formula = args.loss[0]
            return named_losses({label: formula}, config.nodes)[label], label, config
        return zoo_loss(args.zoo, config, "--zoo"), args.zoo, config


class MatrixCommand(Command):
    name = "matrix"
    help = "retrain each augmentation study's best losses under every augmentation and tabulate accuracy"
    description = (
        "Retrain the best losses of the augmentation studies you name (and cross-entropy) under "
        "every augmentation with fresh seeds, and tabulate accuracy on the test split, which no search "
        "selected on. The studies must share their training settings."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from optiloss.settings import MATRIX_SPLITS, SELECTIONS, MatrixSettings

        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument(
            "--dataset", metavar="D", help="the studies D-{base,cutout,...} (search's default names)"
        )
        which.add_argument(
            "--prefix", metavar="P", help="the studies P-{base,cutout,...}, e.g. an experiment's name"
        )
        which.add_argument(
            "--study",
            dest="studies",
            action="append",
            metavar="NAME",
            help="a search study; repeat for one per augmentation",
        )
        parser.add_argument(
            "--split",
            choices=MATRIX_SPLITS,
            default=MatrixSettings.split,
            help="test (default: no search selected on it) or val (the searches' own split, which "
            "flatters them)",
        )
        add_storage_option(parser)
        parser.add_argument(
            "--top-k",
            type=int,
            default=MatrixSettings.top_k,
            metavar="K",
            help=f"best losses per study (default {MatrixSettings.top_k})",
        )
        parser.add_argument(
            "--seeds",
            type=int,
            default=MatrixSettings.seeds,
            metavar="S",
            help=f"training seeds per cell (default {MatrixSettings.seeds})",
        )
        add_output_option(parser, "where the CSV and heatmap go")
        add_device_option(parser)
        add_format_option(parser)
        parser.add_argument(
            "--select",
            choices=SELECTIONS,
            default=MatrixSettings.select,
            help="accuracy (default): top-k by accuracy, one per behaviour; pareto: from the Pareto set",
        )
        _loss_option(parser, "retrained beside the studies' losses")

    def take_action(self, args: argparse.Namespace) -> int:
        from optiloss.matrix import loss_augmentation_matrix
        from optiloss.report import format_rows
        from optiloss.report.experiments import save_matrix

        if args.top_k < 1 or args.seeds < 1:
            raise UsageError("--top-k and --seeds must be at least 1")
        result = loss_augmentation_matrix(
            args.prefix or args.dataset,
            args.storage,
            top_k=args.top_k,
            seeds=args.seeds,
            device=args.device,
            select=args.select,
            losses=_losses(args),
            study_names=args.studies,
            split=args.split,
        )
        csv_path, png_path = save_matrix(result, args.output)
        print(format_rows(result.rows(), args.format))
        if args.format == "table":
            print(f"\n{result.describe()}")
        print(f"\nwrote {csv_path} and {png_path}")
        return 0


class ExperimentCommand(Command):
    name = "experiment"
    help = "run a whole experiment (search, recheck, transfers, matrix) and write its report page"
    description = (
        "Run the stages of EXPERIMENT.toml in order (search, recheck, each [[transfer]], "
        "matrix), each training only what its studies do not hold yet, so running it again after a stop "
        "continues where it stopped; then write the report page {output}/{name}/index.html."
    )
    on_interrupt = "the study is saved. Resume with"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("file", metavar="EXPERIMENT.toml", help="see studies/experiment-*.toml")
        add_storage_option(parser)
        stage_choice = parser.add_mutually_exclusive_group()
        stage_choice.add_argument("--until", metavar="STAGE", help="run the stages up to STAGE, then stop")
        stage_choice.add_argument("--only", metavar="STAGE", help="run STAGE alone")
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="print the plan (stages, studies, trainings still to do, time estimate) and run nothing",
        )
        add_output_option(parser, "where the report page goes: DIR/{experiment name}/index.html")
        add_no_progress_option(parser, "no progress bars")

    def take_action(self, args: argparse.Namespace) -> int:
        from optiloss.experiment import load_experiment, plan, run_experiment, select_stages
        from optiloss.report import dashboard_hooks
        from optiloss.report.page import write_experiment_page

        experiment = load_experiment(args.file)
        stages = select_stages(experiment, until=args.until, only=args.only)
        if args.dry_run:
            plans = {item.stage: item for item in plan(experiment, args.storage)}
            print(f"{experiment.name}: {len(stages)} of {len(plans)} stages")
            for stage in stages:
                print("  " + plans[stage].describe())
            return 0
        try:
            run_experiment(
                experiment,
                args.storage,
                stages=stages,
                progress=not args.no_progress,
                search_hooks=dashboard_hooks(experiment.search),
            )
        finally:  # the page shows what finished, also after a stop (unless nothing was ever stored)
            page = _write_page_if_possible(write_experiment_page, experiment, args)
        if page is not None:
            print(f"\nreport: {page.resolve()}")
        return 0


class AblateCommand(Command):
    name = "ablate"
    help = "which part of a found loss does the work? retrain its variants one change away"
    description = (
        "Retrain a loss (STUDY TRIAL, or --loss NAME=FORMULA under --config and the options), "
        "each variant one change away (a node bypassed, a unary operator as the identity, a constant set "
        "to 0 and to 1) and cross-entropy with S fresh seeds on the test split, under the study's "
        "settings; print the table with Welch's and Holm's p and write CSV, Markdown and a figure. "
        "Finished trainings are kept in the storage: a rerun trains only what is missing."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from optiloss.settings import SearchConfig

        parser.add_argument("study", nargs="?", help="a search study holding the loss")
        parser.add_argument("trial", nargs="?", type=int, help="the trial of that study")
        _loss_option(parser, "to ablate instead of a trial", repeatable=False)
        parser.add_argument(
            "--config", metavar="TOML", help="settings for --loss (a study TOML); options override it"
        )
        add_setting_options(parser, SearchConfig, EVALUATE_OPTIONS, _one_augmentation())
        parser.add_argument(
            "--seeds", type=int, default=3, metavar="S", help="fresh seeds per variant (default 3)"
        )
        add_storage_option(parser)
        add_output_option(parser, "where CSV, Markdown, PNG go")
        add_format_option(parser)
        add_no_progress_option(parser)

    def take_action(self, args: argparse.Namespace) -> int:
        from optiloss.report import format_rows
        from optiloss.report.ablation import save_ablation

        if args.seeds < 1:
            raise UsageError("--seeds must be at least 1")
        ablation = self._ablation(args)
        print(format_rows(ablation.rows(), args.format))
        if args.format == "table":
            print(f"\ndata: {ablation.conditions()}")
            print("\n".join(ablation.verdicts()))
        print("wrote " + ", ".join(map(str, save_ablation(ablation, args.output))))
        return 0

    @staticmethod
    def _ablation(args: argparse.Namespace) -> Any:
        """The ablation of the loss the arguments name: a study's trial, or one formula."""
        from optiloss.ablate import ablate_formula, ablate_trial
        from optiloss.settings import SearchConfig

        progress = not args.no_progress
        if args.loss:
            if args.study is not None or len(args.loss) > 1:
                raise UsageError("ablate takes STUDY TRIAL or one --loss NAME=FORMULA, not both")
            config = SearchConfig.load(args.config, setting_values(args, EVALUATE_OPTIONS))
            name, formula = args.loss[0]
            return ablate_formula(
                name, formula, config, args.seeds, storage_url=args.storage, progress=progress
            )
        if args.study is None or args.trial is None:
            raise UsageError("name the loss: optiloss ablate STUDY TRIAL, or --loss NAME=FORMULA")
        given = [key for key, value in setting_values(args, EVALUATE_OPTIONS).items() if value is not None]
        extra = sorted(set(given) - {"device"})
        if args.config or extra:
            option = "--config" if args.config else "--" + extra[0].replace("_", "-")
            raise UsageError(
                f"ablate STUDY TRIAL trains under the study's own settings; {option} is for --loss"
            )
        return ablate_trial(
            args.study, args.trial, args.storage, args.seeds, device=args.device, progress=progress
        )


class DashboardCommand(Command):
    name = "dashboard"
    help = "serve optuna-dashboard on the study storage"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from optiloss.storage import ARTIFACTS_DIR

        add_storage_option(parser)
        parser.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1 (this machine only)")
        parser.add_argument("--port", type=_port, default=8080, help="default: 8080")
        parser.add_argument(
            "--artifact-dir",
            default=ARTIFACTS_DIR,
            metavar="DIR",
            help=f"the artifact folder the search wrote to (default {ARTIFACTS_DIR})",
        )

    def take_action(self, args: argparse.Namespace) -> int:
        import optuna_dashboard

        from optiloss.report.dashboard import artifact_store
        from optiloss.storage import mask_url, open_storage, resolve_storage_url

        storage = open_storage(args.storage, create=False)
        print(
            f"optuna-dashboard for {mask_url(resolve_storage_url(args.storage))} at "
            f"http://{args.host}:{args.port}/ (Ctrl-C stops it)",
            flush=True,
        )
        try:
            optuna_dashboard.run_server(
                storage, host=args.host, port=args.port, artifact_store=artifact_store(args.artifact_dir)
            )
        except OSError as error:
            raise OptilossError(
                f"cannot serve on {args.host}:{args.port}: {error.strerror}; choose another --port"
            ) from None
        except KeyboardInterrupt:
            pass
        return 0


COMMANDS: dict[str, Command] = {
    command.name: command
    for command in (
        SearchCommand(),
        StudiesCommand(),
        ParetoCommand(),
        ShowCommand(),
        ExportCommand(),
        TransferCommand(),
        RecheckCommand(),
        EvaluateCommand(),
        TuneCommand(),
        MatrixCommand(),
        ExperimentCommand(),
        AblateCommand(),
        DashboardCommand(),
    )
}
"""Every command by name, in the order ``optiloss --help`` lists them."""


def _verdict_line(comparison: Any, config: Any) -> str:
    """A loss against its baseline on the test split, in one line with what was trained."""
    return f"\n{comparison.verdict()}  ({config.dataset}, {config.augmentation}, {config.model}, test split)"


def _data_line(config: Any) -> str:
    """The data conditions a run trained under, in one line after a blank one (``data: clean, balanced
    data``)."""
    return f"\ndata: {config.conditions().describe()}"


def _one_augmentation() -> dict[str, tuple[tuple[str, ...], str]]:
    from optiloss.augment import AUGMENTATIONS

    return {"augmentation": (AUGMENTATIONS, ONE_AUGMENTATION_HELP)}


def build_parser() -> argparse.ArgumentParser:
    """The ``optiloss`` parser: one subparser per command of :data:`COMMANDS`."""
    parser = _Parser(
        prog="optiloss",
        description="Search loss functions for image classifiers with Optuna's NSGA-II, "
        "one study per (dataset, augmentation).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for command in COMMANDS.values():
        parser_of_command = commands.add_parser(
            command.name, help=command.help, description=command.description
        )
        command.add_arguments(parser_of_command)
    return parser


def _command_line(argv: Sequence[str]) -> str:
    """``argv`` as the command to type again, with any password in a storage URL masked."""
    from optiloss.storage import mask_url

    words = ["optiloss"]
    for index, word in enumerate(argv):
        if index and argv[index - 1] == "--storage":
            word = mask_url(word)
        elif word.startswith("--storage="):
            word = "--storage=" + mask_url(word.removeprefix("--storage="))
        words.append(word)
    return shlex.join(words)


def _write_page_if_possible(write: Any, experiment: Any, args: argparse.Namespace) -> Any:
    from optiloss.storage import resolve_storage_url, sqlite_path

    path = sqlite_path(resolve_storage_url(args.storage))
    if path is not None and not path.exists():
        return None
    return write(experiment, args.storage, args.output)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0, 1 runtime failure, 2 usage error, 130 interrupted,
    141 when the reader of its output went away).

    Ctrl-C ends every command with one line and the command that continues it:
    what is finished is in the storage, and the run that was interrupted resumes
    from its checkpoint.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    import optuna

    # optiloss reports failures itself, in one line; Optuna would add a traceback per failed trial
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        return COMMANDS[args.command].take_action(args)
    except BrokenPipeError:
        # the rest of the output has nowhere to go; without this, Python's flush at exit would print
        # a second error about the same pipe
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return BROKEN_PIPE_EXIT_CODE
    except OptilossError as error:
        print(f"optiloss: error: {error}", file=sys.stderr)
        return error.exit_code
    except Exception as error:
        from optiloss.storage import mask_url, read_only_storage, resolve_storage_url

        if not read_only_storage(error):
            raise
        where = mask_url(resolve_storage_url(getattr(args, "storage", None)))
        print(
            f"optiloss: error: the study storage {where} is read-only, and {args.command} writes to it: "
            "copy the database somewhere writable and pass --storage (studies, pareto, show and export "
            "only read it)",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted; {COMMANDS[args.command].on_interrupt}: {_command_line(argv)}", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE


if __name__ == "__main__":
    sys.exit(main())
