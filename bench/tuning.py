"""P8: what tuning constants buys, judged on fresh seeds of the test split.

    python bench/tuning.py --dataset folder:/path/to/cifar10-jpeg [--set KEY=VALUE ...]
                           [--tune-trials 12] [--search-trials 20] [--seeds 3]

On one data set and augmentation (the search defaults unless ``--set`` changes
them, e.g. ``subset=3000``, ``epochs=6``, ``model_width=16``):

1. label smoothing 0.1 as the zoo has it, tuned with ``optiloss tune``
   (CMA-ES over its two constants, ``--tune-trials`` trials on the validation
   split), then the tuned loss against the zoo's and against cross-entropy,
   each with ``--seeds`` fresh seeds on the test split (Welch's p);
2. a short search with ``constants = 2`` (``--search-trials`` trained losses);
   its best trial that reads a constant, tuned the same way, then tuned against
   untuned on the test split.

Every figure is printed, also when tuning gains nothing.
"""

from __future__ import annotations

import argparse
import tempfile

from optiloss.evaluate import compare_losses
from optiloss.genome import BASELINE, screen, zoo
from optiloss.records import SearchTrialRecord
from optiloss.scoring import load_data
from optiloss.search import run_search
from optiloss.settings import SearchConfig
from optiloss.studies import select_trials, trial_genome
from optiloss.tune import tune_loss

from _shared import add_overrides_option, config_overrides


def report(title: str, comparison) -> None:
    print(f"\n{title}")
    for row in comparison.rows():
        print(
            f"  {row['loss']:<32} test accuracy {row['test_accuracy']:.4f} +- {row['accuracy_std']:.4f} "
            f"({row['seeds']} seeds)  {row['formula']}"
        )
    print(f"  {comparison.verdict()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    add_overrides_option(parser)
    parser.add_argument("--tune-trials", type=int, default=12)
    parser.add_argument("--search-trials", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    overrides = config_overrides(args)
    with tempfile.TemporaryDirectory() as folder:
        config = SearchConfig.from_mapping(
            {
                "dataset": args.dataset,
                "device": "cpu",
                "constants": 2,
                "baseline_seeds": 0,
                "artifacts": False,
                "checkpoint_dir": f"{folder}/checkpoints",
                "n_trials": args.search_trials,
                **overrides,
            }
        )
        url = f"sqlite:///{folder}/p8.db"
        data = load_data(config, progress=False)
        known = zoo(config.nodes, 2, data.num_classes)
        smoothing = screen(known["label_smoothing_0.1"]).genome
        cross_entropy = screen(known[BASELINE]).genome
        print(
            f"P8 on {config.dataset} ({len(data.train_labels)} training, {len(data.val_labels)} validation, "
            f"{len(data.test_labels)} test images), {config.model} width {config.model_width}, "
            f"{config.epochs} epochs, {config.augmentation}"
        )
        tuned = tune_loss(
            smoothing,
            "label_smoothing_0.1",
            config,
            url,
            n_trials=args.tune_trials,
            progress=False,
            log=lambda line: None,
        )
        print(
            f"tuned label smoothing: {tuned.best.formula} (validation {tuned.best_accuracy:.4f}, "
            f"as given {tuned.start_accuracy:.4f})"
        )
        report(
            "tuned label smoothing against the zoo's (0.1)",
            compare_losses(tuned.best, smoothing, "label_smoothing_0.1", config, args.seeds, progress=False),
        )
        report(
            "tuned label smoothing against cross-entropy",
            compare_losses(tuned.best, cross_entropy, BASELINE, config, args.seeds, progress=False),
        )
        report(
            "the zoo's label smoothing (0.1) against cross-entropy",
            compare_losses(smoothing, cross_entropy, BASELINE, config, args.seeds, progress=False),
        )

        outcome = run_search(config, url, progress=False, log=lambda line: None)
        study = outcome.study
        assert study is not None
        evolved = next(
            (
                t
                for t in select_trials(study, len(study.trials))
                if "zoo" not in t.user_attrs and trial_genome(study, t).constants_used
            ),
            None,
        )
        if evolved is None:
            print(
                f"\nno trained loss of the {args.search_trials}-trial search reads a constant: "
                "nothing to tune"
            )
            return
        start = trial_genome(study, evolved)
        label = SearchTrialRecord.from_trial(evolved).label()
        print(
            f"\nbest evolved loss with a constant: {label} = {start.formula} "
            f"(validation {evolved.values[0]:.4f})"
        )
        tuned_evolved = tune_loss(
            start, label, config, url, n_trials=args.tune_trials, progress=False, log=lambda line: None
        )
        print(f"tuned: {tuned_evolved.best.formula} (validation {tuned_evolved.best_accuracy:.4f})")
        report(
            f"tuned {label} against untuned",
            compare_losses(
                tuned_evolved.best, start, f"{label} (untuned)", config, args.seeds, progress=False
            ),
        )


if __name__ == "__main__":
    main()
