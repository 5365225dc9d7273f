# stm: two commands from a fresh clone:  `make setup` (optional, every target runs it) and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TABLE   ?= 5
PROFILE ?= proxy
DATA_ROOT ?=
DEVICE  ?= auto
SEEDS   ?=
JOBS    ?=

.PHONY: setup test test-fast reproduce book clean help

help:
	@echo "make setup                      create .venv with the pinned set and the stm command"
	@echo "make test                       the whole test suite (what CI runs; prints the 10 slowest tests)"
	@echo "make test-fast                  the suite without the minutes-long end-to-end tests (marked slow)"
	@echo "make reproduce TABLE=N [PROFILE=smoke|proxy|full] [SEEDS=N] [JOBS=N] [DATA_ROOT=DIR]   (TABLE=all: every paper table; TABLE=relatives: the chapter beyond the paper)"
	@echo "make book                       build the Jupyter Book from runs/ (no training)"

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python >= 3.11 needed; set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -ra --durations=10 tests

test-fast: $(STAMP)
	$(PY) -m pytest -q -ra --durations=10 -m "not slow" tests

reproduce: $(STAMP)
	$(VENV)/bin/stm reproduce --table $(TABLE) --profile $(PROFILE) $(if $(DATA_ROOT),--data-root $(DATA_ROOT)) --device $(DEVICE) $(if $(SEEDS),--seeds $(SEEDS)) $(if $(JOBS),--jobs $(JOBS))

book: $(STAMP)
	$(VENV)/bin/stm book

clean:
	rm -rf _build .pytest_cache
