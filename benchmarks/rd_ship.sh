#!/usr/bin/env bash
# Ship a trained retrieval_deformation checkpoint (issue 4): store it in fp16 in the zoo,
# evaluate the stored copy on the test split (eval.json beside it, the rows its
# MODEL_CARD.md quotes) and the fp32 original on the Ours row, to show fp16 does not hurt.
#
#   usage: benchmarks/rd_ship.sh CATEGORY {points|image} [RUN_DIR]
#
# RUN_DIR defaults to runs/rd/<category>_<target>_ours (what benchmarks/rd_cell.sh and
# `shapebridge train retrieval_deformation ... --cpu-config --seed 0` write). The zoo
# directory must not exist yet: a shipped checkpoint is replaced by hand, and only by a
# better one. Point-cloud targets also get the "+ test-time IDO" row (image targets have no
# 3D target to fit). The model card itself is written by hand from the printed tables.
set -euo pipefail
cat="${1:?category}"
target="${2:?points or image}"
run="${3:-runs/rd/${cat}_${target}_ours}"
sb="${SHAPEBRIDGE:-.venv/bin/shapebridge}"
py="${PYTHON:-.venv/bin/python}"
targets="${TARGETS:-200}"
zoo="${ZOO:-backend/zoo/retrieval_deformation}/${cat}_${target}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

[[ -f "$run/model.pt" ]] || { echo "no checkpoint in $run (model.pt missing)" >&2; exit 2; }
"$py" -c "import sys; from backend.methods.retrieval_deformation.checkpoint import export_fp16; \
print('stored', export_fp16(sys.argv[1], sys.argv[2]))" "$run" "$zoo"
du -b "$run/model.pt" "$zoo/model.pt"
if (( $(stat -c %s "$zoo/model.pt") > 25000000 )); then
  echo "$zoo/model.pt is over the zoo's 25 MB per checkpoint; not shipped (removed)" >&2
  rm -r "$zoo"; exit 3
fi

variants=(--variant "Ours=$zoo" --variant "Ours retrieval only=$zoo:nodeform")
[[ "$target" == points ]] && variants+=(--variant "Ours + test-time IDO=$zoo:ido")
"$sb" eval retrieval_deformation --targets "$targets" --json "$zoo/eval.json" "${variants[@]}"
"$sb" eval retrieval_deformation --targets "$targets" --json "$run/eval_fp32.json" \
  --variant "Ours fp32=$run"
