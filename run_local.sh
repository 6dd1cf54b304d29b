#!/usr/bin/env bash
# Runs a pocketflow-tf run script on this machine, PocketFlow style:
#   ./run_local.sh nets/resnet_at_fmnist_run.py [--learner full-prec] [--flags...]
#   ./run_local.sh -n 1 nets/convnet_at_fmnist_run.py
# The first call creates .venv, installs the pinned stack and the Fashion-MNIST package.
set -euo pipefail
cd "$(dirname "$0")"
workers=1
if [ "${1:-}" = "-n" ]; then
  workers="${2:-}"
  shift 2 || true
fi
if ! [[ "$workers" =~ ^[1-9][0-9]*$ ]]; then
  echo "run_local.sh: invalid value for -n: '$workers'. Accepted: a whole number of workers >= 1." >&2
  exit 2
fi
if [ "$workers" != "1" ]; then
  echo "run_local.sh: -n $workers: multi-worker training is not in this version yet (issue 7); use -n 1." >&2
  exit 2
fi
script="${1:-}"
if [ -z "$script" ] || [ ! -f "$script" ]; then
  echo "run_local.sh: run script '${script}' not found. Accepted: a file such as nets/resnet_at_fmnist_run.py" >&2
  exit 2
fi
shift
source tools/bootstrap.sh requirements.txt
exec "$PFTF_VENV/bin/python" "$script" "$@"
