#!/usr/bin/env bash
# Install what shmnet needs to build and test (Debian/Ubuntu), only what is missing.
# As root: apt-get install (apt-get update first, only when something must be installed).
# Not root and something missing: print what and exit 1.
set -euo pipefail

PKGS=(
    build-essential pkg-config
    liburing-dev libev-dev libconfig-dev libcriterion-dev
    clang libclang-rt-dev          # libFuzzer (libclang_rt.fuzzer)
    iproute2 iputils-ping arping tcpdump
    python3 python3-scapy socat hping3
)

missing=()
for p in "${PKGS[@]}"; do
    st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ $st == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
    echo "install-deps: all ${#PKGS[@]} packages present"
    exit 0
fi

if ((EUID != 0)); then
    echo "install-deps: missing packages: ${missing[*]}" >&2
    echo "install-deps: run as root (or: sudo apt-get install ${missing[*]})" >&2
    exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
