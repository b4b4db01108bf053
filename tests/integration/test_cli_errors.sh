#!/usr/bin/env bash
# What a user sees when things go wrong: exit codes and messages of the pvbackup binary for a
# missing repository, a wrong password, init twice, a non-empty restore target, usage errors,
# --help of every command, a missing source and an unreadable source file. Under s3 also: a
# wrong secret key (5, nothing written), a missing bucket (4), an endpoint that refuses
# connections or never answers (8, within a bounded time).
#
# Environment: PVBACKUP (the binary), PVB_SOURCE_DIR (the source tree), PVB_TEST_STORAGE
# (local, the default, or s3: repositories are s3://pvb-test/NAME on s3rver; lib/backend.sh).
set -euo pipefail

: "${PVBACKUP:?set PVBACKUP to the pvbackup binary}"
: "${PVB_SOURCE_DIR:?set PVB_SOURCE_DIR to the root of the source tree}"
LIB="$PVB_SOURCE_DIR/tests/integration/lib"
export PVBACKUP_TEST_WEAK_KDF="${PVBACKUP_TEST_WEAK_KDF:-1}"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/pvb-cli-errors.XXXXXX")
HANG_PID=""
cleanup() {
    [ -z "$HANG_PID" ] || kill "$HANG_PID" 2>/dev/null || true
    chmod -R u+rwX "$TMP" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
# shellcheck source=tests/integration/lib/backend.sh
. "$LIB/backend.sh"
backend_init

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
REPO=$(repo_url repo)
NOREPO=$(repo_url no-such-repo)
SRC="$TMP/src"
mkdir -p "$SRC/dir"
printf 'hello\n' >"$SRC/dir/file.txt"
printf 'world\n' >"$SRC/top.txt"

step "missing repository -> exit 4"
expect 4 snapshots --repo "$NOREPO"
stderr_has "pvbackup: error:"
expect 4 ls --repo "$NOREPO" latest
stderr_has "pvbackup: error:"
[ -z "$(repo_obj_list "$NOREPO")" ] || fail "a command on a missing repository wrote objects"

step "init, then init again -> refused"
expect 0 init --repo "$REPO"
repo_fingerprint "$REPO" >"$TMP/repo-before"
[ -s "$TMP/repo-before" ] || fail "init wrote no object"
run init --repo "$REPO"
[ "$RC" -ne 0 ] || fail "init of an existing repository succeeded"
stderr_has "pvbackup: error:"
repo_fingerprint "$REPO" >"$TMP/repo-after"
cmp -s "$TMP/repo-before" "$TMP/repo-after" || fail "a second init changed the repository"

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
env -u PVBACKUP_PASSWORD "$PVBACKUP" init --repo "$(repo_url repo-empty-pw)" \
    --password-file "$TMP/empty.pw" >"$TMP/out" 2>"$TMP/err" </dev/null &&
    fail "init with an empty password succeeded" || true
! repo_obj_exists "$(repo_url repo-empty-pw)" config || fail "init with an empty password created a repository"

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

step "bad storage option values -> exit 2, bad storage environment -> exit 9"
expect 2 snapshots --repo "$REPO" --limit-upload 10Q
stderr_has "--limit-upload takes a size"
expect 2 snapshots --repo "$REPO" --s3-timeout 0
stderr_has "--s3-timeout takes a number of seconds from 1"
expect 2 snapshots --repo "$REPO" --upload-concurrency 33
expect 2 snapshots --repo "$REPO" --s3-sse DES
stderr_has "--s3-sse takes AES256"
expect 2 snapshots --repo "$REPO" --s3-sse-kms-key-id k1
stderr_has "needs --s3-sse aws:kms"
expect 2 snapshots --repo "$REPO" --s3-insec # no abbreviation of the insecure switch
PVBACKUP_S3_INSECURE=1 expect 9 snapshots --repo "$REPO" # nor from the environment
stderr_has "only be turned off with --s3-insecure on the command line"
PVBACKUP_S3_INSECURE_TLS=yes expect 9 snapshots --repo "$REPO"
# spelled out, it is taken, with a warning (nothing listens there: exit 8 after one attempt)
AWS_ACCESS_KEY_ID=k AWS_SECRET_ACCESS_KEY=s expect 8 snapshots --repo s3://bucket/p \
    --s3-endpoint https://127.0.0.1:1 --s3-insecure --s3-max-retries 1
stderr_has "TLS certificate checks are off (--s3-insecure)"
PVBACKUP_S3_TIMEOUT=soon expect 9 snapshots --repo "$REPO"
stderr_has "PVBACKUP_S3_TIMEOUT must be a number of seconds"
PVBACKUP_LIMIT_DOWNLOAD=fast expect 9 snapshots --repo "$REPO"
PVBACKUP_S3_TIMEOUT=30 PVBACKUP_LIMIT_DOWNLOAD=1MiB expect 0 snapshots --repo "$REPO"
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

if is_s3; then
    step "s3: a wrong secret key -> exit 5, nothing written into the bucket"
    bucket_fingerprint >"$TMP/bucket-before"
    AWS_SECRET_ACCESS_KEY=not-the-secret expect 5 init --repo "$(repo_url wrong-secret)"
    stderr_has "AWS_SECRET_ACCESS_KEY"
    grep -qF "not-the-secret" "$TMP/err" "$TMP/out" && fail "the wrong secret key was echoed"
    AWS_SECRET_ACCESS_KEY=not-the-secret expect 5 backup --repo "$REPO" --volume v --source "$SRC" --no-progress
    stderr_has "pvbackup: error:"
    AWS_SECRET_ACCESS_KEY=not-the-secret expect 5 snapshots --repo "$REPO"
    AWS_ACCESS_KEY_ID=NO-SUCH-KEY expect 5 backup --repo "$REPO" --volume v --source "$SRC" --no-progress
    printf 'not-the-secret\n' >"$TMP/wrong-secret"
    expect 5 backup --repo "$REPO" --volume v --source "$SRC" --no-progress --s3-secret-key-file "$TMP/wrong-secret"
    bucket_fingerprint >"$TMP/bucket-after"
    cmp -s "$TMP/bucket-before" "$TMP/bucket-after" ||
        fail "requests with a wrong secret changed the bucket: $(diff "$TMP/bucket-before" "$TMP/bucket-after" | grep '^[<>]' | head -n 3 | tr '\n' ' ')"
    expect 0 snapshots --repo "$REPO" --json
    [ "$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$TMP/out")" = 1 ] ||
        fail "a backup with a wrong secret wrote a snapshot"

    step "s3: a missing bucket -> exit 4, naming it"
    expect 4 init --repo s3://no-such-bucket/repo
    stderr_has "no-such-bucket"
    expect 4 snapshots --repo s3://no-such-bucket/repo
    stderr_has "no-such-bucket"
    expect 4 backup --repo s3://no-such-bucket/repo --volume v --source "$SRC" --no-progress
    stderr_has "no-such-bucket"
    [ ! -e "$PVB_S3_DATA_DIR/no-such-bucket" ] || fail "a command on a missing bucket created it"

    step "s3: an endpoint that refuses connections -> exit 8 within a bounded time"
    # a port that was free a moment ago: nothing listens there
    DEAD_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    DEAD="http://127.0.0.1:$DEAD_PORT"
    for cmd in "snapshots" "init" "backup --volume v --source $SRC"; do
        t0=$SECONDS
        # shellcheck disable=SC2086 # cmd holds a command and its arguments
        expect 8 $cmd --repo "$(repo_url unreachable)" --no-progress --s3-endpoint "$DEAD" --s3-retry-time 3
        took=$((SECONDS - t0))
        stderr_has "$DEAD"
        stderr_has "hint:"
        echo "  $cmd: exit 8 after ${took}s"
        [ "$took" -le 15 ] || fail "$cmd against a refusing endpoint with --s3-retry-time 3 took ${took}s"
    done
    PVBACKUP_S3_RETRY_TIME=3 PVBACKUP_S3_ENDPOINT="$DEAD" expect 8 snapshots --repo "$REPO"

    step "s3: an endpoint that accepts connections and never answers -> exit 8 within a bounded time"
    # accepts connections and never answers; gone by itself after 120 s whatever happens
    python3 -c 'import os, socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(64)
s.settimeout(1)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write("%d\n" % s.getsockname()[1])
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
held, end = [], time.monotonic() + 120
while time.monotonic() < end:
    try:
        held.append(s.accept()[0])
    except socket.timeout:
        pass' "$TMP/hang.port" </dev/null >/dev/null 2>&1 &
    HANG_PID=$!
    for _ in $(seq 1 100); do [ -s "$TMP/hang.port" ] && break; sleep 0.1; done
    [ -s "$TMP/hang.port" ] || fail "the silent endpoint did not start"
    HANG="http://127.0.0.1:$(cat "$TMP/hang.port")"
    t0=$SECONDS
    expect 8 snapshots --repo "$REPO" --s3-endpoint "$HANG" --s3-timeout 1 --s3-retry-time 3
    took=$((SECONDS - t0))
    kill "$HANG_PID" 2>/dev/null || true
    wait "$HANG_PID" 2>/dev/null || true
    HANG_PID=""
    stderr_has "hint:"
    echo "  snapshots: exit 8 after ${took}s"
    [ "$took" -le 15 ] || fail "snapshots against a silent endpoint (--s3-timeout 1 --s3-retry-time 3) took ${took}s"
fi

echo "PASS: test_cli_errors"
