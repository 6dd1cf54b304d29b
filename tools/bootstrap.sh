#!/usr/bin/env bash
# Prepares a fresh machine for pocketflow-tf; sourced by run_local.sh and run_tests.sh.
#   * a virtual environment in $PFTF_VENV (default: .venv in the repository),
#   * the pinned Python stack (requirements*.txt, every transitive version fixed by
#     constraints.txt), reinstalled only when those files change,
#   * the package itself in editable mode,
#   * Debian's dataset-fashion-mnist when missing (the real data; nothing is downloaded at
#     run time).
# Usage: source tools/bootstrap.sh [requirements-file]
set -euo pipefail
PFTF_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PFTF_VENV="${PFTF_VENV:-$PFTF_ROOT/.venv}"
_req="${1:-requirements.txt}"

_log() { echo "[bootstrap] $*" >&2; }

if [ ! -x "$PFTF_VENV/bin/python" ]; then
  _log "creating virtual environment $PFTF_VENV"
  python3 -m venv "$PFTF_VENV"
fi
# One stamp per requirements file: run_local.sh (requirements.txt) and run_tests.sh
# (requirements-dev.txt, then requirements-docs.txt for the documentation build) alternating
# must not reinstall each other's set every time.
_stamp="$PFTF_VENV/.pftf-installed-$(basename "$_req")"
_want="$(cat "$PFTF_ROOT/$_req" "$PFTF_ROOT/requirements.txt" "$PFTF_ROOT/constraints.txt" "$PFTF_ROOT/setup.py" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$_stamp" 2>/dev/null)" != "$_want" ]; then
  _log "installing pinned dependencies ($_req)"
  (cd "$PFTF_ROOT" && "$PFTF_VENV/bin/python" -m pip install -q --disable-pip-version-check \
      -r "$_req" -c constraints.txt 2>&1 | grep -v '^WARNING: Location' || true)
  (cd "$PFTF_ROOT" && "$PFTF_VENV/bin/python" -m pip install -q --disable-pip-version-check \
      --no-deps -e . 2>&1 | grep -v '^WARNING: Location' || true)
  "$PFTF_VENV/bin/python" -c "import pocketflow_tf.learners, tensorflow_model_optimization, ai_edge_litert" \
    || { _log "the Python stack did not install; see the pip output above"; exit 1; }
  echo "$_want" > "$_stamp"
fi

"$PFTF_ROOT/tools/fashion_mnist.sh"
export PFTF_ROOT PFTF_VENV
