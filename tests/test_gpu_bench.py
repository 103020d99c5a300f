"""The GPU benchmark script on a CPU: its preflight refuses in seconds, each part runs under its limit
and writes its result as it ends, P7 reads its rate from the trials, and the airbench94 reference runs
as far as a machine without CUDA allows (everything but airbench's training on the GPU)."""

import datetime
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from optiloss.data import load_dataset

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import gpu_run  # noqa: E402
from gpu_run import Log, Part, Plan, PreflightError, plan, preflight, run_parts, summary, unpack_once  # noqa: E402
from search_throughput import steady_state  # noqa: E402

from airbench_reference import airbench_loaders, timed_runs  # noqa: E402


def test_a_missing_data_folder_is_refused_in_seconds_with_one_line_and_exit_2(tmp_path):
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu.sh"), "--device", "cpu", "--out", str(tmp_path), "no-such-folder"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert result.returncode == 2
    assert time.monotonic() - started < 60
    (line,) = (result.stdout + result.stderr).strip().splitlines()
    # the relative argument is named as the absolute path it was taken for
    assert line.startswith(f"gpu.sh: no CIFAR-10 data at {ROOT / 'no-such-folder'}: give the JPEG archive")
    (record,) = [json.loads(row) for row in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert record["part"] == "preflight" and record["status"] == "refused" and record["exit_status"] == 2
    assert (tmp_path / "gpu.log").read_text().strip() == line


def test_a_folder_without_test_is_refused_and_a_cuda_run_without_cuda_too(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(PreflightError, match=r"has no test/: give the JPEG archive"):
        preflight("cpu", str(tmp_path))
    (tmp_path / "test").mkdir()
    if not torch.cuda.is_available():
        with pytest.raises(PreflightError, match="cannot import airbench|sees no CUDA device"):
            preflight("cuda", str(tmp_path))


def test_a_missing_module_is_named(monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_run, "REQUIRED_MODULES", ("torch", "no_such_module_for_gpu_sh"))
    for name in ("train", "test"):
        (tmp_path / name).mkdir()
    with pytest.raises(PreflightError, match=r"cannot import no_such_module_for_gpu_sh: install the carried"):
        preflight("cpu", str(tmp_path))


def test_an_archive_is_unpacked_once_and_a_partial_unpack_is_not_taken_for_a_complete_one(
    cifar10_sample, tmp_path
):
    archive = tmp_path / "sample.tar.xz"
    with tarfile.open(archive, "w:xz") as handle:
        for split in ("train", "test"):
            handle.add(cifar10_sample / "train", arcname=split)
    target = tmp_path / "data" / "cifar10-jpeg"
    (target / "test").mkdir(parents=True)  # what a killed unpack of the old script left behind
    (target / "test" / "half-written.jpg").write_bytes(b"")
    folder = unpack_once(archive, target)
    assert folder == target and (folder / "train").is_dir()
    assert not (folder / "test" / "half-written.jpg").exists()
    files = sorted(path.relative_to(folder) for path in folder.rglob("*.jpg"))
    assert len(files) == 2 * len(list((cifar10_sample / "train").rglob("*.jpg")))
    assert [path.name for path in target.parent.iterdir()] == ["cifar10-jpeg"]  # no temporary folder left
    marker = folder / gpu_run.COMPLETE_MARKER
    stamp = marker.stat().st_mtime_ns
    assert unpack_once(archive, target) == target and marker.stat().st_mtime_ns == stamp  # reused


def test_the_default_cuda_run_fits_eight_minutes_in_order_of_value():
    run = plan("cuda", Path("/data"))
    assert [part.name for part in run.parts] == ["P5 airbench", "P2 airbench", "P7 workers", "P5 compiled"]
    assert run.budget_s <= 8 * 60
    assert sum(part.limit_s for part in run.parts if not part.fills_budget) < run.budget_s
    everything = plan("cuda", Path("/data"), everything=True)
    assert [part.name for part in everything.parts[4:]] == [
        "P5 CNN surrogate",
        "P2 CNN",
        "P1 trial throughput",
    ]
    printed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_run.py"), "--plan"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert printed.returncode == 0
    assert "P5 compiled: limit what is left of the budget, at most 150 s" in printed.stdout
    assert printed.stdout.strip().splitlines()[-1] == "budget: 480 s in all"


def test_a_part_past_its_limit_is_stopped_recorded_and_the_next_part_runs_with_results_written_as_each_ends(
    tmp_path,
):
    results = tmp_path / "results.jsonl"
    report = "import json, os; open(os.environ['{}'], 'a').write(json.dumps({{'answer': 42}}) + '\\n')"
    parts = [
        Part("reports", (sys.executable, "-c", report.format(gpu_run.FIGURES_ENV)), 30),
        Part(
            "overruns",
            (sys.executable, "-c", "print('started', flush=True); import time; time.sleep(120)"),
            3,
        ),
        Part("counts results", (sys.executable, "-c", f"print(len(open({str(results)!r}).readlines()))"), 30),
        Part("fails", (sys.executable, "-c", "raise SystemExit(3)"), 30),
        Part("fills", (sys.executable, "-c", "print('filled')"), 600, fills_budget=True),
    ]
    log = Log(tmp_path)
    started = time.monotonic()
    outcome = run_parts(Plan(parts, budget_s=100), log, dict(os.environ))
    assert time.monotonic() - started < 60
    assert [r.status for r in outcome] == ["ok", "timeout", "ok", "failed", "ok"]
    assert outcome[0].figures == {"answer": 42} and outcome[3].exit_status == 3
    assert 3 <= outcome[1].seconds < 15 and outcome[4].limit_s <= 100
    lines = (tmp_path / "gpu.log").read_text().splitlines()
    assert "started" in lines and "filled" in lines
    assert (
        lines[lines.index("== counts results (limit 30 s)") + 1] == "2"
    )  # two results on disk before it ran
    assert "== overruns: STOPPED at its limit after" in "\n".join(lines)
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["part"] for r in records] == [p.name for p in parts]
    assert [r["status"] for r in records] == ["ok", "timeout", "ok", "failed", "ok"]
    assert summary(outcome).startswith("== 2 part(s) did not finish: overruns (timeout), fails (failed)")


def test_a_part_left_no_budget_is_skipped(tmp_path):
    part = Part("late", (sys.executable, "-c", "print('ran')"), 600, fills_budget=True)
    (result,) = run_parts(Plan([part], budget_s=5), Log(None), dict(os.environ))
    assert result.status == "skipped"


def test_p7_takes_its_rate_and_overhead_from_the_trials_timestamps():
    start = datetime.datetime(2026, 12, 7, 12, 0, 0)

    def trial(state, begin, end, training=0.0, scoring=0.0):
        return (
            optuna.trial.create_trial(
                state=state,
                values=[0.5, 0.4] if state == TrialState.COMPLETE else None,
                params={},
                distributions={},
                user_attrs={"training_seconds": training, "evaluation_seconds": scoring},
            ),
            begin,
            end,
        )

    rows = [
        trial(TrialState.COMPLETE, 0, 10, 8.0, 1.0),
        trial(TrialState.PRUNED, 10, 11),
        trial(TrialState.COMPLETE, 11, 20, 7.0, 1.0),
        trial(TrialState.COMPLETE, 5, 18, 10.0, 2.0),  # a second worker
        trial(TrialState.RUNNING, 20, None),  # cut by the time box: time outside
    ]
    trials = []
    for frozen, begin, end in rows:
        frozen.datetime_start = start + datetime.timedelta(seconds=begin)
        frozen.datetime_complete = None if end is None else start + datetime.timedelta(seconds=end)
        trials.append(frozen)
    result = steady_state(trials, workers=2)
    assert result["complete"] == 3 and result["window_s"] == 20
    assert result["per_hour"] == pytest.approx(3600 * 3 / 20)
    assert result["outside"] == pytest.approx(1 - 29 / 40)


def test_the_airbench_reference_reads_the_p5_split_through_airbenchs_own_loaders(cifar10_sample, tmp_path):
    airbench = pytest.importorskip("airbench")
    data = load_dataset(f"folder:{cifar10_sample}", validation_fraction=0.25, progress=False)
    train_loader, test_loader = airbench_loaders(airbench, data, tmp_path, device="cpu", batch_size=50)
    expected = data.train_images.float() / 255
    assert len(train_loader) == len(data.train_labels) // 50
    batches = list(train_loader)  # epoch 0: flipped once at random, reflect-padded, translated by <= 2 px
    images = torch.cat([batch for batch, _ in batches])
    labels = torch.cat([label for _, label in batches])
    assert images.shape == (450, 3, 32, 32) and images.dtype == torch.float16
    assert sorted(labels.tolist()) == sorted(data.train_labels.tolist())
    assert torch.allclose(test_loader.images.float(), data.val_images.float() / 255, atol=1e-3)
    assert torch.equal(test_loader.labels, data.val_labels)
    # the normalised images are the ones of the split (class means survive the translations)
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    restored = images.float() * std + mean
    assert abs(restored.mean().item() - expected.mean().item()) < 0.01


def test_timed_runs_warm_up_once_then_time_each_run_between_synchronisations():
    calls, synchronised = [], []
    seconds, accuracies = timed_runs(
        lambda run: calls.append(run) or 0.5 + run / 10, 3, lambda: synchronised.append(len(calls))
    )
    assert calls == [-1, 1, 2, 3] and accuracies == [0.6, 0.7, 0.8]
    assert len(seconds) == 3 and all(second >= 0 for second in seconds)
    assert synchronised == [1, 2, 2, 3, 3, 4]
