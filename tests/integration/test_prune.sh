#!/usr/bin/env bash
# pvbackup prune, as a user runs it, on a local repository and on S3:
#  - the data of dropped snapshots goes (snapshot objects deleted by hand, as forget will),
#    the kept snapshots restore identically and verify --read-data finds nothing wrong and
#    no unreferenced pack; a dry run changes nothing;
#  - kill -9 at random points of prune (DESIGN.md: "kill -9 at random points of backup and
#    prune"): after every kill the repository verifies and the kept snapshot restores, and
#    the next prune finishes the work;
#  - leftovers of interrupted writers (local temporary files, S3 multipart uploads) older
#    than an hour are removed, younger ones stay;
#  - a damaged snapshot object stops prune before it changes anything (exit 6).
#
# Environment: PVBACKUP, PVB_SOURCE_DIR, PVB_TEST_STORAGE (local or s3).
set -euo pipefail
. "$PVB_SOURCE_DIR/tests/integration/lib/faultlib.sh"
fault_init prune
backend_init

REPO=$(repo_url repo)
SRC="$TMP/src"
COMMON=(--no-progress)
ITERATIONS=${PVB_PRUNE_KILL_ITERATIONS:-8}
RANDOM=$(($(date +%s) % 32768))
echo "random seed $RANDOM"

# restores_same SNAP REF WHAT: restore SNAP into a new directory, compare with REF
restores_same() {
    local target="$TMP/restore-$RANDOM$RANDOM"
    run restore --repo "$REPO" "${COMMON[@]}" "$1" --target "$target"
    [ "$RC" -eq 0 ] || {
        check_fail "$3: restore of ${1:0:12} exited $RC: $(head -n 2 "$TMP/err")"
        return 0
    }
    tree_same "$2" "$target" "$3"
    rm -rf "$target"
}

step "usage"
expect_rc 2 "a threshold above 100" prune --repo "$REPO" --repack-threshold 101
expect_rc 2 "a threshold that is no number" prune --repo "$REPO" --repack-threshold lots
ok prune --help
out_has "--dry-run" "prune --help lists --dry-run"
out_has "Examples" "prune --help has examples"

step "four snapshots; the first two are then dropped"
make_files "$SRC/keep" 150 1000 60000 1
make_files "$SRC/churn" 120 1000 80000 2
ok init --repo "$REPO"
ids=()
for round in 1 2 3; do
    ok backup --repo "$REPO" "${COMMON[@]}" --volume data --source "$SRC" --json
    ids+=("$(jget 'd["id"]' "$TMP/out")")
    rm -rf "$SRC/churn"
    make_files "$SRC/churn" 120 1000 80000 $((round + 10))
done
ok backup --repo "$REPO" "${COMMON[@]}" --volume data --source "$SRC" --json
ids+=("$(jget 'd["id"]' "$TMP/out")")
cp -a "$SRC" "$TMP/ref-last"
repo_obj_delete "$REPO" "snapshots/${ids[0]}"
repo_obj_delete "$REPO" "snapshots/${ids[1]}"
KEPT=${ids[3]}

step "a dry run reports and changes nothing"
before=$(repo_fingerprint "$REPO")
ok prune --repo "$REPO" "${COMMON[@]}" --dry-run --json
[ "$(jget 'd["dry_run"]' "$TMP/out")" = True ] || check_fail "dry run: dry_run is not true"
[ "$(jget 'd["snapshots"]' "$TMP/out")" = 2 ] || check_fail "dry run: $(jget 'd["snapshots"]' "$TMP/out") snapshots, expected 2"
freed=$(jget 'd["bytes_freed"]' "$TMP/out")
[ "$freed" -gt 1000000 ] || check_fail "dry run: would free only $freed bytes"
[ "$(repo_fingerprint "$REPO")" = "$before" ] || check_fail "a dry run changed the repository"
ok prune --repo "$REPO" "${COMMON[@]}" --dry-run
out_has "dry run: nothing was changed" "prune --dry-run says so"

step "kill -9 at random points of prune ($ITERATIONS times)"
# how long a whole prune takes here, on a copy
COPY=$(repo_copy "$REPO" timing)
t0=$(date +%s%N)
ok prune --repo "$COPY" "${COMMON[@]}"
T_PRUNE=$((($(date +%s%N) - t0) / 1000000))
echo "a whole prune takes ${T_PRUNE} ms"
kills=0
for i in $(seq 1 "$ITERATIONS"); do
    killed KILL "$(delay_s $((T_PRUNE + 20)))" prune --repo "$REPO" "${COMMON[@]}"
    [ "$DIED" = 1 ] && kills=$((kills + 1))
    if [ "$DIED" = 0 ] && [ "$RC" -ne 0 ]; then
        check_fail "iteration $i: prune exited $RC: $(head -n 2 "$TMP/err")"
    fi
    run verify --repo "$REPO" "${COMMON[@]}" --json
    [ "$RC" -eq 0 ] || check_fail "iteration $i (killed: $DIED): verify exited $RC: $(head -c 400 "$TMP/out")"
    restores_same "$KEPT" "$TMP/ref-last" "iteration $i (killed: $DIED)"
    # put the dropped snapshots' data back in play: a new backup and a new drop each round
    if [ "$DIED" = 0 ]; then
        make_files "$SRC/extra-$i" 40 1000 80000 $((i + 100))
        ok backup --repo "$REPO" "${COMMON[@]}" --volume data --source "$SRC" --json
        repo_obj_delete "$REPO" "snapshots/$(jget 'd["id"]' "$TMP/out")"
        rm -rf "$SRC/extra-$i"
    fi
done
echo "prune was killed in $kills of $ITERATIONS runs"

step "a whole prune finishes the work"
ok prune --repo "$REPO" "${COMMON[@]}" --json
ok verify --repo "$REPO" "${COMMON[@]}" --read-data --json
[ "$(jget 'd["unreferenced_packs"]' "$TMP/out")" = 0 ] ||
    check_fail "after prune: $(jget 'd["unreferenced_packs"]' "$TMP/out") unreferenced packs"
restores_same "$KEPT" "$TMP/ref-last" "after prune, the kept snapshot"
ok prune --repo "$REPO" "${COMMON[@]}" --json
for k in packs_deleted packs_repacked packs_unindexed index_files_written; do
    [ "$(jget "d['$k']" "$TMP/out")" = 0 ] || check_fail "a second prune: $k = $(jget "d['$k']" "$TMP/out")"
done

step "leftovers of interrupted writers"
if is_s3; then
    # a multipart upload that a killed backup left (initiated with curl), one under another
    # prefix that is not the repository's
    rest=${REPO#s3://}
    for key in "${rest#*/}/data/ab/leftover" "other-prefix/data/leftover"; do
        # (s3rver wants the payload hash header, and the query signed as "uploads=")
        curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" --user "S3RVER:S3RVER" -X POST \
            -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
            "$PVB_S3_ENDPOINT/$PVB_S3_BUCKET/$key?uploads=" >/dev/null ||
            fail "cannot start a multipart upload with curl"
    done
    n=$(repo_leftovers "$REPO")
    [ "$n" -ge 1 ] || fail "the planted multipart upload is not seen ($n)"
    # young: kept
    ok prune --repo "$REPO" "${COMMON[@]}" --json
    [ "$(repo_leftovers "$REPO")" -eq "$n" ] || check_fail "a young multipart upload was aborted"
    # two hours later: aborted
    PVBACKUP_FAKE_NOW=$(($(date +%s) + 7200)) ok prune --repo "$REPO" "${COMMON[@]}" --json
    [ "$(jget 'd["incomplete_uploads_removed"]' "$TMP/out")" -ge 1 ] ||
        check_fail "prune removed no incomplete upload"
    [ "$(repo_leftovers "$REPO")" -eq 0 ] || check_fail "$(repo_leftovers "$REPO") multipart upload(s) left after prune"
    [ "$(repo_leftovers "s3://$PVB_S3_BUCKET/other-prefix")" -eq 1 ] ||
        check_fail "prune aborted an upload outside the repository"
else
    dir=$(repo_dir "$REPO")
    mkdir -p "$dir/data/cd"
    echo old >"$dir/data/cd/.tmp-0123abcd"
    touch -d '3 hours ago' "$dir/data/cd/.tmp-0123abcd"
    echo young >"$dir/data/cd/.tmp-4567ef01"
    ok prune --repo "$REPO" "${COMMON[@]}" --json
    [ ! -e "$dir/data/cd/.tmp-0123abcd" ] || check_fail "an old temporary file was left"
    [ -e "$dir/data/cd/.tmp-4567ef01" ] || check_fail "a young temporary file was removed"
    [ "$(jget 'd["incomplete_uploads_removed"]' "$TMP/out")" = 1 ] || check_fail "prune reported $(jget 'd["incomplete_uploads_removed"]' "$TMP/out") removed leftovers, expected 1"
    rm -f "$dir/data/cd/.tmp-4567ef01"
fi

step "a damaged snapshot object stops prune before it changes anything"
repo_obj_delete "$REPO" "snapshots/${ids[2]}" # something to prune
flip_byte "$(repo_obj_path "$REPO" "snapshots/$KEPT")"
before=$(repo_fingerprint "$REPO")
# (without the local cache: on S3 its verified copy of the object would stand in for it)
PVBACKUP_NO_CACHE=1 expect_rc 6 "prune with a damaged snapshot" prune --repo "$REPO" "${COMMON[@]}"
err_has "${KEPT:0:12}" "prune names the damaged snapshot"
err_has "verify" "prune's hint points to verify"
[ "$(repo_fingerprint "$REPO")" = "$before" ] || check_fail "prune changed a damaged repository"

fault_finish
