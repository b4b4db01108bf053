#!/usr/bin/env bash
# pvbackup benchmark against restic and borg on the shared generated dataset.
#
# Run by hand from anywhere (not part of ctest):
#     tests/bench/bench.sh                      # 1 GiB, 3 runs per tool
#     SIZE=64 RUNS=1 tests/bench/bench.sh       # quick smoke run
#
# Per tool and run, on a fresh `cp -a` of the pristine dataset: init an empty repository,
# full backup, no-change backup, mutate_dataset.py --round 1, incremental backup, restore
# of the last snapshot into an empty directory, and a manifest.py comparison of the
# restored tree with the mutated volume (a mismatch is a hard failure). Each step's wall
# time (monotonic clock) and peak RSS (/usr/bin/time %M) is recorded, as are repository
# sizes (du -sb). Prints a table of medians with ratios and targets and writes the raw
# numbers to $WORKDIR/bench-results.json. See docs/performance.md.
#
# Environment:
#   SIZE=1024        dataset size in MiB (gen_dataset.py --size-mib), seed 1
#   RUNS=3           runs per tool
#   TOOLS="pvbackup restic borg"   subset to measure
#   WORKDIR=/var/tmp/pvbackup-bench   scratch directory (dataset, runs, results)
#   DATASETS=<repo>/../shared/datasets   where gen_dataset.py & co live
#   PVBACKUP=<path>  pvbackup binary (default: build <repo>/build-bench in Release)
#   KEEP=1           keep each run's repositories under $WORKDIR/kept/
#   WARM=0           drop page caches before every timed step (needs root)
#   STEP_TIMEOUT=3600   seconds after which a step is killed and the benchmark fails
#   NO_INSTALL=1     never apt-get install missing peers
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

SIZE=${SIZE:-1024}
RUNS=${RUNS:-3}
TOOLS=${TOOLS:-"pvbackup restic borg"}
WORKDIR=${WORKDIR:-/var/tmp/pvbackup-bench}
DATASETS=${DATASETS:-$root/../shared/datasets}
KEEP=${KEEP:-0}
WARM=${WARM:-1}
STEP_TIMEOUT=${STEP_TIMEOUT:-3600}
SEED=1
# manifest.py sha256 of the 1024 MiB, seed 1 tree, from the datasets README.
KNOWN_1024_SHA=4623d5555ec0f399acf192e20899f0d6b42268ecd226a7d57c9a7d8f776c5170

helper="$here/bench_helper.py"
PASSWORD=bench-password-not-secret

die() { echo "bench: error: $*" >&2; exit 1; }
note() { echo "bench: $*" >&2; }

# ------------------------------------------------------------------ arguments and checks
[[ "$SIZE" =~ ^[0-9]+$ && "$SIZE" -ge 1 ]] || die "SIZE must be a positive integer (MiB)"
[[ "$RUNS" =~ ^[0-9]+$ && "$RUNS" -ge 1 && "$RUNS" -le 50 ]] || die "RUNS must be 1..50"
[[ "$STEP_TIMEOUT" =~ ^[0-9]+$ ]] || die "STEP_TIMEOUT must be a number of seconds"
for t in $TOOLS; do
    case $t in pvbackup|restic|borg) ;; *) die "unknown tool '$t' in TOOLS" ;; esac
done
[[ -f "$DATASETS/gen_dataset.py" ]] || die "no gen_dataset.py in '$DATASETS' (set DATASETS)"
command -v python3 >/dev/null || die "python3 is required"

want_tool() { [[ " $TOOLS " == *" $1 "* ]]; }

# ------------------------------------------------------------------ peers and tools
install_pkgs=()
want_tool restic && ! command -v restic >/dev/null && install_pkgs+=(restic)
want_tool borg && ! command -v borg >/dev/null && install_pkgs+=(borgbackup)
[[ -x /usr/bin/time ]] || install_pkgs+=(time)
command -v timeout >/dev/null || die "coreutils 'timeout' is required"
if ((${#install_pkgs[@]})); then
    [[ "${NO_INSTALL:-0}" == 1 ]] && die "missing: ${install_pkgs[*]} (NO_INSTALL=1)"
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    note "installing ${install_pkgs[*]}"
    "${sudo[@]}" apt-get install -y "${install_pkgs[@]}" >&2 ||
        die "apt-get install ${install_pkgs[*]} failed (try apt-get update first)"
fi

pvb_built=0
if want_tool pvbackup; then
    if [[ -z "${PVBACKUP:-}" ]]; then
        note "building pvbackup (Release) in $root/build-bench"
        cmake -S "$root" -B "$root/build-bench" -DCMAKE_BUILD_TYPE=Release >/dev/null ||
            die "cmake configure failed"
        cmake --build "$root/build-bench" -j"$(nproc)" --target pvbackup >/dev/null ||
            die "building pvbackup failed; set PVBACKUP=/path/to/pvbackup to measure a binary"
        PVBACKUP=$root/build-bench/pvbackup
        pvb_built=1
    fi
    [[ -x "$PVBACKUP" ]] || die "pvbackup binary '$PVBACKUP' is not executable"
fi

# ------------------------------------------------------------------ scratch space
mkdir -p "$WORKDIR"
WORKDIR=$(cd "$WORKDIR" && pwd)
exec 9>"$WORKDIR/.lock"
flock -n 9 || die "another benchmark is running in '$WORKDIR'"

run_dir=$WORKDIR/run          # one (run, tool) at a time: vol, restored, repo, caches
trash=$WORKDIR/trash          # finished runs, deleted only at the end (see below)
logs=$WORKDIR/logs
results_jsonl=$WORKDIR/bench-results.jsonl
results=$WORKDIR/bench-results.json
meta=$WORKDIR/bench-meta.json
base=$WORKDIR/base-${SIZE}m-seed$SEED
base_manifest=$base.manifest

cleanup() {
    local rc=$?
    if [[ -d "$run_dir" && ( $rc -eq 0 || -z "${keep_run_on_fail:-}" ) ]]; then
        chmod -R u+rwX "$run_dir" 2>/dev/null || true
        rm -rf "$run_dir"
    fi
    if [[ -n "${trash:-}" && -d "$trash" ]]; then
        chmod -R u+rwX "$trash" 2>/dev/null || true
        rm -rf "$trash"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

chmod -R u+rwX "$run_dir" "$trash" 2>/dev/null || true
deleted_some=0
[[ -e "$run_dir" || -e "$trash" ]] && deleted_some=1
rm -rf "$run_dir" "$trash" "$logs" "$results_jsonl"
mkdir -p "$logs" "$trash"
# Deleting tens of thousands of files makes the next creations slow for a minute on ext4
# without a journal (its allocator skips inodes whose deletion time is recent, reading their
# inode blocks one by one): a measurement taken then says more about the previous run's
# cleanup than about the tool. So runs are moved aside, not deleted, until the end, and after
# deleting an earlier benchmark's (or anything's) files the script lets them settle.
if [[ "${SETTLE:-70}" -gt 0 ]]; then
    [[ "$deleted_some" == 1 ]] && note "removed the leftovers of an earlier run"
    note "letting recent deletions settle (${SETTLE:-70} s; SETTLE=0 skips)"
    sync
    sleep "${SETTLE:-70}"
fi

# Measure one binary throughout, even if the build directory is rebuilt meanwhile.
pvb_sha=
if want_tool pvbackup; then
    if [[ ! "$PVBACKUP" -ef "$WORKDIR/pvbackup.bin" ]]; then
        cp "$PVBACKUP" "$WORKDIR/pvbackup.bin"
        PVBACKUP=$WORKDIR/pvbackup.bin
    fi
    pvb_sha=$(sha256sum <"$PVBACKUP" | cut -d' ' -f1)
fi

# Disk space: base + volume copy + restored copy + one repository (about the dataset
# size at most) + kept repositories.
need_mib=$((SIZE * 4 + 256))
[[ -d "$base" ]] && need_mib=$((need_mib - SIZE))
[[ "$KEEP" == 1 ]] && need_mib=$((need_mib + SIZE * RUNS * $(wc -w <<<"$TOOLS")))
avail_mib=$(($(df -Pk "$WORKDIR" | awk 'NR==2 {print $4}') / 1024))
((avail_mib >= need_mib)) || die "need about $need_mib MiB free in '$WORKDIR', have $avail_mib"

# ------------------------------------------------------------------ dataset
manifest() { python3 "$DATASETS/manifest.py" "$1"; }

dataset_ok=0
if [[ -d "$base" && -s "$base_manifest" ]]; then
    note "checking the existing dataset $base"
    if cmp -s "$base_manifest" <(manifest "$base"); then
        dataset_ok=1
    else
        note "dataset $base does not match its manifest: regenerating"
    fi
fi
if ((!dataset_ok)); then
    chmod -R u+rwX "$base" 2>/dev/null || true
    rm -rf "$base" "$base_manifest"
    note "generating the dataset ($SIZE MiB, seed $SEED) in $base"
    python3 "$DATASETS/gen_dataset.py" "$base" --size-mib "$SIZE" --seed "$SEED" -q >&2
    manifest "$base" >"$base_manifest.tmp"
    mv "$base_manifest.tmp" "$base_manifest"
fi
base_sha=$(sha256sum <"$base_manifest" | cut -d' ' -f1)
if [[ "$SIZE" == 1024 && "$base_sha" != "$KNOWN_1024_SHA" ]]; then
    note "warning: dataset manifest sha256 $base_sha differs from the README's (python version?)"
fi
dataset_bytes=$(python3 "$helper" tree-bytes "$base_manifest")

# ------------------------------------------------------------------ meta data
ver_restic='' ver_borg='' ver_pvb=''
if want_tool restic; then ver_restic=$(restic version 2>/dev/null | head -1); fi
if want_tool borg; then ver_borg=$(borg --version 2>/dev/null | head -1); fi
if want_tool pvbackup; then ver_pvb=$("$PVBACKUP" version 2>/dev/null | head -1); fi
git_rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
git_modified=$(git -C "$root" --no-optional-locks status --porcelain --untracked-files=no \
    2>/dev/null || true)
git_dirty=$(grep -c . <<<"$git_modified" || true)
export SIZE RUNS TOOLS WARM dataset_bytes base_sha ver_restic ver_borg ver_pvb git_rev git_dirty \
    git_modified pvb_sha pvb_built
python3 - "$meta" <<'EOF'
import json, os, platform, subprocess, sys, time
def cpu():
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()
def mem():
    with open("/proc/meminfo") as fh:
        return int(fh.readline().split()[1]) * 1024
e = os.environ
meta = {
    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "size_mib": int(e["SIZE"]), "runs": int(e["RUNS"]), "tools": e["TOOLS"].split(),
    "warm": e["WARM"] != "0", "seed": 1,
    "dataset_bytes": int(e["dataset_bytes"]), "dataset_manifest_sha256": e["base_sha"],
    "nproc": os.cpu_count(), "cpu": cpu(), "mem_bytes": mem(),
    "kernel": platform.release(), "python": platform.python_version(),
    "versions": {"pvbackup": e["ver_pvb"], "restic": e["ver_restic"], "borg": e["ver_borg"]},
    "pvbackup_sha256": e["pvb_sha"],
    # With PVBACKUP=... the git fields describe the tree, not necessarily that binary.
    "pvbackup_built_from_tree": e["pvb_built"] == "1",
    "pvbackup_git_modified": [ln[3:] for ln in e["git_modified"].splitlines() if ln.strip()],
    "pvbackup_git": e["git_rev"] + ("+dirty(%s files)" % e["git_dirty"]
                                    if e["git_dirty"] != "0" else ""),
    "settings": {
        "pvbackup": "init (aes-256-gcm, default); backup --kind full, then default kind "
                    "(incremental); default threads",
        "restic": "init --repository-version 2 (compression auto); backup VOL; restore latest",
        "borg": "init -e repokey; create --compression zstd,3 (default chunker, files cache "
                "ctime,size,inode); extract",
    },
}
with open(sys.argv[1], "w") as fh:
    json.dump(meta, fh, indent=2)
EOF

# ------------------------------------------------------------------ steps
drop_warned=0
prepare_step() {
    sync
    if [[ "$WARM" == 0 ]]; then
        if ! (echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then
            ((drop_warned)) || note "warning: cannot drop page caches (not root?): caches stay warm"
            drop_warned=1
        fi
    fi
}

# step NAME [--cwd DIR] -- CMD...: timed, logged; any non-zero exit is a hard failure.
step() {
    local name=$1 cwd=()
    shift
    if [[ "$1" == --cwd ]]; then cwd=(--cwd "$2"); shift 2; fi
    [[ "$1" == -- ]] && shift
    prepare_step
    local rc=0
    python3 "$helper" measure --out "$cur_logs/$name.json" --stdout "$cur_logs/$name.out" \
        --stderr "$cur_logs/$name.err" --timeout "$STEP_TIMEOUT" "${cwd[@]}" -- "$@" || rc=$?
    if ((rc != 0)); then
        {
            echo "bench: FAILED: $cur_tool run $cur_run step '$name' exited $rc"
            ((rc == 124)) && echo "bench: (killed after STEP_TIMEOUT=$STEP_TIMEOUT s)"
            echo "bench: command: $*"
            echo "bench: --- stdout (last 20 lines, $cur_logs/$name.out)"
            tail -n 20 "$cur_logs/$name.out"
            echo "bench: --- stderr (last 20 lines, $cur_logs/$name.err)"
            tail -n 20 "$cur_logs/$name.err"
        } >&2
        exit 1
    fi
    python3 - "$name" "$cur_logs/$name.json" >&2 <<'EOF'
import json, sys
r = json.load(open(sys.argv[2]))
cpu = (r["user_s"] or 0) + (r["sys_s"] or 0)
print("  %-8s %8.3f s  %7.1f MiB RSS  %7.2f s CPU  load %.2f" % (
    sys.argv[1], r["wall_s"], (r["rss_kib"] or 0) / 1024, cpu, r["loadavg_before"] or 0))
EOF
}

repo_size() { du -sb "$1" | cut -f1; }

# Tool adapters. Each run uses its own repository and its own caches under $run_dir.
tool_env() {
    case $cur_tool in
    pvbackup)
        export PVBACKUP_PASSWORD=$PASSWORD PVBACKUP_CATALOG=$run_dir/cache/catalog.db ;;
    restic)
        export RESTIC_PASSWORD=$PASSWORD RESTIC_CACHE_DIR=$run_dir/cache ;;
    borg)
        export BORG_PASSPHRASE=$PASSWORD BORG_BASE_DIR=$run_dir/cache \
            BORG_DISPLAY_PASSPHRASE=n ;;
    esac
}

tool_init() {
    case $cur_tool in
    pvbackup) step init -- "$PVBACKUP" init --repo "$repo" ;;
    restic) step init -- restic -r "$repo" init --repository-version 2 ;;
    borg) step init -- borg init -e repokey "$repo" ;;
    esac
}

tool_backup() { # NAME
    local kind=()
    [[ "$1" == full ]] && kind=(--kind full)
    case $cur_tool in
    pvbackup) step "$1" -- "$PVBACKUP" backup --repo "$repo" --volume vol --source "$vol" \
        "${kind[@]}" --json --no-progress ;;
    restic) step "$1" -- restic -r "$repo" backup --json "$vol" ;;
    # Relative path from the run directory: the archive holds vol/..., extracted as such.
    borg) step "$1" --cwd "$run_dir" -- borg create --json --compression zstd,3 \
        "$repo::$1" vol ;;
    esac
}

tool_restore() {
    case $cur_tool in
    pvbackup) step restore -- "$PVBACKUP" restore --repo "$repo" latest --volume vol \
        --target "$restored" --json --no-progress ;;
    restic) step restore -- restic -r "$repo" restore latest --target "$restored" ;;
    borg) step restore --cwd "$restored" -- borg extract "$repo::incr" ;;
    esac
}

# Where the volume's root ends up below the restore target.
restored_root() {
    case $cur_tool in
    pvbackup) echo "$restored" ;;
    restic) echo "$restored$vol" ;;   # restic restores the absolute path
    borg) echo "$restored/vol" ;;     # borg extracts the archived relative path
    esac
}

# ------------------------------------------------------------------ the runs
vol=$run_dir/vol
restored=$run_dir/restored
read -ra tools_list <<<"$TOOLS"
note "dataset: $dataset_bytes bytes; tools: ${tools_list[*]}; runs: $RUNS; warm caches: $WARM"
load1=$(cut -d' ' -f1 /proc/loadavg)
if python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) > 0.5 else 1)' "$load1"; then
    note "warning: 1-min load average is $load1 before starting: other work on this" \
        "machine will make the figures noisy (see max load in the table)"
fi
for ((cur_run = 1; cur_run <= RUNS; cur_run++)); do
    for cur_tool in "${tools_list[@]}"; do
        note "run $cur_run/$RUNS: $cur_tool"
        cur_logs=$logs/run$cur_run-$cur_tool
        mkdir -p "$cur_logs"
        chmod -R u+rwX "$run_dir" 2>/dev/null || true
        rm -rf "$run_dir"
        mkdir -p "$run_dir/cache" "$restored"
        repo=$run_dir/repo
        cp -a "$base" "$vol"
        tool_env
        sizes=$cur_logs/sizes
        : >"$sizes"

        tool_init
        echo "repo_after_init=$(repo_size "$repo")" >>"$sizes"
        tool_backup full
        echo "repo_after_full=$(repo_size "$repo")" >>"$sizes"
        tool_backup nochange
        echo "repo_after_nochange=$(repo_size "$repo")" >>"$sizes"
        python3 "$DATASETS/mutate_dataset.py" "$vol" --round 1 >"$cur_logs/mutate.out"
        tool_backup incr
        echo "repo_after_incr=$(repo_size "$repo")" >>"$sizes"
        echo "cache_after_incr=$(du -sb "$run_dir/cache" | cut -f1)" >>"$sizes"
        tool_restore

        # Verify: the restored tree must equal the mutated volume, byte for byte.
        manifest "$vol" >"$cur_logs/vol.manifest"
        rroot=$(restored_root)
        if [[ ! -d "$rroot" ]]; then
            keep_run_on_fail=1
            die "$cur_tool run $cur_run: restore produced no '$rroot' (kept $run_dir)"
        fi
        manifest "$rroot" >"$cur_logs/restored.manifest"
        if ! diff "$cur_logs/vol.manifest" "$cur_logs/restored.manifest" \
            >"$cur_logs/verify.diff"; then
            keep_run_on_fail=1
            {
                echo "bench: FAILED: $cur_tool run $cur_run: restored tree differs from the volume"
                echo "bench: diff <(manifest.py $vol) <(manifest.py $rroot), first 40 lines:"
                head -n 40 "$cur_logs/verify.diff"
                echo "bench: ($(wc -l <"$cur_logs/verify.diff") diff lines in $cur_logs/verify.diff;" \
                    "volume, restore and repository kept in $run_dir)"
            } >&2
            exit 1
        fi
        rm -f "$cur_logs/restored.manifest"
        restore_bytes=$(python3 "$helper" tree-bytes "$cur_logs/vol.manifest")
        rm -f "$cur_logs/vol.manifest"
        note "  verify   ok"

        python3 "$helper" record --rundir "$cur_logs" --tool "$cur_tool" --run "$cur_run" \
            --dataset-bytes "$dataset_bytes" --restore-bytes "$restore_bytes" \
            >>"$results_jsonl"
        python3 "$helper" finish --jsonl "$results_jsonl" --meta "$meta" --out "$results"

        if [[ "$KEEP" == 1 ]]; then
            mkdir -p "$WORKDIR/kept"
            rm -rf "$WORKDIR/kept/run$cur_run-$cur_tool"
            mv "$repo" "$WORKDIR/kept/run$cur_run-$cur_tool"
        fi
        chmod -R u+rwX "$run_dir" 2>/dev/null || true
        free_kib=$(df -Pk "$WORKDIR" | awk 'NR==2 {print $4}')
        if ((free_kib > (SIZE * 1024 * 4 + 4 * 1024 * 1024))); then
            mv "$run_dir" "$trash/run$cur_run-$cur_tool"
        else
            rm -rf "$run_dir" # no room to keep it: later creations may be slowed (see above)
        fi
    done
done
chmod -R u+rwX "$trash" 2>/dev/null || true
rm -rf "$trash"

python3 "$helper" report "$results"
echo
echo "raw results: $results   logs: $logs"
