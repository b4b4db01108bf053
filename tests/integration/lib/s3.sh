# shellcheck shell=bash
# s3.sh: a real S3 server (s3rver, tests/s3) and a fault-injecting proxy for the S3
# integration tests. Source it after `set -euo pipefail` (and after fault_init, or after the
# test's own `trap ... EXIT`):
#
#   . "$PVB_SOURCE_DIR/tests/integration/lib/s3.sh"
#   pvb_s3_start                      # s3rver on 127.0.0.1, bucket pvb-test
#   pvb_proxy_start "$TMP/faults.json"
#   pvb_proxy_set '{"rules":[{"fault":"slowdown","every":3,"match":"PUT","times":5}]}'
#   ... run pvbackup against "$PVB_PROXY_ENDPOINT" (faults) or "$PVB_S3_ENDPOINT" (direct)
#   pvb_proxy_stats                   # JSON counters
#
# Functions (each returns non-zero with a 'pvb_s3: error:' message on failure; under set -e
# that ends the test: a machine without Node.js fails the S3 tests, it never skips them):
#   pvb_s3_start [--allow-mismatched-signatures]
#       Installs the npm packages when needed (tests/s3/install.sh), starts s3rver on a free
#       port with a fresh data directory under $TMP (the test's workspace; a private one when
#       $TMP is unset), with bucket pvb-test and the buckets named in PVB_S3_BUCKETS (space or
#       comma separated), waits until it answers, and exports:
#         PVB_S3_ENDPOINT=http://127.0.0.1:PORT  AWS_ENDPOINT_URL (the same)
#         AWS_ACCESS_KEY_ID=S3RVER  AWS_SECRET_ACCESS_KEY=S3RVER
#         AWS_REGION=us-east-1  AWS_DEFAULT_REGION=us-east-1
#         PVB_S3_PID  PVB_S3_PORT  PVB_S3_BUCKET=pvb-test
#         PVB_S3_DATA_DIR (s3rver's files: BUCKET/KEY._S3rver_object ...)  PVB_S3_LOG
#       and unsets AWS_SESSION_TOKEN, AWS_SECURITY_TOKEN and AWS_PROFILE. The first call
#       registers a cleanup on EXIT (through fault_on_exit when faultlib.sh's trap is in place,
#       else chained before the current EXIT trap) that stops every server started here.
#       --allow-mismatched-signatures: accept requests whose SigV4 signature is wrong.
#       --key=ACCESS_KEY:SECRET: one more valid key pair (repeatable);
#       --revoked-keys-file=FILE: access key ids listed in FILE stop being valid (rotation).
#   pvb_s3_stop
#       Stops the proxy (if any) and s3rver (SIGTERM, SIGKILL after 5 s, children too) and
#       unsets PVB_S3_PID, PVB_S3_PORT, PVB_S3_ENDPOINT, AWS_ENDPOINT_URL. PVB_S3_DATA_DIR
#       and PVB_S3_LOG stay, to look at what was stored.
#   pvb_proxy_start CONTROL_FILE [--seed N] [--fault SPEC]...
#       Starts tests/s3/faultproxy.js in front of the running s3rver; the control file is
#       created with no rules when missing (validated when present) and read again by the
#       proxy on every request. Exports PVB_PROXY_ENDPOINT=http://127.0.0.1:PORT,
#       PVB_PROXY_PID, PVB_PROXY_PORT, PVB_PROXY_CONTROL (absolute path), PVB_PROXY_LOG
#       (one line per request and per injected fault).
#   pvb_proxy_set 'JSON'
#       Validates JSON as a control document and replaces the control file atomically; the
#       next request sees the new rules, with fresh counters.
#   pvb_proxy_stats              prints the proxy's counters (JSON, see faultproxy.js)
#   pvb_proxy_reset_stats        zeroes them (and restarts the rules' counters)
#   pvb_proxy_stop               stops the proxy, unsets PVB_PROXY_PID/PORT/ENDPOINT
#
# The servers listen on 127.0.0.1 only, and each exits by itself when the test's shell is
# gone (--parent-pid): a test killed with SIGKILL leaves no server behind. They are not
# children of the test's shell, so a bare `wait` in a test does not wait for them.
# The rules of the control file are described at the top of tests/s3/faultproxy.js.

PVB_S3_INFRA_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../s3" && pwd)
_PVB_S3_WORK=""       # where this shell's servers keep their files
_PVB_S3_OWN_WORK=0    # 1: _PVB_S3_WORK was made here (no $TMP) and is removed at exit
_PVB_S3_TRAP_PID=""   # the shell whose EXIT trap has our cleanup
_PVB_S3_DIR=""        # files of the current s3rver
_PVB_PROXY_DIR=""     # files of the current proxy

_pvb_s3_err() {
    printf 'pvb_s3: error: %s\n' "$*" >&2
    return 1
}

_pvb_s3_need_tools() {
    command -v node >/dev/null 2>&1 || {
        _pvb_s3_err "node not found: the S3 tests need Node.js (scripts/setup.sh installs it);" \
            "they cannot run, and do not skip"
        return 1
    }
    command -v curl >/dev/null 2>&1 || {
        _pvb_s3_err "curl not found: the S3 test helpers need it (apt-get install curl)"
        return 1
    }
}

_pvb_s3_workdir() {
    if [ -n "$_PVB_S3_WORK" ] && [ -d "$_PVB_S3_WORK" ]; then
        return 0
    fi
    if [ -n "${TMP:-}" ] && [ -d "${TMP:-}" ]; then
        _PVB_S3_WORK=$(mktemp -d "$TMP/s3.XXXXXX") || return 1
        _PVB_S3_OWN_WORK=0
    else
        _PVB_S3_WORK=$(mktemp -d "${TMPDIR:-/tmp}/pvb-s3.XXXXXX") || return 1
        _PVB_S3_OWN_WORK=1
    fi
}

# _pvb_s3_alive PID: the process exists and is not a zombie.
_pvb_s3_alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat:0:1}" != Z ] && [ "${stat:0:1}" != X ]
}

# _pvb_s3_kill PID: SIGTERM to PID and its children, SIGKILL after 5 s. (The servers are not
# children of the test's shell: pid 1 reaps them, and a zombie counts as gone.)
_pvb_s3_kill() {
    local pid=$1 kids i
    [ -n "$pid" ] || return 0
    kids=$(pgrep -P "$pid" 2>/dev/null | tr '\n' ' ' || true)
    # shellcheck disable=SC2086
    kill -TERM "$pid" $kids 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        _pvb_s3_alive "$pid" || break
        sleep 0.1
    done
    if _pvb_s3_alive "$pid"; then
        printf 'pvb_s3: process %s ignored SIGTERM, killing it\n' "$pid" >&2
        # shellcheck disable=SC2086
        kill -KILL "$pid" $kids 2>/dev/null || true
    fi
    for i in $kids; do
        kill -KILL "$i" 2>/dev/null || true
    done
    return 0
}

_pvb_s3_cleanup() {
    pvb_proxy_stop >/dev/null 2>&1 || true
    pvb_s3_stop >/dev/null 2>&1 || true
    if [ "$_PVB_S3_OWN_WORK" = 1 ] && [ -n "$_PVB_S3_WORK" ]; then
        rm -rf "$_PVB_S3_WORK" || true
    fi
    return 0
}

_pvb_s3_install_trap() {
    [ "$_PVB_S3_TRAP_PID" = "$BASHPID" ] && return 0
    local prev cmd=""
    prev=$(trap -p EXIT)
    if declare -F fault_on_exit >/dev/null 2>&1 && [[ "$prev" == *fault_cleanup* ]]; then
        # faultlib.sh: its cleanups run before it removes $TMP
        fault_on_exit _pvb_s3_cleanup
    else
        if [ -n "$prev" ]; then
            # prev is: trap -- 'COMMAND' EXIT
            local -a words
            eval "words=($prev)"
            cmd=${words[2]}
        fi
        if [ -z "$cmd" ]; then
            trap '_pvb_s3_cleanup' EXIT
        else
            # our cleanup first, then the previous trap with $? as it was (it may exit with
            # it): `(exit N) || CMD` gives CMD that $? without tripping set -e
            # shellcheck disable=SC2064,SC2154
            trap "_pvb_s3_rc=\$?; _pvb_s3_cleanup
if [ \"\$_pvb_s3_rc\" = 0 ]; then
$cmd
else
(exit \"\$_pvb_s3_rc\") || {
$cmd
}
fi" EXIT
        fi
    fi
    _PVB_S3_TRAP_PID=$BASHPID
}

# _pvb_s3_wait_port PID FILE WHAT LOG: wait (30 s) for the server to write its port.
_pvb_s3_wait_port() {
    local pid=$1 file=$2 what=$3 logf=$4 i
    for ((i = 0; i < 300; i++)); do
        if [ -s "$file" ]; then
            return 0
        fi
        if ! _pvb_s3_alive "$pid"; then
            _pvb_s3_err "$what exited during start-up; its output:"
            tail -n 20 "$logf" >&2 2>/dev/null || true
            return 1
        fi
        sleep 0.1
    done
    _pvb_s3_err "$what did not start listening within 30 s; its output:"
    tail -n 20 "$logf" >&2 2>/dev/null || true
    _pvb_s3_kill "$pid"
    return 1
}

# _pvb_s3_wait_http URL PID WHAT: wait (30 s) until URL gives any HTTP answer.
_pvb_s3_wait_http() {
    local url=$1 pid=$2 what=$3 code i
    for ((i = 0; i < 150; i++)); do
        code=$(curl -s --noproxy '*' -o /dev/null -w '%{http_code}' --max-time 2 "$url" 2>/dev/null) || true
        if [ -n "$code" ] && [ "$code" != 000 ]; then
            return 0
        fi
        _pvb_s3_alive "$pid" || break
        sleep 0.2
    done
    _pvb_s3_err "$what does not answer at $url"
    return 1
}

pvb_s3_start() {
    local allow=() arg name
    for arg in "$@"; do
        case $arg in
        --allow-mismatched-signatures) allow=(--allow-mismatched-signatures) ;;
        --key=* | --revoked-keys-file=*) allow+=("${arg%%=*}" "${arg#*=}") ;;
        *)
            _pvb_s3_err "pvb_s3_start: unknown argument '$arg'"
            return 1
            ;;
        esac
    done
    if [ -n "${PVB_S3_PID:-}" ] && _pvb_s3_alive "$PVB_S3_PID"; then
        _pvb_s3_err "pvb_s3_start: s3rver is already running (pid $PVB_S3_PID); pvb_s3_stop first"
        return 1
    fi
    _pvb_s3_need_tools || return 1
    "$PVB_S3_INFRA_DIR/install.sh" --quiet || {
        _pvb_s3_err "tests/s3/install.sh failed: s3rver is not installed"
        return 1
    }
    _pvb_s3_install_trap
    _pvb_s3_workdir || {
        _pvb_s3_err "cannot make a work directory"
        return 1
    }
    _PVB_S3_DIR=$(mktemp -d "$_PVB_S3_WORK/s3rver.XXXXXX") || return 1

    local buckets=(--bucket pvb-test)
    local list=${PVB_S3_BUCKETS:-}
    for name in ${list//,/ }; do
        buckets+=(--bucket "$name")
    done

    # s3rver 4.0.4 makes ListObjectsV2 continuation tokens with DES: OpenSSL's legacy provider.
    # Its standard output and error go to its log too (both append). Started from a subshell,
    # so that it is not a child of the test's shell: a bare `wait` in a test must not wait
    # for the server.
    # shellcheck disable=SC2094
    (
        NODE_OPTIONS=--openssl-legacy-provider exec node "$PVB_S3_INFRA_DIR/s3rver.js" \
            --port 0 --dir "$_PVB_S3_DIR/data" --port-file "$_PVB_S3_DIR/port" \
            --log "$_PVB_S3_DIR/s3rver.log" --parent-pid "$$" \
            "${buckets[@]}" "${allow[@]}" </dev/null >>"$_PVB_S3_DIR/s3rver.log" 2>&1 &
        echo $! >"$_PVB_S3_DIR/pid"
    )
    export PVB_S3_PID
    PVB_S3_PID=$(cat "$_PVB_S3_DIR/pid")
    export PVB_S3_LOG="$_PVB_S3_DIR/s3rver.log"
    export PVB_S3_DATA_DIR="$_PVB_S3_DIR/data"
    if ! _pvb_s3_wait_port "$PVB_S3_PID" "$_PVB_S3_DIR/port" s3rver "$PVB_S3_LOG"; then
        unset PVB_S3_PID
        return 1
    fi
    export PVB_S3_PORT
    PVB_S3_PORT=$(cat "$_PVB_S3_DIR/port")
    if ! _pvb_s3_wait_http "http://127.0.0.1:$PVB_S3_PORT/" "$PVB_S3_PID" s3rver; then
        tail -n 20 "$PVB_S3_LOG" >&2 || true
        pvb_s3_stop
        return 1
    fi
    export PVB_S3_ENDPOINT="http://127.0.0.1:$PVB_S3_PORT"
    export AWS_ENDPOINT_URL="$PVB_S3_ENDPOINT"
    export AWS_ACCESS_KEY_ID=S3RVER
    export AWS_SECRET_ACCESS_KEY=S3RVER
    export AWS_REGION=us-east-1
    export AWS_DEFAULT_REGION=us-east-1
    export PVB_S3_BUCKET=pvb-test
    unset AWS_SESSION_TOKEN AWS_SECURITY_TOKEN AWS_PROFILE
    printf 'pvb_s3: s3rver at %s (pid %s, data %s)\n' "$PVB_S3_ENDPOINT" "$PVB_S3_PID" \
        "$PVB_S3_DATA_DIR" >&2
}

pvb_s3_stop() {
    pvb_proxy_stop || true
    if [ -n "${PVB_S3_PID:-}" ]; then
        _pvb_s3_kill "$PVB_S3_PID"
    fi
    unset PVB_S3_PID PVB_S3_PORT PVB_S3_ENDPOINT AWS_ENDPOINT_URL
    return 0
}

pvb_proxy_start() {
    local control=${1:-} seed=() faults=()
    if [ -z "$control" ]; then
        _pvb_s3_err "usage: pvb_proxy_start CONTROL_FILE [--seed N] [--fault SPEC]..."
        return 1
    fi
    shift
    while [ $# -gt 0 ]; do
        case $1 in
        --seed | --fault)
            if [ $# -lt 2 ]; then
                _pvb_s3_err "pvb_proxy_start: $1 needs a value"
                return 1
            fi
            if [ "$1" = --seed ]; then seed=(--seed "$2"); else faults+=(--fault "$2"); fi
            shift 2
            ;;
        *)
            _pvb_s3_err "pvb_proxy_start: unknown argument '$1'"
            return 1
            ;;
        esac
    done
    if [ -z "${PVB_S3_PORT:-}" ] || [ -z "${PVB_S3_PID:-}" ]; then
        _pvb_s3_err "pvb_proxy_start: no s3rver running (pvb_s3_start first)"
        return 1
    fi
    if [ -n "${PVB_PROXY_PID:-}" ] && _pvb_s3_alive "$PVB_PROXY_PID"; then
        _pvb_s3_err "pvb_proxy_start: the proxy is already running (pid $PVB_PROXY_PID)"
        return 1
    fi
    _pvb_s3_need_tools || return 1
    case $control in
    /*) ;;
    *) control="$PWD/$control" ;;
    esac
    if [ -e "$control" ]; then
        node "$PVB_S3_INFRA_DIR/faultproxy.js" --validate "$control" >/dev/null || {
            _pvb_s3_err "pvb_proxy_start: invalid control file $control"
            return 1
        }
    else
        if ! { printf '{"rules": []}\n' >"$control.tmp.$$" && mv -f "$control.tmp.$$" "$control"; }; then
            _pvb_s3_err "pvb_proxy_start: cannot write $control"
            return 1
        fi
    fi
    _pvb_s3_install_trap
    _PVB_PROXY_DIR=$(mktemp -d "$_PVB_S3_WORK/proxy.XXXXXX") || return 1
    (
        exec node "$PVB_S3_INFRA_DIR/faultproxy.js" --upstream "http://127.0.0.1:$PVB_S3_PORT" \
            --port 0 --port-file "$_PVB_PROXY_DIR/port" --control "$control" \
            --log "$_PVB_PROXY_DIR/proxy.log" --parent-pid "$$" "${seed[@]}" "${faults[@]}" \
            </dev/null >>"$_PVB_PROXY_DIR/proxy.out" 2>&1 &
        echo $! >"$_PVB_PROXY_DIR/pid"
    )
    export PVB_PROXY_PID
    PVB_PROXY_PID=$(cat "$_PVB_PROXY_DIR/pid")
    export PVB_PROXY_LOG="$_PVB_PROXY_DIR/proxy.log"
    export PVB_PROXY_CONTROL="$control"
    if ! _pvb_s3_wait_port "$PVB_PROXY_PID" "$_PVB_PROXY_DIR/port" faultproxy \
        "$_PVB_PROXY_DIR/proxy.out"; then
        unset PVB_PROXY_PID
        return 1
    fi
    export PVB_PROXY_PORT
    PVB_PROXY_PORT=$(cat "$_PVB_PROXY_DIR/port")
    if ! _pvb_s3_wait_http "http://127.0.0.1:$PVB_PROXY_PORT/__faultproxy/health" \
        "$PVB_PROXY_PID" faultproxy; then
        pvb_proxy_stop
        return 1
    fi
    export PVB_PROXY_ENDPOINT="http://127.0.0.1:$PVB_PROXY_PORT"
    printf 'pvb_s3: fault proxy at %s -> %s (pid %s, control %s)\n' "$PVB_PROXY_ENDPOINT" \
        "$PVB_S3_ENDPOINT" "$PVB_PROXY_PID" "$control" >&2
}

pvb_proxy_set() {
    if [ $# -ne 1 ]; then
        _pvb_s3_err "usage: pvb_proxy_set 'JSON'"
        return 1
    fi
    if [ -z "${PVB_PROXY_CONTROL:-}" ]; then
        _pvb_s3_err "pvb_proxy_set: no proxy started (pvb_proxy_start CONTROL_FILE first)"
        return 1
    fi
    local tmp="$PVB_PROXY_CONTROL.tmp.$$"
    printf '%s\n' "$1" >"$tmp" || {
        _pvb_s3_err "pvb_proxy_set: cannot write $tmp"
        return 1
    }
    if ! node "$PVB_S3_INFRA_DIR/faultproxy.js" --validate "$tmp" >/dev/null; then
        rm -f "$tmp"
        _pvb_s3_err "pvb_proxy_set: rejected control document: $1"
        return 1
    fi
    mv -f "$tmp" "$PVB_PROXY_CONTROL"
}

pvb_proxy_stats() {
    if [ -z "${PVB_PROXY_PORT:-}" ]; then
        _pvb_s3_err "pvb_proxy_stats: no proxy running"
        return 1
    fi
    curl -sS --noproxy '*' --fail --max-time 10 "http://127.0.0.1:$PVB_PROXY_PORT/__faultproxy/stats" || {
        _pvb_s3_err "pvb_proxy_stats: the proxy does not answer"
        return 1
    }
}

pvb_proxy_reset_stats() {
    if [ -z "${PVB_PROXY_PORT:-}" ]; then
        _pvb_s3_err "pvb_proxy_reset_stats: no proxy running"
        return 1
    fi
    curl -sS --noproxy '*' --fail --max-time 10 -X POST -o /dev/null \
        "http://127.0.0.1:$PVB_PROXY_PORT/__faultproxy/reset" || {
        _pvb_s3_err "pvb_proxy_reset_stats: the proxy does not answer"
        return 1
    }
}

pvb_proxy_stop() {
    if [ -n "${PVB_PROXY_PID:-}" ]; then
        _pvb_s3_kill "$PVB_PROXY_PID"
    fi
    unset PVB_PROXY_PID PVB_PROXY_PORT PVB_PROXY_ENDPOINT
    return 0
}
