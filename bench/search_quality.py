"""P6: the samplers against each other at an equal budget of trained losses, over seeds.

    python bench/search_quality.py [--trials 120] [--seeds 3] [--population 20]
                                   [--samplers nsga2 evolution random tpe] [--dataset digits]
                                   [--set KEY=VALUE ...]

Each search runs the real objective (screen, train the surrogate, score
accuracy and robustness on the validation split) until it holds ``--trials``
COMPLETE trials; only the sampler differs: NSGA-II, the paper's regularized
evolution (one objective, accuracy, tournaments of a fifth of the population
as the paper's 20 of 100), random search, TPE. Reports, per sampler, the
hypervolume of (accuracy, robustness) from (0, 0), the best accuracy and the
genomes drawn to get there (mean +- std over seeds), then each sampler's
hypervolume and best accuracy against random search's, and whether the
difference of means exceeds the larger of the two spreads.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import warnings

import optuna
import torch
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from optiloss.scoring import load_data
from optiloss.search import LossSearchObjective, SearchConfig, open_search_study, open_storage
from optiloss.statistics import hypervolume
from optiloss.studies import trial_robustness

from _shared import add_overrides_option, config_overrides


def run(sampler_name: str, seed: int, args: argparse.Namespace, folder: str) -> dict:
    overrides = config_overrides(args)
    objectives = ["accuracy"] if sampler_name == "evolution" else ["accuracy", "robustness"]
    config = SearchConfig.from_mapping(
        {
            "dataset": args.dataset,
            "n_trials": args.trials,
            "population_size": args.population,
            "seed": seed,
            "epochs": 6,
            "model_width": 16,
            "device": "cpu",
            "artifacts": False,
            "checkpoint_dir": f"{folder}/checkpoints",
            "study_name": f"{sampler_name}-{seed}",
            "sampler": sampler_name,
            "tournament_size": max(2, args.population // 5),
            "objectives": objectives,
            **overrides,
        }
    )
    storage = open_storage(f"sqlite:///{folder}/quality.db")
    data = load_data(config, progress=False)
    study = open_search_study(config, storage, num_classes=data.num_classes)
    study.optimize(
        LossSearchObjective(config, data, torch.device(config.device)),
        callbacks=[MaxTrialsCallback(args.trials, states=(TrialState.COMPLETE,))],
    )
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    points = [(trial.values[0], trial_robustness(trial) or 0.0) for trial in complete]
    return {
        "hypervolume": hypervolume(points),
        "best_accuracy": max(point[0] for point in points),
        "drawn": len(study.trials),
    }


def mean_and_spread(results: list[dict], key: str) -> tuple[float, float]:
    values = [result[key] for result in results]
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=120)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--population", type=int, default=20)
    parser.add_argument(
        "--samplers",
        nargs="+",
        default=["nsga2", "evolution", "random", "tpe"],
        choices=("nsga2", "evolution", "random", "tpe"),
    )
    parser.add_argument("--dataset", default="digits", help="digits, or folder:PATH (e.g. a CIFAR-10 subset)")
    add_overrides_option(parser)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    summary: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for sampler_name in args.samplers:
            results = [run(sampler_name, seed, args, folder) for seed in range(args.seeds)]
            summary[sampler_name] = results
            (volume, volume_spread), (best, best_spread), (drawn, drawn_spread) = (
                mean_and_spread(results, key) for key in ("hypervolume", "best_accuracy", "drawn")
            )
            print(
                f"{sampler_name:9s} hypervolume {volume:.4f} +- {volume_spread:.4f}  best accuracy "
                f"{best:.4f} +- {best_spread:.4f}  genomes drawn {drawn:.0f} +- {drawn_spread:.0f}",
                flush=True,
            )
    if "random" not in summary:
        return
    for sampler_name, results in summary.items():
        if sampler_name == "random":
            continue
        for key in ("hypervolume", "best_accuracy"):
            mean, spread = mean_and_spread(results, key)
            baseline, baseline_spread = mean_and_spread(summary["random"], key)
            beyond = abs(mean - baseline) > max(spread, baseline_spread)
            print(
                f"{sampler_name} / random at {args.trials} trained losses x {args.seeds} seeds: {key} "
                f"ratio {mean / baseline:.3f} ({'beyond' if beyond else 'within'} the spread)"
            )


if __name__ == "__main__":
    main()
