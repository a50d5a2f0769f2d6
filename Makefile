# Every target creates .venv with this machine's python3 when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	PYTHONWARNINGS=ignore $(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The loader exits 1 on the sample because two rows are invalid on purpose;
# that is the demo working, so it is reported instead of failing make.
demo: install
	@$(BIN)/callkaro-loader run sample_data/contacts.xlsx --agent-id demo-agent --sandbox \
		--default-region IN --timezone Asia/Kolkata --output sample_data/contacts.results.csv --fresh; \
	code=$$?; \
	if [ $$code -eq 1 ]; then echo "(exit 1: some rows need a person - the sample has two invalid rows on purpose)"; \
	elif [ $$code -ne 0 ]; then exit $$code; fi

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check loader schemas tests bench
	$(BIN)/ruff format --check loader schemas tests bench
	$(BIN)/mypy loader schemas

# Benchmarks (bench/README.md): each scenario in its own process; writes bench/RESULTS.md.
# Inputs are generated once and cached in ~/.cache/callkaro-loader-bench. They run in their own
# .venv-bench, the loader as users install it plus the bench tools: the test tools change what
# is measured (pandera imports hypothesis whenever it is installed, 0.09 s on every run).
BENCH_VENV  := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

$(BENCH_STAMP): pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	PYTHONWARNINGS=ignore $(BENCH_VENV)/bin/python -m pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python bench/run.py

bench-quick: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python bench/run.py --quick

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache .mypy_cache .ruff_cache
