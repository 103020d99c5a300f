"""P7: complete trials per hour of a real search in its steady state, with 1, 2, 4, 8 workers on one device.

    python bench/search_throughput.py --dataset folder:/path/to/cifar10-jpeg [--config studies/cifar10.toml]
                                      [--workers 1 2 4 8] [--seconds 40] [--trials 1000] [--set KEY=VALUE ...]

For each worker count, a fresh study (SQLite in a temporary folder, no noise
floor: ``baseline_seeds = 0``) runs ``optiloss search``'s library function in a
process group of its own for ``--seconds`` (or until ``--trials`` COMPLETE
trials), then is stopped. The rate and the share of the workers' time outside
training and scoring (sampling, screening, rejected genomes, storage: the
search's overhead; goal at most 10 %) come from the study's own trial
timestamps, from the first trial's start to the last completion, so process
start-up, imports and data loading do not count. Prints per worker count the
complete trials in that window, trials per hour and the share outside; the last
line gives the trials-per-hour ratio of each count against the first. Goal on
one H100/H200 with ``studies/cifar10.toml``: at least 3,000 complete trials per
hour.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from optiloss.search import SearchConfig, SearchHooks, run_search

from _shared import add_overrides_option, config_overrides, report_figures


def steady_state(trials: Sequence[FrozenTrial], workers: int) -> dict[str, float]:
    """From a study's trials: the window from the first trial's start to the last COMPLETE trial's
    completion, the COMPLETE trials in it, their rate per hour, and the share of ``workers`` x window
    spent outside the trials' training and scoring seconds (COMPLETE and PRUNED trials that ended in
    the window). Trials still running when the search was stopped count as time outside."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.datetime_complete is not None]
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    if not complete or not starts:
        return {"complete": len(complete), "window_s": 0.0, "per_hour": 0.0, "outside": 1.0}
    first, last = min(starts), max(t.datetime_complete for t in complete)
    window = (last - first).total_seconds()
    busy = sum(
        t.user_attrs.get("training_seconds", 0.0) + t.user_attrs.get("evaluation_seconds", 0.0)
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        and t.datetime_complete is not None
        and t.datetime_complete <= last
    )
    return {
        "complete": len(complete),
        "window_s": window,
        "per_hour": 3600 * len(complete) / window if window > 0 else 0.0,
        "outside": 1 - busy / (workers * window) if window > 0 else 1.0,
    }


def search_config(args: argparse.Namespace, workers: int, folder: str) -> SearchConfig:
    return SearchConfig.load(
        args.config,
        {
            "dataset": args.dataset,
            "workers": workers,
            "n_trials": args.trials,
            "baseline_seeds": 0,
            "artifacts": False,
            "checkpoint_dir": f"{folder}/checkpoints",
            **config_overrides(args),
        },
    )


def run_time_boxed(args: argparse.Namespace, workers: int, folder: str) -> str:
    """Run the search with ``workers`` in a child process group, stopped after ``args.seconds``;
    returns its storage URL."""
    url = f"sqlite:///{folder}/throughput-{workers}.db"
    command = [sys.executable, __file__, *sys.argv[1:], "--child", json.dumps([workers, folder, url])]
    child = subprocess.Popen(command, start_new_session=True)
    try:
        child.wait(timeout=args.seconds)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--config", default="studies/cifar10.toml")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--seconds", type=float, default=40.0, help="time box of each worker count")
    parser.add_argument(
        "--trials", type=int, default=1000, help="stop a worker count at this many COMPLETE trials"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    add_overrides_option(parser)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if args.child:
        workers, folder, url = json.loads(args.child)
        run_search(
            search_config(args, workers, folder),
            url,
            progress=False,
            log=lambda line: None,
            hooks=SearchHooks(),
        )
        return
    rates = {}
    with tempfile.TemporaryDirectory() as folder:
        for workers in args.workers:
            url = run_time_boxed(args, workers, folder)
            storage = optuna.storages.RDBStorage(url)
            (summary,) = optuna.get_all_study_summaries(storage)
            trials = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials(
                deepcopy=False
            )
            result = steady_state(trials, workers)
            rejected = sum(t.state == TrialState.PRUNED for t in trials)
            rates[workers] = result["per_hour"]
            print(
                f"{workers} worker(s): {result['complete']} complete trials "
                f"in a {result['window_s']:.1f} s window, "
                f"{result['per_hour']:.0f} per hour, {rejected} stored rejections, "
                f"{100 * result['outside']:.1f} % of worker time outside training and scoring"
            )
            report_figures(**{f"{workers} workers": {**result, "stored_rejections": rejected}})
    first = args.workers[0]
    if rates[first] > 0:
        print(
            f"complete trials per hour against {first} worker(s): "
            + ", ".join(f"{w} workers {rates[w] / rates[first]:.2f}" for w in args.workers)
        )


if __name__ == "__main__":
    main()
