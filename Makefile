# The two commands a newcomer needs:  make run  |  make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench bench-scale clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

## run: sample this machine every second, CSV files into ./data, /metrics on 127.0.0.1:9808
## (local use: loopback only, unless SIC_HTTP_LISTEN says otherwise; Ctrl-C to stop)
run: $(STAMP)
	SIC_CSV_DIR=$${SIC_CSV_DIR:-./data} SIC_LOG_FORMAT=$${SIC_LOG_FORMAT:-text} \
	SIC_HTTP_LISTEN=$${SIC_HTTP_LISTEN-127.0.0.1:9808} $(BIN)/system-info-collector run

## test: lint, type check, unit and integration tests
test: $(STAMP)
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	@! grep -rn --include='*.py' -e '# fmt: skip' -e '# fmt: off' src tests bench \
		|| { echo 'one formatting style: ruff format, no fmt: skip/off'; exit 1; }
	$(BIN)/mypy
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/run.py

## bench-scale: synthetic 2..1024-CPU hosts next to psutil, and this host next to collectd (~7 min)
bench-scale: $(STAMP)
	$(BIN)/python bench/scale.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
