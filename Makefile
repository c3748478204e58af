# Two commands a newcomer needs:  make train  and  make test.  Both set up .venv from nothing.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed

# `make train` knobs: a short run a laptop finishes in minutes.
ALGO    ?= SACALaM
ENV     ?= SafetyPointGoal1-v0
STEPS   ?= 20000
SEED    ?= 0
# OmniSafe's CLI defaults to 16 torch threads, which oversubscribes small machines.
THREADS ?= 2
LOG_DIR ?= $(CURDIR)/runs
# test files run on this many workers (pytest-xdist; each file stays on one worker)
TEST_JOBS ?= 2
PYTEST_ARGS ?=
# the slowest tests, listed after every run, so the suite's time (aim: under 15 min from nothing)
# can be kept where it is spent
DURATIONS ?= 15

.PHONY: setup train test check-wheel clean

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py
	rm -rf $(VENV)
	"$$(scripts/find-python310.sh)" -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,ray]'
	touch $(STAMP)

train: $(STAMP)
	$(VENV)/bin/omnisafe train --algo $(ALGO) --env-id $(ENV) --total-steps $(STEPS) \
		--torch-threads $(THREADS) --log-dir $(LOG_DIR) --custom-cfgs seed --custom-cfgs $(SEED)
	@echo "logs (progress.csv, config.json, TensorBoard events, checkpoints) are in:"
	@ls -dt $(LOG_DIR)/train/$(ALGO)-{$(ENV)}/seed-* | head -n 1
	@echo "view the curves with: $(VENV)/bin/tensorboard --logdir $(LOG_DIR)/train"

test: $(STAMP)
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadfile --durations=$(DURATIONS) $(PYTEST_ARGS)

# Slow, not part of `make test`: the wheel in a fresh venv with every dependency from pip.
check-wheel: $(STAMP)
	$(PY) scripts/check_wheel.py

clean:
	rm -rf $(VENV) runs .pytest_cache
