# Two commands on a fresh machine: `make train` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# what training needs (torch first, then the package); `make test` adds the dev extra (pytest,
# ruff, the carla client where it has a wheel, Ray and Optuna), `make docs` the docs extra
BASE := $(VENV)/.installed-base
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs
export WANDB_SILENT ?= true

.PHONY: train watch figures test test-slow lint format docs bench bench-gpu benchmark sweep mutation clean

$(BASE): pyproject.toml setup.py scripts/install_torch.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || (echo "python venv missing: on Debian/Ubuntu, apt install python3-venv"; exit 1)
	bash scripts/install_torch.sh $(PY)
	$(PY) -m pip install --disable-pip-version-check -e .
	touch $(BASE)

$(STAMP): $(BASE)
	$(PY) -m pip install --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

$(DOCS_STAMP): $(BASE)
	$(PY) -m pip install --disable-pip-version-check -e '.[docs]'
	touch $(DOCS_STAMP)

train: $(BASE)
	$(PY) scripts/train.py --config configs/default.yaml $(ARGS)

watch: $(BASE)
	$(PY) scripts/watch.py $(ARGS)

figures: $(BASE)
	$(PY) scripts/figures.py $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

test-slow: $(STAMP)
	# pytest exits 5 when no test carries the marker yet
	$(PY) -m pytest -q -m slow $(ARGS) || [ $$? -eq 5 ]

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

docs: $(DOCS_STAMP)
	# the site (docs/ and mkdocs.yml) into site/; the API pages are read from the source (griffe),
	# nothing is imported. Preview while editing: $(VENV)/bin/mkdocs serve
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: $(STAMP)
	$(PY) scripts/benchmark_env.py
	$(PY) scripts/benchmark_model.py

bench-gpu: $(STAMP)
	# on a machine with CUDA: CUDA tests, simulator and training throughput, under 8 minutes
	# (runs/bench_gpu.json); ARGS="--device cpu --quick" for a smoke run without a GPU
	$(PY) scripts/bench_gpu.py $(ARGS)

benchmark: $(STAMP)
	$(PY) scripts/benchmark.py $(ARGS)

sweep: $(STAMP)
	# ARGS="--config configs/sweep/highway-attention.yaml [--ray auto|ADDRESS] [--trials N]"
	$(PY) scripts/sweep.py $(ARGS)

mutation: $(STAMP)
	# mutmut names a mutant by its file's path: it runs on a copy laid out as the package is
	# imported (.mutation/drive_attention/...), whose mutants/ is the next run's cache; the
	# report (kill rate per module, dated, with the commit) goes to docs/results/mutation/.
	# One torch thread: mutmut forks a child per mutant, and a fork of a process whose thread
	# pool has run hangs in its first parallel op (every mutant then ends as a timeout)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[mutation]'
	$(PY) scripts/mutation_report.py --stage .mutation
	cd .mutation && OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ../$(VENV)/bin/mutmut run --max-children 2 > ../mutation.log 2>&1 || (tail -c 2000 ../mutation.log; exit 1)
	$(PY) scripts/mutation_report.py --root .mutation/mutants --out docs/results/mutation

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mutation mutants mutation.log site
