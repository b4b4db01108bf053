#!/usr/bin/env bash
# Hostile repositories: snapshots crafted with pvb_craft (tests/tools/pvb_craft.c), which writes
# file lists straight through the repository API, bypassing the scanner.
#
# DESIGN.md invariant 4: a restore never writes outside its target: no "..", no absolute
# paths, no following symlinks out of the target.
#  - File lists with unsafe paths ("../x", "/abs", "a/../../x", ".", empty components), unsafe
#    hardlink targets, duplicates or disorder are refused when the list is loaded: `restore`,
#    `ls` and `export` exit 6 with a corrupt-data message and write nothing; `verify` exits 6
#    naming the snapshot object.
#  - Valid paths with evil meaning (a symlink to outside the target followed by a file below
#    it, a symlink "up" -> "..", a hardlink through such a symlink) restore everything else,
#    refuse those entries by name, exit 3, and create or change nothing outside the target,
#    also when many such pairs are written by parallel writers (a race).
#  - A file whose block is not in the index, or is recorded with a wrong length, fails alone.
#  - --overwrite into a target where a directory was replaced by a symlink to outside does not
#    follow it.
#
# Environment: PVBACKUP (the binary), PVB_SOURCE_DIR (the source tree), PVB_CRAFT (pvb_craft),
# PVB_TEST_STORAGE (local, the default, or s3: the repository is s3://pvb-test/repo on s3rver,
# which pvb_craft reaches through AWS_ENDPOINT_URL like pvbackup; lib/backend.sh).
set -euo pipefail
. "$PVB_SOURCE_DIR/tests/integration/lib/faultlib.sh"
fault_init fault-hostile
backend_init
: "${PVB_CRAFT:?set PVB_CRAFT to the pvb_craft binary (built by tests/CMakeLists.txt)}"
[ -x "$PVB_CRAFT" ] || fail "PVB_CRAFT='$PVB_CRAFT' is not executable"

REPO=$(repo_url repo)
COMMON=(--no-progress)
# Places outside every target, in the parent directory of the workspace (the shared /tmp),
# named at random so that nothing else can have made them.
OUT_NEW="$(dirname "$TMP")/pvb-outside-$RANDOM$RANDOM-new"
OUT_DIR="$(dirname "$TMP")/pvb-outside-$RANDOM$RANDOM-dir"
fault_on_exit "rm -rf '$OUT_NEW' '$OUT_DIR'"
mkdir "$OUT_DIR"
printf 'precious\n' >"$OUT_DIR/victim"
snapshot_outside() { (cd "$OUT_DIR" && find . -printf '%p %s %T@\n' | sort; md5sum victim) >"$1"; }
snapshot_outside "$TMP/outside-before"
# `up` -> ".." from a target directly in $TMP would reach $TMP: every target lives two levels
# down so that the level above it is a directory we watch.
mkdir -p "$TMP/targets"

craft() {
    # craft NAME [pvb_craft options] < spec: prints the snapshot id
    local name=$1
    shift
    "$PVB_CRAFT" --repo "$REPO" --volume "$name" "$@" snapshot 2>"$TMP/craft.err" ||
        fail "pvb_craft could not write snapshot '$name': $(cat "$TMP/craft.err")"
}

# nothing_escaped WHAT: no file appeared or changed outside the targets. After a failure the
# damage is undone and the baseline taken again, so that each case reports only its own.
nothing_escaped() {
    local bad=0 stray
    if [ -e "$OUT_NEW" ]; then
        check_fail "$1: '$OUT_NEW' was created outside the target"
        bad=1
    fi
    snapshot_outside "$TMP/outside-after"
    if ! cmp -s "$TMP/outside-before" "$TMP/outside-after"; then
        check_fail "$1: the directory outside the target changed: $(diff "$TMP/outside-before" "$TMP/outside-after" | grep '^[<>]' | tr '\n' ' ')"
        bad=1
    fi
    stray=$(find "$TMP/targets" -maxdepth 1 -mindepth 1 ! -name 't-*' | head -n 3)
    if [ -n "$stray" ] || [ -e "$TMP/escape.txt" ]; then
        check_fail "$1: file(s) escaped next to the target: $stray $(ls "$TMP/escape.txt" 2>/dev/null)"
        bad=1
    fi
    if [ "$bad" = 1 ]; then
        rm -rf "$OUT_NEW" "$TMP/escape.txt"
        find "$TMP/targets" -maxdepth 1 -mindepth 1 ! -name 't-*' -exec rm -rf {} +
        find "$OUT_DIR" -mindepth 1 ! -name victim -exec rm -rf {} +
        printf 'precious\n' >"$OUT_DIR/victim"
        snapshot_outside "$TMP/outside-before"
    fi
    return 0
}

step "init a repository and check pvb_craft on a harmless snapshot"
ok init --repo "$REPO"
GOOD=$(printf 'dir d\nfile d/a alpha\nfile b bravo\nsymlink s d/a\nhardlink h2 d/a\n' | craft good)
ok restore --repo "$REPO" "${COMMON[@]}" "$GOOD" --target "$TMP/targets/t-good"
[ "$(cat "$TMP/targets/t-good/d/a")" = alpha ] || fail "pvb_craft: the harmless snapshot does not restore"
[ "$(readlink "$TMP/targets/t-good/s")" = d/a ] || fail "pvb_craft: symlink not restored"
[ "$(stat -c %i "$TMP/targets/t-good/h2")" = "$(stat -c %i "$TMP/targets/t-good/d/a")" ] ||
    fail "pvb_craft: hardlink not restored"

# ---------------------------------------------------------------------------------------
# refused_at_load NAME SPEC [pvb_craft options]: the file list is refused as corrupt data.
refused_at_load() {
    local name=$1 spec=$2
    shift 2
    local id target="$TMP/targets/t-$name"
    id=$(printf '%b' "$spec" | craft "$name" "$@")
    expect_rc 6 "'$name': restore" restore --repo "$R" "${COMMON[@]}" "$id" --target "$target"
    [ "$RC" -ne 6 ] || grep -q 'pvbackup: error:' "$TMP/err" || check_fail "'$name': restore exit 6 without an error message"
    [ "$RC" -ne 0 ] || check_fail "'$name': restore succeeded"
    echo "  $name: restore exit $RC: $(grep -m1 'error:' "$TMP/err" | cut -c1-140)"
    if [ -e "$target" ] && [ -n "$(ls -A "$target")" ]; then
        check_fail "'$name': restore wrote into the target: $(ls -A "$target" | head -n 5 | tr '\n' ' ')"
    fi
    expect_rc 6 "'$name': ls" ls --repo "$R" "${COMMON[@]}" "$id"
    expect_rc 6 "'$name': export" export --repo "$R" "${COMMON[@]}" "$id" -o "$TMP/$name.tar"
    LOAD_REFUSED+=("$id")
    nothing_escaped "'$name'"
}

R=$REPO
LOAD_REFUSED=()
step "file lists with unsafe paths are refused when loaded (exit 6), nothing is written"
refused_at_load dotdot 'file ok fine\nfile ../escape.txt evil\n'
refused_at_load dotdot-deep 'file ok fine\nfile a/../../escape.txt evil\n'
refused_at_load absolute "file ok fine\nfile $OUT_NEW evil\n"
refused_at_load dot-component 'file ./ok fine\n'
refused_at_load empty-component 'dir a\nfile a//b evil\n'
refused_at_load trailing-slash 'dir a/\n'
refused_at_load only-dotdot 'dir ..\n'
refused_at_load hardlink-dotdot 'file ok fine\nhardlink pw ../../etc/passwd\n'
refused_at_load hardlink-absolute 'file ok fine\nhardlink pw /etc/passwd\n'
refused_at_load duplicate 'file same one\nfile same two\n'
refused_at_load dir-and-file 'dir same\nfile same evil\n'
refused_at_load out-of-order 'file b second\nfile a first\n' --no-sort
refused_at_load child-before-parent 'file d/x child\ndir d\n' --no-sort

step "verify names every refused snapshot"
run verify --repo "$REPO" "${COMMON[@]}" --json
[ "$RC" -eq 6 ] || check_fail "verify of the hostile repository exited $RC, expected 6"
for id in "${LOAD_REFUSED[@]}"; do
    grep -qF "snapshots/$id" "$TMP/out" || check_fail "verify does not name snapshots/${id:0:12}"
done

# ---------------------------------------------------------------------------------------
step "symlink to a new place outside, then a file below it"
ID=$(craft sym-new <<EOF
file before fine
symlink link $OUT_NEW
file link/pwned evil
dir link/sub
file zz-after fine
EOF
)
T="$TMP/targets/t-sym-new"
expect_rc 3 "symlink then file (new outside dir): restore" restore --repo "$REPO" "${COMMON[@]}" "$ID" --target "$T"
# either the symlink or the entries below it are refused (which one depends on the order the
# restore creates them in), by name
grep -Eq "cannot restore 'link(/pwned|/sub)?'" "$TMP/err" || check_fail "symlink then file: no refused entry named"
[ "$(cat "$T/before" 2>/dev/null)" = fine ] && [ "$(cat "$T/zz-after" 2>/dev/null)" = fine ] ||
    check_fail "symlink then file: the harmless files were not restored"
nothing_escaped "symlink then file (new outside dir)"

step "symlink to an existing directory outside, then files below it, and a hardlink through it"
ID=$(craft sym-dir <<EOF
symlink link $OUT_DIR
file link/victim overwritten
file link/new created
hardlink zz-hard link/victim
file zz-ok fine
EOF
)
T="$TMP/targets/t-sym-dir"
expect_rc 3 "symlink then file (existing outside dir): restore" restore --repo "$REPO" "${COMMON[@]}" "$ID" --target "$T"
grep -Eq "cannot restore 'link(/victim|/new)?'" "$TMP/err" || check_fail "symlink then file: no refused entry named"
if [ -L "$T/link" ]; then
    err_has "link/victim" "symlink then file: refused entry named"
    err_has "zz-hard" "hardlink through a symlink: refused entry named"
fi
[ "$(cat "$T/zz-ok" 2>/dev/null)" = fine ] || check_fail "symlink then file: zz-ok not restored"
nothing_escaped "symlink then file (existing outside dir)"

step "symlink 'up' -> '..', then a file below it"
ID=$(craft sym-up <<'EOF'
symlink up ..
file up/escape.txt evil
symlink up2 ../..
dir up2/targets
file up2/escape.txt evil
file zz fine
EOF
)
T="$TMP/targets/t-sym-up"
expect_rc 3 "symlink up: restore" restore --repo "$REPO" "${COMMON[@]}" "$ID" --target "$T"
grep -Eq "cannot restore 'up(/escape.txt)?'" "$TMP/err" || check_fail "symlink up: no refused entry named"
grep -Eq "cannot restore 'up2(/escape.txt|/targets)?'" "$TMP/err" || check_fail "symlink up2: no refused entry named"
nothing_escaped "symlink up"

step "a race: many symlinks to outside, each followed by a file below it"
# Entries are written by several threads: a file below a symlink must be refused (or land in
# a real directory of the target) whichever thread creates the symlink, and whenever.
OUT_RACE="$(dirname "$TMP")/pvb-outside-$RANDOM$RANDOM-race"
fault_on_exit "rm -rf '$OUT_RACE'"
mkdir "$OUT_RACE"
ID=$(for i in $(seq -w 0 299); do printf 'symlink l%s %s\nfile l%s/pwned-%s evil\n' "$i" "$OUT_RACE" "$i" "$i"; done | craft race)
for attempt in 1 2 3 4 5 6; do
    threads=()
    [ "$attempt" -gt 3 ] && threads=(--threads 4)
    T="$TMP/targets/t-race-$attempt"
    expect_rc 3 "race $attempt: restore ${threads[*]}" restore --repo "$REPO" "${COMMON[@]}" "$ID" --target "$T" "${threads[@]}"
    escaped=$(find "$OUT_RACE" -mindepth 1 | wc -l)
    if [ "$escaped" -ne 0 ]; then
        check_fail "race $attempt (restore ${threads[*]:-with default threads}): $escaped file(s) written OUTSIDE the target into '$OUT_RACE' through symlinks, e.g. $(find "$OUT_RACE" -mindepth 1 | head -n 3 | tr '\n' ' ')"
        rm -rf "${OUT_RACE:?}"/*
    fi
done
nothing_escaped "race"

step "absolute and dangling symlinks are restored as links, never followed"
ID=$(craft sym-abs <<EOF
symlink abs /etc/passwd
symlink dangling $OUT_NEW/nothing
file zz fine
EOF
)
T="$TMP/targets/t-sym-abs"
expect_rc 0 "absolute symlinks: restore" restore --repo "$REPO" "${COMMON[@]}" "$ID" --target "$T"
[ "$(readlink "$T/abs")" = /etc/passwd ] || check_fail "absolute symlink not restored as a link"
[ "$(readlink "$T/dangling")" = "$OUT_NEW/nothing" ] || check_fail "dangling symlink not restored as a link"
nothing_escaped "absolute symlinks"

step "blocks that are not in the repository: the file fails alone"
ID=$(craft blocks <<'EOF'
file a-ok first
file-missing b-missing
file-badlen c-badlen some content
file d-ok last
EOF
)
T="$TMP/targets/t-blocks"
expect_rc 3 "missing block: restore" restore --repo "$REPO" "${COMMON[@]}" "$ID" --target "$T" --json
cp "$TMP/out" "$TMP/blocks.json"
err_has "b-missing" "missing block: the file is named"
err_has "c-badlen" "block recorded with a wrong length: the file is named"
[ ! -e "$T/b-missing" ] || check_fail "missing block: a file was left in its place"
[ ! -e "$T/c-badlen" ] || check_fail "wrong block length: a file was left in its place"
[ "$(cat "$T/a-ok" 2>/dev/null)" = first ] && [ "$(cat "$T/d-ok" 2>/dev/null)" = last ] ||
    check_fail "missing block: the other files were not restored"
[ "$(jget 'len(d["failed"])' "$TMP/blocks.json" 2>/dev/null)" = 2 ] || check_fail "missing block: restore --json does not list 2 failures"
expect_rc 6 "missing block: verify" verify --repo "$REPO" "${COMMON[@]}"
any_has "b-missing" "missing block: verify names the file"

step "--overwrite into a target where a directory became a symlink to outside"
ID=$(craft overwrite <<'EOF'
dir d
file d/f restored
file e fine
EOF
)
T="$TMP/targets/t-overwrite"
mkdir -p "$T"
ln -s "$OUT_DIR" "$T/d"
run restore --repo "$REPO" "${COMMON[@]}" "$ID" --target "$T" --overwrite
[ "$RC" -eq 0 ] || [ "$RC" -eq 3 ] || check_fail "--overwrite over a planted symlink: restore exited $RC"
[ ! -e "$OUT_DIR/f" ] || check_fail "--overwrite followed the planted symlink: '$OUT_DIR/f' created"
if [ "$RC" -eq 0 ]; then
    [ -d "$T/d" ] && [ ! -L "$T/d" ] && [ "$(cat "$T/d/f")" = restored ] ||
        check_fail "--overwrite exited 0 but d/f is not restored in a real directory"
fi
nothing_escaped "--overwrite over a planted symlink"

fault_finish
