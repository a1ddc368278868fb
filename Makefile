# The two commands of the README: `make demo` (main job on generated data) and `make test`.
# Both create .venv on first use, with the exact versions of requirements/pins.txt (the Dockerfile
# installs the same pins). On this project's build machines pip finds torch on local disk.
PYTHON ?= python3
VENV   ?= .venv
PINS ?= requirements/pins.txt
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint env clean-env

$(STAMP): pyproject.toml $(PINS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing the project into $(VENV) (log: $(VENV)/install.log)"
	@( $(PY) -m pip install --upgrade pip && \
	   $(PY) -m pip install -c $(PINS) torch torchvision && \
	   $(PY) -m pip install -c $(PINS) -e '.[dev]' ) > $(VENV)/install.log 2>&1 \
	 || { tail -n 40 $(VENV)/install.log; echo "install failed: see $(VENV)/install.log"; exit 1; }
	@touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(PY) -m train.demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean-env:
	rm -rf $(VENV)
