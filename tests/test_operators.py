"""Every operator against an independent reference, and its gradient against finite differences."""

import numpy as np
import pytest
import scipy.special
import torch

from optiloss.genome import BINARY_OPERATORS, EPS, OPERATORS, UNARY_OPERATORS

UNARY_REFERENCE = {
    "neg": lambda a: -a,
    "ln": lambda a: np.log(np.abs(a) + EPS),
    "log10": lambda a: np.log10(np.abs(a) + EPS),
    "exp": np.exp,
    "abs": np.abs,
    "sigmoid": scipy.special.expit,
    "inv_1p_abs": lambda a: 1 / (1 + np.abs(a)),
    "softplus": lambda a: np.log1p(np.exp(a)),
    "erf": scipy.special.erf,
    "erfc": scipy.special.erfc,
    "sin": np.sin,
    "sinh": np.sinh,
    "asinh": np.arcsinh,
    "tanh": np.tanh,
    "atan": np.arctan,
    "reciprocal": lambda a: 1 / (a + EPS),
    "bessel_i0": scipy.special.i0,
    "bessel_i0e": scipy.special.i0e,
    "bessel_i1": scipy.special.i1,
    "bessel_i1e": scipy.special.i1e,
    "relu": lambda a: np.maximum(a, 0),
    "min0": lambda a: np.minimum(a, 0),
    "square": np.square,
    "sqrt_abs": lambda a: np.sqrt(np.abs(a)),
    "softsign": lambda a: a / (1 + np.abs(a)),
    "tanh_derivative": lambda a: 1 - np.tanh(a) ** 2,
    "sigmoid_derivative": lambda a: scipy.special.expit(a) * (1 - scipy.special.expit(a)),
}
BINARY_REFERENCE = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "max": np.maximum,
    "min": np.minimum,
    "div": lambda a, b: a / (b + EPS),
    "div_sqrt1p_sq": lambda a, b: a / np.sqrt(1 + b**2),
}


def test_the_operator_set_is_the_papers():
    assert len(UNARY_OPERATORS) == 27 and len(BINARY_OPERATORS) == 7
    assert set(UNARY_REFERENCE) == {op.name for op in UNARY_OPERATORS}
    assert set(BINARY_REFERENCE) == {op.name for op in BINARY_OPERATORS}


def _inputs(seed: int) -> np.ndarray:
    # away from 0 (kinks of |x|, max, min) so finite differences are well defined
    values = np.random.default_rng(seed).uniform(-3, 3, size=64)
    return values[np.abs(values) > 0.1]


@pytest.mark.parametrize("name", list(UNARY_REFERENCE))
def test_unary_operator_matches_reference_and_finite_differences(name):
    a = _inputs(1)
    got = OPERATORS[name].function(torch.from_numpy(a)).numpy()
    np.testing.assert_allclose(got, UNARY_REFERENCE[name](a), rtol=1e-10, atol=1e-12)
    x = torch.from_numpy(a).requires_grad_(True)
    assert torch.autograd.gradcheck(OPERATORS[name].function, (x,), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", list(BINARY_REFERENCE))
def test_binary_operator_matches_reference_and_finite_differences(name):
    a, b = _inputs(2)[:40], _inputs(3)[:40]
    b = np.where(np.abs(a - b) < 0.1, b + 0.5, b)  # keep max/min away from their kink
    got = OPERATORS[name].function(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(got, BINARY_REFERENCE[name](a, b), rtol=1e-10, atol=1e-12)
    x, z = (torch.from_numpy(v).requires_grad_(True) for v in (a, b))
    assert torch.autograd.gradcheck(OPERATORS[name].function, (x, z), eps=1e-6, atol=1e-5, rtol=1e-4)
