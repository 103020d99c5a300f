"""The loss genome: a fixed-length Cartesian-GP graph over ``y`` and ``p``.

A genome has ``n_nodes`` nodes. Node ``k`` holds an operator and two input
references; an input is a leaf (``y``: target distribution, ``p``: softmax
probabilities, the constants ``1`` and ``-1``, and the genome's real-valued
constants ``c0`` … ``c{m-1}``) or an earlier node ``n0`` … ``n{k-1}``. The last
node is the output. Unary operators ignore their second input, which stays in
the genome so that every gene exists in every trial.

A genome with ``m`` constants carries their values; each is a float gene of the
trial (``const0`` …) in :data:`CONSTANT_RANGE`, so NSGA-II's crossover and
mutation act on it. A genome without constants has exactly the genes, the
printed form and the structure hash of the genomes of earlier versions.

The loss of a batch is the output node's (B, C) tensor summed over classes and
averaged over the batch, times -1 when the genome is ``negated`` (set by the
screen so that every loss falls as the true-class probability rises).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import torch

from optiloss.genome.operators import OPERATOR_NAMES, OPERATORS

if TYPE_CHECKING:
    from optuna.trial import BaseTrial

LEAVES: tuple[str, ...] = ("y", "p", "1", "-1")
DEFAULT_NODES = 5
CONSTANT_RANGE = (-5.0, 5.0)
"""Range of a constant gene, linear: it covers label-smoothing strengths (0.01-0.3, as the weights
1 - e and e / C), focal gammas (0.5-5) and Poly epsilons (-1 to 3)."""
CONSTANT_DIGITS = 4
"""Constants print with four significant digits (the structure and its hash use the printed form)."""


def constant_name(index: int) -> str:
    """The leaf of constant ``index``: ``c0``, ``c1`` …"""
    return f"c{index}"


def constant_gene(index: int) -> str:
    """The Optuna parameter holding constant ``index``'s value: ``const0`` …"""
    return f"const{index}"


def format_constant(value: float) -> str:
    """A constant as formulas print it: four significant digits, negative ones in parentheses."""
    text = f"{value:.{CONSTANT_DIGITS}g}"
    return f"({text})" if value < 0 else text


def node_name(index: int) -> str:
    return f"n{index}"


def input_choices(index: int, n_constants: int = 0) -> tuple[str, ...]:
    """The references node ``index`` may read: every leaf, the ``n_constants`` constants and every
    earlier node."""
    constants = tuple(constant_name(k) for k in range(n_constants))
    return LEAVES + constants + tuple(node_name(k) for k in range(index))


def gene_names(index: int) -> tuple[str, str, str]:
    """Optuna parameter names of node ``index``: operator, first and second input."""
    return f"node{index}_op", f"node{index}_in1", f"node{index}_in2"


@dataclass(frozen=True)
class Node:
    operator: str
    inputs: tuple[str, str]


@dataclass(frozen=True)
class Genome:
    """An immutable loss program. Build it with :meth:`suggest` or :meth:`from_params`."""

    nodes: tuple[Node, ...]
    negated: bool = False
    constants: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if len(self.nodes) < 1:
            raise ValueError("a genome needs at least one node")
        for index, node in enumerate(self.nodes):
            if node.operator not in OPERATORS:
                raise ValueError(f"node {index}: unknown operator {node.operator!r}")
            allowed = input_choices(index, len(self.constants))
            for ref in node.inputs:
                if ref not in allowed:
                    raise ValueError(f"node {index}: input {ref!r} not in {allowed}")

    # ------------------------------------------------------------------ building
    @classmethod
    def suggest(cls, trial: BaseTrial, n_nodes: int = DEFAULT_NODES, n_constants: int = 0) -> Genome:
        """Suggest every gene of an ``n_nodes`` genome with ``n_constants`` constants from a trial.

        Every structural gene is a categorical parameter with a fixed name and fixed
        choices, active or not, so NSGA-II can inherit each of them; each constant
        is a float parameter in :data:`CONSTANT_RANGE`.
        """
        constants = tuple(trial.suggest_float(constant_gene(k), *CONSTANT_RANGE) for k in range(n_constants))
        nodes = []
        for index in range(n_nodes):
            op_name, in1_name, in2_name = gene_names(index)
            choices = input_choices(index, n_constants)
            operator = trial.suggest_categorical(op_name, OPERATOR_NAMES)
            in1 = trial.suggest_categorical(in1_name, choices)
            in2 = trial.suggest_categorical(in2_name, choices)
            nodes.append(Node(operator, (in1, in2)))
        return cls(tuple(nodes), constants=constants)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], n_nodes: int | None = None) -> Genome:
        """Decode trial parameters (as written by :meth:`suggest`) into a genome; its constants are
        the ``const<k>`` parameters present (none in studies made before constants)."""
        if n_nodes is None:
            n_nodes = sum(1 for name in params if name.endswith("_op"))
        n_constants = sum(1 for name in params if name.startswith("const"))
        try:
            constants = tuple(float(params[constant_gene(k)]) for k in range(n_constants))
        except KeyError as missing:
            raise ValueError(f"parameter {missing.args[0]} is missing") from None
        nodes = []
        for index in range(n_nodes):
            op_name, in1_name, in2_name = gene_names(index)
            try:
                nodes.append(Node(params[op_name], (params[in1_name], params[in2_name])))
            except KeyError as missing:
                raise ValueError(f"parameter {missing.args[0]} is missing") from None
        return cls(tuple(nodes), constants=constants)

    @classmethod
    def from_nodes(
        cls,
        *nodes: tuple[str, str] | tuple[str, str, str],
        n_nodes: int = DEFAULT_NODES,
        constants: tuple[float, ...] = (),
        n_constants: int | None = None,
    ) -> Genome:
        """Build a genome from ``(operator, in1[, in2])`` tuples; the last is the output.

        Hidden nodes are placed first, the output last; unused slots are filled
        with an inactive ``add(y, y)`` so the genome has ``n_nodes`` nodes.
        Inputs may name earlier tuples as ``n0``, ``n1`` … in the given order, and
        ``c0`` … the ``constants``, padded with zeros to ``n_constants`` (default: as many as given).
        """
        n_constants = len(constants) if n_constants is None else n_constants
        if len(constants) > n_constants:
            raise ValueError(f"{len(constants)} constants do not fit in {n_constants}")
        padded = tuple(float(value) for value in constants) + (0.0,) * (n_constants - len(constants))
        if len(nodes) > n_nodes:
            raise ValueError(f"{len(nodes)} nodes do not fit in {n_nodes}")
        filler = n_nodes - len(nodes)
        remap = {node_name(k): node_name(k if k < len(nodes) - 1 else k + filler) for k in range(len(nodes))}
        built: list[Node] = []
        for position, spec in enumerate(nodes):
            operator, *refs = spec
            refs = [remap.get(ref, ref) for ref in refs]
            in2 = refs[1] if len(refs) > 1 else refs[0]
            if position == len(nodes) - 1:
                built.extend(Node("add", ("y", "y")) for _ in range(filler))
            built.append(Node(operator, (refs[0], in2)))
        return cls(tuple(built), constants=padded)

    def to_params(self) -> dict[str, Any]:
        """The Optuna parameters that decode to this genome (orientation excluded)."""
        params: dict[str, Any] = {constant_gene(k): value for k, value in enumerate(self.constants)}
        for index, node in enumerate(self.nodes):
            op_name, in1_name, in2_name = gene_names(index)
            params[op_name] = node.operator
            params[in1_name], params[in2_name] = node.inputs
        return params

    def with_orientation(self, negated: bool) -> Genome:
        return Genome(self.nodes, negated, self.constants)

    def with_constants(self, constants: tuple[float, ...]) -> Genome:
        """The same program with other constant values (as many as it has)."""
        if len(constants) != len(self.constants):
            raise ValueError(f"the genome has {len(self.constants)} constants, got {len(constants)} values")
        return Genome(self.nodes, self.negated, tuple(float(value) for value in constants))

    @property
    def constants_used(self) -> tuple[int, ...]:
        """Indices of the constants the output depends on."""
        return tuple(k for k in range(len(self.constants)) if constant_name(k) in self.leaves_used)

    # ----------------------------------------------------------------- structure
    @cached_property
    def active_nodes(self) -> tuple[int, ...]:
        """Indices of the nodes the output depends on, in evaluation order."""
        active: set[int] = set()
        stack = [len(self.nodes) - 1]
        while stack:
            index = stack.pop()
            if index in active:
                continue
            active.add(index)
            for ref in self._used_inputs(index):
                if ref[0] == "n":
                    stack.append(int(ref[1:]))
        return tuple(sorted(active))

    @cached_property
    def leaves_used(self) -> frozenset[str]:
        return frozenset(
            ref for index in self.active_nodes for ref in self._used_inputs(index) if ref[0] != "n"
        )

    def _used_inputs(self, index: int) -> tuple[str, ...]:
        node = self.nodes[index]
        return node.inputs[: OPERATORS[node.operator].arity]

    # ---------------------------------------------------------------- evaluation
    def elementwise(self, y: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """The output node for targets ``y`` and probabilities ``p``, both (B, C)."""
        values: dict[str, torch.Tensor] = {
            "y": y,
            "p": p,
            "1": torch.ones((), dtype=p.dtype, device=p.device),
            "-1": torch.full((), -1.0, dtype=p.dtype, device=p.device),
        }
        for k, value in enumerate(self.constants):
            values[constant_name(k)] = torch.full((), value, dtype=p.dtype, device=p.device)
        for index in self.active_nodes:
            node = self.nodes[index]
            operator = OPERATORS[node.operator]
            args = [values[ref] for ref in node.inputs[: operator.arity]]
            values[node_name(index)] = operator.function(*args)
        out = values[node_name(len(self.nodes) - 1)]
        if self.negated:
            out = -out
        return torch.broadcast_to(out, p.shape)

    def per_sample(self, y: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """Loss of each sample, shape (B,)."""
        return self.elementwise(y, p).sum(dim=1)

    def __call__(self, y: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """Batch loss: sum over classes, mean over the batch."""
        return self.per_sample(y, p).mean()

    # ------------------------------------------------------------------ printing
    def _expression(self, field: str, leaf_form: Mapping[str, str]) -> str:
        cache: dict[str, str] = dict(leaf_form)
        for index in self.active_nodes:
            node = self.nodes[index]
            operator = OPERATORS[node.operator]
            a = cache[node.inputs[0]]
            b = cache[node.inputs[1]] if operator.arity == 2 else ""
            cache[node_name(index)] = getattr(operator, field).format(a=a, b=b)
        return cache[node_name(len(self.nodes) - 1)]

    def _constant_forms(self) -> dict[str, str]:
        return {constant_name(k): format_constant(value) for k, value in enumerate(self.constants)}

    @cached_property
    def structure(self) -> str:
        """The output's expression over the leaves, constants printed as numbers, orientation excluded."""
        return self._expression(
            "text", {"y": "y", "p": "p", "1": "1", "-1": "(-1)", **self._constant_forms()}
        )

    @property
    def formula(self) -> str:
        """Readable per-class formula; the loss is its sum over classes, mean over the batch."""
        return f"-({self.structure})" if self.negated else self.structure

    @property
    def latex(self) -> str:
        constants = {
            name: rf"\left({text[1:-1]}\right)" if text.startswith("(") else text
            for name, text in self._constant_forms().items()
        }
        body = self._expression(
            "latex", {"y": "y_c", "p": "p_c", "1": "1", "-1": r"\left(-1\right)", **constants}
        )
        sign = "-" if self.negated else ""
        return rf"\mathcal{{L}}(y, p) = {sign}\sum_{{c}} \left[{body}\right]"

    @property
    def structure_hash(self) -> str:
        """Stable hash of the active structure: equal for genomes that differ only in unused genes."""
        return hashlib.sha256(self.structure.encode()).hexdigest()[:16]

    def python_module_source(self, class_name: str = "EvolvedLoss") -> str:
        """A standalone module (importing only torch) with an ``nn.Module`` computing this loss from logits.

        ``forward(logits, target)`` takes ``target`` as class indices (B,) or a
        distribution (B, C); probabilities are the softmax of the logits.
        """
        function = self.python_source("_loss").split("\n", 3)[3]  # drop the import and blank lines
        return "\n".join(
            [
                f'"""A loss found by optiloss: L = sum_c [{self.formula}], averaged over the batch.',
                "",
                "Standalone: imports only torch.",
                '"""',
                "",
                "import torch",
                "from torch import nn",
                "",
                "",
                function.rstrip("\n"),
                "",
                "",
                f"class {class_name}(nn.Module):",
                f'    """L(y, p) = sum_c [{self.formula}], p = softmax(logits), averaged over the batch.',
                "",
                "    forward(logits, target): target holds class indices (B,)"
                " or a target distribution (B, C).",
                '    """',
                "",
                "    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:",
                "        p = torch.softmax(logits.float(), dim=1)",
                "        if target.dim() == 1:",
                "            y = nn.functional.one_hot(target.long(), logits.shape[1]).to(p.dtype)",
                "        else:",
                "            y = target.to(p.dtype)",
                "        return _loss(y, p)",
                "",
            ]
        )

    def python_source(self, function_name: str = "loss") -> str:
        """Source of a standalone function ``loss(y, p)`` that imports only torch."""
        lines = [
            "import torch",
            "",
            "",
            f"def {function_name}(y: torch.Tensor, p: torch.Tensor) -> torch.Tensor:",
            f'    """L = sum_c [{self.formula}], averaged over the batch.',
            "",
            "    y: target distribution (B, C); p: softmax probabilities (B, C).",
            '    """',
            "    eps = 1e-7",
            "    one = torch.ones((), dtype=p.dtype, device=p.device)",
            "    minus_one = -one",
        ]
        for k in self.constants_used:  # the full value, not the printed four digits
            lines.append(
                f"    {constant_name(k)} = torch.full((), {self.constants[k]!r}, "
                "dtype=p.dtype, device=p.device)"
            )
        leaf_form = {"y": "y", "p": "p", "1": "one", "-1": "minus_one"}
        for index in self.active_nodes:
            node = self.nodes[index]
            operator = OPERATORS[node.operator]
            refs = {name: leaf_form.get(ref, ref) for name, ref in zip("ab", node.inputs[: operator.arity])}
            lines.append(f"    {node_name(index)} = {operator.python.format(**refs)}")
        out = node_name(len(self.nodes) - 1)
        lines.append(f"    out = torch.broadcast_to({'-' if self.negated else ''}{out}, p.shape)")
        lines.append("    return out.sum(dim=1).mean()")
        return "\n".join(lines) + "\n"
