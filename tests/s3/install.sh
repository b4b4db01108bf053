#!/usr/bin/env bash
# Install the npm packages of the S3 test infrastructure (@20minutes/s3rver, pinned with all
# its dependencies in tests/s3/package-lock.json) into tests/s3/node_modules, with `npm ci`.
#
# Idempotent and cheap when there is nothing to do: after a successful install it leaves a
# stamp in node_modules (the lock file's sha256 and the Node.js version); when the stamp
# matches, it does nothing. Concurrent runs (ctest -j) are serialised with flock, so that one
# test's `npm ci` never deletes the node_modules another test's server is running from.
#
# Usage: tests/s3/install.sh [--force] [--quiet]
# Needs node and npm (scripts/setup.sh installs Debian's nodejs and npm when they are missing)
# and the npm registry, or npm's cache.
set -euo pipefail

DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FORCE=0
QUIET=0
for arg in "$@"; do
    case $arg in
    --force) FORCE=1 ;;
    --quiet) QUIET=1 ;;
    -h | --help)
        sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        printf 's3 install: error: unknown argument %s\n' "$arg" >&2
        exit 2
        ;;
    esac
done

log() { [ "$QUIET" = 1 ] || printf 's3 install: %s\n' "$*" >&2; }
die() {
    printf 's3 install: error: %s\n' "$*" >&2
    exit 1
}

command -v node >/dev/null 2>&1 ||
    die "node not found: the S3 tests need Node.js (run scripts/setup.sh, or apt-get install nodejs npm)"
command -v npm >/dev/null 2>&1 ||
    die "npm not found: the S3 tests need npm (run scripts/setup.sh, or apt-get install npm)"
command -v flock >/dev/null 2>&1 || die "flock not found (package util-linux)"
[ -f "$DIR/package-lock.json" ] || die "$DIR/package-lock.json is missing"

STAMP="$DIR/node_modules/.pvb-install-stamp"
want="lock=$(sha256sum "$DIR/package-lock.json" | cut -d' ' -f1) node=$(node --version)"

up_to_date() {
    [ "$FORCE" = 0 ] &&
        [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] &&
        [ -f "$DIR/node_modules/@20minutes/s3rver/package.json" ]
}

# fast path, without the lock
if up_to_date; then
    log "node_modules is up to date"
    exit 0
fi

# the directory itself is the lock: no lock file in the tree
exec 9<"$DIR"
if ! flock -w 600 9; then
    die "timed out waiting for another install.sh to finish"
fi
if up_to_date; then
    log "node_modules is up to date (installed by a concurrent run)"
    exit 0
fi

log "npm ci in $DIR (node $(node --version), npm $(npm --version))"
rm -f "$STAMP"
if ! (cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error >&2); then
    die "npm ci failed in $DIR (is the npm registry or npm's cache reachable?)"
fi
[ -f "$DIR/node_modules/@20minutes/s3rver/package.json" ] ||
    die "npm ci succeeded but node_modules/@20minutes/s3rver is missing"
printf '%s\n' "$want" >"$STAMP.tmp.$$"
mv -f "$STAMP.tmp.$$" "$STAMP"
log "installed @20minutes/s3rver $(node -p 'require(process.argv[1]).version' \
    "$DIR/node_modules/@20minutes/s3rver/package.json")"
