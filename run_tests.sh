#!/usr/bin/env bash
# Runs the test suite on a fresh or prepared machine:
#   ./run_tests.sh            (everything but the `slow` benchmark-lane cases)
#   ./run_tests.sh -m slow    (extra pytest arguments are passed through)
set -euo pipefail
cd "$(dirname "$0")"
source tools/bootstrap.sh requirements-dev.txt
export TF_CPP_MIN_LOG_LEVEL=2
if [ "$#" -eq 0 ]; then
  set -- -m "not slow"
fi
exec "$PFTF_VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
