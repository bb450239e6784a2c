# Entry points of the project (docs/contract.md): make demo | test | test-fast | up | down | status | bench
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LAU_STACK_DIR ?= .stack
STACK_ENV := $(LAU_STACK_DIR)/env
# down and status must work without (re)building the venv
STACK_PY = $(if $(wildcard $(PY)),$(PY),$(PYTHON))

.PHONY: help venv up down status test test-fast demo bench bench-flow chromium

help:
	@echo "make demo    build .venv, start the stack, run the end-to-end demo"
	@echo "make test    build .venv, start the stack, run the test suite, stop the stack"
	@echo "make test-fast  the engine and code tests only (no services, a few minutes)"
	@echo "make up      start S3, MLflow and Prefect on 127.0.0.1 (writes $(STACK_ENV))"
	@echo "make down    stop them (data stays under $(LAU_STACK_DIR)/)"
	@echo "make status  health of each service"
	@echo "make bench   side-by-side benchmark of unlearning methods -> docs/bench/out.json"
	@echo "make bench-flow  deletion flows timed end to end, cold vs warm feature cache -> docs/bench/flow_cnn.json"

# torch first, pinned, so that `pip install -e .` finds it satisfied and never swaps it.
# pip byte-compiles the ~22,700 installed modules one at a time (about 2 minutes here, torch's 2,352
# alone 13 s): compileall does it on every core instead. Compiled they must be: where
# PYTHONDONTWRITEBYTECODE is set (as on this machine) nothing compiles on import, and every process
# would compile torch, MLflow and Prefect from source each time it starts.
$(VENV)/.stamp: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --no-compile -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(VENV)/bin/pip install --no-compile -c constraints.txt -e '.[dev]'
	$(PY) -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	touch $@

venv: $(VENV)/.stamp

up: $(VENV)/.stamp
	$(PY) -m infra.stack up

down:
	$(STACK_PY) -m infra.stack down

status:
	$(STACK_PY) -m infra.stack status

# The dashboard's acceptance test reads the page in Debian's Chromium; installed only when missing
# (apt, as root or through sudo). Nothing else is ever downloaded for it: no browser, no driver.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@echo "installing Debian's chromium and chromium-driver (the dashboard test's browser)" >&2
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) \
		apt-get install -y -qq --no-install-recommends chromium chromium-driver

chromium: $(CHROMIUM)

# tests/run_suite.sh: two pytest workers over what shares the stack, then the tests that stop its
# services alone (beside the service-free ones). The stack is stopped whatever pytest says; the exit
# status is the first failing pytest's (5, no tests collected, fails too). TEST_WORKERS=1: one worker;
# TEST_HEAVY=1: also the tests marked heavy.
TEST_WORKERS ?= 2
TEST_HEAVY ?= 0
test: $(VENV)/.stamp $(CHROMIUM)
	$(MAKE) --no-print-directory up
	source $(STACK_ENV) && PY=$(PY) TEST_WORKERS=$(TEST_WORKERS) TEST_HEAVY=$(TEST_HEAVY) bash tests/run_suite.sh; status=$$?; \
	$(MAKE) --no-print-directory down; \
	exit $$status

# The engine, the code and the data tests: no services needed.
test-fast: $(VENV)/.stamp
	$(PY) -m pytest tests/code tests/data tests/model -q

demo: $(VENV)/.stamp
	$(MAKE) --no-print-directory up
	source $(STACK_ENV) && $(PY) -m cli.demo

bench: $(VENV)/.stamp
	$(VENV)/bin/lau bench --json docs/bench/out.json

# Needs the stack (starts it if it is down); ARCH=resnet18 EPOCHS=1 for a backbone where extraction
# counts; VIA=process for one scheduled-style `lau process` pass instead of one `lau forget` each.
ARCH ?= cnn
VIA ?= forget
bench-flow: $(VENV)/.stamp
	$(MAKE) --no-print-directory up
	source $(STACK_ENV) && $(VENV)/bin/lau bench --flow --arch $(ARCH) $(if $(EPOCHS),--epochs $(EPOCHS)) \
		--via $(VIA) --classes 3,5 --json docs/bench/flow_$(ARCH)$(if $(filter process,$(VIA)),_process).json
