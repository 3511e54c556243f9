#!/usr/bin/env bash
# The demo after the data exists: train every method that has a *_synth experiment, evaluate each final
# checkpoint on the synthetic test split, print one comparison table. Called by `make demo`.
set -euo pipefail
VTP=${VTP:-.venv/bin/vtp-bench}
EXPERIMENTS=${EXPERIMENTS:-frozen_synth}
mkdir -p results
for exp in $EXPERIMENTS; do
  rm -rf "runs/$exp/demo"
  "$VTP" train "$exp" run.version=demo
  "$VTP" eval --ckpt "runs/$exp/demo/checkpoints/last.ckpt" --dataset synth --split test --out "results/$exp.json"
done
echo
echo "== synthetic test split (chance R@1 = 100 / number of test videos) =="
"$VTP" compare results/ --plot results/compare.png
