#!/usr/bin/env bash
# Install the Debian 12 packages pvbackup needs to build, test, fuzz and demo.
#
# Idempotent: asks dpkg what is already installed, and runs `apt-get update` and
# `apt-get install` only when something is missing. Needs root, or sudo when run as
# another user. Used by scripts/demo.sh and scripts/test.sh; safe to run by hand.
#
# Environment:
#   PVB_SKIP_SETUP=1   do nothing (a machine set up some other way)
set -euo pipefail

# Building and running pvbackup, and its tests.
PACKAGES=(
    build-essential cmake pkg-config
    libssl-dev libcurl4-openssl-dev libzstd-dev libarchive-dev libsqlite3-dev
    libyaml-dev libxml2-dev libjansson-dev
    check         # unit tests (Check, run by ctest)
    acl attr      # setfacl/getfacl, setfattr/getfattr: metadata tests
    python3       # tests/integration/lib/treecmp.py
    curl          # tests/integration/lib/s3.sh: waits for s3rver, reads the fault proxy
    clang libclang-rt-14-dev # libFuzzer targets and clang's sanitizer runtimes
    clang-format  # the formatting check of scripts/test.sh
)

# The S3 integration tests run against s3rver and a fault proxy on 127.0.0.1, both Node.js
# programs (tests/s3). When `node` or `npm` is missing, Debian's nodejs and npm packages are
# installed. The npm packages themselves (s3rver, pinned in tests/s3/package-lock.json) are
# not installed here nor globally: tests/s3/install.sh runs `npm ci` into tests/s3/node_modules.
# Node.js is checked by command rather than by package name, because a machine may carry a
# Node.js build that bundles npm and conflicts with Debian's npm package.
PVB_NEED_NODE=1
NODE_PACKAGES=(nodejs npm)

log() { printf 'setup: %s\n' "$*" >&2; }

if [ "${PVB_SKIP_SETUP:-0}" = 1 ]; then
    log "PVB_SKIP_SETUP=1: not checking packages"
    exit 0
fi

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    log "error: this script needs a Debian system (dpkg-query and apt-get not found)"
    log "hint: install the equivalents of: ${PACKAGES[*]}; then set PVB_SKIP_SETUP=1"
    exit 1
fi

installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done
if [ "$PVB_NEED_NODE" = 1 ] && ! { command -v node && command -v npm; } >/dev/null 2>&1; then
    missing+=("${NODE_PACKAGES[@]}")
fi

if [ ${#missing[@]} -eq 0 ]; then
    log "all ${#PACKAGES[@]} packages present"
    exit 0
fi

log "missing: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
    log "not root: using sudo"
else
    log "error: not root and sudo is not available"
    log "hint: as root, run: apt-get update && apt-get install ${missing[*]}"
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Wait for a running apt (unattended-upgrades on a fresh machine) instead of failing.
APT=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600)
log "apt-get update"
"${APT[@]}" update
log "apt-get install ${missing[*]}"
"${APT[@]}" install -y --no-install-recommends "${missing[@]}"

still=()
for pkg in "${missing[@]}"; do
    installed "$pkg" || still+=("$pkg")
done
if [ ${#still[@]} -ne 0 ]; then
    log "error: still missing after apt-get install: ${still[*]}"
    exit 1
fi
log "installed ${#missing[@]} packages"
