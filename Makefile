# The commands README.md and docs/contributing.md name. Everything they need is installed here, into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

PG_URL = $(shell bash scripts/postgres.sh url)

# pytest-xdist workers; each test's torch (and the commands it starts) on one thread, so two workers
# on two cores do not spin against each other. A test that restarts PostgreSQL waits for the server to
# itself (tests/conftest.py).
TEST_WORKERS ?= 2
PYTEST = OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(TEST_WORKERS)

.PHONY: install demo test check lint format typecheck dashboard bench postgres postgres-stop browser clean

# Reinstalls when pyproject.toml, the lock file or this recipe changes.
$(STAMP): pyproject.toml constraints.txt Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,postgres]'
	@# the frost photographs of the frost corruption; --no-deps leaves out the package's OpenCV
	$(BIN)/python -m pip install --quiet --no-deps imagecorruptions==1.1.2
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/optiloss search studies/digits-demo.toml

# The PostgreSQL tests run against a real local server, started here; the page
# test drives Debian's headless Chromium, installed here when missing. Every test
# runs: one that finds its server or browser missing fails instead of skipping.
test: install lint typecheck postgres browser
	OPTILOSS_TEST_REQUIRE_ALL=1 OPTILOSS_TEST_POSTGRES=$(PG_URL) $(PYTEST)

# The contributor's quick loop (docs/contributing.md): lint, format and type checks and the tests
# not marked slow, with no server and no browser (the tests that need them skip, saying why).
check: install lint typecheck
	$(PYTEST) -m "not slow" -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install
	$(BIN)/mypy

browser:
	bash scripts/chromium.sh

postgres:
	bash scripts/postgres.sh start

postgres-stop:
	bash scripts/postgres.sh stop

dashboard: install
	$(BIN)/optiloss dashboard

# The CPU benchmarks (P5, bench/gpu.sh, and bench/gpu_transfer.sh need a GPU machine).
bench: install
	$(BIN)/python bench/trial_breakdown.py
	$(BIN)/python bench/data_loading.py
	$(BIN)/python bench/augment_throughput.py
	$(BIN)/python bench/trial_throughput.py
	$(BIN)/python bench/loss_overhead.py
	$(BIN)/python bench/screening.py
	$(BIN)/python bench/optuna_overhead.py
	$(BIN)/python bench/search_quality.py
	$(BIN)/python bench/early_rejection.py

clean: postgres-stop
	rm -rf $(VENV) storage/*.db storage/postgres storage/checkpoints
