# The two commands of the README: `make demo` (main job on generated data) and `make test`.
# Both create .venv on first use. Torch comes from the pinned release below; on this project's
# CPU build machines pip finds it on local disk. Override TORCH_PIN for another CUDA build.
PYTHON ?= python3
VENV   ?= .venv
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint env clean-env

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing the project into $(VENV) (log: $(VENV)/install.log)"
	@( $(PY) -m pip install --upgrade pip && \
	   $(PY) -m pip install $(TORCH_PIN) && \
	   $(PY) -m pip install -e '.[dev]' ) > $(VENV)/install.log 2>&1 \
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
