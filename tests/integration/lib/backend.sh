# shellcheck shell=bash
# backend.sh: the storage backend the integration tests run against, so that one script checks
# the same behaviour on a local repository and on S3 (s3rver, tests/integration/lib/s3.sh).
#
#   PVB_TEST_STORAGE=local (default)   repositories are directories under $TMP
#   PVB_TEST_STORAGE=s3                repositories are s3://pvb-test/NAME on a private s3rver
#
# Source it after `set -euo pipefail`, once $TMP exists and the test's EXIT trap is in place
# (faultlib.sh's fault_init sources it and calls backend_init), then:
#   backend_init [pvb_s3_start options]   s3: start s3rver once (exports AWS_*, PVB_S3_*)
#   is_s3                                 true under s3
#   skip_s3 WHY                           under s3: print 'note: skipped under s3: WHY' and
#                                         return 0; locally return 1. Use as
#                                         `if skip_s3 "why"; then :; else ... fi`
#   repo_url NAME                         the repository to use: $TMP/NAME or s3://pvb-test/NAME
# Objects of a repository, by their storage name ("config", "data/ab/abcd...", "snapshots/ID"):
#   repo_dir REPO                         the local directory holding its objects (locally the
#                                         repository itself; under s3 s3rver's directory for
#                                         the prefix, where object NAME is NAME._S3rver_object)
#   repo_obj_path REPO NAME               the file holding object NAME: flip, truncate or copy
#                                         it in place and the server serves the result
#                                         (s3rver takes Content-Length from the file's size)
#   repo_obj_list REPO [DIR]...           object names (all, or those below DIR), sorted;
#                                         temporary files are not objects
#   repo_obj_exists REPO NAME
#   repo_obj_size REPO NAME               size in bytes
#   repo_obj_delete REPO NAME             remove the object (under s3 with its side files)
#   repo_copy REPO NAME                   copy every object of REPO into a new repository;
#                                         prints its URL (same backend, repo_url NAME)
#   repo_fingerprint REPO                 'NAME SIZE SHA256' of every object, sorted
#   repo_leftovers REPO                   how many things an interrupted write left behind:
#                                         temporary files (local), multipart uploads neither
#                                         completed nor aborted (s3)
#   bucket_fingerprint                    under s3: repo_fingerprint of the whole bucket
#
# Under s3 multipart uploads are used from 5 MiB (PVBACKUP_S3_MULTIPART_THRESHOLD and
# PVBACKUP_S3_PART_SIZE, unless already set) so that every 16 MiB pack goes in parts: the
# tests then cover both single PUTs (small packs, index, snapshots) and multipart uploads.

PVB_TEST_STORAGE=${PVB_TEST_STORAGE:-local}
case $PVB_TEST_STORAGE in
local | s3) ;;
*)
    printf 'backend.sh: PVB_TEST_STORAGE must be local or s3, not %s\n' "$PVB_TEST_STORAGE" >&2
    exit 2
    ;;
esac
export PVB_TEST_STORAGE
_PVB_BACKEND_LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
_PVB_S3_SUFFIX=._S3rver_object

is_s3() { [ "$PVB_TEST_STORAGE" = s3 ]; }

skip_s3() {
    is_s3 || return 1
    printf 'note: skipped under s3: %s\n' "$*"
    return 0
}

backend_init() {
    : "${TMP:?backend_init: make the workspace \$TMP first}"
    if ! is_s3; then
        printf 'storage backend: local (repositories under %s)\n' "$TMP"
        return 0
    fi
    # shellcheck source=tests/integration/lib/s3.sh
    . "$_PVB_BACKEND_LIB/s3.sh"
    pvb_s3_start "$@"
    export PVBACKUP_S3_MULTIPART_THRESHOLD=${PVBACKUP_S3_MULTIPART_THRESHOLD:-5MiB}
    export PVBACKUP_S3_PART_SIZE=${PVBACKUP_S3_PART_SIZE:-5MiB}
    printf 'storage backend: s3 (s3rver at %s, repositories s3://%s/NAME, multipart from %s)\n' \
        "$PVB_S3_ENDPOINT" "$PVB_S3_BUCKET" "$PVBACKUP_S3_MULTIPART_THRESHOLD"
}

repo_url() {
    if is_s3; then
        printf 's3://%s/%s\n' "${PVB_S3_BUCKET:-pvb-test}" "$1"
    else
        printf '%s/%s\n' "$TMP" "$1"
    fi
}

repo_dir() {
    case $1 in
    s3://*)
        : "${PVB_S3_DATA_DIR:?repo_dir: no s3rver started (backend_init)}"
        local rest=${1#s3://}
        rest=${rest%/}
        printf '%s/%s\n' "$PVB_S3_DATA_DIR" "$rest"
        ;;
    file://*) printf '%s\n' "${1#file://}" ;;
    *) printf '%s\n' "$1" ;;
    esac
}

repo_obj_path() {
    local dir
    dir=$(repo_dir "$1")
    case $1 in
    s3://*) printf '%s/%s%s\n' "$dir" "$2" "$_PVB_S3_SUFFIX" ;;
    *) printf '%s/%s\n' "$dir" "$2" ;;
    esac
}

# _repo_files DIR S3(0/1) [SUB]...: object names below DIR (optionally only below DIR/SUB).
_repo_files() {
    local dir=$1 s3=$2 sub
    shift 2
    [ -d "$dir" ] || return 0
    local subs=("$@")
    [ ${#subs[@]} -gt 0 ] || subs=(.)
    (
        cd "$dir" || exit 0
        for sub in "${subs[@]}"; do
            [ -d "$sub" ] || continue
            if [ "$s3" = 1 ]; then
                # s3rver's side files (.md5, metadata) and unfinished uploads are no objects
                find "$sub" -type f -name "*$_PVB_S3_SUFFIX" ! -path '*/._S3rver_uploads/*' |
                    sed 's|\._S3rver_object$||'
            else
                find "$sub" -type f ! -name '.tmp-*'
            fi
        done
    ) | sed 's|^\./||' | LC_ALL=C sort -u
}

repo_obj_list() {
    local repo=$1 s3=0
    shift
    case $repo in s3://*) s3=1 ;; esac
    _repo_files "$(repo_dir "$repo")" "$s3" "$@"
}

repo_obj_exists() { [ -f "$(repo_obj_path "$1" "$2")" ]; }

repo_obj_size() { stat -c %s -- "$(repo_obj_path "$1" "$2")"; }

repo_obj_delete() {
    local path
    path=$(repo_obj_path "$1" "$2")
    case $1 in
    s3://*) rm -f -- "$path" "$path.md5" "${path%"$_PVB_S3_SUFFIX"}._S3rver_metadata.json" ;;
    *) rm -f -- "$path" ;;
    esac
}

repo_copy() {
    local src=$1 name=$2 dst
    dst=$(repo_url "$name")
    rm -rf -- "$(repo_dir "$dst")"
    mkdir -p -- "$(dirname "$(repo_dir "$dst")")"
    cp -a -- "$(repo_dir "$src")" "$(repo_dir "$dst")"
    printf '%s\n' "$dst"
}

repo_fingerprint() {
    local repo=$1 name dir
    dir=$(repo_dir "$repo")
    repo_obj_list "$repo" | while IFS= read -r name; do
        printf '%s %s %s\n' "$name" "$(repo_obj_size "$repo" "$name")" \
            "$(sha256sum <"$(repo_obj_path "$repo" "$name")" | cut -c1-64)"
    done
}

bucket_fingerprint() {
    repo_fingerprint "s3://${PVB_S3_BUCKET:-pvb-test}"
}

repo_leftovers() {
    case $1 in
    s3://*)
        # s3rver keeps an upload's parts in BUCKET/._S3rver_uploads/ID/ (with a file 'key')
        # until it is completed or aborted (AbortMultipartUpload is added by
        # tests/s3/s3rver.js: the directory goes). An upload whose abort reached the server,
        # as its request log shows, counts as cleaned up whatever the answer.
        local rest=${1#s3://} dir n=0 id
        local bucket=${rest%%/*} prefix=""
        [ "$bucket" != "$rest" ] && prefix=${rest#*/}
        for dir in "$PVB_S3_DATA_DIR/$bucket/._S3rver_uploads"/*/; do
            [ -f "$dir/key" ] || continue
            case $(cat "$dir/key") in "${prefix:+$prefix/}"*) ;; *) continue ;; esac
            id=$(basename "$dir")
            if [ -n "${PVB_S3_LOG:-}" ] && grep -q "DELETE [^ ]*?uploadId=$id " "$PVB_S3_LOG" 2>/dev/null; then
                continue
            fi
            n=$((n + 1))
        done
        echo "$n"
        ;;
    *) find "$(repo_dir "$1")" -name '.tmp-*' 2>/dev/null | wc -l ;;
    esac
}
