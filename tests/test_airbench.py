"""The airbench surrogate: its network, whitening from data, its recipe, seeded repeats and resumes."""

import pytest
import torch

import optiloss.train as training
from optiloss.augment import build_augmentation
from optiloss.data import load_dataset
from optiloss.errors import UsageError
from optiloss.evaluate import LossEvaluator
from optiloss.genome import screen, zoo
from optiloss.models import AirbenchNet, create_model
from optiloss.settings import SURROGATE_DEFAULTS, SearchConfig
from optiloss.train import AirbenchRecipe, Checkpointing, TrainSettings, seeded, to_float, train


@pytest.fixture(scope="module")
def sample(cifar10_sample):
    return load_dataset(f"folder:{cifar10_sample}", validation_fraction=0.25, progress=False)


def test_the_network_has_airbench94s_shape():
    model = create_model("airbench", 10, 3, 64)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (3, 24, (2, 2)), (24, 64, (3, 3)), (64, 64, (3, 3)), (64, 256, (3, 3)), (256, 256, (3, 3)),
        (256, 256, (3, 3)), (256, 256, (3, 3))]
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
    factor = AirbenchRecipe().schedule(100)
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
    return SearchConfig.from_mapping({"model": "airbench", "epochs": 4, "batch_size": 100, "model_width": 8,
                                      "device": "cpu"})


def test_a_seeded_airbench_trial_repeats_and_learns(sample):
    evaluator = LossEvaluator.for_search(_settings(), sample, torch.device("cpu"))
    loss = screen(zoo()["cross_entropy"]).genome
    first, second = (evaluator.evaluate(loss, evaluator.augmentation("base"), seed=3) for _ in range(2))
    untimed = [[{k: v for k, v in h.items() if k != "seconds"} for h in run.history]
               for run in (first, second)]
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
            result = train(model, sample.train_images, sample.train_labels, loss, augmentation, settings,
                           checkpointing=checkpointing)
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
