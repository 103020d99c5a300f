"""Loss-search studies: configuration, storage, the objective and the search loop."""

from optiloss.search.config import SearchConfig, load_config, make_config
from optiloss.search.objective import LossSearchObjective
from optiloss.search.run import SearchOutcome, load_search_data, run_search, run_searches
from optiloss.search.storage import DEFAULT_STORAGE, mask_url, open_storage, resolve_storage_url
from optiloss.search.study import METRIC_NAMES, make_sampler, open_search_study, sampler_seed

__all__ = ["DEFAULT_STORAGE", "LossSearchObjective", "METRIC_NAMES", "SearchConfig", "SearchOutcome",
           "load_config", "make_config", "make_sampler", "mask_url", "open_search_study",
           "load_search_data", "open_storage", "resolve_storage_url", "run_search", "run_searches",
           "sampler_seed"]
