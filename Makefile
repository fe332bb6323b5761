# The two commands a user needs: `make reproduce` and `make test`. Both create .venv if missing.
# PROFILE=smoke|quick|paper picks the scale (default: quick with a CUDA GPU, smoke without).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The stamp is named for a hash of pyproject.toml's content: the venv is reinstalled when that
# content changes, not when a checkout merely touches the file.
PYPROJECT_SHA := $(shell $(PYTHON) -c "import hashlib; print(hashlib.sha256(open('pyproject.toml', 'rb').read()).hexdigest()[:16])")
STAMP := $(VENV)/.greenlib-installed-$(PYPROJECT_SHA)
PROFILE ?=

# Tool caches stay inside the repo (nothing written under $HOME).
export MPLCONFIGDIR := $(CURDIR)/.cache/matplotlib
export IPYTHONDIR := $(CURDIR)/.cache/ipython
export JUPYTER_RUNTIME_DIR := $(CURDIR)/.cache/jupyter-runtime
export PYTHONUNBUFFERED := 1

.PHONY: reproduce test lab figures clean venv

# The venv is (re)built when pyproject.toml's content changes (see STAMP).
$(STAMP):
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing the environment into $(VENV) (first run: a few minutes)"
	@$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@$(PY) -m ipykernel install --sys-prefix --name greenlib --display-name "Python (greenlib)" >/dev/null
	@rm -f $(VENV)/.greenlib-installed*
	@touch $(STAMP)

venv: $(STAMP)

reproduce: $(STAMP)
	@$(PY) -m greenlib.pipeline run $(if $(PROFILE),--profile $(PROFILE))

test: $(STAMP)
	$(PY) -m pytest

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

# Redraw tables and figures from the results store only (no training), on the CPU.
figures: $(STAMP)
	@$(PY) -m greenlib.pipeline run --redraw $(if $(PROFILE),--profile $(PROFILE),--profile quick)

# Generated files only: never data/results or data/paper.
clean:
	rm -rf notebooks/executed/smoke notebooks/executed/*/redraw figures/smoke .cache data/cache .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
