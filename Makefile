# Two commands set everything up on a fresh machine:
#   make demo   create .venv if missing, install convop, run the deblurring showcase (convop demo)
#   make test   same install, then lint, the test suite and the docs build (strict)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.convop-installed

.PHONY: demo test lint docs format install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test,plot,docs]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/convop demo

lint: $(STAMP)
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest
	$(MAKE) docs

docs: $(STAMP)
	$(PY) -m mkdocs build --strict --site-dir site

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache build site *.egg-info convop-demo.png docs/figures
