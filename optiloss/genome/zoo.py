"""Known losses written as genomes.

Each entry is enqueued into the first generation of every new study, so the
search starts from (and is measured against) the losses people already use.
"""

from __future__ import annotations

from optiloss.genome.genome import DEFAULT_NODES, Genome


def zoo(n_nodes: int = DEFAULT_NODES) -> dict[str, Genome]:
    """The known losses as unoriented genomes of ``n_nodes`` nodes (at least 4): cross-entropy
    (-sum y ln p), focal loss with gamma 2 (Lin et al. 2017), Poly-1 (Leng et al. 2022: cross-entropy
    + (1 - p_t)), mean squared error on probabilities, and the Baikal loss (Gonzalez & Miikkulainen
    2020, sum form: sum (y / p - ln p)), and label-smoothed cross-entropy as airbench trains with it.

    The genome has no constant but 1 and -1 and cannot see the number of classes, so
    ``label_smoothing`` is ``-sum (y + k) ln p`` with k = erfc(1)^2 = 0.02475: on C classes
    that is (1 + C k) times cross-entropy with smoothing C k / (1 + C k), i.e. on 10 classes
    1.2475 x label smoothing 0.198 (airbench's is 0.2; the scale matters only as a learning-rate
    factor)."""
    if n_nodes < 4:
        raise ValueError("the zoo needs genomes of at least 4 nodes")
    build = lambda *nodes: Genome.from_nodes(*nodes, n_nodes=n_nodes)  # noqa: E731
    return {
        "cross_entropy": build(("ln", "p"), ("mul", "y", "n0"), ("neg", "n1")),
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
