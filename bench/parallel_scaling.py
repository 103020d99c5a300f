"""Complete trials per minute with 1 and 2 workers on one PostgreSQL study, and storage time per trial.

    python bench/parallel_scaling.py [--url postgresql://…] [--trials 16]

Needs a PostgreSQL server (``make postgres`` starts one; the URL defaults to
``scripts/postgres.sh url``). Each run gets a fresh database. The search is the
digits demo config with a fixed budget of COMPLETE trials; rejected genomes are
part of the cost, as in a real search. Storage time per trial is the wall time
not spent screening, training or evaluating, divided by all trials. The last
line gives the ratio (2 workers / 1 worker) and the storage time per trial.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import sqlalchemy
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]


def fresh_database(admin_url: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:10]}"
    engine = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def run(url: str, workers: int, trials: int, config: str) -> dict:
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "optiloss",
            "search",
            config,
            "--storage",
            url,
            "--n-trials",
            str(trials),
            "--workers",
            str(workers),
            "--no-progress",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - started
    study = optuna.load_study(study_name="digits-base", storage=url)
    everything = study.get_trials(deepcopy=False)
    complete = [t for t in everything if t.state == TrialState.COMPLETE]
    busy = sum(
        t.user_attrs.get("training_seconds", 0) + t.user_attrs.get("evaluation_seconds", 0)
        for t in everything
    )  # screening is microseconds (bench/screening.py)
    per_trial_wall = [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in everything
        if t.datetime_complete and t.datetime_start
    ]
    return {
        "wall": wall,
        "complete": len(complete),
        "trials": len(everything),
        "per_minute": 60 * len(complete) / wall,
        "storage_ms": 1000 * max(0.0, workers * wall - busy) / len(everything),
        "median_trial_s": statistics.median(per_trial_wall),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--config", default=str(ROOT / "studies" / "digits-demo.toml"))
    args = parser.parse_args()
    admin = (
        args.url
        or subprocess.run(
            ["bash", str(ROOT / "scripts" / "postgres.sh"), "url"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    results = {}
    for workers in (1, 2):
        results[workers] = run(fresh_database(admin), workers, args.trials, args.config)
        r = results[workers]
        print(
            f"{workers} worker(s): {r['complete']} complete of {r['trials']} trials in {r['wall']:.1f} s = "
            f"{r['per_minute']:.1f} complete/min, storage+sampler {r['storage_ms']:.0f} ms per trial"
        )
    ratio = results[2]["per_minute"] / results[1]["per_minute"]
    print(
        f"2 workers / 1 worker: ratio {ratio:.2f} complete trials per minute; storage+sampler "
        f"{results[1]['storage_ms']:.0f} ms (1 worker) and "
        f"{results[2]['storage_ms']:.0f} ms (2 workers) per trial"
    )


if __name__ == "__main__":
    main()
