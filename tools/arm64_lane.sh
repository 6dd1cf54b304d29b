#!/usr/bin/env bash
# The ARM64 lane: runs exported .tflite files with the aarch64 build of LiteRT, under qemu-user,
# to check that phones' ARM kernels compute what the x86 kernels verified (docs/arm64.md).
# Prepares once, cached in $PFTF_ARM64_DIR (default: .venv-arm64 in the repository):
#   * Debian's qemu-user-static (apt-get; as root, else it says what to run),
#   * an aarch64 Python 3.11 from Debian's arm64 packages, unpacked with `dpkg -x` into
#     sysroot/ (no chroot, no root needed to run it): qemu-aarch64-static -L sysroot runs it,
#   * the aarch64 wheels of requirements-arm64.txt (LiteRT, NumPy: the main stack's versions)
#     from PyPI, hash-checked and unpacked into site/,
#   * one folder per emulated CPU model in cpu/<model>/: the sysroot's folders (symlinks) and
#     a /proc/cpuinfo describing that CPU (see _cpuinfo below for why it is needed),
#   * lane.json: what the lane runs (versions of qemu, Python, LiteRT, NumPy, Debian packages),
#     read by pocketflow_tf.arm64 into every record.
# Everything is redone only when this script or requirements-arm64.txt changed (a stamp holds
# their hash). Then runs its arguments, if any, with the main environment's python, with
# PFTF_ARM64_DIR and PFTF_ARM64_LANE=1 exported (in the lane a missing runtime is a failure):
#   tools/arm64_lane.sh                                   (prepare only)
#   tools/arm64_lane.sh -m pytest -q tests/test_arm64.py
set -euo pipefail
PFTF_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PFTF_ARM64_DIR="${PFTF_ARM64_DIR:-$PFTF_ROOT/.venv-arm64}"
PFTF_VENV="${PFTF_VENV:-$PFTF_ROOT/.venv}"
_req="$PFTF_ROOT/requirements-arm64.txt"
# Debian bookworm's Python 3.11 and the libraries it, NumPy and LiteRT load (libffi: ctypes,
# imported by LiteRT's interpreter; libstdc++/libgcc: the C++ extensions). Debian keeps one
# version per package and suite, so they are not pinned here; lane.json records them.
_debs=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libgcc-s1
       libstdc++6 zlib1g libexpat1 libffi8 libssl3 libbz2-1.0 liblzma5)
# The emulated CPUs: a Cortex-A76 (Armv8.2 with dot-product instructions, the big core of
# most phones since 2019) by default, and a Cortex-A53 (Armv8.0 without them, the little
# core and older phones): LiteRT picks other int8 kernels on each.
_cpus=(cortex-a76 cortex-a53)
_qemu=qemu-aarch64-static
_py_tags=(--platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64
          --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64
          --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311)

_log() { echo "[arm64_lane] $*" >&2; }
_t0=$SECONDS

_apt() {
  if [ "$(id -u)" != "0" ]; then
    _log "needs root for apt-get ($*): run 'sudo tools/arm64_lane.sh' once"
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get "$@"
}

if ! command -v "$_qemu" >/dev/null 2>&1; then
  _log "installing Debian's qemu-user-static"
  _apt update -qq
  _apt install -y -qq --no-install-recommends qemu-user-static >/dev/null
fi

# /proc/cpuinfo for the emulated CPU. qemu-user passes the host's (x86) /proc/cpuinfo to the
# guest; the cpuinfo library inside LiteRT (XNNPACK, ruy) then finds no ARM core in it and
# dereferences NULL while the interpreter is created (the "segfault of ai-edge-litert under
# qemu"). With -L, qemu opens <prefix>/proc/cpuinfo instead when it exists: this one names the
# CPU that qemu emulates (MIDR fields of its model) for every CPU the host kernel lists.
_cpuinfo() {
  local cpu=$1 features variant part revision n last
  case "$cpu" in
    cortex-a76)
      features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
      variant=0x4 part=0xd0b revision=1 ;;
    cortex-a53)
      features="fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
      variant=0x0 part=0xd03 revision=4 ;;
    *) _log "no /proc/cpuinfo for CPU model $cpu"; exit 1 ;;
  esac
  last="$(sed 's/.*-//' /sys/devices/system/cpu/possible 2>/dev/null || echo 0)"
  for n in $(seq 0 "$last"); do
    printf 'processor\t: %s\nBogoMIPS\t: 50.00\nFeatures\t: %s\nCPU implementer\t: 0x41\n' "$n" "$features"
    printf 'CPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' "$variant" "$part" "$revision"
  done
}

_stamp="$PFTF_ARM64_DIR/.pftf-arm64-prepared"
_want="$( (cat "${BASH_SOURCE[0]}" "$_req") | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$_stamp" 2>/dev/null)" != "$_want" ]; then
  if [ ! -x "$PFTF_VENV/bin/python" ]; then
    _log "the main environment $PFTF_VENV is missing (its pip downloads the wheels): run tools/bootstrap.sh"
    exit 1
  fi
  # Only the lane's own folders: PFTF_ARM64_DIR may name a folder that holds other files.
  rm -rf "$PFTF_ARM64_DIR"/{sysroot,site,debs,wheels,cpu,lane.json}
  mkdir -p "$PFTF_ARM64_DIR/debs" "$PFTF_ARM64_DIR/wheels"
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    _log "adding Debian's arm64 architecture (dpkg --add-architecture arm64)"
    [ "$(id -u)" = "0" ] || { _log "needs root: run 'sudo tools/arm64_lane.sh' once"; exit 1; }
    dpkg --add-architecture arm64
  fi
  if ! apt-cache show libc6:arm64 >/dev/null 2>&1; then
    _log "apt-get update (arm64 package lists)"
    _apt update -qq
  fi
  _log "downloading Debian's arm64 Python (${#_debs[@]} packages) and unpacking it without a chroot"
  # apt-get download writes to the current folder; as root it warns that the _apt user cannot
  # write there (it then downloads unsandboxed), which is harmless.
  (cd "$PFTF_ARM64_DIR/debs" && apt-get download -qq "${_debs[@]/%/:arm64}" 2>&1 \
      | { grep -v 'unsandboxed as root' || true; })
  for deb in "$PFTF_ARM64_DIR"/debs/*.deb; do
    dpkg -x "$deb" "$PFTF_ARM64_DIR/sysroot"
    dpkg-deb --showformat='${Package} ${Version}\n' -W "$deb" >> "$PFTF_ARM64_DIR/debs/versions.txt"
  done
  _log "downloading the aarch64 wheels of requirements-arm64.txt"
  "$PFTF_VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps \
      --require-hashes -r "$_req" "${_py_tags[@]}" -d "$PFTF_ARM64_DIR/wheels" 2>&1 \
    | { grep -v '^WARNING: Location' || true; }
  [ "$(ls "$PFTF_ARM64_DIR"/wheels/*.whl | wc -l)" -eq "$(grep -c '^[a-z].*==' "$_req")" ] \
    || { _log "pip did not download every wheel of $_req"; exit 1; }
  # Wheels are zip files; unpacked rather than installed, since no pip runs on the aarch64
  # side. The child script puts site/ first on sys.path.
  for whl in "$PFTF_ARM64_DIR"/wheels/*.whl; do
    "$PFTF_VENV/bin/python" -m zipfile -e "$whl" "$PFTF_ARM64_DIR/site"
  done
  rm -rf "$PFTF_ARM64_DIR/debs"/*.deb "$PFTF_ARM64_DIR/wheels"
  echo "$_want" > "$_stamp"
fi

# Per-CPU roots: rewritten every time (cheap), so that /proc/cpuinfo lists this host's CPUs.
for cpu in "${_cpus[@]}"; do
  root="$PFTF_ARM64_DIR/cpu/$cpu"
  mkdir -p "$root/proc"
  for top in etc lib usr; do ln -sfn "../../sysroot/$top" "$root/$top"; done
  _cpuinfo "$cpu" > "$root/proc/cpuinfo"
done

# lane.json: the aarch64 Python reports its own versions (and proves it runs and imports
# LiteRT); the script adds qemu's and the Debian packages'.
_qemu_version="$("$_qemu" --version | head -1)"
_manifest="$(QEMU_CPU="${_cpus[0]}" "$_qemu" -L "$PFTF_ARM64_DIR/cpu/${_cpus[0]}" \
  "$PFTF_ARM64_DIR/sysroot/usr/bin/python3.11" -I -c '
import json, platform, sys
sys.path.insert(0, sys.argv[1])
import numpy
from importlib.metadata import version
from ai_edge_litert import interpreter  # noqa: F401
print(json.dumps({"machine": platform.machine(), "python": platform.python_version(),
                  "runtime": "ai-edge-litert", "runtime_version": version("ai-edge-litert"),
                  "numpy": numpy.__version__}))
' "$PFTF_ARM64_DIR/site")" || { _log "the aarch64 Python does not run or import LiteRT; rm -r $PFTF_ARM64_DIR and rerun"; exit 1; }
"$PFTF_VENV/bin/python" - "$PFTF_ARM64_DIR" "$_qemu" "$_qemu_version" "$_manifest" "${_cpus[@]}" <<'EOF'
import json, os, sys
root, qemu, qemu_version, manifest, cpus = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
lane = json.loads(manifest)
with open(os.path.join(root, "debs", "versions.txt")) as f:
    debs = dict(line.split() for line in f if line.strip())
lane.update(qemu=qemu, qemu_version=qemu_version, cpus=cpus, debian_packages=debs)
tmp = os.path.join(root, "lane.json.tmp")
with open(tmp, "w") as f:
    json.dump(lane, f, indent=1, sort_keys=True)
os.replace(tmp, os.path.join(root, "lane.json"))
EOF
_log "ready in $((SECONDS - _t0)) s: $(cat "$PFTF_ARM64_DIR/lane.json" | tr -d '\n ' | cut -c1-200)"

export PFTF_ARM64_DIR PFTF_ARM64_LANE=1
if [ "$#" -gt 0 ]; then
  cd "$PFTF_ROOT"
  exec "$PFTF_VENV/bin/python" "$@"
fi
