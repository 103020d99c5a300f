"""Screening a genome before any network is trained.

:func:`screen` runs cheap checks (about a millisecond) and either rejects a
genome with a reason or accepts it, oriented so that the loss falls as the
true-class probability rises, together with its behavioural fingerprint.

Checks, in order:

1. structure: the active graph reads both ``y`` and ``p``;
2. the true-class sweep (the predecessor's integrity check): a two-class sample
   whose true-class probability ``p_t`` runs from 1e-7 to 1 - 1e-7 in 1,000
   steps must give finite losses, not be constant, have at most 10 flat steps,
   change slope sign at most twice, and have no extremum near ``p_t = 0.5``;
3. orientation: the sign of the rank correlation between ``p_t`` and the loss
   along the sweep. A loss that mostly rises with ``p_t`` is negated. (The
   predecessor used the initial slope, which flips losses such as Baikal whose
   curve turns up only close to ``p_t = 1``.)
4. the probe set: fixed logits and targets (one-hot and mixed, with
   near-saturated rows) at training precision (float32): the loss and its gradient with
   respect to the logits must be finite, the gradient non-zero, and the loss
   must change when the targets change.

The fingerprint of an accepted genome is its logit gradient on the probe rows
whose targets are like the study's (see :func:`screen`): what the training
sees, so losses that differ by a term without ``p`` are duplicates.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from optiloss.genome.genome import Genome

SWEEP_STEPS = 1000
SWEEP_EDGE = 1e-7
MAX_FLAT_STEPS = 10
MAX_SLOPE_SIGN_CHANGES = 2
CENTRE_WINDOW = (490, 509)
PROBE_CLASSES = 10
FINGERPRINT_DIGITS = 5


@dataclass(frozen=True)
class ScreenResult:
    """Outcome of :func:`screen`. ``genome`` is oriented when accepted."""

    genome: Genome
    reason: str | None = None
    fingerprint: str | None = None
    behaviour: tuple[np.ndarray, np.ndarray] | None = field(default=None, compare=False, repr=False)
    """Of an accepted genome: (its float64 logit gradient on the fingerprinted probe rows, its loss
    along the true-class sweep as oriented), what :func:`optiloss.genome.phenotype.phenotype` reads."""

    @property
    def accepted(self) -> bool:
        return self.reason is None


_SWEEP_P = torch.linspace(SWEEP_EDGE, 1 - SWEEP_EDGE, SWEEP_STEPS, dtype=torch.float64)


def true_class_sweep(genome: Genome, p_true: torch.Tensor = _SWEEP_P) -> np.ndarray:
    """Per-sample loss of a two-class sample with target class 0, for each ``p_true``."""
    p = torch.stack([p_true, 1 - p_true], dim=1)
    y = torch.zeros_like(p)
    y[:, 0] = 1
    with torch.no_grad():
        return genome.per_sample(y, p).numpy()


def _probe_set() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(20240409)
    logits = 3 * torch.randn(48, PROBE_CLASSES, generator=generator)
    saturated = torch.zeros(4, PROBE_CLASSES)
    saturated[0, 0], saturated[1, 0], saturated[2, 3], saturated[3, 1] = 30, -30, 50, 15
    logits = torch.cat([logits, saturated])
    labels = torch.randint(0, PROBE_CLASSES, (len(logits),), generator=generator)
    y = torch.nn.functional.one_hot(labels, PROBE_CLASSES).float()
    # a quarter of the rows are mixup-style soft targets
    partner = torch.roll(labels, 1)
    lam = torch.rand(len(logits) // 4, generator=generator)
    rows = slice(0, len(lam))
    y[rows] = (1 - lam[:, None]) * y[rows] + lam[:, None] * torch.nn.functional.one_hot(
        partner[rows], PROBE_CLASSES
    ).float()
    other_y = torch.roll(y, 1, dims=0)
    return logits, y, other_y


_PROBE_LOGITS, _PROBE_Y, _PROBE_OTHER_Y = _probe_set()


def _rounded(values: np.ndarray) -> np.ndarray:
    """Round to FINGERPRINT_DIGITS significant digits; values negligible against the largest become 0."""
    values = np.asarray(values, dtype=np.float64)
    largest = np.max(np.abs(values)) if values.size else 0.0
    values = np.where(np.abs(values) <= 1e-9 * largest, 0.0, values)
    mantissa, exponent = np.frexp(values)
    return np.ldexp(np.round(mantissa, FINGERPRINT_DIGITS), exponent)


def fingerprint(gradient: np.ndarray, scale_free: bool = False) -> str:
    """Hash of what training sees on the probe rows: the gradient of the batch loss with respect to
    the logits, rounded.

    Terms that do not depend on ``p`` (``L`` and ``L + c(y)``) have no gradient and drop out. With
    ``scale_free`` the gradient is divided by its root mean square, so ``L`` and ``k L`` (k > 0)
    match: right for optimisers that ignore the loss's scale (Adam, AdamW), wrong for SGD, where
    the scale is a learning-rate factor.
    """
    gradient = np.asarray(gradient, dtype=np.float64).ravel()
    if scale_free:
        gradient = gradient / np.sqrt(np.mean(gradient**2))
    payload = _rounded(gradient) + 0.0  # turns -0.0 into 0.0
    return hashlib.sha256(payload.tobytes()).hexdigest()[:16]


def _rank(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    return ranks


def _sweep_reason(curve: np.ndarray) -> str | None:
    if not np.all(np.isfinite(curve)):
        return "non-finite loss on the true-class sweep"
    span = float(curve.max() - curve.min())
    if span <= 1e-12 * max(1.0, float(np.abs(curve).max())):
        return "constant along the true-class probability"
    steps = np.diff(curve)
    # flat at float64 resolution, relative to the local magnitude (losses such as
    # Baikal span seven orders of magnitude along the sweep)
    local = np.maximum(1.0, np.maximum(np.abs(curve[1:]), np.abs(curve[:-1])))
    flat = np.abs(steps) <= 1e-12 * local
    if flat.sum() > MAX_FLAT_STEPS:
        return f"plateau: {int(flat.sum())} flat steps along the true-class probability"
    moving = np.flatnonzero(~flat)
    signs = np.sign(steps[moving])
    turns = moving[1:][signs[1:] != signs[:-1]]
    if len(turns) > MAX_SLOPE_SIGN_CHANGES:
        return f"slope changes sign {len(turns)} times along the true-class probability"
    low, high = CENTRE_WINDOW
    for turn in turns:
        if low <= turn <= high:
            return f"extremum near p_t = 0.5 (p_t = {_SWEEP_P[turn].item():.3f})"
    return None


def orientation_of(curve: np.ndarray) -> bool:
    """True when the loss mostly rises with the true-class probability and must be negated."""
    ranks = _rank(curve)
    positions = np.arange(len(curve), dtype=np.float64)
    return float(np.corrcoef(positions, ranks)[0, 1]) > 0


_PROBE_ONE_HOT = _PROBE_Y.max(dim=1).values == 1
_PROBE_TRUE_CLASS = _PROBE_Y.argmax(dim=1)


def probe_one_hot_rows() -> np.ndarray:
    """Which probe rows have one-hot targets (the rows a study without soft targets fingerprints)."""
    return _PROBE_ONE_HOT.numpy()


def true_class_slope(gradient: np.ndarray) -> float:
    """Mean derivative of the loss with respect to the true-class logit over the one-hot probe rows.

    A usable loss has a negative slope: a descent step raises the true-class probability.
    """
    rows = np.flatnonzero(_PROBE_ONE_HOT.numpy())
    return float(gradient[rows, _PROBE_TRUE_CLASS.numpy()[rows]].mean())


def probe(genome: Genome, dtype: torch.dtype = torch.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-sample losses, logit gradients and losses under other targets on the probe set."""
    logits = _PROBE_LOGITS.to(dtype).requires_grad_(True)
    p = torch.softmax(logits, dim=1)
    per_sample = genome.per_sample(_PROBE_Y.to(dtype), p)
    (gradient,) = torch.autograd.grad(per_sample.mean(), logits)
    with torch.no_grad():
        other = genome.per_sample(_PROBE_OTHER_Y.to(dtype), p)
    return per_sample.detach().numpy(), gradient.numpy(), other.numpy()


def screen(genome: Genome, soft_targets: bool = True, scale_free: bool = False) -> ScreenResult:
    """Run every pre-training check; see the module docstring for the contract.

    The fingerprint (:func:`fingerprint`) is taken on the probe rows whose targets are like the
    study's: every row with ``soft_targets`` (mixup and ``all`` train on mixed targets), the one-hot
    rows only without (base, cutout, RandAugment), where ``y^2 ln p`` and ``y ln p`` train alike.
    ``scale_free`` as in :func:`fingerprint`.
    """
    missing = {"y", "p"} - genome.leaves_used
    if missing:
        return ScreenResult(genome, f"does not depend on {' or '.join(sorted(missing))}")
    curve = true_class_sweep(genome)
    reason = _sweep_reason(curve)
    if reason:
        return ScreenResult(genome, reason)
    flipped = orientation_of(curve)
    curve = -curve if flipped != genome.negated else curve
    genome = genome.with_orientation(flipped)
    with np.errstate(all="ignore"):
        per_sample, gradient, other = probe(genome)
    if not (np.all(np.isfinite(per_sample)) and np.all(np.isfinite(gradient))):
        return ScreenResult(genome, "non-finite loss or gradient on the probe set")
    if np.max(np.abs(gradient)) <= 1e-12:
        return ScreenResult(genome, "constant: zero gradient with respect to the logits")
    if np.allclose(per_sample, other, rtol=1e-6, atol=1e-9):
        return ScreenResult(genome, "does not depend on the targets")
    if true_class_slope(gradient) >= 0:
        return ScreenResult(
            genome, "rises with the true-class probability on the probe set: gradient descent would lower it"
        )
    # the fingerprint uses float64 so that rounding does not split equal behaviours
    _, exact_gradient, _ = probe(genome, torch.float64)
    rows = slice(None) if soft_targets else _PROBE_ONE_HOT.numpy()
    return ScreenResult(
        genome, None, fingerprint(exact_gradient[rows], scale_free), behaviour=(exact_gradient[rows], curve)
    )
