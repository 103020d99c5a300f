"""Reading a loss formula back into a genome.

:func:`parse_formula` turns text such as ``-(y * ln(|p| + eps))`` into an
unoriented :class:`~optiloss.genome.genome.Genome` whose loss has the same
values and gradients. It reads every formula :attr:`Genome.formula` prints and
a few friendlier spellings. The text is tokenized, parsed by recursive descent
into a small syntax tree and lowered onto the operators of
:mod:`optiloss.genome.operators`; nothing in it is ever evaluated.

Grammar, loosest first; every binary level is left-associative::

    sum      := product (("+" | "-") product)*
    product  := quotient ("*" quotient)*
    quotient := signed ("/" signed)*
    signed   := "-" signed | implicit
    implicit := power ("(" sum ")" square*)*      juxtaposition multiplies: y(1 - p)
    power    := atom square*
    square   := ("^" | "**") "2"
    atom     := "y" | "p" | "eps" | NUMBER | "(" sum ")" | "|" sum "|"
              | FUNCTION "(" sum ("," sum)* ")"

``/`` binds tighter than ``*``: ``a * b/c`` has the same value either way, and
this is the nesting the printer means by ``(a * b/(1 + |b|))``.

Printed forms read as the operator that prints them: ``ln(|a| + eps)``,
``log10(|a| + eps)``, ``1/(1 + |a|)``, ``1/(a + eps)``, ``(a / (b + eps))``,
``(a / sqrt(1 + b^2))``, ``a/(1 + |a|)`` (the same ``a`` twice, written alike),
``(1 - tanh(a)^2)``, ``sigmoid(a)(1 - sigmoid(a))``, ``max(a, 0)``,
``min(a, 0)``, ``sqrt(|a|)``, ``I0(a)`` …, ``|a|``, ``a^2``, ``-a``.

The printer squares by appending ``^2`` and negates by prepending ``-``, so
where the usual reading differs the printer's wins: ``a/(1 + |a|)^2``,
``1/(a + eps)^2``, ``1/(1 + |a|)^2`` and ``sigmoid(a)(1 - sigmoid(a))^2`` are
the square of the whole form, in ``sqrt(1 + b^2)`` the ``^2`` squares
everything after ``1 +``, and a ``-`` in front of a form negates all of it
(``-1/(a + eps)`` is ``neg(reciprocal(a))``).

A negated genome prints its orientation as ``-(...)``, which reads as a
``neg`` node: the formula of a negated genome that uses all its nodes needs one
node more than the genome has.

The printed text is ambiguous in a few places; the parser reads:

* ``-a^2`` as ``-(a^2)``. The printer writes ``square(neg(a))`` the same way,
  so a genome that squares a negation prints a formula that reads back as a
  different loss (the only such case);
* ``-1`` and ``(-1)`` as the leaf ``-1`` (``neg(1)`` prints ``-1``: same values);
* ``(1 - tanh(a)^2)`` as ``tanh_derivative`` (``1 - square(tanh(a))`` prints
  the same), ``1/(1 + |1|)`` as ``inv_1p_abs(1)`` (``softsign(1)`` prints the
  same), ``(1 / (a + eps))`` as ``div(1, a)`` and ``1/(a + eps)`` as
  ``reciprocal(a)``: the same values each time.

Friendly forms, which differ slightly from the plain reading because every
genome operator is protected: ``ln(a)``, ``log(a)`` and ``ln(|a|)`` are
``ln(|a| + eps)`` (so is ``log10``); ``sqrt(a)`` is ``sqrt(|a|)``; ``1/a`` is
``1/(a + eps)`` and ``a / b`` is ``a / (b + eps)``; ``**`` squares like ``^``;
``max(0, a)`` is ``max(a, 0)``. Every operator name of
:mod:`~optiloss.genome.operators` is a function of its arity (``square(p)``,
``bessel_i0(p)``, ``div(y, p)``), read literally.

Numbers: ``1`` and ``-1`` are leaves; ``0`` appears only in ``max(a, 0)`` and
``min(a, 0)`` and ``2`` as the exponent of a square; every other number
(``0.1``, ``2.5e-2``, ``-3``, ``(-0.5)``) is one of the genome's real-valued
constants ``c0``, ``c1`` … in order of first appearance, the same number one
constant. ``eps`` appears only in the printed forms above; any other name is
an error.

Equal subexpressions share one node. Nodes are hidden nodes in dependency
order, then the output; unused slots hold an inactive ``add(y, y)``. A bare
leaf such as ``p`` becomes ``mul(p, 1)``: one node, exactly the same values.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from optiloss.genome.genome import DEFAULT_NODES, Genome, constant_name, node_name
from optiloss.genome.operators import OPERATORS

__all__ = ["FormulaError", "depth_limit", "parse_formula"]

_ALIASES = {
    "log": "ln",
    "sqrt": "sqrt_abs",
    "I0": "bessel_i0",
    "I0e": "bessel_i0e",
    "I1": "bessel_i1",
    "I1e": "bessel_i1e",
}
_FUNCTIONS: dict[str, str] = {**{name: name for name in OPERATORS}, **_ALIASES}
_SYMBOLS = ("y", "p", "eps")
_LEAVES_HINT = "a loss reads y, p and numbers"

_SPACE = re.compile(r"\s*")
_TOKEN = re.compile(
    r"(?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<symbol>\*\*|[-+*/^(),|])"
)


class FormulaError(ValueError):
    """A formula that cannot be read.

    The message is one line; it starts with ``column N:`` (1-based) when the
    problem has a place in the text and says what was expected there.
    ``column`` holds N, or None.
    """

    def __init__(self, message: str, column: int | None = None) -> None:
        super().__init__(message if column is None else f"column {column}: {message}")
        self.column = column


def parse_formula(text: str, n_nodes: int = DEFAULT_NODES, n_constants: int | None = None) -> Genome:
    """An unoriented ``n_nodes`` genome whose loss equals the formula ``text``.

    ``text`` is read as the module docstring describes; the genome's loss
    (:meth:`Genome.__call__`) has the formula's values and gradients. Its numbers
    become constants, padded with zeros to ``n_constants`` (default: as many as it
    has). Raises :class:`FormulaError` for text that is not a loss formula or that
    needs more than ``n_nodes`` operator nodes or more than ``n_constants`` constants.
    """
    if n_nodes < 1:
        raise ValueError(f"n_nodes must be at least 1, got {n_nodes}")
    limit = depth_limit(n_nodes)
    try:
        tree = _Parser(text, min(limit, _MAX_NESTING), n_nodes).formula()
        depth = _depth(tree)
        if depth > limit:
            raise FormulaError(
                f"the formula is {depth} operations deep ({len(text)} characters), deeper than the "
                f"{limit} a loss of the genome's {n_nodes} nodes can be: it needs more nodes than that"
            )
        nodes = _nodes(_lower(tree))
    except RecursionError:  # the limits above keep well inside Python's; this is the last guard
        raise FormulaError(
            f"the formula is nested too deeply ({len(text)} characters) for the genome's {n_nodes} nodes"
        ) from None
    if len(nodes) > n_nodes:
        message = (
            f"the formula needs {len(nodes)} nodes, more than the genome's {n_nodes}: "
            f"nodes must be at least {len(nodes)}"
        )
        if isinstance(tree, _Neg) and tree.operand.grouped and len(nodes) - 1 <= n_nodes:
            message += (
                ' (its leading "-(...)" takes one of them: without it the formula fits, '
                "and screen() orients a loss by itself)"
            )
        raise FormulaError(message)
    nodes, values = _constants_of(nodes)
    if n_constants is not None and len(values) > n_constants:
        raise FormulaError(
            f"the formula has {len(values)} number(s) besides 1 and -1, more than the genome's "
            f"{n_constants} constant(s): constants must be at least {len(values)}"
        )
    return Genome.from_nodes(*nodes, n_nodes=n_nodes, constants=values, n_constants=n_constants)


_LEVELS_PER_NODE = 4
"""The most syntax levels one operator node is written with: ``(a / sqrt(1 + b^2))`` is four."""
_MAX_NESTING = 64
"""Brackets, bars, function calls and signs nested deeper than this are refused before parsing them
(each level costs the recursive descent seven Python frames)."""


def depth_limit(n_nodes: int) -> int:
    """How deep (in syntax levels) the formula of a loss of ``n_nodes`` operator nodes can be:
    every node takes at most :data:`_LEVELS_PER_NODE` levels, a leading ``-(...)`` one node more and
    a leaf (``-1``) two levels."""
    return _LEVELS_PER_NODE * (n_nodes + 2)


def _children(tree: _Expr) -> tuple[_Expr, ...]:
    match tree:
        case _Neg() | _Abs():
            return (tree.operand,)
        case _Square():
            return (tree.base,)
        case _Binary():
            return (tree.left, tree.right)
        case _Call():
            return tree.args
    return ()


def _depth(tree: _Expr) -> int:
    """The number of levels of ``tree`` (a leaf is one), counted without recursion."""
    deepest, pending = 0, [(tree, 1)]
    while pending:
        node, level = pending.pop()
        deepest = max(deepest, level)
        pending.extend((child, level + 1) for child in _children(node))
    return deepest


_CONSTANT_MARK = "#"
"""Lowered numbers are leaves ``#<value>`` until :func:`_constants_of` names them ``c0`` …"""


def _constants_of(
    nodes: list[tuple[str, str] | tuple[str, str, str]],
) -> tuple[list[tuple[str, str] | tuple[str, str, str]], tuple[float, ...]]:
    """``nodes`` with each ``#<value>`` leaf replaced by a constant leaf (first appearance first), and
    the constants' values."""
    names: dict[str, str] = {}
    for _, *refs in nodes:
        for ref in refs:
            if ref.startswith(_CONSTANT_MARK) and ref not in names:
                names[ref] = constant_name(len(names))
    renamed = [(operator, *(names.get(ref, ref) for ref in refs)) for operator, *refs in nodes]
    values = tuple(float(mark[len(_CONSTANT_MARK) :]) for mark in names)
    return renamed, values  # type: ignore[return-value]  # each tuple keeps its length


# ------------------------------------------------------------------- tokens
@dataclass(frozen=True)
class _Token:
    kind: str  # "number", "name", "symbol" or "end"
    text: str
    column: int

    def describe(self) -> str:
        if self.kind == "end":
            return "end of formula"
        if self.kind == "symbol":
            return f'"{self.text}"'
        return f'{self.kind} "{self.text}"' if self.kind == "name" else f"number {self.text}"


def _skip_space(text: str, position: int = 0) -> int:
    """The position of the first non-blank character from ``position`` on (``\\s*`` always matches)."""
    blanks = _SPACE.match(text, position)
    assert blanks is not None
    return blanks.end()


def _tokens(text: str) -> Iterator[_Token]:
    """The tokens of ``text``, then an "end" token; lazily, so errors come in reading order."""
    position = _skip_space(text)
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise FormulaError(f'unexpected character "{text[position]}"', position + 1)
        assert match.lastgroup is not None  # every alternative of _TOKEN is a named group
        yield _Token(match.lastgroup, match.group(), position + 1)
        position = _skip_space(text, match.end())
    yield _Token("end", "", len(text) + 1)


# ---------------------------------------------------------------- syntax tree
# Trees compare by structure only: column and grouping do not take part, so the
# two copies of ``a`` in ``a/(1 + |a|)`` are equal.
@dataclass(frozen=True)
class _Expr:
    column: int = field(compare=False, kw_only=True)
    grouped: bool = field(default=False, compare=False, kw_only=True)  # written inside its own "( )"


@dataclass(frozen=True)
class _Symbol(_Expr):
    name: str  # y, p or eps


@dataclass(frozen=True)
class _Number(_Expr):
    value: float
    text: str = field(compare=False)


@dataclass(frozen=True)
class _Neg(_Expr):
    operand: _Expr


@dataclass(frozen=True)
class _Abs(_Expr):
    operand: _Expr


@dataclass(frozen=True)
class _Square(_Expr):
    base: _Expr


@dataclass(frozen=True)
class _Binary(_Expr):
    op: str  # "+", "-", "*", "/" or "juxt" (juxtaposition)
    left: _Expr
    right: _Expr


@dataclass(frozen=True)
class _Call(_Expr):
    name: str
    args: tuple[_Expr, ...]


class _Parser:
    """Recursive descent over the grammar of the module docstring."""

    def __init__(self, text: str, max_nesting: int = _MAX_NESTING, n_nodes: int = DEFAULT_NODES) -> None:
        self.tokens: list[_Token] = []
        self.pending = _tokens(text)
        self.index = 0
        self.length = len(text)
        self.nesting = 0  # brackets, bars, calls and signs open around the current token
        self.max_nesting = max_nesting
        self.n_nodes = n_nodes

    @contextlib.contextmanager
    def nested(self, token: _Token) -> Iterator[None]:
        """Around the parsing of what ``token`` opens; refuses a nesting deeper than ``max_nesting``."""
        if self.nesting >= self.max_nesting:
            raise FormulaError(
                f"the formula nests brackets, bars, functions and signs more than {self.max_nesting} "
                f"levels deep ({self.length} characters), more than a loss of the genome's "
                f"{self.n_nodes} nodes needs",
                token.column,
            )
        self.nesting += 1
        try:
            yield
        finally:
            self.nesting -= 1

    @property
    def token(self) -> _Token:
        while len(self.tokens) <= self.index:
            self.tokens.append(next(self.pending))
        return self.tokens[self.index]

    def accept(self, *symbols: str) -> _Token | None:
        token = self.token
        if token.kind == "symbol" and token.text in symbols:
            self.index += 1
            return token
        return None

    def expect(self, symbol: str, where: str) -> _Token:
        token = self.accept(symbol)
        if token is None:
            raise FormulaError(f'expected "{symbol}" {where}, got {self.token.describe()}', self.token.column)
        return token

    def formula(self) -> _Expr:
        tree = self.sum()
        if self.token.kind != "end":
            raise FormulaError(f"expected end of formula, got {self.token.describe()}", self.token.column)
        return tree

    def sum(self) -> _Expr:
        tree = self.product()
        while operator := self.accept("+", "-"):
            tree = _Binary(operator.text, tree, self.product(), column=operator.column)
        return tree

    def product(self) -> _Expr:
        tree = self.quotient()
        while operator := self.accept("*"):
            tree = _Binary("*", tree, self.quotient(), column=operator.column)
        return tree

    def quotient(self) -> _Expr:
        tree = self.signed()
        while operator := self.accept("/"):
            tree = _Binary("/", tree, self.signed(), column=operator.column)
        return tree

    def signed(self) -> _Expr:
        if minus := self.accept("-"):
            with self.nested(minus):
                return _Neg(self.signed(), column=minus.column)
        return self.implicit()

    def implicit(self) -> _Expr:
        tree = self.power()
        while self.token.kind == "symbol" and self.token.text == "(":
            column = self.token.column
            tree = _Binary("juxt", tree, self.power(), column=column)
        return tree

    def power(self) -> _Expr:
        tree = self.atom()
        while caret := self.accept("^", "**"):
            exponent = self.token
            if exponent.kind != "number" or float(exponent.text) != 2:
                raise FormulaError(
                    f'expected 2 after "{caret.text}" (a square is the only power), '
                    f"got {exponent.describe()}",
                    exponent.column,
                )
            self.index += 1
            tree = _Square(tree, column=caret.column)
        return tree

    def atom(self) -> _Expr:
        token = self.token
        if token.kind == "number":
            self.index += 1
            return _Number(float(token.text), token.text, column=token.column)
        if token.kind == "name":
            self.index += 1
            if token.text in _SYMBOLS:
                return _Symbol(token.text, column=token.column)
            if token.text in _FUNCTIONS:
                self.expect("(", f"after {token.text}")
                with self.nested(token):
                    args = [self.sum()]
                    while self.accept(","):
                        args.append(self.sum())
                self.expect(")", f"after the arguments of {token.text}")
                return _Call(token.text, tuple(args), column=token.column)
            if self.token.text == "(":
                raise FormulaError(
                    f'unknown function "{token.text}"; the functions are '
                    f"{', '.join(sorted(_FUNCTIONS, key=str.lower))}",
                    token.column,
                )
            raise FormulaError(f'unknown name "{token.text}"; {_LEAVES_HINT}', token.column)
        if self.accept("("):
            with self.nested(token):
                inner = self.sum()
            self.expect(")", f'to close the "(" at column {token.column}')
            return replace(inner, grouped=True, column=token.column)
        if self.accept("|"):
            with self.nested(token):
                inner = self.sum()
            self.expect("|", f'to close the "|" at column {token.column}')
            return _Abs(inner, column=token.column)
        raise FormulaError(f'expected y, p, 1, a function, "(" or "|", got {token.describe()}', token.column)


# ------------------------------------------------------------------ lowering
# A term is a leaf name or (operator, *input terms); equal terms become one node.
_Term = str | tuple


def _is_number(tree: _Expr, value: float) -> bool:
    return isinstance(tree, _Number) and tree.value == value


def _squared(term: _Term, times: int) -> _Term:
    for _ in range(times):
        term = ("square", term)
    return term


def _strip_squares(tree: _Expr) -> tuple[int, _Expr]:
    times = 0
    while isinstance(tree, _Square):
        times, tree = times + 1, tree.base
    return times, tree


def _without_final_square(tree: _Expr) -> _Expr | None:
    """``tree``'s text less a final ``^2``, as a tree; None when the text does not end in one.

    The square sits at the end of the right-hand spine of the operators that
    the printer leaves unparenthesised: ``-``, ``/`` and juxtaposition.
    """
    if tree.grouped:
        return None
    if isinstance(tree, _Square):
        return tree.base
    if isinstance(tree, _Neg):
        inner = _without_final_square(tree.operand)
        return None if inner is None else replace(tree, operand=inner)
    if isinstance(tree, _Binary) and tree.op in ("/", "juxt"):
        inner = _without_final_square(tree.right)
        return None if inner is None else replace(tree, right=inner)
    return None


def _eps_error(tree: _Expr) -> FormulaError:
    return FormulaError(
        "eps may appear only in ln(|a| + eps), log10(|a| + eps), 1/(a + eps) and (a / (b + eps))", tree.column
    )


def _lower(tree: _Expr) -> _Term:
    match tree:
        case _Symbol(name="eps"):
            raise _eps_error(tree)
        case _Symbol():
            return tree.name
        case _Number(value=1):
            return "1"
        case _Number():
            return f"{_CONSTANT_MARK}{tree.value!r}"
        case _Neg(operand=_Number(value=1)):
            return "-1"
        case _Neg(operand=_Number(value=value)):
            return f"{_CONSTANT_MARK}{-value!r}"
        case _Neg():
            return ("neg", _lower(tree.operand))
        case _Abs():
            return ("abs", _lower(tree.operand))
        case _Square():
            return ("square", _lower(tree.base))
        case _Call():
            return _lower_call(tree)
        case _Binary(op="/"):
            return _lower_division(tree)
        case _Binary(op="juxt"):
            return _lower_juxtaposition(tree)
        case _Binary(op="-", left=_Number(value=1), right=_Square(base=_Call(name="tanh", args=(a,)))):
            return ("tanh_derivative", _lower(a))
        case _Binary():
            operator = {"+": "add", "-": "sub", "*": "mul"}[tree.op]
            return (operator, _lower(tree.left), _lower(tree.right))
    raise AssertionError(f"unhandled syntax tree {tree!r}")


def _lower_call(call: _Call) -> _Term:
    operator = _FUNCTIONS[call.name]
    arity = OPERATORS[operator].arity
    if len(call.args) != arity:
        plural = "" if arity == 1 else "s"
        raise FormulaError(f"{call.name} takes {arity} argument{plural}, got {len(call.args)}", call.column)
    args = call.args
    if operator in ("max", "min"):
        for zero, other in ((args[1], args[0]), (args[0], args[1])):
            if _is_number(zero, 0):
                return ("relu" if operator == "max" else "min0", _lower(other))
    elif operator in ("ln", "log10"):
        match args[0]:
            case _Binary(op="+", left=_Abs(operand=a), right=_Symbol(name="eps")) | _Abs(operand=a):
                args = (a,)
    elif call.name == "sqrt" and isinstance(args[0], _Abs):
        args = (args[0].operand,)
    return (operator, *(_lower(arg) for arg in args))


def _lower_division(division: _Binary) -> _Term:
    term = _division_form(division.left, division.right, division.grouped)
    if term is not None:
        return term
    if _is_number(division.left, 1):
        return ("reciprocal", _lower(division.right))
    return ("div", _lower(division.left), _lower(division.right))


def _division_form(numerator: _Expr, denominator: _Expr, grouped: bool) -> _Term | None:
    """The printed form ``numerator / denominator`` stands for, or None when it is none.

    ``grouped``: the division has its own parentheses, as the printer writes
    ``(a / (b + eps))`` and ``(a / sqrt(1 + b^2))``. Without them, a leading
    minus that spoils a form is the printer's ``-{a}`` around the whole form:
    ``-1/(a + eps)`` is ``neg(reciprocal(a))``.
    """
    squares, base = _strip_squares(denominator)
    term = _unary_form(numerator, base, grouped and not squares)
    if term is None and grouped and not squares:
        term = _binary_form(numerator, base)
    if term is not None:
        return _squared(term, squares)
    unsigned = _without_leading_minus(numerator)
    if unsigned is not None:
        inner = _division_form(unsigned, denominator, False)
        if inner is not None:
            return ("neg", inner)
    return None if squares else _binary_form(numerator, base)


def _without_leading_minus(tree: _Expr) -> _Expr | None:
    """``tree``'s text less a leading ``-``, as a tree; None when the text does not start with one.

    The minus sits at the start of the left-hand spine of the divisions that
    the printer leaves unparenthesised: ``-a/b/c`` parses as ``((-a)/b)/c``.
    """
    if tree.grouped:
        return None
    if isinstance(tree, _Neg):
        return tree.operand
    if isinstance(tree, _Binary) and tree.op == "/":
        inner = _without_leading_minus(tree.left)
        return None if inner is None else replace(tree, left=inner)
    return None


def _unary_form(numerator: _Expr, denominator: _Expr, grouped: bool) -> _Term | None:
    match denominator:
        case _Binary(op="+", left=a, right=_Symbol(name="eps")) if _is_number(numerator, 1):
            # the printer parenthesises div(1, a) but not reciprocal(a)
            return ("div", "1", _lower(a)) if grouped else ("reciprocal", _lower(a))
        case _Binary(op="+", left=_Number(value=1), right=_Abs(operand=a)) if _is_number(numerator, 1):
            return ("inv_1p_abs", _lower(a))
        case _Binary(op="+", left=_Number(value=1), right=_Abs(operand=a)) if (
            a == numerator and a.grouped == numerator.grouped
        ):
            # written alike: "-1/(1 + |(-1)|)" is neg(inv_1p_abs(-1)), not softsign(-1)
            return ("softsign", _lower(a))
    return None


def _binary_form(numerator: _Expr, denominator: _Expr) -> _Term | None:
    match denominator:
        case _Binary(op="+", left=b, right=_Symbol(name="eps")):
            return ("div", _lower(numerator), _lower(b))
        case _Call(name="sqrt", args=(_Binary(op="+", left=_Number(value=1), right=b_squared),)) if (
            unsquared := _without_final_square(b_squared)
        ) is not None:
            return ("div_sqrt1p_sq", _lower(numerator), _lower(unsquared))
    return None


def _lower_juxtaposition(product: _Binary) -> _Term:
    squares, right = _strip_squares(product.right)
    match product.left, right:
        case (
            _Call(name="sigmoid", args=(a,)),
            _Binary(op="-", left=_Number(value=1), right=_Call(name="sigmoid", args=(b,))),
        ) if a == b:
            return _squared(("sigmoid_derivative", _lower(a)), squares)
    return ("mul", _lower(product.left), _lower(product.right))


def _nodes(term: _Term) -> list[tuple[str, str] | tuple[str, str, str]]:
    """``(operator, *inputs)`` of each distinct operator term, inputs first, ``term`` last."""
    if isinstance(term, str):
        term = ("mul", term, "1")  # a bare leaf, times 1: exactly its values
    nodes: list[tuple[str, str] | tuple[str, str, str]] = []
    refs: dict[_Term, str] = {}

    def place(term: _Term) -> str:
        if isinstance(term, str):
            return term
        if term not in refs:
            inputs = [place(child) for child in term[1:]]
            refs[term] = node_name(len(nodes))
            nodes.append((term[0], *inputs))
        return refs[term]

    place(term)
    return nodes
