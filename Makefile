# `make test` and `make run` build .venv from requirements.txt on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test lint run clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The whole suite, lint included; CI (.ci/run) calls exactly this.
test: lint
	$(PY) -m pytest -n 2 --durations=15 tests

# The README's main job: a small ViT trained on scikit-learn's digits.
run: venv
	$(PY) -m vit_jax.main --config=configs/demo.py --workdir=workdirs/demo

clean:
	rm -rf $(VENV) workdirs .pytest_cache .ruff_cache
