"""Scoring and compiled training: the stacked sets score as each set alone, a compiled surrogate is
compiled once per evaluator and starts every run from its seed's fresh weights, and the airbench
whitening bias stops training after its epochs without a flag a compiled graph would guard on."""

import dataclasses

import pytest
import torch

import optiloss.train as training
from optiloss.augment import build_augmentation
from optiloss.data import load_dataset
from optiloss.genome import screen, zoo
from optiloss.models import airbench as airbench_module
from optiloss.models import create_model
from optiloss.scoring import LossEvaluator
from optiloss.settings import SearchConfig
from optiloss.train import accuracy, seeded, stacked_accuracies, train


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", validation_fraction=0.2, progress=False)


@pytest.fixture(scope="module")
def sample(cifar10_sample):
    return load_dataset(f"folder:{cifar10_sample}", validation_fraction=0.25, progress=False)


def trained_cnn(digits, config):
    evaluator = LossEvaluator.for_search(config, digits, torch.device("cpu"))
    with seeded(0):
        model = create_model("cnn", digits.num_classes, digits.channels, 8)
        train(
            model,
            digits.train_images,
            digits.train_labels,
            screen(zoo()["cross_entropy"]).genome,
            evaluator.augmentation("base"),
            dataclasses.replace(evaluator.train_settings, epochs=2),
        )
    return evaluator, model


def test_the_stacked_sets_score_exactly_as_each_set_scored_alone(digits):
    config = SearchConfig.from_mapping({"dataset": "digits", "device": "cpu", "model_width": 8, "epochs": 2})
    evaluator, model = trained_cnn(digits, config)
    corrupted, clean = evaluator.score(model)
    labels = digits.val_labels
    alone = {name: accuracy(model, images, labels) for name, images in evaluator.corrupted.items()}
    assert corrupted == alone and clean == accuracy(model, digits.val_images, labels)
    assert len(set(alone.values())) > 3  # the copies differ: a mix-up of sets would show
    # batches that straddle two sets (the validation part is not a multiple of 100) change nothing
    names = [*evaluator.corrupted, "clean"]
    stacked = torch.cat([*evaluator.corrupted.values(), digits.val_images])
    assert len(labels) % 100 != 0
    straddling = stacked_accuracies(model, stacked, labels, names, batch_size=100)
    assert straddling == {**alone, "clean": clean}


def test_the_airbench_whitening_bias_stops_training_as_if_frozen_without_turning_off_its_gradient(
    sample, monkeypatch
):
    config = SearchConfig.from_mapping(
        {"dataset": "cifar10", "model": "airbench", "model_width": 8, "epochs": 5, "batch_size": 100}
    )
    augmentation = build_augmentation(
        "base", sample.image_size, sample.num_classes, config.augment_settings()
    )
    loss = screen(zoo()["cross_entropy"]).genome

    def run():
        with seeded(0):
            model = create_model("airbench", sample.num_classes, sample.channels, 8)
            gradients = []
            after_epoch = lambda row: gradients.append(model.whitening_bias().grad is not None)  # noqa: E731
            train(
                model,
                sample.train_images,
                sample.train_labels,
                loss,
                augmentation,
                config.train_settings(),
                after_epoch=after_epoch,
            )
        return model, gradients

    model, gradients = run()
    assert gradients == [True, True, True, False, False]  # dropped, so SGD skips it from epoch 4 on
    assert model.whitening_bias().requires_grad  # a compiled graph guards on this flag: it never flips

    def flip_the_flag(self, epoch):  # how the recipe froze the bias before
        self.model.whitening_bias().requires_grad = epoch < self.recipe.whiten_bias_epochs

    monkeypatch.setattr(airbench_module._AirbenchRun, "start_epoch", flip_the_flag)
    flipped, _ = run()
    for (name, ours), theirs in zip(model.state_dict().items(), flipped.state_dict().values()):
        assert torch.equal(ours, theirs), name


@pytest.mark.slow
def test_a_compiled_surrogate_is_compiled_once_and_starts_each_run_from_its_seed(monkeypatch, sample):
    compiled_graphs = []

    def counting_backend(graph_module, example_inputs):
        compiled_graphs.append(graph_module)
        return graph_module.forward

    monkeypatch.setattr(training, "COMPILE_BACKEND", counting_backend)
    torch._dynamo.reset()
    values = {"dataset": "cifar10", "model": "airbench", "model_width": 8, "epochs": 4, "batch_size": 100}
    device = torch.device("cpu")
    compiled = LossEvaluator.for_search(
        SearchConfig.from_mapping({**values, "compile": True}), sample, device
    )
    plain = LossEvaluator.for_search(SearchConfig.from_mapping(values), sample, device)
    loss = screen(zoo()["cross_entropy"]).genome
    augmentation = compiled.augmentation("base")
    graphs_by_epoch = []
    count = lambda row: graphs_by_epoch.append(len(compiled_graphs))  # noqa: E731
    runs = {seed: compiled.evaluate(loss, augmentation, seed=seed, after_epoch=count) for seed in (1, 2)}
    # the first epoch compiles the model and the loss; the whitening bias's freeze after epoch 3 and
    # the second trial compile nothing more
    assert graphs_by_epoch[0] > 0 and graphs_by_epoch == [graphs_by_epoch[0]] * 8
    # each run started from its seed's fresh weights, not from the weights the last run left
    for seed, result in runs.items():
        alone = plain.evaluate(loss, augmentation, seed=seed)
        assert result.history[0]["loss"] == pytest.approx(alone.history[0]["loss"], rel=1e-4)
        assert result.accuracy == pytest.approx(alone.accuracy, abs=2 / len(sample.val_labels))
    torch._dynamo.reset()
