"""Decoding, printing and evaluating genomes; the zoo against independent implementations."""

import math

import optuna
import pytest
import torch
import torch.nn.functional as F

from optiloss.genome import EPS, Genome, screen, zoo


def _random_params(seed: int, n_nodes: int = 5) -> dict:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    trial = study.ask()
    Genome.suggest(trial, n_nodes)
    return trial.params


def test_every_gene_is_suggested_with_fixed_names_and_choices():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    distributions = []
    for _ in range(5):
        trial = study.ask()
        Genome.suggest(trial, 5)
        distributions.append(trial.distributions)
    assert all(len(d) == 15 for d in distributions)
    assert all(d == distributions[0] for d in distributions)
    assert all(isinstance(d, optuna.distributions.CategoricalDistribution) for d in distributions[0].values())
    assert distributions[0]["node3_in1"].choices == ("y", "p", "1", "-1", "n0", "n1", "n2")


def test_decoding_twice_gives_the_same_hash_and_formula():
    for seed in range(20):
        params = _random_params(seed)
        first, second = Genome.from_params(params), Genome.from_params(dict(params))
        assert first == second
        assert first.structure_hash == second.structure_hash and first.formula == second.formula
        assert first.to_params() == params


def test_inactive_genes_do_not_change_the_structure_hash():
    genome = zoo()["cross_entropy"]
    params = genome.to_params()
    unused = next(k for k in range(5) if k not in genome.active_nodes)
    changed = Genome.from_params({**params, f"node{unused}_op": "sinh"})
    assert changed != genome
    assert changed.structure_hash == genome.structure_hash
    rewired = Genome.from_params({**params, "node0_in1": "y"})
    assert rewired.structure_hash != genome.structure_hash


def test_bad_parameters_are_refused():
    params = zoo()["mse"].to_params()
    with pytest.raises(ValueError, match="unknown operator"):
        Genome.from_params({**params, "node0_op": "cube"})
    with pytest.raises(ValueError, match="not in"):
        Genome.from_params({**params, "node0_in1": "n3"})  # a node may read only earlier nodes
    with pytest.raises(ValueError, match="missing"):
        Genome.from_params({k: v for k, v in params.items() if k != "node2_in2"}, 5)


def _batch(seed=0, classes=10, soft=False):
    generator = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(32, classes, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, classes, (32,), generator=generator)
    y = F.one_hot(labels, classes).double()
    if soft:
        lam = torch.rand(32, 1, generator=generator, dtype=torch.float64)
        y = (1 - lam) * y + lam * F.one_hot(torch.roll(labels, 1), classes).double()
    return logits, labels, y


def _oriented(name):
    result = screen(zoo()[name])
    assert result.accepted, result.reason
    return result.genome


def test_cross_entropy_matches_torch():
    logits, labels, y = _batch()
    ours = _oriented("cross_entropy")(y, torch.softmax(logits, 1))
    reference = F.cross_entropy(logits, labels)
    assert abs(ours - reference) / reference <= 1e-5
    _, _, soft = _batch(soft=True)
    assert torch.allclose(
        _oriented("cross_entropy")(soft, torch.softmax(logits, 1)), F.cross_entropy(logits, soft), rtol=1e-5
    )


@pytest.mark.parametrize(
    "name, reference",
    [
        (
            "focal",
            lambda logits, labels: (
                -((1 - F.softmax(logits, 1).gather(1, labels[:, None])) ** 2)
                * torch.log(F.softmax(logits, 1).gather(1, labels[:, None]) + EPS)
            ).mean(),
        ),
        (
            "poly1",
            lambda logits, labels: (
                F.cross_entropy(logits, labels, reduction="none")
                + 1
                - F.softmax(logits, 1).gather(1, labels[:, None])[:, 0]
            ).mean(),
        ),
        ("mse", lambda logits, labels: ((F.softmax(logits, 1) - F.one_hot(labels, 10)) ** 2).sum(1).mean()),
        (
            "baikal",
            lambda logits, labels: (
                (F.one_hot(labels, 10) / (F.softmax(logits, 1) + EPS) - torch.log(F.softmax(logits, 1) + EPS))
                .sum(1)
                .mean()
            ),
        ),
        # 10 classes, k = erfc(1)^2: (1 + 10 k) x cross-entropy smoothed by e = 10 k / (1 + 10 k) = 0.198
        (
            "label_smoothing",
            lambda logits, labels: (
                -(1 + 10 * math.erfc(1) ** 2)
                * (
                    (
                        (1 - 10 * math.erfc(1) ** 2 / (1 + 10 * math.erfc(1) ** 2)) * F.one_hot(labels, 10)
                        + math.erfc(1) ** 2 / (1 + 10 * math.erfc(1) ** 2)
                    )
                    * torch.log(F.softmax(logits, 1) + EPS)
                )
                .sum(1)
                .mean()
            ),
        ),
    ],
)
def test_zoo_losses_match_independent_implementations(name, reference):
    """References written with torch.nn.functional; the genome's protected ops add EPS inside logs
    and divisions."""
    logits, labels, y = _batch(seed=1)
    ours = _oriented(name)(y, torch.softmax(logits, 1))
    expected = reference(logits, labels)
    assert abs(ours - expected) / abs(expected) <= 1e-5


def test_every_zoo_loss_prints_and_its_python_source_computes_the_same_loss():
    logits, _, y = _batch(seed=2, soft=True)
    p = torch.softmax(logits, 1)
    for name in zoo():
        genome = _oriented(name)
        assert genome.formula and "p" in genome.formula and "y" in genome.formula
        assert genome.latex.startswith(r"\mathcal{L}(y, p) =") and "p_c" in genome.latex
        namespace: dict = {}
        exec(compile(genome.python_source("zoo_loss"), f"<{name}>", "exec"), namespace)  # test only
        assert torch.allclose(namespace["zoo_loss"](y, p), genome(y, p), rtol=1e-12)


def test_focal_is_negated_by_orientation_and_cross_entropy_is_not():
    assert _oriented("focal").negated and _oriented("focal").formula.startswith("-(")
    assert not _oriented("cross_entropy").negated
