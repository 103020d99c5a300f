"""Every bad input a user can give: one line saying what is wrong, the right exit code, nothing written."""

from pathlib import Path

import optuna
import pytest

from conftest import ROOT, run_main

GOOD = 'n_trials = 2\nepochs = 1\nmodel_width = 8\ndevice = "cpu"\n'


def _assert_one_line(result, code: int, fragment: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "config_text, options, fragment",
    [
        ("n_trials = = 3\n", [], "not valid TOML"),
        (GOOD + "epoch = 3\n", [], "unknown key 'epoch'"),
        (GOOD + 'seed = "zero"\n', [], "seed must be an integer"),
        (GOOD, ["--dataset", "imagenet"], "dataset must be one of digits, cifar10"),
        (
            GOOD,
            ["--augmentation", "sepia"],
            "augmentation must be one of base, cutout, mixup, randaug, all, all5",
        ),
        (GOOD, ["--n-trials", "0"], "n_trials must be >= 1, got 0"),
        (GOOD, ["--workers", "0"], "workers must be between 1 and 64"),
        (GOOD, ["--subset", "999999"], "subset 999999 is larger than digits's 1437 training images"),
        (
            GOOD,
            ["--dataset", "cifar10", "--data-root", "/nonexistent/data"],
            "CIFAR-10 file data_batch_1 not found: "
            "expected /nonexistent/data/cifar-10-batches-py/data_batch_1",
        ),
        (
            GOOD + "heartbeat_interval = 30\ngrace_period = 10\n",
            [],
            "grace_period must be longer than heartbeat_interval",
        ),
    ],
)
def test_usage_errors_exit_2_and_write_nothing(tmp_path, sqlite_url, config_text, options, fragment):
    config = tmp_path / "study.toml"
    config.write_text(config_text)
    result = run_main("search", str(config), "--storage", sqlite_url, *options)
    _assert_one_line(result, 2, fragment)
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()


def test_a_storage_url_typo_exits_2(tmp_path):
    config = tmp_path / "study.toml"
    config.write_text(GOOD)
    result = run_main("search", str(config), "--storage", f"sqlit:///{tmp_path / 'x.db'}")
    _assert_one_line(result, 2, "unknown database kind in sqlit:///")
    assert list(tmp_path.iterdir()) == [config]


def test_an_unreachable_database_exits_1_without_showing_the_password(tmp_path):
    config = tmp_path / "study.toml"
    config.write_text(GOOD)
    result = run_main(
        "search", str(config), "--storage", "postgresql://optiloss:hunter2@127.0.0.1:9/optiloss"
    )
    _assert_one_line(result, 1, "cannot open storage postgresql://optiloss:***@127.0.0.1:9/optiloss")
    assert "hunter2" not in result.stderr + result.stdout


def test_the_mask_hides_the_password_field_and_leaves_the_message_alone(tmp_path):
    config = tmp_path / "study.toml"
    config.write_text(GOOD)
    result = run_main("search", str(config), "--storage", "mysql://u:p@127.0.0.1:1/x")
    _assert_one_line(result, 1, "cannot open storage mysql://u:***@127.0.0.1:1/x: ")
    assert "Failed to import DB access module for the specified storage URL" in result.stderr
    assert "***ort" not in result.stderr and "install the Python driver" in result.stderr


def test_mask_password_masks_a_password_only_where_it_is_one():
    from optiloss.storage import mask_password

    url = "postgresql://ada:pass@db.example/studies"
    text = (
        f"passing {url}: postgresql://ada:pass@db.example failed (host=db.example password=pass user=ada) "
        "password='pass'"
    )
    assert mask_password(text, url) == (
        "passing postgresql://ada:***@db.example/studies: postgresql://ada:***@db.example failed "
        "(host=db.example password=*** user=ada) password='***'"
    )
    assert mask_password("no password here", "sqlite:///x.db") == "no password here"


def test_a_wrong_password_exits_2_and_creates_no_study(tmp_path, postgres_url):
    config = tmp_path / "study.toml"
    config.write_text(GOOD)
    wrong = postgres_url.replace("optiloss:optiloss@", "optiloss:not-the-password@")
    result = run_main("search", str(config), "--storage", wrong)
    _assert_one_line(result, 2, "the database refused the login")
    assert "not-the-password" not in result.stderr
    assert optuna.get_all_study_summaries(postgres_url) == []


def test_resuming_with_a_conflicting_config_exits_2_and_adds_no_trial(tmp_path, sqlite_url):
    config = tmp_path / "study.toml"
    config.write_text(GOOD + f'checkpoint_dir = "{tmp_path / "checkpoints"}"\nartifacts = false\n')
    assert run_main("search", str(config), "--storage", sqlite_url, "--no-progress").returncode == 0
    trials = len(optuna.load_study(study_name="digits-base", storage=sqlite_url).trials)
    conflicting = tmp_path / "other.toml"
    conflicting.write_text(GOOD + "nodes = 6\n")
    result = run_main("search", str(conflicting), "--storage", sqlite_url)
    _assert_one_line(result, 2, "study 'digits-base' was created with nodes 5 (this run: 6)")
    assert len(optuna.load_study(study_name="digits-base", storage=sqlite_url).trials) == trials


def test_continuing_a_study_with_another_width_or_epochs_is_refused_naming_a_study_name(tmp_path, sqlite_url):
    config = tmp_path / "study.toml"
    config.write_text(
        GOOD.replace("model_width = 8", "model_width = 16")
        + f'checkpoint_dir = "{tmp_path / "checkpoints"}"\nartifacts = false\nbaseline_seeds = 0\n'
    )
    assert run_main("search", str(config), "--storage", sqlite_url, "--no-progress").returncode == 0
    trials = len(optuna.load_study(study_name="digits-base", storage=sqlite_url).trials)
    wider = tmp_path / "wider.toml"
    wider.write_text(GOOD.replace("model_width = 8\n", "").replace("epochs = 1", "epochs = 3"))
    result = run_main("search", str(wider), "--storage", sqlite_url, "--loss", "mine=-(y * ln(|p| + eps))^2")
    _assert_one_line(
        result,
        2,
        "study 'digits-base' was created with epochs 1 (this run: 3), model_width 16 (this run: 32); "
        "its trials would not be comparable: continue it with its own settings or choose another "
        "study name (--study-name digits-base-2)",
    )
    assert len(optuna.load_study(study_name="digits-base", storage=sqlite_url).trials) == trials
    # what cannot change a trial's numbers may differ: a larger budget, another device spelling
    more = run_main("search", str(config), "--storage", sqlite_url, "--n-trials", "3", "--device", "cpu")
    assert more.returncode == 0, more.stderr


@pytest.mark.parametrize(
    "arguments, code, fragment",
    [
        (
            ["search", "CONFIG", "--storage", "sqlite:////proc/nope/x.db"],
            2,
            "cannot create the folder /proc/nope for the SQLite file",
        ),
        (["search", "CONFIG", "--n-trials", "many"], 2, "argument --n-trials: invalid int value: 'many'"),
        (["search", "CONFIG", "--device", "gpu"], 2, "argument --device: invalid choice: 'gpu'"),
        (["dashboard", "--port", "99999"], 2, "--port must be between 1 and 65535, got 99999"),
        (["dashboard", "--port", "http"], 2, "--port must be a number, got 'http'"),
        (["transfer", "digits-base", "--seeds", "0", "--storage", "URL"], 2, "seeds must be >= 1, got 0"),
        (["transfer", "digits-base", "--model", "wrn-10-1", "--storage", "URL"], 1, "no study database at"),
        (["matrix", "--dataset", "digits", "--seeds", "0"], 2, "--top-k and --seeds must be at least 1"),
        (["matrix", "--seeds", "2"], 2, "one of the arguments --dataset --prefix --study is required"),
        (["matrix", "--dataset", "digits", "--storage", "URL"], 1, "no study database at"),
        (["recheck", "digits-base", "--seeds", "0"], 2, "--seeds must be at least 1"),
        (["recheck", "digits-base", "--storage", "URL"], 1, "no study database at"),
        (["show", "digits-base", "first"], 2, "argument trial: invalid int value: 'first'"),
        (["pareto", "digits-base", "--storage", "URL"], 1, "no study database at"),
        (["studies", "--format", "xml"], 2, "argument --format: invalid choice: 'xml'"),
        (["frobnicate"], 2, "argument COMMAND: invalid choice: 'frobnicate'"),
    ],
)
def test_every_command_answers_likely_bad_inputs_in_one_line(tmp_path, sqlite_url, arguments, code, fragment):
    config = tmp_path / "study.toml"
    config.write_text(GOOD)
    arguments = [{"CONFIG": str(config), "URL": sqlite_url}.get(word, word) for word in arguments]
    result = run_main(*arguments)
    _assert_one_line(result, code, fragment)
    assert sorted(tmp_path.iterdir()) == [config]  # nothing written, no database created


def test_a_mistyped_storage_option_does_not_echo_the_password(sqlite_url):
    result = run_main("pareto", "digits-base", "--stor", "postgresql://optiloss:hunter2@127.0.0.1:9/optiloss")
    _assert_one_line(
        result, 2, "unrecognized arguments: --stor postgresql://optiloss:***@127.0.0.1:9/optiloss"
    )
    assert "hunter2" not in result.stderr


def test_a_read_only_database_is_one_line_for_a_search_and_still_reads(tmp_path):
    """SQLite opened read-only (as a file shared read-only is): a search says so in one line, exit 1;
    the reading commands work on it."""
    import shutil

    database = tmp_path / "shared.db"
    shutil.copy(ROOT / "tests" / "data" / "studies-v0.1" / "studies.db", database)
    before = database.read_bytes()
    read_only = f"sqlite:///file:{database}?mode=ro&uri=true"
    config = tmp_path / "study.toml"
    config.write_text(GOOD + "constants = 0\n")
    result = run_main("search", str(config), "--storage", read_only, "--no-progress")
    _assert_one_line(result, 1, "is read-only, and search writes to it: copy the database somewhere writable")
    for command in (
        ["studies"],
        ["pareto", "digits-base"],
        ["show", "digits-base", "8"],
        ["export", "digits-base", "8"],
    ):
        read = run_main(*command, "--storage", read_only)
        assert read.returncode == 0 and read.stdout.strip(), (command, read.stderr)
    assert database.read_bytes() == before


def test_a_formula_of_700_terms_is_one_line_naming_the_limit_and_exit_2():
    formula = " + ".join(f"{index % 9 + 1}.5 * y * ln(|p| + eps)" for index in range(700))
    result = run_main("evaluate", formula, "--dataset", "digits")
    _assert_one_line(result, 2, "operations deep")
    assert "deeper than the 28 a loss of the genome's 5 nodes can be" in result.stderr
    assert len(result.stderr) < 400  # the formula is not repeated in full


def test_output_into_a_closed_pipe_ends_quietly_with_141(tmp_path):
    """`optiloss studies | head`: the reader goes away; one exit code, no traceback."""
    import os
    import shutil
    import subprocess
    import sys

    database = tmp_path / "studies.db"
    shutil.copy(ROOT / "tests" / "data" / "studies-v0.1" / "studies.db", database)
    read_end, write_end = os.pipe()
    os.close(read_end)  # gone before the first line
    process = subprocess.run(
        [sys.executable, "-m", "optiloss", "studies", "--storage", f"sqlite:///{database}"],
        cwd=ROOT,
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )
    os.close(write_end)
    assert process.returncode == 141, process.stderr
    assert "Traceback" not in process.stderr and "BrokenPipeError" not in process.stderr
