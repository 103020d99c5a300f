"""Where one search trial's time goes: screening, training, evaluation, Optuna and storage.

Runs a real search (the demo config unless another TOML is given) into a
temporary SQLite file and splits the wall time of ``study.optimize``:

    python bench/trial_breakdown.py [studies/digits-demo.toml] [--n-trials N]

The last line gives the per-trial figures; "optuna+storage" is the wall time
spent neither screening, training nor evaluating (sampling, trial creation,
parameter and user-attribute writes), per trial, rejected trials included;
screening is timed again afterwards on every trial's genome.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import optuna
import torch
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from optiloss.devices import resolve_device
from optiloss.genome import Genome, screen
from optiloss.scoring import load_data
from optiloss.search import LossSearchObjective, SearchConfig, open_search_study, open_storage

ROOT = Path(__file__).resolve().parents[1]


def screening_ms(genome: Genome) -> float:
    started = time.perf_counter()
    screen(genome)
    return 1000 * (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default=str(ROOT / "studies" / "digits-demo.toml"))
    parser.add_argument("--n-trials", type=int, default=20, help="COMPLETE trials to measure")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = SearchConfig.load(args.config, {"n_trials": args.n_trials})
    device = resolve_device(config.device)
    with tempfile.TemporaryDirectory() as folder:
        storage = open_storage(f"sqlite:///{folder}/bench.db")
        data = load_data(config)
        study = open_search_study(config, storage, num_classes=data.num_classes)
        objective = LossSearchObjective(config, data.to(device), device)
        started = time.perf_counter()
        study.optimize(
            objective, callbacks=[MaxTrialsCallback(config.n_trials, states=(TrialState.COMPLETE,))]
        )
        wall = time.perf_counter() - started
        trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    screening = [screening_ms(Genome.from_params(t.params, config.nodes)) for t in trials if t.params]
    training = [t.user_attrs["training_seconds"] for t in complete]
    evaluation = [t.user_attrs.get("evaluation_seconds", 0.0) for t in complete]
    measured = sum(screening) / 1000 + sum(training) + sum(evaluation)
    overhead_ms = 1000 * (wall - measured) / len(trials)
    print(f"device {device}, torch threads {torch.get_num_threads()}, config {args.config}")
    print(
        f"{len(trials)} trials ({len(complete)} complete, {len(trials) - len(complete)} rejected) "
        f"in {wall:.1f} s"
    )
    print(f"screening  median {statistics.median(screening):.3f} ms per genome")
    print(f"training   median {statistics.median(training):.3f} s per complete trial")
    print(f"evaluation median {statistics.median(evaluation):.3f} s per complete trial")
    print(f"optuna+storage mean {overhead_ms:.1f} ms per trial")
    share = sum(training) / wall
    print(
        f"per trial: screening {statistics.median(screening):.3f} ms, training "
        f"{statistics.median(training):.2f} s, evaluation {statistics.median(evaluation):.3f} s, "
        f"optuna+storage {overhead_ms:.1f} ms; training is {100 * share:.0f} % of the wall time"
    )


if __name__ == "__main__":
    main()
