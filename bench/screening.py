"""P3: median milliseconds to screen a genome, and the share rejected before any training.

    python bench/screening.py [--genomes 10000] [--seed 0]

Genomes are drawn uniformly gene by gene (operators and inputs), as NSGA-II's
first generation is. The baseline in the same run is decoding alone, so the
last line also gives screening time as a ratio to decoding time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter

import numpy as np

from optiloss.genome import DEFAULT_NODES, Genome, gene_names, input_choices, screen
from optiloss.genome.operators import OPERATOR_NAMES


def random_params(rng: np.random.Generator, nodes: int = DEFAULT_NODES) -> dict[str, str]:
    params = {}
    for index in range(nodes):
        op, in1, in2 = gene_names(index)
        choices = input_choices(index)
        params[op] = OPERATOR_NAMES[rng.integers(len(OPERATOR_NAMES))]
        params[in1], params[in2] = (choices[k] for k in rng.integers(len(choices), size=2))
    return params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genomes", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    decode_ms, screen_ms, reasons = [], [], Counter()
    for _ in range(args.genomes):
        params = random_params(rng)
        started = time.perf_counter()
        genome = Genome.from_params(params, DEFAULT_NODES)
        decoded = time.perf_counter()
        result = screen(genome)
        finished = time.perf_counter()
        decode_ms.append(1000 * (decoded - started))
        screen_ms.append(1000 * (finished - decoded))
        reasons[(result.reason or "accepted").split(":")[0].split(" (")[0]] += 1
    rejected_share = 100 * (args.genomes - reasons["accepted"]) / args.genomes
    for reason, count in reasons.most_common():
        print(f"{count:6d}  {reason}")
    print(
        f"90th percentile {np.percentile(screen_ms, 90):.3f} ms, max {max(screen_ms):.1f} ms; "
        f"decoding median {statistics.median(decode_ms):.4f} ms"
    )
    print(
        f"screening: median {statistics.median(screen_ms):.3f} ms per genome, "
        f"{rejected_share:.1f} % rejected before training "
        f"(ratio to decoding {statistics.median(screen_ms) / statistics.median(decode_ms):.1f})"
    )


if __name__ == "__main__":
    main()
