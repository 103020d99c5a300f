"""The guided sampler: screened, distinct proposals from a predictor of what each trained loss does,
its prediction recorded and shown, rebuilt from the study alone, plain Optuna studies throughout."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

import optiloss.search.guided as guided
from optiloss.genome import Genome, gene_names, screen, zoo
from optiloss.genome.named import named_losses
from optiloss.genome.phenotype import phenotype, phenotype_length
from optiloss.search import SearchConfig, run_search
from optiloss.search.guided import GuidedSampler, PhenotypePredictor
from optiloss.statistics import hypervolume, non_dominated, non_dominated_rows

from conftest import run_main

SETTINGS = (
    'dataset = "digits"\naugmentation = "base"\nepochs = 1\nmodel_width = 8\nsubset = 900\nseed = 5\n'
    'device = "cpu"\nbaseline_seeds = 0\nconstants = 0\nsampler = "guided"\nartifacts = false\n'
)


def test_a_phenotype_is_what_the_loss_does_and_equal_losses_share_it():
    losses = {name: screen(genome).genome for name, genome in zoo().items()}
    vectors = {name: phenotype(genome) for name, genome in losses.items()}
    assert {len(v) for v in vectors.values()} == {phenotype_length()}
    assert all(np.isfinite(v).all() for v in vectors.values())
    # a term without p changes nothing training sees: the same phenotype as cross-entropy's
    shifted = named_losses({"shifted": "-(y * ln(p)) + (y * y)"}, 5)["shifted"]
    assert np.allclose(phenotype(shifted), vectors["cross_entropy"])
    distance = lambda a, b: float(np.linalg.norm(vectors[a] - vectors[b]))  # noqa: E731
    assert distance("cross_entropy", "poly1") < distance("cross_entropy", "mse")


@pytest.mark.parametrize("soft_targets", [True, False])
def test_the_screens_own_behaviour_gives_the_same_phenotype_as_computing_it_again(soft_targets):
    for name, genome in zoo().items():
        result = screen(genome.with_orientation(False), soft_targets=soft_targets)
        assert result.behaviour is not None, name
        again = phenotype(result.genome, soft_targets)
        assert np.allclose(phenotype(result.genome, soft_targets, result.behaviour), again), name
    # a loss the screen negates: the curve it hands on is the oriented one
    rising = screen(named_losses({"rising": "y * ln(p)"}, 5)["rising"].with_orientation(False))
    assert rising.genome.negated
    assert np.allclose(phenotype(rising.genome, True, rising.behaviour), phenotype(rising.genome))


def test_the_front_and_its_hypervolume():
    points = np.array([[0.5, 0.2], [0.4, 0.4], [0.3, 0.3], [0.6, 0.1]])
    assert sorted(map(tuple, non_dominated(points))) == [(0.4, 0.4), (0.5, 0.2), (0.6, 0.1)]
    assert hypervolume(points) == pytest.approx(0.4 * 0.4 + 0.1 * 0.2 + 0.1 * 0.1)


@pytest.mark.parametrize("kind", guided.PREDICTORS)
def test_each_predictor_gives_members_within_the_objectives_range(kind):
    losses = [screen(genome).genome for genome in zoo().values()]
    features = np.stack([phenotype(genome) for genome in losses])
    targets = np.linspace(0.2, 0.9, len(losses))[:, None].repeat(2, axis=1)
    model = PhenotypePredictor(kind, members=5, seed=0).fit(features, targets)
    members = model.members(features)
    assert members.shape == (5, len(losses), 2) and (members >= 0).all() and (members <= 1).all()
    assert members.std(0).max() > 0  # a spread to sample from


@pytest.mark.slow
def test_a_guided_search_trains_only_screened_distinct_genomes_and_records_its_predictions(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(guided, "DEFAULT_STARTUP", 7)
    config_path = tmp_path / "guided.toml"
    config_path.write_text(
        SETTINGS + f'n_trials = 14\nworkers = 2\ncheckpoint_dir = "{tmp_path / "checkpoints"}"\n'
    )
    url = f"sqlite:///{tmp_path / 'guided.db'}"
    outcome = run_search(SearchConfig.load(str(config_path)), url, progress=False, log=lambda line: None)
    study = optuna.load_study(study_name=outcome.study_name, storage=url)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) >= 14
    assert not study.get_trials(states=(TrialState.PRUNED,))  # nothing unscreened was stored
    fingerprints = [t.user_attrs["fingerprint"] for t in complete]
    assert len(set(fingerprints)) == len(fingerprints)  # two workers never trained one genome twice
    picked = [t for t in complete if t.user_attrs.get("predicted")]
    assert picked, "after the start-up the predictor picks"
    for trial in picked:
        assert set(trial.user_attrs["predicted"]) == {"accuracy", "robustness"}
        assert trial.user_attrs["guided_pick"].split(" ")[0] in {"thompson", "uniform"}
    shown = run_main("show", outcome.study_name, str(picked[0].number), "--storage", url)
    assert shown.returncode == 0 and "predicted by the guided sampler" in shown.stdout
    assert "(measured 0." in shown.stdout
    # the same seed on the same study proposes the same genome: the sampler lives in the study
    proposals = []
    for _ in range(2):
        sampler = GuidedSampler(5, seed=11, screen_options={"soft_targets": False, "scale_free": True})
        again = optuna.load_study(study_name=outcome.study_name, storage=url, sampler=sampler)
        trial = again.ask()
        proposals.append(Genome.suggest(trial, 5, 0).formula)
        again.tell(trial, state=TrialState.FAIL)
    assert proposals[0] == proposals[1]
    assert proposals[0] not in {t.user_attrs["formula"] for t in complete}
    # a plain Optuna study: Optuna's own CLI lists its trials without optiloss's sampler
    listed = subprocess.run(
        [
            str(Path(sys.executable).with_name("optuna")),
            "trials",
            "--study-name",
            outcome.study_name,
            "--storage",
            url,
            "-f",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0
    rows = [row for row in json.loads(listed.stdout) if row["state"] == "COMPLETE"]
    assert len(rows) == len(complete) and all(gene_names(0)[0] in row["params"] for row in rows)


def test_the_pareto_rows_are_those_no_other_row_dominates_ties_included():
    rng = np.random.default_rng(0)
    for _ in range(500):
        for columns in (2, 3):  # two columns take the one-sort path, more the pairwise one
            points = rng.integers(0, 5, size=(int(rng.integers(1, 30)), columns)).astype(float)
            expected = [
                i
                for i, point in enumerate(points)
                if not ((points >= point).all(1) & (points > point).any(1)).any()
            ]
            assert non_dominated_rows(points) == expected


def test_a_pick_a_second_worker_claimed_meanwhile_is_picked_again():
    """Two workers can pick the same genome in the time between reading the study and writing the
    pick's fingerprint; the one that finds the other's claim picks again."""
    options = {"soft_targets": False, "scale_free": True}
    study = optuna.create_study(directions=["maximize", "maximize"])
    sampler = GuidedSampler(5, seed=3, screen_options=options)
    study.sampler = sampler
    pick_alone = sampler._uniform  # the pick this worker makes, then a rival claims the same
    rivals = []

    def picked_while_a_rival_claims_it(taken):
        pick = pick_alone(taken)
        if not rivals:
            rival = optuna.trial.create_trial(
                state=TrialState.RUNNING, user_attrs={"fingerprint": pick.fingerprint}
            )
            study.add_trial(rival)
            rivals.append(pick.fingerprint)
        return pick

    sampler._uniform = picked_while_a_rival_claims_it
    trial = study.ask()
    Genome.suggest(trial, 5, 0)
    claimed = study.get_trials(states=(TrialState.RUNNING,))
    fingerprints = [t.user_attrs.get("fingerprint") for t in claimed]
    assert len(claimed) == 2 and rivals and all(fingerprints)
    assert len(set(fingerprints)) == 2  # this worker gave the genome up to the rival
