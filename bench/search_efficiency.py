"""Is the search worth its cost? Each sampler against random search and against tuning label smoothing,
per trained loss, judged on fresh seeds of the test split.

    python bench/search_efficiency.py [--arms random nsga2 tpe evolution guided tune] [--seeds 10]
                                      [--budgets 30 60] [--retrain-seeds 3] [--figure PNG]
                                      [--config studies/digits-demo.toml]
                                      [--storage sqlite:///local/efficiency.db] [--set KEY=VALUE ...]

Per search seed ``s`` (the same data split, training seed and zoo in every arm):

- the zoo is trained once (study ``eff-zoo-s<s>``) and copied into every arm's
  study, so it counts in no arm's trained losses;
- each search arm (``random``, ``nsga2``, ``tpe``, ``evolution``, ``guided``) runs
  its plain, resumable Optuna study ``eff-<arm>-s<s>`` until it holds
  ``max(--budgets)`` trained losses besides the zoo; the ``tune`` arm tunes the
  zoo's ``label_smoothing_0.1`` with as many trainings (``optiloss tune``'s study);
- at each budget ``b`` an arm's pick is its most accurate loss on the validation
  split among its first ``b`` trained losses (the pick at 30 is the best of the
  first 30 of the same run); every loss that was ever the pick, and the best zoo
  loss, is retrained with ``--retrain-seeds`` fresh seeds and scored on the test
  split (kept in a run ledger, so a rerun trains only what is missing).

It prints, per arm: the anytime curve (median and interquartile range over
seeds of the pick's test accuracy at every tenth trained loss); the trained
losses the arm needs for its pick to reach random search's median test accuracy
at the largest budget, and that against random's, with a bootstrap 95 % interval
over seeds (a run that never reaches it counts as "more than the budget"); the
share of trained losses whose validation accuracy beats the best zoo loss's;
how often the pick beats the best zoo loss and the tuned label smoothing's pick
on the test split; and the share of the time outside training and scoring. A
storage whose trainings ran in two precisions is refused. ``--figure PATH``
writes the anytime figure (a PNG).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import statistics
import warnings
from dataclasses import dataclass

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from search_throughput import steady_state

from optiloss.devices import resolve_device
from optiloss.genome import Genome, screen, zoo_names
from optiloss.ledger import RunLedger
from optiloss.recheck import recheck_seed
from optiloss.records import TransferRunRecord, TrialKey
from optiloss.scoring import LossEvaluator, load_data
from optiloss.search import SearchConfig, run_search
from optiloss.storage import open_storage
from optiloss.studies import load_study
from optiloss.tune import tune_loss, tuned_genome, zoo_loss

from _shared import add_overrides_option, config_overrides, report_figures

SEARCH_ARMS = ("random", "nsga2", "tpe", "evolution", "guided")
TUNED = "label_smoothing_0.1"
CURVE_STEP = 10


@dataclass
class Run:
    """One arm's run for one seed: its trained losses in order (genome, validation accuracy)."""

    arm: str
    seed: int
    losses: list[tuple[Genome, float]]
    outside: float

    def pick(self, budget: int) -> Genome | None:
        first = self.losses[:budget]
        return max(first, key=lambda item: item[1])[0] if first else None


def as_trained(genome: Genome, config: SearchConfig) -> Genome:
    """The genome as a trial trains it: screened and oriented (the stored parameters carry no
    orientation; a loss that rises with the true-class probability is negated)."""
    return screen(genome.with_orientation(False), **config.screen_options()).genome


def base_config(args: argparse.Namespace, seed: int, **values) -> SearchConfig:
    return SearchConfig.load(
        args.config,
        {
            "seed": seed,
            "device": args.device,
            "baseline_seeds": 0,
            "artifacts": False,
            "screen_in_sampler": True,
            "checkpoint_dir": "local/efficiency-checkpoints",
            **config_overrides(args),
            **values,
        },
    )


def trained(study: optuna.Study) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
    """(the zoo's COMPLETE trials, the others in the order they finished)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    zoo = [t for t in complete if TrialKey.ZOO in t.user_attrs]
    others = sorted((t for t in complete if TrialKey.ZOO not in t.user_attrs), key=lambda t: t.number)
    return zoo, others


def zoo_study(args: argparse.Namespace, seed: int, url: str) -> optuna.Study:
    config = base_config(args, seed, study_name=f"eff-zoo-s{seed}", sampler="random", n_trials=1)
    storage = open_storage(url)
    name = config.resolved_study_name
    if name not in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
        zoo_size = len(zoo_names(config.constants, config.conditions().active, config.nodes))
        run_search(
            base_config(args, seed, study_name=name, sampler="random", n_trials=zoo_size),
            url,
            progress=False,
            log=lambda line: None,
        )
    return load_study(storage, name)


def search_run(arm: str, args: argparse.Namespace, seed: int, url: str, zoo: optuna.Study) -> Run:
    name = f"eff-{arm}-s{seed}"
    storage = open_storage(url)
    if name not in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
        optuna.copy_study(
            from_study_name=zoo.study_name, from_storage=storage, to_storage=storage, to_study_name=name
        )
    zoo_trials, _ = trained(zoo)
    config = base_config(
        args, seed, study_name=name, sampler=arm, n_trials=len(zoo_trials) + max(args.budgets)
    )
    run_search(config, url, progress=False, log=lambda line: None)
    study = load_study(storage, name)
    _, others = trained(study)
    losses = [(as_trained(Genome.from_params(t.params, config.nodes), config), t.values[0]) for t in others]
    losses = losses[: max(args.budgets)]
    return Run(arm, seed, losses, steady_state(others, 1)["outside"])


def tune_run(args: argparse.Namespace, seed: int, url: str) -> Run:
    config = base_config(args, seed, sampler="random", n_trials=1)
    start = zoo_loss(TUNED, config, "--zoo")
    outcome = tune_loss(
        start,
        TUNED,
        config,
        url,
        n_trials=max(args.budgets),
        study_name=f"eff-tune-s{seed}",
        progress=False,
        log=lambda line: None,
    )
    trials = sorted(
        outcome.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number
    )
    losses = [(as_trained(tuned_genome(start, t.params), config), t.values[0]) for t in trials]
    return Run("tune", seed, losses, steady_state(trials, 1)["outside"])


class TestScores:
    """Mean test accuracy of a loss over fresh seeds, trained once per seed and kept in a ledger."""

    def __init__(self, args: argparse.Namespace, url: str) -> None:
        self.args, self.url, self.evaluators = args, url, {}
        self.ledger = RunLedger(open_storage(url), "eff-retrain", "search-efficiency retraining")

    def __call__(self, genome: Genome, seed: int) -> float:
        if seed not in self.evaluators:
            config = base_config(self.args, seed)
            device = resolve_device(config.device)
            assert config.model_width is not None  # filled from the surrogate's defaults
            data = load_data(config, progress=False).to(device)
            evaluator = LossEvaluator(
                data, device, config, model=config.model, model_width=config.model_width, split="test"
            )
            self.evaluators[seed] = (config, evaluator, evaluator.augmentation(config.augmentation))
        config, evaluator, augmentation = self.evaluators[seed]
        scores = []
        for index in range(self.args.retrain_seeds):
            fresh = recheck_seed(config, index)
            key = hashlib.sha256(genome.formula.encode()).hexdigest()[:16]  # orientation included
            record = TransferRunRecord(key, config.augmentation, fresh, genome.formula, f"search seed {seed}")
            run = functools.partial(evaluator.evaluate, genome, augmentation, fresh)
            score = self.ledger.score(record, run, evaluator.precision)
            scores.append(score.accuracy)
        return statistics.mean(scores)


def refuse_mixed_precisions(url: str) -> str:
    storage = open_storage(url)
    seen = set()
    for summary in optuna.get_all_study_summaries(storage):
        for trial in load_study(storage, summary.study_name).get_trials(
            deepcopy=False, states=(TrialState.COMPLETE,)
        ):
            if TrialKey.PRECISION in trial.user_attrs:
                seen.add(trial.user_attrs[TrialKey.PRECISION])
    if len(seen) > 1:
        raise SystemExit(
            f"{url} holds trainings in {' and '.join(sorted(seen))}: use one storage per precision"
        )
    return next(iter(seen), "none yet")


def needed(curve: list[float], target: float, budget: int) -> float:
    """Trained losses until the pick's test accuracy reaches ``target`` (inf: not within ``budget``)."""
    for count, value in zip(range(CURVE_STEP, budget + 1, CURVE_STEP), curve):
        if value >= target:
            return float(count)
    return float("inf")


def bootstrap_ratio(
    ours: list[float], random: list[float], rng: np.random.RandomState
) -> tuple[float, float, float]:
    """median(random's needs) / median(ours), with a 95 % bootstrap interval over seeds (paired); a
    median beyond the budget is infinite, so the ratio is 0 when ours is and infinite when only
    random's is (the interval's ends are drawn values, never interpolated between infinities)."""
    ours_a, random_a = np.array(ours), np.array(random)

    def ratio(indices: np.ndarray) -> float:
        o, r = float(np.median(ours_a[indices])), float(np.median(random_a[indices]))
        if not np.isfinite(o):
            return 0.0
        return r / o if np.isfinite(r) else float("inf")

    point = ratio(np.arange(len(ours_a)))
    draws = [ratio(rng.randint(len(ours_a), size=len(ours_a))) for _ in range(2000)]
    return (
        point,
        float(np.percentile(draws, 2.5, method="lower")),
        float(np.percentile(draws, 97.5, method="higher")),
    )


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="+", default=[*SEARCH_ARMS, "tune"], choices=[*SEARCH_ARMS, "tune"])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budgets", type=int, nargs="+", default=[30, 60])
    parser.add_argument("--retrain-seeds", type=int, default=3)
    parser.add_argument("--config", default="studies/digits-demo.toml")
    parser.add_argument("--storage", default="sqlite:///local/efficiency.db")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--figure", default=None)
    add_overrides_option(parser)
    return parser.parse_args()


def _arm_line(
    arm: str,
    arm_curves: list[list[float]],
    curves: dict[str, list[list[float]]],
    runs: dict[str, list[Run]],
    zoo_best: list[float],
    zoo_best_val: list[float],
    budgets: list[int],
    rng: np.random.RandomState,
) -> str:
    """One arm's summary: test accuracy at each budget, against the zoo, the tuned loss and random."""
    budget = max(budgets)
    at = {b: [c[b // CURVE_STEP - 1] for c in arm_curves] for b in budgets}
    line = f"{arm:10s} " + ", ".join(
        f"test accuracy at {b}: median {np.median(v):.4f} "
        f"(IQR {np.percentile(v, 25):.4f}-{np.percentile(v, 75):.4f})"
        for b, v in at.items()
    )
    beats_zoo = np.mean([c[-1] > z for c, z in zip(arm_curves, zoo_best)])
    share = np.mean(
        [np.mean([acc > zv for _, acc in run.losses]) for run, zv in zip(runs[arm], zoo_best_val)]
    )
    line += f"; pick beats the best zoo loss in {100 * beats_zoo:.0f} % of seeds"
    if "tune" in curves and arm != "tune":
        beats_tuned = np.mean([c[-1] > t[-1] for c, t in zip(arm_curves, curves["tune"])])
        line += f", the tuned label smoothing in {100 * beats_tuned:.0f} %"
    line += f"; {100 * share:.0f} % of trained losses above the best zoo loss on validation"
    line += f"; {100 * np.mean([r.outside for r in runs[arm]]):.0f} % of the time outside training"
    if "random" not in curves:
        return line
    random_target = float(np.median([curve[-1] for curve in curves["random"]]))
    ours = [needed(c, random_target, budget) for c in arm_curves]
    theirs = [needed(c, random_target, budget) for c in curves["random"]]
    if np.isfinite(np.median(ours)):
        point, low, high = bootstrap_ratio(ours, theirs, rng)
        return line + (
            f"; reaches random's median at {budget} with {np.median(ours):.0f} trained losses "
            f"(median over seeds), ratio {point:.2f} (95 % {low:.2f}-{high:.2f})"
        )
    return line + f"; reaches random's median at {budget} in fewer than half the seeds (more than {budget})"


def main() -> None:
    args = _arguments()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    budget = max(args.budgets)
    refuse_mixed_precisions(args.storage)
    test = TestScores(args, args.storage)
    runs: dict[str, list[Run]] = {arm: [] for arm in args.arms}
    zoo_best: list[float] = []
    zoo_best_val: list[float] = []
    for seed in range(args.seeds):
        zoo = zoo_study(args, seed, args.storage)
        zoo_trials, _ = trained(zoo)
        best_zoo = max(zoo_trials, key=lambda t: t.values[0])
        zoo_best_val.append(best_zoo.values[0])
        config = base_config(args, seed)
        zoo_best.append(test(as_trained(Genome.from_params(best_zoo.params, config.nodes), config), seed))
        for arm in args.arms:
            run = (
                tune_run(args, seed, args.storage)
                if arm == "tune"
                else search_run(arm, args, seed, args.storage, zoo)
            )
            runs[arm].append(run)
            print(f"seed {seed} {arm}: {len(run.losses)} trained losses", flush=True)
    curves = {
        arm: [
            [test(run.pick(b), run.seed) for b in range(CURVE_STEP, budget + 1, CURVE_STEP)]
            for run in arm_runs
        ]
        for arm, arm_runs in runs.items()
    }
    rng = np.random.RandomState(0)
    precision = refuse_mixed_precisions(args.storage)
    print(f"task: {args.config} {' '.join(args.set)}, {args.seeds} seeds, precision {precision}")
    print(
        f"best zoo loss (by validation, per seed): test accuracy median {np.median(zoo_best):.4f} "
        f"(IQR {np.percentile(zoo_best, 25):.4f}-{np.percentile(zoo_best, 75):.4f})"
    )
    for arm, arm_curves in curves.items():
        line = _arm_line(arm, arm_curves, curves, runs, zoo_best, zoo_best_val, args.budgets, rng)
        print(line)
        report_figures(**{arm: {"curves": arm_curves}})
    if args.figure:
        from optiloss.report.dashboard import pyplot

        plt = pyplot()
        figure, axis = plt.subplots(figsize=(6, 4))
        x = list(range(CURVE_STEP, budget + 1, CURVE_STEP))
        for arm, arm_curves in curves.items():
            values = np.array(arm_curves)
            axis.plot(x, np.median(values, 0), marker="o", label=arm)
            axis.fill_between(x, np.percentile(values, 25, 0), np.percentile(values, 75, 0), alpha=0.15)
        axis.axhline(float(np.median(zoo_best)), color="grey", linestyle="--", label="best zoo loss")
        axis.set_xlabel("trained losses (zoo excluded)")
        axis.set_ylabel("pick's test accuracy (median, IQR)")
        axis.legend()
        figure.tight_layout()
        figure.savefig(args.figure, dpi=120)


if __name__ == "__main__":
    main()
