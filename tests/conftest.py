import contextlib
import fcntl
import io
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run ``optiloss`` as a user would, in a subprocess, capturing its output."""
    environment = {**os.environ, **(env or {})}
    if "OPTILOSS_STORAGE" not in (env or {}):
        environment.pop("OPTILOSS_STORAGE", None)
    return subprocess.run(
        [sys.executable, "-m", "optiloss", *args],
        cwd=cwd or ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _default_sigint() -> None:
    # a background process of a non-interactive shell inherits SIGINT ignored: restore the default
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_cli(*args: str) -> subprocess.Popen:
    """Start ``optiloss`` in a subprocess that Ctrl-C (SIGINT) stops as in a terminal; its stdout
    unbuffered, so its lines can be read while it runs."""
    return subprocess.Popen(
        [sys.executable, "-m", "optiloss", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_default_sigint,
        env={**{k: v for k, v in os.environ.items() if k != "OPTILOSS_STORAGE"}, "PYTHONUNBUFFERED": "1"},
    )


def read_stderr_until(
    process: subprocess.Popen, marker: bytes | re.Pattern[bytes], timeout: float = 240.0
) -> bytes:
    """Stderr up to and including ``marker``, text or a pattern (a progress bar's name: the command is
    at work; its count: so much is done)."""
    seen, deadline = b"", time.monotonic() + timeout
    found = marker.search if isinstance(marker, re.Pattern) else lambda text: marker in text
    while not found(seen):
        ready, _, _ = select.select([process.stderr], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(process.stderr.fileno(), 4096) if ready else b""
        if not chunk:
            process.kill()
            pytest.fail(f"{marker!r} never appeared on stderr: {seen.decode(errors='replace')}")
        seen += chunk
    return seen


REQUIRE_ALL_VARIABLE = "OPTILOSS_TEST_REQUIRE_ALL"
"""Set by `make test` and CI: a test whose server or browser is missing fails instead of skipping."""


def missing_service(reason: str) -> None:
    """Skip the calling test for ``reason`` (the quick loop, `make check`), or fail it under `make test`."""
    if os.environ.get(REQUIRE_ALL_VARIABLE):
        pytest.fail(f"{reason}; {REQUIRE_ALL_VARIABLE} is set, so every test must run")
    pytest.skip(reason)


@dataclass
class CliResult:
    """What a command printed and returned, as :class:`subprocess.CompletedProcess` has it."""

    returncode: int
    stdout: str
    stderr: str


def run_main(*args: str, env: dict | None = None) -> CliResult:
    """Run ``optiloss`` in this process through ``cli.main()`` (for error paths and quick commands, where
    a new Python with torch would cost seconds), from the repository root with ``OPTILOSS_STORAGE``
    unset unless ``env`` sets it."""
    from optiloss import cli

    stdout, stderr = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.pop("OPTILOSS_STORAGE", None)
    os.environ.update(env or {})
    try:
        with contextlib.chdir(ROOT), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = cli.main(list(args))
            except SystemExit as exit_:  # argparse's usage errors and --help
                code = exit_.code if isinstance(exit_.code, int) else 2
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return CliResult(code, stdout.getvalue(), stderr.getvalue())


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # two workers on two cores: each torch on one thread, or their spinning threads slow both 5-10x
        import torch

        torch.set_num_threads(1)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'studies.db'}"


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    """A study TOML small enough for a test: a few short trials on digits."""
    path = tmp_path / "tiny.toml"
    path.write_text(
        'dataset = "digits"\naugmentation = "base"\nn_trials = 6\npopulation_size = 6\n'
        'epochs = 2\nmodel_width = 8\nbatch_size = 128\nseed = 3\ndevice = "cpu"\nbaseline_seeds = 0\n'
        "constants = 0\n"  # the six-loss zoo the CLI tests name; tests/test_constants.py covers constants
        f'checkpoint_dir = "{tmp_path / "checkpoints"}"\nartifact_dir = "{tmp_path / "artifacts"}"\n'
    )
    return path


CIFAR10_SAMPLE = ROOT / "tests" / "data" / "cifar10-sample"
"""800 real CIFAR-10 JPEGs committed with the tests (60 train, 20 test per class); see its README."""
CIFAR10_ARCHIVE_VARIABLE = "OPTILOSS_TEST_CIFAR10_ARCHIVE"
"""Names the full CIFAR-10 JPEG archive (cifar10-jpeg.tar.xz) for the tests that need all 60,000 images."""


@pytest.fixture(scope="session")
def cifar10_sample() -> Path:
    """The committed CIFAR-10 sample: ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``."""
    return CIFAR10_SAMPLE


@pytest.fixture(scope="session")
def cifar10_folder(tmp_path_factory) -> Path:
    """The full real CIFAR-10 (JPEG image folders, 50,000 train / 10,000 test), unpacked once per run.

    Skipped, naming the variable, unless ``$OPTILOSS_TEST_CIFAR10_ARCHIVE`` names the archive.
    """
    import tarfile

    archive = os.environ.get(CIFAR10_ARCHIVE_VARIABLE)
    if not archive:
        pytest.skip(f"needs the full CIFAR-10 archive: set {CIFAR10_ARCHIVE_VARIABLE} to cifar10-jpeg.tar.xz")
    if not Path(archive).is_file():
        pytest.fail(f"{CIFAR10_ARCHIVE_VARIABLE}={archive} is not a file")
    target = tmp_path_factory.mktemp("cifar10-jpeg")
    with tarfile.open(archive) as handle:
        handle.extractall(target, filter="data")
    return target


@pytest.fixture(autouse=True)
def private_tensor_cache(tmp_path_factory, monkeypatch):
    """Every test session decodes into its own cache folder, never the user's."""
    monkeypatch.setenv("OPTILOSS_CACHE", str(tmp_path_factory.getbasetemp() / "tensor-cache"))


POSTGRES_LOCK = Path(tempfile.gettempdir()) / "optiloss-test-postgres.lock"
"""Tests on the one PostgreSQL server hold this file's lock: shared, or exclusive for a test marked
``restarts_postgres``, which stops the server under the feet of any other (pytest-xdist workers, or
another test run on the machine)."""


@pytest.fixture
def postgres_url(request):
    """A fresh, empty database on the real PostgreSQL server that `make test` starts, held under the
    server's lock (:data:`POSTGRES_LOCK`) for the test's duration."""
    import uuid

    import sqlalchemy

    admin_url = os.environ.get("OPTILOSS_TEST_POSTGRES")
    if not admin_url:
        missing_service(
            "needs a PostgreSQL server: OPTILOSS_TEST_POSTGRES is unset (`make test` starts one, "
            "scripts/postgres.sh)"
        )
    exclusive = request.node.get_closest_marker("restarts_postgres") is not None
    with open(POSTGRES_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)  # released as the file closes
        name = f"test_{uuid.uuid4().hex[:12]}"
        # pre-ping: a test may restart the server, which drops the pooled connection
        engine = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        engine.dispose()


def small_search(folder: Path, **settings) -> str:
    """Run a real digits search of a few short trials in ``folder`` through the CLI; returns its storage URL.

    Checkpoints and artifacts stay inside ``folder``; ``settings`` override the study TOML keys.
    """
    import json

    values = {
        "n_trials": 6,
        "population_size": 5,
        "epochs": 2,
        "model_width": 8,
        "device": "cpu",
        "baseline_seeds": 0,  # the noise floor has its own tests
        "constants": 0,  # constants have their own tests
        "checkpoint_dir": str(folder / "checkpoints"),
        "artifact_dir": str(folder / "artifacts"),
        **settings,
    }
    config = folder / "search.toml"
    config.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items()))
    url = f"sqlite:///{folder / 'studies.db'}"
    result = run_cli("search", str(config), "--storage", url, "--no-progress")
    assert result.returncode == 0, result.stderr
    return url
