#!/usr/bin/env bash
# One cell (category x target type) of the retrieval_deformation comparison (issue 4), on
# a 2-core CPU: Ours and the four baselines with the same --cpu-config, seed and step
# count, two runs at a time (one per core), then their Table 1 / Table 2 rows appended to
# benchmarks/results/retrieval_deformation.json. About 2 h of wall time per cell.
#
#   usage: benchmarks/rd_cell.sh CATEGORY {points|image} [RUNS_DIR]
#
# Checkpoints go to RUNS_DIR/<category>_<target>_{ours,df,uniform,dar,r} (default
# runs/rd); a run whose model.pt exists is not retrained, so a killed script resumes.
# Table 2 also gets "Best source, undeformed" (every source scored without deformation, the
# best kept): the reference that says whether the learned deformation helps at all.
# Logs: RUNS_DIR/<name>.log. Ship Ours afterwards with benchmarks/rd_ship.sh CATEGORY TARGET
# RUNS_DIR/<category>_<target>_ours (fp16 copy and its eval.json), then its MODEL_CARD.md.
set -euo pipefail
cat="${1:?category}"
target="${2:?points or image}"
runs="${3:-runs/rd}"
sb="${SHAPEBRIDGE:-.venv/bin/shapebridge}"
results="${RESULTS:-benchmarks/results/retrieval_deformation.json}"
config="${CONFIG:---cpu-config}"   # CONFIG=--tiny: a seconds-long dry run of the script
targets="${TARGETS:-200}"
export OMP_NUM_THREADS=1
base="$runs/${cat}_${target}"
mkdir -p "$runs"

train() {  # train NAME ARGS...: one run unless its checkpoint exists
  local name="$1"; shift
  if [[ -f "${base}_$name/model.pt" ]]; then
    echo "skip $name: ${base}_$name/model.pt exists"; return 0
  fi
  echo "train $name: $*"
  "$sb" train retrieval_deformation --target "$target" --category "$cat" $config --seed 0 \
    --out "${base}_$name" "$@" >"${base}_$name.log" 2>&1
}

both() {  # both CMD1 CMD2: run them side by side; fail if either fails
  eval "$1" & local a=$!
  eval "$2" & local b=$!
  local ra=0 rb=0
  wait "$a" || ra=$?
  wait "$b" || rb=$?
  return $(( ra || rb ))
}

both "train ours" "train df --sampling random_pairs"
both "train uniform --sampling uniform" \
  "train dar --baseline dar --deformation ${base}_df && train r --baseline r --deformation ${base}_df"

ido=()
if [[ "$target" == points ]]; then  # IDO fits a 3D target; image targets have none
  # IDO on the prediction at evaluation (the add-on's switch); the paper's "Ours w/ IDO" is
  # a model trained with --ido-in-training, ~30x slower per step on this CPU: not run here
  ido=(--variant "Ours + test-time IDO=${base}_ours:ido"
       --oracle-variant "Ours + test-time IDO=${base}_ours:ido")
fi
append=()
[[ -f "$results" ]] && append=(--append)
"$sb" eval retrieval_deformation --targets "$targets" --json "$results" "${append[@]}" \
  --variant "R=${base}_r:nodeform" --variant "R+DF=${base}_r" \
  --variant "DAR=${base}_dar:nodeform" --variant "DAR+DF=${base}_dar" \
  --variant "Uniform=${base}_uniform" --variant "Ours=${base}_ours" \
  --oracle-variant "DF=${base}_df" --oracle-variant "Uniform=${base}_uniform" \
  --oracle-variant "Ours=${base}_ours" "${ido[@]}" \
  --oracle-variant "Best source, undeformed=${base}_ours:nodeform"
