"""Fine-tuning: pretrained weights from a local file only, with their own normalisation; the
EfficientNetV2-S studies name a timm model that has such weights and refuse to run without them."""

from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch

from optiloss.errors import UsageError
from optiloss.models import CENTRED, create_model
from optiloss.settings import TransferConfig, read_toml

from conftest import ROOT, run_cli

MODEL = "test_efficientnet.r160_in1k"
"""A tiny timm model (0.36 M parameters) with a pretrained tag whose mean and std are ImageNet's."""
EFFNETV2S_STUDIES = sorted((ROOT / "studies").glob("transfer-effnetv2s-*.toml"))


def _registry_config(name: str):
    return timm.models.get_pretrained_cfg(name)


def _save_untrained(name: str, path: Path) -> dict[str, torch.Tensor]:
    """Save an untrained ``name`` with its pretrained head, as a downloaded file has; return the state."""
    state = timm.create_model(name, pretrained=False).state_dict()
    if path.suffix == ".safetensors":
        safetensors.torch.save_file(state, str(path))
    else:
        torch.save(state, path)
    return state


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_weights_file_loads_exactly_and_brings_its_normalisation(tmp_path, suffix):
    weights = tmp_path / f"{MODEL}{suffix}"
    saved = _save_untrained(MODEL, weights)
    config = _registry_config(MODEL)
    assert config.has_weights and config.mean != CENTRED[0]

    model = create_model(MODEL, 10, weights=weights)
    loaded = model.model.state_dict()
    body = [key for key in saved if not key.startswith(config.classifier + ".")]
    assert len(body) > 50 and all(torch.equal(loaded[key], saved[key]) for key in body)
    assert loaded[config.classifier + ".weight"].shape[0] == 10  # a new head for the 10 classes
    assert torch.allclose(model.mean.flatten(), torch.tensor(config.mean))
    assert torch.allclose(model.std.flatten(), torch.tensor(config.std))
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)

    whole = create_model(MODEL, config.num_classes, weights=str(weights)).model.state_dict()
    assert whole.keys() == saved.keys() and all(torch.equal(whole[key], saved[key]) for key in saved)

    untrained = create_model(MODEL, 10)
    assert torch.equal(untrained.mean.flatten(), torch.tensor(CENTRED[0]))
    assert not torch.equal(untrained.model.state_dict()[body[0]], saved[body[0]])


def _one_line_error(call) -> str:
    with pytest.raises(UsageError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_weights_that_do_not_fit_or_do_not_exist_are_one_line_usage_errors(tmp_path):
    resnet = tmp_path / "resnet.safetensors"
    _save_untrained("test_resnet.r160_in1k", resnet)
    message = _one_line_error(lambda: create_model(MODEL, 10, weights=resnet))
    assert f"weights file {resnet} does not fit model {MODEL!r}" in message and "Missing key" in message

    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    assert "does not fit" in _one_line_error(lambda: create_model(MODEL, 10, weights=junk))

    missing = tmp_path / "nowhere.safetensors"
    assert f"weights file {missing} does not exist" in _one_line_error(
        lambda: create_model(MODEL, 10, weights=missing)
    )

    # efficientnetv2_s has no pretrained weights in timm: what normalisation a file expects is unknown
    message = _one_line_error(lambda: create_model("efficientnetv2_s", 10, weights=resnet))
    assert "has no pretrained weights" in message and "tf_efficientnetv2_s.in1k" in message
    assert "no such pretrained tag" in _one_line_error(lambda: create_model("tf_efficientnetv2_s.nope", 10))


def test_the_cli_refuses_a_pretrained_transfer_without_weights_and_writes_nothing(tmp_path):
    config = tmp_path / "finetune.toml"
    config.write_text(
        f'model = "{MODEL}"\npretrained = true\ndataset = "digits"\nepochs = 1\n'
        f'device = "cpu"\ncheckpoint_dir = "{tmp_path / "checkpoints"}"\n'
    )
    result = run_cli(
        "transfer",
        "digits-base",
        "--config",
        str(config),
        "--storage",
        f"sqlite:///{tmp_path / 'studies.db'}",
        "--output",
        str(tmp_path / "reports"),
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"model {MODEL!r}" in lines[0] and "--weights" in lines[0] and "Fine-tuning" in lines[0]
    assert list(tmp_path.iterdir()) == [config]


def test_the_effnetv2s_studies_fine_tune_a_timm_model_with_pretrained_weights(tmp_path):
    assert len(EFFNETV2S_STUDIES) == 3
    weights = str(tmp_path / "model.safetensors")
    for path in EFFNETV2S_STUDIES:
        values = read_toml(path)
        assert values["pretrained"] is True and "weights" not in values
        config = TransferConfig.from_mapping({**values, "weights": weights}, str(path))
        assert config.model in timm.list_pretrained()
        registry = _registry_config(config.model)
        assert registry.has_weights and registry.mean and registry.std
        assert config.model.split(".")[0] in path.read_text().split("hf download timm/")[1]
        message = _one_line_error(lambda path=path: TransferConfig.load(path))
        assert f"model {config.model!r}" in message and "--weights" in message


def test_an_effnetv2s_study_takes_its_weights_from_the_command_line(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    config = TransferConfig.load(EFFNETV2S_STUDIES[0], {"weights": str(weights)})
    assert config.weights == str(weights) and config.pretrained
