# Two commands on a fresh machine (README "Quickstart"):
#   make reproduce   virtual environment + pinned install, then the whole comparison (config/default.yaml)
#   make test        the same environment, then the test suite (what .ci/run does)
# Variables: VENV (default .venv), PYTHON (interpreter that creates it), CORES (snakemake --cores),
# SNAKEMAKE_ARGS (extra snakemake options, e.g. --configfile config/smoke.yaml), PYTEST_ARGS.
# After the first install both work offline: the install step is skipped while the stamp is newer
# than pyproject.toml and constraints.txt.

VENV ?= .venv
PYTHON ?= python3
CORES ?= all
SNAKEMAKE_ARGS ?=
PYTEST_ARGS ?=
# torch first and pinned: `pip install torch==2.13.0` takes the CPU wheel here; the package install
# then keeps it (-c constraints.txt) instead of resolving a multi-GB CUDA build.
TORCH ?= torch==2.13.0

BIN := $(VENV)/bin
# the environment's commands (fedicra, snakemake, flower-*) first on PATH, as after `activate`
RUN := PATH="$(abspath $(BIN)):$$PATH"
STAMP := $(VENV)/.fedicra-installed

.PHONY: reproduce test install clean-venv

reproduce: $(STAMP)
	$(RUN) snakemake --cores $(CORES) $(SNAKEMAKE_ARGS)

# Flower and matplotlib write to the home directory and phone home: a private, throw-away home for
# the tests, and no telemetry or update check.
test: $(STAMP)
	@scratch=$$(mktemp -d) && trap 'rm -rf "$$scratch"' EXIT && \
	FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 MPLBACKEND=Agg \
	FLWR_HOME="$$scratch/flwr" MPLCONFIGDIR="$$scratch/mpl" XDG_CACHE_HOME="$$scratch/cache" \
	$(RUN) python -m pytest $(PYTEST_ARGS)

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q $(TORCH)
	$(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt -e ".[test]"
	touch $@

clean-venv:
	rm -rf $(VENV)
