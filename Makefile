# vtp_bench: every target runs inside .venv, which `make setup` creates once (a second run is a no-op).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VTP := $(VENV)/bin/vtp-bench
EXP ?= frozen_synth
DEMO_VIDEOS ?= 1000
DEMO_DATA := data/synth

.PHONY: setup test test-slow demo train eval compare bench bench-data bench-search clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	touch $@

test: setup
	$(VENV)/bin/python -m pytest -q

test-slow: setup
	$(VENV)/bin/python -m pytest -q -m slow

# Generate the synthetic data, train every method that exists, evaluate each checkpoint, print the table and write
# it with its plots to docs/results_synth.md, docs/results_synth.png, docs/results_synth_curves.png.
demo: setup
	$(VTP) data synth --out $(DEMO_DATA) --videos $(DEMO_VIDEOS) --seed 0
	bash scripts/demo.sh

train: setup
	$(VTP) train $(EXP) $(ARGS)

# Encoder speed: our video tower against an explicit-softmax reference (ViT-B/16, 4 frames, batch 8, fp32 CPU);
# on a GPU: make bench ARGS="--device cuda --dtype bf16 --iters 10"
bench: setup
	$(VENV)/bin/python scripts/bench_encoders.py $(ARGS)
	$(VENV)/bin/python scripts/bench_promptswitch.py --write docs/benchmarks.md

# decoding throughput: ours vs naive PyAV vs decord (decord is installed here, for this benchmark only)
bench-data: setup
	$(VENV)/bin/python -m pip install -q decord==0.6.0
	$(VENV)/bin/python scripts/bench_data.py --write docs/benchmarks.md $(ARGS)

# vtp-bench search: faiss IVF recall@10 and speed against the exact search at 1M random vectors (<= 3 min, 2 cores)
bench-search: setup
	$(VENV)/bin/python -m pip install -q faiss-cpu
	$(VENV)/bin/python scripts/bench_search.py --write docs/benchmarks.md $(ARGS)

clean:
	rm -rf runs results $(DEMO_DATA)
