"""The pre-training screen."""

import numpy as np

from optiloss.genome import Genome, screen, zoo
from optiloss.genome.screen import true_class_sweep


def test_every_zoo_loss_is_accepted_and_falls_with_the_true_class_probability():
    for name, genome in zoo().items():
        result = screen(genome)
        assert result.accepted, (name, result.reason)
        curve = true_class_sweep(result.genome)
        assert curve[0] > curve[-1], name
        assert len(result.fingerprint) == 16


def test_a_loss_rising_with_the_true_class_probability_is_negated_before_training():
    rising = Genome.from_nodes(("mul", "y", "p"))  # sum y p = p_t
    result = screen(rising)
    assert result.accepted and result.genome.negated
    assert np.all(np.diff(true_class_sweep(result.genome)) < 0)


def test_a_loss_that_rises_with_the_true_class_probability_on_ten_classes_is_rejected():
    # falls along the two-class sweep but rises with p_t among ten classes
    genome = Genome.from_nodes(("square", "p"), ("sigmoid", "y"), ("div_sqrt1p_sq", "n0", "n1"))
    result = screen(genome)
    assert not result.accepted
    assert result.reason.startswith("rises with the true-class probability")


def test_constant_and_one_sided_losses_are_rejected():
    assert screen(Genome.from_nodes(("add", "1", "-1"))).reason == "does not depend on p or y"
    assert screen(Genome.from_nodes(("ln", "p"))).reason == "does not depend on y"
    assert screen(Genome.from_nodes(("sub", "y", "y"), ("mul", "n0", "p"))).reason.startswith("constant")


def test_curve_checks_reject_extrema_at_one_half_and_wiggles():
    centre = Genome.from_nodes(
        ("mul", "y", "p"), ("sub", "n0", "1"), ("square", "n1"), ("sub", "n2", "n0")
    )  # y-weighted: (p_t - 1)^2 - p_t has no centre min
    assert screen(centre).accepted
    parabola = Genome.from_nodes(("mul", "y", "p"), ("mul", "n0", "n0"), ("sub", "n1", "n0"))
    # p_t^2 - p_t: minimum exactly at p_t = 0.5
    assert "extremum near p_t = 0.5" in screen(parabola).reason
    wiggle = Genome.from_nodes(
        ("mul", "y", "p"),
        ("mul", "n0", "-1"),
        ("exp", "1"),
        ("mul", "n2", "n2"),
        ("mul", "n3", "n3"),
        ("mul", "n4", "n0"),
        ("sin", "n5"),
        n_nodes=7,
    )
    reason = screen(wiggle).reason
    assert reason.startswith("slope changes sign"), reason


def test_the_same_behaviour_gets_the_same_fingerprint():
    a = Genome.from_nodes(("sub", "y", "p"), ("square", "n0"))
    b = Genome.from_nodes(("sub", "p", "y"), ("square", "n0"))  # (p - y)^2 == (y - p)^2
    c = Genome.from_nodes(("sub", "y", "p"), ("square", "n0"), ("add", "n1", "1"))  # + constant
    d = zoo()["cross_entropy"]
    prints = [screen(g).fingerprint for g in (a, b, c, d)]
    assert prints[0] == prints[1] == prints[2] != prints[3]
