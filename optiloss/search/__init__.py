"""Loss-search studies: configuration, the study, the objective, recovery and the search loop."""

from optiloss.scoring import load_data
from optiloss.search.hooks import SearchHooks
from optiloss.search.objective import LossSearchObjective
from optiloss.search.run import SearchOutcome, run_search, run_searches
from optiloss.search.study import METRIC_NAMES, make_sampler, open_search_study, sampler_seed
from optiloss.settings import SearchConfig
from optiloss.storage import DEFAULT_STORAGE, mask_url, open_storage, resolve_storage_url

__all__ = [
    "DEFAULT_STORAGE",
    "LossSearchObjective",
    "METRIC_NAMES",
    "SearchConfig",
    "SearchHooks",
    "SearchOutcome",
    "load_data",
    "make_sampler",
    "mask_url",
    "open_search_study",
    "open_storage",
    "resolve_storage_url",
    "run_search",
    "run_searches",
    "sampler_seed",
]
