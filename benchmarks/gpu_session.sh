#!/usr/bin/env bash
# The GPU work of a session that is lent a CUDA machine (run there, from the repo root, by
# the `device` tool; results land in $OUT and come back to this machine).
#
#   benchmarks/gpu_session.sh bench        GPU benches of both methods -> $OUT
#   benchmarks/gpu_session.sh train [I,J,K] start the paper-width feature-matching trainings
#                                           of chair, table, airplane in the background
#                                           (I,J,K: phase steps, default the paper schedule)
#   benchmarks/gpu_session.sh wait SECS     wait up to SECS for the trainings, print their logs
#   benchmarks/gpu_session.sh finish CATS   fp16 export; full evaluation of CATS (comma list):
#                                           this session's training of a category, else its
#                                           shipped checkpoint, resuming the committed pair
#                                           cache benchmarks/results/fm_eval_cache/CAT.jsonl;
#                                           all packed into $OUT. Back here, copy each
#                                           pack/CAT.jsonl over the committed cache and write
#                                           the tables with `eval feature_matching --categories
#                                           CAT --cache ... --cached-only --append --json
#                                           benchmarks/results/feature_matching.json`.
#   benchmarks/gpu_session.sh rd CELLS [CONFIG] [SECS]
#                                           start retrieval_deformation cells (comma list of
#                                           CATEGORY_TARGET, e.g. chair_points,table_image) in
#                                           the background: benchmarks/rd_cell.sh per cell,
#                                           JOBS=5 (every training of a cell at once);
#                                           IDO_TRAINING=1 adds "Ours w/ IDO" (see below
#                                           for its cost); CONFIG: training
#                                           flags (default "": the paper's size). The epoch
#                                           lines of $WORK/rd/*.log give the seconds so far.
#   benchmarks/gpu_session.sh rd-wait SECS  wait up to SECS for the cells, print their logs
#   benchmarks/gpu_session.sh rd-runs SECS SPEC... [then SPEC...]...
#                                           train retrieval_deformation runs side by side,
#                                           SPEC = NAME:CATEGORY:TARGET[:FLAG,FLAG...] (e.g.
#                                           chair_points_ours_ido:chair:points:--ido-in-training;
#                                           @NAME in a flag is run NAME's directory); a wave
#                                           after "then" starts when the one before is done
#                                           (e.g. DAR after its DF:
#                                           d:chair:points:--sampling,random_pairs then
#                                           a:chair:points:--baseline,dar,--deformation,@d),
#                                           all at CONFIG (default --cpu-config), seed 0, on
#                                           DEVICE (default cuda); wait up to SECS, then pack
#                                           the finished ones (fp16; one library per category,
#                                           rdrunspack/library_CATEGORY, and every run's
#                                           library sha256 in rdrunspack/library.sha256)
#                                           and every log into $OUT (rdruns.tar.*). Evaluate
#                                           back here (on the CPU) after copying a library in.
#   benchmarks/gpu_session.sh rd-finish     pack the cells' results file
#                                           (retrieval_deformation_gpu.{json,md}), logs and
#                                           fp16 copies of Ours / Ours w/ IDO (one library
#                                           per category, as rd-runs) into $OUT
#                                           (rd.tar.*). Back here: untar, commit the results
#                                           under benchmarks/results/, ship a checkpoint with
#                                           its card only if it is better and <= 25 MB.
#
# Device limits (session 13, /work/.library/device/README.md): 15 minutes of device time per
# task, starts included; at most 10 minutes per command; a machine goes back 30 s after a
# call ends, and the background jobs of `train` and `rd` go with it. So chain a start, its
# wait and its finish in ONE call, e.g.
#   benchmarks/gpu_session.sh rd chair_points --cpu-config 60 && \
#     benchmarks/gpu_session.sh rd-wait 420 && benchmarks/gpu_session.sh rd-finish
# with timeout_s above the sum; at most 8 files come back from $OUT (the packs are tars).
# "Ours w/ IDO" (IDO_TRAINING=1) at the CPU config: IDO ran 370-610 iterations per step at
# the start of training (measured on the CPU, 12 steps, chair points, 14.5 s of IDO per step
# on 2 threads); at an estimated ~1 ms per iteration on a GPU that is ~0.5 s per step,
# ~18 min for the 2170 steps: over one command's 10 minutes. Leave IDO_TRAINING unset
# unless a longer lease is lent.
#
# Session 16 (H200): the machine started in ~40 s; 14 rd-runs trainings at the CPU config side
# by side took 95-123 s (points) and 242-302 s (images); what comes back from $OUT is capped
# near 60 MB in all (4 parts of 15 MB came back, a 5th was refused "total"): while the
# machine is warm (30 s), a second call can copy the rest into $OUT. IDO in training
# (--ido-in-training) ran 500-900 IDO iterations per step, 2.9-5.3 s per step with 13 other
# runs on the GPU; IDO then looked at its stopped candidates every iteration (two waits for
# the device each); since session 16 it looks every 16 (`sync_every`), not yet timed.
#
# Needs the package bundle of ../shared/tools/cuda-site-bundle.sh in .cuda-site/ (carried,
# git-ignored), built with EXTRA_WHEELS=manifold3d (the built-in shapes need it). The device
# takes 64 MiB of working tree: move the retrieval_deformation checkpoints but chair_points
# out of the tree for the call (the benches use that one, and `finish` the feature_matching
# ones), or all of backend/zoo for the rd commands (they use none), and put them back after.
set -uo pipefail
case "${1:-}" in  # usage before anything is unpacked
  bench|train|wait|finish|rd|rd-wait|rd-finish|rd-runs) ;;
  *) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 2 ;;
esac
OUT="${OUT:-/tmp/out}"
WORK=/tmp/fm_paper
CATEGORIES="chair table airplane"   # the paper-width trainings
mkdir -p "$OUT" "$WORK"
if [ ! -d /tmp/site ]; then
  mkdir -p /tmp/site && tar xJf .cuda-site/site.tar.xz -C /tmp/site || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
py() { python3 -m backend "$@"; }

# pack_fp16 PACK RUN...: fp16 copies of the finished runs into PACK, one library per
# category (PACK/library_CATEGORY; the others are dropped: a library rebuilds bit for bit from
# category, sources, seed and points, and PACK/library.sha256 lets that be checked)
pack_fp16() {
  python3 - "$@" <<'PY'
import hashlib, json, shutil, sys
from pathlib import Path
from backend.methods.retrieval_deformation.checkpoint import export_fp16
pack, runs = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
with open(pack / "library.sha256", "a") as sums:
    for run in sorted(p for p in runs if (p / "model.pt").is_file()):
        if (pack / run.name).exists():
            continue
        dst = export_fp16(run, pack / run.name)
        for f in sorted((dst / "library").iterdir()):
            sums.write(f"{run.name} {hashlib.sha256(f.read_bytes()).hexdigest()}  {f.name}\n")
        keep = pack / ("library_" + json.loads((run / "config.json").read_text())["train"]["category"])
        if keep.exists():
            shutil.rmtree(dst / "library")
        else:
            (dst / "library").rename(keep)
PY
}

case "${1:-}" in
  bench)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch, pytorch3d, trimesh, zmq; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    py bench feature_matching --device cuda --json "$OUT/bench_feature_matching_cuda.json"
    py bench retrieval_deformation --device cuda --repeats 5 \
      --json "$OUT/bench_retrieval_deformation_cuda.json"
    ;;
  train)
    iters="${2:-4000,4000,8000}"
    for c in $CATEGORIES; do
      setsid nohup python3 -m backend train feature_matching --category "$c" --schedule paper \
        --device cuda --threads 4 --iterations "$iters" --log-every 200 \
        --out "$WORK/$c.pt" > "$WORK/$c.log" 2>&1 < /dev/null &
    done
    sleep "${3:-60}"
    tail -n 3 "$WORK"/*.log
    ;;
  wait)
    end=$((SECONDS + ${2:-300}))
    while [ $SECONDS -lt $end ]; do
      n=$(ls "$WORK"/*.md 2>/dev/null | wc -l)
      [ "$n" -ge $(wc -w <<< "$CATEGORIES") ] && break
      sleep 10
    done
    tail -n 4 "$WORK"/*.log
    ls -la "$WORK"
    ;;
  finish)
    cats="${2:-chair}"
    mkdir -p "$WORK/zoo" "$WORK/pack"
    for c in $CATEGORIES; do
      [ -f "$WORK/$c.pt" ] || continue
      python3 -c "from backend.methods.feature_matching.model import export_fp16; export_fp16('$WORK/$c.pt', '$WORK/zoo/$c.pt')"
      cp "$WORK/$c.json" "$WORK/$c.md" "$WORK/$c.log" "$WORK/pack/"
      cp "$WORK/zoo/$c.pt" "$WORK/pack/$c.fp16.pt"
    done
    # the checkpoints come back first, whatever happens to the evaluation
    tar -C "$WORK" -cf - pack | split -b 15M - "$OUT/ckpt.tar."
    rm -f "$WORK"/pack/*.pt
    for c in ${cats//,/ }; do
      armchair=0; [ "$c" = chair ] && armchair=50
      [ -f "$WORK/zoo/$c.pt" ] || cp "backend/zoo/feature_matching/$c.pt" "$WORK/zoo/$c.pt"
      cache="$WORK/pack/$c.jsonl"
      cp "benchmarks/results/fm_eval_cache/$c.jsonl" "$cache" 2>/dev/null || : > "$cache"
      for s in 0 1 2 3; do
        timeout "${EVAL_SECONDS:-420}" python3 -m backend eval feature_matching --categories "$c" \
          --armchair-pairs "$armchair" --fig6-pairs 0 \
          --checkpoint-dir "$WORK/zoo" --cache "$cache" --device cuda \
          --shard "$s/4" > "$WORK/pack/eval_${c}_$s.log" 2>&1 &
      done
      wait
      py eval feature_matching --categories "$c" --armchair-pairs "$armchair" --fig6-pairs 0 \
        --checkpoint-dir "$WORK/zoo" --cache "$cache" --cached-only \
        --json "$WORK/pack/eval_$c.json" > "$WORK/pack/eval_$c.out" 2>&1
      tail -n 40 "$WORK/pack/eval_$c.out"
    done
    tar -C "$WORK" -cf - pack | split -b 15M - "$OUT/eval.tar."
    ls -la "$OUT"
    ;;
  rd)
    cells="${2:?cells, e.g. chair_points,table_image}"
    mkdir -p "$WORK/rd"
    printf '#!/bin/sh\nexec python3 -m backend "$@"\n' > "$WORK/sb" && chmod +x "$WORK/sb"
    for cell in ${cells//,/ }; do
      JOBS="${JOBS:-5}" IDO_TRAINING="${IDO_TRAINING:-0}" SHAPEBRIDGE="$WORK/sb" \
        CONFIG="${3:-}" RESULTS="$WORK/rd/retrieval_deformation_gpu.json" \
        setsid nohup bash benchmarks/rd_cell.sh "${cell%_*}" "${cell##*_}" "$WORK/rd" \
        > "$WORK/rd/$cell.cell.log" 2>&1 < /dev/null &
    done
    sleep "${4:-90}"
    tail -n 2 "$WORK"/rd/*.log
    ;;
  rd-wait)
    end=$((SECONDS + ${2:-300}))
    while [ $SECONDS -lt $end ] && pgrep -f benchmarks/rd_cell.sh > /dev/null; do sleep 10; done
    tail -n 2 "$WORK"/rd/*.log
    ;;
  rd-runs)
    secs="${2:?seconds to wait}"; shift 2
    runs="$WORK/rdruns"
    mkdir -p "$runs"
    end=$((SECONDS + secs))
    waiting() { pgrep -f "backend train retrieval_deformation" > /dev/null; }
    for spec in "$@" then; do
      if [ "$spec" = then ]; then  # the end of a wave: wait for it (e.g. DF before DAR)
        while [ $SECONDS -lt $end ] && waiting; do sleep 5; done
        continue
      fi
      IFS=: read -r name cat target flags <<< "$spec"
      flags="${flags//,/ }"
      # shellcheck disable=SC2086  # CONFIG and the flags are word lists
      OMP_NUM_THREADS=1 setsid nohup python3 -m backend train retrieval_deformation \
        --target "$target" --category "$cat" ${CONFIG---cpu-config} --seed 0 \
        --device "${DEVICE:-cuda}" --out "$runs/$name" ${flags//@/$runs/} \
        > "$runs/$name.log" 2>&1 < /dev/null &
    done
    echo "waited $SECONDS s"
    tail -n 2 "$runs"/*.log
    command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,utilization.gpu,memory.used --format=csv
    pack="$WORK/rdrunspack"
    mkdir -p "$pack"
    cp "$runs"/*.log "$pack/"
    pack_fp16 "$pack" "$runs"/*/
    tar -C "$WORK" -cf - rdrunspack | split -b 15M - "$OUT/rdruns.tar."
    ls -la "$OUT"
    ;;
  rd-finish)
    pack="$WORK/rdpack"
    mkdir -p "$pack"
    cp "$WORK"/rd/retrieval_deformation_gpu.* "$WORK"/rd/*.log "$pack/" 2>/dev/null
    pack_fp16 "$pack" "$WORK"/rd/*_ours "$WORK"/rd/*_ours_ido
    tar -C "$WORK" -cf - rdpack | split -b 15M - "$OUT/rd.tar."
    ls -la "$OUT"
    ;;
esac
