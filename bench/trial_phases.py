"""Per-phase timing of a real search's trials, and the share of its time outside training and scoring.

Runs ``optiloss search`` in-process on a config (the demo's unless another is given) into a fresh
SQLite file, with the dashboard's hooks as the CLI uses them, and times each phase around the
trials by wrapping the functions that do them (the screening sampler, the objective's screen, the
evaluator, the dashboard's per-trial plots and study note, every storage call):

    python bench/trial_phases.py [studies/digits-demo.toml] [--n-trials 12] [--storage URL]

It prints the trials stored by state, the study's time breakdown
(:func:`optiloss.studies.time_breakdown`) and, per phase, the seconds, the calls and the
milliseconds per trained trial. It runs on earlier versions too (the breakdown is then left out).
"""

from __future__ import annotations

import argparse
import collections
import functools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from optiloss import scoring
from optiloss.report import dashboard
from optiloss.search import objective as objective_module
from optiloss.search import sampler as sampler_module
from optiloss.search.run import run_searches
from optiloss.settings import SearchConfig

spent: dict[str, float] = collections.defaultdict(float)
calls: collections.Counter = collections.Counter()

STORAGE_CALLS = (
    "set_trial_user_attr",
    "set_trial_system_attr",
    "set_trial_param",
    "set_trial_state_values",
    "create_new_trial",
    "get_all_trials",
    "get_trial",
    "record_heartbeat",
)


def timed(owner: Any, name: str, label: str) -> None:
    original: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[label] += time.perf_counter() - start
            calls[label] += 1

    setattr(owner, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default="studies/digits-demo.toml")
    parser.add_argument("--n-trials", type=int, default=12)
    parser.add_argument("--storage", default=None, help="default: a new SQLite file in a temporary folder")
    args = parser.parse_args()
    timed(sampler_module.ScreeningSampler, "sample_relative", "sampler (draw, screen, redraws)")
    timed(objective_module, "screen", "objective's screen")
    timed(scoring.LossEvaluator, "evaluate", "evaluate (build, train, score; noise floor too)")
    timed(dashboard, "upload_trial_artifacts", "dashboard per-trial plots")
    timed(dashboard, "refresh_study_report", "dashboard note and hypervolume")
    for name in STORAGE_CALLS:
        timed(optuna.storages.RDBStorage, name, f"storage: {name}")
    timed(objective_module.LossSearchObjective, "__call__", "objective (whole)")
    timed(optuna.study.Study, "optimize", "study.optimize (whole)")
    with tempfile.TemporaryDirectory() as folder:
        storage = args.storage or f"sqlite:///{Path(folder) / 'phases.db'}"
        overrides = {
            "n_trials": args.n_trials,
            "device": "cpu",
            "artifact_dir": str(Path(folder) / "artifacts"),
            "checkpoint_dir": str(Path(folder) / "checkpoints"),
        }
        config = SearchConfig.load(args.config, overrides)
        start = time.perf_counter()
        (outcome,) = run_searches(config, storage, progress=False, hooks=dashboard.dashboard_hooks(config))
        total = time.perf_counter() - start
        study = outcome.study
        assert study is not None
        states = collections.Counter(trial.state.name for trial in study.trials)
        print(f"trials stored {dict(states)}, rejected this run {outcome.rejected}, run {total:.1f} s")
        try:
            from optiloss.studies import time_breakdown  # type: ignore[attr-defined]

            print(time_breakdown(study).describe())
        except ImportError:  # a version before the breakdown
            pass
    trained = max(1, states["COMPLETE"])
    for label in sorted(spent, key=lambda key: -spent[key]):
        per_trial = spent[label] / trained * 1000
        print(
            f"{label:48s} {spent[label]:8.2f} s {calls[label]:6d} calls {per_trial:8.1f} ms per trained trial"
        )


if __name__ == "__main__":
    main()
