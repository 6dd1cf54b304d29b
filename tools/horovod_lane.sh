#!/usr/bin/env bash
# The Horovod lane: a second virtual environment on the TensorFlow 2.15 stack, because Horovod
# 0.28.1 (the last release) builds against TensorFlow <= 2.15 only (../shared/DESIGN.md, 4).
#   * a virtual environment in $PFTF_HVD_VENV (default: .venv-hvd in the repository),
#   * the pinned stack of requirements-horovod.txt (TF 2.15.1, tf-keras 2.15.1, TFMOT 0.8.0, numpy
#     1.26), then Horovod compiled from source against that TensorFlow with Gloo and without
#     MPI/PyTorch/MXNet (142-266 s measured on 2 cores), reinstalled only when the pins change,
#   * the package itself in editable mode,
#   * Debian's dataset-fashion-mnist when missing,
#   * a check that `horovodrun --check-build` shows TensorFlow and Gloo.
# Then runs its arguments, if any, with the lane's python (PFTF_HVD_VENV exported, the
# venv's bin first on PATH so `horovodrun` resolves):
#   tools/horovod_lane.sh                              (prepare only)
#   tools/horovod_lane.sh -m pytest tests/test_horovod.py -q
#   tools/horovod_lane.sh -c 'import horovod.tensorflow as hvd; hvd.init(); print(hvd.size())'
set -euo pipefail
PFTF_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PFTF_HVD_VENV="${PFTF_HVD_VENV:-$PFTF_ROOT/.venv-hvd}"
_req="requirements-horovod.txt"
# Horovod is not in $_req: it must be built after TensorFlow is installed, seeing that
# TensorFlow (--no-build-isolation), and with these build flags.
_hvd_spec="horovod==0.28.1"
_hvd_env=(HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1
          HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1)
_py="$PFTF_HVD_VENV/bin/python"
# Every Keras here is tf-keras (the standalone keras package is removed below); TensorFlow
# 2.15 resolves tf.keras to it only with this set, also for code importing TF before
# pocketflow_tf (horovod.tensorflow does).
export TF_USE_LEGACY_KERAS=1

_log() { echo "[horovod_lane] $*" >&2; }
# pocketflow-tf's metadata requires the main (TF 2.21) stack, so pip lists it as a conflict
# here on every install: expected in this lane, and filtered out.
_pip() { (cd "$PFTF_ROOT" && "$_py" -m pip --disable-pip-version-check "$@" 2>&1 \
            | grep -v -e '^WARNING: Location' -e '^pocketflow-tf .* requires ' \
                     -e '^tensorflow .* requires keras' || true); }

if [ ! -x "$_py" ]; then
  _log "creating virtual environment $PFTF_HVD_VENV"
  python3 -m venv "$PFTF_HVD_VENV"
fi
_stamp="$PFTF_HVD_VENV/.pftf-hvd-installed"
_want="$( (cat "$PFTF_ROOT/$_req" "$PFTF_ROOT/setup.py"; echo "$_hvd_spec ${_hvd_env[*]}") \
          | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$_stamp" 2>/dev/null)" != "$_want" ]; then
  _log "installing pinned dependencies ($_req)"
  # The build tools first (pinned in $_req), so the same pip resolves the rest.
  _pip install -q $(grep -E '^(pip|setuptools|wheel)==' "$PFTF_ROOT/$_req")
  _pip install -q -r "$_req"
  # TensorFlow 2.15 depends on the standalone keras 2.15 package; remove it so that every
  # Keras class comes from tf-keras (see the note in $_req). pip reports the missing
  # dependency; nothing in this lane imports it.
  _pip uninstall -q -y keras
  "$_py" -c "import tensorflow, tensorflow_model_optimization" \
    || { _log "the TensorFlow 2.15 stack did not install; see the pip output above"; exit 1; }
  # Horovod's extension is compiled against the installed TensorFlow's ABI: rebuild when
  # TensorFlow or the Horovod pin changed since the last build. No wheel cache, so a wheel
  # built against another TensorFlow is never reused.
  _built="$PFTF_HVD_VENV/.pftf-hvd-built"
  _against="$_hvd_spec ${_hvd_env[*]} tensorflow==$("$_py" -c 'import tensorflow as tf; print(tf.__version__)' 2>/dev/null)"
  if [ "$(cat "$_built" 2>/dev/null)" != "$_against" ]; then
    _log "compiling $_hvd_spec against $(echo "$_against" | grep -o 'tensorflow==.*') (a few minutes on 2 cores)"
    _t0=$SECONDS
    (cd "$PFTF_ROOT" && env "${_hvd_env[@]}" "$_py" -m pip install -q --disable-pip-version-check \
        --no-build-isolation --no-cache-dir --no-deps --force-reinstall "$_hvd_spec" 2>&1 \
        | { grep -v '^WARNING: Location' || true; }) || { _log "building $_hvd_spec failed"; exit 1; }
    _log "horovod compiled in $((SECONDS - _t0)) s"
    echo "$_against" > "$_built"
  fi
  _pip install -q --no-deps -e .
  "$_py" -c "import horovod.tensorflow as hvd, pocketflow_tf.learners; assert hvd.gloo_built()" \
    || { _log "horovod.tensorflow or pocketflow_tf.learners does not import; see the output above"; exit 1; }
  echo "$_want" > "$_stamp"
fi

"$PFTF_ROOT/tools/fashion_mnist.sh"

export PFTF_ROOT PFTF_HVD_VENV
export PATH="$PFTF_HVD_VENV/bin:$PATH"
_build="$(horovodrun --check-build 2>&1)" || { echo "$_build" >&2; _log "horovodrun --check-build failed"; exit 1; }
# The check-build table marks each built framework / controller with [X]. (Horovod 0.28.1 also
# marks PyTorch although it was not built: its import check only warns. Ignore that row.)
if ! grep -q '\[X\] TensorFlow' <<<"$_build" || ! grep -q '\[X\] Gloo' <<<"$_build"; then
  echo "$_build" >&2
  _log "horovod was built without TensorFlow or Gloo: rm $PFTF_HVD_VENV/.pftf-hvd-built and rerun"
  exit 1
fi

if [ "$#" -gt 0 ]; then
  cd "$PFTF_ROOT"
  exec "$_py" "$@"
fi
