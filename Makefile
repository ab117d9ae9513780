# The README's first commands: `make demo` runs the whole job locally, `make test` the suite.
SHELL := /bin/bash
# The first Python >= 3.11 on PATH (Ubuntu 24.04 has only python3.12); PYTHON=... overrides it.
PYTHON_CANDIDATES := python3.11 python3.12 python3.13 python3
PYTHON ?= $(firstword $(foreach p,$(PYTHON_CANDIDATES),$(shell command -v $(p) >/dev/null 2>&1 && $(p) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo $(p))))
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned here, not in pyproject.toml: the trainer image brings its own CUDA build,
# while a machine without a GPU takes the CPU wheel (a newer release would pull CUDA, several GB).
CPU_TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

export HF_HUB_DISABLE_TELEMETRY := 1
export HF_HUB_DISABLE_UPDATE_CHECK := 1
export WANDB_MODE ?= offline
export WANDB_SILENT := true
export TOKENIZERS_PARALLELISM := false

.PHONY: help venv test lint demo bench docs clean fidelity containers

help:
	@echo "make demo   devhub + tiny trainer on CPU + uploader, then list the uploaded repos"
	@echo "make test   install everything into $(VENV) and run the whole suite"
	@echo "make lint   ruff"
	@echo "make bench  benchmarks (bench/)"

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -n "$(PYTHON)" || { echo "error: no Python >= 3.11 found (tried $(PYTHON_CANDIDATES)); install one or pass PYTHON=/path/to/python3.11" >&2; exit 2; }
	@echo "using $(PYTHON) ($$($(PYTHON) --version 2>&1)) for $(VENV)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	if ! command -v nvidia-smi >/dev/null 2>&1; then \
		$(BIN)/python -m pip install -q -c constraints.txt "$(CPU_TORCH)"; fi
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[uploader,trainer,dev]"
	touch $(STAMP)

# Two workers (pytest-xdist): most tests wait on devhub, trainer and uploader processes.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

bench: $(STAMP)
	$(BIN)/python -m bench

# Both images and the compose setup on a private Docker engine (tests/containers; installs
# docker.io and debootstrap when missing, skips only where no engine can start).
containers: $(STAMP)
	CKPT_CONTAINERS=1 CKPT_CONTAINERS_TORCH="$(CPU_TORCH)" nice -n 5 \
		$(BIN)/python -m pytest tests/containers -p no:cacheprovider -s -rA

# huggingface_hub's own tests (its PyPI sdist, fetched at run time) against devhub, LFS and Xet.
fidelity: $(STAMP)
	$(BIN)/python -m devhub.fidelity $(FIDELITY_ARGS)

docs: $(STAMP)
	$(BIN)/python -m uploader.cli.docs --update README.md
	$(BIN)/python -m tests.deploy.trainer_docs --update README.md

clean:
	rm -rf $(VENV) .pytest_cache demo-output
