#!/usr/bin/env bash
# The main job of pvbackup, end to end, on a sample volume it makes itself:
#
#   install what is missing -> build (Release) -> make a sample volume -> init a local
#   repository -> full backup -> change the volume -> incremental backup -> list snapshots
#   -> diff them -> restore the latest into a new directory -> compare it with the volume
#   -> verify the repository, reading every byte back.
#
# Usage: bash scripts/demo.sh
#
# Environment:
#   DEMO_DIR=DIR           workspace (created; must be empty). Default: a new mktemp -d.
#   PVBACKUP=FILE          use this pvbackup binary instead of building one
#   PVBACKUP_PASSWORD, PVBACKUP_PASSWORD_FILE
#                          the repository password; a demo password is used when neither
#                          is set
#   PVB_SKIP_SETUP=1       do not check Debian packages
#
# Exits non-zero as soon as a step fails, naming the step.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR="$ROOT/build-release"
VOLUME=demo
STEP_TOTAL=12
STEP_NO=0
STEP_NAME="start"
DEMO_PASSWORD=0
T0=$SECONDS

if [ -t 1 ]; then
    BOLD=$'\e[1m' DIM=$'\e[2m' GREEN=$'\e[32m' RED=$'\e[31m' RESET=$'\e[0m'
else
    BOLD='' DIM='' GREEN='' RED='' RESET=''
fi

step() {
    STEP_NO=$((STEP_NO + 1))
    STEP_NAME=$1
    printf '\n%s==> [%d/%d] %s%s\n' "$BOLD" "$STEP_NO" "$STEP_TOTAL" "$1" "$RESET"
    shift
    [ $# -eq 0 ] || printf '    %s\n' "$@"
}
note() { printf '    %s\n' "$@"; }
ok() { printf '    %sok:%s %s\n' "$GREEN" "$RESET" "$*"; }
die() {
    printf '%sdemo: FAILED%s at step %d/%d (%s): %s\n' "$RED" "$RESET" "$STEP_NO" "$STEP_TOTAL" \
        "$STEP_NAME" "$*" >&2
    exit 1
}
on_error() {
    local rc=$?
    printf '%sdemo: FAILED%s at step %d/%d (%s): a command exited %d\n' "$RED" "$RESET" \
        "$STEP_NO" "$STEP_TOTAL" "$STEP_NAME" "$rc" >&2
    [ -z "${WS:-}" ] || printf 'demo: the workspace is left for inspection: %s\n' "$WS" >&2
    exit "$rc"
}
trap on_error ERR

# pvb ARGS...: show the command as a user would type it, then run it, output indented.
pvb() {
    printf '    %s$ pvbackup %s%s\n' "$DIM" "$*" "$RESET"
    local rc=0
    "$PVB" "$@" 2>&1 | sed 's/^/      /' || rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || die "'pvbackup $1' exited $rc (exit codes: docs/cli.md#exit-codes)"
}

# ---------------------------------------------------------------------------------------
step "Check dependencies" "Debian packages needed to build pvbackup (installs what is missing)."
bash "$ROOT/scripts/setup.sh"

step "Build pvbackup (Release)"
if [ -n "${PVBACKUP:-}" ]; then
    PVB=$(command -v "$PVBACKUP") || die "PVBACKUP='$PVBACKUP' is not an executable"
    note "using PVBACKUP=$PVB"
else
    PVB="$BUILD_DIR/pvbackup"
    note "build directory: ${BUILD_DIR#"$ROOT"/}/ (log: ${BUILD_DIR#"$ROOT"/}/demo-build.log)"
    mkdir -p "$BUILD_DIR"
    t=$SECONDS
    if ! {
        cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DPVB_TESTS=OFF &&
            cmake --build "$BUILD_DIR" --target pvbackup --parallel "$(nproc)"
    } >"$BUILD_DIR/demo-build.log" 2>&1; then
        tail -n 40 "$BUILD_DIR/demo-build.log" | sed 's/^/      /' >&2
        die "the build failed (full log: $BUILD_DIR/demo-build.log)"
    fi
    ok "built $PVB in $((SECONDS - t))s"
fi
"$PVB" version | head -n 1 | sed 's/^/    /'

# ---------------------------------------------------------------------------------------
step "Create a sample volume"
if [ -n "${DEMO_DIR:-}" ]; then
    mkdir -p "$DEMO_DIR"
    WS=$(cd "$DEMO_DIR" && pwd)
    [ -z "$(ls -A "$WS")" ] || die "DEMO_DIR '$WS' is not empty (hint: use a new directory)"
else
    WS=$(mktemp -d "${TMPDIR:-/tmp}/pvbackup-demo.XXXXXX")
fi
cd "$WS"
export PVBACKUP_CATALOG="$WS/catalog.db"
unset PVBACKUP_REPO
note "workspace: $WS"

mkdir -p volume/etc/app volume/data/2026/01 volume/data/2026/02 volume/logs volume/empty
printf 'listen = 0.0.0.0:8080\nworkers = 4\n' >volume/etc/app/app.conf
printf 'level = info\n' >volume/etc/app/logging.conf
for month in 01 02; do
    for day in 01 02 03; do
        awk -v d="2026-$month-$day" 'BEGIN { for (i = 1; i <= 200; i++) print d ",sensor-" i "," i * 7 % 101 }' \
            >"volume/data/2026/$month/$day.csv"
    done
done
printf 'started\n' >volume/logs/app.log
printf 'rotated\n' >volume/logs/app.log.1
printf 'pvbackup demo volume\n' >volume/README.txt
head -c $((6 * 1024 * 1024)) /dev/urandom >volume/data/blob.bin
ln -s data/2026/02/03.csv volume/latest.csv
# Old times, so that the changes made below are visible to the incremental by metadata alone.
find volume -exec touch -h -d '2026-01-01 00:00:00' {} +
files=$(find volume -type f | wc -l)
note "volume/: $files files in nested directories, a 6 MiB binary file (data/blob.bin),"
note "a symlink (latest.csv -> data/2026/02/03.csv) and an empty directory; $(du -sh volume | cut -f1) in all"

# ---------------------------------------------------------------------------------------
step "Create a repository" "An encrypted repository (AES-256-GCM) in the local directory repo/."
if [ -z "${PVBACKUP_PASSWORD:-}" ] && [ -z "${PVBACKUP_PASSWORD_FILE:-}" ]; then
    export PVBACKUP_PASSWORD="pvbackup-demo-password"
    DEMO_PASSWORD=1
    note "note: using the DEMO password '$PVBACKUP_PASSWORD' (set PVBACKUP_PASSWORD or"
    note "PVBACKUP_PASSWORD_FILE to choose your own; never use this one for real data)"
else
    note "using the password from PVBACKUP_PASSWORD / PVBACKUP_PASSWORD_FILE"
fi
pvb init --repo repo
[ -f repo/config ] || die "repo/config was not created"

step "Full backup" "Reads and hashes every byte of volume/; stores it deduplicated, compressed, encrypted."
pvb backup --repo repo --volume "$VOLUME" --source volume --kind full

# ---------------------------------------------------------------------------------------
step "Change the volume" "Edit, add and delete files; overwrite 64 KiB in the middle of the big file."
printf 'workers = 8\n' >>volume/etc/app/app.conf
note "edited:   etc/app/app.conf (workers = 8 appended)"
awk 'BEGIN { for (i = 1; i <= 200; i++) print "2026-02-04,sensor-" i "," i * 3 % 97 }' \
    >volume/data/2026/02/04.csv
printf 'request 1\nrequest 2\n' >>volume/logs/app.log
note "added:    data/2026/02/04.csv; appended to logs/app.log"
rm volume/logs/app.log.1
note "deleted:  logs/app.log.1"
head -c 65536 /dev/urandom | dd of=volume/data/blob.bin bs=65536 seek=40 conv=notrunc status=none
note "modified: data/blob.bin (64 KiB at offset 2.5 MiB; the other blocks are reused)"
ln -sfn data/2026/02/04.csv volume/latest.csv
note "retarget: latest.csv -> data/2026/02/04.csv"

step "Incremental backup" "Reuses unchanged files without reading them; stores only the changed blocks."
pvb backup --repo repo --volume "$VOLUME" --source volume --kind incremental

# ---------------------------------------------------------------------------------------
step "List snapshots"
pvb snapshots --repo repo --volume "$VOLUME"
ids=$("$PVB" snapshots --repo repo --volume "$VOLUME" --json |
    python3 -c 'import json, sys; print(" ".join(s["id"] for s in json.load(sys.stdin)))')
read -r -a snap_ids <<<"$ids"
[ "${#snap_ids[@]}" -eq 2 ] || die "expected 2 snapshots of volume '$VOLUME', found ${#snap_ids[@]}"
ok "2 snapshots: ${snap_ids[0]:0:12} (full), ${snap_ids[1]:0:12} (incremental)"

step "What changed between them" "Compares the two manifests; no file data is read."
pvb diff --repo repo "${snap_ids[0]:0:12}" "${snap_ids[1]:0:12}"

# ---------------------------------------------------------------------------------------
step "Restore the latest snapshot" "Into the new directory restored/; every byte is verified before it is written."
pvb restore --repo repo latest --volume "$VOLUME" --target restored

step "Compare the restore with the volume"
note "$ diff -r --no-dereference volume restored"
if ! diff -r --no-dereference volume restored >diff.out 2>&1; then
    head -n 40 diff.out | sed 's/^/      /' >&2
    die "restored/ differs from volume/ (see above)"
fi
ok "diff -r: same names, same contents, same symlink targets"
listing() { (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum); }
listing volume >volume.sha256
listing restored >restored.sha256
note "$ sha256sum of every file: volume.sha256 vs restored.sha256"
if ! cmp -s volume.sha256 restored.sha256; then
    diff volume.sha256 restored.sha256 | sed 's/^/      /' >&2 || true
    die "the SHA-256 listings differ"
fi
[ "$(readlink restored/latest.csv)" = data/2026/02/04.csv ] || die "restored/latest.csv is wrong"
bytes=$(find restored -type f -printf '%s\n' | awk '{ n += $1 } END { print n + 0 }')
ok "$(wc -l <volume.sha256) files, $bytes bytes: identical SHA-256 listings"
ok "sha256 of data/blob.bin: $(grep ' ./data/blob.bin$' restored.sha256 | cut -c1-16)..."

step "Verify the repository" "Downloads, decrypts and hashes every pack frame referenced by a snapshot."
pvb verify --repo repo --read-data

# ---------------------------------------------------------------------------------------
trap - ERR
printf '\n%sdemo: OK%s in %ds: full + incremental backup, restore and verification all passed.\n' \
    "$GREEN$BOLD" "$RESET" "$((SECONDS - T0))"
printf 'workspace kept for you to explore: %s\n' "$WS"
# shellcheck disable=SC2016 # $PWD is for the user to type
if [ "$DEMO_PASSWORD" = 1 ]; then
    printf '  cd %s && export PVBACKUP_CATALOG=$PWD/catalog.db PVBACKUP_PASSWORD=%s\n' "$WS" \
        "$PVBACKUP_PASSWORD"
else
    printf '  cd %s && export PVBACKUP_CATALOG=$PWD/catalog.db  # and your password\n' "$WS"
fi
printf '  %s ls --repo repo latest --volume %s\n' "$PVB" "$VOLUME"
printf 'remove it with: rm -rf %s\n' "$WS"
