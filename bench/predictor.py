"""The guided sampler's gate: how well does a predictor fitted on earlier trained losses rank the next ones?

    python bench/predictor.py --storage URL --study NAME [--study NAME ...] [--start 20] [--members 16]

For each study (its COMPLETE trials with a whole genome, in the order they
finished) and each predictor kind of :class:`optiloss.search.guided.PhenotypePredictor`,
the prediction of trial ``i`` comes from a predictor fitted only on trials
``0 .. i - 1`` (forward chaining, as the sampler sees them), for every ``i`` from
``--start`` on. Printed per study and kind: Spearman's rho between predicted and
measured accuracy (and robustness), over the predicted trials, and the share of
the measured top decile that the predicted top decile holds, and the rho on
accuracy within the better half of the measured losses (losses that fail to
train are easy to tell apart; the choice among good ones is what counts). A rho near 0 means
the phenotype does not tell the sampler which loss will train well; the guided
sampler is worth its cost only well above it. The last line names the best
kind by rho on accuracy.
"""

from __future__ import annotations

import argparse

import numpy as np
import optuna
from optuna.trial import TrialState
from scipy.stats import spearmanr

from optiloss.genome import Genome, screen
from optiloss.genome.phenotype import phenotype
from optiloss.recheck import search_config
from optiloss.search.guided import PREDICTORS, PhenotypePredictor
from optiloss.studies import load_study

from _shared import report_figures


def study_phenotypes(study: optuna.Study) -> tuple[np.ndarray, np.ndarray]:
    """(phenotypes, objective values) of the study's trained trials in the order they finished."""
    config = search_config(study)
    options = config.screen_options()
    trials = sorted(
        (t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values),
        key=lambda t: (t.datetime_complete, t.number),
    )
    features, values = [], []
    for trial in trials:
        result = screen(Genome.from_params(trial.params, config.nodes), **options)
        features.append(phenotype(result.genome, options["soft_targets"]))
        values.append(trial.values)
    return np.stack(features), np.array(values, dtype=np.float64)


def forward_chained(
    kind: str, features: np.ndarray, values: np.ndarray, start: int, members: int
) -> np.ndarray:
    """The prediction of each trial from ``start`` on, fitted on the trials before it."""
    predictions = []
    for index in range(start, len(values)):
        model = PhenotypePredictor(kind, members=members, seed=index).fit(features[:index], values[:index])
        predictions.append(model.members(features[index : index + 1]).mean(0)[0])
    return np.array(predictions)


def top_decile_overlap(predicted: np.ndarray, measured: np.ndarray) -> float:
    count = max(1, len(measured) // 10)
    return len(set(np.argsort(-predicted)[:count]) & set(np.argsort(-measured)[:count])) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", required=True)
    parser.add_argument("--study", action="append", required=True)
    parser.add_argument("--start", type=int, default=20)
    parser.add_argument("--members", type=int, default=16)
    args = parser.parse_args()
    storage = optuna.storages.RDBStorage(args.storage)
    best: dict[str, list[float]] = {kind: [] for kind in PREDICTORS}
    for name in args.study:
        study = load_study(storage, name)
        features, values = study_phenotypes(study)
        measured = values[args.start :]
        names = study.metric_names or [f"objective {k}" for k in range(values.shape[1])]
        for kind in PREDICTORS:
            predicted = forward_chained(kind, features, values, args.start, args.members)
            rhos = [
                float(spearmanr(predicted[:, k], measured[:, k]).statistic) for k in range(values.shape[1])
            ]
            overlap = top_decile_overlap(predicted[:, 0], measured[:, 0])
            # among the losses that train at all, where a choice between good losses is made
            upper = measured[:, 0] >= np.median(measured[:, 0])
            rho_upper = float(spearmanr(predicted[upper, 0], measured[upper, 0]).statistic)
            best[kind].append(rhos[0])
            print(
                f"{name} ({len(values)} trained losses, {len(measured)} predicted), {kind}: Spearman's rho "
                + ", ".join(f"{n} {rho:.3f}" for n, rho in zip(names, rhos))
                + f"; {names[0]} within the better half {rho_upper:.3f}"
                + f"; the predicted top decile holds {100 * overlap:.0f} % of the measured one"
            )
            report_figures(
                **{
                    f"{name} {kind}": {
                        "rho": dict(zip(names, rhos)),
                        "rho_better_half": rho_upper,
                        "top_decile": overlap,
                    }
                }
            )
    winner = max(best, key=lambda kind: float(np.mean(best[kind])))
    print(f"best predictor by rho on accuracy: {winner} (mean rho {np.mean(best[winner]):.3f})")


if __name__ == "__main__":
    main()
