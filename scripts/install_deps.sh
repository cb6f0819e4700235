#!/usr/bin/env bash
# Installs what embtrain needs to build and test on a fresh Debian machine.
# Idempotent: packages already present are skipped, and apt runs only when
# something is missing. Set EMBTRAIN_SKIP_DEPS=1 to skip the check entirely.
#   scripts/install_deps.sh [--fuzz]
# --fuzz adds clang and its libFuzzer runtime, for tests/fuzz/run.sh.
set -euo pipefail

[[ "${EMBTRAIN_SKIP_DEPS:-0}" == 1 ]] && exit 0

packages=(
  build-essential cmake pkg-config
  openmpi-bin libopenmpi-dev
  libboost-program-options-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev
  python3 python3-numpy python3-torch python3-matplotlib
  iproute2  # ip and tc: launch/emulate_hosts.sh and its test
  fasttext  # bench/skipgram_vs_fasttext.py
)
if [[ "${1:-}" == --fuzz ]]; then
  packages+=(clang libclang-rt-dev)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "install_deps: installing ${missing[*]}" >&2
sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
