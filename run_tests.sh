#!/usr/bin/env bash
# Runs the test suite on a fresh or prepared machine:
#   ./run_tests.sh            (everything but the `slow` benchmark-lane cases, then the
#                              documentation's strict build (mkdocs.yml), then the
#                              Horovod lane: tests/test_horovod.py on the TF 2.15 stack that
#                              tools/horovod_lane.sh prepares; compiling Horovod takes about
#                              5 minutes the first time; then the ARM64 lane: the `arm64`
#                              cases of tests/test_arm64.py with the aarch64 LiteRT under
#                              qemu, which tools/arm64_lane.sh prepares, about a minute the
#                              first time)
#   ./run_tests.sh -m slow    (extra pytest arguments are passed through; main stack only)
# PFTF_SKIP_HOROVOD_LANE=1 / PFTF_SKIP_ARM64_LANE=1 leave a lane out (local iterations; CI
# always runs both). Both lanes run even when the first fails; the status is then 1.
set -euo pipefail
cd "$(dirname "$0")"
source tools/bootstrap.sh requirements-dev.txt
export TF_CPP_MIN_LOG_LEVEL=2
if [ "$#" -gt 0 ]; then
  exec "$PFTF_VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
fi
"$PFTF_VENV/bin/python" -m pytest -q -p no:cacheprovider -m "not slow and not arm64"
# The documentation builds without a warning: its flag reference is generated from the
# learners' Options and its API pages from the docstrings, so a change there shows here.
source tools/bootstrap.sh requirements-docs.txt
NO_MKDOCS_2_WARNING=1 "$PFTF_VENV/bin/python" -m mkdocs build --strict --quiet
failed=()
if [ "${PFTF_SKIP_HOROVOD_LANE:-0}" = "1" ]; then
  echo "[run_tests] Horovod lane skipped (PFTF_SKIP_HOROVOD_LANE=1)" >&2
else
  tools/horovod_lane.sh -m pytest -q -p no:cacheprovider tests/test_horovod.py \
    || failed+=(Horovod)
fi
if [ "${PFTF_SKIP_ARM64_LANE:-0}" = "1" ]; then
  echo "[run_tests] ARM64 lane skipped (PFTF_SKIP_ARM64_LANE=1)" >&2
else
  # In the lane (PFTF_ARM64_LANE=1) the arm64 cases must run: a broken lane fails them.
  tools/arm64_lane.sh -m pytest -q -p no:cacheprovider -m arm64 tests/test_arm64.py \
    || failed+=(ARM64)
fi
if [ "${#failed[@]}" -gt 0 ]; then
  echo "[run_tests] failed lane(s): ${failed[*]}" >&2
  exit 1
fi
