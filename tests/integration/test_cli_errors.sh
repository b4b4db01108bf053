#!/usr/bin/env bash
# What a user sees when things go wrong: exit codes and messages of the pvbackup binary for a
# missing repository, a wrong password, init twice, a non-empty restore target, usage errors,
# --help of every command, a missing source and an unreadable source file.
#
# Environment: PVBACKUP (the binary), PVB_SOURCE_DIR (the source tree).
set -euo pipefail

: "${PVBACKUP:?set PVBACKUP to the pvbackup binary}"
: "${PVB_SOURCE_DIR:?set PVB_SOURCE_DIR to the root of the source tree}"
export PVBACKUP_TEST_WEAK_KDF="${PVBACKUP_TEST_WEAK_KDF:-1}"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/pvb-cli-errors.XXXXXX")
cleanup() {
    chmod -R u+rwX "$TMP" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

step() { printf '=== %s\n' "$*"; }
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    for f in "$TMP/out" "$TMP/err"; do
        if [ -s "$f" ]; then
            printf -- '--- %s:\n' "${f##*/}" >&2
            head -n 40 "$f" >&2
        fi
    done
    exit 1
}
run() {
    set +e
    "$PVBACKUP" "$@" >"$TMP/out" 2>"$TMP/err" </dev/null
    RC=$?
    set -e
}
# expect CODE CMD...: run and require exit code CODE.
expect() {
    local code=$1
    shift
    run "$@"
    [ "$RC" -eq "$code" ] || fail "pvbackup $* exited $RC, expected $code"
}
# stderr_has TEXT: the last run's standard error contains TEXT.
stderr_has() {
    grep -qF -- "$1" "$TMP/err" || fail "stderr lacks '$1'"
}

unset PVBACKUP_REPO PVBACKUP_PASSWORD_FILE PVBACKUP_LOG_FORMAT PVBACKUP_LOG_LEVEL
export PVBACKUP_PASSWORD="errors-test-password"
export PVBACKUP_CATALOG="$TMP/catalog.db"
REPO="$TMP/repo"
SRC="$TMP/src"
mkdir -p "$SRC/dir"
printf 'hello\n' >"$SRC/dir/file.txt"
printf 'world\n' >"$SRC/top.txt"

step "missing repository -> exit 4"
expect 4 snapshots --repo "$TMP/no-such-repo"
stderr_has "pvbackup: error:"
expect 4 ls --repo "$TMP/no-such-repo" latest
stderr_has "pvbackup: error:"

step "init, then init again -> refused"
expect 0 init --repo "$REPO"
cp -a "$REPO" "$TMP/repo-before"
run init --repo "$REPO"
[ "$RC" -ne 0 ] || fail "init of an existing repository succeeded"
stderr_has "pvbackup: error:"
diff -r "$REPO" "$TMP/repo-before" >/dev/null || fail "a second init changed the repository"

step "no repository given -> usage error"
expect 2 snapshots
stderr_has "PVBACKUP_REPO"
stderr_has "see 'pvbackup snapshots --help'"
PVBACKUP_REPO="$REPO" expect 0 snapshots

step "backup, so that there is something to restore"
expect 0 backup --repo "$REPO" --volume v --source "$SRC" --no-progress
expect 0 snapshots --repo "$REPO" --json
ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["id"])' "$TMP/out")

step "wrong password -> exit 5"
PVBACKUP_PASSWORD="not-the-password" expect 5 snapshots --repo "$REPO"
stderr_has "pvbackup: error:"
grep -qF "not-the-password" "$TMP/err" "$TMP/out" && fail "the wrong password was echoed"
printf 'wrong-from-file\n' >"$TMP/wrong.pw"
env -u PVBACKUP_PASSWORD "$PVBACKUP" snapshots --repo "$REPO" --password-file "$TMP/wrong.pw" \
    >"$TMP/out" 2>"$TMP/err" </dev/null && fail "a wrong password file was accepted" || RC=$?
[ "$RC" -eq 5 ] || fail "wrong password file: exit $RC, expected 5"

step "no password at all, no terminal -> exit 5 with a hint"
env -u PVBACKUP_PASSWORD "$PVBACKUP" snapshots --repo "$REPO" >"$TMP/out" 2>"$TMP/err" \
    </dev/null && fail "an encrypted repository opened without a password" || RC=$?
[ "$RC" -eq 5 ] || fail "missing password: exit $RC, expected 5"
stderr_has "PVBACKUP_PASSWORD_FILE"

step "password file with a trailing newline works; an empty one is refused"
printf '%s\n' "$PVBACKUP_PASSWORD" >"$TMP/good.pw"
env -u PVBACKUP_PASSWORD "$PVBACKUP" snapshots --repo "$REPO" --password-file "$TMP/good.pw" \
    >"$TMP/out" 2>"$TMP/err" || fail "password file with a trailing newline was refused"
: >"$TMP/empty.pw"
env -u PVBACKUP_PASSWORD PVBACKUP_PASSWORD_FILE="$TMP/empty.pw" "$PVBACKUP" snapshots \
    --repo "$REPO" >"$TMP/out" 2>"$TMP/err" && fail "an empty password file was accepted" || RC=$?
[ "$RC" -ne 0 ] || fail "empty password file accepted"
stderr_has "empty"
env -u PVBACKUP_PASSWORD "$PVBACKUP" init --repo "$TMP/repo-empty-pw" \
    --password-file "$TMP/empty.pw" >"$TMP/out" 2>"$TMP/err" </dev/null &&
    fail "init with an empty password succeeded" || true
[ ! -e "$TMP/repo-empty-pw/config" ] || fail "init with an empty password created a repository"

step "restore into a non-empty target -> refused, nothing changed"
mkdir "$TMP/target"
printf 'precious\n' >"$TMP/target/keep.txt"
(cd "$TMP/target" && find . -printf '%p %s %T@ %m\n' | sort) >"$TMP/target.before"
run restore --repo "$REPO" "$ID" --target "$TMP/target" --no-progress
[ "$RC" -ne 0 ] || fail "restore into a non-empty target succeeded"
stderr_has "--overwrite"
(cd "$TMP/target" && find . -printf '%p %s %T@ %m\n' | sort) >"$TMP/target.after"
cmp -s "$TMP/target.before" "$TMP/target.after" || fail "the refused restore changed the target"
[ "$(cat "$TMP/target/keep.txt")" = precious ] || fail "keep.txt was modified"
expect 0 restore --repo "$REPO" "$ID" --target "$TMP/target" --overwrite --no-progress
[ -f "$TMP/target/dir/file.txt" ] || fail "restore --overwrite did not restore"

step "restore: bad arguments"
expect 2 restore --repo "$REPO" "$ID"
stderr_has "--target"
expect 2 restore --repo "$REPO" "$ID" --target ""
expect 2 restore --repo "$REPO" --target "$TMP/t2"
expect 2 restore --repo "$REPO" "$ID" --target "$TMP/t3" --include ../etc
expect 4 restore --repo "$REPO" ffffffffffff --target "$TMP/t4"
expect 4 ls --repo "$REPO" "$ID" no/such/path
stderr_has "no/such/path"

step "unknown option -> exit 2 with a hint"
expect 2 backup --repo "$REPO" --volume v --source "$SRC" --no-such-option
stderr_has "unknown option '--no-such-option'"
stderr_has "see 'pvbackup backup --help'"
expect 2 snapshots --repo "$REPO" -Z
stderr_has "see 'pvbackup snapshots --help'"
# abbreviations are not accepted (so --password can never mean --password-file)
expect 2 snapshots --repo "$REPO" --vol v
expect 2 snapshots --repo "$REPO" --password x
expect 2 no-such-command
stderr_has "pvbackup help"
expect 2 snapshots --repo
stderr_has "needs a value"
expect 2 backup --repo "$REPO" --source "$SRC"
stderr_has "--volume"
expect 2 backup --repo "$REPO" --volume 'bad/name' --source "$SRC"
stderr_has "invalid volume name"
expect 2 backup --repo "$REPO" --volume v --source "$SRC" --kind incremental --independent
stderr_has "--independent"
expect 2 backup --repo "$REPO" --volume v --source "$SRC" --kind weekly
expect 2 backup --repo "$REPO" --volume v --source "$SRC" --threads lots
expect 2 snapshots --repo "$REPO" --log-level chatty
expect 2 snapshots --repo "$REPO" --json=yes
expect 2 catalog
expect 2 catalog frobnicate --repo "$REPO"
expect 2 diff --repo "$REPO" "$ID"

step "--help of every command"
for cmd in init backup snapshots ls diff restore verify export catalog version help; do
    expect 0 "$cmd" --help
    grep -q "Examples" "$TMP/out" || fail "'$cmd --help' has no Examples"
    grep -q "^usage: pvbackup" "$TMP/out" || fail "'$cmd --help' has no usage line"
    expect 0 help "$cmd"
    grep -q "Examples" "$TMP/out" || fail "'help $cmd' has no Examples"
done
expect 0 catalog rebuild --help
grep -q "Examples" "$TMP/out" || fail "'catalog rebuild --help' has no Examples"
expect 0 --help
grep -q "restore" "$TMP/out" || fail "'pvbackup --help' does not list restore"
expect 2
expect 0 --version

step "backup of a missing source -> clear error"
expect 4 backup --repo "$REPO" --volume v --source "$TMP/no-such-dir"
stderr_has "$TMP/no-such-dir"
run backup --repo "$REPO" --volume v --source "$SRC/top.txt"
[ "$RC" -ne 0 ] || fail "backup of a regular file as source succeeded"
stderr_has "not a directory"

step "export refuses nothing sensible"
expect 4 export --repo "$REPO" deadbeefdead -o "$TMP/x.tar"

step "unreadable file in the source -> exit 3 naming it"
if [ "$(id -u)" -eq 0 ]; then
    echo "skipped: running as root, permissions do not stop reads"
else
    mkdir -p "$TMP/src2"
    printf 'fine\n' >"$TMP/src2/ok.txt"
    printf 'secret\n' >"$TMP/src2/locked.txt"
    chmod 000 "$TMP/src2/locked.txt"
    expect 3 backup --repo "$REPO" --volume v2 --source "$TMP/src2" --no-progress
    stderr_has "locked.txt"
    expect 0 snapshots --repo "$REPO" --volume v2 --json
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert len(d) == 1' "$TMP/out" ||
        fail "the partial snapshot was not written"
    chmod 600 "$TMP/src2/locked.txt"
fi

echo "PASS: test_cli_errors"
