#!/usr/bin/env bash
# The storage layer itself, on a local directory and on s3rver, through pvb_storage_tool:
# listings of thousands of keys (S3: pages of 1000 joined by continuation tokens), batched
# deletes (S3: DeleteObjects, 1000 keys a request), multipart uploads with parallel parts,
# ranged reads, missing objects, names that must be refused, wrong credentials.
#
# Environment: PVBACKUP, PVB_SOURCE_DIR, PVB_STORAGE_TOOL (the tool's binary).
set -euo pipefail

. "$PVB_SOURCE_DIR/tests/integration/lib/faultlib.sh"
fault_init s3-storage
: "${PVB_STORAGE_TOOL:?set PVB_STORAGE_TOOL to the pvb_storage_tool binary}"
. "$PVB_SOURCE_DIR/tests/integration/lib/s3.sh"
pvb_s3_start

# tool ARGS...: run the tool, output in $TMP/out, exit code in RC
tool() {
    set +e
    "$PVB_STORAGE_TOOL" "$@" >"$TMP/out" 2>"$TMP/err"
    RC=$?
    set -e
}
tool_ok() {
    tool "$@"
    [ "$RC" -eq 0 ] || fail "pvb_storage_tool $2 exited $RC: $(head -c 300 "$TMP/err")"
}

head -c $((21 * 1024 * 1024 + 12345)) /dev/urandom >"$TMP/big"

for url in "$TMP/local-repo" "s3://$PVB_S3_BUCKET/storage-test"; do
    kind=${url%%:*}
    [ "$kind" = s3 ] || kind=local
    mkdir -p "$TMP/local-repo"

    step "$kind: 2500 objects listed in full, then deleted in batches"
    tool_ok "$url" put-many many 2500 64
    tool_ok "$url" put-many many2 3 64 # a sibling prefix that must not show in 'many'
    tool_ok "$url" list many
    n=$(wc -l <"$TMP/out")
    [ "$n" -eq 2500 ] || check_fail "$kind: listed $n objects of 2500"
    grep -q '^many/obj-02499$' "$TMP/out" || check_fail "$kind: the last object is not listed"
    grep -q '^many2/' "$TMP/out" && check_fail "$kind: the listing of 'many' shows 'many2'"
    tool_ok "$url" stats-after delete-all many
    note "$kind: delete of 2500 objects: $(cat "$TMP/out")"
    if [ "$kind" = s3 ]; then
        # one listing (3 pages) and 3 DeleteObjects requests
        req=$(awk '{print $2}' "$TMP/out")
        [ "$req" -le 8 ] || check_fail "s3: deleting 2500 objects took $req requests"
    fi
    tool_ok "$url" list many
    [ ! -s "$TMP/out" ] || check_fail "$kind: objects left after delete-all: $(wc -l <"$TMP/out")"
    tool_ok "$url" list many2
    [ "$(wc -l <"$TMP/out")" -eq 3 ] || check_fail "$kind: delete-all of 'many' touched 'many2'"
    tool_ok "$url" delete many/obj-00001 never/was # missing objects are no error
    tool_ok "$url" rm never/was

    step "$kind: a 21 MiB object in 5 MiB parts, read back whole and in ranges"
    PVB_TOOL_MULTIPART_THRESHOLD=5242880 PVB_TOOL_PART_SIZE=5242880 \
        tool_ok "$url" stats-after put big/one "$TMP/big"
    note "$kind: multipart put: $(cat "$TMP/out")"
    if [ "$kind" = s3 ]; then
        # initiate + 5 parts + complete
        req=$(awk '{print $2}' "$TMP/out")
        [ "$req" -eq 7 ] || check_fail "s3: a 5-part upload took $req requests, expected 7"
    fi
    tool_ok "$url" get big/one
    cmp -s "$TMP/out" "$TMP/big" || check_fail "$kind: the multipart object reads back different"
    tool_ok "$url" head big/one
    [ "$(cat "$TMP/out")" -eq $((21 * 1024 * 1024 + 12345)) ] || check_fail "$kind: head size"
    tool_ok "$url" get big/one 5242000 2000
    cmp -s "$TMP/out" <(tail -c +5242001 "$TMP/big" | head -c 2000) ||
        check_fail "$kind: a range across a part boundary reads back different"
    tool_ok "$url" get big/one $((21 * 1024 * 1024)) 0
    [ "$(wc -c <"$TMP/out")" -eq 12345 ] || check_fail "$kind: an open-ended range"

    step "$kind: missing objects, ranges past the end, invalid names"
    tool "$url" get big/none
    [ "$RC" -eq 4 ] || check_fail "$kind: get of a missing object exited $RC, expected 4"
    tool "$url" head big/none
    [ "$RC" -eq 4 ] || check_fail "$kind: head of a missing object exited $RC, expected 4"
    tool "$url" get big/one $((21 * 1024 * 1024 + 12000)) 1000
    [ "$RC" -eq 1 ] || check_fail "$kind: a range past the end exited $RC, expected 1"
    grep -q 'truncated\|shorter' "$TMP/err" || check_fail "$kind: a range past the end: $(cat "$TMP/err")"
    for bad in ../x /abs a//b 'a b' './x'; do
        tool "$url" put "$bad" "$TMP/big"
        [ "$RC" -eq 1 ] || check_fail "$kind: put of invalid name '$bad' exited $RC"
    done
done

step "s3: wrong credentials and a missing bucket"
AWS_SECRET_ACCESS_KEY=wrong-secret tool "s3://$PVB_S3_BUCKET/storage-test" put x/y "$TMP/big"
[ "$RC" -eq 1 ] || check_fail "wrong secret: exit $RC"
grep -q 'SignatureDoesNotMatch' "$TMP/err" || check_fail "wrong secret: $(cat "$TMP/err")"
grep -q 'wrong-secret' "$TMP/err" && check_fail "wrong secret: the secret is in the message"
tool "s3://$PVB_S3_BUCKET/storage-test" head x/y
[ "$RC" -eq 4 ] || check_fail "wrong secret: something was written"
tool "s3://no-such-bucket/x" list
[ "$RC" -eq 4 ] || check_fail "missing bucket: exit $RC, expected 4"
tool "s3://no-such-bucket/x" rm some/object # a delete there is no success either
[ "$RC" -eq 4 ] || check_fail "delete in a missing bucket: exit $RC, expected 4"
grep -q 'no-such-bucket' "$TMP/err" || check_fail "missing bucket: $(cat "$TMP/err")"

step "s3: --limit-upload and --limit-download hold the rate over all transfers"
export PVBACKUP_PASSWORD=limit-test
mkdir -p "$TMP/limited"
head -c $((6 * 1024 * 1024)) /dev/urandom >"$TMP/limited/random.bin"
run init --repo "s3://$PVB_S3_BUCKET/limited"
[ "$RC" -eq 0 ] || fail "init for the limit test exited $RC"
start=$(date +%s.%N)
run backup --repo "s3://$PVB_S3_BUCKET/limited" --volume v --source "$TMP/limited" \
    --limit-upload 2MiB --no-progress
took=$(python3 -c "print($(date +%s.%N) - $start)")
[ "$RC" -eq 0 ] || check_fail "limited backup exited $RC"
note "6 MiB backed up at --limit-upload 2MiB in ${took}s"
python3 -c "import sys; sys.exit(0 if $took >= 2.5 else 1)" ||
    check_fail "--limit-upload 2MiB: 6 MiB went up in ${took}s"
start=$(date +%s.%N)
run restore --repo "s3://$PVB_S3_BUCKET/limited" latest --volume v --target "$TMP/limited-out" \
    --limit-download 2MiB --no-progress
took=$(python3 -c "print($(date +%s.%N) - $start)")
[ "$RC" -eq 0 ] || check_fail "limited restore exited $RC"
note "6 MiB restored at --limit-download 2MiB in ${took}s"
python3 -c "import sys; sys.exit(0 if $took >= 2.5 else 1)" ||
    check_fail "--limit-download 2MiB: 6 MiB came down in ${took}s"
cmp -s "$TMP/limited/random.bin" "$TMP/limited-out/random.bin" || check_fail "limited restore differs"

step "s3: a missing bucket is named as such, not as a missing repository"
run snapshots --repo "s3://no-such-bucket/x"
[ "$RC" -eq 4 ] || check_fail "snapshots on a missing bucket exited $RC, expected 4"
grep -q "bucket 'no-such-bucket' does not exist" "$TMP/err" ||
    check_fail "snapshots on a missing bucket: $(cat "$TMP/err")"

fault_finish
