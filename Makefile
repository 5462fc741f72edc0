# Two commands set everything up on a fresh machine:
#   make demo   create .venv if missing, install convop, run the deblurring showcase (convop demo)
#   make test   same install, then lint, the test suite, the MPI tests (mpiexec -n 1, 2, 3)
#               and the docs build (Sphinx, warnings are errors; the examples, which the
#               test suite has run, are not run again)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.convop-installed
# MPI comes from the mpich wheel of the test extra. A hung MPI test fails after
# MPI_TEST_TIMEOUT s (pytest-timeout ends the rank, and with it the job); the first failure
# ends the job (tests/mpi/conftest.py); a whole job is killed after MPI_TIMEOUT s.
MPIEXEC          := $(VENV)/bin/mpiexec
MPI_RANKS        ?= 1 2 3
MPI_TIMEOUT      ?= 600
MPI_TEST_TIMEOUT ?= 60

.PHONY: demo test test-mpi lint docs format install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test,plot,docs,mpi,demo,tiff,psf]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/convop demo

lint: $(STAMP)
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

# The docs build here does not run the examples again: the test suite ran each one.
test: lint
	$(PY) -m pytest
	$(MAKE) test-mpi
	CONVOP_DOCS_EXAMPLES=skip $(MAKE) docs

# Each rank count is one job; any failing rank, a hang, or a job where no test passed
# (tests/mpi/conftest.py) fails the target. Then the distributed example on 2 ranks (it
# checks its result against the serial solve and exits non-zero on every rank otherwise).
test-mpi: $(STAMP)
	@for n in $(MPI_RANKS); do \
		echo "== MPI tests on $$n ranks"; \
		OMP_NUM_THREADS=1 timeout $(MPI_TIMEOUT) $(MPIEXEC) -n $$n \
			$(PY) -m pytest tests/mpi --with-mpi -q -p no:cacheprovider \
			--timeout=$(MPI_TEST_TIMEOUT) --timeout-method=thread || exit 1; \
	done
	@echo "== examples/distributed_deconvolution.py on 2 ranks"
	@out=$$(mktemp -d) && OMP_NUM_THREADS=1 timeout $(MPI_TIMEOUT) $(MPIEXEC) -n 2 \
		$(PY) examples/distributed_deconvolution.py --quick --out $$out; \
		status=$$?; rm -rf $$out; exit $$status

# The site, into site/: Sphinx with every warning an error. The gallery runs every example
# with --quick (CONVOP_DOCS_FULL=1 make docs: full size); unchanged examples are not re-run.
docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -q -b html -d build/doctrees docs site
	@echo "The site is in site/. To view it: $(PY) -m http.server -d site 8000, then open http://localhost:8000/"

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache build site *.egg-info convop-demo.png docs/gallery
