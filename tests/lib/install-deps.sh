#!/usr/bin/env bash
# Install what shmnet needs to build and test (Debian/Ubuntu), only what is missing.
# As root: apt-get install (apt-get update first, only when something must be installed).
# Not root and something missing: print what and exit 1.
# Daemon packages (nginx-light, redis-server, iperf3) are installed for their programs only:
# the tests start their own instances; the install must not start the system services
# (a policy-rc.d that refuses every start is in place while apt-get runs).
set -euo pipefail

PKGS=(
    build-essential pkg-config
    liburing-dev libev-dev libconfig-dev libcriterion-dev
    libxdp-dev libbpf-dev ethtool  # af_xdp backend (ethtool: veth checksum offload off in tests)
    clang libclang-rt-dev          # libFuzzer (libclang_rt.fuzzer)
    iproute2 iputils-ping arping tcpdump
    python3 python3-scapy socat hping3
    # Unmodified programs under LD_PRELOAD (tests/integration/apps.sh, bench/apps.sh)
    nginx-light redis-server redis-tools wrk iperf3 curl wget ncat
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
# No service may start during the install (nginx and redis-server would otherwise listen on
# :80 and :6379 of this machine): invoke-rc.d and deb-systemd-invoke ask policy-rc.d, and
# exit status 101 means "not allowed". An existing policy-rc.d (container images ship one)
# is left as it is.
POLICY=/usr/sbin/policy-rc.d
if [[ ! -e $POLICY ]]; then
    printf '#!/bin/sh\n# tests/lib/install-deps.sh: no service starts during the install\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
    trap 'rm -f "$POLICY"' EXIT
fi
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
# Packages install their units enabled; the tests never use the system services. Where
# systemd runs, keep them disabled so they do not start at the next boot either.
if [[ -d /run/systemd/system ]]; then
    for svc in nginx redis-server iperf3; do
        systemctl disable --now "$svc" >/dev/null 2>&1 || true
    done
fi
