"""Real-valued constants in the genome: genes, printing, parsing, the screen, the zoo's exact values,
and searches with them that stay plain Optuna studies."""

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
import torch.nn.functional as F
from optuna.trial import TrialState

from optiloss.genome import Genome, screen, zoo
from optiloss.genome.genome import CONSTANT_RANGE
from optiloss.genome.parse import FormulaError, parse_formula
from optiloss.search.sampler import genome_search_space

from conftest import ROOT, run_cli


def _probe():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 10, generator=generator)
    labels = torch.randint(0, 10, (64,), generator=generator)
    return logits, labels, F.one_hot(labels, 10).float(), torch.softmax(logits, 1)


def test_constants_are_float_genes_that_decode_print_and_round_trip():
    study = optuna.create_study()
    trial = study.ask()
    genome = Genome.suggest(trial, 5, n_constants=2)
    assert set(trial.params) >= {"const0", "const1"} and len(genome.constants) == 2
    assert all(CONSTANT_RANGE[0] <= value <= CONSTANT_RANGE[1] for value in genome.constants)
    assert Genome.from_params(genome.to_params(), 5) == genome
    written = Genome.from_nodes(
        ("mul", "c0", "y"), ("add", "n0", "c1"), ("ln", "p"), ("mul", "n1", "n2"), constants=(0.123456, -2.5)
    )
    assert written.formula == "(((0.1235 * y) + (-2.5)) * ln(|p| + eps))"
    assert r"0.1235 \cdot y_c" in written.latex and r"\left(-2.5\right)" in written.latex
    source = written.python_source()
    assert "0.123456" in source  # the module carries the full value
    namespace: dict = {}
    exec(source, namespace)  # noqa: S102 -- the exported source of a genome, as users run it
    _, _, y, p = _probe()
    assert torch.allclose(namespace["loss"](y, p), written(y, p))
    # a formula with numbers reads back to the same loss
    again = parse_formula(written.formula, 5)
    assert again.constants == (0.1235, -2.5) and torch.allclose(again(y, p), written(y, p), rtol=1e-4)


def test_the_parser_reads_numbers_as_constants_and_names_too_many():
    genome = parse_formula("2.5e-2 * y + -3 * p", 5)
    assert genome.constants == (0.025, -3.0) and genome.formula == "((0.025 * y) + ((-3) * p))"
    assert parse_formula("0.5 * y * 0.5", 5).constants == (0.5,)  # the same number is one constant
    assert parse_formula("y * ln(p)", 5, n_constants=2).constants == (0.0, 0.0)  # padded
    with pytest.raises(FormulaError, match="the formula has 2 number.* more than the genome's 1 constant"):
        parse_formula("0.1 * y + 0.2", 5, n_constants=1)


def test_without_constants_the_genes_and_formulas_are_those_of_studies_before_them():
    space = genome_search_space(5)
    assert not any(name.startswith("const") for name in space)
    assert space["node0_in1"].choices == ("y", "p", "1", "-1")
    assert space["node2_in1"].choices == ("y", "p", "1", "-1", "n0", "n1")
    old = optuna.load_study(
        study_name="digits-base", storage=f"sqlite:///{ROOT / 'tests/data/studies-v0.1/studies.db'}"
    )
    from optiloss.studies import trial_genome

    trained = [t for t in old.trials if t.state == TrialState.COMPLETE]
    assert trained and all(trial_genome(old, t).formula == t.user_attrs["formula"] for t in trained)
    assert {name: genome.structure_hash for name, genome in zoo(5).items()} == {
        name: genome.structure_hash for name, genome in zoo(5, 0).items()
    }
    assert all(genome.constants == () for genome in zoo(5).values())


def test_two_genomes_that_differ_only_in_a_constant_are_different_losses_unless_training_cannot_tell():
    def scaled(value: float) -> Genome:
        return Genome.from_nodes(("ln", "p"), ("mul", "y", "n0"), ("mul", "c0", "n1"), constants=(value,))

    assert screen(scaled(2.0)).fingerprint != screen(scaled(3.0)).fingerprint  # SGD sees the scale
    assert (
        screen(scaled(2.0), scale_free=True).fingerprint == screen(scaled(3.0), scale_free=True).fingerprint
    )
    smoothed = zoo(5, 2, num_classes=10)["label_smoothing_0.1"]
    other = smoothed.with_constants((0.8, 0.02))
    assert screen(smoothed).fingerprint != screen(other).fingerprint


@pytest.mark.parametrize("strength", [0.1, 0.2])
def test_the_zoos_label_smoothing_is_torchs_exactly(strength):
    logits, labels, y, p = _probe()
    loss = screen(zoo(5, 2, num_classes=10)[f"label_smoothing_{strength:g}"]).genome
    expected = F.cross_entropy(logits, labels, label_smoothing=strength)
    assert torch.allclose(loss(y, p), expected, atol=1e-5)
    poly = screen(zoo(5, 2, num_classes=10)["poly1"]).genome
    assert poly.constants[0] == 1.0
    assert torch.allclose(poly(y, p), screen(zoo(5)["poly1"]).genome(y, p), atol=1e-6)


def _search(tmp_path, sampler: str, n_trials: int) -> str:
    values = {
        "n_trials": n_trials,
        "population_size": 8,
        "epochs": 1,
        "model_width": 8,
        "device": "cpu",
        "baseline_seeds": 0,
        "artifacts": False,
        "sampler": sampler,
        "constants": 2,
        "checkpoint_dir": str(tmp_path / "checkpoints"),
    }
    config = tmp_path / f"{sampler}.toml"
    config.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items()))
    url = f"sqlite:///{tmp_path / (sampler + '.db')}"
    result = run_cli("search", str(config), "--storage", url, "--no-progress")
    assert result.returncode == 0, result.stderr
    return url


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["nsga2", "evolution"])
def test_a_search_with_constants_is_a_plain_optuna_study(tmp_path, sampler):
    url = _search(tmp_path, sampler, 14)
    study = optuna.load_study(study_name="digits-base", storage=url)
    assert study.user_attrs["constants"] == 2
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert all(isinstance(t.params["const0"], float) for t in complete)
    names = {t.user_attrs.get("zoo") for t in complete}
    assert {"label_smoothing_0.1", "label_smoothing_0.2", "poly1"} <= names
    drawn = [t for t in complete if "zoo" not in t.user_attrs]
    assert drawn and len({t.params["const0"] for t in drawn}) > 1
    listed = subprocess.run(
        [
            str(Path(sys.executable).parent / "optuna"),
            "trials",
            "--study-name",
            "digits-base",
            "--storage",
            url,
            "-f",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(json.loads(listed.stdout)) == len(study.trials)
    if sampler == "evolution":
        children = [t for t in study.trials if "mutation" in t.user_attrs]
        assert children  # past the first population


def test_label_smoothing_with_constants_needs_the_class_count_and_never_guesses_it():
    import inspect

    from optiloss.search import open_search_study
    from optiloss.transfer import losses_to_transfer

    with pytest.raises(ValueError, match="num_classes"):
        zoo(5, 2)
    assert zoo(5, 2, num_classes=100)["label_smoothing_0.1"].constants == (0.9, 0.001)
    for function in (open_search_study, losses_to_transfer):
        parameter = inspect.signature(function).parameters["num_classes"]
        assert parameter.default is inspect.Parameter.empty, function.__name__
