# Two commands on a fresh machine: `make train` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export WANDB_SILENT ?= true

.PHONY: train test test-slow lint format bench bench-gpu benchmark mutation clean

$(STAMP): pyproject.toml scripts/install_torch.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	bash scripts/install_torch.sh $(PY)
	$(PY) -m pip install --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

train: $(STAMP)
	$(PY) scripts/train.py --config configs/default.yaml $(ARGS)

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

bench: $(STAMP)
	$(PY) scripts/benchmark_env.py
	$(PY) scripts/benchmark_model.py

bench-gpu: $(STAMP)
	# on a machine with CUDA: CUDA tests, simulator and training throughput, under 8 minutes
	# (runs/bench_gpu.json); ARGS="--device cpu --quick" for a smoke run without a GPU
	$(PY) scripts/bench_gpu.py $(ARGS)

benchmark: $(STAMP)
	$(PY) scripts/benchmark.py $(ARGS)

mutation: $(STAMP)
	# mutants of the modules users read numbers from (pyproject's [tool.mutmut]); about
	# 30 minutes on 2 cores from scratch, less when mutants/ holds a previous run
	$(PY) -m pip install --disable-pip-version-check -q -e '.[mutation]'
	$(VENV)/bin/mutmut run --max-children 2 > mutation.log 2>&1 || (tail -c 2000 mutation.log; exit 1)
	$(PY) scripts/mutation_report.py --json mutants/report.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache mutants mutation.log
