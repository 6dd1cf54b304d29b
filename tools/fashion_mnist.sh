#!/usr/bin/env bash
# Installs Debian's dataset-fashion-mnist (the real data of the main job, tests and
# benchmarks; nothing is downloaded at run time) when it is missing. Called by
# tools/bootstrap.sh and tools/horovod_lane.sh; as root it runs apt-get, otherwise it says
# what to run.
set -euo pipefail
if ls /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ]; then
  echo "[fashion_mnist] installing Debian's dataset-fashion-mnist" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
    || { echo "[fashion_mnist] apt-get install dataset-fashion-mnist failed" >&2; exit 1; }
else
  echo "[fashion_mnist] Fashion-MNIST is missing: run 'sudo apt-get install -y dataset-fashion-mnist' or pass --data_dir" >&2
fi
