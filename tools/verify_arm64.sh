#!/usr/bin/env bash
# Checks a .tflite file on the aarch64 LiteRT under qemu against the x86 LiteRT and writes
# MODEL.arm64.json (tools/verify_arm64.py; docs/arm64.md). The ARM64 lane must be prepared
# first: tools/arm64_lane.sh (once, cached in .venv-arm64).
#   tools/verify_arm64.sh MODEL.tflite [--inputs X.npy] [--keras_model M.keras] [--cpu cortex-a53]
set -euo pipefail
PFTF_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PFTF_VENV="${PFTF_VENV:-$PFTF_ROOT/.venv}"
if [ ! -x "$PFTF_VENV/bin/python" ]; then
  echo "error: the main environment $PFTF_VENV is missing: run tools/bootstrap.sh" >&2
  exit 2
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
exec "$PFTF_VENV/bin/python" "$PFTF_ROOT/tools/verify_arm64.py" "$@"
