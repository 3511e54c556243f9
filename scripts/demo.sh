#!/usr/bin/env bash
# The demo after the data exists: train every method's *_synth experiment, evaluate each final checkpoint on the
# synthetic dataset with every evaluation task (retrieval on the test split, zero-shot classification of the motion
# classes, temporal grounding on the grounding videos), then print the comparison tables. Called by `make demo`.
# EXPERIMENTS="frozen_synth miles_synth" limits it; one progress line per method with its elapsed time.
set -euo pipefail
VTP=${VTP:-.venv/bin/vtp-bench}
DATA=${DATA:-data}
if [ -z "${EXPERIMENTS:-}" ]; then
  EXPERIMENTS=$(ls experiments/*_synth.yaml | xargs -n1 basename | sed 's/\.yaml$//' | tr '\n' ' ')
fi
TASKS=$("$VTP" list | sed -n 's/^tasks: *//p' | tr -d ',')
mkdir -p results
n=$(echo $EXPERIMENTS | wc -w)
i=0
t_all=$(date +%s)
for exp in $EXPERIMENTS; do
  i=$((i + 1))
  t0=$(date +%s)
  rm -rf "runs/$exp/demo"
  "$VTP" train "$exp" run.version=demo run.keep_checkpoints=last "data.root=$DATA" trainer.enable_progress_bar=false > "results/$exp.train.log" 2>&1 \
    || { echo "[$i/$n] $exp: training failed, see results/$exp.train.log"; tail -20 "results/$exp.train.log"; exit 1; }
  ckpt="runs/$exp/demo/checkpoints/last.ckpt"
  for task in $TASKS; do
    "$VTP" eval --ckpt "$ckpt" --task "$task" --dataset synth --data-root "$DATA" \
      --out "results/$exp.$task.json" > "results/$exp.$task.log" 2>&1 \
      || { echo "[$i/$n] $exp: $task evaluation failed, see results/$exp.$task.log"; exit 1; }
  done
  echo "[$i/$n] $exp: trained and evaluated ($TASKS) in $(( $(date +%s) - t0 )) s"
done
echo
echo "== synthetic dataset, $(( ($(date +%s) - t_all) / 60 )) min for $n methods (chance: retrieval R@1 = 100 / test videos," \
     "zero-shot top-1 = 100 / classes) =="
"$VTP" compare results/ --plot results/compare.png
