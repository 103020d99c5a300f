"""P7: complete trials per hour of a real search, with 1, 2, 4, 8 workers on one device.

    python bench/search_throughput.py --dataset folder:/path/to/cifar10-jpeg [--config studies/cifar10.toml]
                                      [--workers 1 2 4 8] [--trials 24] [--set KEY=VALUE ...]

For each worker count, a fresh study (SQLite in a temporary folder) runs
``optiloss search``'s library function until it holds ``--trials`` COMPLETE
trials. Prints per worker count: wall seconds, complete trials per hour, and
the share of the workers' time spent outside training and scoring (sampling,
screening, rejected genomes, storage: the search's overhead; goal at most
10 %). The last line gives the trials-per-hour ratio of each count against one
worker. Goal on one H100/H200 with ``studies/cifar10.toml``: at least 3,000
complete trials per hour.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import optuna
from optuna.trial import TrialState

from optiloss.search import SearchConfig, SearchHooks, run_search
from optiloss.studies import load_study

from _shared import add_overrides_option, config_overrides


def measure(config, folder: str) -> dict:
    url = f"sqlite:///{folder}/throughput-{config.workers}.db"
    started = time.perf_counter()
    outcome = run_search(config, url, progress=False, log=lambda line: None, hooks=SearchHooks())
    wall = time.perf_counter() - started
    study = load_study(optuna.storages.RDBStorage(url), outcome.study_name)
    busy = sum(
        t.user_attrs.get("training_seconds", 0.0) + t.user_attrs.get("evaluation_seconds", 0.0)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    )
    return {
        "wall": wall,
        "complete": outcome.complete_after,
        "rejected": outcome.rejected,
        "per_hour": 3600 * outcome.complete_after / wall,
        "outside": 1 - busy / (wall * config.workers),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--config", default="studies/cifar10.toml")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--trials", type=int, default=24)
    add_overrides_option(parser)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    overrides = config_overrides(args)
    rates = {}
    with tempfile.TemporaryDirectory() as folder:
        for workers in args.workers:
            config = SearchConfig.load(
                args.config,
                {
                    "dataset": args.dataset,
                    "workers": workers,
                    "n_trials": args.trials,
                    "artifacts": False,
                    "checkpoint_dir": f"{folder}/checkpoints",
                    **overrides,
                },
            )
            result = measure(config, folder)
            rates[workers] = result["per_hour"]
            print(
                f"{workers} worker(s): {result['complete']} complete trials in {result['wall']:.1f} s, "
                f"{result['per_hour']:.0f} per hour, {result['rejected']} genomes rejected, "
                f"{100 * result['outside']:.1f} % of worker time outside training and scoring"
            )
    first = args.workers[0]
    print(
        "complete trials per hour against "
        + f"{first} worker(s): "
        + ", ".join(f"{w} workers {rates[w] / rates[first]:.2f}" for w in args.workers)
    )


if __name__ == "__main__":
    main()
