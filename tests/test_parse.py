"""Reading loss formulas back into genomes: printed formulas, friendly forms and errors."""

import re
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from optiloss.genome import (
    FormulaError,
    Genome,
    Node,
    gene_names,
    input_choices,
    parse_formula,
    screen,
    zoo,
)
from optiloss.genome.operators import OPERATOR_NAMES


def _probe_inputs(seed: int = 7, rows: int = 64, classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 logits (a few rows near saturation) and targets: half mixup-style soft, half one-hot."""
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(rows, classes, generator=generator, dtype=torch.float64)
    logits[:4] *= 6
    labels = torch.randint(0, classes, (rows,), generator=generator)
    y = F.one_hot(labels, classes).double()
    soft = slice(0, rows // 2)
    lam = torch.rand(rows // 2, 1, generator=generator, dtype=torch.float64)
    y[soft] = (1 - lam) * y[soft] + lam * F.one_hot(torch.roll(labels, 1)[soft], classes).double()
    return logits, y


_LOGITS, _Y = _probe_inputs()


def _loss_and_gradient(genome: Genome) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample losses and their gradients with respect to the logits (each row its own sample)."""
    logits = _LOGITS.clone().requires_grad_(True)
    per_sample = genome.per_sample(_Y, torch.softmax(logits, dim=1))
    (gradient,) = torch.autograd.grad(per_sample.sum(), logits)
    return per_sample.detach(), gradient


def _assert_same_loss(parsed: Genome, original: Genome, context: str = "") -> None:
    for got, expected in zip(_loss_and_gradient(parsed), _loss_and_gradient(original)):
        assert torch.equal(torch.isfinite(got), torch.isfinite(expected)), context
        finite = torch.isfinite(got) & torch.isfinite(expected)
        # the same operators on the same inputs: float64 agrees up to rounding
        assert torch.allclose(got[finite], expected[finite], rtol=1e-9, atol=1e-12), context


def _oriented(genome: Genome) -> Genome:
    result = screen(genome)
    assert result.accepted, result.reason
    return result.genome


def _parse_oriented(genome: Genome) -> Genome:
    """Parse ``genome.formula``; a negated orientation prints "-(...)", which takes one more node."""
    return parse_formula(genome.formula, len(genome.nodes) + 1)


def _node_text(genome: Genome, ref: str) -> str:
    if ref.startswith("n"):
        return Genome(genome.nodes[: int(ref[1:]) + 1]).structure
    return "(-1)" if ref == "-1" else ref


def _squares_a_negation(genome: Genome) -> bool:
    """An active square reads a node printed "-a": "-a^2" also prints neg(square(a)); see genome.parse."""
    return any(
        genome.nodes[k].operator == "square" and _node_text(genome, genome.nodes[k].inputs[0]).startswith("-")
        for k in genome.active_nodes
    )


def _negates_one(genome: Genome) -> bool:
    """An active neg(1), printed "-1", which reads back as the leaf -1, printed "(-1)"."""
    return any(
        genome.nodes[k].operator == "neg" and genome.nodes[k].inputs[0] == "1" for k in genome.active_nodes
    )


def _accepted_random_genomes(count: int, seed: int, n_nodes: int = 5) -> list[Genome]:
    """``count`` random genomes that screen() accepts, oriented."""
    rng = np.random.default_rng(seed)
    accepted = []
    while len(accepted) < count:
        params = {}
        for index in range(n_nodes):
            choices = input_choices(index)
            op_name, in1_name, in2_name = gene_names(index)
            params[op_name] = OPERATOR_NAMES[rng.integers(len(OPERATOR_NAMES))]
            params[in1_name] = choices[rng.integers(len(choices))]
            params[in2_name] = choices[rng.integers(len(choices))]
        result = screen(Genome.from_params(params, n_nodes))
        if result.accepted:
            accepted.append(result.genome)
    return accepted


# ------------------------------------------------------------------------------------------- the zoo
@pytest.mark.parametrize("name", sorted(zoo()))
def test_every_zoo_formula_reads_back_with_the_same_losses_and_gradients(name):
    oriented = _oriented(zoo()[name])
    parsed = _parse_oriented(oriented)
    assert not parsed.negated
    _assert_same_loss(parsed, oriented, oriented.formula)


@pytest.mark.parametrize("name", sorted(zoo()))
def test_every_zoo_formula_round_trips_its_structure_and_orientation(name):
    oriented = _oriented(zoo()[name])
    parsed = _parse_oriented(oriented)
    # the orientation's "-(...)" becomes a neg node around the structure
    assert parsed.structure == (f"-{oriented.structure}" if oriented.negated else oriented.structure)
    rescreened = screen(parsed)
    assert rescreened.accepted and not rescreened.genome.negated
    assert rescreened.fingerprint == screen(zoo()[name]).fingerprint
    # the structure alone reads back as the unoriented genome, which the screen orients the same way
    again = screen(parse_formula(oriented.structure))
    assert again.genome.formula == oriented.formula and again.genome.negated == oriented.negated


def test_equal_subexpressions_share_a_node_and_nodes_are_laid_out_like_from_nodes():
    genome = parse_formula("-(y * ln(|p| + eps))")
    assert genome == zoo()["cross_entropy"]
    assert genome.nodes[-1].operator == "neg" and len(genome.active_nodes) == 3
    assert [node.operator for node in genome.nodes] == ["ln", "mul", "add", "add", "neg"]
    shared = parse_formula("(ln(|p| + eps) * (y - ln(|p| + eps)))", 3)
    assert [node.operator for node in shared.nodes] == ["ln", "sub", "mul"]
    assert shared.nodes[2].inputs == ("n0", "n1")
    assert parse_formula("sigmoid(p)(1 - sigmoid(p))", 1).nodes == (Node("sigmoid_derivative", ("p", "p")),)


def test_a_bare_leaf_is_one_node_times_one():
    for leaf, written in (("p", "p"), ("y", "y"), ("1", "1"), ("-1", "-1"), ("-1", "(-1)")):
        genome = parse_formula(written, 1)
        assert genome.nodes == (Node("mul", (leaf, "1")),)
    assert torch.equal(parse_formula("p").elementwise(_Y, _LOGITS), _LOGITS)


# ----------------------------------------------------------------------------------- random genomes
def _check_random_genomes(count: int, seed: int) -> int:
    """Assert the contract on ``count`` accepted random genomes; returns how many square a negation."""
    ambiguous = 0
    for genome in _accepted_random_genomes(count, seed):
        parsed = _parse_oriented(genome)
        assert not parsed.negated
        structure = parse_formula(genome.structure)
        if not _negates_one(genome):
            assert structure.structure == genome.structure
        if _squares_a_negation(genome):
            ambiguous += 1  # "-a^2" reads as -(a^2): another loss, by design
            continue
        _assert_same_loss(parsed, genome, genome.formula)
    return ambiguous


def test_random_accepted_genomes_read_back_with_the_same_losses_and_gradients():
    _check_random_genomes(500, seed=1)


@pytest.mark.slow
def test_ten_thousand_random_accepted_genomes_read_back_with_the_same_losses_and_gradients():
    start = time.perf_counter()
    ambiguous = _check_random_genomes(10_000, seed=2)
    print(
        f"10,000 accepted genomes in {time.perf_counter() - start:.0f} s, "
        f"{ambiguous} of them square a negation"
    )
    assert ambiguous <= 100  # the exclusion above stays a rare corner (3 with this seed)


# -------------------------------------------------------------------------------- printed forms
def _all_two_node_genomes():
    for inner in OPERATOR_NAMES:
        for outer in OPERATOR_NAMES:
            for inputs in (("n0", "p"), ("y", "n0"), ("n0", "n0")):
                yield Genome.from_nodes((inner, "y", "p"), (outer, *inputs), n_nodes=2)


def test_every_operator_around_every_operator_prints_a_formula_that_reads_back():
    generator = torch.Generator().manual_seed(3)
    y, p = (torch.randn(8, 5, generator=generator, dtype=torch.float64) for _ in range(2))
    for genome in _all_two_node_genomes():
        parsed = parse_formula(genome.structure, 2)
        assert parsed.structure == genome.structure
        if _squares_a_negation(genome):
            continue
        got, expected = parsed.elementwise(y, p), genome.elementwise(y, p)
        assert torch.equal(torch.isnan(got), torch.isnan(expected)), genome.structure
        assert torch.allclose(got, expected, rtol=1e-12, atol=0, equal_nan=True), genome.structure


@pytest.mark.parametrize(
    "nodes, text",
    [
        # the printer appends "^2" to forms that the usual precedence would split
        ([("softsign", "p"), ("square", "n0")], "p/(1 + |p|)^2"),
        ([("reciprocal", "p"), ("square", "n0")], "1/(p + eps)^2"),
        ([("inv_1p_abs", "p"), ("square", "n0")], "1/(1 + |p|)^2"),
        ([("sigmoid_derivative", "p"), ("square", "n0")], "sigmoid(p)(1 - sigmoid(p))^2"),
        ([("neg", "p"), ("div_sqrt1p_sq", "y", "n0")], "(y / sqrt(1 + -p^2))"),
        ([("softsign", "p"), ("div_sqrt1p_sq", "y", "n0")], "(y / sqrt(1 + p/(1 + |p|)^2))"),
        # "-" prints without parentheses around the whole form
        ([("softsign", "p"), ("neg", "n0")], "-p/(1 + |p|)"),
        ([("neg", "p"), ("softsign", "n0")], "-p/(1 + |-p|)"),
        ([("reciprocal", "p"), ("neg", "n0")], "-1/(p + eps)"),
        ([("sigmoid_derivative", "p"), ("neg", "n0")], "-sigmoid(p)(1 - sigmoid(p))"),
        # "/" binds tighter than "*"
        ([("softsign", "p"), ("mul", "y", "n0")], "(y * p/(1 + |p|))"),
        ([("reciprocal", "p"), ("mul", "y", "n0")], "(y * 1/(p + eps))"),
        ([("div", "1", "p")], "(1 / (p + eps))"),
        ([("abs", "p"), ("ln", "n0")], "ln(||p|| + eps)"),
    ],
)
def test_printed_forms_read_as_the_printer_means_them(nodes, text):
    genome = Genome.from_nodes(*nodes, n_nodes=len(nodes))
    assert genome.structure == text
    assert parse_formula(text, len(nodes)) == genome


def test_a_square_of_a_negation_prints_like_a_negated_square_and_reads_as_one():
    negated_square = Genome.from_nodes(("square", "p"), ("neg", "n0"), n_nodes=2)
    square_of_negation = Genome.from_nodes(("neg", "p"), ("square", "n0"), n_nodes=2)
    assert negated_square.structure == square_of_negation.structure == "-p^2"
    assert parse_formula("-p^2", 2) == negated_square


def test_equal_valued_spellings_read_as_one_operator():
    assert parse_formula("(1 - tanh(p)^2)", 1).nodes[0].operator == "tanh_derivative"
    assert parse_formula("(y * -1)", 1).nodes == (Node("mul", ("y", "-1")),)
    assert parse_formula("1/(1 + |1|)", 1).nodes == (Node("inv_1p_abs", ("1", "1")),)


# ------------------------------------------------------------------------------------- friendly forms
def test_friendly_cross_entropy_and_mse_equal_the_zoo():
    _assert_same_loss(parse_formula("-y*ln(p)"), _oriented(zoo()["cross_entropy"]))
    _assert_same_loss(parse_formula("(y - p)^2"), _oriented(zoo()["mse"]))
    assert parse_formula("(y - p)^2") == zoo()["mse"]


@pytest.mark.parametrize(
    "text, nodes",
    [
        ("ln(p)", [("ln", "p")]),
        ("log(p)", [("ln", "p")]),
        ("ln(|p|)", [("ln", "p")]),
        ("log10(p)", [("log10", "p")]),
        ("sqrt(p)", [("sqrt_abs", "p")]),
        ("sqrt(|p|)", [("sqrt_abs", "p")]),
        ("sqrt_abs(|p|)", [("abs", "p"), ("sqrt_abs", "n0")]),
        ("1/p", [("reciprocal", "p")]),
        ("y / p", [("div", "y", "p")]),
        ("y*p", [("mul", "y", "p")]),
        ("y(1 - p)", [("sub", "1", "p"), ("mul", "y", "n0")]),
        ("(y - p)**2", [("sub", "y", "p"), ("square", "n0")]),
        ("square(p)", [("square", "p")]),
        ("bessel_i0(p)", [("bessel_i0", "p")]),
        ("I0(p)", [("bessel_i0", "p")]),
        ("I1e(p)", [("bessel_i1e", "p")]),
        ("softsign(y)", [("softsign", "y")]),
        ("div(y, p)", [("div", "y", "p")]),
        ("div_sqrt1p_sq(y, p)", [("div_sqrt1p_sq", "y", "p")]),
        ("max(0, p)", [("relu", "p")]),
        ("min(p, 0)", [("min0", "p")]),
        ("max(y, p)", [("max", "y", "p")]),
        ("-1 * p", [("mul", "-1", "p")]),
        ("  y\t*\n p ", [("mul", "y", "p")]),
    ],
)
def test_friendly_forms(text, nodes):
    assert parse_formula(text, len(nodes)) == Genome.from_nodes(*nodes, n_nodes=len(nodes))


# --------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "text, message",
    [
        ("y * q", 'column 5: unknown name "q"; a loss reads y, p and numbers'),
        ("ln(|p|", 'column 7: expected ")" after the arguments of ln, got end of formula'),
        ("((y - p)^2", 'column 11: expected ")" to close the "(" at column 1, got end of formula'),
        ("|y - p", 'column 7: expected "|" to close the "|" at column 1, got end of formula'),
        ("(y - p))^2", 'column 8: expected end of formula, got ")"'),
        ("y * p p", 'column 7: expected end of formula, got name "p"'),
        ("ln(p, y)", "column 1: ln takes 1 argument, got 2"),
        ("y * div(p)", "column 5: div takes 2 arguments, got 1"),
        ("max(p)", "column 1: max takes 2 arguments, got 1"),
        ("p^3", 'column 3: expected 2 after "^" (a square is the only power), got number 3'),
        ("ln(p + eps)", "column 8: eps may appear only in ln(|a| + eps), log10(|a| + eps), 1/(a + eps)"),
        ("foo(p) * y", 'column 1: unknown function "foo"; the functions are abs, add,'),
        ("exp * y", 'column 5: expected "(" after exp, got "*"'),
        ("y + ", 'column 5: expected y, p, 1, a function, "(" or "|", got end of formula'),
        ("", 'column 1: expected y, p, 1, a function, "(" or "|", got end of formula'),
        ("y & p", 'column 3: unexpected character "&"'),
    ],
)
def test_errors_name_the_column_and_what_was_expected(text, message):
    with pytest.raises(FormulaError) as error:
        parse_formula(text)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)
    assert error.value.column == int(message.split(":")[0].removeprefix("column "))


def test_a_formula_needing_more_nodes_says_how_many():
    text = "exp(exp(exp(exp(exp(exp(y * p))))))"
    with pytest.raises(
        FormulaError,
        match=r"^the formula needs 7 nodes, more than the genome's 5: "
        r"nodes must be at least 7$",
    ) as error:
        parse_formula(text)
    assert error.value.column is None
    assert len(parse_formula(text, 7).active_nodes) == 7
    focal = _oriented(zoo()["focal"])
    with pytest.raises(FormulaError, match=r"needs 6 nodes.*at least 6 \(its leading \"-\(\.\.\.\)\""):
        parse_formula(focal.formula, 5)


def test_formula_error_is_a_value_error_and_nothing_is_evaluated():
    assert issubclass(FormulaError, ValueError)
    with pytest.raises(FormulaError, match='column 1: unknown function "__import__"'):
        parse_formula("__import__('os').system('true')")
    with pytest.raises(FormulaError, match="column 2: unexpected character"):
        parse_formula("p.real")
    with pytest.raises(
        FormulaError, match="column 29: the formula nests brackets.* more than 28 levels deep"
    ):
        parse_formula("(" * 2000 + "p" + ")" * 2000)


@pytest.mark.parametrize(
    "text, limit",
    [
        (
            " + ".join(["y * ln(|p| + eps)"] * 700),
            "is 704 operations deep (13997 characters), deeper than the 28",
        ),
        (
            "-" * 3000 + "p",
            "nests brackets, bars, functions and signs more than 28 levels deep (3001 characters)",
        ),
        ("ln(" * 500 + "p" + ")" * 500, "more than 28 levels deep (2001 characters)"),
    ],
)
def test_a_long_or_deep_formula_names_the_limit_it_passed_and_the_node_budget(text, limit):
    with pytest.raises(FormulaError, match=re.escape(limit)) as error:
        parse_formula(text, 5)
    assert "the genome's 5 nodes" in str(error.value)


def test_the_nesting_limit_stays_below_pythons_for_the_largest_genome():
    # 32 nodes (the largest the settings allow) would allow 136 levels: the parser stops at 64 first
    with pytest.raises(FormulaError, match="more than 64 levels deep"):
        parse_formula("(" * 5000 + "p" + ")" * 5000, 32)
    chain = "p"
    for _ in range(32):  # a chain of 32 nodes, each written four levels deep, still reads
        chain = f"({chain} / sqrt(1 + y^2))"
    assert len(parse_formula(chain, 32).active_nodes) == 32


@pytest.mark.parametrize("text", ["y * 2", "0.5 * y", "(y - 0)", "-2 * p"])
def test_numbers_are_constants_and_a_genome_without_constants_refuses_them(text):
    assert len(parse_formula(text).constants) == 1
    with pytest.raises(FormulaError, match="more than the genome's 0 constant"):
        parse_formula(text, n_constants=0)
