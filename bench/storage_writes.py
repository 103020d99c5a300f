"""The storage time of a trained trial's writes: 30 user attributes and its values, on SQLite.

    python bench/storage_writes.py [--trials 20] [--storage URL]

Opens the storage as a search does (:func:`optiloss.storage.open_storage`) and prints the median
milliseconds per trial over ``--trials`` trials. Run it from two checkouts to compare them.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import optuna

from optiloss.storage import open_storage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--storage", default=None, help="default: a new SQLite file in a temporary folder")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        storage = open_storage(args.storage or f"sqlite:///{Path(folder) / 'writes.db'}")
        study = optuna.create_study(storage=storage, directions=["maximize", "maximize"])
        per_trial = []
        for _ in range(args.trials):
            trial = study.ask()
            start = time.perf_counter()
            for key in range(30):
                trial.set_user_attr(f"attr{key}", key)
            study.tell(trial, (0.5, 0.5))
            per_trial.append(time.perf_counter() - start)
    median = statistics.median(per_trial) * 1000
    print(f"30 user attrs and the values of a trial: median {median:.1f} ms over {args.trials} trials")


if __name__ == "__main__":
    main()
