"""Transfer studies, Wide ResNets, recheck and export."""

import subprocess
import sys
import textwrap

import optuna
import pytest
import torch
from optuna.trial import TrialState

from optiloss.augment import build_augmentation
from optiloss.data import load_dataset
from optiloss.genome import screen, zoo
from optiloss.models import create_model
from optiloss.train import TrainSettings, accuracy, seeded, train

from conftest import run_cli, small_search


def test_wrn_28_10_has_the_published_size_and_runs_at_32_px():
    model = create_model("wrn-28-10", 10)
    parameters = sum(p.numel() for p in model.parameters())
    assert 36.4e6 < parameters < 36.6e6
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_a_small_wrn_trains_on_the_cpu():
    data = load_dataset("digits")
    with seeded(0):
        model = create_model("wrn-10-1", 10)
        result = train(
            model,
            data.train_images,
            data.train_labels,
            screen(zoo()["cross_entropy"]).genome,
            build_augmentation("base", data.image_size, 10),
            TrainSettings(epochs=8),
        )
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < 0.6 * losses[0]
    assert accuracy(model, data.val_images, data.val_labels) > 0.5


def test_unknown_models_and_missing_weights_are_usage_errors():
    from optiloss.errors import UsageError

    with pytest.raises(UsageError, match="unknown model 'resnet-9000'"):
        create_model("resnet-9000", 10)
    with pytest.raises(UsageError, match="weights file /nowhere.pth does not exist"):
        create_model("resnet18", 10, weights="/nowhere.pth")
    with pytest.raises(UsageError, match="6n"):
        create_model("wrn-12-2", 10)


@pytest.fixture(scope="module")
def source_study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("transfer")
    return small_search(folder, n_trials=8, epochs=3, artifacts=False), folder


@pytest.mark.slow
def test_a_cpu_transfer_gives_the_table_with_p_values_and_fidelity_and_a_restart_skips_finished_runs(
    source_study,
):
    url, folder = source_study
    options = [
        "transfer",
        "digits-base",
        "--storage",
        url,
        "--model",
        "wrn-10-1",
        "--dataset",
        "digits",
        "--top-k",
        "2",
        "--seeds",
        "2",
        "--epochs",
        "2",
        "--device",
        "cpu",
        "--output",
        str(folder / "report"),
    ]
    first = run_cli(*options)
    assert first.returncode == 0, first.stderr
    study = optuna.load_study(study_name="digits-base-transfer-wrn-10-1-digits", storage=url)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    losses = {t.user_attrs["loss"] for t in complete}
    assert {"cross_entropy", "focal", "poly1", "mse", "baikal"} <= losses
    assert len(complete) == 2 * len(losses)
    assert all({"run", "seed", "formula", "robustness_gaussian_noise"} <= set(t.user_attrs) for t in complete)
    assert "cross_entropy" in first.stdout and "p_welch" in first.stdout
    assert "fidelity (surrogate accuracy vs transfer accuracy" in first.stdout
    report = (folder / "report" / "digits-base-transfer-wrn-10-1-digits.md").read_text()
    assert "| loss | base |" in report and "Spearman" in report and "(p=" in report
    assert (folder / "report" / "digits-base-transfer-wrn-10-1-digits.png").stat().st_size > 5_000

    again = run_cli(*options)
    assert again.returncode == 0, again.stderr
    assert f"{len(complete)} done, running 0" in again.stdout
    assert len(
        optuna.load_study(study_name="digits-base-transfer-wrn-10-1-digits", storage=url).trials
    ) == len(study.trials)


@pytest.mark.slow
def test_recheck_retrains_the_pareto_set_and_the_best_found_and_zoo_losses_with_new_seeds(source_study):
    url, _ = source_study
    result = run_cli(
        "recheck", "digits-base", "--storage", url, "--seeds", "2", "--device", "cpu", "--format", "csv"
    )
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.strip().splitlines()
    assert header.startswith("trial,loss,search_accuracy,recheck_accuracy,recheck_std,vs_ce,p_welch")
    study = optuna.load_study(study_name="digits-base", storage=url)
    front = {str(t.number) for t in study.best_trials}
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE and "diverged" not in t.user_attrs]
    most_accurate = lambda trials: max(trials, key=lambda t: (t.values[0], -t.number))  # noqa: E731
    found = most_accurate(
        [t for t in complete if "zoo" not in t.user_attrs and "loss_name" not in t.user_attrs]
    )
    best_zoo = most_accurate([t for t in complete if t.user_attrs.get("zoo") not in (None, "cross_entropy")])
    # a zoo loss may dominate the search's best loss of its own: both heads are rechecked beside the front
    assert {row.split(",")[0] for row in rows} - {""} == front | {str(found.number), str(best_zoo.number)}
    # cross-entropy is retrained with the same seeds, as a trial of the front or on its own row
    assert sum(1 for row in rows if row.split(",")[1] == "cross_entropy") == 1


def test_the_exported_module_runs_without_optiloss_and_matches_the_genome(source_study, tmp_path):
    url, _ = source_study
    study = optuna.load_study(study_name="digits-base", storage=url)
    trial = next(t for t in study.trials if t.user_attrs.get("zoo") == "focal")
    exported = run_cli("export", "digits-base", str(trial.number), "--storage", url)
    assert exported.returncode == 0, exported.stderr
    (tmp_path / "evolved_loss.py").write_text(exported.stdout)
    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(16, 10, generator=generator)
    labels = torch.randint(0, 10, (16,), generator=generator)
    torch.save({"logits": logits, "labels": labels}, tmp_path / "inputs.pt")
    script = textwrap.dedent(f"""
        import sys
        sys.modules["optiloss"] = None  # the module must not need optiloss
        sys.path.insert(0, {str(tmp_path)!r})
        import torch
        from evolved_loss import EvolvedLoss
        inputs = torch.load({str(tmp_path / "inputs.pt")!r})
        logits = inputs["logits"].clone().requires_grad_(True)
        loss = EvolvedLoss()(logits, inputs["labels"])
        loss.backward()
        soft = torch.nn.functional.one_hot(inputs["labels"], 10).float()
        same = EvolvedLoss()(inputs["logits"], soft)
        torch.save({{"loss": loss.detach(), "grad": logits.grad, "soft": same}}, {str(tmp_path / "out.pt")!r})
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    out = torch.load(tmp_path / "out.pt")
    genome = screen(zoo()["focal"]).genome
    expected = genome(torch.nn.functional.one_hot(labels, 10).float(), torch.softmax(logits, 1))
    assert torch.allclose(out["loss"], expected, rtol=1e-6)
    assert torch.allclose(out["soft"], expected, rtol=1e-6)
    assert out["grad"].abs().sum() > 0 and torch.isfinite(out["grad"]).all()
