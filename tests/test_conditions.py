"""Data conditions (label noise, class imbalance) on real data: the training part only, seeded."""

import math

import optuna
import pytest
import torch

from optiloss.data import load_dataset
from optiloss.data.conditions import (
    CIFAR10_FLIPS,
    Conditions,
    apply_conditions,
    asymmetric_map,
    long_tail_counts,
)
from optiloss.genome import screen, zoo
from optiloss.genome.zoo import CONDITION_LOSSES, GCE_Q, SCE_ALPHA, SCE_BETA, SCE_LOG_ZERO
from optiloss.records import StudyKey
from optiloss.scoring import load_data
from optiloss.settings import SearchConfig

from conftest import run_main


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", 0.2, progress=False)


def test_symmetric_noise_flips_the_rate_of_training_labels_only_and_repeats_with_the_seed(digits):
    noisy, record = apply_conditions(digits, Conditions(label_noise_rate=0.4, seed=5))
    flipped = noisy.train_labels != digits.train_labels
    share = float(flipped.double().mean())
    n = len(digits.train_labels)
    assert abs(share - 0.4) < 4 * math.sqrt(0.4 * 0.6 / n)  # within sampling error
    assert record.flipped_share == pytest.approx(share)
    # every class receives wrong labels, drawn among the other classes
    assert set(noisy.train_labels[flipped].tolist()) == set(range(10))
    assert torch.equal(noisy.train_images, digits.train_images)
    for part in ("val_labels", "test_labels", "val_images", "test_images"):
        assert torch.equal(getattr(noisy, part), getattr(digits, part))
    again, _ = apply_conditions(digits, Conditions(label_noise_rate=0.4, seed=5))
    other, _ = apply_conditions(digits, Conditions(label_noise_rate=0.4, seed=6))
    assert torch.equal(again.train_labels, noisy.train_labels)
    assert not torch.equal(other.train_labels, noisy.train_labels)
    both, _ = apply_conditions(digits, Conditions(label_noise_rate=0.4, noisy_validation=True, seed=5))
    assert 0.3 < float((both.val_labels != digits.val_labels).double().mean()) < 0.5
    assert torch.equal(both.test_labels, digits.test_labels)


def test_asymmetric_noise_follows_the_documented_map(digits, cifar10_sample):
    cifar = load_dataset(f"folder:{cifar10_sample}", 0.25, progress=False)
    mapping = asymmetric_map(cifar.classes)
    names = list(cifar.classes)
    assert {names[c]: names[mapping[c]] for c in range(10) if mapping[c] != c} == CIFAR10_FLIPS
    noisy, record = apply_conditions(cifar, Conditions(label_noise_rate=0.5, label_noise_kind="asymmetric"))
    changed = noisy.train_labels != cifar.train_labels
    for before, after in zip(cifar.train_labels[changed].tolist(), noisy.train_labels[changed].tolist()):
        assert after == mapping[before]
    flipping = torch.tensor([mapping[c] != c for c in cifar.train_labels.tolist()])
    assert not changed[~flipping].any()  # airplane, automobile, frog, horse, ship keep their labels
    assert 0.3 < float(changed[flipping].double().mean()) < 0.7
    # elsewhere, each class to the next
    assert asymmetric_map(digits.classes) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    asymmetric = Conditions(label_noise_rate=0.3, label_noise_kind="asymmetric")
    noisy_digits, _ = apply_conditions(digits, asymmetric)
    moved = noisy_digits.train_labels != digits.train_labels
    assert torch.equal(noisy_digits.train_labels[moved], (digits.train_labels[moved] + 1) % 10)


def test_imbalance_gives_the_long_tailed_counts_and_a_balanced_validation_part(cifar10_sample):
    cifar = load_dataset(f"folder:{cifar10_sample}", 0.25, progress=False)
    assert torch.bincount(cifar.train_labels, minlength=10).tolist() == [45] * 10
    long_tail, record = apply_conditions(cifar, Conditions(imbalance_ratio=10))
    expected = [int(45 * 10 ** (-c / 9)) for c in range(10)]
    assert expected[0] == 45 and expected[-1] == 4
    assert torch.bincount(long_tail.train_labels, minlength=10).tolist() == expected
    assert list(record.train_class_counts) == expected == long_tail_counts(45, 10, 10)
    assert torch.bincount(long_tail.val_labels, minlength=10).tolist() == [15] * 10
    assert torch.equal(long_tail.test_labels, cifar.test_labels)
    # the images kept are the training part's own, with their labels
    first = long_tail.train_images[long_tail.train_labels == 9]
    pool = cifar.train_images[cifar.train_labels == 9]
    assert all(any(torch.equal(image, other) for other in pool) for image in first)


@pytest.mark.slow
def test_settings_apply_the_conditions_and_a_search_records_the_measured_share(
    tmp_path, sqlite_url, tiny_config
):
    config = SearchConfig.from_mapping({"label_noise_rate": 0.2, "imbalance_ratio": 2.0, "seed": 1})
    data = load_data(config, progress=False)
    assert data.conditions["label_noise_rate"] == 0.2 and data.conditions["imbalance_ratio"] == 2.0
    assert 0.1 < data.conditions["flipped_share"] < 0.3
    assert load_data(SearchConfig(), progress=False).conditions == {}
    result = run_main(
        "search",
        str(tiny_config),
        "--label-noise-rate",
        "0.3",
        "--n-trials",
        "1",
        "--storage",
        sqlite_url,
        "--device",
        "cpu",
        "--no-progress",
        "--study-name",
        "noisy",
        env={"OPTILOSS_CACHE": str(tmp_path / "cache")},
    )
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="noisy", storage=sqlite_url)
    recorded = study.user_attrs[StudyKey.CONDITIONS]
    assert recorded["label_noise_rate"] == 0.3 and 0.2 < recorded["flipped_share"] < 0.4
    assert "30 % symmetric label noise" in result.stdout


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--label-noise-rate", "0.95", "label_noise_rate must be between 0.0 and 0.9, got 0.95"),
        ("--label-noise-rate", "-0.1", "label_noise_rate must be between 0.0 and 0.9"),
        ("--label-noise-kind", "pairs", "label_noise_kind must be one of symmetric, asymmetric"),
        ("--imbalance-ratio", "0.5", "imbalance_ratio must be between 1.0 and 1000.0"),
    ],
)
def test_a_bad_condition_is_one_line_and_exit_2(option, value, message, sqlite_url):
    result = run_main("search", "--dataset", "digits", option, value, "--storage", sqlite_url)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _one_hot_batch():
    """Probabilities from real digits (a softmax over ten pixel intensities of each of 40 images, a
    spread of confident and unsure rows) and their one-hot labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = torch.from_numpy(digits.data[:40, 20:30]).double()
    labels = torch.from_numpy(digits.target[:40]).long()
    return torch.nn.functional.one_hot(labels, 10).double(), torch.softmax(pixels / 4, dim=1), labels


def _direct(name, p, labels):
    """The losses as their papers and reference code write them, in PyTorch."""
    p_true = p.gather(1, labels[:, None])[:, 0]
    if name == "mae":
        return (torch.nn.functional.one_hot(labels, 10) - p).abs().sum(1).mean()
    if name == "gce":
        return ((1 - p_true**GCE_Q) / GCE_Q).mean()
    cross_entropy = torch.nn.functional.nll_loss(torch.log(p), labels)
    log_targets = torch.log(torch.nn.functional.one_hot(labels, 10).double()).clamp(min=SCE_LOG_ZERO)
    reverse = -(p * log_targets).sum(1).mean()
    return SCE_ALPHA * cross_entropy + SCE_BETA * reverse


@pytest.mark.parametrize("name", CONDITION_LOSSES)
def test_each_condition_zoo_loss_equals_its_direct_implementation(name):
    y, p, labels = _one_hot_batch()
    screened = screen(zoo(6, 2, 10, conditions=True)[name])
    assert screened.accepted, screened.reason
    genome = screened.genome
    assert not genome.negated  # each falls as the true class's probability rises
    assert float(genome(y, p)) == pytest.approx(float(_direct(name, p, labels)), rel=1e-6)
    if name == "gce":  # in 5 nodes the division by q does not fit: q times GCE
        small = zoo(5, 2, 10, conditions=True)["gce"]
        assert float(small(y, p)) == pytest.approx(GCE_Q * float(_direct(name, p, labels)), rel=1e-6)
    assert "exp((0.7 * ln(|p| + eps)))" in zoo(6, 2, 10, conditions=True)["gce"].formula


def test_studies_without_a_condition_keep_todays_zoo():
    assert list(zoo(5, 2, 10)) == list(zoo(5, 2, 10, conditions=False))
    assert not set(CONDITION_LOSSES) & set(zoo(6, 2, 10))
    assert set(zoo(5, 2, 10, conditions=True)) - set(zoo(5, 2, 10)) == {"mae", "gce"}
    assert set(zoo(6, 2, 10, conditions=True)) - set(zoo(6, 2, 10)) == {"mae", "gce", "sce"}
    assert set(zoo(5, 0, 10, conditions=True)) - set(zoo(5, 0, 10)) == {"mae"}
