"""The one ledgered training loop of recheck and the matrix, reading runs back, and the one significance
rule."""

import math

import optuna
from optuna.trial import TrialState

from optiloss.ledger import RunLedger, ledgered_scores, runs_by_loss
from optiloss.records import TransferRunRecord, TrialKey
from optiloss.scoring import Evaluation
from optiloss.statistics import ALPHA, Comparison, direction


def test_a_rerun_trains_only_what_the_ledger_lacks_and_builds_its_trainer_only_then():
    storage = optuna.storages.InMemoryStorage()
    runs = {(label, k): TransferRunRecord(label, "base", k, "y") for label in ("a", "b") for k in range(2)}
    built, trained = [], []

    def trainer():
        built.append(1)

        def train(key):
            trained.append(key)
            return Evaluation(accuracy=0.5 + 0.1 * key[1], robustness=0.25)

        return train, "float32"

    ledger = RunLedger(storage, "ledger", "recheck")
    first = dict(list(runs.items())[:3])
    assert set(ledgered_scores(first, ledger, trainer, description="runs", progress=False)) == set(first)
    again = RunLedger(storage, "ledger", "recheck")  # a rerun reads what finished
    scores = ledgered_scores(runs, again, trainer, description="runs", progress=False)
    assert trained == [*first, ("b", 1)] and len(built) == 2
    assert scores[("a", 1)].accuracy == 0.6 and len(again.study.trials) == 4
    ledgered_scores(runs, again, trainer, description="runs", progress=False)
    assert len(built) == 2  # nothing missing: no data loaded, no evaluator built


def test_every_verdict_takes_the_one_significance_rule():
    assert ALPHA == 0.05
    assert direction(0.02, 0.01) == "better" and direction(-0.02, 0.01) == "worse"
    assert direction(0.02, 0.2) is None and direction(0.02, math.nan) is None
    compared = Comparison.of([0.9, 0.91, 0.92], [0.8, 0.81, 0.82], "mine", "cross-entropy")
    assert compared.better and compared.verdict() == "better than cross-entropy"
    assert Comparison.of([0.8, 0.8], [0.8, 0.8], "same", "x").verdict() == "not shown better than x"


def test_runs_by_loss_reads_each_loss_accuracies_of_the_complete_runs_under_one_augmentation_or_a_metric():
    storage = optuna.storages.InMemoryStorage()
    assert runs_by_loss(storage, "missing") == {}
    study = optuna.create_study(study_name="runs", storage=storage, directions=["maximize", "maximize"])
    for loss, augmentation, seed, accuracy, released in [
        ("cross_entropy", "base", 0, 0.8, 0.5),
        ("trial_3", "base", 0, 0.9, None),
        ("cross_entropy", "base", 1, 0.7, 0.4),
        ("trial_3", "mixup", 0, 0.6, 0.3),
    ]:
        attrs = TransferRunRecord(loss, augmentation, seed, "y").to_user_attrs()
        study.add_trial(
            optuna.trial.create_trial(
                values=[accuracy, 0.1],
                user_attrs=attrs | ({} if released is None else {TrialKey.CIFAR_C: released}),
            )
        )
    failed = TransferRunRecord("trial_3", "base", 1, "y").to_user_attrs()  # never read: not COMPLETE
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs=failed))
    assert runs_by_loss(storage, "runs") == {"cross_entropy": [0.8, 0.7], "trial_3": [0.9, 0.6]}
    assert runs_by_loss(storage, "runs", augmentation="base") == {
        "cross_entropy": [0.8, 0.7],
        "trial_3": [0.9],
    }
    assert runs_by_loss(storage, "runs", augmentation="base", metric=TrialKey.CIFAR_C) == {
        "cross_entropy": [0.5, 0.4]
    }
    assert runs_by_loss(storage, "runs", metric=TrialKey.CIFAR_C) == {
        "cross_entropy": [0.5, 0.4],
        "trial_3": [0.3],
    }
