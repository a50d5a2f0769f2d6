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
# Inputs are generated once and cached in ~/.cache/callkaro-loader-bench.
bench: install
	$(BIN)/python bench/run.py

bench-quick: install
	$(BIN)/python bench/run.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
