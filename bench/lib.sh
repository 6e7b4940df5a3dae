# shellcheck shell=bash
# Shared by bench/run.sh and bench/apps.sh (sourced after TAP and log are defined).

# bench_backend: the NIC the daemon owns, from BACKEND (tap | af_xdp). Sets DDEV (the
# daemon's interface name), BLABEL (column label) and IFOPTS (interface config keys).
# af_xdp: shmnetd on one end of a veth pair ($DDEV, root namespace); the other end, named
# $TAP like the TAP it replaces, goes to the peer namespace. TX offloads off on that end:
# AF_XDP carries no partial checksums or GSO frames (docs/nic.md).
bench_backend() {
    BACKEND=${BACKEND:-tap}
    if [[ $BACKEND == af_xdp ]]; then
        DDEV="x$TAP" BLABEL="AF_XDP" IFOPTS='backend = "af_xdp";'
        # One queue per worker on both ends (the kernel end's TX queue is our RX queue).
        local q=${WORKERS:-1}
        ip link add "$DDEV" numtxqueues "$q" numrxqueues "$q" type veth \
            peer name "$TAP" numtxqueues "$q" numrxqueues "$q" ||
            { log "cannot create the veth pair"; exit 1; }
        ethtool -K "$TAP" tx off >/dev/null 2>&1
        ip link set "$DDEV" up
    else
        DDEV=$TAP BLABEL="TAP" IFOPTS='backend = "tap"; tso = true;'
    fi
}

# bench_cpus: DCPUS, the daemon's `cpus = [...];` (empty: not pinned). From CPUS (a
# comma-separated list, "" for unpinned); by default the workers are pinned to the first
# CPUs when that leaves at least one CPU free, where rps_cpus = "auto" (the default) then
# sends the kernel's work on the frames the daemon writes to the TAP (docs/config.md).
bench_cpus() {
    local w=${WORKERS:-1} n
    n=$(nproc)
    if [[ -z ${CPUS+x} ]]; then
        CPUS=""
        ((w < n)) && CPUS=$(seq -s, 0 $((w - 1)))
    fi
    DCPUS=""
    [[ -n $CPUS ]] && DCPUS="cpus = [$CPUS];"
}
