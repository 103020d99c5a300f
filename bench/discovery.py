"""The paper's experiment at a chosen scale: does a search find a loss that beats cross-entropy, and does
the best loss depend on the augmentation?

    python bench/discovery.py [--scale cpu|gpu] [--augmentations base cutout mixup randaug all]
                              [--trials N] [--seeds 3] [--top-k 1] [--dataset folder:PATH]
                              [--storage URL] [--set KEY=VALUE ...]

1. For each augmentation, a real search (the study's noise floor included) on
   the training and validation parts.
2. The best evolved losses of each search (``--top-k`` by accuracy, one per
   behaviour, zoo losses excluded; deduplicated across searches) and
   cross-entropy are retrained under every augmentation with ``--seeds``
   seeds and scored on the test split, which no search saw.
3. Per augmentation A: the loss found for A against cross-entropy under A
   (mean +- std, Welch's p), and against the losses found for the other
   augmentations under A (the paper's claim that the best loss depends on the
   augmentation).

``--scale cpu`` (about 30 minutes on 2 cores): the CNN surrogate on a
6,000-image CIFAR-10 subset at 16 px. ``--scale gpu`` (about 8 minutes on one
H100/H200): ``studies/cifar10.toml`` (airbench) on all of CIFAR-10, 14 trials
per augmentation. The CIFAR-10 JPEG folder comes from the shared archive
unless ``--dataset`` names one.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import optuna
from tqdm.auto import tqdm

from optiloss.augment import AUGMENTATIONS
from optiloss.devices import resolve_device
from optiloss.genome import BASELINE, Genome, baseline_genome
from optiloss.scoring import LossEvaluator, load_data
from optiloss.search import run_search
from optiloss.settings import SearchConfig
from optiloss.statistics import welch_p_value
from optiloss.storage import open_storage
from optiloss.studies import load_study, select_trials, trial_genome

from _shared import add_overrides_option, cifar10_jpeg_folder, config_overrides

SCALES = {
    "cpu": (
        None,
        {
            "subset": 6000,
            "image_size": 16,
            "epochs": 3,
            "model_width": 8,
            "n_trials": 20,
            "population_size": 10,
            "device": "cpu",
        },
    ),
    "gpu": ("studies/cifar10.toml", {"n_trials": 14, "population_size": 10, "device": "cuda"}),
}


def summary(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} +- {spread:.4f}"


def found_losses(studies: dict[str, optuna.Study], top_k: int) -> dict[str, Genome]:
    """Label ``{augmentation}#{trial}`` -> the best evolved losses of each study, one per structure."""
    chosen: dict[str, Genome] = {}
    seen = {baseline_genome().structure_hash}
    for augmentation, study in studies.items():
        ranked = select_trials(study, len(study.trials), "accuracy")
        evolved = [trial for trial in ranked if "zoo" not in trial.user_attrs]
        taken = 0
        for trial in evolved:
            genome = trial_genome(study, trial)
            if genome.structure_hash not in seen and taken < top_k:
                seen.add(genome.structure_hash)
                chosen[f"{augmentation}#{trial.number}"] = genome
                taken += 1
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=tuple(SCALES), default="cpu")
    parser.add_argument("--augmentations", nargs="+", default=list(AUGMENTATIONS), choices=AUGMENTATIONS)
    parser.add_argument("--trials", type=int, help="trained losses per search (default: the scale's)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--top-k", type=int, default=1)
    parser.add_argument("--dataset", help="default: the CIFAR-10 JPEG folder of the shared archive")
    parser.add_argument("--storage", help="default: a temporary SQLite file")
    add_overrides_option(parser)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    path, values = SCALES[args.scale]
    values = {
        **values,
        "dataset": args.dataset or f"folder:{cifar10_jpeg_folder()}",
        "artifacts": False,
        **({"n_trials": args.trials} if args.trials else {}),
        **config_overrides(args),
    }
    with tempfile.TemporaryDirectory() as folder:
        values.setdefault("checkpoint_dir", f"{folder}/checkpoints")
        url = args.storage or f"sqlite:///{folder}/discovery.db"
        base = SearchConfig.load(path, values)
        data = load_data(base, progress=False)
        studies = {}
        for augmentation in args.augmentations:
            config = base.replace(augmentation=augmentation, study_name=f"discovery-{augmentation}")
            outcome = run_search(
                config, url, progress=True, data=data, log=lambda line: print(line, flush=True)
            )
            studies[augmentation] = load_study(open_storage(url, create=False), outcome.study_name)
        losses = {
            BASELINE: baseline_genome(base.nodes),
            **found_losses(studies, args.top_k),
        }
        device = resolve_device(base.device)
        evaluator = LossEvaluator(
            data.to(device), device, base, model=base.model, model_width=base.model_width, split="test"
        )
        runs = [
            (label, augmentation, seed)
            for augmentation in args.augmentations
            for label in losses
            for seed in range(args.seeds)
        ]
        accuracy: dict[tuple[str, str], list[float]] = {}
        pipelines = {name: evaluator.augmentation(name) for name in args.augmentations}
        for label, augmentation, seed in tqdm(runs, desc="test-split runs", unit="run"):
            result = evaluator.evaluate(losses[label], pipelines[augmentation], base.seed + 7919 * (seed + 1))
            accuracy.setdefault((label, augmentation), []).append(result.accuracy)
    print(
        f"\n{args.scale} scale: {base.dataset}, {base.model}, {len(data.train_labels)} training images, "
        f"{base.n_trials} trained losses per search, test split ({len(data.test_labels)} images), "
        f"{args.seeds} seeds"
    )
    for label, genome in losses.items():
        print(f"  {label:14s} {genome.formula}")
    for augmentation in args.augmentations:
        baseline = accuracy[(BASELINE, augmentation)]
        own = [label for label in losses if label.startswith(f"{augmentation}#")]
        print(f"\nunder {augmentation}: cross_entropy {summary(baseline)}")
        for label in [label for label in losses if label != BASELINE]:
            values_ = accuracy[(label, augmentation)]
            p = welch_p_value(values_, baseline)
            marker = "  <- found for this augmentation" if label in own else ""
            difference = 100 * (statistics.mean(values_) - statistics.mean(baseline))
            print(
                f"  {label:14s} {summary(values_)}  vs CE {difference:+.2f} points, Welch p {p:.3g}{marker}"
            )
        for label in own:
            mine = accuracy[(label, augmentation)]
            others = [other for other in losses if other != BASELINE and other not in own]
            beaten = [
                other
                for other in others
                if statistics.mean(mine) > statistics.mean(accuracy[(other, augmentation)])
                and welch_p_value(mine, accuracy[(other, augmentation)]) < 0.05
            ]
            print(
                f"  {label} beats {len(beaten)} of the {len(others)} losses found for other augmentations "
                f"beyond noise (Welch p < 0.05){': ' + ', '.join(beaten) if beaten else ''}"
            )


if __name__ == "__main__":
    main()
