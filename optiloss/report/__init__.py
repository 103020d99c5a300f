"""Tables of studies, Pareto sets and single losses."""

from optiloss.report.tables import (
    format_rows, get_trial, load_study, pareto_rows, show_trial, study_rows, trial_genome,
)

__all__ = ["format_rows", "get_trial", "load_study", "pareto_rows", "show_trial", "study_rows", "trial_genome"]
