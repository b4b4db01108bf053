#!/usr/bin/env bash
# The storage layer itself, on a local directory and on s3rver, through pvb_storage_tool:
# listings of thousands of keys (S3: pages of 1000 joined by continuation tokens), batched
# deletes (S3: DeleteObjects, 1000 keys a request), multipart uploads with parallel parts,
# ranged reads, missing objects, names that must be refused, wrong credentials; the cleanup
# of what interrupted writers leave (local: .tmp-* files; S3: incomplete multipart uploads,
# listed in pages of 1000 and aborted), and the abort of a multipart upload whose part fails.
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
head -c 1000 /dev/urandom >"$TMP/part"
EMPTY_SHA=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855

# s3req METHOD PATH [BODYFILE]: a request signed by curl, straight to s3rver; the body of the
# answer in $TMP/s3.body, the status in S3CODE
s3req() {
    local hash=$EMPTY_SHA args=()
    if [ -n "${3:-}" ]; then
        hash=$(sha256sum <"$3" | cut -d' ' -f1)
        args=(--data-binary "@$3")
    fi
    S3CODE=$(curl -sS --noproxy '*' -o "$TMP/s3.body" -w '%{http_code}' --max-time 30 \
        --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
        -H "x-amz-content-sha256: $hash" -X "$1" "${args[@]}" "$PVB_S3_ENDPOINT$2") || S3CODE=000
}
# initiate KEY: start a multipart upload, its id in UPLOAD_ID
initiate() {
    s3req POST "/$PVB_S3_BUCKET/$1?uploads="
    UPLOAD_ID=$(grep -o '<UploadId>[^<]*' "$TMP/s3.body" | cut -d'>' -f2 || true)
    if [ "$S3CODE" != 200 ] || [ -z "$UPLOAD_ID" ]; then
        fail "initiate $1: $S3CODE $(cat "$TMP/s3.body")"
    fi
}
# uploads: the keys of the uploads in progress in the bucket, sorted (one page: few are left
# when this is called)
uploads() {
    s3req GET "/$PVB_S3_BUCKET?uploads="
    [ "$S3CODE" = 200 ] || fail "ListMultipartUploads: $S3CODE $(cat "$TMP/s3.body")"
    grep -o '<Key>[^<]*' "$TMP/s3.body" | cut -d'>' -f2 | LC_ALL=C sort || true
}

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

    step "$kind: clean-incomplete removes old leftovers of killed writers, keeps young ones"
    tool_ok "$url" list
    cp "$TMP/out" "$TMP/objects-before"
    if [ "$kind" = local ]; then
        repo=$TMP/local-repo
        mkdir -p "$repo/deep/er/dir" "$TMP/outside"
        for f in .tmp-00000000000000a1 big/.tmp-00000000000000a2 deep/er/dir/.tmp-00000000000000a3; do
            printf 'half written' >"$repo/$f"
            touch -d '2 hours ago' "$repo/$f"
        done
        printf 'young' >"$repo/many2/.tmp-00000000000000a4"
        # a symlink of that name is not ours, and what it points to even less
        printf 'not ours' >"$TMP/outside/.tmp-00000000000000a5"
        touch -d '2 hours ago' "$TMP/outside/.tmp-00000000000000a5"
        ln -s "$TMP/outside/.tmp-00000000000000a5" "$repo/big/.tmp-00000000000000a5"
        ln -s "$TMP/outside" "$repo/linked"
        touch -h -d '2 hours ago' "$repo/big/.tmp-00000000000000a5" "$repo/linked"
        tool_ok "$url" clean-incomplete 3600
        [ "$(cat "$TMP/out")" = "removed 3" ] || check_fail "local: clean-incomplete 3600: $(cat "$TMP/out")"
        left=$(cd "$repo" && find . -name '.tmp-*' | LC_ALL=C sort | tr '\n' ' ')
        [ "$left" = "./big/.tmp-00000000000000a5 ./many2/.tmp-00000000000000a4 " ] ||
            check_fail "local: after clean-incomplete 3600 left: $left"
        tool_ok "$url" clean-incomplete 0
        [ "$(cat "$TMP/out")" = "removed 1" ] || check_fail "local: clean-incomplete 0: $(cat "$TMP/out")"
        left=$(cd "$repo" && find . -name '.tmp-*' | tr '\n' ' ')
        [ "$left" = "./big/.tmp-00000000000000a5 " ] || check_fail "local: after clean-incomplete 0 left: $left"
        [ -f "$TMP/outside/.tmp-00000000000000a5" ] || check_fail "local: a symlink was followed"
        rm -f "$repo/big/.tmp-00000000000000a5" "$repo/linked"
    else
        # young uploads, one with a part, under the repository's prefix; others outside it,
        # one under a sibling prefix that shares its first characters
        initiate storage-test/data/aa/young-1
        young1=$UPLOAD_ID
        s3req PUT "/$PVB_S3_BUCKET/storage-test/data/aa/young-1?partNumber=1&uploadId=$young1" "$TMP/part"
        [ "$S3CODE" = 200 ] || fail "UploadPart: $S3CODE"
        initiate storage-test/index/young-2
        initiate storage-test2/data/foreign
        initiate other/foreign
        # 1100 uploads initiated two hours ago (more than a page of ListMultipartUploads),
        # planted as tests/s3/s3rver.js keeps them; and one old one outside the prefix
        python3 - "$PVB_S3_DATA_DIR/$PVB_S3_BUCKET/._S3rver_uploads" <<'PY'
import datetime, json, os, sys
root = sys.argv[1]
when = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=2))
stamp = when.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (when.microsecond // 1000)
keys = ["storage-test/data/old/k-%04d" % i for i in range(1100)] + ["storage-test2/data/old"]
for i, key in enumerate(keys):
    d = os.path.join(root, "%032x" % (0xa0000 + i))
    os.makedirs(d)
    for name, text in (("key", key), ("metadata", "{}"),
                       ("pvb-initiated.json", json.dumps({"initiated": stamp}))):
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
PY
        tool_ok "$url" clean-incomplete 86400
        [ "$(cat "$TMP/out")" = "removed 0" ] || check_fail "s3: clean-incomplete 86400: $(cat "$TMP/out")"
        tool_ok "$url" stats-after clean-incomplete 3600
        [ "$(head -n 1 "$TMP/out")" = "removed 1100" ] ||
            check_fail "s3: clean-incomplete 3600: $(cat "$TMP/out")"
        # two pages of the listing, 1100 aborts
        req=$(awk '/^requests/ {print $2}' "$TMP/out")
        [ "$req" -eq 1102 ] || check_fail "s3: clean-incomplete of 1100 uploads took $req requests"
        left=$(uploads | tr '\n' ' ')
        [ "$left" = "other/foreign storage-test/data/aa/young-1 storage-test/index/young-2 storage-test2/data/foreign storage-test2/data/old " ] ||
            check_fail "s3: after clean-incomplete 3600 in progress: $left"
        # ages are pvbackup's: with its clock two hours ahead, the young ones are old
        PVBACKUP_FAKE_NOW=$(($(date +%s) + 7200)) tool_ok "$url" clean-incomplete 3600
        [ "$(cat "$TMP/out")" = "removed 2" ] || check_fail "s3: clean-incomplete 3600 at now+2h: $(cat "$TMP/out")"
        [ ! -e "$PVB_S3_DATA_DIR/$PVB_S3_BUCKET/._S3rver_uploads/$young1" ] ||
            check_fail "s3: the part of an aborted upload is still stored"
        initiate storage-test/index/young-3
        tool_ok "$url" clean-incomplete 0
        [ "$(cat "$TMP/out")" = "removed 1" ] || check_fail "s3: clean-incomplete 0: $(cat "$TMP/out")"
        left=$(uploads | tr '\n' ' ')
        [ "$left" = "other/foreign storage-test2/data/foreign storage-test2/data/old " ] ||
            check_fail "s3: after clean-incomplete 0 in progress: $left"
        n=$(grep -c "DELETE /$PVB_S3_BUCKET/storage-test/[^ ]*?uploadId=[0-9a-f]* -> 204" "$PVB_S3_LOG" || true)
        [ "$n" -eq 1103 ] || check_fail "s3: $n aborts answered 204, expected 1103"
    fi
    tool_ok "$url" list
    cmp -s "$TMP/out" "$TMP/objects-before" || check_fail "$kind: clean-incomplete changed the objects"
    PVB_TOOL_MULTIPART_THRESHOLD=5242880 PVB_TOOL_PART_SIZE=5242880 \
        tool_ok "$url" put big/after-cleanup "$TMP/big"
    tool_ok "$url" get big/after-cleanup
    cmp -s "$TMP/out" "$TMP/big" || check_fail "$kind: a multipart put after the cleanup reads back different"
    tool_ok "$url" clean-incomplete 0
    [ "$(cat "$TMP/out")" = "removed 0" ] || check_fail "$kind: a completed put left something: $(cat "$TMP/out")"
done

step "s3: a multipart upload whose part fails is aborted (204), nothing left in progress"
pvb_proxy_start "$TMP/faults.json"
pvb_proxy_set '{"rules":[{"fault":"error500","match":"PUT /storage-test/big/failed\\?partNumber=3&"}]}'
AWS_ENDPOINT_URL=$PVB_PROXY_ENDPOINT PVB_TOOL_MAX_ATTEMPTS=1 PVB_TOOL_MULTIPART_THRESHOLD=5242880 \
    PVB_TOOL_PART_SIZE=5242880 tool "s3://$PVB_S3_BUCKET/storage-test" put big/failed "$TMP/big"
[ "$RC" -eq 1 ] || check_fail "a put whose part 3 fails exited $RC"
grep -q 'InternalError' "$TMP/err" || check_fail "a put whose part 3 fails: $(cat "$TMP/err")"
grep -q 'could not abort\|does not abort' "$TMP/err" && check_fail "the abort failed: $(cat "$TMP/err")"
grep -q "DELETE /$PVB_S3_BUCKET/storage-test/big/failed?uploadId=[0-9a-f]* -> 204" "$PVB_S3_LOG" ||
    check_fail "no abort answered 204 in the s3rver log"
left=$(uploads | grep -c 'big/failed' || true)
[ "$left" -eq 0 ] || check_fail "the failed upload is still in progress"
tool "s3://$PVB_S3_BUCKET/storage-test" head big/failed
[ "$RC" -eq 4 ] || check_fail "the failed put left an object (head exited $RC)"
pvb_proxy_stop

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

step "s3: a prefix with characters that must be percent-encoded, through pvbackup"
# Every byte outside the unreserved set is encoded, '+' as %2B, in paths and in the listing's
# prefix parameter; the signature covers them. (Not tested here: ! ' ( ) * and & < > `, which
# s3rver 4.0.4 mishandles for every client, botocore's included: it signs them unencoded or
# escapes them twice in listings. AWS takes them; the signer's unit tests cover their
# encoding against botocore.)
odd="s3://$PVB_S3_BUCKET/team+ops/pv 2026,x;y:z@\$%[]{}|^~#?=\"a"
mkdir -p "$TMP/odd-src/sub"
head -c 300000 /dev/urandom >"$TMP/odd-src/sub/data.bin"
echo text >"$TMP/odd-src/t.txt"
ok init --repo "$odd"
ok backup --repo "$odd" --volume v --source "$TMP/odd-src" --no-progress
ok restore --repo "$odd" latest --volume v --target "$TMP/odd-out" --no-progress
tree_same "$TMP/odd-src" "$TMP/odd-out" "prefix with encoded characters"
ok verify --repo "$odd" --read-data
ok prune --repo "$odd"
[ -d "$PVB_S3_DATA_DIR/$PVB_S3_BUCKET/team+ops/pv 2026,x;y:z@\$%[]{}|^~#?=\"a/snapshots" ] ||
    check_fail "the objects are not under the prefix as written: $(ls "$PVB_S3_DATA_DIR/$PVB_S3_BUCKET")"

fault_finish
