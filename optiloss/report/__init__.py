"""Tables of studies, Pareto sets and single losses."""

from optiloss.report.tables import format_rows, load_study, pareto_rows, show_trial, study_rows

__all__ = ["format_rows", "load_study", "pareto_rows", "show_trial", "study_rows"]
