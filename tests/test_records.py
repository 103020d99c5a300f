"""The stored record: one schema (optiloss.records) for every writer and reader, and old studies read."""

import ast
import json
import re
import shutil
import sys

import optuna
import pytest
from optuna.trial import TrialState

from optiloss.records import (
    SearchTrialRecord,
    StudyKey,
    TrainingRecord,
    TransferRunRecord,
    TrialKey,
)
from optiloss.studies import noise_floor, select_trials, trial_genome
from optiloss.transfer import transfer_table

from conftest import ROOT, run_main

OLD = ROOT / "tests" / "data" / "studies-v0.1"
"""A database written by optiloss 0.1 and what that version printed of it (see its README)."""


@pytest.fixture
def old_storage(tmp_path):
    database = tmp_path / "studies.db"
    shutil.copy(OLD / "studies.db", database)
    return f"sqlite:///{database}"


def test_a_study_written_by_version_0_1_reads_as_that_version_read_it(old_storage):
    pareto = run_main("pareto", "digits-base", "--format", "json", "--storage", old_storage)
    assert pareto.returncode == 0, pareto.stderr
    printed = pareto.stdout[: pareto.stdout.rindex("]") + 1]
    # vs_ce is left out: since issue 21 the noise floor also counts cross-entropy's own trial
    without_floor = lambda rows: [{k: v for k, v in row.items() if k != "vs_ce"} for row in rows]  # noqa: E731
    assert without_floor(json.loads(printed)) == without_floor(json.loads((OLD / "pareto.json").read_text()))
    for number in (0, 8):
        shown = run_main("show", "digits-base", str(number), "--storage", old_storage)
        assert shown.returncode == 0, shown.stderr
        expected = (OLD / f"show-{number}.txt").read_text().splitlines()
        kept = [
            line
            for line in expected
            if re.match(r"(trial|formula|zoo|orientation|fingerprint|accuracy \d)", line)
        ]
        assert kept and all(line in shown.stdout.splitlines() for line in kept), (kept, shown.stdout)
    transfer = optuna.load_study(study_name="digits-base-transfer-wrn-10-1-digits", storage=old_storage)
    assert transfer_table(transfer).rows == json.loads((OLD / "transfer-rows.json").read_text())
    studies = run_main("studies", "--storage", old_storage)  # a search and a transfer study side by side
    assert (
        studies.returncode == 0
        and "best_test_accuracy" in studies.stdout
        and "digits-base " in studies.stdout
    )


def test_old_trials_give_their_records(old_storage):
    search = optuna.load_study(study_name="digits-base", storage=old_storage)
    records = {t.number: SearchTrialRecord.from_trial(t) for t in search.get_trials(deepcopy=False)}
    zoo_names = {r.zoo for r in records.values() if r.zoo}
    assert zoo_names == {"cross_entropy", "focal", "poly1", "mse", "baikal", "label_smoothing"}
    assert records[0].label() == "cross_entropy" and records[8].label() == "trial_8"
    assert records[8].formula == "(erfc(y) * (p + y))" and records[8].training.precision in (
        "bf16",
        "float32",
    )
    assert (
        len(records[8].training.train_accuracy_by_epoch) == 1
        and len(records[8].training.robustness_by_corruption) == 10
    )
    pruned = [r for t, r in zip(search.trials, records.values()) if t.state == TrialState.PRUNED]
    assert pruned and all(r.rejected and r.training is None for r in pruned)
    assert noise_floor(search) is not None and len(search.user_attrs[StudyKey.NOISE_FLOOR]) == 2
    assert [t.number for t in select_trials(search, 2)] and trial_genome(search, search.trials[8]).formula
    transfer = optuna.load_study(study_name="digits-base-transfer-wrn-10-1-digits", storage=old_storage)
    runs = [TransferRunRecord.from_trial(t) for t in transfer.trials]
    assert {run.loss for run in runs} >= {"cross_entropy", "trial_8"} and all(run.training for run in runs)
    assert all(run.run == t.user_attrs[TrialKey.RUN] for run, t in zip(runs, transfer.trials))


def test_a_table_shows_a_loss_by_its_zoo_or_given_name_and_a_drawn_one_by_none():
    assert SearchTrialRecord(3, zoo="focal").shown_name == "focal"
    assert SearchTrialRecord(4, loss_name="hinge_like").shown_name == "hinge_like"
    drawn = SearchTrialRecord(8, formula="(erfc(y) * (p + y))")
    assert drawn.shown_name == "" and drawn.label() == "trial_8"


def test_a_training_record_round_trips_through_user_attrs_with_seconds_to_the_millisecond():
    record = TrainingRecord(
        training_seconds=1.23456,
        precision="float32",
        evaluation_seconds=0.98765,
        resumed_from_epoch=2,
        final_train_loss=0.5,
        train_accuracy_by_epoch=(0.123456, 0.5),
        robustness_by_corruption={"fog": 0.25, "gaussian_noise": 0.5},
    )
    attrs = record.to_user_attrs()
    assert attrs[TrialKey.TRAINING_SECONDS] == 1.235 and attrs[TrialKey.EVALUATION_SECONDS] == 0.988
    assert attrs["robustness_fog"] == 0.25 and attrs[TrialKey.TRAIN_ACCURACY_BY_EPOCH] == [0.1235, 0.5]
    assert TrialKey.DIVERGED not in attrs
    back = TrainingRecord.from_user_attrs(attrs)
    assert back.robustness_by_corruption == {"fog": 0.25, "gaussian_noise": 0.5}
    assert (back.training_seconds, back.resumed_from_epoch, back.train_accuracy_by_epoch) == (
        1.235,
        2,
        (0.1235, 0.5),
    )
    assert TrainingRecord.from_user_attrs({TrialKey.FORMULA: "y"}) is None


def _stored_keys_named_outside_records() -> list[str]:
    """Each ``set_user_attr(KEY, ...)``, ``user_attrs[KEY]``, ``user_attrs.get(KEY)`` and
    ``user_attrs={KEY: ...}`` in optiloss whose KEY is a string literal or a module constant (an
    upper-case name) rather than a key of :mod:`optiloss.records` or a variable, as ``file:line``."""

    def named_outside(key: ast.expr) -> bool:
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            return True
        return isinstance(key, ast.Name) and key.id.isupper()

    def is_user_attrs(node: ast.expr) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "user_attrs"

    found = []
    for path in sorted((ROOT / "optiloss").rglob("*.py")):
        if path.name == "records.py" and path.parent.name == "optiloss":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            keys: list[ast.expr] = []
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr in ("set_user_attr", "set_trial_user_attr") and node.args:
                    keys.append(node.args[-2] if node.func.attr == "set_trial_user_attr" else node.args[0])
                if node.func.attr == "get" and is_user_attrs(node.func.value) and node.args:
                    keys.append(node.args[0])
                keys += [
                    key
                    for keyword in node.keywords
                    if keyword.arg == "user_attrs" and isinstance(keyword.value, ast.Dict)
                    for key in keyword.value.keys
                    if key is not None
                ]
            if isinstance(node, ast.Subscript) and is_user_attrs(node.value):
                keys.append(node.slice)
            found += [f"{path.relative_to(ROOT)}:{key.lineno}" for key in keys if named_outside(key)]
    return found


def test_no_module_but_records_writes_a_user_attribute_key_as_a_literal():
    # read with the parser, not git grep: a check that needs no git cannot pass where git is missing
    assert not _stored_keys_named_outside_records()


def test_the_key_check_sees_literals_and_module_constants(tmp_path, monkeypatch):
    root = tmp_path / "root"
    (root / "optiloss").mkdir(parents=True)
    (root / "optiloss" / "writer.py").write_text(
        'KEY = "tuned_loss"\n'
        "study.set_user_attr(\n    KEY, 1\n)\n"
        'trial.user_attrs.get("zoo")\n'
        'trial.user_attrs["loss_name"]\n'
        'study.enqueue_trial({}, user_attrs={"loss_name": "x"})\n'
        "study.set_user_attr(StudyKey.CONFIG, 1)\n"
        "for key, value in attrs.items():\n    trial.set_user_attr(key, value)\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", root)
    assert _stored_keys_named_outside_records() == [
        "optiloss/writer.py:3",
        "optiloss/writer.py:5",
        "optiloss/writer.py:6",
        "optiloss/writer.py:7",
    ]


def test_optunas_private_parts_are_read_in_one_place():
    """``study._storage`` and the ``fixed_params`` system attr are Optuna's, not public: one module,
    :mod:`optiloss.search.sampler`, reads them, so an Optuna release that moves them breaks one place."""
    readers = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "optiloss").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if (isinstance(node, ast.Attribute) and node.attr == "_storage")
        or (isinstance(node, ast.Constant) and node.value == "fixed_params")
    }
    assert readers == {"optiloss/search/sampler.py"}


def test_a_study_made_before_constants_continues_without_them(old_storage, tmp_path):
    config = tmp_path / "search.toml"
    config.write_text(
        'n_trials = 10\npopulation_size = 6\nepochs = 1\nmodel_width = 8\ndevice = "cpu"\n'
        f'baseline_seeds = 2\nartifacts = false\ncheckpoint_dir = "{tmp_path / "checkpoints"}"\n'
    )
    result = run_main("search", str(config), "--storage", old_storage, "--no-progress")
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="digits-base", storage=old_storage)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 10 and not any(
        name.startswith("const") for t in study.trials for name in t.params
    )
    assert "constants" not in study.user_attrs  # the old study's record is left as it was
