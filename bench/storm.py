"""A storm the project owns: a multi-worker search on the local PostgreSQL under random kill -9 and a
server restart, then the checks that nothing was lost or trained twice.

    python bench/storm.py [--workers 3] [--trials 40] [--kills 10] [--config studies/digits-demo.toml]
                          [--set KEY=VALUE ...]

Needs the server of ``scripts/postgres.sh`` (``make postgres``); works in a
fresh database of its own. ``optiloss search --workers N`` runs in a process
group; at random moments (3 to 15 s apart) the storm kills one worker (``kill
-9`` of the pid a RUNNING trial records) or the whole group (then starts the
same command again), and once, half-way, stops the server for 5 s. After the
last kill the command runs to its end. The last line gives: COMPLETE trials
against the budget, RUNNING and WAITING trials left, genomes trained twice
(by fingerprint), worker restarts and database outages the search reported,
and tracebacks printed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from pathlib import Path

import optuna
import sqlalchemy
from optuna.trial import TrialState

from _shared import add_overrides_option, config_overrides, report_figures

ROOT = Path(__file__).resolve().parents[1]
POSTGRES = ["bash", str(ROOT / "scripts" / "postgres.sh")]


def fresh_database() -> str:
    admin = subprocess.run([*POSTGRES, "url"], capture_output=True, text=True, check=True).stdout.strip()
    name = f"storm_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return admin.rsplit("/", 1)[0] + f"/{name}"


def start(command: list[str], log) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def running_workers(url: str) -> list[int]:
    try:
        study = optuna.load_study(study_name="digits-base", storage=url)
    except Exception:  # not created yet, or the server is down
        return []
    return [
        t.user_attrs["worker"]["pid"]
        for t in study.get_trials(states=(TrialState.RUNNING,))
        if "worker" in t.user_attrs
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--config", default="studies/digits-demo.toml")
    parser.add_argument("--seed", type=int, default=0)
    add_overrides_option(parser)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rng = random.Random(args.seed)
    url = fresh_database()
    # the study file with the --set keys, written beside the log
    values = {**tomllib.loads(Path(args.config).read_text()), **config_overrides(args)}
    config = Path(f"/tmp/{url.rsplit('/', 1)[1]}.toml")
    config.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items()))
    command = [
        sys.executable,
        "-m",
        "optiloss",
        "search",
        str(config),
        "--storage",
        url,
        "--workers",
        str(args.workers),
        "--n-trials",
        str(args.trials),
        "--device",
        "cpu",
        "--no-progress",
    ]
    log_path = Path(f"/tmp/{url.rsplit('/', 1)[1]}.log")
    with open(log_path, "w") as log:
        search = start(command, log)
        for kill in range(args.kills):
            time.sleep(rng.uniform(3, 15))
            if kill == args.kills // 2:
                subprocess.run([*POSTGRES, "stop"], capture_output=True, check=True)
                time.sleep(5)
                subprocess.run([*POSTGRES, "start"], capture_output=True, check=True)
                continue
            workers = running_workers(url)
            if search.poll() is not None or not workers or rng.random() < 0.3:
                if search.poll() is None:
                    os.killpg(search.pid, signal.SIGKILL)
                search.wait()
                search = start(command, log)
            else:
                os.kill(rng.choice(workers), signal.SIGKILL)
        search.wait()
        final = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    output = log_path.read_text()
    study = optuna.load_study(study_name="digits-base", storage=url)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    left = study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    fingerprints = [t.user_attrs.get("fingerprint") for t in complete]
    figures = {
        "complete": len(complete),
        "budget": args.trials,
        "left_running_or_waiting": len(left),
        "trained_twice": len(fingerprints) - len(set(fingerprints)),
        "worker_restarts": output.count("started a new worker in its place"),
        "outages": output.count("unreachable; retrying"),
        "tracebacks": output.count("Traceback"),
        "last_exit": final.returncode,
    }
    print(", ".join(f"{key} {value}" for key, value in figures.items()) + f" (log {log_path})")
    report_figures(**figures)


if __name__ == "__main__":
    main()
