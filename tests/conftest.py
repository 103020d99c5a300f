import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``optiloss`` as a user would, in a subprocess, capturing its output."""
    environment = {**os.environ, **(env or {})}
    if "OPTILOSS_STORAGE" not in (env or {}):
        environment.pop("OPTILOSS_STORAGE", None)
    return subprocess.run([sys.executable, "-m", "optiloss", *args], cwd=cwd or ROOT, env=environment,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'studies.db'}"


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    """A study TOML small enough for a test: a few short trials on digits."""
    path = tmp_path / "tiny.toml"
    path.write_text(
        'dataset = "digits"\naugmentation = "base"\nn_trials = 6\npopulation_size = 5\n'
        "epochs = 2\nmodel_width = 8\nbatch_size = 128\nseed = 3\ndevice = \"cpu\"\n")
    return path
