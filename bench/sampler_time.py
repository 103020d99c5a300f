"""The guided sampler's own time per trial on a study of many trained losses (issue 32's goal: at
most 0.3 s at 1,000 trials, 10 % of a 3 s GPU trial).

The study is made of real trained losses: the COMPLETE trials with a whole genome of every study in
the given storages (the predictor gate's study, the search-efficiency studies), copied into one
in-memory study until it holds ``--trials`` of them. Their values come from different trainings,
which changes what the predictor learns, not what it costs. Each timed call is one ``study.ask()``
(the sampler's whole work: reading the trials, fitting, breeding and screening a pool, picking),
then the trial is failed so that the count stays. The first call also computes every trained
trial's phenotype (once per process, as a long search does once); it is reported apart.

Command (docs/benchmarks.md): ``.venv/bin/python bench/sampler_time.py --storage
sqlite:///local/gate.db sqlite:///local/efficiency.db --trials 250 1000``
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import time

import optuna
from optuna.trial import TrialState

from optiloss.search.guided import GuidedSampler
from optiloss.search.sampler import gene_holds, genome_search_space

GOAL_S = 0.3
"""10 % of a 3 s GPU trial."""
NODES, CONSTANTS = 5, 2


def trained_trials(storages: list[str], nodes: int, constants: int) -> list[optuna.trial.FrozenTrial]:
    """Every COMPLETE two-objective trial with a whole genome of ``nodes`` and ``constants``, in the
    order of the storages and their studies, one per distinct genome."""
    space = genome_search_space(nodes, constants)
    found, genomes = [], set()
    for url in storages:
        for summary in optuna.get_all_study_summaries(url):
            attributes = summary.user_attrs
            if attributes.get("nodes") != nodes or attributes.get("constants") != constants:
                continue
            study = optuna.load_study(study_name=summary.study_name, storage=url)
            for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                key = tuple(sorted(trial.params.items()))
                whole = all(gene_holds(d, trial.params.get(name)) for name, d in space.items())
                if trial.values and len(trial.values) == 2 and whole and key not in genomes:
                    genomes.add(key)
                    found.append(trial)
    return found


def timed_study(trials: list[optuna.trial.FrozenTrial], seed: int) -> optuna.Study:
    study = optuna.create_study(
        directions=["maximize", "maximize"],
        sampler=GuidedSampler(NODES, seed=seed, constants=CONSTANTS),
    )
    study.set_metric_names(["accuracy", "robustness"])  # experimental in Optuna 5, as optiloss uses it
    for trial in trials:
        study.add_trial(
            optuna.trial.create_trial(
                params=trial.params,
                distributions=trial.distributions,
                values=trial.values,
                user_attrs=trial.user_attrs,
            )
        )
    return study


def time_calls(study: optuna.Study, calls: int) -> tuple[float, list[float]]:
    """The first call's seconds and the following calls' seconds."""
    seconds, space = [], genome_search_space(NODES, CONSTANTS)
    for _ in range(calls + 1):
        start = time.perf_counter()
        trial = study.ask(fixed_distributions=space)  # suggests every gene: the sampler's whole pick
        seconds.append(time.perf_counter() - start)
        study.tell(trial, state=TrialState.FAIL)
    return seconds[0], seconds[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", nargs="+", required=True)
    parser.add_argument("--trials", nargs="+", type=int, default=[250, 1000])
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--profile", action="store_true", help="print where the largest study's calls spend")
    arguments = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    available = trained_trials(arguments.storage, NODES, CONSTANTS)
    print(f"{len(available)} distinct trained losses found in {len(arguments.storage)} storage(s)")
    for count in arguments.trials:
        if count > len(available):
            print(f"{count} trials: only {len(available)} trained losses available, skipped")
            continue
        study = timed_study(available[:count], seed=0)
        profiler = cProfile.Profile() if arguments.profile and count == max(arguments.trials) else None
        if profiler:
            profiler.enable()
        first, rest = time_calls(study, arguments.calls)
        if profiler:
            profiler.disable()
        median = statistics.median(rest)
        print(
            f"{count} trained trials: first call {first:.2f} s (phenotypes of the trained losses), "
            f"then median {median:.3f} s per trial (min {min(rest):.3f}, max {max(rest):.3f}, "
            f"{len(rest)} calls); goal {GOAL_S} s, ratio {median / GOAL_S:.2f} of it"
        )
        if profiler:
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
            print(text.getvalue())


if __name__ == "__main__":
    main()
