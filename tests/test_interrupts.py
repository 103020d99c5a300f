"""Ctrl-C during every long command: one line, the command that continues, exit 130, nothing half-written."""

import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import read_stderr_until, run_cli, small_search, start_cli


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("interrupts")
    return small_search(folder, n_trials=6, epochs=2, artifacts=False), folder


def _interrupt(process: subprocess.Popen, seen: bytes) -> str:
    """Send Ctrl-C; the last line the command wrote to stderr (after its progress bars)."""
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=120)
    text = (seen + rest).decode(errors="replace")
    assert process.returncode == 130, text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    return text.replace("\r", "\n").strip().splitlines()[-1]


@pytest.mark.slow
@pytest.mark.parametrize(
    "command, marker",
    [
        (["recheck", "digits-base", "--seeds", "50", "--device", "cpu"], b"rechecking the Pareto set"),
        (["matrix", "--dataset", "digits", "--seeds", "50", "--device", "cpu"], b"matrix runs"),
    ],
)
def test_ctrl_c_during_recheck_or_matrix_prints_one_line_and_writes_nothing(source, command, marker):
    url, folder = source
    output = folder / "reports"
    full = [*command, "--storage", url] + (["--output", str(output)] if command[0] == "matrix" else [])
    trials_before = len(optuna.load_study(study_name="digits-base", storage=url).trials)
    process = start_cli(*full)
    last = _interrupt(process, read_stderr_until(process, marker))
    assert last == "interrupted; nothing was written. Run it again with: optiloss " + " ".join(full)
    assert not output.exists()
    assert len(optuna.load_study(study_name="digits-base", storage=url).trials) == trials_before


@pytest.mark.slow
def test_ctrl_c_during_transfer_fails_the_run_as_interrupted_and_the_resume_continues_from_checkpoint(source):
    url, folder = source
    config = folder / "transfer.toml"
    config.write_text(f'checkpoint_dir = "{folder / "checkpoints"}"\n')
    options = [
        "transfer",
        "digits-base",
        "--config",
        str(config),
        "--storage",
        url,
        "--model",
        "wrn-10-1",
        "--dataset",
        "digits",
        "--top-k",
        "1",
        "--seeds",
        "1",
        "--device",
        "cpu",
        "--output",
        str(folder / "report"),
    ]
    process = start_cli(*options, "--epochs", "40")
    seen = read_stderr_until(process, b"transfer runs")
    deadline = time.monotonic() + 240
    while not list((folder / "checkpoints").rglob("checkpoint.pt")):  # the first run finished an epoch
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.05)
    last = _interrupt(process, seen)
    assert last == (
        "interrupted; the study is saved. Resume with: optiloss " + " ".join(options) + " --epochs 40"
    )
    study = optuna.load_study(study_name="digits-base-transfer-wrn-10-1-digits", storage=url)
    interrupted = [t for t in study.trials if t.state == TrialState.FAIL]
    assert [t.user_attrs["fail_reason"] for t in interrupted] == ["interrupted"]
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert not (folder / "report").exists()

    resumed = run_cli(*options, "--epochs", "2")  # shorter than the checkpoint's run: it ends at once
    assert resumed.returncode == 0, resumed.stderr
    study = optuna.load_study(study_name="digits-base-transfer-wrn-10-1-digits", storage=url)
    redone = next(
        t
        for t in study.trials
        if t.state == TrialState.COMPLETE and t.user_attrs["run"] == interrupted[0].user_attrs["run"]
    )
    assert redone.number > interrupted[0].number and redone.user_attrs["resumed_from_epoch"] >= 1
    assert not list((folder / "checkpoints").rglob("checkpoint.pt"))
    assert Path(folder / "report").is_dir()
