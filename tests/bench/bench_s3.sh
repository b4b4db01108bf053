#!/usr/bin/env bash
# pvbackup against restic on S3: full backup and restore of the shared dataset to the same
# s3rver (tests/s3, on 127.0.0.1), through tests/s3/faultproxy.js with no fault rules, which
# counts the requests each tool sends. Not part of ctest; see docs/performance.md.
#
#     tests/bench/bench_s3.sh                   # 1 GiB, 3 runs per tool
#     SIZE=64 RUNS=1 tests/bench/bench_s3.sh    # quick smoke run
#
# s3rver runs with allowMismatchedSignatures here, because restic's client signs bucket
# requests as /BUCKET/ and s3rver 4.0.4 checks them against /BUCKET (the tests keep the check
# on). Per tool and run: a fresh prefix in the bucket, init, full backup (timed), restore into
# an empty directory (timed), a manifest.py comparison with the source (a mismatch fails the
# benchmark). Prints medians, requests per GiB and the ratios with the targets.
#
# Environment:
#   SIZE=1024  RUNS=3  TOOLS="pvbackup restic"  WORKDIR=/var/tmp/pvbackup-bench-s3
#   DATASETS=<repo>/../shared/datasets  PVBACKUP=<binary> (default: build-bench, Release)
#   DATASET=<dir>   use this tree instead of generating one (default: the dataset that
#                   tests/bench/bench.sh made in /var/tmp/pvbackup-bench, when present)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
SIZE=${SIZE:-1024}
RUNS=${RUNS:-3}
TOOLS=${TOOLS:-"pvbackup restic"}
WORKDIR=${WORKDIR:-/var/tmp/pvbackup-bench-s3}
DATASETS=${DATASETS:-$root/../shared/datasets}
PASSWORD=bench-password-not-secret

die() { echo "bench_s3: error: $*" >&2; exit 1; }
note() { echo "bench_s3: $*" >&2; }

for t in $TOOLS; do
    case $t in pvbackup | restic) ;; *) die "unknown tool '$t' in TOOLS" ;; esac
done
[[ " $TOOLS " == *" restic "* ]] && ! command -v restic >/dev/null && die "restic is not installed (apt-get install restic)"
if [[ " $TOOLS " == *" pvbackup "* && -z "${PVBACKUP:-}" ]]; then
    note "building pvbackup (Release) in $root/build-bench"
    cmake -S "$root" -B "$root/build-bench" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$root/build-bench" -j"$(nproc)" --target pvbackup >/dev/null
    PVBACKUP=$root/build-bench/pvbackup
fi

mkdir -p "$WORKDIR"
WORKDIR=$(cd "$WORKDIR" && pwd)
TMP=$WORKDIR/tmp
rm -rf "$TMP"
mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT

# ---- the dataset
if [[ -z "${DATASET:-}" ]]; then
    DATASET=/var/tmp/pvbackup-bench/base-${SIZE}m-seed1
    if [[ ! -d "$DATASET" ]]; then
        DATASET=$WORKDIR/base-${SIZE}m-seed1
        if [[ ! -d "$DATASET" ]]; then
            note "generating the ${SIZE} MiB dataset in $DATASET"
            python3 "$DATASETS/gen_dataset.py" "$DATASET.tmp" --size-mib "$SIZE" --seed 1 -q >&2
            mv "$DATASET.tmp" "$DATASET"
        fi
    fi
fi
[[ -d "$DATASET" ]] || die "no dataset at '$DATASET'"
dataset_bytes=$(du -sb --apparent-size "$DATASET" | cut -f1)
python3 "$DATASETS/manifest.py" "$DATASET" >"$TMP/source.manifest"

# ---- s3rver and the counting proxy
. "$root/tests/integration/lib/s3.sh"
pvb_s3_start --allow-mismatched-signatures
pvb_proxy_start "$TMP/proxy.json"
export AWS_ENDPOINT_URL=$PVB_PROXY_ENDPOINT
export PVBACKUP_PASSWORD=$PASSWORD RESTIC_PASSWORD=$PASSWORD
export PVBACKUP_CATALOG=$TMP/catalog.db RESTIC_CACHE_DIR=$TMP/restic-cache

requests() {
    pvb_proxy_stats >"$TMP/stats.json"
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["requests"])' "$TMP/stats.json"
}

# timed NAME CMD...: run, append "NAME seconds requests" to $TMP/results of this tool/run
timed() {
    local name=$1
    shift
    pvb_proxy_reset_stats >/dev/null
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >"$TMP/step.out" 2>"$TMP/step.err" || {
        cat "$TMP/step.err" >&2
        die "$name failed: $*"
    }
    t1=$(date +%s.%N)
    local n
    n=$(requests)
    echo "$tool $run $name $(python3 -c "print(round($t1 - $t0, 3))") $n" >>"$TMP/results"
    note "  $tool run $run $name: $(python3 -c "print(round($t1 - $t0, 2))") s, $n requests"
}

: >"$TMP/results"
for run in $(seq 1 "$RUNS"); do
    for tool in $TOOLS; do
        target=$TMP/restored-$tool-$run
        case $tool in
        pvbackup)
            repo=s3://$PVB_S3_BUCKET/pvb-$run
            "$PVBACKUP" init --repo "$repo" >/dev/null 2>&1 || die "pvbackup init failed"
            timed full "$PVBACKUP" backup --repo "$repo" --volume vol --source "$DATASET" --no-progress
            timed restore "$PVBACKUP" restore --repo "$repo" latest --volume vol --target "$target" --no-progress
            restored=$target
            ;;
        restic)
            repo=s3:$PVB_PROXY_ENDPOINT/$PVB_S3_BUCKET/restic-$run
            restic -r "$repo" init --repository-version 2 >/dev/null 2>&1 || die "restic init failed"
            timed full restic -r "$repo" backup "$DATASET"
            timed restore restic -r "$repo" restore latest --target "$target"
            restored=$target$DATASET
            ;;
        esac
        python3 "$DATASETS/manifest.py" "$restored" >"$TMP/restored.manifest"
        cmp -s "$TMP/source.manifest" "$TMP/restored.manifest" || die "$tool run $run: restore differs from the source"
        # moved aside, deleted at the end: on ext4 without a journal, creating files within a
        # minute of mass deletions is slow, which would charge one tool for the other's
        # cleanup (see bench.sh)
        mv "$target" "$TMP/trash-$tool-$run"
    done
done

python3 - "$TMP/results" "$dataset_bytes" "$TOOLS" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
size = int(sys.argv[2]); tools = sys.argv[3].split()
gib = size / 2**30; mib = size / 2**20
def med(tool, step, col):
    v = [float(r[col]) for r in rows if r[0] == tool and r[2] == step]
    return statistics.median(v) if v else None
print(f"S3 benchmark: {mib:.0f} MiB dataset, medians of {max(int(r[1]) for r in rows)} run(s), s3rver 4.0.4 on 127.0.0.1")
print(f"{'metric':34} " + " ".join(f"{t:>10}" for t in tools) + "    ratio   target  result")
res = {}
for step in ("full", "restore"):
    for t in tools:
        res[(t, step)] = (med(t, step, 3), med(t, step, 4))
for step, label in (("full", "full backup"), ("restore", "restore")):
    secs = [res[(t, step)][0] for t in tools]
    thr = [mib / s for s in secs]
    reqs = [res[(t, step)][1] / gib for t in tools]
    ratio = thr[0] / thr[1] if len(tools) == 2 else float("nan")
    rreq = reqs[0] / reqs[1] if len(tools) == 2 and reqs[1] else float("nan")
    ok = "PASS" if ratio >= 1.5 else "MISS"
    okr = "PASS" if rreq <= 1.0 else "MISS"
    print(f"{label + ' (s)':34} " + " ".join(f"{v:10.2f}" for v in secs))
    print(f"{label + ' throughput (MiB/s)':34} " + " ".join(f"{v:10.1f}" for v in thr) + f"  {ratio:6.2f}x  >=1.5x    {ok}")
    print(f"{label + ' requests per GiB':34} " + " ".join(f"{v:10.0f}" for v in reqs) + f"  {rreq:6.2f}   <=1      {okr}")
EOF
