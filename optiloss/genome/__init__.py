"""Loss genomes: operators, decoding, screening and the zoo of known losses."""

from optiloss.genome.genome import DEFAULT_NODES, LEAVES, Genome, Node, gene_names, input_choices
from optiloss.genome.operators import BINARY_OPERATORS, EPS, OPERATORS, UNARY_OPERATORS
from optiloss.genome.parse import FormulaError, parse_formula
from optiloss.genome.screen import ScreenResult, screen
from optiloss.genome.zoo import BASELINE, BASELINE_DISPLAY, baseline_genome, display_name, zoo, zoo_names

__all__ = [
    "BASELINE",
    "BASELINE_DISPLAY",
    "BINARY_OPERATORS",
    "DEFAULT_NODES",
    "EPS",
    "FormulaError",
    "Genome",
    "LEAVES",
    "Node",
    "OPERATORS",
    "ScreenResult",
    "UNARY_OPERATORS",
    "baseline_genome",
    "display_name",
    "gene_names",
    "input_choices",
    "parse_formula",
    "screen",
    "zoo",
    "zoo_names",
]
