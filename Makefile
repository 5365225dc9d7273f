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

.PHONY: setup lock test test-fast test-compile reproduce book clean help

help:
	@echo "make setup                      create .venv with exactly requirements.lock and the stm command"
	@echo "make lock                       regenerate requirements.lock (uv, hashes) and environment.yml from pyproject.toml"
	@echo "make test                       the whole test suite (what CI runs; prints the 10 slowest tests)"
	@echo "make test-fast                  the suite without the minutes-long end-to-end tests (marked slow)"
	@echo "make test-compile               every registry variant through inductor, compiled == eager (~35 min on 2 cores)"
	@echo "make reproduce TABLE=N [PROFILE=smoke|proxy|full] [SEEDS=N] [JOBS=N] [DATA_ROOT=DIR]   (TABLE=all: every paper table; TABLE=relatives: the chapter beyond the paper)"
	@echo "make book                       build the Jupyter Book from runs/ (no training)"

setup: $(STAMP)

# .venv/ is exactly requirements.lock (hash-checked; pip and setuptools included) plus the package
# itself, built with the locked setuptools; `tools/lockfile.py check` refuses anything else.
$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python >= 3.11 needed; set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) tools/lockfile.py check
	touch $(STAMP)

# The lock, from pyproject.toml's abstract requirements, with a kept tool (uv, pinned here, in its
# own venv under .cache/). Existing pins are kept unless pyproject.toml needs others; to move
# every pin to the newest release, delete requirements.lock first. Then environment.yml.
UV_VERSION := 0.13.9
UV := .cache/uv-$(UV_VERSION)/bin/uv
lock:
	test -x $(UV) || { $(PYTHON) -m venv .cache/uv-$(UV_VERSION) && .cache/uv-$(UV_VERSION)/bin/pip install -q uv==$(UV_VERSION); }
	$(UV) pip compile pyproject.toml --all-extras --group setup --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-config -o requirements.lock --quiet
	$(PYTHON) tools/lockfile.py

test: $(STAMP)
	$(PY) -m pytest -q -ra --durations=10 tests

test-fast: $(STAMP)
	$(PY) -m pytest -q -ra --durations=10 -m "not slow" tests

test-compile: $(STAMP)
	$(PY) -m pytest -q -ra --durations=10 -m compile_all tests/test_compile.py

reproduce: $(STAMP)
	$(VENV)/bin/stm reproduce --table $(TABLE) --profile $(PROFILE) $(if $(DATA_ROOT),--data-root $(DATA_ROOT)) --device $(DEVICE) $(if $(SEEDS),--seeds $(SEEDS)) $(if $(JOBS),--jobs $(JOBS))

book: $(STAMP)
	$(VENV)/bin/stm book

clean:
	rm -rf _build .pytest_cache
