"""Early rejection of slow learners: training saved and the Pareto front kept, at an equal budget.

    python bench/early_rejection.py [--trials 60] [--seeds 3] [--population 20] [--epochs 6]

The same NSGA-II search on digits (real objective: screen, train, score) runs
until it holds ``--trials`` COMPLETE trials, once with early rejection off
(``early_rejection_at = 0``) and once on (the defaults: a fifth of the epochs,
0.5 x cross-entropy's training accuracy), over ``--seeds`` seeds. Reports per
setting: training epochs spent (on trained losses and on stopped slow
learners), training seconds, slow learners stopped, and the hypervolume and
best accuracy of the final front (mean +- std over seeds). The last line gives
the ratios on / off.
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
from optiloss.search import LossSearchObjective, SearchConfig, open_search_study, open_storage
from optiloss.search.objective import early_rejection_epoch
from optiloss.statistics import hypervolume


def run(early: bool, seed: int, args: argparse.Namespace, folder: str) -> dict:
    name = f"{'on' if early else 'off'}-{seed}"
    config = SearchConfig.from_mapping(
        {
            "n_trials": args.trials,
            "population_size": args.population,
            "seed": seed,
            "epochs": args.epochs,
            "model_width": 16,
            "device": "cpu",
            "artifacts": False,
            "early_rejection_at": 0.2 if early else 0.0,
            "checkpoint_dir": f"{folder}/checkpoints",
            "study_name": name,
        }
    )
    study = open_search_study(config, open_storage(f"sqlite:///{folder}/early.db"), num_classes=10)
    study.optimize(
        LossSearchObjective(config, load_dataset("digits"), torch.device("cpu")),
        callbacks=[MaxTrialsCallback(args.trials, states=(TrialState.COMPLETE,))],
    )
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    slow = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
        if t.user_attrs.get("rejected", "").startswith("slow learner")
    ]
    values = np.array([trial.values for trial in complete])
    check = early_rejection_epoch(config) or 0
    trained_epochs = sum(
        len(t.user_attrs.get("train_accuracy_by_epoch", ())) or args.epochs for t in complete
    )
    return {
        "epochs": trained_epochs + check * len(slow),
        "seconds": sum(t.user_attrs.get("training_seconds", 0.0) for t in complete + slow),
        "slow": len(slow),
        "hypervolume": hypervolume(values),
        "best_accuracy": float(values[:, 0].max()),
    }


def _mean_std(results: list[dict], key: str) -> tuple[float, float]:
    values = [r[key] for r in results]
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--population", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    summary = {}
    with tempfile.TemporaryDirectory() as folder:
        for early in (False, True):
            results = [run(early, seed, args, folder) for seed in range(args.seeds)]
            summary[early] = results
            text = "  ".join(
                f"{key} {_mean_std(results, key)[0]:.4f} +- {_mean_std(results, key)[1]:.4f}"
                for key in ("hypervolume", "best_accuracy")
            )
            epochs = _mean_std(results, "epochs")
            print(
                f"early rejection {'on ' if early else 'off'}: epochs {epochs[0]:.0f} +- {epochs[1]:.0f}, "
                f"training {_mean_std(results, 'seconds')[0]:.1f} s, "
                f"slow learners stopped {_mean_std(results, 'slow')[0]:.1f}; {text}"
            )
    ratio = {
        key: _mean_std(summary[True], key)[0] / _mean_std(summary[False], key)[0]
        for key in ("epochs", "seconds", "hypervolume")
    }
    print(
        f"on / off at {args.trials} trained losses x {args.seeds} seeds: training epochs ratio "
        f"{ratio['epochs']:.3f}, seconds ratio {ratio['seconds']:.3f}, "
        f"hypervolume ratio {ratio['hypervolume']:.3f}"
    )


if __name__ == "__main__":
    main()
