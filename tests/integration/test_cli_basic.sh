#!/usr/bin/env bash
# A whole session with the pvbackup binary against an encrypted repository: init, full
# backup, snapshots --json, ls, incremental backup, diff, restore (all, and --include), tree
# comparison with the source, export to tar, catalog rebuild.
#
# Environment: PVBACKUP (the binary), PVB_SOURCE_DIR (the source tree), PVB_TEST_STORAGE
# (local, the default, or s3: the repository is s3://pvb-test/repo on s3rver; lib/backend.sh).
set -euo pipefail

: "${PVBACKUP:?set PVBACKUP to the pvbackup binary}"
: "${PVB_SOURCE_DIR:?set PVB_SOURCE_DIR to the root of the source tree}"
LIB="$PVB_SOURCE_DIR/tests/integration/lib"
export PVBACKUP_TEST_WEAK_KDF="${PVBACKUP_TEST_WEAK_KDF:-1}"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/pvb-cli-basic.XXXXXX")
cleanup() {
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
# run CMD...: run the binary, keep stdout/stderr in $TMP/out and $TMP/err, exit code in RC.
run() {
    set +e
    "$PVBACKUP" "$@" >"$TMP/out" 2>"$TMP/err"
    RC=$?
    set -e
}
# ok CMD...: run and require exit code 0.
ok() {
    run "$@"
    [ "$RC" -eq 0 ] || fail "pvbackup $1 exited $RC, expected 0"
}
# jget EXPR FILE: evaluate a Python expression on the JSON document d in FILE.
jget() {
    python3 -c 'import json, sys
d = json.load(open(sys.argv[2]))
v = eval(sys.argv[1])
print("" if v is None else v)' "$1" "$2"
}

[ -f "$LIB/mktree.sh" ] || fail "missing $LIB/mktree.sh"
[ -f "$LIB/treecmp.py" ] || fail "missing $LIB/treecmp.py"

unset PVBACKUP_REPO PVBACKUP_PASSWORD_FILE PVBACKUP_LOG_FORMAT PVBACKUP_LOG_LEVEL
export PVBACKUP_PASSWORD="basic-session-password"
export PVBACKUP_CATALOG="$TMP/catalog.db"
REPO=$(repo_url repo)
SRC="$TMP/src"
COMMON=(--repo "$REPO" --no-progress)

step "init an encrypted repository"
ok init --repo "$REPO"
grep -Eq '[0-9a-f]{32}' "$TMP/out" || fail "init did not print a repository id"
REPO_ID=$(grep -Eo '[0-9a-f]{32}' "$TMP/out" | head -n 1)
echo "repository $REPO_ID"
repo_obj_exists "$REPO" config || fail "no config object in $REPO"

step "build a source tree"
bash "$LIB/mktree.sh" "$SRC" >/dev/null || fail "mktree.sh failed"
mkdir -p "$SRC/cli-test/sub" "$SRC/cli-test/other"
printf 'version one\n' >"$SRC/cli-test/sub/a.txt"
printf 'unchanged\n' >"$SRC/cli-test/sub/b.txt"
printf 'to be removed\n' >"$SRC/cli-test/gone.txt"
printf 'mode changes\n' >"$SRC/cli-test/meta.txt"
chmod 0644 "$SRC/cli-test/meta.txt"
printf 'elsewhere\n' >"$SRC/cli-test/other/c.txt"
# mtimes in the past, so that a change made now is always visible to an incremental
touch -d '2024-01-02 03:04:05' "$SRC/cli-test/sub/a.txt" "$SRC/cli-test/sub/b.txt" \
    "$SRC/cli-test/gone.txt" "$SRC/cli-test/meta.txt" "$SRC/cli-test/other/c.txt"

step "full backup"
ok backup "${COMMON[@]}" --volume vol1 --source "$SRC" --kind full --json --tag env=test
cp "$TMP/out" "$TMP/b1.json"
ID1=$(jget 'd["id"]' "$TMP/b1.json")
[[ "$ID1" =~ ^[0-9a-f]{64}$ ]] || fail "backup --json has no 64-hex id: '$ID1'"
[ "$(jget 'd["kind"]' "$TMP/b1.json")" = full ] || fail "first backup is not full"
[ "$(jget 'd["changed_while_read"]' "$TMP/b1.json")" = "[]" ] || fail "changed_while_read not empty"
[ "$(jget 'd["errors"]' "$TMP/b1.json")" = "[]" ] || fail "errors not empty"
jget 'd["seconds"] >= 0 and d["throughput_bps"] >= 0' "$TMP/b1.json" | grep -q True ||
    fail "seconds/throughput_bps missing"
echo "snapshot $ID1"

step "snapshots --json"
ok snapshots "${COMMON[@]}" --json
cp "$TMP/out" "$TMP/snaps1.json"
[ "$(jget 'len(d)' "$TMP/snaps1.json")" = 1 ] || fail "expected 1 snapshot"
[ "$(jget 'd[0]["id"]' "$TMP/snaps1.json")" = "$ID1" ] || fail "snapshots lists another id"
[ "$(jget 'd[0]["volume"]' "$TMP/snaps1.json")" = vol1 ] || fail "wrong volume"
[ "$(jget 'd[0]["tags"]["env"]' "$TMP/snaps1.json")" = test ] || fail "tag not recorded"

step "snapshots (table)"
ok snapshots "${COMMON[@]}"
grep -q "^${ID1:0:12} " "$TMP/out" || fail "table does not show ${ID1:0:12}"
grep -q "VOLUME" "$TMP/out" || fail "table has no header"

step "ls"
ok ls "${COMMON[@]}" "${ID1:0:12}"
grep -q ' cli-test/sub/a.txt$' "$TMP/out" || fail "ls does not list cli-test/sub/a.txt"
grep -Eq '^-rw-r--r-- .* cli-test/meta.txt$' "$TMP/out" || fail "ls shows a wrong mode for meta.txt"
grep -Eq '^d[-rwxsStT]{9} .* cli-test$' "$TMP/out" || fail "ls does not show the directory"
ok ls "${COMMON[@]}" "$ID1" cli-test/sub
[ "$(wc -l <"$TMP/out")" -eq 3 ] || fail "ls PATH should list the dir and its 2 files"
ok ls "${COMMON[@]}" latest --volume vol1 /cli-test/sub/ --json
[ "$(jget 'len(d)' "$TMP/out")" = 3 ] || fail "ls --json PATH: expected 3 entries"
[ "$(jget 'd[1]["path"]' "$TMP/out")" = cli-test/sub/a.txt ] || fail "ls --json: wrong order"
[ "$(jget 'd[1]["size"]' "$TMP/out")" = 12 ] || fail "ls --json: wrong size"

step "modify the tree"
printf 'version two, longer\n' >>"$SRC/cli-test/sub/a.txt"
rm "$SRC/cli-test/gone.txt"
printf 'brand new\n' >"$SRC/cli-test/new.txt"
chmod 0600 "$SRC/cli-test/meta.txt"

step "incremental backup"
ok backup "${COMMON[@]}" --volume vol1 --source "$SRC" --json
cp "$TMP/out" "$TMP/b2.json"
ID2=$(jget 'd["id"]' "$TMP/b2.json")
[ "$(jget 'd["kind"]' "$TMP/b2.json")" = incremental ] || fail "second backup is not incremental"
[ "$(jget 'd["parent"]' "$TMP/b2.json")" = "$ID1" ] || fail "incremental parent is not $ID1"
[ "$(jget 'd["stats"]["files_new"] >= 1 and d["stats"]["files_removed"] >= 1' "$TMP/b2.json")" = True ] ||
    fail "incremental does not count the new and removed files"
ok snapshots "${COMMON[@]}" --volume vol1 --json
[ "$(jget 'len(d)' "$TMP/out")" = 2 ] || fail "expected 2 snapshots"
[ "$(jget 'd[1]["kind"]' "$TMP/out")" = incremental ] || fail "snapshots: 2nd is not incremental"

step "human backup summary"
ok backup "${COMMON[@]}" --volume vol2 --source "$SRC/cli-test"
for word in "snapshot" "kind:" "parent:" "files:" "read:" "stored:" "MiB/s"; do
    grep -q -- "$word" "$TMP/out" || fail "backup summary lacks '$word'"
done
grep -q "kind:     full" "$TMP/out" || fail "first backup of vol2 should be full"

step "diff"
ok diff "${COMMON[@]}" "$ID1" "$ID2"
grep -qx 'M cli-test/sub/a.txt' "$TMP/out" || fail "diff does not show a.txt as changed"
grep -qx -- '- cli-test/gone.txt' "$TMP/out" || fail "diff does not show gone.txt as removed"
grep -qx '+ cli-test/new.txt' "$TMP/out" || fail "diff does not show new.txt as added"
grep -Eq '^m cli-test/meta.txt .*mode' "$TMP/out" || fail "diff does not show meta.txt's mode"
grep -q 'cli-test/sub/b.txt' "$TMP/out" && fail "diff lists the unchanged b.txt"
grep -Eq '^[0-9]+ added, [0-9]+ removed, [0-9]+ changed, [0-9]+ metadata only$' "$TMP/out" ||
    fail "diff has no summary line"
ok diff "${COMMON[@]}" "${ID1:0:10}" latest --volume vol1 --json
cp "$TMP/out" "$TMP/diff.json"
jget '"cli-test/new.txt" in d["added"]' "$TMP/diff.json" | grep -q True || fail "diff --json added"
jget '"cli-test/gone.txt" in d["removed"]' "$TMP/diff.json" | grep -q True || fail "diff --json removed"
jget '"cli-test/sub/a.txt" in d["changed"]' "$TMP/diff.json" | grep -q True || fail "diff --json changed"
jget '[m["fields"] for m in d["metadata"] if m["path"] == "cli-test/meta.txt"] == [["mode"]]' \
    "$TMP/diff.json" | grep -q True || fail "diff --json metadata of meta.txt"
[ "$(jget 'd["summary"]["added"] == len(d["added"])' "$TMP/diff.json")" = True ] ||
    fail "diff --json summary does not match"

step "restore latest into a new directory"
ok restore "${COMMON[@]}" latest --volume vol1 --target "$TMP/restored"
grep -q "restored snapshot ${ID2:0:12}" "$TMP/out" || fail "restore summary does not name ${ID2:0:12}"
grep -q "MiB/s" "$TMP/out" || fail "restore summary has no throughput"
python3 "$LIB/treecmp.py" "$SRC" "$TMP/restored" >"$TMP/treecmp.out" 2>&1 || {
    cat "$TMP/treecmp.out" >&2
    fail "restored tree differs from the source"
}

step "restore --include of one directory"
ok restore "${COMMON[@]}" "${ID2:0:12}" --target "$TMP/partial" --include cli-test/sub --json
[ "$(jget 'd["snapshot"]' "$TMP/out")" = "$ID2" ] || fail "restore --json names another snapshot"
[ "$(jget 'd["failed"]' "$TMP/out")" = "[]" ] || fail "restore --json reports failures"
[ "$(cat "$TMP/partial/cli-test/sub/a.txt")" = "$(cat "$SRC/cli-test/sub/a.txt")" ] ||
    fail "included file has the wrong content"
[ -f "$TMP/partial/cli-test/sub/b.txt" ] || fail "included directory is incomplete"
[ ! -e "$TMP/partial/cli-test/other" ] || fail "--include restored a sibling directory"
[ ! -e "$TMP/partial/cli-test/meta.txt" ] || fail "--include restored a sibling file"
extra=$(find "$TMP/partial" -mindepth 1 -maxdepth 1 ! -name cli-test | head -n 1)
[ -z "$extra" ] || fail "--include restored '$extra'"

step "export to tar"
ok export "${COMMON[@]}" "$ID2" -o "$TMP/snap.tar"
tar -tf "$TMP/snap.tar" >"$TMP/tar.list" || fail "tar cannot read the export"
grep -Eq '^(\./)?cli-test/sub/a.txt$' "$TMP/tar.list" || fail "tar lacks cli-test/sub/a.txt"
grep -Eq '^(\./)?cli-test/gone.txt$' "$TMP/tar.list" && fail "tar of snapshot 2 has gone.txt"
mkdir "$TMP/untar"
tar -xf "$TMP/snap.tar" -C "$TMP/untar" cli-test/sub/a.txt 2>/dev/null ||
    tar -xf "$TMP/snap.tar" -C "$TMP/untar" ./cli-test/sub/a.txt
cmp -s "$TMP/untar/cli-test/sub/a.txt" "$SRC/cli-test/sub/a.txt" || fail "tar has wrong content"
# standard output is the default; never a terminal (here a pipe)
set +e
"$PVBACKUP" export "${COMMON[@]}" "$ID1" 2>"$TMP/err" | tar -tf - >"$TMP/tar2.list"
st=("${PIPESTATUS[@]}")
set -e
[ "${st[0]}" -eq 0 ] && [ "${st[1]}" -eq 0 ] || fail "export to a pipe failed (${st[*]})"
grep -Eq '^(\./)?cli-test/gone.txt$' "$TMP/tar2.list" || fail "tar of snapshot 1 lacks gone.txt"

step "catalog rebuild"
rm -f "$PVBACKUP_CATALOG"
ok catalog rebuild "${COMMON[@]}"
grep -q "3 snapshots recorded" "$TMP/out" || fail "catalog rebuild did not record 3 snapshots"
ok snapshots "${COMMON[@]}" --json
[ "$(jget 'len(d)' "$TMP/out")" = 3 ] || fail "after rebuild snapshots lists $(jget 'len(d)' "$TMP/out")"
jget 'sorted(s["id"] for s in d if s["volume"] == "vol1") == sorted(["'"$ID1"'", "'"$ID2"'"])' \
    "$TMP/out" | grep -q True || fail "after rebuild the vol1 snapshots are not listed"

step "verify"
ok verify "${COMMON[@]}" --read-data
grep -q "no problems found" "$TMP/out" || fail "verify did not report a clean repository"

step "version and help"
ok version
grep -q '^pvbackup ' "$TMP/out" || fail "version output"
ok help
grep -q 'restore' "$TMP/out" || fail "help does not list restore"

echo "PASS: test_cli_basic"
