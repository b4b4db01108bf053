#!/usr/bin/env bash
# Bad input and a hostile environment: what a user sees (docs/cli.md exit codes, DESIGN.md
# invariant 7: every failure is a clear message and a meaningful exit code).
#  - missing repository (4, names the path, hints init), wrong password (5), no password for
#    an encrypted repository (5 with a hint), an unencrypted repository needs none;
#  - a missing source (4, no snapshot written), an unreadable file and directory (exit 3,
#    named, the snapshot still written), a file that changes while it is read (exit 3,
#    named in changed_while_read);
#  - a repository inside the source is excluded with a warning;
#  - restore into a non-empty target (refused, untouched), --include of a missing path (4),
#    a short, ambiguous or unknown snapshot id (2, 2, 4);
#  - a full disk under the repository (8, no snapshot, the next backup works once there is
#    space again); under s3 a full disk on the server: a small tmpfs where s3rver keeps the
#    repository's objects, which it then answers with 500 InternalError.
# Cases the sandbox cannot set up (tmpfs mount, unprivileged user) are skipped with a note.
# Under s3 the repository-inside-the-source case is skipped: a bucket is never inside a
# directory.
#
# Environment: PVBACKUP (the binary), PVB_SOURCE_DIR (the source tree), PVB_CRAFT (optional:
# tests/tools/pvb_craft, for the ambiguous-prefix case), PVB_TEST_STORAGE (local, the
# default, or s3: repositories are s3://pvb-test/NAME on s3rver; lib/backend.sh).
set -euo pipefail
. "$PVB_SOURCE_DIR/tests/integration/lib/faultlib.sh"
fault_init fault-input
backend_init

REPO=$(repo_url repo)
NOREPO=$(repo_url no-such-repo)
SRC="$TMP/src"
COMMON=(--no-progress)
count_snapshots() {
    ok snapshots --repo "$1" "${COMMON[@]}" --json
    jget 'len(d)' "$TMP/out"
}
mkdir -p "$SRC/dir"
make_files "$SRC/files" 50 1 5000 11
printf 'hello\n' >"$SRC/dir/file.txt"

# ---------------------------------------------------------------------------------------
step "missing repository: exit 4, the path named, a hint to init"
for cmd in snapshots "ls latest" "restore latest --target $TMP/never" verify \
    "backup --volume v --source $SRC"; do
    # shellcheck disable=SC2086 # cmd holds a command and its arguments
    expect_rc 4 "missing repository: $cmd" $cmd --repo "$NOREPO" "${COMMON[@]}"
    err_has "$NOREPO" "missing repository: $cmd names the path"
    err_has "init" "missing repository: $cmd hints at init"
done
# (under s3: s3rver makes the directory for a prefix only when an object is written there)
[ ! -e "$(repo_dir "$NOREPO")" ] || check_fail "a command on a missing repository created it"
[ ! -e "$TMP/never" ] || check_fail "restore from a missing repository created its target"

step "wrong password: exit 5, the password never shown"
ok init --repo "$REPO"
ok backup --repo "$REPO" "${COMMON[@]}" --volume v --source "$SRC"
FIRST=$(snapshot_ids "$REPO" | head -n 1)
WRONG="Wr0ng-pa55word-$RANDOM"
for cmd in snapshots "ls latest" verify "backup --volume v --source $SRC"; do
    # shellcheck disable=SC2086
    PVBACKUP_PASSWORD="$WRONG" expect_rc 5 "wrong password: $cmd" $cmd --repo "$REPO" "${COMMON[@]}"
    err_has "password" "wrong password: $cmd says what is wrong"
    ! grep -qF -- "$WRONG" "$TMP/out" "$TMP/err" || check_fail "wrong password: $cmd printed the password"
done
printf '%s\n' "$WRONG" >"$TMP/wrong-password"
saved_password=$PVBACKUP_PASSWORD
unset PVBACKUP_PASSWORD
expect_rc 5 "wrong password file" snapshots --repo "$REPO" --password-file "$TMP/wrong-password"
export PVBACKUP_PASSWORD="$saved_password"

step "no password for an encrypted repository: exit 5 with a hint"
(
    FAULT_FAILURES=0 # this subshell's own failures, added below
    unset PVBACKUP_PASSWORD
    expect_rc 5 "no password" snapshots --repo "$REPO" "${COMMON[@]}"
    err_has "hint:" "no password: a hint"
    err_has "PVBACKUP_PASSWORD" "no password: the hint names the variable"
    expect_rc 5 "no password: backup" backup --repo "$REPO" "${COMMON[@]}" --volume v --source "$SRC"
    exit "$FAULT_FAILURES"
) || FAULT_FAILURES=$((FAULT_FAILURES + $?))
[ "$(count_snapshots "$REPO")" -eq 1 ] || check_fail "a backup without password wrote a snapshot"

step "an unencrypted repository works without a password"
(
    FAULT_FAILURES=0 # this subshell's own failures, added below
    unset PVBACKUP_PASSWORD
    PLAIN=$(repo_url plain)
    ok init --repo "$PLAIN" --encryption none
    ok backup --repo "$PLAIN" "${COMMON[@]}" --volume v --source "$SRC"
    ok restore --repo "$PLAIN" "${COMMON[@]}" latest --target "$TMP/plain-restored"
    tree_same "$SRC" "$TMP/plain-restored" "unencrypted repository"
    ok verify --repo "$PLAIN" "${COMMON[@]}" --read-data
    exit "$FAULT_FAILURES"
) || FAULT_FAILURES=$((FAULT_FAILURES + $?))

# ---------------------------------------------------------------------------------------
step "a source that does not exist: exit 4, no snapshot"
ls_objects() { repo_obj_list "$REPO" data index snapshots; }
ls_objects >"$TMP/objects-before"
expect_rc 4 "missing source" backup --repo "$REPO" "${COMMON[@]}" --volume v --source "$TMP/no-such-source"
err_has "$TMP/no-such-source" "missing source: named"
expect_error "a source that is a file" backup --repo "$REPO" "${COMMON[@]}" --volume v --source "$SRC/dir/file.txt"
ls_objects >"$TMP/objects-after"
cmp -s "$TMP/objects-before" "$TMP/objects-after" || check_fail "a backup of a missing source wrote objects"
[ "$(count_snapshots "$REPO")" -eq 1 ] || check_fail "a backup of a missing source wrote a snapshot"

# ---------------------------------------------------------------------------------------
step "an unreadable file and directory in the source"
if setpriv --reuid=65534 --regid=65534 --clear-groups "$PVBACKUP" version >/dev/null 2>&1; then
    note "an unprivileged user can run pvbackup here (not needed: capabilities are dropped instead)"
else
    note "running pvbackup as nobody is not possible in this sandbox; dropping root's file capabilities instead"
fi
# Root reads anything through CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH: drop them from the
# bounding set (exec then drops them from the process) and mode 000 means unreadable.
# shellcheck disable=SC2054 # the comma is setpriv's list syntax
NOCAP=(setpriv --bounding-set -dac_override,-dac_read_search)
mkdir -p "$TMP/locked/src/open" "$TMP/locked/src/closed-dir"
printf 'readable\n' >"$TMP/locked/src/open/ok.txt"
printf 'secret\n' >"$TMP/locked/src/open/closed.txt"
printf 'inside\n' >"$TMP/locked/src/closed-dir/inside.txt"
chmod 000 "$TMP/locked/src/open/closed.txt" "$TMP/locked/src/closed-dir"
if "${NOCAP[@]}" cat "$TMP/locked/src/open/closed.txt" >/dev/null 2>&1; then
    note "SKIP unreadable file: dropping capabilities does not make a mode-000 file unreadable here"
elif ! "${NOCAP[@]}" true 2>/dev/null; then
    note "SKIP unreadable file: setpriv cannot drop capabilities here"
else
    set +e
    "${NOCAP[@]}" "$PVBACKUP" backup --repo "$REPO" "${COMMON[@]}" --volume locked \
        --source "$TMP/locked/src" --json >"$TMP/out" 2>"$TMP/err" </dev/null
    RC=$?
    set -e
    [ "$RC" -eq 3 ] || check_fail "unreadable file: backup exited $RC, expected 3"
    err_has "open/closed.txt" "unreadable file: named on stderr"
    err_has "closed-dir" "unreadable directory: named on stderr"
    if [ "$RC" -eq 3 ]; then
        cp "$TMP/out" "$TMP/locked.json"
        jget '"\n".join(d["errors"])' "$TMP/locked.json" >"$TMP/locked-errors"
        grep -q '^open/closed.txt: Permission denied' "$TMP/locked-errors" ||
            check_fail "unreadable file: --json errors lacks 'open/closed.txt: Permission denied': $(tr '\n' ';' <"$TMP/locked-errors")"
        grep -q '^closed-dir: Permission denied' "$TMP/locked-errors" ||
            check_fail "unreadable directory: --json errors should say 'closed-dir: Permission denied', got: $(grep closed-dir "$TMP/locked-errors")"
        LOCKED=$(jget 'd["id"]' "$TMP/locked.json")
        ok ls --repo "$REPO" "${COMMON[@]}" "$LOCKED" --json
        jget '[e.get("read_error") for e in d if e["path"] == "open/closed.txt"]' "$TMP/out" | grep -q True ||
            check_fail "unreadable file: ls --json does not mark it read_error"
        expect_rc 3 "restore of a snapshot with an unreadable file" \
            restore --repo "$REPO" "${COMMON[@]}" "$LOCKED" --target "$TMP/locked/restored"
        err_has "open/closed.txt" "restore names the file that has no data"
        [ "$(cat "$TMP/locked/restored/open/ok.txt" 2>/dev/null)" = readable ] ||
            check_fail "restore of a snapshot with an unreadable file: the readable one is missing"
        [ ! -e "$TMP/locked/restored/open/closed.txt" ] ||
            [ ! -s "$TMP/locked/restored/open/closed.txt" ] ||
            check_fail "restore wrote content for a file that could not be read"
    fi
fi
chmod 755 "$TMP/locked/src/closed-dir"
chmod 644 "$TMP/locked/src/open/closed.txt"

# ---------------------------------------------------------------------------------------
step "a file that changes while it is read: exit 3, named in changed_while_read"
mkdir -p "$TMP/busy"
head -c 60000000 /dev/urandom >"$TMP/busy/growing.log"
printf 'calm\n' >"$TMP/busy/calm.txt"
# one process appending 4 KiB every half millisecond for as long as it lives
python3 -c 'import os, sys, time
with open(sys.argv[1], "ab", buffering=0) as f:
    while True:
        f.write(os.urandom(4096))
        time.sleep(0.0005)' "$TMP/busy/growing.log" &
WRITER=$!
fault_on_exit "kill $WRITER"
sleep 0.2
run backup --repo "$REPO" "${COMMON[@]}" --volume busy --source "$TMP/busy" --json
kill "$WRITER" 2>/dev/null || true
wait "$WRITER" 2>/dev/null || true
[ "$RC" -eq 3 ] || check_fail "changing file: backup exited $RC, expected 3"
err_has "growing.log" "changing file: named on stderr"
if [ "$RC" -eq 3 ]; then
    cp "$TMP/out" "$TMP/busy.json"
    [ "$(jget 'd["changed_while_read"]' "$TMP/busy.json")" = "['growing.log']" ] ||
        check_fail "changing file: --json changed_while_read is $(jget 'd["changed_while_read"]' "$TMP/busy.json")"
    [ "$(jget 'd["stats"]["changed_while_read"]' "$TMP/busy.json")" = 1 ] || check_fail "changing file: stats.changed_while_read != 1"
    BUSY=$(jget 'd["id"]' "$TMP/busy.json")
    ok ls --repo "$REPO" "${COMMON[@]}" "$BUSY"
    grep -q 'growing.log  *\[changed while read\]' "$TMP/out" || check_fail "changing file: ls does not mark it"
    # once the writer is gone, the next (incremental) backup reads the file again
    expect_rc 0 "backup after the change stopped" backup --repo "$REPO" "${COMMON[@]}" --volume busy --source "$TMP/busy"
    rm -rf "$TMP/busy-restored"
    expect_rc 0 "restore after the change stopped" restore --repo "$REPO" "${COMMON[@]}" latest --volume busy --target "$TMP/busy-restored"
    cmp -s "$TMP/busy/growing.log" "$TMP/busy-restored/growing.log" ||
        check_fail "the backup after a changed-while-read one reused the partial data"
fi

# ---------------------------------------------------------------------------------------
step "the repository inside the source is excluded, with a warning"
if skip_s3 "an s3 repository cannot lie inside a local source directory (nor be one)"; then
    :
else
    mkdir -p "$TMP/outer/data" "$TMP/outer/backups"
    printf 'payload\n' >"$TMP/outer/data/payload.txt"
    ok init --repo "$TMP/outer/backups/repo"
    ok backup --repo "$TMP/outer/backups/repo" "${COMMON[@]}" --volume outer --source "$TMP/outer"
    err_has "lies inside the source" "repository inside the source: warning"
    ok ls --repo "$TMP/outer/backups/repo" "${COMMON[@]}" latest --json
    jget '"\n".join(e["path"] for e in d)' "$TMP/out" >"$TMP/outer-paths"
    grep -q '^data/payload.txt$' "$TMP/outer-paths" || check_fail "repository inside the source: the data is missing"
    ! grep -q '^backups/repo' "$TMP/outer-paths" || check_fail "repository inside the source: the snapshot contains it"
    ln -s "$TMP/outer" "$TMP/outer-link"
    ok backup --repo "$TMP/outer-link/backups/repo" "${COMMON[@]}" --volume outer --source "$TMP/outer-link"
    ok ls --repo "$TMP/outer/backups/repo" "${COMMON[@]}" latest --json
    ! jget '"\n".join(e["path"] for e in d)' "$TMP/out" | grep -q '^backups/repo' ||
        check_fail "repository inside the source, both named through a symlink: the snapshot contains it"
    # the source IS the repository: backing the repository up into itself makes no sense
    run backup --repo "$TMP/outer/backups/repo" "${COMMON[@]}" --volume self --source "$TMP/outer/backups/repo" --json
    if [ "$RC" -eq 0 ]; then
        SELF=$(jget 'd["id"]' "$TMP/out")
        ok ls --repo "$TMP/outer/backups/repo" "${COMMON[@]}" "$SELF" --json
        n=$(jget 'len(d)' "$TMP/out")
        [ "$n" -eq 0 ] || check_fail "source = repository: the backup stored the repository into itself ($n entries, e.g. $(jget 'd[0]["path"]' "$TMP/out")); expected a refusal or an empty snapshot with a warning"
    else
        [ "$RC" -lt 128 ] && grep -q 'pvbackup: error:' "$TMP/err" ||
            check_fail "source = repository: exit $RC without a clear error"
    fi
fi

# ---------------------------------------------------------------------------------------
step "restore into a non-empty target: refused, the target untouched"
mkdir -p "$TMP/busy-target/sub"
printf 'keep me\n' >"$TMP/busy-target/sub/keep.txt"
printf 'dir/file.txt\n' >"$TMP/busy-target/file.txt"
listing() { (cd "$1" && find . -printf '%p %s %T@ %m\n' | sort && find . -type f -exec md5sum {} + | sort); }
listing "$TMP/busy-target" >"$TMP/target-before"
expect_rc 1 "non-empty target" restore --repo "$REPO" "${COMMON[@]}" "$FIRST" --target "$TMP/busy-target"
err_has "not empty" "non-empty target: says why"
err_has "--overwrite" "non-empty target: hints at --overwrite"
listing "$TMP/busy-target" >"$TMP/target-after"
cmp -s "$TMP/target-before" "$TMP/target-after" || check_fail "non-empty target: the target was changed"

step "--include of a path not in the snapshot: exit 4"
expect_rc 4 "--include missing" restore --repo "$REPO" "${COMMON[@]}" "$FIRST" --target "$TMP/inc" --include no/such/path
err_has "no/such/path" "--include missing: names the path"
[ ! -e "$TMP/inc" ] || [ -z "$(ls -A "$TMP/inc")" ] || check_fail "--include missing: files were written"
expect_rc 4 "--include: one of two missing" restore --repo "$REPO" "${COMMON[@]}" "$FIRST" --target "$TMP/inc2" \
    --include dir/file.txt --include no/such/path
[ ! -e "$TMP/inc2" ] || [ -z "$(ls -A "$TMP/inc2")" ] || check_fail "--include one missing: files were written"

step "snapshot ids: too short, unknown, ambiguous"
expect_rc 2 "a 3-character prefix" restore --repo "$REPO" "${COMMON[@]}" "${FIRST:0:3}" --target "$TMP/id1"
expect_rc 2 "a non-hex id" restore --repo "$REPO" "${COMMON[@]}" "zzzz" --target "$TMP/id1"
NOSUCH=$(printf '%s' "$FIRST" | tr '0-9a-f' '1-9a-f0')
expect_rc 4 "an unknown full id" restore --repo "$REPO" "${COMMON[@]}" "$NOSUCH" --target "$TMP/id1"
err_has "$NOSUCH" "unknown id: named"
expect_rc 4 "an unknown prefix" restore --repo "$REPO" "${COMMON[@]}" "${NOSUCH:0:8}" --target "$TMP/id1"
[ ! -e "$TMP/id1" ] || check_fail "a restore of an unknown snapshot created its target"
if [ -n "${PVB_CRAFT:-}" ] && [ -x "${PVB_CRAFT}" ]; then
    AMBIGUOUS=$(repo_url ambiguous)
    ok init --repo "$AMBIGUOUS"
    ok backup --repo "$AMBIGUOUS" "${COMMON[@]}" --volume v --source "$SRC/dir"
    ORIG=$(snapshot_ids "$AMBIGUOUS")
    "$PVB_CRAFT" --repo "$AMBIGUOUS" collide "$ORIG" >"$TMP/collide" 2>"$TMP/collide.err" ||
        fail "pvb_craft collide failed: $(cat "$TMP/collide.err")"
    ID1=$(sed -n 1p "$TMP/collide")
    ID2=$(sed -n 2p "$TMP/collide")
    echo "colliding snapshots ${ID1:0:12} and ${ID2:0:12}"
    expect_rc 2 "an ambiguous prefix" restore --repo "$AMBIGUOUS" "${COMMON[@]}" "${ID1:0:4}" --target "$TMP/amb"
    err_has "${ID1:0:12}" "ambiguous prefix: candidates listed"
    err_has "${ID2:0:12}" "ambiguous prefix: candidates listed"
    [ ! -e "$TMP/amb" ] || check_fail "an ambiguous prefix created the target"
    # the shortest unique prefix works
    len=5
    while [ "${ID1:0:len}" = "${ID2:0:len}" ]; do len=$((len + 1)); done
    expect_rc 0 "a unique prefix of ${len} characters" restore --repo "$AMBIGUOUS" "${COMMON[@]}" "${ID1:0:len}" --target "$TMP/amb"
else
    note "SKIP ambiguous prefix: PVB_CRAFT (tests/tools/pvb_craft) not given"
fi

# ---------------------------------------------------------------------------------------
step "a full disk under the repository"
if is_s3; then
    # s3rver keeps the objects of s3://pvb-test/full-disk in one directory: a small tmpfs
    # there is a full disk on the server, which then answers 500 InternalError. Retries are
    # bounded so that the backup gives up quickly.
    FULL=$(repo_url full-disk)
    MNT=$(repo_dir "$FULL")
    LIMIT=(--s3-retry-time 3)
else
    MNT="$TMP/small-disk"
    FULL="$MNT/repo"
    LIMIT=()
fi
mkdir -p "$MNT"
if ! mount -t tmpfs -o size=40m tmpfs "$MNT" 2>"$TMP/mount.err"; then
    note "SKIP full disk: cannot mount a tmpfs here ($(cat "$TMP/mount.err"))"
else
    fault_on_exit "umount '$MNT'"
    mkdir -p "$TMP/big"
    head -c 20000000 /dev/urandom >"$TMP/big/random.bin"
    make_files "$TMP/big/small" 200 1 4000 12
    ok init --repo "$FULL"
    # leave about 6 MiB free
    avail_kb=$(df -k --output=avail "$MNT" | tail -n 1)
    head -c $(((avail_kb - 6 * 1024) * 1024)) /dev/zero >"$MNT/filler"
    t0=$SECONDS
    run backup --repo "$FULL" "${COMMON[@]}" "${LIMIT[@]}" --volume big --source "$TMP/big"
    took=$((SECONDS - t0))
    [ "$RC" -eq 8 ] || check_fail "full disk: backup exited $RC, expected 8"
    if is_s3; then
        err_has "InternalError" "full disk on the s3 server: says what the server answered"
        [ "$took" -le 60 ] || check_fail "full disk on the s3 server: backup with --s3-retry-time 3 took ${took}s"
    else
        err_has "No space left on device" "full disk: says why"
    fi
    err_has "hint:" "full disk: a hint"
    [ "$(count_snapshots "$FULL")" -eq 0 ] || check_fail "full disk: a snapshot is visible"
    # temporary files (local) or unfinished multipart uploads (s3)
    leftovers=$(repo_leftovers "$FULL")
    [ "$leftovers" -eq 0 ] || check_fail "full disk: $leftovers temporary file(s) or upload(s) left behind"
    [ -z "$(repo_obj_list "$FULL" locks)" ] || check_fail "full disk: the lock was not released"
    expect_rc 0 "full disk: verify (leftover packs are not problems)" verify --repo "$FULL" "${COMMON[@]}"
    rm -f "$MNT/filler"
    expect_rc 0 "full disk: backup once there is space again" backup --repo "$FULL" "${COMMON[@]}" --volume big --source "$TMP/big"
    if [ "$RC" -eq 0 ]; then
        expect_rc 0 "full disk: restore" restore --repo "$FULL" "${COMMON[@]}" latest --target "$TMP/big-restored"
        tree_same "$TMP/big" "$TMP/big-restored" "full disk: backup after freeing space"
        expect_rc 0 "full disk: verify --read-data" verify --repo "$FULL" "${COMMON[@]}" --read-data
    fi
fi

fault_finish
