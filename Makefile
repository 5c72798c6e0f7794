# Every target creates .venv when missing and installs with the pinned constraints.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export OMP_NUM_THREADS ?= 2

.PHONY: demo test lint bench bench-limits bench-rbm bench-ais bench-temporal bench-deep bench-midi bench-prepare bench-quality clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0 setuptools wheel
	$(PY) -m pip install -q -c constraints.txt --no-build-isolation -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/rnnrbm demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples
	$(VENV)/bin/lint-imports

test: lint
	$(VENV)/bin/pytest -q

bench: bench-limits bench-rbm bench-ais bench-temporal bench-deep bench-midi bench-prepare bench-quality

bench-limits: $(STAMP)
	$(PY) benchmarks/bench_limits.py

bench-rbm: $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -c benchmarks/constraints.txt rbms
	$(PY) benchmarks/bench_rbm.py

bench-ais: $(STAMP)
	$(PY) benchmarks/bench_ais.py --rbms 500

bench-temporal: $(STAMP)
	$(PY) benchmarks/bench_temporal.py --gradient autograd direct

bench-deep: $(STAMP)
	$(PY) benchmarks/bench_deep.py

bench-midi: $(STAMP)
	$(PY) benchmarks/bench_midi.py

bench-prepare: $(STAMP)
	$(PY) benchmarks/bench_prepare.py

bench-quality: $(STAMP)
	$(PY) benchmarks/bench_quality.py --model rnn-nade --json
	$(PY) benchmarks/bench_quality.py --model rnn-rbm --json

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
