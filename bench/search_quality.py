"""P6: NSGA-II against random search at an equal budget of trained losses, on digits, over seeds.

    python bench/search_quality.py [--trials 120] [--seeds 3] [--population 20]

Each search runs the real objective (screen, train the digits surrogate,
score accuracy and robustness) until it holds ``--trials`` COMPLETE trials;
only the sampler differs (NSGA-II, or RandomSampler). Reports, per sampler,
the hypervolume of (accuracy, robustness) from (0, 0), the best accuracy and
the genomes drawn to get there (mean +- std over seeds). The last line gives
the hypervolume ratio NSGA-II / random.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import warnings

import numpy as np
import optuna
import torch
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from optiloss.data import load_dataset
from optiloss.report.dashboard import hypervolume
from optiloss.search import LossSearchObjective, make_config, open_search_study, open_storage


def run(sampler_name: str, seed: int, trials: int, population: int, folder: str) -> dict:
    config = make_config({"n_trials": trials, "population_size": population, "seed": seed, "epochs": 6,
                          "model_width": 16, "device": "cpu", "artifacts": False,
                          "checkpoint_dir": f"{folder}/checkpoints", "study_name": f"{sampler_name}-{seed}"})
    storage = open_storage(f"sqlite:///{folder}/quality.db")
    study = open_search_study(config, storage)
    if sampler_name == "random":
        study.sampler = optuna.samplers.RandomSampler(seed=seed)
    study.optimize(LossSearchObjective(config, load_dataset("digits"), torch.device("cpu")),
                   callbacks=[MaxTrialsCallback(trials, states=(TrialState.COMPLETE,))])
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    values = np.array([trial.values for trial in complete])
    return {"hypervolume": hypervolume(values), "best_accuracy": float(values[:, 0].max()),
            "drawn": len(study.trials)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=120)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--population", type=int, default=20)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    summary = {}
    with tempfile.TemporaryDirectory() as folder:
        for sampler_name in ("nsga2", "random"):
            results = [run(sampler_name, seed, args.trials, args.population, folder)
                       for seed in range(args.seeds)]
            summary[sampler_name] = results

            def spread(key: str, results: list = results) -> tuple[float, float]:
                return (statistics.mean(r[key] for r in results),
                        statistics.stdev(r[key] for r in results) if len(results) > 1 else 0.0)

            print(f"{sampler_name:7s} hypervolume "
                  f"{spread('hypervolume')[0]:.4f} +- {spread('hypervolume')[1]:.4f}  "
                  f"best accuracy {spread('best_accuracy')[0]:.4f} +- {spread('best_accuracy')[1]:.4f}  "
                  f"genomes drawn {spread('drawn')[0]:.0f} +- {spread('drawn')[1]:.0f}")
    ratio = statistics.mean(r["hypervolume"] for r in summary["nsga2"]) / statistics.mean(
        r["hypervolume"] for r in summary["random"])
    print(f"NSGA-II / random at {args.trials} trained losses x {args.seeds} seeds: "
          f"hypervolume ratio {ratio:.3f}")


if __name__ == "__main__":
    main()
