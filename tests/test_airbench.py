"""The airbench surrogate: its network, whitening from data, its recipe, seeded repeats and resumes."""

import pytest
import torch

import optiloss.train as training
from optiloss.augment import build_augmentation
from optiloss.data import class_mixed_subset, load_dataset
from optiloss.errors import UsageError
from optiloss.genome import screen, zoo
from optiloss.models import AirbenchNet, create_model
from optiloss.models import airbench as airbench_module
from optiloss.models.airbench import AirbenchRecipe
from optiloss.scoring import LossEvaluator
from optiloss.settings import SURROGATE_DEFAULTS, SearchConfig
from optiloss.train import Checkpointing, TrainSettings, seeded, to_float, train


@pytest.fixture(scope="module")
def sample(cifar10_sample):
    return load_dataset(f"folder:{cifar10_sample}", validation_fraction=0.25, progress=False)


def test_the_network_has_airbench94s_shape():
    model = create_model("airbench", 10, 3, 64)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (3, 24, (2, 2)),
        (24, 64, (3, 3)),
        (64, 64, (3, 3)),
        (64, 256, (3, 3)),
        (256, 256, (3, 3)),
        (256, 256, (3, 3)),
        (256, 256, (3, 3)),
    ]
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert "whiten.weight" not in trainable and "whiten.bias" in trainable
    assert not [name for name in trainable if "norm" in name and name.endswith("weight")]
    assert len(model.batchnorm_biases()) == 6


def test_whitening_filters_come_from_the_training_patches(sample):
    images = to_float(sample.train_images)
    model = AirbenchNet(10)
    model.initialise_from_data(images)
    x = model.normalise(images)
    patches = x.unfold(2, 2, 1).unfold(3, 2, 1).transpose(1, 3).reshape(-1, 12).double()
    filters = model.whiten.weight[:12].reshape(12, 12).double()
    whitened = patches @ filters.T
    covariance = whitened.T @ whitened / len(whitened)
    # eigenvalue / (eigenvalue + eps): the strong components come out with unit variance, uncorrelated
    assert torch.allclose(covariance, torch.diag(torch.diagonal(covariance)), atol=2e-3)
    assert torch.diagonal(covariance)[:6].min() > 0.9 and torch.diagonal(covariance).max() <= 1.0
    assert torch.equal(model.whiten.weight[12:], -model.whiten.weight[:12])
    other = AirbenchNet(10)
    other.initialise_from_data(images.flip(-2))  # upside down: other patches, other filters
    assert not torch.allclose(other.whiten.weight, model.whiten.weight, atol=1e-3)


def test_the_recipe_warms_up_from_a_fifth_and_ends_at_seven_percent():
    factor = AirbenchRecipe().schedule(TrainSettings(), 100)
    assert factor(0) == pytest.approx(0.2) and factor(23) == pytest.approx(1.0)
    assert factor(100) == pytest.approx(0.07) and factor(60) < factor(40) < factor(23)


def test_a_search_config_takes_airbench_defaults_and_stores_them():
    config = SearchConfig.from_mapping({"model": "airbench"})
    defaults = SURROGATE_DEFAULTS["airbench"]
    assert {key: getattr(config, key) for key in defaults} == defaults
    assert config.as_dict()["batch_size"] == 1024 and config.train_settings().recipe == "airbench"
    assert SearchConfig.from_mapping({"model": "airbench", "batch_size": 256}).batch_size == 256
    assert SearchConfig().train_settings() == TrainSettings()  # the CNN keeps AdamW and its defaults
    with pytest.raises(UsageError, match="model must be one of cnn, airbench, got 'vit'"):
        SearchConfig.from_mapping({"model": "vit"})


def test_airbench_refuses_images_too_small_for_its_poolings():
    config = SearchConfig.from_mapping({"model": "airbench", "device": "cpu"})
    with pytest.raises(UsageError, match="model airbench needs images of at least 16 px, digits has 8 px"):
        LossEvaluator.for_search(config, load_dataset("digits"), torch.device("cpu"))


def _settings() -> SearchConfig:
    return SearchConfig.from_mapping(
        {"model": "airbench", "epochs": 4, "batch_size": 100, "model_width": 8, "device": "cpu"}
    )


def test_a_seeded_airbench_trial_repeats_and_learns(sample):
    evaluator = LossEvaluator.for_search(_settings(), sample, torch.device("cpu"))
    loss = screen(zoo()["cross_entropy"]).genome
    first, second = (evaluator.evaluate(loss, evaluator.augmentation("base"), seed=3) for _ in range(2))
    untimed = [
        [{k: v for k, v in h.items() if k != "seconds"} for h in run.history] for run in (first, second)
    ]
    assert untimed[0] == untimed[1]
    assert (first.accuracy, first.robustness) == (second.accuracy, second.robustness)
    assert first.history[-1]["loss"] < first.history[0]["loss"]
    assert first.history[-1]["train_accuracy"] > 0.15  # chance is 0.1


def test_an_interrupted_airbench_run_resumes_to_the_same_weights(sample, tmp_path):
    settings = _settings().train_settings()
    loss = screen(zoo()["cross_entropy"]).genome
    augmentation = build_augmentation("base", sample.image_size, 10)

    def run(checkpointing=None):
        with seeded(5):
            model = create_model("airbench", 10, 3, 8)
            result = train(
                model,
                sample.train_images,
                sample.train_labels,
                loss,
                augmentation,
                settings,
                checkpointing=checkpointing,
            )
        return model, result

    full_model, full = run()
    partial = tmp_path / "partial.pt"
    original = training._save_checkpoint

    def stop_after_two(path, state):
        original(path, state)
        if state["epoch"] == 2:
            raise KeyboardInterrupt

    training._save_checkpoint = stop_after_two
    try:
        with pytest.raises(KeyboardInterrupt):
            run(Checkpointing(save_to=partial))
    finally:
        training._save_checkpoint = original
    resumed_model, resumed = run(Checkpointing(resume_from=partial))
    assert resumed.resumed_from_epoch == 2
    assert [round(h["loss"], 5) for h in resumed.history] == [round(h["loss"], 5) for h in full.history]
    for a, b in zip(full_model.state_dict().values(), resumed_model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)


def test_the_whitening_subset_of_a_class_ordered_folder_covers_every_class_in_proportion(sample, monkeypatch):
    labels = sample.train_labels
    assert torch.equal(labels, labels.sort().values)  # stored class by class: a prefix holds few classes
    subset = class_mixed_subset(labels, 100)
    assert len(subset) == len(set(subset.tolist())) == 100
    counts = torch.bincount(labels[subset], minlength=10)
    expected = torch.bincount(labels, minlength=10).double() * 100 / len(labels)
    assert ((counts - expected).abs() < 1).all(), counts
    assert torch.equal(subset, class_mixed_subset(labels, 100))  # seeded
    # train() hands the model exactly those images
    seen = []
    monkeypatch.setattr(airbench_module, "WHITENING_IMAGES", 100)
    monkeypatch.setattr(AirbenchNet, "initialise_from_data", lambda self, images: seen.append(images))
    train(
        create_model("airbench", 10, 3, 8),
        sample.train_images,
        sample.train_labels,
        screen(zoo()["cross_entropy"]).genome,
        lambda images, labels: (images, torch.eye(10)[labels]),
        TrainSettings(epochs=1, batch_size=100, recipe="airbench"),
    )
    assert torch.equal(seen[0], to_float(sample.train_images[subset]))


def test_the_lookahead_updates_every_fifth_step_and_again_at_the_last(sample, monkeypatch):
    updates = []
    original = airbench_module.Lookahead.update

    def record(self, model, decay):
        updates.append(round(decay, 6))
        original(self, model, decay)

    monkeypatch.setattr(airbench_module.Lookahead, "update", record)
    # 450 images in batches of 75: 6 steps an epoch, 5 epochs: 30 steps, a multiple of 5
    assert len(sample.train_labels) == 450
    train(
        create_model("airbench", 10, 3, 8),
        sample.train_images,
        sample.train_labels,
        screen(zoo()["cross_entropy"]).genome,
        build_augmentation("base", sample.image_size, 10),
        TrainSettings(epochs=5, batch_size=75, recipe="airbench"),
    )
    periodic = [round(0.95**5 * (step / 30) ** 3, 6) for step in (5, 10, 15, 20, 25, 30)]
    assert updates == [*periodic, 1.0]


def test_train_prepares_the_augmentation_once_and_starts_each_epoch(sample):
    calls = []

    class Recording(training.Augmentation):
        def prepare(self, images):
            calls.append("prepare")
            return images

        def start_epoch(self, epoch):
            calls.append(epoch)

        def forward(self, images, labels):
            return images, torch.eye(10)[labels]

    train(
        create_model("airbench", 10, 3, 8),
        sample.train_images,
        sample.train_labels,
        screen(zoo()["cross_entropy"]).genome,
        Recording(),
        TrainSettings(epochs=3, batch_size=200),
    )
    assert calls == ["prepare", 0, 1, 2]


@pytest.mark.parametrize(("every_seconds", "saved_epochs"), [(3600.0, []), (0.0, [1, 2, 3])])
def test_a_run_shorter_than_the_checkpoint_interval_writes_no_checkpoint(
    sample, tmp_path, monkeypatch, every_seconds, saved_epochs
):
    saved = []
    original = training._save_checkpoint

    def record(path, state):
        saved.append(state["epoch"])
        original(path, state)

    monkeypatch.setattr(training, "_save_checkpoint", record)
    path = tmp_path / "checkpoint.pt"
    train(
        create_model("airbench", 10, 3, 8),
        sample.train_images,
        sample.train_labels,
        screen(zoo()["cross_entropy"]).genome,
        build_augmentation("base", sample.image_size, 10),
        TrainSettings(epochs=3, batch_size=200, recipe="airbench"),
        checkpointing=Checkpointing(save_to=path, every_seconds=every_seconds),
    )
    assert saved == saved_epochs and path.exists() == bool(saved_epochs)


def test_a_search_trial_checkpoints_by_its_studys_interval(sample, tmp_path, monkeypatch):
    import optuna

    from optiloss.search import LossSearchObjective

    saved = []
    monkeypatch.setattr(training, "_save_checkpoint", lambda path, state: saved.append(state["epoch"]))
    loss = screen(zoo()["cross_entropy"]).genome
    for interval, expected in [(30.0, []), (0.0, [1, 2])]:
        config = SearchConfig.from_mapping(
            {
                "model": "airbench",
                "epochs": 2,
                "batch_size": 200,
                "model_width": 8,
                "device": "cpu",
                "checkpoint_interval": interval,
                "checkpoint_dir": str(tmp_path),
            }
        )
        objective = LossSearchObjective(config, sample, torch.device("cpu"))
        study = optuna.create_study(directions=["maximize", "maximize"])
        saved.clear()
        objective.train_and_score(study.ask(), loss)
        assert saved == expected
    assert SearchConfig().checkpoint_interval == 30.0


def test_the_airbench_study_translates_over_a_reflected_border_and_alternates_flips():
    config = SearchConfig.load("studies/cifar10.toml")
    settings = config.augment_settings()
    assert (settings.crop_padding, settings.crop_padding_mode, settings.hflip) == (2, "reflect", "alternate")
    assert SearchConfig().augment_settings().hflip == "random"
    old = SearchConfig.from_mapping({"hflip": False})  # as studies before flip modes stored it
    assert old.hflip == "none"
