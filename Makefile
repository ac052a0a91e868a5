# Every target bootstraps .venv (Python 3.12 + pinned requirements) by itself.
SHELL := /bin/bash
PY_SYS ?= python3.12
VENV := .venv
PY := $(VENV)/bin/python
# Accelerator builds of JAX beside the CPU default: `make venv ACCEL=cuda12` (or tpu) also
# installs requirements-<ACCEL>.txt (pinned jax[cuda12] / jax[tpu] and their libraries).
ACCEL ?=
ACCELS := cuda12 tpu
ifneq ($(ACCEL),)
ifeq ($(filter $(ACCEL),$(ACCELS)),)
$(error ACCEL=$(ACCEL) is not an accelerator build of this repository: use ACCEL=cuda12 or ACCEL=tpu (requirements-<accel>.txt), or no ACCEL for the CPU build)
endif
endif
ACCEL_REQS := $(if $(ACCEL),requirements-$(ACCEL).txt)
STAMP := $(VENV)/.installed$(if $(ACCEL),-$(ACCEL))
export UV_PYTHON_DOWNLOADS := never
export PYTHONDONTWRITEBYTECODE := 1
# OpenBLAS (JAX's CPU LAPACK: eigh, SVD, QR) busy-waits its worker threads; with any other
# busy process (pytest -n 2, a data loader) decompositions then run 10-100x slower.
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: help venv train test test-all figures reproduce bench lint format lock accel-check clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml $(ACCEL_REQS)
	@$(PY_SYS) -c 'import sys; assert sys.version_info[:2] == (3, 12), sys.version' 2>/dev/null || { \
	  echo "error: python3.12 is required (found: $$($(PY_SYS) --version 2>&1)); install CPython 3.12 or select it with pyenv (.python-version says 3.12)" >&2; exit 1; }
	@test -x $(PY) || $(PY_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv==0.13.9
	$(VENV)/bin/uv pip install -q -p $(PY) -r requirements.txt $(addprefix -r ,$(ACCEL_REQS))
	$(VENV)/bin/uv pip install -q -p $(PY) --no-deps -r requirements-nodeps.txt
	$(VENV)/bin/uv pip install -q -p $(PY) --no-deps -e .
	$(PY) -c 'import sysconfig, pathlib; pathlib.Path(sysconfig.get_paths()["purelib"], "sketchy_harness.pth").write_text("$(CURDIR)\n")'
	@touch $@

venv: $(STAMP)  ## create .venv with the pinned dependencies (ACCEL=cuda12|tpu: + that JAX build)

train: $(STAMP)  ## the main job: Sketchy on the offline ogbg_molpcba mini dataset (CPU, minutes)
	$(PY) launch/train.py experiment=laptop

test: $(STAMP)  ## fast test suite (CPU, no network)
	$(PY) -m pytest -q -n 2 -m "not slow" tests $(PYTEST_ARGS)

test-all: $(STAMP)  ## every test, slow real-data runs included
	$(PY) -m pytest -q -n 2 tests $(PYTEST_ARGS)

figures: $(STAMP)  ## regenerate results/tables and results/figures from results/
	$(PY) -m results.make_figures

reproduce: $(STAMP)  ## every run behind the main-text records, mini scale, resumable (hours)
	$(PY) -m launch.reproduce $(REPRODUCE_ARGS)

bench: $(STAMP)  ## optimizer benchmarks (prints tables of ratios)
	$(PY) benchmarks/optimizer_step.py $(BENCH_ARGS)

lint: $(STAMP)  ## ruff lint + format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)  ## apply ruff format and autofixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The accelerator pins are resolved for the machines that run them (Linux x86_64: glibc 2.28+
# for CUDA, 2.31+ as libtpu's wheels and TPU VMs), against requirements.txt, whatever machine
# runs `make lock` or `make accel-check`.
ACCEL_PLATFORM = --python-version 3.12 --python-platform x86_64-manylinux_$(if $(filter tpu,$(1)),2_31,2_28)

lock: $(STAMP)  ## re-pin requirements*.txt from requirements*.in (no registry URLs)
	$(VENV)/bin/uv pip compile -q -p $(PY) --no-header requirements.in -o requirements.txt
	$(foreach a,$(ACCELS),$(VENV)/bin/uv pip compile -q --no-header $(call ACCEL_PLATFORM,$(a)) \
	  -c requirements.txt requirements-$(a).in -o requirements-$(a).txt &&) true

ACCEL_CHECK = $(VENV)/bin/uv pip compile -q --no-header $(call ACCEL_PLATFORM,$(1)) requirements.txt requirements-$(1).in \
  requirements-$(1).txt -o /dev/null && echo "ok: requirements-$(1).txt resolves with requirements.txt ($(lastword $(call ACCEL_PLATFORM,$(1))), Python 3.12)" \
  || { echo "error: requirements-$(1).txt does not resolve with requirements.txt: run make lock" >&2; exit 1; }

accel-check: $(STAMP)  ## check that requirements-{cuda12,tpu}.txt resolve with requirements.txt (package index, no GPU)
	@$(foreach a,$(ACCELS),$(call ACCEL_CHECK,$(a)) &&) true

clean:  ## remove caches and run outputs (keeps .venv), the trainer's compilation cache too
	rm -rf .pytest_cache .ruff_cache runs outputs multirun ~/.cache/sketchy/jax
