"""Does scoring the corrupted copies without the mirrored view change how losses rank?

    python bench/scoring_views.py --storage URL --study NAME [--losses 20]
                                  [--config studies/cifar10.toml] [--dataset folder:/path/to/cifar10-jpeg]
                                  [--set KEY=VALUE ...] [--device cuda]

The airbench surrogate scores with mirror test-time augmentation, on the
validation images and on each corrupted copy: about 220,000 image-forwards a
trial on CIFAR-10. This trains the ``--losses`` best-ranked losses of a real
study (by its first objective; each from its genome, seed 0) under ``--config``
(default ``studies/cifar10.toml``; ``--set`` overrides keys, e.g. a subset for a
CPU try-out), scores each trained model's corrupted copies with and without the
mirrored view, and prints Spearman's rho between the two robustness rankings
(and the mean robustness both ways, and the seconds of each kind of scoring).
The same trained models are scored both ways, so training noise is shared:
rho measures the view alone. Rho of at least 0.99 would let a new airbench
study score its corrupted copies without the mirror (issue 30).
"""

from __future__ import annotations

import argparse
import time

import optuna
import torch
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from optiloss.scoring import LossEvaluator, load_data
from optiloss.search import SearchConfig
from optiloss.studies import load_study, trial_genome
from optiloss.train import stacked_accuracies

from _shared import add_overrides_option, config_overrides, report_figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", required=True)
    parser.add_argument("--study", required=True)
    parser.add_argument("--losses", type=int, default=20)
    parser.add_argument("--config", default="studies/cifar10.toml")
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_overrides_option(parser)
    args = parser.parse_args()
    study = load_study(optuna.storages.RDBStorage(args.storage), args.study)
    trials = sorted(
        (t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE),
        key=lambda t: -t.values[0],
    )[: args.losses]
    overrides = {"device": args.device, **({"dataset": args.dataset} if args.dataset else {})}
    config = SearchConfig.load(args.config, {**overrides, **config_overrides(args)})
    device = torch.device(args.device)
    evaluator = LossEvaluator.for_search(config, load_data(config, progress=False).to(device), device)
    corrupted = torch.cat(list(evaluator.corrupted.values()))
    names = list(evaluator.corrupted)
    augmentation = evaluator.augmentation(config.augmentation)
    mirrored, plain, seconds = [], [], {"mirrored": 0.0, "plain": 0.0}
    for trial in tqdm(trials, desc="losses", unit="loss"):
        model, _ = evaluator.train_model(trial_genome(study, trial), augmentation, seed=0)
        for label, flip, into in (("mirrored", True, mirrored), ("plain", False, plain)):
            started = time.perf_counter()
            scores = stacked_accuracies(model, corrupted, evaluator.labels, names, flip_tta=flip)
            seconds[label] += time.perf_counter() - started
            into.append(sum(scores.values()) / len(scores))
    rho = float(spearmanr(mirrored, plain).statistic)
    print(
        f"{len(trials)} losses of {args.study}: robustness with the mirrored view "
        f"{sum(mirrored) / len(mirrored):.4f}, "
        f"without {sum(plain) / len(plain):.4f}; Spearman's rho between the rankings {rho:.4f}; scoring "
        f"{seconds['mirrored'] / len(trials):.3f} s against {seconds['plain'] / len(trials):.3f} s a model"
    )
    report_figures(
        rho=rho, losses=len(trials), **{f"{k}_scoring_s": v / len(trials) for k, v in seconds.items()}
    )


if __name__ == "__main__":
    main()
