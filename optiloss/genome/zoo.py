"""Known losses written as genomes.

Each entry is enqueued into the first generation of every new study, so the
search starts from (and is measured against) the losses people already use.
"""

from __future__ import annotations

from collections.abc import Callable

from optiloss.genome.genome import DEFAULT_NODES, Genome
from optiloss.genome.screen import screen

BASELINE = "cross_entropy"
"""The baseline's name: the zoo's cross-entropy, as studies, ledgers and tables store it. Every
comparison (noise floor, recheck, transfer, matrix, evaluate, the page) is made against it."""
BASELINE_DISPLAY = "cross-entropy"
"""The baseline as prose and figures write it."""


def display_name(label: str) -> str:
    """A loss's label as prose and figures write it: the baseline's spelled out, others as they are."""
    return BASELINE_DISPLAY if label == BASELINE else label


def baseline_genome(n_nodes: int = DEFAULT_NODES) -> Genome:
    """Cross-entropy in ``n_nodes`` nodes, screened and oriented: the genome every baseline run trains."""
    return screen(zoo(n_nodes)[BASELINE]).genome


LABEL_SMOOTHING_STRENGTHS = (0.1, 0.2)
"""The smoothing strengths the zoo carries exactly in studies with constants (the literature's usual)."""


def label_smoothing_name(strength: float) -> str:
    return f"label_smoothing_{strength:g}"


GCE_Q = 0.7
"""Generalized cross-entropy's q (Zhang & Sabuncu 2018, their CIFAR setting)."""
SCE_ALPHA, SCE_BETA, SCE_LOG_ZERO = 0.1, 1.0, -4.0
"""Symmetric cross-entropy's weights and the value its reverse term takes for log 0 (Wang et al. 2019)."""
CONDITION_LOSSES = ("mae", "gce", "sce")
"""The noisy-label literature's losses, in the zoo of studies with a data condition."""


def zoo(
    n_nodes: int = DEFAULT_NODES,
    n_constants: int = 0,
    num_classes: int | None = None,
    conditions: bool = False,
) -> dict[str, Genome]:
    """The known losses as unoriented genomes of ``n_nodes`` nodes (at least 4): cross-entropy
    (-sum y ln p), focal loss with gamma 2 (Lin et al. 2017), Poly-1 (Leng et al. 2022: cross-entropy
    + (1 - p_t)), mean squared error on probabilities, and the Baikal loss (Gonzalez & Miikkulainen
    2020, sum form: sum (y / p - ln p)), and label-smoothed cross-entropy as airbench trains with it.

    The genome has no constant but 1 and -1 and cannot see the number of classes, so
    ``label_smoothing`` is ``-sum (y + k) ln p`` with k = erfc(1)^2 = 0.02475: on C classes
    that is (1 + C k) times cross-entropy with smoothing C k / (1 + C k), i.e. on 10 classes
    1.2475 x label smoothing 0.198 (airbench's is 0.2; the scale matters only as a learning-rate
    factor).

    With ``n_constants`` constants (a study's ``constants``), every genome carries that many (the
    unused ones 0, inactive), ``poly1`` is ``y (c0 (1 - p) - ln p)`` with epsilon c0 = 1 (the same
    loss, with its epsilon tunable), and with two or more the zoo adds label smoothing exactly as
    written in the literature, ``label_smoothing_0.1`` and ``label_smoothing_0.2``:
    ``-((1 - e) y + e / C) ln p``, whose constants 1 - e and e / C need the class count
    ``num_classes`` (the genome cannot see it; leaving it out there is a ValueError, never a guess;
    :func:`zoo_names` gives the names alone). The old ``label_smoothing`` stays for old studies.
    Focal loss keeps gamma 2 as ``(1 - p)^2``: a gamma constant needs 7 nodes.

    With ``conditions`` (a study with label noise or class imbalance) the zoo adds the losses built for
    noisy labels, each equal to its direct implementation on one-hot targets
    (``tests/test_conditions.py``): ``mae``, ``sum |y - p|`` (Ghosh et al. 2017); with a constant,
    ``gce``, generalized cross-entropy ``y (1 - exp(q ln p)) / q`` with q = 0.7 (Zhang & Sabuncu 2018;
    in 5 nodes the division does not fit and it is ``y (1 - exp(q ln p))``, q times GCE, which AdamW
    trains the same); with two constants and 6 nodes, ``sce``, symmetric cross-entropy
    ``y (4 beta (1 - p) - alpha ln p)`` with alpha 0.1, beta 1 (Wang et al. 2019: its reverse term
    ``-sum p log y`` with log 0 taken as -4 is ``4 (1 - p_t)`` on one-hot targets). Normalized
    cross-entropy (Ma et al. 2020) sums over classes in its denominator, which a genome, evaluated
    class by class, cannot express."""
    if n_nodes < 4:
        raise ValueError("the zoo needs genomes of at least 4 nodes")

    def build(*nodes: tuple[str, str] | tuple[str, str, str], constants: tuple[float, ...] = ()) -> Genome:
        return Genome.from_nodes(*nodes, n_nodes=n_nodes, constants=constants, n_constants=n_constants)

    losses = {
        BASELINE: build(("ln", "p"), ("mul", "y", "n0"), ("neg", "n1")),
        # y (1 - p)^2 ln p rises with p_t; the screen negates it
        "focal": build(
            ("ln", "p"), ("sub", "1", "p"), ("square", "n1"), ("mul", "n2", "n0"), ("mul", "y", "n3")
        ),
        "poly1": build(("ln", "p"), ("sub", "1", "p"), ("sub", "n1", "n0"), ("mul", "y", "n2")),
        "mse": build(("sub", "y", "p"), ("square", "n0")),
        "baikal": build(("ln", "p"), ("div", "y", "p"), ("sub", "n1", "n0")),
        # (y + k) ln p rises with p_t; the screen negates it
        "label_smoothing": build(
            ("erfc", "1"), ("square", "n0"), ("add", "y", "n1"), ("ln", "p"), ("mul", "n2", "n3")
        ),
    }
    if n_constants >= 1:
        losses["poly1"] = build(
            ("sub", "1", "p"),
            ("mul", "c0", "n0"),
            ("ln", "p"),
            ("sub", "n1", "n2"),
            ("mul", "y", "n3"),
            constants=(1.0,),
        )
    if n_constants >= 2:
        if num_classes is None:
            raise ValueError("the zoo's label smoothing with constants needs the data set's num_classes")
        for strength in LABEL_SMOOTHING_STRENGTHS:
            # ((1 - e) y + e / C) ln p rises with p_t; the screen negates it
            losses[label_smoothing_name(strength)] = build(
                ("mul", "c0", "y"),
                ("add", "n0", "c1"),
                ("ln", "p"),
                ("mul", "n1", "n2"),
                constants=(1 - strength, strength / num_classes),
            )
    if conditions:
        losses.update(_condition_losses(build, n_nodes, n_constants))
    return losses


def _condition_losses(build: Callable[..., Genome], n_nodes: int, n_constants: int) -> dict[str, Genome]:
    """MAE, GCE and SCE as far as the genome's nodes and constants allow (see :func:`zoo`)."""
    losses = {"mae": build(("sub", "y", "p"), ("abs", "n0"))}
    if n_constants >= 1:
        # y (1 - p^q) falls as p_t rises: no negation needed
        power = (("ln", "p"), ("mul", "c0", "n0"), ("exp", "n1"), ("sub", "1", "n2"))
        if n_nodes >= 6:
            losses["gce"] = build(*power, ("div", "n3", "c0"), ("mul", "y", "n4"), constants=(GCE_Q,))
        else:
            losses["gce"] = build(*power, ("mul", "y", "n3"), constants=(GCE_Q,))
    if n_constants >= 2 and n_nodes >= 6:
        losses["sce"] = build(
            ("ln", "p"),
            ("mul", "c0", "n0"),
            ("sub", "1", "p"),
            ("mul", "c1", "n2"),
            ("sub", "n3", "n1"),
            ("mul", "y", "n4"),
            constants=(SCE_ALPHA, -SCE_LOG_ZERO * SCE_BETA),
        )
    return losses


def zoo_names(n_constants: int = 0, conditions: bool = False, n_nodes: int = DEFAULT_NODES) -> list[str]:
    """The names of :func:`zoo`'s losses for a study with ``n_constants`` constants (and ``conditions``,
    in ``n_nodes`` nodes), in its order."""
    names = list(zoo(n_nodes))
    if n_constants >= 2:
        names += [label_smoothing_name(strength) for strength in LABEL_SMOOTHING_STRENGTHS]
    if conditions:
        fits = {"mae": True, "gce": n_constants >= 1, "sce": n_constants >= 2 and n_nodes >= 6}
        names += [name for name in CONDITION_LOSSES if fits[name]]
    return names
