#!/usr/bin/env bash
# kill -9 (and SIGINT) at random points of `backup` and `restore`.
#
# DESIGN.md invariant 2: a snapshot exists if and only if its manifest exists, and a crash or
# kill at any moment leaves no partial snapshot visible. After every kill:
#  - `snapshots --json` lists exactly the snapshots of the backups that completed;
#  - `verify` exits 0 (the unreferenced packs a killed backup leaves are not problems);
#  - the next backup succeeds (the dead process's lock does not block it) and its restore is
#    identical to the source;
#  - a backup that handles its SIGINT (exit 130) cleans up like any failed backup: it removes
#    its lock and leaves no temporary file or unfinished multipart upload.
# A restore killed half-way leaves a partial target; running it again with --overwrite
# completes it and the result is identical to the source. SIGINT exits 130 (docs/cli.md).
# Under s3 the packs are sent with multipart uploads (lib/backend.sh), so the kills also land
# between the parts of an upload; the uploads a kill leaves unfinished are counted like the
# temporary files of a local repository (for information: only a prune can remove them).
#
# Environment: PVBACKUP (the binary), PVB_SOURCE_DIR (the source tree), PVB_TEST_STORAGE
# (local, the default, or s3: the repository is s3://pvb-test/repo on s3rver).
set -euo pipefail
. "$PVB_SOURCE_DIR/tests/integration/lib/faultlib.sh"
fault_init fault-kill
backend_init

REPO=$(repo_url repo)
SRC="$TMP/src"
COMMON=(--no-progress)
ITERATIONS=${PVB_FAULT_KILL_ITERATIONS:-10}
RANDOM=$(( $(date +%s) % 32768 ))
echo "random seed $RANDOM"

now_ms() { echo $(($(date +%s%N) / 1000000)); }
count_snapshots() {
    ok snapshots --repo "$REPO" "${COMMON[@]}" --json
    jget 'len(d)' "$TMP/out"
}
tmp_leftovers() { repo_leftovers "$REPO"; }
lock_count() { repo_obj_list "$REPO" locks | wc -l; }

# interrupt_cleaned_up WHAT LOCKS_BEFORE LEFTOVERS_BEFORE: after a handled SIGINT (exit 130,
# DIED=0) the backup's lock is gone and it left nothing half-written.
interrupt_cleaned_up() {
    local what=$1 locks_before=$2 left_before=$3 locks_now left_now problem=""
    locks_now=$(lock_count)
    left_now=$(tmp_leftovers)
    [ "$locks_now" -le "$locks_before" ] ||
        problem="its lock was left behind (lock objects $locks_before -> $locks_now)"
    [ "$left_now" -le "$left_before" ] ||
        problem="${problem:+$problem; }$((left_now - left_before)) temporary file(s) or multipart upload(s) neither completed nor aborted"
    [ -n "$problem" ] || return 0
    # (s3: cleanup DELETEs, the lock and multipart aborts, still run after SIGINT/SIGTERM;
    # before that fix the lock and unfinished uploads stayed behind)
    check_fail "$what: the interrupted backup did not clean up: $problem"
}

step "build a ~50 MiB source: random files, compressible text, many small files"
mkdir -p "$SRC/random"
for i in $(seq 1 12); do head -c 2500000 /dev/urandom >"$SRC/random/r$i.bin"; done
make_text "$SRC/text" 10 50000 7
make_files "$SRC/small" 1000 1 6000 8
du -sh "$SRC" | sed 's/^/source: /'

step "init and a first full backup (timed)"
ok init --repo "$REPO"
t0=$(now_ms)
ok backup --repo "$REPO" "${COMMON[@]}" --volume vol --source "$SRC" --kind full
T_BACKUP=$(($(now_ms) - t0))
echo "a full backup takes ${T_BACKUP} ms"
EXPECTED=1
[ "$(count_snapshots)" -eq 1 ] || fail "expected 1 snapshot after the first backup"

# mutate N: new data for the next backup, so that it has packs to write
mutate() {
    local n=$1
    for k in 1 2 3; do
        head -c 2500000 /dev/urandom >"$SRC/random/r$(((n * 3 + k) % 12 + 1)).bin"
    done
    printf 'iteration %d\n' "$n" >>"$SRC/text/t0000.txt"
    mkdir -p "$SRC/iter"
    head -c 100000 /dev/urandom >"$SRC/iter/new-$n.bin"
}

KILLED=0
COMPLETED=0
KINDS=("--kind full" "--independent" "--kind incremental" "--kind full --threads 1")
for ((it = 1; it <= ITERATIONS; it++)); do
    mutate "$it"
    # mostly SIGKILL; every fourth iteration SIGINT, which must exit 130
    sig=KILL
    ((it % 4 == 0)) && sig=INT
    kind=${KINDS[$((it % ${#KINDS[@]}))]}
    # SIGKILL anywhere up to a bit past the expected end; SIGINT in the first 60 %
    if [ "$sig" = KILL ]; then
        delay=$(delay_s $((T_BACKUP * 11 / 10 + 20)))
    else
        delay=$(delay_s $((T_BACKUP * 6 / 10 + 10)))
    fi
    before=$(count_snapshots)
    locks_before=$(lock_count)
    left_before=$(tmp_leftovers)
    # shellcheck disable=SC2086 # kind holds options
    killed "$sig" "$delay" backup --repo "$REPO" "${COMMON[@]}" --volume vol --source "$SRC" $kind
    case "$RC" in
    0)
        outcome=completed
        COMPLETED=$((COMPLETED + 1))
        EXPECTED=$((EXPECTED + 1))
        ;;
    137)
        outcome=killed
        KILLED=$((KILLED + 1))
        [ "$sig" = KILL ] || check_fail "iteration $it: SIGINT ended the backup like SIGKILL"
        ;;
    130)
        outcome=interrupted
        KILLED=$((KILLED + 1))
        [ "$sig" = INT ] || check_fail "iteration $it: exit 130 without SIGINT"
        if [ "$DIED" = 1 ]; then
            outcome="killed by SIGINT at start"
        else
            grep -q 'interrupt' "$TMP/err" || check_fail "iteration $it: SIGINT exit without a message saying so"
            interrupt_cleaned_up "iteration $it" "$locks_before" "$left_before"
        fi
        ;;
    *)
        outcome="exit $RC"
        check_fail "iteration $it: backup ($kind) hit by SIG$sig after ${delay}s exited $RC (expected 0, 130 or 137)"
        # a backup that failed for another reason must not have written a snapshot either
        ;;
    esac
    after=$(count_snapshots)
    if [ "$outcome" = completed ]; then
        [ "$after" -eq $((before + 1)) ] || check_fail "iteration $it: a completed backup left $after snapshots (was $before)"
    elif [ "$after" -eq $((before + 1)) ]; then
        # the signal came after the manifest was written (catalog, summary, lock release):
        # the snapshot is complete, and must be whole and right
        outcome="$outcome after its manifest was written"
        EXPECTED=$((EXPECTED + 1))
        rm -rf "$TMP/restored"
        expect_rc 0 "iteration $it: restore of the snapshot written before the kill" \
            restore --repo "$REPO" "${COMMON[@]}" latest --target "$TMP/restored"
        [ "$RC" -ne 0 ] || tree_same "$SRC" "$TMP/restored" "iteration $it: snapshot written before the kill"
    else
        [ "$after" -eq "$before" ] || check_fail "iteration $it: an interrupted backup left $after snapshots (was $before)"
    fi
    printf 'iteration %2d: %-30s SIG%-4s after %ss: %-11s snapshots %d -> %d, %d tmp leftovers\n' \
        "$it" "$kind" "$sig" "$delay" "$outcome" "$before" "$after" "$(tmp_leftovers)"
    # the newest listed snapshot is whole (verify below loads every file list)
    run ls --repo "$REPO" "${COMMON[@]}" latest --json
    [ "$RC" -eq 0 ] || check_fail "iteration $it: the latest snapshot's file list cannot be read (exit $RC)"
    expect_rc 0 "iteration $it: verify after the $outcome backup" verify --repo "$REPO" "${COMMON[@]}"
    # the next backup is not blocked by the dead process's lock and restores identically
    expect_rc 0 "iteration $it: the backup after the $outcome one" \
        backup --repo "$REPO" "${COMMON[@]}" --volume vol --source "$SRC"
    if [ "$RC" -eq 0 ]; then
        EXPECTED=$((EXPECTED + 1))
        rm -rf "$TMP/restored"
        expect_rc 0 "iteration $it: restore of the new snapshot" \
            restore --repo "$REPO" "${COMMON[@]}" latest --target "$TMP/restored"
        [ "$RC" -ne 0 ] || tree_same "$SRC" "$TMP/restored" "iteration $it: restore after the $outcome backup"
    fi
done
echo "$KILLED backup(s) interrupted, $COMPLETED completed before the signal"

step "SIGINT in the middle of a backup: exit 130, and it cleans up"
# the same as the SIGINT iterations above, at a fixed point (40 % of a full backup) so that
# every run checks it
mutate $((ITERATIONS + 1))
locks_before=$(lock_count)
left_before=$(tmp_leftovers)
killed INT "$(printf '%d.%03d' $((T_BACKUP * 4 / 10 / 1000)) $((T_BACKUP * 4 / 10 % 1000)))" \
    backup --repo "$REPO" "${COMMON[@]}" --volume vol --source "$SRC" --kind full
echo "backup hit by SIGINT after $((T_BACKUP * 4 / 10)) ms: exit $RC, locks $locks_before -> $(lock_count), leftovers $left_before -> $(tmp_leftovers)"
case "$RC" in
0) EXPECTED=$((EXPECTED + 1)) && note "the backup completed before the signal: nothing to check" ;;
130)
    if [ "$DIED" = 0 ]; then
        grep -q 'interrupt' "$TMP/err" || check_fail "mid-backup SIGINT: exit 130 without a message saying so"
        interrupt_cleaned_up "mid-backup SIGINT" "$locks_before" "$left_before"
    fi
    ;;
*) check_fail "mid-backup SIGINT: backup exited $RC, expected 130 (or 0)" ;;
esac
# the latest snapshot is the source again (the restores below compare with it)
expect_rc 0 "the backup after the mid-backup SIGINT" backup --repo "$REPO" "${COMMON[@]}" --volume vol --source "$SRC"
[ "$RC" -ne 0 ] || EXPECTED=$((EXPECTED + 1))
[ "$KILLED" -gt 0 ] || check_fail "no backup was interrupted: the kill points never hit a running backup"

step "after all kills: snapshot count, verify --read-data"
[ "$(count_snapshots)" -eq "$EXPECTED" ] || check_fail "expected $EXPECTED snapshots, found $(count_snapshots)"
expect_rc 0 "final verify --read-data" verify --repo "$REPO" "${COMMON[@]}" --read-data --json
if [ "$RC" -eq 0 ]; then
    echo "unreferenced packs left by the interrupted backups: $(jget 'd["unreferenced_packs"]' "$TMP/out")"
fi
run catalog rebuild --repo "$REPO" --json
[ "$RC" -eq 0 ] || check_fail "catalog rebuild exited $RC"
[ "$RC" -ne 0 ] || [ "$(jget 'd["snapshots"]' "$TMP/out")" -eq "$EXPECTED" ] ||
    check_fail "catalog rebuild recorded $(jget 'd["snapshots"]' "$TMP/out") snapshots, expected $EXPECTED"

step "kill -9 during restore, then restore again with --overwrite"
t0=$(now_ms)
rm -rf "$TMP/timed"
ok restore --repo "$REPO" "${COMMON[@]}" latest --target "$TMP/timed"
T_RESTORE=$(($(now_ms) - t0))
rm -rf "$TMP/timed"
echo "a restore takes ${T_RESTORE} ms"
for r in 1 2 3; do
    target="$TMP/partial-$r"
    sig=KILL
    ((r == 3)) && sig=INT
    delay=$(delay_s $((T_RESTORE * 9 / 10 + 10)))
    killed "$sig" "$delay" restore --repo "$REPO" "${COMMON[@]}" latest --target "$target"
    have=$( [ -d "$target" ] && find "$target" -type f | wc -l || echo 0)
    echo "restore $r: SIG$sig after ${delay}s: exit $RC, $have file(s) in the target"
    case "$RC" in
    0 | 137 | 130) ;;
    *) check_fail "restore $r: hit by SIG$sig, exited $RC" ;;
    esac
    if [ "$RC" -eq 130 ] && [ "$DIED" = 0 ]; then
        grep -q 'interrupt' "$TMP/err" || check_fail "restore $r: SIGINT exit without a message saying so"
    fi
    if [ "$RC" -ne 0 ] && [ -d "$target" ] && [ -n "$(ls -A "$target")" ]; then
        # without --overwrite a partial target is refused, untouched
        expect_rc 1 "restore $r: into the partial target without --overwrite" \
            restore --repo "$REPO" "${COMMON[@]}" latest --target "$target"
    fi
    expect_rc 0 "restore $r: again with --overwrite" \
        restore --repo "$REPO" "${COMMON[@]}" latest --target "$target" --overwrite
    [ "$RC" -ne 0 ] || tree_same "$SRC" "$target" "restore $r: completed with --overwrite"
    rm -rf "$target"
done
expect_rc 0 "verify after the killed restores" verify --repo "$REPO" "${COMMON[@]}"

fault_finish
