#!/usr/bin/env bash
# Secrets never leak: a whole session with a distinctive password, JSON debug logs and every
# command, then standard output, standard error, the catalog and every repository file are
# searched for the password, its hex and its base64. Zero hits allowed.
# Under s3 the S3 secret access key and session token are distinctive too (s3rver runs with
# --allow-mismatched-signatures to accept a secret of our choosing) and are searched for in
# the same places; the secret key also in s3rver's request log, since it is never sent.
#
# Environment: PVBACKUP (the binary), PVB_SOURCE_DIR (the source tree), PVB_TEST_STORAGE
# (local, the default, or s3: repositories are s3://pvb-test/NAME on s3rver; lib/backend.sh).
set -euo pipefail

: "${PVBACKUP:?set PVBACKUP to the pvbackup binary}"
: "${PVB_SOURCE_DIR:?set PVB_SOURCE_DIR to the root of the source tree}"
LIB="$PVB_SOURCE_DIR/tests/integration/lib"
export PVBACKUP_TEST_WEAK_KDF="${PVBACKUP_TEST_WEAK_KDF:-1}"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/pvb-cli-secrets.XXXXXX")
cleanup() {
    chmod -R u+rwX "$TMP" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
# shellcheck source=tests/integration/lib/backend.sh
. "$LIB/backend.sh"

step() { printf '=== %s\n' "$*"; }
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}

unset PVBACKUP_REPO PVBACKUP_PASSWORD PVBACKUP_PASSWORD_FILE PVBACKUP_LOG_LEVEL
# Distinctive, and different on every run.
PW="Zq8-pvbSecretMarker-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')-kW3"
PW_HEX=$(printf '%s' "$PW" | od -An -tx1 | tr -d ' \n')
PW_HEX_UPPER=$(printf '%s' "$PW_HEX" | tr 'a-f' 'A-F')
PW_B64=$(printf '%s' "$PW" | base64 -w0)
WRONG="Zq8-pvbWrongMarker-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')-kW3"
printf '%s\n' "$PW" >"$TMP/password"
chmod 600 "$TMP/password"
printf '%s\n' "$WRONG" >"$TMP/wrong-password"
if is_s3; then
    backend_init --allow-mismatched-signatures
    S3_SECRET="Zq8-pvbS3SecretMarker-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')-kW3"
    S3_TOKEN="Zq8-pvbS3TokenMarker-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')-kW3"
    export AWS_SECRET_ACCESS_KEY="$S3_SECRET" AWS_SESSION_TOKEN="$S3_TOKEN"
    printf '%s\n' "$S3_SECRET" >"$TMP/s3-secret"
    chmod 600 "$TMP/s3-secret"
else
    backend_init
fi

export PVBACKUP_CATALOG="$TMP/catalog.db"
export PVBACKUP_LOG_FORMAT=json
REPO=$(repo_url repo)
REPO_NONE=$(repo_url repo-none)
SRC="$TMP/src"
OUT="$TMP/logs"
mkdir -p "$OUT"
COMMON=(--repo "$REPO" --log-level debug --log-format json --no-progress)
N=0

# session [ENV=VALUE...] -- ARGS...: run one command, keeping its output; any exit code is
# accepted (errors are part of the session), but the exit code is logged.
session() {
    local envs=()
    while [ "$1" != "--" ]; do
        envs+=("$1")
        shift
    done
    shift
    N=$((N + 1))
    set +e
    env "${envs[@]}" "$PVBACKUP" "$@" >"$OUT/$N.out" 2>"$OUT/$N.err" </dev/null
    local rc=$?
    set -e
    # the command name only: arguments may hold the password on purpose
    printf '%3d exit %-3d pvbackup %s\n' "$N" "$rc" "${1%%=*}"
    LAST_RC=$rc
}
must() {
    session "$@"
    [ "$LAST_RC" -eq 0 ] || {
        cat "$OUT/$N.err" >&2
        fail "command $N exited $LAST_RC"
    }
}

step "build a source tree"
if [ -f "$LIB/mktree.sh" ]; then
    bash "$LIB/mktree.sh" "$SRC" >/dev/null
else
    fail "missing $LIB/mktree.sh"
fi
mkdir -p "$SRC/s"
printf 'data\n' >"$SRC/s/file.txt"

step "a session with the password from a file and from the environment"
must PVBACKUP_PASSWORD_FILE="$TMP/password" -- init "${COMMON[@]}"
must PVBACKUP_PASSWORD_FILE="$TMP/password" -- backup "${COMMON[@]}" --volume sv --source "$SRC" --json
printf 'changed\n' >>"$SRC/s/file.txt"
must PVBACKUP_PASSWORD="$PW" -- backup "${COMMON[@]}" --volume sv --source "$SRC" --tag a=b
must -- snapshots "${COMMON[@]}" --password-file "$TMP/password"
must -- snapshots "${COMMON[@]}" --password-file "$TMP/password" --json
must PVBACKUP_PASSWORD="$PW" -- ls "${COMMON[@]}" latest --volume sv
must PVBACKUP_PASSWORD="$PW" -- ls "${COMMON[@]}" latest --volume sv --json
IDS=($(python3 -c 'import json,sys; print(" ".join(s["id"] for s in json.load(open(sys.argv[1]))))' "$OUT/5.out"))
[ "${#IDS[@]}" -eq 2 ] || fail "expected 2 snapshots, got ${#IDS[@]}"
must PVBACKUP_PASSWORD="$PW" -- diff "${COMMON[@]}" "${IDS[0]}" "${IDS[1]}"
must PVBACKUP_PASSWORD="$PW" -- diff "${COMMON[@]}" "${IDS[0]}" "${IDS[1]}" --json
must PVBACKUP_PASSWORD_FILE="$TMP/password" -- restore "${COMMON[@]}" latest --volume sv --target "$TMP/restored"
must PVBACKUP_PASSWORD_FILE="$TMP/password" -- restore "${COMMON[@]}" latest --volume sv --target "$TMP/restored2" --json
must PVBACKUP_PASSWORD="$PW" -- verify "${COMMON[@]}" --read-data
must PVBACKUP_PASSWORD="$PW" -- verify "${COMMON[@]}" --json
must PVBACKUP_PASSWORD="$PW" -- export "${COMMON[@]}" latest --volume sv -o "$TMP/export.tar"
must PVBACKUP_PASSWORD="$PW" -- catalog rebuild "${COMMON[@]}"
must PVBACKUP_PASSWORD="$PW" -- snapshots "${COMMON[@]}" --log-format text

step "failures must not leak either"
session PVBACKUP_PASSWORD="$WRONG" -- snapshots "${COMMON[@]}"
[ "$LAST_RC" -eq 5 ] || fail "wrong password: exit $LAST_RC, expected 5"
session -- snapshots "${COMMON[@]}" --password-file "$TMP/wrong-password"
[ "$LAST_RC" -eq 5 ] || fail "wrong password file: exit $LAST_RC, expected 5"
session PVBACKUP_PASSWORD="$PW" PVBACKUP_PASSWORD_FILE="$TMP/password" -- snapshots "${COMMON[@]}"
[ "$LAST_RC" -ne 0 ] || fail "both password variables set: accepted"
# there is no --password flag, and no abbreviation may turn it into --password-file
session -- snapshots "${COMMON[@]}" --password "$PW"
[ "$LAST_RC" -eq 2 ] || fail "--password was not refused as an unknown option"
session -- snapshots "${COMMON[@]}" "--password=$PW"
[ "$LAST_RC" -eq 2 ] || fail "--password=... was not refused"
session -- snapshots "${COMMON[@]}" "--password-f=$PW"
[ "$LAST_RC" -eq 2 ] || fail "an abbreviated --password-file was accepted"
session -- "--password=$PW" snapshots
[ "$LAST_RC" -eq 2 ] || fail "--password before the command was not refused"
session -- catalog "--password=$PW"
[ "$LAST_RC" -eq 2 ] || fail "catalog --password=... was not refused"
session PVBACKUP_PASSWORD="$PW" -- restore "${COMMON[@]}" latest --volume sv --target "$TMP/restored"
[ "$LAST_RC" -ne 0 ] || fail "restore into a non-empty target succeeded"
session PVBACKUP_PASSWORD="$PW" -- init "${COMMON[@]}"
[ "$LAST_RC" -ne 0 ] || fail "second init succeeded"
session PVBACKUP_PASSWORD="$PW" -- init --repo "$REPO_NONE" --encryption none --log-level debug
[ "$LAST_RC" -eq 0 ] || fail "init --encryption none failed"
if is_s3; then
    step "s3: the secret key from a file, and S3 failures, must not leak either"
    must -u AWS_SECRET_ACCESS_KEY PVBACKUP_PASSWORD="$PW" -- backup "${COMMON[@]}" --volume sv \
        --source "$SRC" --s3-secret-key-file "$TMP/s3-secret"
    must -u AWS_SECRET_ACCESS_KEY PVBACKUP_PASSWORD="$PW" -- verify "${COMMON[@]}" --read-data \
        --s3-secret-key-file "$TMP/s3-secret"
    session PVBACKUP_PASSWORD="$PW" -- snapshots --repo s3://no-such-bucket/x --log-level debug --log-format json
    [ "$LAST_RC" -eq 4 ] || fail "missing bucket: exit $LAST_RC, expected 4"
    session PVBACKUP_PASSWORD="$PW" -- snapshots "${COMMON[@]}" --s3-endpoint http://127.0.0.1:9 \
        --s3-retry-time 1
    [ "$LAST_RC" -eq 8 ] || fail "unreachable endpoint: exit $LAST_RC, expected 8"
fi

step "the JSON logs are JSON"
# every line that starts with '{' is a JSON document (one python for all files: under s3
# the debug logs have a line per request)
python3 - "$OUT"/*.err <<'PY' || fail "not every JSON log line is JSON, or none was written"
import json, sys
found = 0
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        for line in f:
            line = line.rstrip(b"\n")
            if line.startswith(b"{"):
                try:
                    json.loads(line)  # bytes: invalid UTF-8 is an error too
                except ValueError as e:
                    print("not a JSON log line in %s: %r (%s)" % (path, line, e), file=sys.stderr)
                    sys.exit(1)
                found += 1
if not found:
    print("no JSON log line was written with --log-format json --log-level debug", file=sys.stderr)
    sys.exit(1)
print("%d JSON log lines" % found)
PY

step "search everything for the password"
hits=0
# the repositories as files: locally the directories, under s3 s3rver's files for them
# (objects and their metadata side files)
PLACES=("$OUT" "$(repo_dir "$REPO")" "$(repo_dir "$REPO_NONE")" "$TMP"/catalog.db*
    "$TMP/export.tar" "$TMP/restored")
search() { # search LABEL PATTERN [MORE PLACES...]
    local label=$1 pattern=$2
    shift 2
    if grep -rlaF -- "$pattern" "${PLACES[@]}" "$@" 2>/dev/null; then
        echo "LEAK: the $label was found in the files above" >&2
        hits=$((hits + 1))
    fi
}
S3LOG=()
is_s3 && S3LOG=("$PVB_S3_LOG")
search "password's text" "$PW" "${S3LOG[@]}"
search "password's hex" "$PW_HEX" "${S3LOG[@]}"
search "password's upper-case hex" "$PW_HEX_UPPER" "${S3LOG[@]}"
search "password's base64" "$PW_B64" "${S3LOG[@]}"
search "password's distinctive part" "pvbSecretMarker" "${S3LOG[@]}"
search "wrong password" "pvbWrongMarker" "${S3LOG[@]}"
if is_s3; then
    # the secret key only signs requests: it must appear nowhere, not even in what reached
    # the server; the session token is sent (x-amz-security-token) but stored nowhere
    search "S3 secret access key" "$S3_SECRET" "${S3LOG[@]}"
    search "S3 secret key's base64" "$(printf '%s' "$S3_SECRET" | base64 -w0)" "${S3LOG[@]}"
    search "S3 secret key's distinctive part" "pvbS3SecretMarker" "${S3LOG[@]}"
    search "S3 session token" "pvbS3TokenMarker"
    [ -s "$PVB_S3_LOG" ] || fail "s3rver logged no request (nothing searched)"
fi
[ -s "$TMP/catalog.db" ] || fail "no catalog was written (nothing searched)"
repo_obj_exists "$REPO" config || fail "no repository was written (nothing searched)"
[ "$hits" -eq 0 ] || fail "$hits kind(s) of password leak"

echo "PASS: test_cli_secrets"
