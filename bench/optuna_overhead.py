"""P4: sampler plus storage time per trial over 2,000 NSGA-II trials on SQLite, with a trivial objective.

    python bench/optuna_overhead.py [--trials 2000] [--population 50]

Baseline (same run): plain Optuna, the same NSGAIISampler, the same 15
categorical genes, an objective that only suggests them. optiloss: the study
as a search opens it (heartbeat storage, metric names, the zoo enqueued), its
objective with screening, the duplicate check and every user attribute, and
the upkeep callback, with training replaced by a value derived from the genome.
Each prints the median milliseconds per trial over the first and the last 250
trials (growth), and the last line gives the ratio of the medians.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings

import optuna
import torch

from optiloss.data import load_dataset
from optiloss.genome import Genome
from optiloss.search import LossSearchObjective, SearchConfig, open_search_study, open_storage
from optiloss.search.run import upkeep_callback


def _values(genome: Genome) -> tuple[float, float]:
    digest = int(genome.structure_hash, 16)
    return digest % 997 / 997, (digest // 997) % 991 / 991


class NoTraining(LossSearchObjective):
    def train_and_score(self, trial, genome):
        return _values(genome)


def timed(study: optuna.Study, objective, trials: int, callbacks=()) -> list[float]:
    stamps = [time.perf_counter()]
    study.optimize(
        objective, n_trials=trials, callbacks=[*callbacks, lambda s, t: stamps.append(time.perf_counter())]
    )
    return [1000 * (b - a) for a, b in zip(stamps, stamps[1:])]


def report(label: str, per_trial: list[float]) -> float:
    median = statistics.median(per_trial)
    print(
        f"{label:9s} median {median:6.1f} ms per trial; "
        f"first 250 {statistics.median(per_trial[:250]):6.1f} ms, "
        f"last 250 {statistics.median(per_trial[-250:]):6.1f} ms"
    )
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--population", type=int, default=50)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    with tempfile.TemporaryDirectory() as folder:
        plain = optuna.create_study(
            storage=f"sqlite:///{folder}/plain.db",
            directions=["maximize", "maximize"],
            sampler=optuna.samplers.NSGAIISampler(population_size=args.population, seed=0),
        )
        baseline = report("optuna", timed(plain, lambda trial: _values(Genome.suggest(trial)), args.trials))

        config = SearchConfig.from_mapping(
            {
                "population_size": args.population,
                "n_trials": args.trials,
                "device": "cpu",
                "artifacts": False,
                "checkpoint_dir": f"{folder}/checkpoints",
            }
        )
        storage = open_storage(
            f"sqlite:///{folder}/optiloss.db",
            heartbeat_interval=config.heartbeat_interval,
            grace_period=config.grace_period,
            max_retry=config.max_retry,
        )
        study = open_search_study(config, storage, num_classes=10)
        objective = NoTraining(config, load_dataset("digits"), torch.device("cpu"))
        ours = report("optiloss", timed(study, objective, args.trials, [upkeep_callback(config, storage)]))
    print(
        f"optiloss / plain Optuna per trial: ratio {ours / baseline:.2f} "
        f"({ours:.1f} ms against {baseline:.1f} ms)"
    )


if __name__ == "__main__":
    main()
