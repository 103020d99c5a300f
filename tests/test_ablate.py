"""``optiloss ablate``: a found loss's variants one change away, retrained with fresh seeds."""

import re
import signal

import optuna
import pytest
from optuna.trial import TrialState

from optiloss.ablate import CROSS_ENTROPY, FULL, ablation_variants, bypassed, ledger_name, one_change_away
from optiloss.genome import Genome, screen, zoo
from optiloss.settings import SearchConfig

from conftest import read_stderr_until, run_main, start_cli


def test_label_smoothing_without_its_additive_constant_is_cross_entropy_named_so():
    smoothing = screen(zoo(5, 2, 10)["label_smoothing_0.1"]).genome
    variants = ablation_variants(smoothing, SearchConfig().screen_options())
    full = variants[0]
    assert full.key == FULL and full.named == "label_smoothing_0.1"
    named = {variant.named: variant for variant in variants if variant.named}
    assert "c1 0.01 -> 0" in named["cross_entropy"].changes  # e / C set to 0
    # the row that is cross-entropy is not trained twice
    assert not any(variant.key == CROSS_ENTROPY for variant in variants)
    rejected = [variant for variant in variants if not variant.trained]
    assert any("c0 0.9 -> 0" in variant.changes for variant in rejected)
    assert all(variant.rejected for variant in rejected)


def test_every_variant_is_one_change_away_and_a_valid_genome():
    found = Genome.from_nodes(("ln", "p"), ("square", "y"), ("mul", "n1", "n0"), ("sub", "n2", "y"))
    changes = dict(one_change_away(found))
    # 4 active nodes: 2 unary (one input each), 2 binary (two inputs each)
    assert len(changes) == 6
    assert changes["without ln (node 0 -> identity)"].structure == "((y^2 * p) - y)"
    assert changes["node 4 (sub) -> its input y"].structure == "max(y, y)"
    assert bypassed(found, 4, "n2").structure == "(y^2 * ln(|p| + eps))"
    variants = ablation_variants(found, SearchConfig().screen_options())
    assert variants[-1].key.startswith("x") and variants[-1].rejected  # max(y, y) reads no p


def _tiny_study(tiny_config, sqlite_url):
    result = run_main("search", str(tiny_config), "--n-trials", "1", "--storage", sqlite_url, "--no-progress")
    assert result.returncode == 0, result.stderr
    return "digits-base"


@pytest.mark.slow
def test_a_digits_trial_is_ablated_writes_table_and_figure_and_a_killed_ablation_resumes(
    tiny_config, sqlite_url, tmp_path, monkeypatch
):
    study = _tiny_study(tiny_config, sqlite_url)  # trial 0 is cross-entropy, the first queued
    output = tmp_path / "reports"
    arguments = ("ablate", study, "0", "--seeds", "2", "--storage", sqlite_url, "--output", str(output))
    process = start_cli(*arguments)
    read_stderr_until(process, re.compile(rb"ablation runs:.*\b[123]/4\b"))
    process.send_signal(signal.SIGKILL)
    process.wait()
    ledger = optuna.load_study(study_name=ledger_name(study, 0), storage=sqlite_url)
    finished = len(ledger.get_trials(states=(TrialState.COMPLETE,)))
    assert 1 <= finished < 4

    from optiloss.scoring import LossEvaluator

    calls = []
    evaluate = LossEvaluator.evaluate

    def counted(self, *args, **kwargs):
        calls.append(args[2])
        return evaluate(self, *args, **kwargs)

    monkeypatch.setattr(LossEvaluator, "evaluate", counted)
    result = run_main(*arguments, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert len(calls) == 4 - finished  # the finished runs were read back, not retrained
    assert len(ledger.get_trials(states=(TrialState.COMPLETE,))) == 4
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["variant", "named", "formula"]
    assert any(line.startswith("full") and "cross_entropy" in line for line in lines)
    assert "without ln (node 0 -> identity): it is mae" in result.stdout
    assert "data: clean, balanced data" in result.stdout
    stem = output / "ablation-digits-base-trial-0"
    for suffix in (".csv", ".md", ".png"):
        assert stem.with_suffix(suffix).stat().st_size > 0
    markdown = stem.with_suffix(".md").read_text()
    assert "| full | cross_entropy |" in markdown and "Holm p" in markdown


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((), "name the loss: optiloss ablate STUDY TRIAL, or --loss NAME=FORMULA"),
        (("--loss", "a=y*ln(p)", "--label-noise-rate", "2"), "label_noise_rate must be between 0.0 and 0.9"),
        (("--loss", "a=y*ln(p)", "--seeds", "0"), "--seeds must be at least 1"),
        (("s", "3", "--label-noise-rate", "0.2"), "own settings; --label-noise-rate is for --loss"),
    ],
)
def test_ablate_usage_errors_are_one_line_exit_2(arguments, message, sqlite_url):
    result = run_main("ablate", *arguments, "--storage", sqlite_url)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_the_experiment_files_ablation_stage_ablates_the_best_found_loss_and_the_page_shows_it(tmp_path):
    from optiloss.experiment import load_experiment, plan

    url = f"sqlite:///{tmp_path / 'experiment.db'}"
    path = tmp_path / "ablated.toml"
    path.write_text(
        '[search]\ndataset = "digits"\naugmentations = ["base"]\nn_trials = 8\npopulation_size = 4\n'
        'epochs = 1\nmodel_width = 8\nbaseline_seeds = 0\nconstants = 0\ndevice = "cpu"\nseed = 1\n'
        f'checkpoint_dir = "{tmp_path / "checkpoints"}"\nartifacts = false\n'
        "[recheck]\nseeds = 0\n[matrix]\nseeds = 0\n[ablation]\nseeds = 2\n"
    )
    experiment = load_experiment(path)
    assert experiment.stages() == ["search", "ablation"]
    output = tmp_path / "reports"
    result = run_main("experiment", str(path), "--storage", url, "--output", str(output), "--no-progress")
    assert result.returncode == 0, result.stderr
    (ablation,) = plan(experiment, url, ["ablation"])
    assert ablation.finished and ablation.total >= 4
    page = (output / "ablated" / "index.html").read_text()
    assert "Ablation: which part of the best loss does the work" in page
    assert "<td>full</td>" in page and "data: clean, balanced data" in page
