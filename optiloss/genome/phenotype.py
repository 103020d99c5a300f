"""What a loss does, as a fixed-length vector: the phenotype a predictor of trial results learns from.

The screen already computes, for every candidate, the loss's gradient with
respect to the logits on a fixed probe set and hashes it into the fingerprint;
:func:`phenotype` keeps it as numbers instead. Two losses with the same
fingerprint have the same phenotype; losses that train alike lie close. It is
recomputed from the genome on demand (about a millisecond), so a study holds
nothing new and every sampler sees the same vector.
"""

from __future__ import annotations

import numpy as np
import torch

from optiloss.genome.genome import Genome
from optiloss.genome.screen import PROBE_CLASSES, SWEEP_STEPS, probe, probe_one_hot_rows, true_class_sweep

CURVE_POINTS = 32
"""Points of the true-class sweep kept in the phenotype."""


def phenotype_length(soft_targets: bool = True) -> int:
    rows = probe_one_hot_rows()
    return (len(rows) if soft_targets else int(rows.sum())) * PROBE_CLASSES + 1 + CURVE_POINTS


def phenotype(
    genome: Genome, soft_targets: bool = True, behaviour: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """The phenotype of an accepted, oriented genome (:func:`optiloss.genome.screen` gives one):

    - its logit gradient on the probe rows the fingerprint reads (every row with ``soft_targets``,
      the one-hot rows without), in float64, divided by its root mean square (as the scale-free
      fingerprint normalises it) and compressed by ``sign(x) log(1 + |x|)``, so a few saturated rows
      do not outweigh the rest;
    - ``log10`` of that root mean square: the loss's scale, which plain SGD feels;
    - its loss along the true-class sweep at :data:`CURVE_POINTS` evenly spaced points, scaled to
      [0, 1] (the shape of the curve the screen checked).

    A vector of :func:`phenotype_length` finite floats. ``behaviour`` is the screen's
    (:attr:`optiloss.genome.screen.ScreenResult.behaviour`, taken with the same ``soft_targets``):
    given, nothing is computed again.
    """
    if behaviour is None:
        with np.errstate(all="ignore"):
            _, gradient, _ = probe(genome, torch.float64)
        rows = slice(None) if soft_targets else probe_one_hot_rows()
        gradient, sweep = gradient[rows], true_class_sweep(genome)
    else:
        gradient, sweep = behaviour
    gradient = np.asarray(gradient, dtype=np.float64).ravel()
    scale = float(np.sqrt(np.mean(gradient**2)))
    normalised = gradient / scale if scale > 0 else gradient
    compressed = np.sign(normalised) * np.log1p(np.abs(normalised))
    curve = sweep[np.linspace(0, SWEEP_STEPS - 1, CURVE_POINTS).astype(int)]
    span = float(curve.max() - curve.min())
    shape = (curve - curve.min()) / span if span > 0 else np.zeros_like(curve)
    vector = np.concatenate([compressed, [np.log10(scale) if scale > 0 else -12.0], shape])
    return np.nan_to_num(vector, nan=0.0, posinf=0.0, neginf=0.0)
