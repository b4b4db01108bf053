#!/usr/bin/env bash
# Self-test of the S3 test infrastructure: s3rver (tests/s3/s3rver.js), the fault proxy
# (tests/s3/faultproxy.js) and the bash library (tests/integration/lib/s3.sh), driven with
# curl's own SigV4 signing (curl >= 7.75: --aws-sigv4).
#
# Checks: PUT/GET/HEAD/ranged GET, ListObjectsV2 (continuation tokens), multipart upload,
# DeleteObjects, SigV4 verification (wrong secret: 403); ListMultipartUploads (prefix,
# max-uploads with markers) and AbortMultipartUpload, which the launcher adds to s3rver
# (NoSuchUpload after an abort, wrong secret: 403); the s3rver 4.0.4 quirks the S3
# backend has to live with; through the proxy, a clean request keeps a valid signature and
# every fault kind is injected, selected by every/probability/times/path; the proxy's
# statistics; and that no server of ours outlives pvb_s3_stop or a killed test.
#
# Usage: tests/s3/smoke.sh        exit status 0 only when every check passed
# shellcheck disable=SC2016 # the checks are eval'd strings, expanded when they run
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/pvb-s3-smoke.XXXXXX")
cleanup() { rm -rf "$TMP"; }
trap cleanup EXIT
# shellcheck source-path=SCRIPTDIR source=../integration/lib/s3.sh
. "$ROOT/tests/integration/lib/s3.sh"

PASSED=0
FAILED=0
step() { printf '=== [%3ds] %s\n' "$SECONDS" "$*"; }
ok() {
    PASSED=$((PASSED + 1))
    printf 'ok: %s\n' "$*"
}
bad() {
    FAILED=$((FAILED + 1))
    printf 'FAIL: %s\n' "$*" >&2
    for f in "$TMP/hdr" "$TMP/body" "$TMP/curlerr"; do
        if [ -s "$f" ]; then
            printf -- '--- %s:\n' "${f##*/}" >&2
            head -c 600 "$f" | cat -v >&2
            echo >&2
        fi
    done
}
# check WHAT COMMAND...: one recorded check
check() {
    local what=$1
    shift
    if "$@"; then ok "$what"; else bad "$what"; fi
}

EMPTY_SHA=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
EP=""
SECRET=S3RVER
HDRS=()
MAXT=20

# req METHOD PATH [BODYFILE]: a SigV4-signed request to $EP. Sets CODE (HTTP status, 000 when
# none), RC (curl's exit code), TIME (seconds); body in $TMP/body, headers in $TMP/hdr.
# HASH overrides the x-amz-content-sha256 header; HDRS adds headers.
req() {
    local method=$1 path=$2 body=${3:-} hash args=() out
    if [ -n "$body" ]; then
        hash=$(sha256sum <"$body" | cut -d' ' -f1)
        args+=(--data-binary "@$body")
    else
        hash=$EMPTY_SHA
    fi
    hash=${HASH:-$hash}
    case $method in
    HEAD) args+=(--head) ;;
    GET) ;;
    *) args+=(-X "$method") ;;
    esac
    rm -f "$TMP/body" "$TMP/hdr"
    set +e
    out=$(curl -sS --noproxy '*' -o "$TMP/body" -D "$TMP/hdr" -w '%{http_code} %{time_total}' \
        --max-time "$MAXT" --aws-sigv4 "aws:amz:us-east-1:s3" --user "S3RVER:$SECRET" \
        -H "x-amz-content-sha256: $hash" -H 'Content-Type: application/octet-stream' \
        "${HDRS[@]}" "${args[@]}" "$EP$path" 2>"$TMP/curlerr")
    RC=$?
    set -e
    CODE=${out%% *}
    TIME=${out#* }
    [ -f "$TMP/body" ] || : >"$TMP/body"
    [ -f "$TMP/hdr" ] || : >"$TMP/hdr"
}
code_is() { [ "$CODE" = "$1" ] && [ "$RC" = 0 ]; }
body_has() { grep -qF -- "$1" "$TMP/body"; }
hdr_has() { tr -d '\r' <"$TMP/hdr" | grep -qiF -- "$1"; }
same_as() { cmp -s "$TMP/body" "$1"; }
xml_values() { grep -o "<$1>[^<]*" "$TMP/body" | cut -d'>' -f2 || true; }
# jq-less JSON: pstat EXPR prints a Python expression on the stats document d
pstat() { pvb_proxy_stats | python3 -c 'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }
time_at_least() { python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) >= float(sys.argv[2]) else 1)' "$TIME" "$1"; }
# our node processes: their command lines name our workspace
our_nodes() { pgrep -f -- "$TMP/" 2>/dev/null || true; }

for tool in curl python3 node; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "FAIL: $tool not found" >&2
        exit 1
    }
done

head -c 200000 /dev/urandom >"$TMP/obj200k"
head -c 2500000 /dev/urandom >"$TMP/obj2m"
printf 'tiny object\n' >"$TMP/tiny"

# ------------------------------------------------------------------ s3rver
step "pvb_s3_start (fresh install check, extra buckets)"
PVB_S3_BUCKETS="extra-one,extra-two" pvb_s3_start
check "PVB_S3_ENDPOINT is http://127.0.0.1:PORT" \
    test "$PVB_S3_ENDPOINT" = "http://127.0.0.1:$PVB_S3_PORT"
check "AWS_* exported" test "$AWS_ENDPOINT_URL|$AWS_ACCESS_KEY_ID|$AWS_SECRET_ACCESS_KEY|$AWS_REGION" \
    = "$PVB_S3_ENDPOINT|S3RVER|S3RVER|us-east-1"
check "data directory under the test's TMP" test -d "$PVB_S3_DATA_DIR" -a "${PVB_S3_DATA_DIR#"$TMP"/}" != "$PVB_S3_DATA_DIR"
S3_PID=$PVB_S3_PID
EP=$PVB_S3_ENDPOINT

req GET /
check "ListBuckets: pvb-test, extra-one, extra-two" \
    eval 'code_is 200 && body_has "<Name>pvb-test</Name>" && body_has "<Name>extra-one</Name>" && body_has "<Name>extra-two</Name>"'

step "PUT, GET, HEAD, ranged GET"
req PUT /pvb-test/smoke/obj200k "$TMP/obj200k"
check "PUT 200 KB -> 200" code_is 200
check "PUT ETag is the MD5" hdr_has "etag: \"$(md5sum <"$TMP/obj200k" | cut -d' ' -f1)\""
req GET /pvb-test/smoke/obj200k
check "GET -> 200, same bytes" eval 'code_is 200 && same_as "$TMP/obj200k"'
req HEAD /pvb-test/smoke/obj200k
check "HEAD -> 200, Content-Length 200000" eval 'code_is 200 && hdr_has "content-length: 200000"'
req HEAD /pvb-test/smoke/missing
check "HEAD of a missing key -> 404" code_is 404
req GET /pvb-test/smoke/missing
check "GET of a missing key -> 404 NoSuchKey" eval 'code_is 404 && body_has "<Code>NoSuchKey</Code>"'
HDRS=(-H 'Range: bytes=1000-1999')
req GET /pvb-test/smoke/obj200k
HDRS=()
dd if="$TMP/obj200k" of="$TMP/range.want" bs=1000 skip=1 count=1 status=none
check "GET Range bytes=1000-1999 -> 206, the right 1000 bytes" \
    eval 'code_is 206 && same_as "$TMP/range.want" && hdr_has "content-range: bytes 1000-1999/200000"'
HDRS=(-H 'Range: bytes=300000-300010')
req GET /pvb-test/smoke/obj200k
HDRS=()
check "GET Range past the end -> 416 InvalidRange" eval 'code_is 416 && body_has InvalidRange'

step "ListObjectsV2"
for i in 1 2 3 4 5; do
    req PUT "/pvb-test/list/k$i" "$TMP/tiny"
    [ "$CODE" = 200 ] || bad "PUT list/k$i -> $CODE"
done
req GET '/pvb-test?list-type=2'
check "ListObjectsV2 (signed as /pvb-test?list-type=2) -> 200, lists the object" \
    eval 'code_is 200 && body_has "<Key>smoke/obj200k</Key>" && body_has "<KeyCount>6</KeyCount>"'
keys=()
token=""
pages=0
while :; do
    q="list-type=2&max-keys=2&prefix=list%2F"
    if [ -n "$token" ]; then
        # canonical order: continuation-token < list-type < max-keys < prefix
        q="continuation-token=$(node -p 'encodeURIComponent(process.argv[1])' "$token")&$q"
    fi
    req GET "/pvb-test?$q"
    if [ "$CODE" != 200 ]; then
        bad "ListObjectsV2 page $pages -> $CODE"
        break
    fi
    mapfile -t page < <(xml_values Key)
    keys+=("${page[@]}")
    token=$(xml_values NextContinuationToken)
    pages=$((pages + 1))
    if [ -z "$token" ] || [ "$pages" -ge 10 ]; then
        break
    fi
done
check "ListObjectsV2 max-keys=2 with continuation tokens: 3 pages, 5 keys in order" \
    test "$pages:${keys[*]}" = "3:list/k1 list/k2 list/k3 list/k4 list/k5"

step "multipart upload, DeleteObjects"
req POST '/pvb-test/smoke/mp?uploads='
UPLOAD=$(xml_values UploadId)
check "CreateMultipartUpload -> 200 with an UploadId" eval 'code_is 200 && [ -n "$UPLOAD" ]'
head -c 1500000 "$TMP/obj2m" >"$TMP/part1"
tail -c +1500001 "$TMP/obj2m" >"$TMP/part2"
etags=()
for n in 1 2; do
    req PUT "/pvb-test/smoke/mp?partNumber=$n&uploadId=$UPLOAD" "$TMP/part$n"
    etags+=("$(tr -d '\r' <"$TMP/hdr" | sed -n 's/^[Ee][Tt][Aa][Gg]: //p')")
    check "UploadPart $n -> 200 with an ETag" eval 'code_is 200 && [ -n "${etags[n-1]}" ]'
done
printf '<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>%s</ETag></Part><Part><PartNumber>2</PartNumber><ETag>%s</ETag></Part></CompleteMultipartUpload>' \
    "${etags[0]}" "${etags[1]}" >"$TMP/complete.xml"
req POST "/pvb-test/smoke/mp?uploadId=$UPLOAD" "$TMP/complete.xml"
check "CompleteMultipartUpload -> 200" eval 'code_is 200 && body_has "<CompleteMultipartUploadResult>"'
req GET /pvb-test/smoke/mp
check "the completed object is part 1 + part 2" eval 'code_is 200 && same_as "$TMP/obj2m"'
printf '<Delete><Object><Key>list/k1</Key></Object><Object><Key>list/k2</Key></Object></Delete>' >"$TMP/delete.xml"
req POST '/pvb-test?delete=' "$TMP/delete.xml"
check "DeleteObjects -> 200, both deleted" \
    eval 'code_is 200 && body_has "<Deleted><Key>list/k1</Key></Deleted>" && body_has "<Deleted><Key>list/k2</Key></Deleted>"'
req GET '/pvb-test?list-type=2&prefix=list%2F'
check "the listing no longer has them" eval 'code_is 200 && ! body_has "list/k1<" && body_has "<Key>list/k3</Key>"'
req DELETE /pvb-test/list/k3
check "DeleteObject -> 204" code_is 204

step "ListMultipartUploads and AbortMultipartUpload (added by the launcher)"
uploads_xml_ok() {
    body_has '<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">' &&
        body_has '<Bucket>pvb-test</Bucket>'
}
req GET '/pvb-test?uploads='
check "ListMultipartUploads with none in progress -> 200, empty (the completed upload is gone)" \
    eval 'code_is 200 && uploads_xml_ok && body_has "<IsTruncated>false</IsTruncated>" && ! body_has "<Upload>"'
req POST '/pvb-test/smoke/mpu-b?uploads='
UP_B=$(xml_values UploadId)
req POST '/pvb-test/other/mpu-a?uploads='
UP_A=$(xml_values UploadId)
check "two uploads initiated" eval '[ -n "$UP_A" ] && [ -n "$UP_B" ]'
req PUT "/pvb-test/smoke/mpu-b?partNumber=1&uploadId=$UP_B" "$TMP/tiny"
check "UploadPart to one of them -> 200" code_is 200
req GET '/pvb-test?uploads='
check "ListMultipartUploads -> both, in key order, with their upload ids" \
    eval 'code_is 200 && uploads_xml_ok && [ "$(xml_values Key | tr "\n" " ")" = "other/mpu-a smoke/mpu-b " ] &&
        [ "$(xml_values UploadId | tr "\n" " ")" = "$UP_A $UP_B " ] &&
        body_has "<MaxUploads>1000</MaxUploads>" && body_has "<IsTruncated>false</IsTruncated>"'
check "each upload has Initiated (ISO 8601, milliseconds, Z; within a minute), StorageClass, Owner, Initiator" \
    python3 -c 'import re, sys, datetime
body = open(sys.argv[1]).read()
ups = re.findall(r"<Upload>(.*?)</Upload>", body)
assert len(ups) == 2, ups
now = datetime.datetime.now(datetime.timezone.utc)
for u in ups:
    t = re.search(r"<Initiated>(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)</Initiated>", u).group(1)
    age = (now - datetime.datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%f%z")).total_seconds()
    assert -60 < age < 60, (t, age)
    assert "<StorageClass>STANDARD</StorageClass>" in u, u
    assert re.search(r"<Owner><ID>[^<]+</ID><DisplayName>[^<]*</DisplayName></Owner>", u), u
    assert re.search(r"<Initiator><ID>[^<]+</ID>", u), u' "$TMP/body"
req GET '/pvb-test?prefix=smoke%2F&uploads='
check "ListMultipartUploads prefix=smoke/ -> only smoke/mpu-b" \
    eval 'code_is 200 && [ "$(xml_values Key)" = smoke/mpu-b ] && body_has "<Prefix>smoke/</Prefix>"'
keys=()
truncs=()
km=""
um=""
pages=0
while :; do
    q="max-uploads=1&uploads="
    if [ -n "$km" ]; then
        # canonical order: key-marker < max-uploads < upload-id-marker < uploads
        q="key-marker=$(node -p 'encodeURIComponent(process.argv[1])' "$km")&max-uploads=1&upload-id-marker=$um&uploads="
    fi
    req GET "/pvb-test?$q"
    if [ "$CODE" != 200 ]; then
        bad "ListMultipartUploads page $pages -> $CODE"
        break
    fi
    mapfile -t page < <(xml_values Key)
    keys+=("${page[@]}")
    truncs+=("$(xml_values IsTruncated)")
    km=$(xml_values NextKeyMarker)
    um=$(xml_values NextUploadIdMarker)
    pages=$((pages + 1))
    if [ "${truncs[-1]}" != true ] || [ "$pages" -ge 10 ]; then
        break
    fi
done
check "max-uploads=1 following NextKeyMarker/NextUploadIdMarker: 2 pages, truncated then not" \
    test "$pages:${keys[*]}:${truncs[*]}" = "2:other/mpu-a smoke/mpu-b:true false"
req GET "/pvb-test?key-marker=smoke%2Fmpu-b&uploads="
check "key-marker without upload-id-marker starts after every upload of that key" \
    eval 'code_is 200 && ! body_has "<Upload>"'
req DELETE "/pvb-test/other/mpu-a?uploadId=$UP_A"
check "AbortMultipartUpload -> 204" code_is 204
req GET '/pvb-test?uploads='
check "the aborted upload is no longer listed" eval 'code_is 200 && [ "$(xml_values Key)" = smoke/mpu-b ]'
req DELETE "/pvb-test/other/mpu-a?uploadId=$UP_A"
check "aborting it again -> 404 NoSuchUpload" eval 'code_is 404 && body_has "<Code>NoSuchUpload</Code>"'
req PUT "/pvb-test/other/mpu-a?partNumber=1&uploadId=$UP_A" "$TMP/tiny"
check "UploadPart to the aborted upload -> 404 NoSuchUpload" eval 'code_is 404 && body_has NoSuchUpload'
printf '<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>"x"</ETag></Part></CompleteMultipartUpload>' >"$TMP/complete-a.xml"
req POST "/pvb-test/other/mpu-a?uploadId=$UP_A" "$TMP/complete-a.xml"
check "CompleteMultipartUpload of the aborted upload -> 404 NoSuchUpload" eval 'code_is 404 && body_has NoSuchUpload'
req DELETE "/pvb-test/smoke/mpu-b?uploadId=0123456789abcdef0123456789abcdef"
check "aborting an unknown upload id -> 404 NoSuchUpload" eval 'code_is 404 && body_has "<Code>NoSuchUpload</Code>"'
req DELETE "/pvb-test/smoke/other-key?uploadId=$UP_B"
check "aborting an upload under another key -> 404 NoSuchUpload" eval 'code_is 404 && body_has NoSuchUpload'
SECRET=wrong-secret req GET '/pvb-test?uploads='
check "ListMultipartUploads with a wrong secret -> 403 SignatureDoesNotMatch" \
    eval 'code_is 403 && body_has SignatureDoesNotMatch'
SECRET=wrong-secret req DELETE "/pvb-test/smoke/mpu-b?uploadId=$UP_B"
check "AbortMultipartUpload with a wrong secret -> 403" eval 'code_is 403 && body_has SignatureDoesNotMatch'
set +e
anon=$(curl -sS --noproxy '*' -o /dev/null -w '%{http_code}' --max-time 10 "$EP/pvb-test?uploads=")
set -e
check "an anonymous ListMultipartUploads -> 403" test "$anon" = 403
check "the upload survived those and still has its part" test -f "$PVB_S3_DATA_DIR/pvb-test/._S3rver_uploads/$UP_B/1"
req DELETE "/pvb-test/smoke/mpu-b?uploadId=$UP_B"
check "aborting it -> 204, its parts are gone" \
    eval 'code_is 204 && [ ! -e "$PVB_S3_DATA_DIR/pvb-test/._S3rver_uploads/$UP_B" ]'
ids=()
for i in 1 2; do
    req POST '/pvb-test/smoke/same?uploads='
    ids+=("$(xml_values UploadId)")
done
mapfile -t sorted < <(printf '%s\n' "${ids[@]}" | LC_ALL=C sort)
req GET '/pvb-test?uploads='
check "two uploads of one key: listed in upload-id order" \
    eval 'code_is 200 && [ "$(xml_values UploadId | tr "\n" " ")" = "${sorted[0]} ${sorted[1]} " ]'
req GET "/pvb-test?key-marker=smoke%2Fsame&upload-id-marker=${sorted[0]}&uploads="
check "key-marker with upload-id-marker: the uploads of that key after that id" \
    eval 'code_is 200 && [ "$(xml_values UploadId)" = "${sorted[1]}" ]'
for id in "${ids[@]}"; do
    req DELETE "/pvb-test/smoke/same?uploadId=$id"
    [ "$CODE" = 204 ] || bad "abort of smoke/same $id -> $CODE"
done
req GET '/pvb-test?uploads='
check "nothing left in progress" eval 'code_is 200 && ! body_has "<Upload>"'

step "SigV4 verification"
SECRET=wrong-secret
req GET /pvb-test/smoke/obj200k
SECRET=S3RVER
check "wrong secret -> 403 SignatureDoesNotMatch" eval 'code_is 403 && body_has SignatureDoesNotMatch'
req PUT /pvb-test/smoke/badsig "$TMP/tiny"
req GET /pvb-test/smoke/badsig
check "(the object of a good PUT exists)" code_is 200

step "s3rver 4.0.4 quirks (the S3 backend must not rely on these)"
req GET '/pvb-test/?list-type=2'
check "quirk: bucket request signed with a trailing slash -> 403" code_is 403
HASH=$EMPTY_SHA req PUT /pvb-test/smoke/hash-mismatch "$TMP/tiny"
check "quirk: a body whose SHA-256 differs from the signed x-amz-content-sha256 is accepted" code_is 200
HDRS=(-H 'Range: bytes=0-0')
req GET /pvb-test/smoke/obj200k
HDRS=()
check "quirk: Range bytes=0-0 returns the whole object" eval 'code_is 206 && same_as "$TMP/obj200k"'
rm -f "$TMP/body"
set +e
anon=$(curl -sS --noproxy '*' -o /dev/null -w '%{http_code}' --max-time 10 "$EP/pvb-test/smoke/obj200k")
set -e
check "quirk: an unsigned (anonymous) GET is served" test "$anon" = 200

# ------------------------------------------------------------------ proxy
step "pvb_proxy_start, clean requests through the proxy"
pvb_proxy_start "$TMP/faults.json"
PROXY_PID=$PVB_PROXY_PID
check "PVB_PROXY_ENDPOINT is http://127.0.0.1:PORT" \
    test "$PVB_PROXY_ENDPOINT" = "http://127.0.0.1:$PVB_PROXY_PORT"
check "the control file was created" test -s "$TMP/faults.json"
EP=$PVB_PROXY_ENDPOINT
req GET /pvb-test/smoke/obj200k
check "clean GET through the proxy: valid signature, same bytes" eval 'code_is 200 && same_as "$TMP/obj200k"'
req PUT /pvb-test/smoke/via-proxy "$TMP/obj2m"
check "clean 2.5 MB PUT through the proxy (Expect: 100-continue) -> 200" code_is 200
EP=$PVB_S3_ENDPOINT req GET /pvb-test/smoke/via-proxy
check "the object PUT through the proxy is intact" eval 'code_is 200 && same_as "$TMP/obj2m"'
req GET '/pvb-test?list-type=2&max-keys=1'
check "ListObjectsV2 through the proxy -> 200" eval 'code_is 200 && body_has "<IsTruncated>true</IsTruncated>"'
req HEAD /pvb-test/smoke/obj200k
check "HEAD through the proxy -> 200" eval 'code_is 200 && hdr_has "content-length: 200000"'
SECRET=wrong-secret req GET /pvb-test/smoke/obj200k
check "wrong secret through the proxy -> 403" code_is 403
rm -f "$TMP/body"
set +e
admin=$(curl -sS --noproxy '*' -o /dev/null -w '%{http_code}' "$PVB_PROXY_ENDPOINT/__faultproxy/nothing-here")
set -e
check "unknown admin path -> 404 from the proxy" test "$admin" = 404
check "admin requests are never forwarded" eval '! grep -q __faultproxy "$PVB_S3_LOG"'

step "one fault of each kind"
# fault_once KIND [EXTRA_JSON]: the next GET of /pvb-test/smoke/obj200k gets the fault
fault_once() {
    pvb_proxy_set "{\"rules\":[{\"fault\":\"$1\",\"match\":\"GET /pvb-test/smoke/obj200k\",\"times\":1${2:+,$2}}]}"
}
fault_once slowdown
req GET /pvb-test/smoke/obj200k
check "slowdown -> 503 SlowDown" eval 'code_is 503 && body_has "<Code>SlowDown</Code>" && hdr_has "x-faultproxy-fault: slowdown"'
req GET /pvb-test/smoke/obj200k
check "after times=1 the rule is spent: 200" eval 'code_is 200 && same_as "$TMP/obj200k"'
fault_once error500
req GET /pvb-test/smoke/obj200k
check "error500 -> 500 InternalError" eval 'code_is 500 && body_has "<Code>InternalError</Code>"'
fault_once throttle429
req GET /pvb-test/smoke/obj200k
check "throttle429 -> 429 with Retry-After: 1" eval 'code_is 429 && hdr_has "retry-after: 1"'
fault_once requesttimeout
req GET /pvb-test/smoke/obj200k
check "requesttimeout -> 400 RequestTimeout" eval 'code_is 400 && body_has "<Code>RequestTimeout</Code>"'
fault_once reset
req GET /pvb-test/smoke/obj200k
check "reset -> no response, curl error 56 or 52 (got $RC/$CODE)" eval '[ "$CODE" = 000 ] && { [ "$RC" = 56 ] || [ "$RC" = 52 ]; }'
fault_once truncate
req GET /pvb-test/smoke/obj200k
check "truncate -> 200, then curl error 18 after half of the body ($(stat -c %s "$TMP/body") bytes)" \
    eval '[ "$CODE" = 200 ] && [ "$RC" = 18 ] && [ "$(stat -c %s "$TMP/body")" = 100000 ]'
fault_once truncate '"bytes":1234'
req GET /pvb-test/smoke/obj200k
check "truncate bytes=1234 -> exactly 1234 bytes, Content-Length still 200000" \
    eval '[ "$RC" = 18 ] && [ "$(stat -c %s "$TMP/body")" = 1234 ] && hdr_has "content-length: 200000"'
fault_once latency '"ms":1500'
req GET /pvb-test/smoke/obj200k
check "latency 1500 ms -> 200 after >= 1.5 s (${TIME}s)" eval 'code_is 200 && same_as "$TMP/obj200k" && time_at_least 1.45'
fault_once stall
MAXT=2 req GET /pvb-test/smoke/obj200k
check "stall -> no answer until curl gives up: error 28 after 2 s" eval '[ "$RC" = 28 ] && [ "$CODE" = 000 ] && time_at_least 1.9'
fault_once drop
req GET /pvb-test/smoke/obj200k
check "drop -> empty reply, curl error 52" eval '[ "$RC" = 52 ] && [ "$CODE" = 000 ]'

step "faults on uploads"
printf 'version 2\n' >"$TMP/v2"
pvb_proxy_set '{"rules":[{"fault":"reset","match":"PUT","times":1}]}'
req PUT /pvb-test/smoke/via-proxy "$TMP/v2"
check "reset of a 10-byte PUT -> no response" eval '[ "$CODE" = 000 ] && [ "$RC" != 0 ]'
EP=$PVB_S3_ENDPOINT req GET /pvb-test/smoke/via-proxy
check "a reset PUT never reaches s3rver: old object intact" eval 'code_is 200 && same_as "$TMP/obj2m"'
pvb_proxy_set '{"rules":[{"fault":"slowdown","match":"PUT","times":1}]}'
req PUT /pvb-test/smoke/via-proxy "$TMP/obj2m"
check "slowdown of a 2.5 MB PUT -> 503 (body read first)" code_is 503
pvb_proxy_set '{"rules":[{"fault":"drop","match":"PUT","times":1}]}'
req PUT /pvb-test/smoke/via-proxy "$TMP/v2"
check "drop of a PUT -> no response" eval '[ "$CODE" = 000 ] && [ "$RC" = 52 ]'
EP=$PVB_S3_ENDPOINT req GET /pvb-test/smoke/via-proxy
check "... but the dropped PUT did land in s3rver" eval 'code_is 200 && same_as "$TMP/v2"'

step "selection: every, after, path, probability with a seed"
pvb_proxy_set '{"rules":[{"fault":"error500","every":3,"match":"GET"}]}'
codes=""
for i in 1 2 3 4 5 6 7; do
    req GET /pvb-test/smoke/obj200k
    codes="$codes $CODE"
done
check "every=3: 200 200 500 200 200 500 200 (got$codes)" test "$codes" = " 200 200 500 200 200 500 200"
pvb_proxy_set '{"rules":[{"fault":"slowdown","after":2,"times":2,"method":["HEAD"]}]}'
codes=""
for i in 1 2 3 4 5; do
    req HEAD /pvb-test/smoke/obj200k
    codes="$codes $CODE"
done
check "after=2 times=2 on HEAD: 200 200 503 503 200 (got$codes)" test "$codes" = " 200 200 503 503 200"
pvb_proxy_set '{"rules":[{"fault":"error500","path":"^/pvb-test/smoke/obj200k$"}]}'
req GET /pvb-test/smoke/tiny-missing
c1=$CODE
req GET /pvb-test/smoke/obj200k
check "path regex: only the matching key fails ($c1, $CODE)" test "$c1:$CODE" = "404:500"
prob_run() {
    local out="" i
    pvb_proxy_set '{"seed":42,"rules":[{"fault":"error500","probability":0.5,"match":"GET"}]}'
    for i in $(seq 1 16); do
        req GET /pvb-test/smoke/obj200k
        out="$out${CODE:0:1}"
    done
    printf '%s' "$out"
}
p1=$(prob_run)
p2=$(prob_run)
check "probability 0.5, seed 42: a mix, the same in two runs ($p1 / $p2)" \
    eval '[ "$p1" = "$p2" ] && [[ $p1 == *2* ]] && [[ $p1 == *5* ]]'
pvb_proxy_set '{"rules":[{"fault":"latency","ms":300,"match":"GET"},{"fault":"slowdown","match":"GET"}]}'
req GET /pvb-test/smoke/obj200k
check "latency then slowdown: both apply (503 after >= 0.3 s)" eval 'code_is 503 && time_at_least 0.29'
if pvb_proxy_set '{"rules":[{"fault":"slowdow","match":"GET"}]}' 2>"$TMP/set.err"; then
    bad "pvb_proxy_set accepted an unknown fault kind"
else
    ok "pvb_proxy_set rejects an unknown fault kind: $(head -n 1 "$TMP/set.err")"
fi
check "... and leaves the control file alone" grep -q latency "$PVB_PROXY_CONTROL"
pvb_proxy_set '{"rules":[]}'
printf '{"rules": [' >"$PVB_PROXY_CONTROL.tmp" && mv "$PVB_PROXY_CONTROL.tmp" "$PVB_PROXY_CONTROL"
req GET /pvb-test/smoke/obj200k
check "a broken control file fails requests loudly (500 FaultProxyControlError)" \
    eval 'code_is 500 && body_has FaultProxyControlError'
pvb_proxy_set '{"rules":[]}'
req GET /pvb-test/smoke/obj200k
check "no rules: clean again" eval 'code_is 200 && same_as "$TMP/obj200k"'

step "statistics and log"
pvb_proxy_stats >"$TMP/stats.json"
check "stats: JSON with requests and faults by kind" \
    python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
f = d["faults"]
assert d["requests"] > 40, d["requests"]
assert f["slowdown"] >= 4 and f["error500"] >= 5 and f["throttle429"] == 1, f
assert f["reset"] == 2 and f["truncate"] == 2 and f["stall"] == 1 and f["drop"] == 2, f
assert f["latency"] == 2 and f["requesttimeout"] == 1, f
assert d["control_errors"] == 1, d
assert d["faults_total"] == sum(f.values())' "$TMP/stats.json"
check "log: one line per request and per fault" \
    eval 'grep -q "FAULT slowdown" "$PVB_PROXY_LOG" && grep -q "GET /pvb-test/smoke/obj200k -> 200" "$PVB_PROXY_LOG" && grep -q "truncated after 100000 of 200000" "$PVB_PROXY_LOG"'
pvb_proxy_reset_stats
check "pvb_proxy_reset_stats zeroes the counters" test "$(pstat 'd["requests"]')" = 0

step "--fault on the command line"
pvb_proxy_stop
check "pvb_proxy_stop: the proxy is gone" eval '! _pvb_s3_alive "$PROXY_PID"'
pvb_proxy_start "$TMP/faults2.json" --seed 7 --fault 'slowdown:every=2,match=GET' \
    --fault '{"fault":"error500","match":"HEAD","times":1}'
PROXY_PID=$PVB_PROXY_PID
EP=$PVB_PROXY_ENDPOINT
codes=""
for i in 1 2 3 4; do
    req GET /pvb-test/smoke/obj200k
    codes="$codes $CODE"
done
req HEAD /pvb-test/smoke/obj200k
codes="$codes $CODE"
req HEAD /pvb-test/smoke/obj200k
codes="$codes $CODE"
check "--fault rules (short form and JSON): 200 503 200 503 500 200 (got$codes)" \
    test "$codes" = " 200 503 200 503 500 200"

step "only 127.0.0.1"
# shellcheck disable=SC2034 # used in the eval below
listeners=$(ss -Hltnp 2>/dev/null | grep -E "pid=($S3_PID|$PROXY_PID)," || true)
check "both servers listen, on 127.0.0.1 only" \
    eval '[ "$(printf "%s\n" "$listeners" | grep -c .)" = 2 ] && ! printf "%s\n" "$listeners" | awk "{print \$4}" | grep -qv "^127\.0\.0\.1:"'

step "pvb_s3_stop"
pvb_s3_stop
check "s3rver and the proxy are gone" eval '! _pvb_s3_alive "$S3_PID" && ! _pvb_s3_alive "$PROXY_PID"'
check "no node process of ours is left" test -z "$(our_nodes)"
check "PVB_S3_PID, PVB_S3_ENDPOINT, PVB_PROXY_ENDPOINT unset" \
    test -z "${PVB_S3_PID:-}${PVB_S3_ENDPOINT:-}${PVB_PROXY_ENDPOINT:-}"

step "a restart gets a fresh server"
pvb_s3_start --allow-mismatched-signatures
EP=$PVB_S3_ENDPOINT
req GET /pvb-test/smoke/obj200k
check "fresh data directory: the old object is gone" code_is 404
SECRET=wrong-secret req PUT /pvb-test/smoke/any "$TMP/tiny"
check "--allow-mismatched-signatures: a wrong secret is accepted" code_is 200
pvb_s3_stop

# ------------------------------------------------------------------ killed tests
# child_test MODE: a test that starts both servers, writes its pid and theirs, then ends by
# MODE; its own EXIT trap (which the library chains after its cleanup) leaves a mark.
child_test() {
    local mode=$1
    local dir="$TMP/child-$mode" i cpid="" spid="" ppid=""
    mkdir -p "$dir"
    # the subshell reaps the child, so that its "Killed" notice goes to /dev/null
    (
        TMP=$dir bash -c '
        set -euo pipefail
        trap "touch \"\$TMP/own-trap-ran\"" EXIT
        . "$1"
        pvb_s3_start
        pvb_proxy_start "$TMP/c.json"
        echo "$$ $PVB_S3_PID $PVB_PROXY_PID" >"$TMP/pids"
        case $2 in
        exit) exit 3 ;;
        fail) false ;;
        term) sleep 30 & wait ;;
        kill) sleep 0.2; kill -KILL $$ ;;
        esac' child "$ROOT/tests/integration/lib/s3.sh" "$mode" >"$dir/out" 2>&1
        true
    ) 2>/dev/null &
    local sub=$!
    for ((i = 0; i < 150; i++)); do
        [ -s "$dir/pids" ] && break
        sleep 0.1
    done
    read -r cpid spid ppid <"$dir/pids" || true
    if [ -z "$cpid" ] || [ -z "$spid" ] || [ -z "$ppid" ]; then
        echo "child test '$mode' did not start its servers:" >&2
        cat "$dir/out" >&2
        return 1
    fi
    [ "$mode" = term ] && kill -TERM "$cpid"
    wait "$sub" || true
    # EXIT trap: gone at once; SIGKILL: the servers notice their parent is gone (0.5 s poll).
    # (A zombie counts as gone: this sandbox's pid 1 reaps orphans slowly.)
    for ((i = 0; i < 40; i++)); do
        _pvb_s3_alive "$spid" || _pvb_s3_alive "$ppid" || break
        sleep 0.1
    done
    if _pvb_s3_alive "$spid" || _pvb_s3_alive "$ppid"; then
        echo "child test '$mode': server still running after 4 s" >&2
        return 1
    fi
    if [ "$mode" != kill ] && [ ! -e "$dir/own-trap-ran" ]; then
        echo "child test '$mode': the test's own EXIT trap did not run" >&2
        return 1
    fi
    printf '  (%s: servers gone within %d.%d s of the test ending)\n' "$mode" $((i / 10)) $((i % 10))
}
step "a bare wait in a test does not wait for the servers"
mkdir -p "$TMP/waiter"
check "wait returns while the servers run" timeout 30 env TMP="$TMP/waiter" bash -c '
    set -euo pipefail
    . "$1"
    pvb_s3_start 2>/dev/null
    pvb_proxy_start "$TMP/c.json" 2>/dev/null
    sleep 0.2 &
    wait
    _pvb_s3_alive "$PVB_S3_PID" && _pvb_s3_alive "$PVB_PROXY_PID"' waiter "$ROOT/tests/integration/lib/s3.sh"

step "a test that ends or is killed leaves no server behind"
for mode in exit fail term kill; do
    check "test that ends by '$mode': its servers are gone" child_test "$mode"
done
check "no node process of ours is left" test -z "$(our_nodes)"

echo
echo "smoke: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
