#!/usr/bin/env bash
# Quick figures of every learner, to check that a refactoring changed no behaviour:
#   tools/quick_figures.sh OUT_DIR [LEARNER...]
# Runs each learner (default: all but full-prec) once on the committed convnet_at_fmnist
# baseline with a tiny budget (0.07 of the recipe's epochs on 2,048 images, 200 verification
# images) and writes OUT_DIR/<learner>.txt (the run's summary) and OUT_DIR/figures.txt
# (test accuracy, parameters, FLOPs, .tflite bytes and accuracy: no timings). Run it on the
# old and the new commit and `diff` the two figures.txt: the seeds are fixed, so any
# difference is a change of behaviour. About 8 minutes on 2 cores.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: tools/quick_figures.sh OUT_DIR [LEARNER...]}
shift
learners=("$@")
[ ${#learners[@]} -eq 0 ] && learners=(channel dis-chn-pruned weight-sparse uniform non-uniform product-quant auto)
mkdir -p "$out"
source tools/bootstrap.sh requirements.txt >/dev/null
base=bench/artifacts/convnet_at_fmnist_e15_s0.keras
common=(--model_path="$base" --nb_epochs_rat=0.07 --nb_train_samples=2048 --num_verify=200
        --latency_runs=10 --verbose=0 --export_modes=float,int8)
declare -A extra=(
  [channel]="--cp_preserve_ratio=0.5 --cp_nb_samples=256"
  [dis-chn-pruned]="--dcp_prune_ratio=0.5 --dcp_nb_iters_aux=20 --dcp_nb_iters_layer=2"
  [weight-sparse]="--ws_prune_ratio=0.5"
  [uniform]="--uql_weight_bits=4"
  [non-uniform]="--nuql_weight_bits=3"
  [product-quant]="--pq_codebook_size=16 --pq_nb_iters_em=5 --pq_nb_iters_layer=5"
  [auto]="--auto_target=flops<=0.6 --auto_max_trials=2 --auto_proxy_steps=5 --auto_latency_rounds=3 --auto_final_latency_rounds=5"
)
: > "$out/figures.txt"
for name in "${learners[@]}"; do
  ext=.keras; [ "$name" = uniform ] && ext=.h5  # QAT models save as .h5
  # shellcheck disable=SC2086  # the extra flags are words
  TF_CPP_MIN_LOG_LEVEL=2 "$PFTF_VENV/bin/python" nets/convnet_at_fmnist_run.py --learner="$name" \
    "${common[@]}" ${extra[$name]:-} --save_path="$out/$name/model$ext" \
    --log_dir="$out/$name/logs" > "$out/$name.txt" 2> "$out/$name.err"
  rc=$?
  { echo "== $name (exit $rc)"
    grep -E '^(test accuracy|parameters|FLOPs|\.tflite)' "$out/$name.txt" \
      | sed -E 's/, [0-9.]+ ms\/image.*//'
  } >> "$out/figures.txt"
done
cat "$out/figures.txt"
