"""The paper's whole experiment as one resumable run: ``optiloss experiment EXPERIMENT.toml``.

An experiment file names the search (a study TOML, ``[search] file``, or its keys inline) and its
augmentations, recheck seeds, one or more transfer stages, the matrix and the losses given by hand.
:func:`run_experiment` runs the stages in order, each one the existing library function on the
existing plain Optuna studies:

- ``search``: :func:`~optiloss.search.run_search`, one study ``{name}-{augmentation}`` each;
- ``recheck``: :func:`~optiloss.recheck.recheck` of each study, its trainings kept in the ledger
  study ``{name}-{augmentation}-recheck`` (:mod:`optiloss.ledger`);
- one stage per ``[[transfer]]`` table, named by its ``name``:
  :func:`~optiloss.transfer.run_transfer` of each augmentation's study under that augmentation
  (``pooled = true``: of all studies' losses pooled, under each augmentation);
- ``matrix``: :func:`~optiloss.matrix.loss_augmentation_matrix` of the studies, scored on the test
  split (``[matrix] split``), kept in the ledger ``{name}-matrix-{split}``;
- ``ablation`` (with ``[ablation] seeds``): :func:`~optiloss.ablate.ablate_best` of each study's best
  loss of its own, kept in the ledger ``{name}-{augmentation}-ablation``.

Every stage trains only what its studies do not hold yet, so running the command again after a stop
(Ctrl-C, kill -9, a lost machine) continues where it stopped; a finished stage says so in one line.
The report page (:mod:`optiloss.report.page`) is written from the studies alone.

The package: :mod:`~optiloss.experiment.file` (the file and its tables), :mod:`~optiloss.experiment.stages`
(a :class:`~optiloss.experiment.stages.Stage` per kind, its plan and its run),
:mod:`~optiloss.experiment.context` (the run context built once per run and handed to every stage) and
:mod:`~optiloss.experiment.run` (plan, select and run the stages).
"""

from optiloss.experiment.context import RunContext
from optiloss.experiment.file import (
    ABLATION,
    MATRIX,
    RECHECK,
    SEARCH,
    AblationSettings,
    Experiment,
    MatrixSettings,
    RecheckSettings,
    TransferRun,
    TransferSpec,
    load_experiment,
)
from optiloss.experiment.run import plan, reading_storage, run_experiment, select_stages
from optiloss.experiment.stages import (
    AblationStage,
    MatrixStage,
    RecheckStage,
    SearchStage,
    Stage,
    StagePlan,
    StudiesView,
    TransferStage,
    stages_of,
)

__all__ = [
    "ABLATION",
    "MATRIX",
    "RECHECK",
    "SEARCH",
    "AblationSettings",
    "AblationStage",
    "Experiment",
    "MatrixSettings",
    "MatrixStage",
    "RecheckSettings",
    "RecheckStage",
    "RunContext",
    "SearchStage",
    "Stage",
    "StagePlan",
    "StudiesView",
    "TransferRun",
    "TransferSpec",
    "TransferStage",
    "load_experiment",
    "plan",
    "reading_storage",
    "run_experiment",
    "select_stages",
    "stages_of",
]
