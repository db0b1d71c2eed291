#!/usr/bin/env bash
# One cell (category x target type) of the retrieval_deformation comparison (issue 4), on
# a 2-core CPU: Ours and the four baselines with the same --cpu-config, seed and step
# count, two runs at a time (one per core), then their Table 1 / Table 2 rows appended to
# benchmarks/results/retrieval_deformation.json. About 2 h of wall time per cell.
#
#   usage: benchmarks/rd_cell.sh CATEGORY {points|image} [RUNS_DIR]
#
# Checkpoints go to RUNS_DIR/<category>_<target>_{ours,df,uniform,dar,r} (default
# runs/rd); a run whose model.pt exists is not retrained, and every training but R's keeps a
# resumable state (--resume, saved every 5 min), so rerunning a killed script goes on where
# each run was (an encoder-source cell takes ~2 h of one core per joint run and DAR).
# Table 2 also gets "Best source, undeformed" (every source scored without deformation, the
# best kept): the reference that says whether the learned deformation helps at all; both
# tables get "Sampling floor" (a target's samples against a resampling of the same shape),
# the score of a perfect fit at this point count.
# Logs: RUNS_DIR/<name>.log. Ship Ours afterwards with benchmarks/rd_ship.sh CATEGORY TARGET
# RUNS_DIR/<category>_<target>_ours (fp16 copy and its eval.json), then its MODEL_CARD.md.
#
# Environment: SHAPEBRIDGE (the command, default .venv/bin/shapebridge), CONFIG (training
# size, default --cpu-config; "" is the paper's), RESULTS (results file), TARGETS (test
# targets), JOBS (trainings at once, default 2: one per core), SEED (--seed of every training,
# default 0; it also draws the library's sources, so a seed is a whole replicate of the cell
# and its rows belong in their own RESULTS file), IDO_TRAINING=1 (also train the
# paper's "Ours w/ IDO", --ido-in-training, as ours_ido: ~3 h of one core at the CPU config,
# run with --resume, so rerunning the script after a kill goes on from the saved state;
# IDO_WORKERS=N runs its IDO in N processes, --ido-workers: ~1 h 50 min with 2 on the 2 cores),
# INIT_FROM_DF (default 1: Ours, Uniform and Ours w/ IDO start their deformation module from
# the cell's DF, --init-deformation, as the authors' joint trainings do, so DF trains first;
# 0: from scratch, the protocol before session 27), SOURCE_EMBEDDING (encoder: Ours, Uniform,
# Ours w/ IDO and DAR embed the sources with their retrieval encoder, --source-embedding;
# default autodecode). The
# evaluation holds a lock on RESULTS.lock, so cells run side by side append to one results
# file in turn.
set -euo pipefail
cat="${1:?category}"
target="${2:?points or image}"
runs="${3:-runs/rd}"
sb="${SHAPEBRIDGE:-.venv/bin/shapebridge}"
results="${RESULTS:-benchmarks/results/retrieval_deformation.json}"
config="${CONFIG---cpu-config}"   # CONFIG=--tiny: a seconds-long dry run; CONFIG="": paper size
targets="${TARGETS:-200}"
max_jobs="${JOBS:-2}"
seed="${SEED:-0}"
export OMP_NUM_THREADS=1
base="$runs/${cat}_${target}"
mkdir -p "$runs"

train() {  # train NAME ARGS...: one run unless its checkpoint exists
  local name="$1"; shift
  if [[ -f "${base}_$name/model.pt" ]]; then
    echo "skip $name: ${base}_$name/model.pt exists"; return 0
  fi
  echo "train $name: $*"
  local resume=(--resume --state-every 300)
  [[ "$name" == r ]] && resume=()  # R: minutes, no resumable state
  "$sb" train retrieval_deformation --target "$target" --category "$cat" $config --seed "$seed" \
    --out "${base}_$name" "${resume[@]}" "$@" >>"${base}_$name.log" 2>&1
}

pool() {  # pool CMD...: run the commands, at most $max_jobs at a time; fail if any fails
  local pids=() cmd pid rc=0
  for cmd in "$@"; do
    while (( $(jobs -rp | wc -l) >= max_jobs )); do sleep 5; done
    eval "$cmd" & pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
  return $rc
}

se="--source-embedding ${SOURCE_EMBEDDING:-autodecode}"
joint=("train ours $se" "train uniform --sampling uniform $se")
[[ "${IDO_TRAINING:-0}" == 1 ]] && joint+=("train ours_ido --ido-in-training --ido-workers ${IDO_WORKERS:-1} $se")
# R and DAR retrieve over the random-pairs deformation (DF), so they start after it
after_df=("train dar --baseline dar --deformation ${base}_df $se"
          "train r --baseline r --deformation ${base}_df")
if [[ "${INIT_FROM_DF:-1}" == 1 ]]; then
  pool "train df --sampling random_pairs"
  pool "${joint[@]/%/ --init-deformation ${base}_df}" "${after_df[@]}"
else
  pool "${joint[@]}" "train df --sampling random_pairs"
  pool "${after_df[@]}"
fi

ido=()
if [[ "$target" == points ]]; then  # IDO fits a 3D target; image targets have none
  # IDO on the prediction at evaluation (the add-on's switch); the paper's "Ours w/ IDO" is
  # a model trained with --ido-in-training (IDO_TRAINING=1 above), evaluated below if present
  ido=(--variant "Ours + test-time IDO=${base}_ours:ido"
       --oracle-variant "Ours + test-time IDO=${base}_ours:ido")
fi
if [[ -f "${base}_ours_ido/model.pt" ]]; then
  ido+=(--variant "Ours w/ IDO=${base}_ours_ido" --oracle-variant "Ours w/ IDO=${base}_ours_ido")
fi
mkdir -p "$(dirname "$results")"
exec 9>"$results.lock"
flock 9   # one appending evaluation at a time (it reads the file, then rewrites it)
append=()
[[ -f "$results" ]] && append=(--append)
"$sb" eval retrieval_deformation --targets "$targets" --json "$results" "${append[@]}" \
  --variant "R=${base}_r:nodeform" --variant "R+DF=${base}_r" \
  --variant "DAR=${base}_dar:nodeform" --variant "DAR+DF=${base}_dar" \
  --variant "Uniform=${base}_uniform" --variant "Ours=${base}_ours" \
  --oracle-variant "DF=${base}_df" --oracle-variant "Uniform=${base}_uniform" \
  --oracle-variant "Ours=${base}_ours" "${ido[@]}" \
  --oracle-variant "Best source, undeformed=${base}_ours:nodeform" --sampling-floor
