"""optuna-dashboard on a study a search produced: API, a real headless Chromium, and concurrency."""

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import optuna
import optuna_dashboard
import pytest
from optuna.artifacts import FileSystemArtifactStore

from conftest import ROOT, missing_service, small_search


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A small real search: (storage URL, artifact folder)."""
    folder = tmp_path_factory.mktemp("dashboard")
    return small_search(folder, artifacts_front_only=False), folder / "artifacts"


def _get(app, path: str) -> tuple[str, bytes]:
    environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    status = []
    body = b"".join(app(environ, lambda code, headers, *rest: status.append(code)))
    return status[0], body


@pytest.mark.slow
def test_the_dashboard_api_shows_metric_names_attrs_note_hypervolume_and_artifacts(searched):
    url, artifacts = searched
    app = optuna_dashboard.wsgi(url, artifact_store=FileSystemArtifactStore(str(artifacts)))
    status, body = _get(app, "/api/studies")
    assert status.startswith("200")
    summaries = json.loads(body)["study_summaries"]
    assert [s["study_name"] for s in summaries] == ["digits-base"]
    status, body = _get(app, f"/api/studies/{summaries[0]['study_id']}")
    detail = json.loads(body)
    assert detail["objective_names"] == ["accuracy", "robustness"]
    study_attrs = {attr["key"]: attr["value"] for attr in detail["user_attrs"]}
    assert study_attrs["dataset"] == "digits" and study_attrs["augmentation"] == "base"
    assert "# digits-base" in detail["note"]["body"] and "## Pareto set" in detail["note"]["body"]
    assert any(graph["id"] == "hypervolume-history" for graph in detail["plotly_graph_objects"])
    trained = [t for t in detail["trials"] if t["state"] == "Complete"]
    assert len(trained) == 6
    for trial in trained:
        attrs = {attr["key"] for attr in trial["user_attrs"]}
        assert {"formula", "latex", "fingerprint"} <= attrs
        names = sorted(artifact["filename"] for artifact in trial["artifacts"])
        assert names == [
            f"loss-shape-trial-{trial['number']}.png",
            f"training-curve-trial-{trial['number']}.csv",
            f"training-curve-trial-{trial['number']}.png",
        ]
    rejected = [t for t in detail["trials"] if t["state"] == "Pruned"]
    assert all(any(attr["key"] == "rejected" for attr in t["user_attrs"]) for t in rejected)
    first = trained[0]
    png = next(a for a in first["artifacts"] if a["filename"].startswith("loss-shape"))
    status, body = _get(
        app, f"/artifacts/{summaries[0]['study_id']}/{first['trial_id']}/{png['artifact_id']}"
    )
    assert status.startswith("200") and body.startswith(b"\x89PNG")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve(url: str, artifacts: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    log = open(artifacts.parent / f"dashboard-{port}.log", "w")  # a pipe nobody reads would block the server
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "optiloss",
            "dashboard",
            "--storage",
            url,
            "--port",
            str(port),
            "--artifact-dir",
            str(artifacts),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until the server answers
        try:
            urllib.request.urlopen(f"{base}/api/studies", timeout=2).read()
            return server, base
        except OSError:
            if server.poll() is not None:
                pytest.fail(f"the dashboard exited: {Path(log.name).read_text()}")
            time.sleep(0.1)
    server.kill()
    pytest.fail("the dashboard did not answer")


@pytest.mark.slow
def test_the_study_page_renders_in_headless_chromium(searched, tmp_path):
    chromium = shutil.which("chromium")
    if not chromium:
        missing_service("needs Debian's chromium: `make test` installs it (scripts/chromium.sh)")
    url, artifacts = searched
    server, base = _serve(url, artifacts)
    try:
        study_id = json.loads(urllib.request.urlopen(f"{base}/api/studies").read())["study_summaries"][0][
            "study_id"
        ]
        page = f"{base}/dashboard/studies/{study_id}"
        flags = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=15000",
            "--window-size=1400,1100",
        ]
        dom = subprocess.run(flags + ["--dump-dom", page], capture_output=True, text=True, timeout=180).stdout
        screenshot = tmp_path / "study-page.png"
        subprocess.run(flags + [f"--screenshot={screenshot}", page], capture_output=True, timeout=180)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "digits-base" in dom
    assert "accuracy" in dom and "robustness" in dom
    assert screenshot.stat().st_size > 20_000
    print(f"screenshot: {screenshot}")


@pytest.mark.slow
def test_a_dashboard_reading_sqlite_does_not_break_a_running_search(tmp_path):
    config = tmp_path / "search.toml"
    config.write_text(
        'n_trials = 10\npopulation_size = 5\nepochs = 3\nmodel_width = 8\ndevice = "cpu"\n'
        f'checkpoint_dir = "{tmp_path / "checkpoints"}"\n'
        f'artifact_dir = "{tmp_path / "artifacts"}"\n'
    )
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    optuna.create_study(study_name="warm-up", storage=url)  # the dashboard needs the file to exist
    server, base = _serve(url, tmp_path / "artifacts")
    search = subprocess.Popen(
        [sys.executable, "-m", "optiloss", "search", str(config), "--storage", url, "--no-progress"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    answers = 0
    try:
        while search.poll() is None and answers < 2000:
            listing = json.loads(urllib.request.urlopen(f"{base}/api/studies", timeout=30).read())
            for summary in listing["study_summaries"]:
                urllib.request.urlopen(f"{base}/api/studies/{summary['study_id']}", timeout=30).read()
            answers += 1
        _, stderr = search.communicate(timeout=600)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert search.returncode == 0, stderr
    assert answers > 5  # the dashboard was read throughout the search
    study = optuna.load_study(study_name="digits-base", storage=url)
    assert len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) == 10


def test_hypervolume_history_matches_optunas_plot():
    """Our incremental front gives the figure Optuna's plot_hypervolume_history draws (which
    deep-copies every trial each time, too slow for a study refreshed every few seconds)."""
    from optuna.visualization import plot_hypervolume_history

    from optiloss.report.dashboard import hypervolume_history

    study = optuna.create_study(directions=["maximize", "maximize"])
    values = [(0.5, 0.5), (0.4, 0.4), (0.9, 0.1), (0.1, 0.9), (0.6, 0.6), (0.95, 0.05), (0.0, 0.99)]
    for index, pair in enumerate(values):
        trial = study.ask()
        if index == 2:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        study.tell(study.ask() if index == 2 else trial, list(pair))
    numbers, volumes = hypervolume_history(study.get_trials(deepcopy=False))
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        expected = plot_hypervolume_history(study, reference_point=[0.0, 0.0]).data[0]
    assert numbers == list(expected.x)
    assert volumes == pytest.approx(list(expected.y), abs=1e-12)
    # the last front
    assert volumes[-1] == pytest.approx(0.95 * 0.05 + 0.9 * 0.05 + 0.6 * 0.5 + 0.1 * 0.3, abs=1e-12)
