"""Losses given by name and formula: a ``[losses]`` table in a TOML file and ``--loss NAME=FORMULA``."""

from __future__ import annotations

from collections.abc import Mapping

from optiloss.errors import UsageError
from optiloss.genome.genome import Genome
from optiloss.genome.parse import FormulaError, parse_formula
from optiloss.genome.screen import screen
from optiloss.genome.zoo import zoo_names
from optiloss.records import FOUND_LABEL


def _without_outer_negation(formula: str) -> str:
    """``X`` for a formula ``-(X)`` whose parentheses hold all of it, else the formula itself.

    The screen orients every loss, so ``-(X)`` and ``X`` screen to the same loss; parsing ``X``
    saves the node a negation would take, which is how ``show`` prints a negated genome that
    uses all its nodes."""
    text = formula.strip()
    if not text.startswith("-("):
        return formula
    depth = 0
    for index, character in enumerate(text[1:], start=1):
        depth += {"(": 1, ")": -1}.get(character, 0)
        if depth == 0:
            return text[2:-1] if index == len(text) - 1 else formula
    return formula


SHOWN_FORMULA = 80
"""The most characters of a formula an error message repeats (a longer one is cut, marked "...")."""


def shown(formula: str) -> str:
    """``formula`` quoted for a one-line message, cut to :data:`SHOWN_FORMULA` characters."""
    if len(formula) <= SHOWN_FORMULA:
        return repr(formula)
    return repr(formula[: SHOWN_FORMULA - 3] + "...")


def _parse(formula: str, n_nodes: int, n_constants: int | None) -> Genome:
    try:
        return parse_formula(formula, n_nodes, n_constants)
    except FormulaError:
        inner = _without_outer_negation(formula)
        if inner == formula:
            raise
        try:
            return parse_formula(inner, n_nodes, n_constants)
        except FormulaError:
            pass
        raise  # the error of the formula as written, whose columns the user sees


def named_losses(
    formulas: Mapping[str, str] | Mapping[str, Genome], n_nodes: int, n_constants: int | None = None
) -> dict[str, Genome]:
    """Name -> the screened, oriented genome of each formula, in ``n_nodes`` nodes with ``n_constants``
    constants (its numbers, the unused ones 0; None: as many as it has, for a loss trained on its own
    rather than enqueued into a study).

    A formula that does not parse, needs more nodes, or fails the screen, and a name the
    reports use already (a zoo loss, ``trial_N``), is a :class:`UsageError` naming the loss and why.
    A :class:`Genome` in place of a formula is taken as it is: these very losses, parsed and screened
    already (an experiment run parses its losses once).
    """
    losses: dict[str, Genome] = {}
    for name, formula in formulas.items():
        if name in zoo_names(max(2, n_constants or 0)) or FOUND_LABEL.fullmatch(name):
            raise UsageError(
                f"loss name {name!r} is taken (the zoo's losses and trial_N label trials "
                "in reports); choose another name"
            )
        if isinstance(formula, Genome):
            losses[name] = formula
            continue
        try:
            genome = _parse(formula, n_nodes, n_constants)
        except FormulaError as error:
            raise UsageError(f"loss {name} = {shown(formula)}: {error}") from None
        result = screen(genome)
        if not result.accepted:
            raise UsageError(f"loss {name} = {shown(formula)} is rejected by the screen: {result.reason}")
        losses[name] = result.genome
    return losses
