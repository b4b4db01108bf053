#!/usr/bin/env bash
# Damaged repositories: one byte flipped in each kind of object (pack, index file, snapshot
# object, key file, config), a truncated pack and a deleted pack, each on a fresh copy of
# the same repository (3 snapshots: a full A, an incremental B, an independent full C).
#
# What a user must see (docs/cli.md, DESIGN.md invariants 4, 5, 7):
#  - `verify --read-data` exits 6 and names the damaged object, and for a pack the affected
#    snapshots and files; structural damage (missing, truncated pack, damaged index or
#    snapshot) is found by `verify` without --read-data too;
#  - `restore` of an affected snapshot exits non-zero; for a damaged pack it exits 3, names
#    exactly the affected files and restores every other file byte for byte; it never leaves
#    a file with wrong content;
#  - damage to older objects does not reach an independent snapshot, and the remedy verify
#    recommends (`backup --independent`) works;
#  - a damaged key file or config makes every command fail cleanly (exit 1..127, an error
#    message), never crash.
#
# Under s3 the same damage is done to s3rver's files for the objects (repo_obj_path in
# lib/backend.sh): s3rver serves a file's bytes and takes Content-Length from its size, so a
# flipped byte, a shorter file or a missing one is exactly what a client of the bucket gets.
#
# Environment: PVBACKUP (the binary), PVB_SOURCE_DIR (the source tree), PVB_TEST_STORAGE
# (local, the default, or s3: repositories are s3://pvb-test/NAME on s3rver).
set -euo pipefail
. "$PVB_SOURCE_DIR/tests/integration/lib/faultlib.sh"
fault_init fault-corruption
backend_init

REPO=$(repo_url repo)
SRC="$TMP/src"
REF_A="$TMP/ref-a" # the source as snapshot A saw it
COMMON=(--no-progress)

ls_names() { repo_obj_list "$1"; }

step "build a source tree: ~600 random files, text files, multi-block files"
make_files "$SRC/bin" 600 2000 20000 1
make_text "$SRC/text" 20 1500 2
head -c 1500000 /dev/urandom >"$SRC/big-1"
head -c 1200000 /dev/urandom >"$SRC/big-2"
du -sh "$SRC" | sed 's/^/source: /'

step "snapshot A (full), B (incremental), C (independent full)"
ok init --repo "$REPO"
ok backup --repo "$REPO" "${COMMON[@]}" --volume data --source "$SRC" --kind full --json
A=$(jget 'd["id"]' "$TMP/out")
ls_names "$REPO" >"$TMP/objects-a"
cp -a "$SRC" "$REF_A"
# B changes a few files and adds some; most of its data is A's
make_files "$TMP/changes" 30 100 9000 3
cp -a "$TMP/changes/d00/." "$SRC/bin/d00/"
printf 'appended\n' >>"$SRC/text/t0000.txt"
mkdir -p "$SRC/new" && printf 'new file\n' >"$SRC/new/file.txt"
ok backup --repo "$REPO" "${COMMON[@]}" --volume data --source "$SRC" --json
B=$(jget 'd["id"]' "$TMP/out")
[ "$(jget 'd["kind"]' "$TMP/out")" = incremental ] || fail "B is not incremental"
ls_names "$REPO" >"$TMP/objects-b"
ok backup --repo "$REPO" "${COMMON[@]}" --volume data --source "$SRC" --independent --json
C=$(jget 'd["id"]' "$TMP/out")
ls_names "$REPO" >"$TMP/objects-c"
echo "A=${A:0:12} B=${B:0:12} C=${C:0:12}"
# objects written by each backup
PACKS_A=$(grep '^data/' "$TMP/objects-a")
INDEX_A=$(grep '^index/' "$TMP/objects-a")
[ "$(printf '%s\n' "$INDEX_A" | wc -l)" -eq 1 ] || fail "backup A wrote $(printf '%s\n' "$INDEX_A" | wc -l) index files, expected 1"
BIG_PACK_A=$(for p in $PACKS_A; do echo "$(repo_obj_size "$REPO" "$p") $p"; done |
    sort -k1,1nr -k2,2 | head -n 1 | cut -d' ' -f2)
BIG_PACK_SIZE=$(repo_obj_size "$REPO" "$BIG_PACK_A")
KEYFILE=$(grep '^keys/' "$TMP/objects-a" | head -n 1)
echo "packs of A: $(printf '%s\n' "$PACKS_A" | wc -l), damaging $BIG_PACK_A ($BIG_PACK_SIZE bytes)"

step "the intact repository verifies"
ok verify --repo "$REPO" "${COMMON[@]}" --read-data
ok restore --repo "$REPO" "${COMMON[@]}" "$A" --target "$TMP/check-a"
tree_same "$REF_A" "$TMP/check-a" "intact repository, snapshot A"
rm -rf "$TMP/check-a"

# fresh NAME: a copy of the intact repository, and a catalog and an empty cache of its own
# (on S3 index files and snapshot objects are cached, and a copy keeps the repository's id:
# a machine that never read the repository before, as in a disaster recovery); sets R.
fresh() {
    R=$(repo_copy "$REPO" "$1")
    export PVBACKUP_CATALOG="$TMP/$1.catalog.db"
    export PVBACKUP_CACHE_DIR="$TMP/$1.cache"
    rm -f "$PVBACKUP_CATALOG"
}

# verify_names WHAT OBJECT [--read-data]: verify exits 6, names OBJECT in its text output and
# in --json problems[].object.
verify_names() {
    local what=$1 object=$2
    shift 2
    expect_rc 6 "$what: verify${*:+ $*}" verify --repo "$R" "${COMMON[@]}" "$@"
    any_has "$object" "$what: verify${*:+ $*} names the damaged object"
    expect_rc 6 "$what: verify --json${*:+ $*}" verify --repo "$R" "${COMMON[@]}" --json "$@"
    if [ "$RC" -eq 6 ]; then
        cp "$TMP/out" "$TMP/verify.json"
        [ "$(jget "d['ok']" "$TMP/verify.json")" = False ] || check_fail "$what: verify --json says ok"
        jget "any(p['object'] == '$object' for p in d['problems'])" "$TMP/verify.json" | grep -q True ||
            check_fail "$what: verify --json has no problem whose object is '$object'"
    fi
}

# restore_check WHAT SNAP REF: restore SNAP into a new target; whatever is written must be
# the content of REF. Sets RESTORE_RC and RT (the target).
restore_check() {
    local what=$1 snap=$2 ref=$3
    RT="$TMP/restore-$RANDOM$RANDOM"
    run restore --repo "$R" "${COMMON[@]}" "$snap" --target "$RT" --json
    RESTORE_RC=$RC
    cp "$TMP/out" "$TMP/restore.json"
    cp "$TMP/err" "$TMP/restore.err"
    if [ -d "$RT" ]; then
        files_match_or_absent "$ref" "$RT" "$what: restore of ${snap:0:12}"
    fi
}

# prove_intact SNAP REF: show that a file the full restore gave up on (in restore-failed, not
# in verify-files) is intact: restored alone, it comes back identical.
prove_intact() {
    local intact
    intact=$(comm -23 "$TMP/restore-failed" "$TMP/verify-files" | head -n 1)
    [ -n "$intact" ] || return 0
    rm -rf "$TMP/alone"
    run restore --repo "$R" "${COMMON[@]}" "$1" --target "$TMP/alone" --include "$intact"
    if [ "$RC" -eq 0 ] && cmp -s "$2/$intact" "$TMP/alone/$intact"; then
        echo "  evidence: '$intact' restores identically when restored alone (exit 0)"
    fi
    return 0
}

# check_damaged_pack WHAT OFFSET: on a fresh copy, flip the byte at OFFSET of the largest
# pack of A; verify --read-data names the pack, A (and B when it shares the damaged data) and
# their files, never C; restore of each affected snapshot exits 3, fails exactly the files
# verify names and restores every other file byte for byte.
check_damaged_pack() {
    local what=$1 offset=$2 snap ref total expected n f rel
    fresh "pack-flip-$offset"
    flip_byte "$(repo_obj_path "$R" "$BIG_PACK_A")" "$offset"
    verify_names "$what" "$BIG_PACK_A" --read-data
    # the affected snapshots and files, as verify sees them
    python3 - "$TMP/verify.json" "$BIG_PACK_A" >"$TMP/affected" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
for p in d["problems"]:
    if p["object"] == sys.argv[2]:
        for s in p["snapshots"]:
            print("snap", s)
        for f in p["files"]:
            print("file", f)
        if len(p["files"]) >= 100:
            print("capped")
EOF
    if grep -q "^snap $C" "$TMP/affected"; then
        check_fail "$what: verify names the independent snapshot C as affected"
    fi
    grep -q "^snap $A" "$TMP/affected" || check_fail "$what: verify does not name snapshot A (${A:0:12}) as affected"
    expect_rc 6 "$what: verify --read-data (text)" verify --repo "$R" "${COMMON[@]}" --read-data
    any_has "affected snapshots:" "$what: verify text output"
    any_has "${A:0:12}" "$what: verify text output names snapshot A"
    if ! grep -q "^file ${A:0:12}:" "$TMP/affected"; then
        # the flip hit a frame of A's file list, not file data: A cannot be listed at all
        note "$what: the flipped byte lies in a file list frame; A must fail as a whole"
        restore_check "$what (file list)" "$A" "$REF_A"
        [ "$RESTORE_RC" -eq 6 ] || check_fail "$what: restore of A with a damaged file list exited $RESTORE_RC, expected 6"
        return 0
    fi
    any_has "affected file: ${A:0:12}:" "$what: verify text output names affected files"
    if grep -q '^capped' "$TMP/affected"; then
        note "$what: verify lists 100 files (its cap): comparing only what it lists"
    fi
    for snap in "$A" "$B"; do
        ref=$SRC
        [ "$snap" = "$A" ] && ref=$REF_A
        sed -n "s/^file ${snap:0:12}://p" "$TMP/affected" | sort -u >"$TMP/verify-files"
        if [ ! -s "$TMP/verify-files" ]; then
            grep -q '^capped' "$TMP/affected" && continue
            note "$what: snapshot ${snap:0:12} has no file in the damaged frame; its restore must be whole"
            restore_check "$what, unaffected snapshot" "$snap" "$ref"
            [ "$RESTORE_RC" -eq 0 ] || check_fail "$what: restore of unaffected ${snap:0:12} exited $RESTORE_RC"
            tree_same "$ref" "$RT" "$what, unaffected snapshot ${snap:0:12}"
            continue
        fi
        restore_check "$what" "$snap" "$ref"
        [ "$RESTORE_RC" -eq 3 ] || check_fail "$what: restore of ${snap:0:12} exited $RESTORE_RC, expected 3 (partial)"
        python3 -c 'import json, sys
for f in json.load(open(sys.argv[1]))["failed"]:
    print(f.split(": ", 1)[0])' "$TMP/restore.json" | sort -u >"$TMP/restore-failed"
        echo "  restore ${snap:0:12}: $(wc -l <"$TMP/restore-failed") file(s) failed, verify named $(wc -l <"$TMP/verify-files")"
        [ -s "$TMP/restore-failed" ] || check_fail "$what: restore of ${snap:0:12} --json lists no failed file"
        # every file restore gave up on is named on stderr and absent from the target
        while IFS= read -r f; do
            grep -qF -- "'$f'" "$TMP/restore.err" || check_fail "$what: failed file '$f' is not named on stderr"
            [ ! -e "$RT/$f" ] || check_fail "$what: failed file '$f' was left in the target"
        done <"$TMP/restore-failed"
        # every damaged file is among the failed ones
        missing=$(comm -13 "$TMP/restore-failed" "$TMP/verify-files" | head -n 5 | tr '\n' ' ')
        [ -z "$missing" ] || check_fail "$what: restore of ${snap:0:12} did not report damaged file(s) $missing"
        grep -q '^capped' "$TMP/affected" && continue
        # "A file that cannot be read or verified fails alone": restore gives up on exactly the
        # files verify found damaged, not on intact files stored near the damaged frame
        if ! cmp -s "$TMP/restore-failed" "$TMP/verify-files"; then
            check_fail "$what: restore of ${snap:0:12} failed $(wc -l <"$TMP/restore-failed") file(s) but verify found only $(wc -l <"$TMP/verify-files") damaged; intact files not restored: $(comm -23 "$TMP/restore-failed" "$TMP/verify-files" | head -n 5 | tr '\n' ' ')"
            prove_intact "$snap" "$ref"
        fi
        # everything else is there and identical (files_match_or_absent checked the content)
        total=$(cd "$ref" && find . -type f | wc -l)
        expected=$((total - $(wc -l <"$TMP/verify-files")))
        [ "$MATCHED" -eq "$expected" ] || check_fail "$what: restore of ${snap:0:12} wrote $MATCHED files, expected $expected ($total minus the damaged ones)"
        # and a few unaffected files, byte for byte
        n=0
        while IFS= read -r f && [ "$n" -lt 5 ]; do
            rel=${f#./}
            grep -qxF -- "$rel" "$TMP/restore-failed" && continue
            cmp -s "$ref/$rel" "$RT/$rel" || check_fail "$what: unaffected '$rel' not restored identically"
            n=$((n + 1))
        done < <(cd "$ref" && find . -type f | sort)
    done
    return 0
}

# ---------------------------------------------------------------------------------------
step "1. one byte flipped in the middle of a pack"
check_damaged_pack "damaged pack (middle)" $((BIG_PACK_SIZE / 2))
restore_check "damaged pack, independent snapshot" "$C" "$SRC"
[ "$RESTORE_RC" -eq 0 ] || check_fail "damaged pack: restore of the independent snapshot C exited $RESTORE_RC, expected 0"
tree_same "$SRC" "$RT" "damaged pack: independent snapshot C"
expect_rc 0 "damaged pack: the recommended backup --independent" \
    backup --repo "$R" "${COMMON[@]}" --volume data --source "$SRC" --independent
restore_check "damaged pack, new independent snapshot" latest "$SRC"
[ "$RESTORE_RC" -eq 0 ] || check_fail "damaged pack: restore of a new independent snapshot exited $RESTORE_RC"
tree_same "$SRC" "$RT" "damaged pack: new independent snapshot"

step "1b. one byte flipped at a quarter, then at three quarters of the pack"
# The restore fetches runs of adjacent frames with one ranged read; damage to one frame must
# still fail only the files that have data in that frame. (Whether the damaged frame shares a
# read with intact ones depends on the layout: three places make it likely that one does.)
check_damaged_pack "damaged pack (quarter)" $((BIG_PACK_SIZE / 4))
check_damaged_pack "damaged pack (three quarters)" $((BIG_PACK_SIZE * 3 / 4))

# ---------------------------------------------------------------------------------------
step "2. a pack truncated by 100 bytes (its header cut)"
fresh pack-trunc
truncate -s -100 "$(repo_obj_path "$R" "$BIG_PACK_A")"
verify_names "pack truncated by 100 bytes (structure)" "$BIG_PACK_A"
verify_names "pack truncated by 100 bytes" "$BIG_PACK_A" --read-data
restore_check "pack truncated by 100 bytes" "$A" "$REF_A"

step "2b. a pack truncated to half its size"
fresh pack-half
truncate -s $((BIG_PACK_SIZE / 2)) "$(repo_obj_path "$R" "$BIG_PACK_A")"
verify_names "pack truncated to half" "$BIG_PACK_A"
any_has "truncated" "pack truncated to half: verify says so"
restore_check "pack truncated to half" "$A" "$REF_A"
[ "$RESTORE_RC" -ne 0 ] || check_fail "pack truncated to half: restore of A exited 0"
grep -q 'pvbackup: error:\|pvbackup: warning:' "$TMP/restore.err" || check_fail "pack truncated to half: restore says nothing"
restore_check "pack truncated, independent snapshot" "$C" "$SRC"
[ "$RESTORE_RC" -eq 0 ] || check_fail "pack truncated: restore of the independent C exited $RESTORE_RC"

# ---------------------------------------------------------------------------------------
step "3. a deleted pack"
fresh pack-gone
repo_obj_delete "$R" "$BIG_PACK_A"
verify_names "deleted pack" "$BIG_PACK_A"
any_has "missing" "deleted pack: verify says the pack is missing"
restore_check "deleted pack" "$A" "$REF_A"
[ "$RESTORE_RC" -ne 0 ] || check_fail "deleted pack: restore of A exited 0"
restore_check "deleted pack, independent snapshot" "$C" "$SRC"
[ "$RESTORE_RC" -eq 0 ] || check_fail "deleted pack: restore of the independent C exited $RESTORE_RC"
tree_same "$SRC" "$RT" "deleted pack: independent snapshot C"

# ---------------------------------------------------------------------------------------
step "4. one byte flipped in the index file written by backup A"
fresh index-flip
flip_byte "$(repo_obj_path "$R" "$INDEX_A")"
verify_names "damaged index file" "$INDEX_A"
verify_names "damaged index file" "$INDEX_A" --read-data
restore_check "damaged index file" "$A" "$REF_A"
[ "$RESTORE_RC" -ne 0 ] || check_fail "damaged index file: restore of A exited 0"
grep -q 'pvbackup: error:' "$TMP/restore.err" || check_fail "damaged index file: restore of A printed no error"
# C is independent: its blocks and file list are in its own index file
restore_check "damaged index file, independent snapshot" "$C" "$SRC"
if [ "$RESTORE_RC" -ne 0 ]; then
    check_fail "damaged index file of A: restore of the independent snapshot C exited $RESTORE_RC, expected 0 ($(grep -m1 'error:' "$TMP/restore.err"))"
else
    tree_same "$SRC" "$RT" "damaged index file: independent snapshot C"
fi
expect_rc 0 "damaged index file: the recommended backup --independent" \
    backup --repo "$R" "${COMMON[@]}" --volume data --source "$SRC" --independent

if is_s3; then
    step "4b. the same damage on a machine whose cache has good copies (S3)"
    fresh index-flip-cached
    ok restore --repo "$R" "${COMMON[@]}" "$A" --target "$TMP/warm-cache"
    rm -rf "$TMP/warm-cache"
    flip_byte "$(repo_obj_path "$R" "$INDEX_A")"
    # verify reads the repository, never the copies
    verify_names "damaged index file, good cached copy" "$INDEX_A"
    # a restore may use the copy: its bytes still hash to the object's name
    restore_check "damaged index file, good cached copy" "$A" "$REF_A"
    [ "$RESTORE_RC" -eq 0 ] || check_fail "damaged index file, good cached copy: restore exited $RESTORE_RC"
    tree_same "$REF_A" "$RT" "damaged index file, good cached copy: snapshot A"
fi

# ---------------------------------------------------------------------------------------
step "5. one byte flipped in snapshot object A"
fresh snap-flip
flip_byte "$(repo_obj_path "$R" "snapshots/$A")"
verify_names "damaged snapshot object" "snapshots/$A"
verify_names "damaged snapshot object" "snapshots/$A" --read-data
run snapshots --repo "$R" "${COMMON[@]}"
[ "$RC" -eq 6 ] || check_fail "damaged snapshot object: snapshots exited $RC, expected 6"
err_has "${A:0:12}" "damaged snapshot object: snapshots names it"
out_has "${B:0:12}" "damaged snapshot object: snapshots still lists B"
out_has "${C:0:12}" "damaged snapshot object: snapshots still lists C"
restore_check "damaged snapshot object" "$A" "$REF_A"
[ "$RESTORE_RC" -eq 6 ] || check_fail "damaged snapshot object: restore of A exited $RESTORE_RC, expected 6"
[ ! -e "$RT" ] || [ -z "$(ls -A "$RT")" ] || check_fail "damaged snapshot object: restore of A wrote files"
# restore never replays a chain: B (whose parent is A) restores by itself
restore_check "damaged snapshot object, its child" "$B" "$SRC"
[ "$RESTORE_RC" -eq 0 ] || check_fail "damaged snapshot object A: restore of B exited $RESTORE_RC, expected 0"
tree_same "$SRC" "$RT" "damaged snapshot object A: snapshot B"
expect_rc 0 "damaged snapshot object: the recommended backup --independent" \
    backup --repo "$R" "${COMMON[@]}" --volume data --source "$SRC" --independent
expect_rc 0 "damaged snapshot object of volume 'data': a backup of another volume" \
    backup --repo "$R" "${COMMON[@]}" --volume other --source "$SRC/text"

# ---------------------------------------------------------------------------------------
# sweep_flips OBJECT FIELDS...: flip (xor 0x01) bytes of OBJECT of $R one at a time (every
# second byte of the JSON values named by FIELDS, every fifth byte elsewhere) and run
# `snapshots`: never a crash; inside the FIELDS values, always an error.
sweep_flips() {
    local object=$1 file
    file=$(repo_obj_path "$R" "$1")
    shift
    if ! python3 - "$PVBACKUP" "$R" "$file" "$@" >"$TMP/sweep" 2>&1 <<'EOF'; then
import re, subprocess, sys
binary, repo, path, fields = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
orig = open(path, "rb").read()
text = orig.decode()
critical = set()
for field in fields:
    m = re.search(r'"%s"\s*:\s*"?([^",}\s]*)' % re.escape(field), text)
    if m:
        critical.update(range(m.start(1), m.end(1)))
problems = []
codes = {}
try:
    for pos in range(len(orig)):
        if pos % (2 if pos in critical else 5) != 0:
            continue
        b = bytearray(orig)
        b[pos] ^= 1
        open(path, "wb").write(b)
        rc = subprocess.run([binary, "snapshots", "--repo", repo], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        codes[rc] = codes.get(rc, 0) + 1
        if rc < 0 or rc >= 128:
            problems.append("byte %d flipped: snapshots died (%d)" % (pos, rc))
        elif rc == 0 and pos in critical:
            problems.append("byte %d flipped (in a key field): accepted silently" % pos)
finally:
    open(path, "wb").write(orig)
print("swept %d of %d offsets, exit codes %s" % (sum(codes.values()), len(orig), dict(sorted(codes.items()))))
for p in problems:
    print(p)
sys.exit(1 if problems else 0)
EOF
        check_fail "$object: $(tr '\n' ';' <"$TMP/sweep")"
    fi
    sed "s|^|$object: |" "$TMP/sweep"
}

# every_command_fails WHAT OBJECT: every command fails cleanly and verify names OBJECT.
every_command_fails() {
    local what=$1 object=$2
    expect_error "$what: snapshots" snapshots --repo "$R" "${COMMON[@]}"
    expect_error "$what: ls" ls --repo "$R" "${COMMON[@]}" "$B"
    expect_error "$what: restore" restore --repo "$R" "${COMMON[@]}" "$B" --target "$TMP/never-$RANDOM"
    expect_error "$what: backup" backup --repo "$R" "${COMMON[@]}" --volume data --source "$SRC"
    expect_error "$what: verify" verify --repo "$R" "${COMMON[@]}"
    expect_rc 6 "$what: verify --read-data" verify --repo "$R" "${COMMON[@]}" --read-data
    any_has "$object" "$what: verify names the damaged object"
    # nothing was written by the failed backup
    [ "$(repo_obj_list "$R" snapshots | wc -l)" -eq 3 ] || check_fail "$what: a snapshot appeared"
}

step "6. one byte flipped in the middle of the key file"
fresh key-flip
flip_byte "$(repo_obj_path "$R" "$KEYFILE")"
every_command_fails "damaged key file" "$KEYFILE"
cp "$(repo_obj_path "$REPO" "$KEYFILE")" "$(repo_obj_path "$R" "$KEYFILE")"
sweep_flips "$KEYFILE" salt data kdf n r p version

step "7. one byte flipped in the middle of the config"
fresh config-flip
flip_byte "$(repo_obj_path "$R" config)"
every_command_fails "damaged config" "config"
cp "$(repo_obj_path "$REPO" config)" "$(repo_obj_path "$R" config)"
sweep_flips config id encryption format version

# ---------------------------------------------------------------------------------------
step "8. (no damage) an incremental whose parent is the independent snapshot C"
# The hourly incremental after a daily independent full: it reuses C's blocks, whose ids are
# salted with C's salt. Its restore and verify --read-data must be clean.
fresh indep-child
printf 'after the independent full\n' >"$SRC/new/after-c.txt"
expect_rc 0 "incremental after an independent full" \
    backup --repo "$R" "${COMMON[@]}" --volume data --source "$SRC" --json
if [ "$RC" -eq 0 ]; then
    D=$(jget 'd["id"]' "$TMP/out")
    [ "$(jget 'd["parent"]' "$TMP/out")" = "$C" ] || note "D's parent is not C"
    restore_check "incremental after an independent full" "$D" "$SRC"
    [ "$RESTORE_RC" -eq 0 ] || check_fail "incremental ${D:0:12} after the independent C: restore exited $RESTORE_RC, expected 0 ($(grep -m1 'error:' "$TMP/restore.err"))"
    tree_same "$SRC" "$RT" "incremental after an independent full"
    expect_rc 0 "incremental after an independent full: verify --read-data" \
        verify --repo "$R" "${COMMON[@]}" --read-data
    restore_check "independent C, with a child" "$C" "$SRC"
    [ "$RESTORE_RC" -eq 0 ] || check_fail "independent C: restore exited $RESTORE_RC once it has an incremental child"
fi
rm -f "$SRC/new/after-c.txt"

fault_finish
