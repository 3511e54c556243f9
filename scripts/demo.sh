#!/usr/bin/env bash
# The demo after the data exists: train every method's *_synth experiment, evaluate each final checkpoint on the
# synthetic dataset with every evaluation task (retrieval on the test split, zero-shot classification of the motion
# classes, temporal grounding on the grounding videos), then write and print the comparison table with its protocol
# footer and plots: docs/results_synth.md, docs/results_synth.png, docs/results_synth_curves.png. Called by
# `make demo`; one progress line per method with its elapsed time.
# Environment: EXPERIMENTS="frozen_synth miles_synth" limits it; TRAIN_ARGS="trainer.max_steps=4" adds training
# overrides (a quick check of the pipeline; the numbers are then meaningless); OUT=docs/results_synth (the .md/.png
# stem); VTP, DATA as below.
set -euo pipefail
VTP=${VTP:-.venv/bin/vtp-bench}
DATA=${DATA:-data}
OUT=${OUT:-docs/results_synth}
TRAIN_ARGS=${TRAIN_ARGS:-}
if [ -z "${EXPERIMENTS:-}" ]; then
  EXPERIMENTS=$(ls experiments/*_synth.yaml | xargs -n1 basename | sed 's/\.yaml$//' | tr '\n' ' ')
fi
TASKS=$("$VTP" list | sed -n 's/^tasks: *//p' | tr -d ',')
mkdir -p results "$(dirname "$OUT")"
n=$(echo $EXPERIMENTS | wc -w)
i=0
t_all=$(date +%s)
files=()
for exp in $EXPERIMENTS; do
  i=$((i + 1))
  t0=$(date +%s)
  rm -rf "runs/$exp/demo"
  # shellcheck disable=SC2086
  "$VTP" train "$exp" run.version=demo run.keep_checkpoints=last "data.root=$DATA" trainer.enable_progress_bar=false \
    $TRAIN_ARGS > "results/$exp.train.log" 2>&1 \
    || { echo "[$i/$n] $exp: training failed, see results/$exp.train.log"; tail -20 "results/$exp.train.log"; exit 1; }
  ckpt="runs/$exp/demo/checkpoints/last.ckpt"
  for task in $TASKS; do
    "$VTP" eval --ckpt "$ckpt" --task "$task" --dataset synth --data-root "$DATA" \
      --out "results/$exp.$task.json" > "results/$exp.$task.log" 2>&1 \
      || { echo "[$i/$n] $exp: $task evaluation failed, see results/$exp.$task.log"; exit 1; }
    files+=("results/$exp.$task.json")
  done
  echo "[$i/$n] $exp: trained and evaluated ($TASKS) in $(( $(date +%s) - t0 )) s"
done
minutes=$(( ($(date +%s) - t_all + 59) / 60 ))
# Each method is scored at its own frame count (LocVTP 4 clips x 2 frames, Prompt Switch's 6-frame prompt cube):
# frames may differ between rows and are shown per row; every other protocol field must agree.
rm -f "$OUT.png" "${OUT}_curves.png"
table=$("$VTP" compare "${files[@]}" --per-row frames --plot "$OUT.png")
name=$(basename "$OUT")
{
  echo "# vtp_bench demo: every method on the synthetic dataset"
  echo
  echo "**These are synthetic numbers.** Each method was trained for a few minutes on CPU (tiny towers, 64 px, a few"
  echo "hundred steps) on vtp_bench's generated dataset of short videos of moving shapes (\`vtp-bench data synth\`), then"
  echo "evaluated with every task. They show that the framework works end to end (training, retrieval, zero-shot"
  echo "classification and grounding evaluation, the comparison table); they say nothing about the methods' merits and"
  echo "are **not the papers' results**. For those, convert the real benchmarks and run the paper configs (README,"
  echo "\"Using real data\"), e.g. \`make train EXP=miles_webvid\`, then"
  echo "\`vtp-bench eval --ckpt runs/miles_webvid/<version>/checkpoints/last.ckpt --dataset msrvtt_1ka --out results/miles.json\`"
  echo "and \`vtp-bench compare results/\`."
  echo
  echo "Made by \`make demo\` ($n methods, $minutes min, $(date -u +%Y-%m-%d)$( [ -n "$TRAIN_ARGS" ] && echo "; training overrides: $TRAIN_ARGS")). Chance levels are in the footer"
  echo "and drawn in the plot."
  echo
  echo "$table"
  echo
  echo "![main metric per method](${name}.png)"
  if [ -f "${OUT}_curves.png" ]; then echo; echo "![training curves](${name}_curves.png)"; fi
} > "$OUT.md"
echo
echo "== synthetic dataset: $n methods in $minutes min; written to $OUT.md, $OUT.png$( [ -f "${OUT}_curves.png" ] && echo ", ${OUT}_curves.png") =="
echo
echo "$table"
