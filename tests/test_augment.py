"""Augmentation pipelines, mixup targets, the corruption suite, all5 studies and the matrix."""

import csv
import json
import os

import numpy as np
import optuna
import pytest
import torch
import torch.nn.functional as F

import optiloss
from optiloss.augment import AUGMENTATIONS, CORRUPTIONS, AugmentSettings, build_augmentation, corrupted_copies
from optiloss.data import load_dataset
from optiloss.errors import UsageError
from optiloss.genome import screen, zoo
from optiloss.models import create_model
from optiloss.train import TrainSettings, accuracy, seeded, to_float, train

from conftest import CIFAR10_SAMPLE, run_cli


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize(("padding", "mode"), [(1, "constant"), (3, "constant"), (2, "reflect")])
def test_translate_cuts_each_image_from_its_zero_or_reflect_padded_copy_with_ops_independent_of_the_batch(
    digits, padding, mode
):
    from torch.profiler import ProfilerActivity, profile

    from optiloss.augment.pipelines import RandomTranslate

    images = to_float(digits.train_images[:64])
    translate = RandomTranslate((8, 8), padding, mode)
    with seeded(3):
        moved = translate(images)
    with seeded(3):
        assert torch.equal(translate(images), moved)
    offsets = set()
    for image, out in zip(images.numpy(), moved.numpy()):
        # the expectation built without torch: numpy's padding, every window of the image's size
        padded = np.pad(image, ((0, 0), (padding, padding), (padding, padding)), mode=mode)
        found = [
            (dy, dx)
            for dy in range(2 * padding + 1)
            for dx in range(2 * padding + 1)
            if np.array_equal(padded[:, dy : dy + 8, dx : dx + 8], out)
        ]
        assert found, "an output that is no window of the padded image"
        offsets.update(found)
    assert len(offsets) >= (2 * padding + 1) ** 2 // 2  # offsets drawn over the whole range
    if mode == "reflect":  # no zero border appears where the image has none
        assert (moved == 0).float().mean() <= (images == 0).float().mean() + 0.02

    def op_count(batch: torch.Tensor) -> int:
        with profile(activities=[ProfilerActivity.CPU]) as run:
            translate(batch)
        return sum(
            1 for event in run.events() if event.name.startswith("aten::") and event.cpu_parent is None
        )

    assert op_count(images[:4]) == op_count(images)  # no per-image work


def test_reflect_padding_needs_a_padding_below_the_image_size():
    from optiloss.augment.pipelines import RandomTranslate

    with pytest.raises(UsageError, match="crop_padding_mode reflect needs crop_padding below the image size"):
        RandomTranslate((8, 8), 8, "reflect")


def test_the_alternating_flip_mirrors_a_random_half_once_then_every_image_on_odd_epochs(digits):
    images = digits.train_images[:200]
    pipeline = build_augmentation(
        "base", digits.image_size, 10, AugmentSettings(hflip="alternate", crop_padding=0)
    )
    with seeded(4):
        prepared = pipeline.prepare(images)
    mirrored = torch.tensor(
        [torch.equal(new, old.flip(-1)) and not torch.equal(new, old) for new, old in zip(prepared, images)]
    )
    unchanged = torch.tensor([torch.equal(new, old) for new, old in zip(prepared, images)])
    assert bool((mirrored | unchanged).all()) and 60 <= int(mirrored.sum()) <= 140
    labels = digits.train_labels[:200]
    for epoch, expected in [(0, prepared), (1, prepared.flip(-1)), (2, prepared), (3, prepared.flip(-1))]:
        pipeline.start_epoch(epoch)
        out, _ = pipeline(to_float(prepared), labels)
        assert torch.equal(out, to_float(expected)), epoch


def test_legacy_boolean_flips_read_as_modes():
    assert AugmentSettings(hflip=True).hflip == "random" and AugmentSettings(hflip=False).hflip == "none"
    with pytest.raises(ValueError, match="hflip must be one of random, alternate, none"):
        AugmentSettings(hflip="sometimes")


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
                caller = [
                    frame
                    for frame in traceback.extract_stack()[:-1]
                    if f"{os.sep}torch{os.sep}" not in frame.filename
                ][-1]
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
    pipeline = build_augmentation(
        "mixup", digits.image_size, 10, AugmentSettings(hflip=False, crop_padding=0)
    )
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
        # float32: 1 - (1 - lam) differs from lam by up to ~1e-7
        assert residual[partner] < 1e-5 and y[row, labels[partner]] == pytest.approx(float(lam), abs=1e-6)
        expected = (1 - lam) * F.cross_entropy(logits[row : row + 1], own.view(1)) + lam * F.cross_entropy(
            logits[row : row + 1], labels[partner].view(1)
        )
        got = cross_entropy.per_sample(y[row : row + 1], torch.softmax(logits[row : row + 1], 1))
        assert torch.allclose(got, expected, rtol=1e-5)
        checked += 1
    assert checked > 40


def test_the_corrupted_validation_set_is_identical_across_trials_and_each_corruption_changes_it(
    digits, tmp_path, monkeypatch
):
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
        train(
            model,
            digits.train_images,
            digits.train_labels,
            screen(zoo()["cross_entropy"]).genome,
            build_augmentation("base", digits.image_size, 10),
            TrainSettings(epochs=10),
        )
    clean = accuracy(model, digits.val_images, digits.val_labels)
    copies = corrupted_copies(digits.val_images, 5, seed=0)
    corrupted = {name: accuracy(model, images, digits.val_labels) for name, images in copies.items()}
    assert clean > 0.9
    assert corrupted["gaussian_noise"] < clean
    assert sum(corrupted.values()) / len(corrupted) < clean - 0.1


@pytest.mark.slow
def test_all5_makes_five_studies_and_the_matrix_tabulates_them(tiny_config, sqlite_url, tmp_path):
    result = run_cli(
        "search",
        str(tiny_config),
        "--augmentation",
        "all5",
        "--n-trials",
        "2",
        "--storage",
        sqlite_url,
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    studies = {summary.study_name: summary for summary in optuna.get_all_study_summaries(sqlite_url)}
    assert set(studies) == {f"digits-{name}" for name in AUGMENTATIONS}
    for name in AUGMENTATIONS:
        study = optuna.load_study(study_name=f"digits-{name}", storage=sqlite_url)
        assert study.user_attrs["augmentation"] == name and study.metric_names == ["accuracy", "robustness"]
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(complete) == 2
        assert all(f"robustness_{corruption}" in t.user_attrs for t in complete for corruption in CORRUPTIONS)

    matrix = run_cli(
        "matrix",
        "--dataset",
        "digits",
        "--storage",
        sqlite_url,
        "--seeds",
        "1",
        "--output",
        str(tmp_path / "report"),
        "--format",
        "json",
    )
    assert matrix.returncode == 0, matrix.stderr
    rows = json.loads(matrix.stdout[: matrix.stdout.rindex("]") + 1])
    assert rows[0]["loss"] == "cross_entropy" and set(AUGMENTATIONS) <= set(rows[0])
    with open(tmp_path / "report" / "digits-matrix.csv") as handle:
        cells = list(csv.DictReader(handle))
    assert len(cells) == len(rows) * len(AUGMENTATIONS)
    assert all(0.0 <= float(cell["mean_accuracy"]) <= 1.0 for cell in cells)
    assert (tmp_path / "report" / "digits-matrix.png").stat().st_size > 10_000


def test_corruption_severities_average_robustness_over_several_and_leave_the_default_as_it_was(digits):
    from optiloss.augment import corrupted_suite
    from optiloss.scoring import LossEvaluator
    from optiloss.settings import SearchConfig

    default = SearchConfig.from_mapping({"dataset": "digits", "device": "cpu"})
    assert default.severities() == (3,)
    assert SearchConfig.from_mapping({"corruption_severity": 2}).severities() == (2,)
    full = SearchConfig.from_mapping({"dataset": "digits", "corruption_severities": [1, 2, 3, 4, 5]})
    assert full.severities() == (1, 2, 3, 4, 5)
    for bad, message in (
        ([0, 3], "0 is not between 1 and 5"),
        ([], "non-empty list"),
        ("3", "list of integers"),
    ):
        with pytest.raises(UsageError, match=message):
            SearchConfig.from_mapping({"corruption_severities": bad})
    # a study made before the key scores the very images it scored: the single-severity copies
    evaluator = LossEvaluator(digits, torch.device("cpu"), default)
    before = corrupted_copies(digits.val_images, 3, seed=default.seed)
    assert set(evaluator.corrupted) == set(before) == set(CORRUPTIONS)
    assert all(torch.equal(evaluator.corrupted[name], before[name]) for name in CORRUPTIONS)
    suite = corrupted_suite(digits.val_images, (1, 5), seed=0)
    assert len(suite) == 2 * len(CORRUPTIONS)
    assert torch.equal(suite["contrast_s5"], corrupted_copies(digits.val_images, 5, seed=0)["contrast"])
    # harder severities change the images more
    change = {k: (suite[f"contrast_s{k}"].float() - digits.val_images.float()).abs().mean() for k in (1, 5)}
    assert change[5] > change[1]


def correlation_with(images: torch.Tensor, corrupted: torch.Tensor) -> float:
    """The mean over images of each corrupted image's Pearson correlation with its clean original."""
    clean, copy = (batch.float().flatten(1) for batch in (images, corrupted))
    clean, copy = clean - clean.mean(1, keepdim=True), copy - copy.mean(1, keepdim=True)
    return ((clean * copy).sum(1) / (clean.norm(dim=1) * copy.norm(dim=1))).mean().item()


@pytest.mark.parametrize("name", ["glass_blur", "zoom_blur", "elastic_transform", "snow", "frost"])
def test_each_added_corruption_keeps_shape_type_and_range_and_follows_its_severities(name):
    from optiloss.augment.corruptions import corrupt

    images = load_dataset(f"folder:{CIFAR10_SAMPLE}", progress=False).test_images
    corrupted = {severity: corrupt(images, name, severity, seed=0) for severity in range(1, 6)}
    change = {
        severity: (copy.float() - images.float()).abs().mean().item() for severity, copy in corrupted.items()
    }
    for copy in corrupted.values():
        assert copy.shape == images.shape and copy.dtype == torch.uint8
    assert min(change.values()) > 2.0  # every severity changes the real photographs
    assert torch.equal(corrupted[3], corrupt(images, name, 3, seed=0))  # reproducible from the seed
    # each severity applies its own parameters (glass blur's sigmas 0.05 and 0.25, severities 1 and 2,
    # both leave a 32 px image almost unblurred, in CIFAR-10-C as here)
    assert len({round(value, 3) for value in change.values()}) >= (4 if name == "glass_blur" else 5)
    if name in ("zoom_blur", "snow"):
        assert list(change.values()) == sorted(change.values())  # wider zoom, more and longer flakes
    elif name == "frost":
        # the release dims the image as the frost grows (weights 1/0.2 ... 0.75/0.45), so the pixels
        # change by about as much at severity 2 as at 5, but less and less of the image is left
        kept = [correlation_with(images, corrupted[severity]) for severity in range(1, 6)]
        assert kept == sorted(kept, reverse=True) and kept[0] - kept[-1] > 0.03
    else:
        # CIFAR-10-C's own parameters are not ordered by pixel change (elastic's severity 1 is the
        # largest affine shift, glass blur's sigma goes 0.05, 0.25, 0.4, 0.25, 0.4), so neither is ours
        assert change[5] > 0.5 * max(change.values())


@pytest.mark.parametrize("side", [8, 63, 64, 160])
def test_frost_covers_images_of_any_size(side):
    """8 px digits, and sides beyond the smallest scaled photograph (63 rows) up to transfer sizes."""
    from optiloss.augment.corruptions import corrupt

    images = torch.full((6, 3, side, side), 128, dtype=torch.uint8)
    frosted = corrupt(images, "frost", 5, seed=0)
    assert frosted.shape == images.shape and (frosted.float() - images.float()).abs().mean() > 5


def test_snow_streaks_follow_imagemagicks_one_sided_motion_blur():
    from optiloss.augment.corruptions import _motion_streaks

    layer = torch.zeros(2, 1, 9, 9)
    layer[:, :, 4, 4] = 1.0  # one flake in the middle
    streaks = _motion_streaks(layer, radius=2, sigma=1.0, angles=torch.tensor([0.0, -90.0]))
    weights = torch.exp(-(torch.arange(5.0) ** 2) / 2)
    weights /= weights.sum()
    # at 0 degrees each pixel averages the pixels to its right, so the flake trails to the left
    assert torch.allclose(streaks[0, 0, 4, :5], weights.flip(0))
    # at -90 degrees it averages the pixels above, so the flake trails downwards
    assert torch.allclose(streaks[1, 0, 4:, 4], weights)
    assert torch.allclose(streaks.sum((2, 3)), torch.ones(2, 1))


def test_frost_without_its_photographs_says_how_to_install_them(monkeypatch):
    import importlib.util

    from optiloss.augment import corruptions
    from optiloss.errors import OptilossError

    corruptions._frost_photographs.cache_clear()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    try:
        with pytest.raises(OptilossError) as raised:
            corruptions.corrupt(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "frost", 3, seed=0)
    finally:
        corruptions._frost_photographs.cache_clear()
    assert str(raised.value) == (
        "frost needs the frost photographs of the imagecorruptions package: "
        "pip install --no-deps imagecorruptions==1.1.2"
    )


def test_the_fifteen_suite_adds_cifar_10_c_s_five_others_and_leaves_the_ten_as_they_were(digits):
    from optiloss.augment import SUITES
    from optiloss.augment.corruptions import RELEASED_NAMES
    from optiloss.data.released import RELEASED_CORRUPTIONS
    from optiloss.settings import SearchConfig

    assert SearchConfig.from_mapping({}).corruption_suite == "ten"
    ten = corrupted_copies(digits.val_images, 3, seed=5)
    fifteen = corrupted_copies(digits.val_images, 3, seed=5, suite="fifteen")
    assert list(fifteen) == list(SUITES["fifteen"])
    assert sorted(RELEASED_NAMES[name] for name in fifteen) == sorted(RELEASED_CORRUPTIONS)
    assert all(torch.equal(ten[name], fifteen[name]) for name in CORRUPTIONS)
