#!/usr/bin/env bash
# Runs a pocketflow-tf run script on this machine, PocketFlow style:
#   ./run_local.sh nets/resnet_at_fmnist_run.py [--learner full-prec] [--flags...]
#   ./run_local.sh -n 2 [--backend tf|horovod] nets/convnet_at_fmnist_run.py [--flags...]
# -n N starts N local worker processes (data-parallel, loopback). --backend: `tf`
# (tf.distribute MultiWorkerMirroredStrategy) or `horovod` (horovodrun --gloo, in the
# TF 2.15 environment that tools/horovod_lane.sh prepares); the default is Horovod where
# it is installed, else tf. --debug (here or after the script) shows the full traceback of
# an error instead of the one line saying what to fix.
# The first call creates .venv, installs the pinned stack and the Fashion-MNIST package.
set -euo pipefail
cd "$(dirname "$0")"
workers=1
backend=auto
debug=0
while [ $# -gt 0 ]; do
  case "$1" in
    -n) workers="${2:-}"; shift 2 || shift ;;
    --backend) backend="${2:-}"; shift 2 || shift ;;
    --backend=*) backend="${1#--backend=}"; shift ;;
    --debug) debug=1; shift ;;
    *) break ;;
  esac
done
if ! [[ "$workers" =~ ^[1-9][0-9]*$ ]]; then
  echo "run_local.sh: invalid value for -n: '$workers'. Accepted: a whole number of workers >= 1." >&2
  exit 2
fi
case "$backend" in
  auto|tf|horovod) ;;
  *) echo "run_local.sh: invalid value for --backend: '$backend'. Accepted: tf, horovod (default: horovod where installed, else tf)." >&2; exit 2 ;;
esac
script="${1:-}"
if [ -z "$script" ] || [ ! -f "$script" ]; then
  echo "run_local.sh: run script '${script}' not found. Accepted: a file such as nets/resnet_at_fmnist_run.py" >&2
  exit 2
fi
shift
if [ "$debug" = 1 ]; then
  set -- "$@" --debug  # the run script's own flag
fi
if [ "$backend" = "horovod" ]; then
  # Horovod lives in its own TF 2.15 environment (it does not build against TF 2.21).
  exec tools/horovod_lane.sh -m pocketflow_tf.launcher -n "$workers" --backend horovod -- python "$script" "$@"
fi
source tools/bootstrap.sh requirements.txt
if [ "$workers" = "1" ]; then
  exec "$PFTF_VENV/bin/python" "$script" "$@"
fi
exec "$PFTF_VENV/bin/python" -m pocketflow_tf.launcher -n "$workers" --backend "$backend" -- "$PFTF_VENV/bin/python" "$script" "$@"
