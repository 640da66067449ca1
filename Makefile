# Two commands for a new user; both create or reuse the virtual environment.
#   make run    set up, then run the main job
#   make test   set up, then run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tff_orchestra_installed

.PHONY: install run test docs speed clean

install: $(STAMP)

# TFF 0.87.0 pins jax/jaxlib 0.4.14, which the registry cannot serve together:
# install its other pins plus jax 0.4.13 first, then TFF without dependencies.
$(STAMP): pyproject.toml requirements/tff-0.87.txt
	@$(PYTHON) -c 'import sys; v = sys.version_info; sys.exit(0 if (3, 9) <= v[:2] <= (3, 11) else "TensorFlow Federated 0.87 needs Python 3.9-3.11; this is %d.%d: set PYTHON=python3.11" % v[:2])'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/tff-0.87.txt
	$(PY) -m pip install --quiet --no-deps tensorflow-federated==0.87.0
	$(PY) -m pip install --quiet -c requirements/tff-0.87.txt -e '.[test,docs]'
	@touch $(STAMP)

# The main job: Orchestra on digits, 10 non-IID clients, the three factories
# chained (examples/digits.toml). --resume makes it idempotent: a finished run is
# evaluated again, not retrained.
RUN_DIR ?= outputs/digits-orchestra
run: install
	$(VENV)/bin/tff-orchestra train --config examples/digits.toml --output-dir $(RUN_DIR) --resume

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The documentation site (mkdocs.yml) into site/: open site/index.html.
docs: install
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

# The speed tables: each factory and the chain against TFF's counterparts,
# and one learner round against plain TensorFlow (small CNN, ResNet-18); about 25 min.
speed: install
	$(PY) benchmarks/aggregation_overhead.py --sizes 10000 1000000 --clients 20 --warmup 1 --rounds 5
	$(PY) benchmarks/round_cost.py --models small_cnn resnet18

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache site dist build
