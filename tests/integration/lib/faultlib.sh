# shellcheck shell=bash
# faultlib.sh: helpers shared by the fault tests (tests/integration/test_fault_*.sh).
# Source it after `set -euo pipefail`:   . "$PVB_SOURCE_DIR/tests/integration/lib/faultlib.sh"
#                                        fault_init NAME
#
# fault_init makes the workspace $TMP (removed on exit), sets PVBACKUP_CATALOG and
# PVBACKUP_PASSWORD inside it and clears the PVBACKUP_* variables a caller may have set.
# The helpers of backend.sh come with this file: a test that runs on either backend
# (PVB_TEST_STORAGE=local or s3) calls backend_init after fault_init, names its repositories
# with repo_url NAME and reaches their objects with repo_obj_path, repo_obj_list ..., so that
# the same assertions run on both. (Tests that start s3rver themselves do not call it.)
#
# Two kinds of assertion:
#   fail MSG     stop the test now (the rest would make no sense);
#   check_fail MSG   record a failure and go on, so that one run shows every broken
#                    behaviour; the EXIT trap turns recorded failures into exit 1.
# The soft checks (expect_rc, expect_error, has, ...) always return 0: set -e must not stop
# the test.
# Every pvbackup run goes through `run`, which keeps stdout/stderr in $TMP/out, $TMP/err and
# the exit code in RC; a run that died from a signal (RC >= 128) is always a failure.

: "${PVBACKUP:?set PVBACKUP to the pvbackup binary}"
: "${PVB_SOURCE_DIR:?set PVB_SOURCE_DIR to the root of the source tree}"
export PVBACKUP_TEST_WEAK_KDF="${PVBACKUP_TEST_WEAK_KDF:-1}"
FAULT_LIB="$PVB_SOURCE_DIR/tests/integration/lib"
# shellcheck source=tests/integration/lib/backend.sh
. "$FAULT_LIB/backend.sh"
FAULT_FAILURES=0
FAULT_CLEANUPS=()
TMP=""

fault_cleanup() {
    local rc=$?
    local cmd
    # caller-registered cleanups first (background jobs, mounts), newest first
    for ((idx = ${#FAULT_CLEANUPS[@]} - 1; idx >= 0; idx--)); do
        cmd=${FAULT_CLEANUPS[idx]}
        eval "$cmd" >/dev/null 2>&1 || true
    done
    if [ -n "$TMP" ] && [ -d "$TMP" ]; then
        chattr -R -i "$TMP" >/dev/null 2>&1 || true
        chmod -R u+rwX "$TMP" 2>/dev/null || true
        rm -rf "$TMP"
    fi
    if [ "$rc" -eq 0 ] && [ "$FAULT_FAILURES" -gt 0 ]; then
        printf '\n%d check(s) FAILED (see FAIL lines above)\n' "$FAULT_FAILURES" >&2
        exit 1
    fi
    exit "$rc"
}

# fault_on_exit CMD: run CMD (a string for eval) when the test ends, before the workspace
# is removed.
fault_on_exit() { FAULT_CLEANUPS+=("$1"); }

fault_init() {
    local name=$1
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/pvb-$name.XXXXXX")
    trap fault_cleanup EXIT
    unset PVBACKUP_REPO PVBACKUP_PASSWORD_FILE PVBACKUP_LOG_FORMAT PVBACKUP_LOG_LEVEL \
        PVBACKUP_S3_ENDPOINT PVBACKUP_FAKE_NOW PVBACKUP_CACHE_DIR PVBACKUP_NO_CACHE
    export PVBACKUP_PASSWORD="fault-$name-password"
    export PVBACKUP_CATALOG="$TMP/catalog.db"
    export PVBACKUP_LOG_LEVEL=info
}

step() { printf '=== [%3ds] %s\n' "$SECONDS" "$*"; }
note() { printf 'note: %s\n' "$*"; }

show_last() {
    local f
    for f in "$TMP/out" "$TMP/err"; do
        if [ -s "$f" ]; then
            printf -- '--- %s (last run):\n' "${f##*/}" >&2
            head -n 30 "$f" >&2
        fi
    done
}

fail() {
    printf 'FAIL: %s\n' "$*" >&2
    show_last
    exit 1
}

check_fail() {
    printf 'FAIL: %s\n' "$*" >&2
    show_last
    FAULT_FAILURES=$((FAULT_FAILURES + 1))
}

# run ARGS...: the binary, stdin from /dev/null (never a password prompt).
run() {
    set +e
    "$PVBACKUP" "$@" >"$TMP/out" 2>"$TMP/err" </dev/null
    RC=$?
    set -e
    if [ "$RC" -ge 128 ]; then
        check_fail "pvbackup $1 died from signal $((RC - 128)) (exit $RC)"
    fi
}
# ok ARGS...: run and require exit 0 (fatal otherwise).
ok() {
    run "$@"
    [ "$RC" -eq 0 ] || fail "pvbackup $1 exited $RC, expected 0"
}
# expect_rc CODE WHAT ARGS...: run and check the exit code (recorded failure otherwise).
expect_rc() {
    local code=$1 what=$2
    shift 2
    run "$@"
    if [ "$RC" -ne "$code" ]; then
        check_fail "$what: pvbackup $1 exited $RC, expected $code"
        return 0
    fi
    return 0
}
# expect_error WHAT ARGS...: a clean failure: exit code in 1..127 and a 'pvbackup: error:' line.
expect_error() {
    local what=$1
    shift
    run "$@"
    if [ "$RC" -eq 0 ]; then
        check_fail "$what: pvbackup $1 succeeded, expected a failure"
        return 0
    fi
    if [ "$RC" -ge 128 ]; then
        return 0 # already recorded by run
    fi
    if ! grep -q 'pvbackup: error:' "$TMP/err"; then
        check_fail "$what: pvbackup $1 exited $RC without a 'pvbackup: error:' message"
        return 0
    fi
    return 0
}
# has FILE TEXT WHAT: FILE contains the fixed string TEXT.
has() {
    grep -qF -- "$2" "$1" || {
        check_fail "$3: '${1##*/}' does not contain '$2'"
        return 0
    }
}
err_has() { has "$TMP/err" "$1" "$2"; }
out_has() { has "$TMP/out" "$1" "$2"; }
# any_has TEXT WHAT: stdout or stderr of the last run contains TEXT.
any_has() {
    grep -qF -- "$1" "$TMP/out" "$TMP/err" || {
        check_fail "$2: neither stdout nor stderr contains '$1'"
        return 0
    }
}

# jget EXPR FILE: evaluate a Python expression on the JSON document d in FILE.
jget() {
    python3 -c 'import json, sys
d = json.load(open(sys.argv[2]))
v = eval(sys.argv[1])
print("" if v is None else v)' "$1" "$2"
}

# flip_byte FILE [OFFSET]: xor one byte (default: the middle one) with 0xff.
flip_byte() {
    python3 - "$1" "${2:-}" <<'EOF'
import os, sys
path, at = sys.argv[1], sys.argv[2]
size = os.path.getsize(path)
pos = int(at) if at else size // 2
with open(path, "r+b") as f:
    f.seek(pos)
    b = f.read(1)
    f.seek(pos)
    f.write(bytes([b[0] ^ 0xFF]))
EOF
}

# snapshot_ids REPO: the ids of `snapshots --json`, one a line (fatal if it fails).
snapshot_ids() {
    ok snapshots --repo "$1" --json --no-progress
    python3 -c 'import json, sys
for s in json.load(open(sys.argv[1])):
    print(s["id"])' "$TMP/out"
}

# make_files DIR COUNT MINSIZE MAXSIZE SEED: COUNT files of random bytes below DIR in ten
# subdirectories, sizes uniform in [MINSIZE, MAXSIZE].
make_files() {
    python3 - "$@" <<'EOF'
import os, random, sys
root, count, lo, hi, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
r = random.Random(seed)
for i in range(count):
    d = os.path.join(root, "d%02d" % (i % 10))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%05d.bin" % i), "wb") as f:
        f.write(r.randbytes(r.randint(lo, hi)))
EOF
}

# make_text DIR COUNT LINES SEED: COUNT compressible text files below DIR.
make_text() {
    python3 - "$@" <<'EOF'
import os, random, sys
root, count, lines, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
r = random.Random(seed)
os.makedirs(root, exist_ok=True)
words = ["alpha", "beta", "gamma", "delta", "epsilon", "volume", "snapshot", "restore"]
for i in range(count):
    with open(os.path.join(root, "t%04d.txt" % i), "w") as f:
        for j in range(lines):
            f.write("%d %s %s %d\n" % (j, r.choice(words), r.choice(words), r.randint(0, 99999)))
EOF
}

# delay_s MAX_MS: a random delay in [1, MAX_MS] milliseconds, in seconds
delay_s() {
    local ms=$((1 + (RANDOM * 32768 + RANDOM) % $1))
    printf '%d.%03d' $((ms / 1000)) $((ms % 1000))
}
# killed SIG DELAY ARGS...: run pvbackup ARGS, sending SIG after DELAY seconds. RC: its exit
# code, or 128 + the signal when the signal ended it; DIED=1 in that case (a handled SIGINT
# is an exit with code 130 and DIED=0).
killed() {
    local sig=$1 delay=$2
    shift 2
    set +e
    python3 - "$sig" "$delay" "$TMP/out" "$TMP/err" "$PVBACKUP" "$@" >"$TMP/status" <<'EOF'
import signal, subprocess, sys
sig = getattr(signal, "SIG" + sys.argv[1])
delay = float(sys.argv[2])
with open(sys.argv[3], "wb") as out, open(sys.argv[4], "wb") as err:
    p = subprocess.Popen(sys.argv[5:], stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    try:
        p.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        p.send_signal(sig)
        p.wait()
rc = p.returncode
print("%d %d" % ((128 - rc, 1) if rc < 0 else (rc, 0)))
EOF
    set -e
    read -r RC DIED <"$TMP/status"
}

# tree_same A B WHAT: treecmp.py without owners or times of the roots (recorded failure).
tree_same() {
    if ! python3 "$FAULT_LIB/treecmp.py" "$1" "$2" >"$TMP/treecmp" 2>&1; then
        check_fail "$3: restored tree differs from the source: $(head -n 10 "$TMP/treecmp" | tr '\n' ';')"
        return 0
    fi
    return 0
}

# files_match_or_absent REF DIR WHAT: every regular file under DIR is byte-identical to the
# same path under REF (a restore may leave files out, never one with wrong content). Sets
# MATCHED to the number of files compared; a mismatch is a recorded failure.
files_match_or_absent() {
    MATCHED=0
    if ! python3 - "$1" "$2" "$3" >"$TMP/matched" 2>"$TMP/mismatch" <<'PY'; then
import os, sys
ref, got, what = sys.argv[1], sys.argv[2], sys.argv[3]
bad, n = [], 0
for dirpath, dirs, files in os.walk(got):
    for name in files:
        p = os.path.join(dirpath, name)
        rel = os.path.relpath(p, got)
        if os.path.islink(p) or not os.path.isfile(p):
            continue
        n += 1
        q = os.path.join(ref, rel)
        if not os.path.isfile(q):
            bad.append(rel + " (not in the source)")
            continue
        with open(p, "rb") as a, open(q, "rb") as b:
            if a.read() != b.read():
                bad.append(rel)
print(n)
if bad:
    print("%d file(s) with wrong content: %s" % (len(bad), ", ".join(bad[:10])), file=sys.stderr)
    sys.exit(1)
PY
        check_fail "$3: $(cat "$TMP/mismatch")"
    fi
    MATCHED=$(head -n 1 "$TMP/matched")
    MATCHED=${MATCHED:-0}
    return 0
}

fault_finish() {
    if [ "$FAULT_FAILURES" -gt 0 ]; then
        printf '%d check(s) FAILED\n' "$FAULT_FAILURES" >&2
        exit 1
    fi
    echo "all checks passed"
}
