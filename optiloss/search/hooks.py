"""What a running search calls back, so that a report can follow it without the search importing it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import optuna

from optiloss.genome import Genome

StudyReport = Callable[[optuna.Study], None]
TrialTrained = Callable[[optuna.Trial, Genome, Sequence[dict]], None]


@dataclass(frozen=True)
class SearchHooks:
    """Callbacks of a search; both optional. With ``--workers`` they travel to spawned processes, so
    they must pickle (module-level functions, or :func:`functools.partial` of them).

    ``study_report(study)`` runs when a search starts, every
    :data:`~optiloss.search.run.REPORT_INTERVAL_SECONDS` while trials complete,
    and when it ends (not after Ctrl-C). ``trial_trained(trial, genome, history)``
    runs after each trained trial, before its values are told, with the per-epoch
    training history. :func:`optiloss.report.dashboard_hooks` gives optuna-dashboard's.
    """

    study_report: StudyReport | None = None
    trial_trained: TrialTrained | None = None
