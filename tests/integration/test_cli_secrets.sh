#!/usr/bin/env bash
# Secrets never leak: a whole session with a distinctive password, JSON debug logs and every
# command, then standard output, standard error, the catalog and every repository file are
# searched for the password, its hex and its base64. Zero hits allowed.
#
# Environment: PVBACKUP (the binary), PVB_SOURCE_DIR (the source tree).
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

export PVBACKUP_CATALOG="$TMP/catalog.db"
export PVBACKUP_LOG_FORMAT=json
REPO="$TMP/repo"
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
session PVBACKUP_PASSWORD="$PW" -- init --repo "$TMP/repo-none" --encryption none --log-level debug
[ "$LAST_RC" -eq 0 ] || fail "init --encryption none failed"

step "the JSON logs are JSON"
found_json=0
for f in "$OUT"/*.err; do
    while IFS= read -r line; do
        [ -n "$line" ] || continue
        case "$line" in
        "{"*)
            printf '%s\n' "$line" | python3 -c 'import json,sys; json.loads(sys.stdin.read())' ||
                fail "not a JSON log line in $f: $line"
            found_json=1
            ;;
        esac
    done <"$f"
done
[ "$found_json" -eq 1 ] || fail "no JSON log line was written with --log-format json --log-level debug"

step "search everything for the password"
hits=0
search() { # search LABEL PATTERN
    local label=$1 pattern=$2
    if grep -rlaF -- "$pattern" "$OUT" "$REPO" "$TMP/repo-none" "$TMP"/catalog.db* \
        "$TMP/export.tar" "$TMP/restored" 2>/dev/null; then
        echo "LEAK: the password's $label was found in the files above" >&2
        hits=$((hits + 1))
    fi
}
search "text" "$PW"
search "hex" "$PW_HEX"
search "upper-case hex" "$PW_HEX_UPPER"
search "base64" "$PW_B64"
search "distinctive part" "pvbSecretMarker"
search "wrong password" "pvbWrongMarker"
[ -s "$TMP/catalog.db" ] || fail "no catalog was written (nothing searched)"
[ -f "$REPO/config" ] || fail "no repository was written (nothing searched)"
[ "$hits" -eq 0 ] || fail "$hits kind(s) of password leak"

echo "PASS: test_cli_secrets"
