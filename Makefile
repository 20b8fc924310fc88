# When attribution patching lies: the notebook suite.
#   make run     set up .venv (first time) and execute every notebook into runs/$(MODEL)/
#   make unit    the unit tests: core, estimators and analysis on the embedded and tiny models
#                (under a minute on 2 cores)
#   make slow    the slow tests: fresh interpreters, the bench and rerun command lines, training
#   make course  the course's tests: exercise checks and the claims of the committed notebooks
#   make browser JupyterLab in headless Chromium: findings render, the explorer runs live
#   make test    set up, then unit, slow and course, nbval on the committed notebooks, the browser
#                test, the course site, papermill reruns with other parameters and their claims
#                (.ci/run runs it)
SHELL := /bin/bash
# PyTorch's OpenMP threads spin while waiting; next to a Jupyter kernel's own threads on a
# small machine that made notebooks up to 17x slower (measured on 2 cores). Passive waiting
# fixes it; the kernel registered below carries the same setting.
export OMP_WAIT_POLICY ?= PASSIVE
# Set by a Jupyter server for its kernels; the explorer goes live where it is set. The notebooks
# executed here (papermill, nbval) store the explorer's static figure even when make is started
# from inside JupyterLab.
unexport JPY_SESSION_NAME
PYTHON_BASE ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MODEL ?= toy-ioi
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
# Non-default parameters for the CI rerun: another perturbation, seed, size and dtype.
RERUN_PARAMS ?= -p perturbation random_token -p seed 1 -p n_prompts 6 -p dtype float64 \
  -p n_neurons 16 -p n_probes 4 -p results_dir ../runs/ci
# Copies of the notebooks with every exercise's solution filled in (the committed ones keep
# the stubs); make solutions executes them, and so does the CI rerun.
SOLUTIONS_SRC := runs/solutions-src

.PHONY: run test unit slow course browser nbval book rerun-test claims-rerun solutions solutions-src lab toy-model refresh lint format clean distclean bench bench-seeds seeds rerun scaling gpt2-shape

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON_BASE) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: an open range would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (hvp_utils)" \
	  --env OMP_WAIT_POLICY PASSIVE >/dev/null
	touch $(STAMP)

run: $(STAMP)
	@mkdir -p runs/$(MODEL)
	@for nb in $(NOTEBOOKS); do \
	  echo "== $$nb"; \
	  $(VENV)/bin/papermill -k python3 --cwd notebooks --log-level ERROR \
	    $$nb runs/$(MODEL)/$$(basename $$nb) -p model_name $(MODEL) || exit 1; \
	done
	@echo "Executed notebooks are in runs/$(MODEL)/ (open them with 'make lab')."

# Two lanes at once, one per core, each on one torch thread (two threads per lane would put four
# on the two cores and slow both lanes down): the pytest tiers, nbval on notebooks 07 and 08, the
# browser test and the site; nbval on the other notebooks, the parameterised rerun and the claims
# checked on it (each about 22 minutes on CI, after about 3 minutes of installing; each lane
# prints its time). Each line is prefixed with its lane; the target fails when either lane
# does.
NBVAL_LATE := $(filter notebooks/07_% notebooks/08_%,$(NOTEBOOKS))
NBVAL_EARLY := $(filter-out $(NBVAL_LATE),$(NOTEBOOKS))
test: $(STAMP)
	@mkdir -p runs
	@export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1; \
	( $(MAKE) --no-print-directory unit slow course nbval browser book \
	  NBVAL_NOTEBOOKS="$(NBVAL_LATE)" 2>&1; \
	  echo $$? > runs/.lane-tiers; echo "lane done after $$SECONDS s" ) | sed -u 's/^/[tiers] /' & \
	( $(MAKE) --no-print-directory nbval rerun-test claims-rerun \
	  NBVAL_NOTEBOOKS="$(NBVAL_EARLY)" 2>&1; \
	  echo $$? > runs/.lane-notebooks; echo "lane done after $$SECONDS s" ) \
	  | sed -u 's/^/[notebooks] /'; \
	wait; \
	for lane in tiers notebooks; do \
	  test "$$(cat runs/.lane-$$lane)" = 0 || { echo "lane $$lane failed"; exit 1; }; \
	done
	@echo "All checks passed."

# The test tiers (markers in pyproject.toml): unit is everything not marked slow or course, on
# tiny random models and the embedded model. The slow and course tiers also check every
# jaxtyping shape annotation of hvp_utils at run time (beartype); it is left out of unit, where
# instrumenting the package at import would take a third of the tier's minute.
SHAPE_CHECKS = --jaxtyping-packages=hvp_utils,beartype.beartype

unit: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not course and not browser" --durations=10 tests

slow: $(STAMP)
	$(PY) -m pytest -q -m slow --durations=25 $(SHAPE_CHECKS) tests

course: $(STAMP)
	$(PY) -m pytest -q -m course --durations=15 $(SHAPE_CHECKS) tests

# JupyterLab 4 in headless Chromium (tests/test_jupyterlab.py): the findings of notebooks 03 and
# 08 render as markdown, the explorer's widgets run live in a kernel; screenshots go to
# runs/browser/. Needs Chromium at /usr/bin/chromium (Debian: apt-get install chromium).
browser: $(STAMP)
	$(PY) -m pytest -q -m browser -p no:cacheprovider tests/test_jupyterlab.py

# nbval on every notebook (or on NBVAL_NOTEBOOKS).
NBVAL_NOTEBOOKS ?= $(NOTEBOOKS)
nbval: $(STAMP)
	$(PY) -m pytest -q --nbval --nbval-current-env --nbval-sanitize-with notebooks/nbval_sanitize.cfg \
	  -p no:cacheprovider -o addopts="" $(NBVAL_NOTEBOOKS)

# The course as a static site: runs/book/_build/html/index.html (Jupyter Book 1, built offline
# from the committed outputs, nothing executed; about a minute). -W: a warning, such as a broken
# link between pages, fails the build. The pages and their order: book/_toc.yml.
book: $(STAMP)
	$(VENV)/bin/jupyter-book build . --config book/_config.yml --toc book/_toc.yml \
	  --path-output runs/book --all -W -n --keep-going
	@echo "The course site: runs/book/_build/html/index.html"

# The CI rerun executes the solution-filled copies, so every exercise's solution runs end to end.
rerun-test: solutions-src
	@mkdir -p runs/ci
	@for nb in $(NOTEBOOKS); do \
	  echo "== papermill $$nb (solutions filled in) $(RERUN_PARAMS)"; \
	  $(VENV)/bin/papermill -k python3 --cwd notebooks --log-level ERROR \
	    $(SOLUTIONS_SRC)/$$(basename $$nb) runs/ci/$$(basename $$nb) $(RERUN_PARAMS) || exit 1; \
	done

solutions-src: $(STAMP)
	$(PY) -m hvp_utils.cli.notebook_tools solutions $(NOTEBOOKS) --out $(SOLUTIONS_SRC)

# Execute the notebooks with the solutions filled in into runs/solutions/ (each exercise's
# check prints its pass line there). One notebook: make solutions NOTEBOOKS=notebooks/00_*.ipynb
solutions: solutions-src
	@mkdir -p runs/solutions
	@for nb in $(NOTEBOOKS); do \
	  echo "== papermill $$nb (solutions filled in)"; \
	  $(VENV)/bin/papermill -k python3 --cwd notebooks --log-level ERROR \
	    $(SOLUTIONS_SRC)/$$(basename $$nb) runs/solutions/$$(basename $$nb) || exit 1; \
	done

# The claim tests again, on the reruns: every sentence a notebook's findings state must hold
# for the other perturbation, seed and size too.
claims-rerun: $(STAMP)
	HVP_CLAIMS_RUNS=runs/ci $(PY) -m pytest -q tests/test_claims_*.py

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks

toy-model: $(STAMP)
	$(PY) -m hvp_utils.cli.train_toy

# Re-execute the committed notebooks; write them back only when every one succeeds.
refresh: $(STAMP)
	$(PY) -m hvp_utils.cli.notebook_tools refresh $(NOTEBOOKS)

# Every notebook on $(MODEL) into runs/<model>/ with manifest.json and summary.html, e.g.
#   make rerun MODEL=gpt2-small PARAMS="--param dtype=float32" NB=01,04 FORCE=--force
rerun: $(STAMP)
	$(PY) -m hvp_utils.cli.rerun --model $(MODEL) $(PARAMS) $(if $(NB),--notebooks $(NB)) $(FORCE)

# The notebook sequence on a random GPT-2-small-shaped checkpoint (124M parameters, written to
# runs/checkpoints/) at the default budget into runs/gpt2-small-shape/: about 30 minutes on 2
# cores; its manifest.json has each notebook's parameters, time and kernel peak memory
gpt2-shape: $(STAMP)
	$(PY) -m hvp_utils.cli.scaling --checkpoint runs/checkpoints/gpt2-small-shape
	$(PY) -m hvp_utils.cli.rerun --model runs/checkpoints/gpt2-small-shape $(FORCE)

# Cost of each estimator against model size (random-initialised models; see docs/rerun.md)
scaling: $(STAMP)
	$(PY) -m hvp_utils.cli.scaling

# Every estimator and its peers on the embedded model (about 40 minutes on 2 cores); writes
# docs/bench/: estimators.csv, hutchinson.csv, frontier.csv, pareto.png, targets.md, README.md
bench: $(STAMP)
	$(PY) -m hvp_utils.cli.bench --out docs/bench

# The same benchmark at seeds 1 and 2 (about 7 minutes per seed on 2 cores); writes
# docs/bench/seeds/seed<N>/: estimators.csv, hutchinson.csv, frontier.csv, run.json. Notebook 08
# says which of its choices are the same at every seed.
bench-seeds: $(STAMP)
	for seed in 1 2; do \
		$(PY) -m hvp_utils.cli.bench --seed $$seed --tables-only --out docs/bench/seeds/seed$$seed \
		|| exit 1; \
	done

# The seed paper's claims and the key numbers measured on two more prompt samples (notebooks
# 01-07 at seeds 1 and 2, about 8 minutes per seed on 2 cores); writes docs/seeds/:
# measures.csv, key_numbers.csv, run.json. Notebook 08 judges both over these seeds and its own run.
seeds: $(STAMP)
	$(PY) -m hvp_utils.cli.seeds --seeds 1 2 --out docs/seeds

lint: $(STAMP)
	$(VENV)/bin/ruff check hvp_utils hvp_course tests notebooks
	$(VENV)/bin/ruff format --check hvp_utils hvp_course tests notebooks

format: $(STAMP)
	$(VENV)/bin/ruff format hvp_utils hvp_course tests notebooks
	$(VENV)/bin/ruff check --fix hvp_utils hvp_course tests notebooks

clean:
	rm -rf runs .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
