"""Every registered surrogate, as timm tests its registry: built by name, trained by its recipe."""

import math

import pytest
import torch

from optiloss.data import load_dataset
from optiloss.genome import screen, zoo
from optiloss.models import SURROGATES, create_model, surrogate_named
from optiloss.scoring import LossEvaluator
from optiloss.settings import SearchConfig
from optiloss.train import RECIPES, recipe_named

from conftest import ROOT


@pytest.fixture(scope="module")
def sample(cifar10_sample):
    return load_dataset(f"folder:{cifar10_sample}", validation_fraction=0.25, progress=False)


@pytest.mark.parametrize("name", list(SURROGATES))
def test_a_surrogate_is_built_by_name_and_maps_images_to_logits(name):
    spec = SURROGATES[name]
    assert surrogate_named(name) is spec and set(spec.defaults) == {
        "batch_size",
        "learning_rate",
        "weight_decay",
        "model_width",
    }
    model = create_model(name, 10, 3, 8)
    assert model(torch.rand(4, 3, 32, 32)).shape == (4, 10)
    assert RECIPES[spec.recipe.name] is spec.recipe and recipe_named(spec.recipe.name) is spec.recipe


@pytest.mark.parametrize("name", list(SURROGATES))
def test_a_search_trains_each_surrogate_with_its_recipe_and_defaults(name, sample):
    config = SearchConfig.from_mapping({"model": name, "epochs": 1, "model_width": 8, "device": "cpu"})
    spec = SURROGATES[name]
    assert config.train_settings().recipe == spec.recipe.name
    assert config.batch_size == spec.defaults["batch_size"]
    evaluator = LossEvaluator.for_search(config.replace(batch_size=150), sample, torch.device("cpu"))
    assert evaluator.flip_tta == spec.flip_tta
    result = evaluator.evaluate(screen(zoo()["cross_entropy"]).genome, evaluator.augmentation("base"), seed=0)
    assert result.diverged is None and math.isfinite(result.history[-1]["loss"])
    assert 0.0 <= result.accuracy <= 1.0 and len(result.per_corruption) == 10


def test_the_training_loop_names_no_surrogate():
    source = (ROOT / "optiloss" / "train.py").read_text()
    assert not [name for name in SURROGATES if f'"{name}"' in source or name in source.split()]


def test_an_unknown_recipe_names_the_registered_ones():
    with pytest.raises(ValueError, match="unknown recipe 'lion'; registered: adamw, airbench"):
        recipe_named("lion")
