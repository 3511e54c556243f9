# vtp_bench: every target runs inside .venv, which `make setup` creates once (a second run is a no-op).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VTP := $(VENV)/bin/vtp-bench
EXP ?= frozen_synth
DEMO_VIDEOS ?= 1400
DEMO_SPLITS ?= 800,100,500
DEMO_DATA := data/synth

.PHONY: setup lint test test-slow demo train eval compare bench bench-data bench-encoders bench-search clean

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

# ruff: line length 120, pyflakes, import order (pyproject.toml [tool.ruff])
lint: setup
	$(VENV)/bin/ruff check src tests scripts

# Generate the synthetic data (a 500-video test split: 95 % intervals of R@1 within a few points), train every
# method at 4 frames and 220 steps with seeds 0,1,2, evaluate each checkpoint with every task, print the table with
# intervals, significance marks, seeds and cost, and write it with its plots to docs/results_synth.{md,png} and
# docs/results_synth_curves.png (~30 min on 2 CPU cores). DEMO_ARGS="--seeds 0 --steps 20" for a quick check.
demo: setup
	$(VTP) data synth --out $(DEMO_DATA) --videos $(DEMO_VIDEOS) --splits $(DEMO_SPLITS) --seed 0
	$(VENV)/bin/python scripts/demo.py --data $(dir $(DEMO_DATA)) $(DEMO_ARGS)

train: setup
	$(VTP) train $(EXP) $(ARGS)

# Every benchmark, each writing its section of docs/benchmarks.md (~16 min on 2 shared CPU cores): decoding peers,
# the training step per method, the metrics at 10k-100k queries, encoding a test set, Prompt Switch's scoring,
# the input pipeline (files vs shards).
# VTP_BENCH_THREADS=1 on a shared machine. On a GPU:
#   $(VENV)/bin/python scripts/bench_train.py --device cuda --dtype bf16 [--compile] --write docs/benchmarks.md
BENCH_CACHE ?= /tmp/vtp_bench_data
bench: setup bench-data
	test -f $(DEMO_DATA)/train.jsonl || \
	  $(VTP) data synth --out $(DEMO_DATA) --videos $(DEMO_VIDEOS) --splits $(DEMO_SPLITS) --seed 0
	$(VENV)/bin/python scripts/bench_train.py --write docs/benchmarks.md
	$(VENV)/bin/python scripts/bench_metrics.py --write docs/benchmarks.md
	$(VENV)/bin/python scripts/bench_eval.py --write docs/benchmarks.md
	$(VENV)/bin/python scripts/bench_promptswitch.py --write docs/benchmarks.md
	$(VENV)/bin/python scripts/bench_input.py --write docs/benchmarks.md

# the video tower (ViT-B/16, 4 frames, batch 8) against its explicit-softmax reference, printed (~5 min on CPU);
# on a GPU: make bench-encoders ARGS="--device cuda --dtype bf16 --iters 10"
bench-encoders: setup
	$(VENV)/bin/python scripts/bench_encoders.py $(ARGS)

# decoding throughput: ours vs naive PyAV vs decord 0.6, decord2 and torchcodec, installed here for this benchmark
# only (decord and decord2 both install a package named decord: each gets its own --target folder); a peer that
# fails to install or run is reported with its error
bench-data: setup
	-$(VENV)/bin/python -m pip install -q --no-deps --target $(BENCH_CACHE)/site-decord06 decord==0.6.0
	-$(VENV)/bin/python -m pip install -q --no-deps --target $(BENCH_CACHE)/site-decord2 decord2==3.4.0
	-$(VENV)/bin/python -m pip install -q torchcodec==0.17.0
	VTP_BENCH_CACHE=$(BENCH_CACHE) $(VENV)/bin/python scripts/bench_data.py --write docs/benchmarks.md $(DATA_ARGS)

# vtp-bench search: faiss IVF recall@10 and speed against the exact search at 1M random vectors (<= 3 min, 2 cores)
bench-search: setup
	$(VENV)/bin/python -m pip install -q faiss-cpu
	$(VENV)/bin/python scripts/bench_search.py --write docs/benchmarks.md $(ARGS)

clean:
	rm -rf runs results $(DEMO_DATA)
