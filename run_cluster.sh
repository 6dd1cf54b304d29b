#!/usr/bin/env bash
# Runs a pocketflow-tf run script as data-parallel workers on several hosts:
#   ./run_cluster.sh --hosts h1:2,h2:2 [--backend tf|horovod] nets/convnet_at_fmnist_run.py [--flags...]
# --hosts lists host:slots (worker processes per host; each host once; the first slot of the
# first host is the chief, which alone writes the model, exports, records and backups).
# tf backend (tf.distribute MultiWorkerMirroredStrategy, the default here): every worker gets
# a TF_CONFIG naming all workers' host:port (port .. port+slots-1 on each host, --port P or
# P1,P2,... one per host; default 23456, or free ports when all hosts are this machine).
#   * all hosts are this machine (e.g. 127.0.0.1:1,127.0.0.2:1): every worker starts here;
#   * --this-host-index i: starts host i's workers here: run the same command on every host
#     (by hand, or from a scheduler), each with its own index; no ssh needed;
#   * --this-host-index i --print-env: prints host i's workers' TF_CONFIG as export lines;
#   * --ssh: starts the other hosts' workers over ssh (same directory there);
#   * otherwise: prints the command to run on each host, and starts nothing.
# horovod backend (in the TF 2.15 lane that tools/horovod_lane.sh prepares): hosts that are
# all this machine get their ranks started here with a Gloo rendezvous (no ssh); other hosts
# go through horovodrun --gloo -H, which starts remote ranks over ssh.
# Every check (host list, names, reachability, ports) runs before any worker starts.
set -euo pipefail
cd "$(dirname "$0")"
backend=tf
debug=0
launcher_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --hosts|--port|--this-host-index|--connect_timeout_s)
      [ $# -ge 2 ] || { echo "run_cluster.sh: $1 needs a value" >&2; exit 2; }
      launcher_args+=("$1" "$2"); shift 2 ;;
    --hosts=*|--port=*|--this-host-index=*|--connect_timeout_s=*) launcher_args+=("$1"); shift ;;
    --ssh|--print-env) launcher_args+=("$1"); shift ;;
    --backend) backend="${2:-}"; shift 2 || shift ;;
    --backend=*) backend="${1#--backend=}"; shift ;;
    --debug) debug=1; shift ;;
    *) break ;;
  esac
done
case "$backend" in
  tf|horovod) ;;
  *) echo "run_cluster.sh: invalid value for --backend: '$backend'. Accepted: tf, horovod (default: tf)." >&2; exit 2 ;;
esac
script="${1:-}"
if [ -z "$script" ] || [ ! -f "$script" ]; then
  echo "run_cluster.sh: run script '${script}' not found. Accepted: a file such as nets/convnet_at_fmnist_run.py" >&2
  exit 2
fi
shift
if [ "$debug" = 1 ]; then
  set -- "$@" --debug  # the run script's own flag
fi
if [ "$backend" = "horovod" ]; then
  exec tools/horovod_lane.sh -m pocketflow_tf.launcher --backend horovod "${launcher_args[@]}" -- python "$script" "$@"
fi
source tools/bootstrap.sh requirements.txt
exec "$PFTF_VENV/bin/python" -m pocketflow_tf.launcher --backend tf "${launcher_args[@]}" -- "$PFTF_VENV/bin/python" "$script" "$@"
