#!/usr/bin/env bash
# The local cache of a remote repository's index files and snapshot objects (repo/cache.c):
# commands on S3 read them from the cache instead of downloading them again; every copy is
# checked against its name, so a damaged or stale copy costs a download, never a wrong
# answer; copies of objects the repository no longer lists are removed; --no-cache and an
# unusable cache directory work; local repositories keep no cache. GETs are counted by the
# fault proxy (no fault rules) between pvbackup and s3rver.
#
# Environment: PVBACKUP, PVB_SOURCE_DIR.
set -euo pipefail

. "$PVB_SOURCE_DIR/tests/integration/lib/faultlib.sh"
fault_init s3-cache
. "$PVB_SOURCE_DIR/tests/integration/lib/s3.sh"
pvb_s3_start
pvb_proxy_start "$TMP/proxy.json"
export AWS_ENDPOINT_URL=$PVB_PROXY_ENDPOINT

R="s3://$PVB_S3_BUCKET/cache-test"
CACHE=$TMP/cache # the default: beside the catalog ($TMP/catalog.db)
make_files "$TMP/src" 40 1000 200000 7

# meta_gets: GETs of index files and snapshot objects since the last reset
meta_gets() { grep -cE ' GET /[^ ]*/(index|snapshots)/[0-9a-f]{64} ' "$PVB_PROXY_LOG" || true; }
reset_log() { : >"$PVB_PROXY_LOG"; }

step "a backup leaves copies of its index file and snapshot object"
ok init --repo "$R"
ok backup --repo "$R" --volume vol --source "$TMP/src" --no-progress
snap=$(find "$CACHE" -path '*/snapshots/*' -type f | head -n 1)
[ -n "$snap" ] || fail "no snapshot object in the cache $CACHE: $(find "$CACHE" | head)"
[ -n "$(find "$CACHE" -path '*/index/*' -type f)" ] || check_fail "no index file in the cache"
mode=$(stat -c %a "$(dirname "$(dirname "$snap")")")
[ "$mode" = 700 ] || check_fail "the cache directory has mode $mode, expected 700"

# (snapshots itself reads descriptions from the catalog; ls and restore read the objects)
step "snapshots, ls and restore read them from the cache"
reset_log
ok snapshots --repo "$R" --json
ok ls --repo "$R" latest --volume vol
ok restore --repo "$R" latest --volume vol --target "$TMP/r1" --no-progress
tree_same "$TMP/src" "$TMP/r1" "restore with the cache"
n=$(meta_gets)
[ "$n" -eq 0 ] || check_fail "with the cache: $n GETs of index files or snapshot objects"

step "--no-cache and PVBACKUP_NO_CACHE=1 download them"
reset_log
ok restore --repo "$R" latest --volume vol --target "$TMP/r2" --no-progress --no-cache
n=$(meta_gets)
[ "$n" -ge 2 ] || check_fail "--no-cache: $n GETs of index files and snapshot objects, expected 2"
reset_log
PVBACKUP_NO_CACHE=1 ok ls --repo "$R" latest --volume vol
[ "$(meta_gets)" -ge 1 ] || check_fail "PVBACKUP_NO_CACHE=1: the snapshot object was not downloaded"

step "a damaged copy is dropped and fetched again, without an error"
flip_byte "$snap"
reset_log
ok restore --repo "$R" latest --volume vol --target "$TMP/r3" --no-progress
tree_same "$TMP/src" "$TMP/r3" "restore with a damaged cached snapshot"
[ "$(meta_gets)" -eq 1 ] || check_fail "damaged copy: $(meta_gets) GETs, expected 1"
[ "$(sha256sum <"$snap" | cut -d' ' -f1)" = "$(basename "$snap")" ] ||
    check_fail "the damaged copy was not replaced by a good one"
grep -q 'error\|warning' "$TMP/err" && check_fail "damaged copy: the restore complained: $(head -n 3 "$TMP/err")"

step "a removed cache directory is made again"
rm -rf "$CACHE"
ok ls --repo "$R" latest --volume vol
[ -n "$(find "$CACHE" -path '*/snapshots/*' -type f)" ] || check_fail "the cache was not filled again"

step "a copy of an object the repository no longer has is removed, and never used"
ok backup --repo "$R" --volume vol --source "$TMP/src" --no-progress
first=${snap##*/}
rm -f "$PVB_S3_DATA_DIR/$PVB_S3_BUCKET/cache-test/snapshots/$first"*
ok snapshots --repo "$R" --json
python3 -c 'import json,sys; sys.exit(any(s["id"] == sys.argv[1] for s in json.load(open(sys.argv[2]))))' \
    "$first" "$TMP/out" || check_fail "a snapshot gone from the repository is still listed"
ok ls --repo "$R" latest --volume vol
[ -e "$CACHE"/*/snapshots/"$first" ] && check_fail "the copy of a removed snapshot is still in the cache"
run restore --repo "$R" "$first" --volume vol --target "$TMP/r4" --no-progress
[ "$RC" -ne 0 ] || check_fail "a removed snapshot was restored from its cached copy"

step "--cache-dir elsewhere, and an unusable one"
ok ls --repo "$R" latest --volume vol --cache-dir "$TMP/other-cache"
[ -n "$(find "$TMP/other-cache" -path '*/snapshots/*' -type f)" ] || check_fail "--cache-dir was not used"
echo x >"$TMP/a-file"
ok restore --repo "$R" latest --volume vol --target "$TMP/r5" --no-progress --cache-dir "$TMP/a-file/cache"
tree_same "$TMP/src" "$TMP/r5" "restore with an unusable cache directory"
n=$(grep -c 'cache' "$TMP/err" || true)
[ "$n" -eq 1 ] || check_fail "an unusable cache directory: $n messages, expected one warning: $(head -n 3 "$TMP/err")"

step "a local repository keeps no cache"
rm -rf "$CACHE"
ok init --repo "$TMP/local"
ok backup --repo "$TMP/local" --volume vol --source "$TMP/src" --no-progress
ok restore --repo "$TMP/local" latest --volume vol --target "$TMP/r6" --no-progress
[ ! -e "$CACHE" ] || check_fail "a local repository made a cache: $(find "$CACHE" | head -n 3)"

fault_finish
