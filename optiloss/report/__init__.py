"""What a user reads: tables of studies, Pareto sets and single losses; optuna-dashboard's notes,
plots and artifacts. The top of the house: it reads studies and follows searches through hooks."""

from optiloss.report.dashboard import dashboard_hooks, refresh_study_report
from optiloss.report.tables import (
    format_rows,
    pareto_rows,
    pareto_verdict,
    search_summary,
    show_trial,
    study_rows,
)

__all__ = [
    "dashboard_hooks",
    "format_rows",
    "pareto_rows",
    "pareto_verdict",
    "refresh_study_report",
    "search_summary",
    "show_trial",
    "study_rows",
]
