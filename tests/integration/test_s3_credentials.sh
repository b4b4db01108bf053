#!/usr/bin/env bash
# Credentials from files (Kubernetes Secret mounts) rotated while a command runs: the files
# are read again when they change, and a request refused just as they change is signed again
# with the new ones. s3rver gets two extra key pairs; the old one is revoked during the
# backup, which must still complete. Requests go through the fault proxy, slowed down, so
# that the backup runs long enough to see the rotation.
#
# Environment: PVBACKUP, PVB_SOURCE_DIR.
set -euo pipefail

. "$PVB_SOURCE_DIR/tests/integration/lib/faultlib.sh"
fault_init s3-credentials
. "$PVB_SOURCE_DIR/tests/integration/lib/s3.sh"
pvb_s3_start --key=ROTATEONE:first-secret-1 --key=ROTATETWO:second-secret-2 \
    --revoked-keys-file="$TMP/revoked"
pvb_proxy_start "$TMP/proxy.json"
export AWS_ENDPOINT_URL=$PVB_PROXY_ENDPOINT
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
export PVBACKUP_S3_MULTIPART_THRESHOLD=5MiB PVBACKUP_S3_PART_SIZE=5MiB

KEYS=$TMP/secret
mkdir -p "$KEYS"
# write_key ID SECRET: replace both files, each by a rename (as a Secret update swaps them)
write_key() {
    printf '%s\n' "$1" >"$KEYS/.access-key.new"
    mv "$KEYS/.access-key.new" "$KEYS/access-key"
    printf '%s\n' "$2" >"$KEYS/.secret-key.new"
    mv "$KEYS/.secret-key.new" "$KEYS/secret-key"
}
write_key ROTATEONE first-secret-1
CRED=(--s3-access-key-file "$KEYS/access-key" --s3-secret-key-file "$KEYS/secret-key")
R=s3://$PVB_S3_BUCKET/rotation
make_files "$TMP/src" 150 20000 400000 1

step "init with the first key"
ok init --repo "$R" "${CRED[@]}"

step "the Secret is rotated and the old key revoked during a backup: it completes"
pvb_proxy_set '{"rules":[{"fault":"latency","ms":250}]}'
set +e
"$PVBACKUP" backup --repo "$R" "${CRED[@]}" --volume vol --source "$TMP/src" --no-progress \
    >"$TMP/backup.out" 2>"$TMP/backup.err" &
pid=$!
set -e
sleep 2
kill -0 "$pid" 2>/dev/null || fail "the backup ended before the rotation: make it slower ($(tail -n 2 "$TMP/backup.err"))"
write_key ROTATETWO second-secret-2
echo ROTATEONE >"$TMP/revoked"
set +e
wait "$pid"
rc=$?
set -e
pvb_proxy_set '{"rules":[]}'
[ "$rc" -eq 0 ] || check_fail "backup across the rotation exited $rc: $(grep -m2 'error' "$TMP/backup.err")"
grep -q "credential files changed" "$TMP/backup.err" ||
    check_fail "the backup does not say it took the new credentials: $(head -n 3 "$TMP/backup.err")"
grep -q 'ROTATEONE\|first-secret\|second-secret' "$TMP/backup.err" "$TMP/backup.out" &&
    check_fail "a key or secret appears in the output"

step "the snapshot restores with the new key; the old one is refused"
ok restore --repo "$R" "${CRED[@]}" latest --volume vol --target "$TMP/restored" --no-progress
tree_same "$TMP/src" "$TMP/restored" "restore after the rotation"
write_key ROTATEONE first-secret-1
run snapshots --repo "$R" "${CRED[@]}"
[ "$RC" -eq 5 ] || check_fail "the revoked key: snapshots exited $RC, expected 5"
err_has "InvalidAccessKeyId" "the revoked key: S3's code is shown"

step "an unreadable file after a rotation keeps the credentials read before"
write_key ROTATETWO second-secret-2
pvb_proxy_set '{"rules":[{"fault":"latency","ms":200}]}'
set +e
"$PVBACKUP" verify --repo "$R" "${CRED[@]}" --read-data --no-progress \
    >"$TMP/verify.out" 2>"$TMP/verify.err" &
pid=$!
set -e
sleep 1
: >"$KEYS/secret-key" # emptied, as by a half-finished edit
set +e
wait "$pid"
rc=$?
set -e
pvb_proxy_set '{"rules":[]}'
[ "$rc" -eq 0 ] || check_fail "verify with a secret file emptied meanwhile exited $rc: $(grep -m2 'error' "$TMP/verify.err")"

fault_finish
