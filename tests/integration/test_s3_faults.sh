#!/usr/bin/env bash
# The S3 backend against a misbehaving network: pvbackup talks to s3rver through
# tests/s3/faultproxy.js, which injects one kind of fault at a time (503 SlowDown, 500, 429
# with Retry-After, 400 RequestTimeout, connection resets, latency, bodies cut short, stalled
# connections, requests that land but whose answer is lost). With each, a backup, a restore
# and verify --read-data must still succeed and the retries must show in the log. With
# faults that never stop, the command must fail with a clear message within its bounded
# retry time and leave no visible snapshot. Prune, too, completes through 500s and resets,
# and when its deletes fail for good it stops with exit 8, the latest snapshot still restores
# and a later prune finishes the work.
#
# Environment: PVBACKUP (the binary), PVB_SOURCE_DIR (the source tree).
set -euo pipefail

. "$PVB_SOURCE_DIR/tests/integration/lib/faultlib.sh"
fault_init s3-faults
. "$PVB_SOURCE_DIR/tests/integration/lib/s3.sh"

pvb_s3_start
pvb_proxy_start "$TMP/faults.json"
DIRECT=$PVB_S3_ENDPOINT
PROXY=$PVB_PROXY_ENDPOINT
REPO=s3://$PVB_S3_BUCKET/faults
# Quick retries so that the test takes seconds, not minutes; a stall is noticed after 2 s.
export PVBACKUP_S3_TIMEOUT=2 PVBACKUP_S3_MAX_RETRIES=8 PVBACKUP_S3_RETRY_TIME=30
# Small parts, so that some objects go up as multipart uploads and their parts meet faults.
export PVBACKUP_S3_MULTIPART_THRESHOLD=6MiB PVBACKUP_S3_PART_SIZE=5MiB

SRC=$TMP/src
mkdir -p "$SRC"
make_files "$SRC/bin" 40 1000 200000 1
head -c $((9 * 1024 * 1024)) /dev/urandom >"$SRC/big.bin"
make_text "$SRC/text" 30 200 2

# through ENDPOINT ARGS...: run pvbackup against the given endpoint.
via() {
    local endpoint=$1
    shift
    AWS_ENDPOINT_URL=$endpoint run "$@"
}

snapshot_count() {
    AWS_ENDPOINT_URL=$DIRECT ok snapshots --repo "$REPO" --json
    jget 'len(d)' "$TMP/out"
}

fault_count() {
    pvb_proxy_stats >"$TMP/stats.json"
    jget "d['faults']['$1']" "$TMP/stats.json"
}

step "init and a first full backup without faults"
pvb_proxy_set '{"rules":[]}'
via "$PROXY" init --repo "$REPO"
[ "$RC" -eq 0 ] || fail "init through the proxy exited $RC"
via "$PROXY" backup --repo "$REPO" --volume vol --source "$SRC" --no-progress
[ "$RC" -eq 0 ] || fail "backup through the proxy exited $RC"

# Each round: change the source (new data to upload), back up, restore, verify, all through
# the proxy with one fault kind active.
round=0
try_fault() {
    local kind=$1 rules=$2 want_retry=${3:-yes}
    round=$((round + 1))
    step "fault '$kind': backup, restore and verify --read-data complete"
    make_files "$SRC/round$round" 6 50000 400000 $((100 + round))
    head -c $((7 * 1024 * 1024)) /dev/urandom >"$SRC/round$round/big.bin"
    pvb_proxy_set "$rules"
    local log=$TMP/log-$kind
    : >"$log"

    via "$PROXY" backup --repo "$REPO" --volume vol --source "$SRC" --kind full --independent \
        --no-progress
    cat "$TMP/err" >>"$log"
    [ "$RC" -eq 0 ] || check_fail "$kind: backup exited $RC"

    rm -rf "$TMP/restored"
    via "$PROXY" restore --repo "$REPO" latest --volume vol --target "$TMP/restored" --no-progress
    cat "$TMP/err" >>"$log"
    [ "$RC" -eq 0 ] || check_fail "$kind: restore exited $RC"
    tree_same "$SRC" "$TMP/restored" "$kind: restore"

    via "$PROXY" verify --repo "$REPO" --read-data --no-progress
    cat "$TMP/err" >>"$log"
    [ "$RC" -eq 0 ] || check_fail "$kind: verify --read-data exited $RC"

    local injected
    injected=$(fault_count "$kind")
    note "$kind: $injected faults injected, $(grep -c 'retrying' "$log" || true) retries logged"
    [ "$injected" -gt 0 ] || check_fail "$kind: the proxy injected no fault (rules: $rules)"
    if [ "$want_retry" = yes ] && ! grep -q 'retrying in' "$log"; then
        check_fail "$kind: no retry in the log"
    fi
}

try_fault slowdown '{"rules":[{"fault":"slowdown","every":3}]}'
try_fault error500 '{"rules":[{"fault":"error500","every":4}]}'
try_fault throttle429 '{"rules":[{"fault":"throttle429","every":10,"retry_after":1}]}'
try_fault requesttimeout '{"rules":[{"fault":"requesttimeout","match":"PUT","every":3}]}'
try_fault reset '{"rules":[{"fault":"reset","every":4}]}'
try_fault truncate '{"rules":[{"fault":"truncate","match":"GET","every":3}]}'
try_fault stall '{"rules":[{"fault":"stall","times":3,"every":4}]}'
try_fault drop '{"rules":[{"fault":"drop","match":"PUT","every":3}]}'
try_fault latency '{"rules":[{"fault":"latency","ms":50,"every":2}]}' no

step "faults that never stop: a clear failure within the bounded time, no snapshot"
before=$(snapshot_count)
make_files "$SRC/doomed" 5 50000 200000 999
pvb_proxy_set '{"rules":[{"fault":"slowdown","match":"PUT"}]}'
start=$SECONDS
PVBACKUP_S3_RETRY_TIME=6 via "$PROXY" backup --repo "$REPO" --volume vol --source "$SRC" \
    --no-progress
took=$((SECONDS - start))
note "backup against endless SlowDown failed with exit $RC after ${took}s"
[ "$RC" -eq 8 ] || check_fail "endless SlowDown: backup exited $RC, expected 8 (storage)"
err_has "giving up after" "endless SlowDown"
err_has "SlowDown" "endless SlowDown"
[ "$took" -le 60 ] || check_fail "endless SlowDown: took ${took}s, more than 60s"
after=$(snapshot_count)
[ "$after" -eq "$before" ] || check_fail "endless SlowDown: a snapshot appeared ($before -> $after)"

step "a connection that stalls for good fails within the bounded time"
pvb_proxy_set '{"rules":[{"fault":"stall","match":"GET"}]}'
start=$SECONDS
PVBACKUP_S3_RETRY_TIME=5 via "$PROXY" snapshots --repo "$REPO"
took=$((SECONDS - start))
note "snapshots against an endless stall failed with exit $RC after ${took}s"
[ "$RC" -eq 8 ] || check_fail "endless stall: exit $RC, expected 8"
[ "$took" -le 40 ] || check_fail "endless stall: took ${took}s"

step "prune through faults: it completes, and the repository verifies"
rm -rf "$SRC/doomed" # never backed up: the latest snapshot is the last round's
# every round above was an independent full: dropping all but the last makes whole packs
# unused, so prune reads, writes index files and deletes through the faults
AWS_ENDPOINT_URL=$DIRECT ok snapshots --repo "$REPO" --json
jget '"\n".join(s["id"] for s in d[:-2])' "$TMP/out" >"$TMP/drop"
while read -r id; do repo_obj_delete "$REPO" "snapshots/$id"; done <"$TMP/drop"
pvb_proxy_set '{"rules":[{"fault":"error500","every":4},{"fault":"reset","every":7}]}'
: >"$TMP/log-prune"
via "$PROXY" prune --repo "$REPO" --no-progress --json
cat "$TMP/err" >>"$TMP/log-prune"
[ "$RC" -eq 0 ] || check_fail "prune through error500 and reset exited $RC: $(head -n 3 "$TMP/err")"
[ "$RC" -ne 0 ] || [ "$(jget 'd["packs_deleted"]' "$TMP/out")" -gt 0 ] || check_fail "prune deleted no pack"
grep -q 'retrying in' "$TMP/log-prune" || check_fail "prune: no retry in the log"
pvb_proxy_set '{"rules":[]}'
AWS_ENDPOINT_URL=$DIRECT run verify --repo "$REPO" --read-data --no-progress --json
[ "$RC" -eq 0 ] || check_fail "after prune through faults: verify exited $RC"
[ "$RC" -ne 0 ] || [ "$(jget 'd["unreferenced_packs"]' "$TMP/out")" = 0 ] ||
    check_fail "after prune through faults: unreferenced packs remain"

step "prune against deletes that always fail: a clear failure, nothing lost"
AWS_ENDPOINT_URL=$DIRECT ok snapshots --repo "$REPO" --json
repo_obj_delete "$REPO" "snapshots/$(jget 'd[0]["id"]' "$TMP/out")"
pvb_proxy_set '{"rules":[{"fault":"error500","match":"POST"},{"fault":"error500","match":"DELETE"}]}'
start=$SECONDS
PVBACKUP_S3_RETRY_TIME=5 via "$PROXY" prune --repo "$REPO" --no-progress
took=$((SECONDS - start))
note "prune against failing deletes: exit $RC after ${took}s"
[ "$RC" -eq 8 ] || check_fail "failing deletes: prune exited $RC, expected 8"
[ "$took" -le 60 ] || check_fail "failing deletes: prune took ${took}s"
pvb_proxy_set '{"rules":[]}'
rm -rf "$TMP/restored"
AWS_ENDPOINT_URL=$DIRECT run restore --repo "$REPO" latest --volume vol --target "$TMP/restored" --no-progress
[ "$RC" -eq 0 ] || check_fail "after a failed prune: restore exited $RC"
tree_same "$SRC" "$TMP/restored" "after a failed prune: restore"
AWS_ENDPOINT_URL=$DIRECT ok prune --repo "$REPO" --no-progress

step "the repository is whole after all of it"
pvb_proxy_set '{"rules":[]}'
AWS_ENDPOINT_URL=$DIRECT run verify --repo "$REPO" --read-data --no-progress
[ "$RC" -eq 0 ] || check_fail "final verify --read-data exited $RC"

fault_finish
