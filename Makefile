# The README's commands. Everything they need is installed here, into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test dashboard bench clean

# Reinstalls when pyproject.toml or the lock file changes.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,postgres]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/optiloss search studies/digits-demo.toml

test: install
	$(BIN)/python -m pytest

dashboard: install
	$(BIN)/optiloss dashboard

bench: install
	$(BIN)/python bench/trial_breakdown.py
	$(BIN)/python bench/data_loading.py
	$(BIN)/python bench/augment_throughput.py

clean:
	rm -rf $(VENV) storage/*.db
