"""Augmentation pipelines, mixup targets, the corruption suite, all5 studies and the matrix."""

import csv
import json
import os

import optuna
import pytest
import torch
import torch.nn.functional as F

import optiloss
from optiloss.augment import AUGMENTATIONS, CORRUPTIONS, AugmentSettings, build_augmentation, corrupted_copies
from optiloss.data import load_dataset
from optiloss.genome import screen, zoo
from optiloss.models import create_model
from optiloss.train import TrainSettings, accuracy, seeded, to_float, train

from conftest import run_cli


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize("padding", [1, 3])
def test_batched_random_crop_gives_kornias_crops_with_ops_independent_of_the_batch(digits, padding):
    import kornia.augmentation as K
    from torch.profiler import ProfilerActivity, profile

    from optiloss.augment.pipelines import BatchedRandomCrop

    images = to_float(digits.train_images[:64])
    kornia_crop, batched = K.RandomCrop((8, 8), padding=padding), BatchedRandomCrop((8, 8), padding=padding)
    with seeded(3):
        expected = kornia_crop(images)
    with seeded(3):
        assert torch.equal(batched(images), expected)  # same parameters drawn, same pixels
    assert torch.equal(batched(images, params=kornia_crop._params), expected)
    assert not torch.equal(expected, images)

    def op_count(batch: torch.Tensor) -> int:
        with profile(activities=[ProfilerActivity.CPU]) as run:
            batched(batch)
        return sum(1 for event in run.events()
                   if event.name.startswith("aten::") and event.cpu_parent is None)

    # no per-image work (Kornia's slice mode: 3 ops per image)
    assert op_count(images[:4]) == op_count(images)
    other = K.RandomCrop((8, 8), padding=padding + 1)
    other(images)  # parameters drawn on a canvas padded otherwise: Kornia's path, same pixels as Kornia
    assert torch.equal(batched(images, params=other._params), kornia_crop(images, params=other._params))


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_pipelines_read_nothing_back_to_the_host_themselves(digits, name):
    """On CUDA every host read of a device tensor stalls the training loop; F.one_hot's range
    check and Beta's argument validation did it once per step. Kornia's own reads are of the
    parameters it draws on the host."""
    import traceback

    from torch.utils._python_dispatch import TorchDispatchMode

    host_reads = []

    class HostReads(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default):
                # the line outside torch that asked
                caller = [frame for frame in traceback.extract_stack()[:-1]
                          if f"{os.sep}torch{os.sep}" not in frame.filename][-1]
                host_reads.append(f"{caller.filename}:{caller.lineno}")
            return func(*args, **(kwargs or {}))

    pipeline = build_augmentation(name, digits.image_size, digits.num_classes)
    with HostReads():
        pipeline(to_float(digits.train_images[:64]), digits.train_labels[:64])
    package = os.path.dirname(optiloss.__file__) + os.sep
    assert not [read for read in host_reads if read.startswith(package)], host_reads


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_pipeline_keeps_shape_dtype_device_and_range_changes_images_and_is_reproducible(digits, name):
    images, labels = to_float(digits.train_images[:128]), digits.train_labels[:128]
    pipeline = build_augmentation(name, digits.image_size, digits.num_classes)
    with seeded(7):
        first, first_y = pipeline(images, labels)
    with seeded(7):
        again, again_y = pipeline(images, labels)
    with seeded(8):
        other, _ = pipeline(images, labels)
    assert first.shape == images.shape and first.dtype == images.dtype and first.device == images.device
    assert 0.0 <= first.min() and first.max() <= 1.0
    assert first_y.shape == (128, 10) and torch.allclose(first_y.sum(1), torch.ones(128))
    assert (first - images).abs().mean() > 0.02
    assert torch.equal(first, again) and torch.equal(first_y, again_y)
    assert not torch.equal(first, other)


def test_cutout_erases_one_square_of_half_the_side(digits):
    images = torch.ones(16, 3, 32, 32) * 0.9
    pipeline = build_augmentation("cutout", (32, 32), 10, AugmentSettings(hflip=False, crop_padding=0))
    with seeded(0):
        out, _ = pipeline(images, torch.zeros(16, dtype=torch.long))
    erased = (out == 0.5).all(dim=1)  # (B, H, W)
    assert erased.sum(dim=(1, 2)).tolist() == [256] * 16  # 16 x 16 px on 32 px images
    rows, columns = erased.any(dim=2), erased.any(dim=1)
    assert rows.sum(1).tolist() == [16] * 16 and columns.sum(1).tolist() == [16] * 16


def test_mixup_gives_distributions_and_cross_entropy_is_the_lambda_weighted_cross_entropy(digits):
    images, labels = to_float(digits.train_images[:64]), digits.train_labels[:64]
    pipeline = build_augmentation("mixup", digits.image_size, 10,
                                  AugmentSettings(hflip=False, crop_padding=0))
    with seeded(3):
        mixed, y = pipeline(images, labels)
    assert torch.allclose(y.sum(1), torch.ones(64)) and (y >= 0).all()
    assert ((y > 0).sum(1) <= 2).all()
    logits = torch.randn(64, 10, generator=torch.Generator().manual_seed(0))
    cross_entropy = screen(zoo()["cross_entropy"]).genome
    checked = 0
    for row in range(64):
        own = labels[row]
        lam = 1 - y[row, own]
        if (y[row] > 0).sum() < 2:
            continue
        # find the partner image: the mixed image is (1 - lam) own + lam partner
        residual = (mixed[row] - ((1 - lam) * images[row] + lam * images)).abs().flatten(1).amax(1)
        partner = int(residual.argmin())
        assert residual[partner] < 1e-5 and y[row, labels[partner]] == pytest.approx(float(lam))
        expected = ((1 - lam) * F.cross_entropy(logits[row:row + 1], own.view(1))
                    + lam * F.cross_entropy(logits[row:row + 1], labels[partner].view(1)))
        got = cross_entropy.per_sample(y[row:row + 1], torch.softmax(logits[row:row + 1], 1))
        assert torch.allclose(got, expected, rtol=1e-5)
        checked += 1
    assert checked > 40


def test_the_corrupted_validation_set_is_identical_across_trials_and_each_corruption_changes_it(
        digits, tmp_path, monkeypatch):
    first = corrupted_copies(digits.val_images, 3, seed=11)
    second = corrupted_copies(digits.val_images, 3, seed=11)  # from the cache
    monkeypatch.setenv("OPTILOSS_CACHE", str(tmp_path / "fresh"))
    regenerated = corrupted_copies(digits.val_images, 3, seed=11)
    assert set(first) == set(CORRUPTIONS) and len(CORRUPTIONS) == 10
    for name in CORRUPTIONS:
        assert torch.equal(first[name], second[name]) and torch.equal(first[name], regenerated[name]), name
        assert first[name].dtype == torch.uint8 and first[name].shape == digits.val_images.shape
        assert (first[name].float() - digits.val_images.float()).abs().mean() > 1.0, name


def test_a_trained_surrogate_scores_lower_on_corrupted_images(digits):
    with seeded(0):
        model = create_model("surrogate", 10, 3, 16)
        train(model, digits.train_images, digits.train_labels, screen(zoo()["cross_entropy"]).genome,
              build_augmentation("base", digits.image_size, 10), TrainSettings(epochs=10))
    clean = accuracy(model, digits.val_images, digits.val_labels)
    copies = corrupted_copies(digits.val_images, 5, seed=0)
    corrupted = {name: accuracy(model, images, digits.val_labels) for name, images in copies.items()}
    assert clean > 0.9
    assert corrupted["gaussian_noise"] < clean
    assert sum(corrupted.values()) / len(corrupted) < clean - 0.1


@pytest.mark.slow
def test_all5_makes_five_studies_and_the_matrix_tabulates_them(tiny_config, sqlite_url, tmp_path):
    result = run_cli("search", str(tiny_config), "--augmentation", "all5", "--n-trials", "2",
                     "--storage", sqlite_url, "--no-progress")
    assert result.returncode == 0, result.stderr
    studies = {summary.study_name: summary for summary in optuna.get_all_study_summaries(sqlite_url)}
    assert set(studies) == {f"digits-{name}" for name in AUGMENTATIONS}
    for name in AUGMENTATIONS:
        study = optuna.load_study(study_name=f"digits-{name}", storage=sqlite_url)
        assert study.user_attrs["augmentation"] == name and study.metric_names == ["accuracy", "robustness"]
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(complete) == 2
        assert all(f"robustness_{corruption}" in t.user_attrs for t in complete for corruption in CORRUPTIONS)

    matrix = run_cli("matrix", "--dataset", "digits", "--storage", sqlite_url, "--seeds", "1",
                     "--output", str(tmp_path / "report"), "--format", "json")
    assert matrix.returncode == 0, matrix.stderr
    rows = json.loads(matrix.stdout[: matrix.stdout.rindex("]") + 1])
    assert rows[0]["loss"] == "cross_entropy" and set(AUGMENTATIONS) <= set(rows[0])
    with open(tmp_path / "report" / "digits-matrix.csv") as handle:
        cells = list(csv.DictReader(handle))
    assert len(cells) == len(rows) * len(AUGMENTATIONS)
    assert all(0.0 <= float(cell["mean_accuracy"]) <= 1.0 for cell in cells)
    assert (tmp_path / "report" / "digits-matrix.png").stat().st_size > 10_000
