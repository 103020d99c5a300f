"""The operator table of the loss genome.

Every operator is data: a name (the value of an Optuna categorical gene), an
arity, a torch function, and templates from which text, LaTeX and Python source
are derived. Nothing here is ever built from or evaluated as a string.

The set is the search space of Morgan & Hougen's loss-search code: 27 unary and
7 binary operators, with ``EPS = 1e-7`` protecting logarithms and divisions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

EPS = 1e-7


@dataclass(frozen=True)
class Operator:
    """One node operator.

    ``text``, ``latex`` and ``python`` are format templates over ``{a}`` (the
    first input) and, for binary operators, ``{b}``. ``python`` must be a torch
    expression valid inside a function that defines ``eps``.
    """

    name: str
    arity: int
    function: Callable[..., torch.Tensor]
    text: str
    latex: str
    python: str


def _sigmoid_derivative(a: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(a)
    return s * (1 - s)


UNARY_OPERATORS: tuple[Operator, ...] = (
    Operator("neg", 1, torch.neg, "-{a}", r"-{a}", "-{a}"),
    Operator(
        "ln",
        1,
        lambda a: torch.log(torch.abs(a) + EPS),
        "ln(|{a}| + eps)",
        r"\ln\left(\left|{a}\right| + \epsilon\right)",
        "torch.log(torch.abs({a}) + eps)",
    ),
    Operator(
        "log10",
        1,
        lambda a: torch.log10(torch.abs(a) + EPS),
        "log10(|{a}| + eps)",
        r"\log_{{10}}\left(\left|{a}\right| + \epsilon\right)",
        "torch.log10(torch.abs({a}) + eps)",
    ),
    Operator("exp", 1, torch.exp, "exp({a})", r"e^{{{a}}}", "torch.exp({a})"),
    Operator("abs", 1, torch.abs, "|{a}|", r"\left|{a}\right|", "torch.abs({a})"),
    Operator("sigmoid", 1, torch.sigmoid, "sigmoid({a})", r"\sigma\left({a}\right)", "torch.sigmoid({a})"),
    Operator(
        "inv_1p_abs",
        1,
        lambda a: 1 / (1 + torch.abs(a)),
        "1/(1 + |{a}|)",
        r"\frac{{1}}{{1 + \left|{a}\right|}}",
        "1 / (1 + torch.abs({a}))",
    ),
    Operator(
        "softplus",
        1,
        F.softplus,
        "softplus({a})",
        r"\operatorname{{softplus}}\left({a}\right)",
        "torch.nn.functional.softplus({a})",
    ),
    Operator(
        "erf",
        1,
        torch.special.erf,
        "erf({a})",
        r"\operatorname{{erf}}\left({a}\right)",
        "torch.special.erf({a})",
    ),
    Operator(
        "erfc",
        1,
        torch.special.erfc,
        "erfc({a})",
        r"\operatorname{{erfc}}\left({a}\right)",
        "torch.special.erfc({a})",
    ),
    Operator("sin", 1, torch.sin, "sin({a})", r"\sin\left({a}\right)", "torch.sin({a})"),
    Operator("sinh", 1, torch.sinh, "sinh({a})", r"\sinh\left({a}\right)", "torch.sinh({a})"),
    Operator(
        "asinh", 1, torch.asinh, "asinh({a})", r"\operatorname{{asinh}}\left({a}\right)", "torch.asinh({a})"
    ),
    Operator("tanh", 1, torch.tanh, "tanh({a})", r"\tanh\left({a}\right)", "torch.tanh({a})"),
    Operator("atan", 1, torch.atan, "atan({a})", r"\arctan\left({a}\right)", "torch.atan({a})"),
    Operator(
        "reciprocal",
        1,
        lambda a: 1 / (a + EPS),
        "1/({a} + eps)",
        r"\frac{{1}}{{{a} + \epsilon}}",
        "1 / ({a} + eps)",
    ),
    Operator("bessel_i0", 1, torch.special.i0, "I0({a})", r"I_0\left({a}\right)", "torch.special.i0({a})"),
    Operator(
        "bessel_i0e", 1, torch.special.i0e, "I0e({a})", r"I_0^{{e}}\left({a}\right)", "torch.special.i0e({a})"
    ),
    Operator("bessel_i1", 1, torch.special.i1, "I1({a})", r"I_1\left({a}\right)", "torch.special.i1({a})"),
    Operator(
        "bessel_i1e", 1, torch.special.i1e, "I1e({a})", r"I_1^{{e}}\left({a}\right)", "torch.special.i1e({a})"
    ),
    Operator("relu", 1, torch.relu, "max({a}, 0)", r"\max\left({a}, 0\right)", "torch.clamp({a}, min=0)"),
    Operator(
        "min0",
        1,
        lambda a: torch.clamp(a, max=0),
        "min({a}, 0)",
        r"\min\left({a}, 0\right)",
        "torch.clamp({a}, max=0)",
    ),
    Operator("square", 1, torch.square, "{a}^2", r"\left({a}\right)^{{2}}", "torch.square({a})"),
    Operator(
        "sqrt_abs",
        1,
        lambda a: torch.sqrt(torch.abs(a)),
        "sqrt(|{a}|)",
        r"\sqrt{{\left|{a}\right|}}",
        "torch.sqrt(torch.abs({a}))",
    ),
    Operator(
        "softsign",
        1,
        F.softsign,
        "{a}/(1 + |{a}|)",
        r"\frac{{{a}}}{{1 + \left|{a}\right|}}",
        "{a} / (1 + torch.abs({a}))",
    ),
    Operator(
        "tanh_derivative",
        1,
        lambda a: 1 - torch.tanh(a) ** 2,
        "(1 - tanh({a})^2)",
        r"\left(1 - \tanh^{{2}}\left({a}\right)\right)",
        "(1 - torch.tanh({a}) ** 2)",
    ),
    Operator(
        "sigmoid_derivative",
        1,
        _sigmoid_derivative,
        "sigmoid({a})(1 - sigmoid({a}))",
        r"\sigma\left({a}\right)\left(1 - \sigma\left({a}\right)\right)",
        "(torch.sigmoid({a}) * (1 - torch.sigmoid({a})))",
    ),
)

BINARY_OPERATORS: tuple[Operator, ...] = (
    Operator("add", 2, torch.add, "({a} + {b})", r"\left({a} + {b}\right)", "({a} + {b})"),
    Operator("sub", 2, torch.sub, "({a} - {b})", r"\left({a} - {b}\right)", "({a} - {b})"),
    Operator("mul", 2, torch.mul, "({a} * {b})", r"{a} \cdot {b}", "({a} * {b})"),
    Operator(
        "max", 2, torch.maximum, "max({a}, {b})", r"\max\left({a}, {b}\right)", "torch.maximum({a}, {b})"
    ),
    Operator(
        "min", 2, torch.minimum, "min({a}, {b})", r"\min\left({a}, {b}\right)", "torch.minimum({a}, {b})"
    ),
    Operator(
        "div",
        2,
        lambda a, b: a / (b + EPS),
        "({a} / ({b} + eps))",
        r"\frac{{{a}}}{{{b} + \epsilon}}",
        "({a} / ({b} + eps))",
    ),
    Operator(
        "div_sqrt1p_sq",
        2,
        lambda a, b: a / torch.sqrt(1 + b * b),
        "({a} / sqrt(1 + {b}^2))",
        r"\frac{{{a}}}{{\sqrt{{1 + \left({b}\right)^{{2}}}}}}",
        "({a} / torch.sqrt(1 + {b} * {b}))",
    ),
)

OPERATORS: dict[str, Operator] = {op.name: op for op in UNARY_OPERATORS + BINARY_OPERATORS}
OPERATOR_NAMES: tuple[str, ...] = tuple(OPERATORS)
