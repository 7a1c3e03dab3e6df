# Quick start: `make demo` and `make test` each set up everything they need on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
FMNIST := /usr/share/datasets/fashion-mnist
export KERAS_BACKEND ?= tensorflow
export TF_CPP_MIN_LOG_LEVEL ?= 2
PYTEST_ARGS ?= -n 2 --durations=25

.PHONY: demo test test-jax lint typecheck bench fashion-mnist install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Reinstall only when the dependencies change.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[test,plot]"
	touch $@

install: $(VENV)/.installed

# The demo needs only the package and matplotlib, not the test stack (JAX, Beam, emulators).
$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[plot]"
	touch $@

# The Debian package puts the IDX files under $(FMNIST); we install it when we can.
fashion-mnist:
	@if [ -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then exit 0; fi; \
	if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  echo "Installing Debian package dataset-fashion-mnist"; \
	  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }; \
	else \
	  echo "Fashion-MNIST is missing from $(FMNIST) and this is not root:"; \
	  echo "  run 'sudo apt-get install dataset-fashion-mnist' (Debian/Ubuntu), then retry."; \
	  exit 1; \
	fi

demo: $(VENV)/.installed-demo fashion-mnist
	$(BIN)/keras-tricks demo --output runs/demo

# ruff (rules and formatter) and mypy, configured in pyproject.toml; .pre-commit-config.yaml runs
# the same versions (the test extra pins them).
LINT_PATHS := keras_tricks tfrecord_tools tests bench
lint: install
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

# mypy alone: the two public packages (`files` in [tool.mypy]).
typecheck: install
	$(BIN)/mypy

# The backend-neutral core (tests marked backend_neutral in tests/conftest.py) again on JAX;
# the slow ones are end-to-end subprocess runs that the TensorFlow run covers.
JAX_PYTEST_ARGS ?= -n 2 -m "backend_neutral and not slow"
test-jax: install fashion-mnist
	KERAS_BACKEND=jax JAX_PLATFORMS=cpu $(BIN)/python -m pytest $(JAX_PYTEST_ARGS)

test: install fashion-mnist lint test-jax
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install fashion-mnist
	@for script in bench/[!_]*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) demo_out runs/demo .pytest_cache .mypy_cache
