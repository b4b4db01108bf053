#!/usr/bin/env python3
"""Helper for tests/bench/bench.sh (python3 stdlib only).

Subcommands:
  measure --out F --stdout F --stderr F [--cwd D] [--timeout S] -- CMD...
      Run CMD under /usr/bin/time, write {"wall_s", "rss_kib", "rc"} to F. Wall time is
      taken with time.monotonic() around the child; peak RSS is GNU time's %M (KiB).
      Exits with the child's exit code (124 on timeout).
  tree-bytes MANIFEST
      Print the sum of file sizes listed in a manifest.py output.
  record --rundir D --tool T --run N --dataset-bytes B --restore-bytes B
      Collect one run's step files and sizes into a JSON line (printed on stdout).
  finish --jsonl F --meta F --out F
      Combine the JSON lines and the meta data into bench-results.json.
  report RESULTS.json [--markdown]
      Print the table of medians, ratios and targets.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

STEPS = ["init", "full", "nochange", "incr", "restore"]
TIMED_BACKUPS = ["full", "nochange", "incr"]
MIB = 1024.0 * 1024.0


# ---------------------------------------------------------------------------- measure
def cmd_measure(args):
    rss_file = args.out + ".time"
    cmd = ["/usr/bin/time", "-f", "%M %U %S", "-o", rss_file] + args.cmd
    load_before = loadavg()
    with open(args.stdout, "wb") as out, open(args.stderr, "wb") as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=args.cwd,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        # The child runs in its own session so that a timeout can kill all of it; pass
        # an interrupt on to it rather than leaving it running.
        def stop(signum, _frame):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            proc.wait()
            sys.exit(128 + signum)

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        # Popen.wait(timeout=) polls with sleeps of up to 50 ms, which would blur short
        # steps: wait blocking and let a timer thread kill the child on timeout.
        timed_out = threading.Event()

        def kill():
            timed_out.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(args.timeout, kill)
        timer.daemon = True
        timer.start()
        rc = proc.wait()
        wall = time.monotonic() - t0
        timer.cancel()
        if timed_out.is_set():
            rc = 124
    rss = user = system = None
    try:
        with open(rss_file) as fh:
            lines = [ln.strip() for ln in fh if ln.strip()]
        # GNU time writes "Command exited with non-zero status N" before the format.
        fields = lines[-1].split() if lines else []
        if len(fields) == 3 and fields[0].isdigit():
            rss, user, system = int(fields[0]), float(fields[1]), float(fields[2])
        os.unlink(rss_file)
    except (OSError, ValueError):
        pass
    with open(args.out, "w") as fh:
        json.dump({"wall_s": round(wall, 3), "rss_kib": rss, "user_s": user, "sys_s": system,
                   "loadavg_before": load_before, "loadavg_after": loadavg(), "rc": rc}, fh)
    return rc


def loadavg():
    """1-minute load average: other work on the machine shows up here."""
    try:
        with open("/proc/loadavg") as fh:
            return float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# ---------------------------------------------------------------------------- tree-bytes
def manifest_bytes(path):
    total = 0
    with open(path) as fh:
        for line in fh:
            parts = line.split(" ", 4)
            if parts[0] == "f":
                total += int(parts[2])
    return total


def cmd_tree_bytes(args):
    print(manifest_bytes(args.manifest))
    return 0


# ---------------------------------------------------------------------------- record
def read_json(path):
    with open(path) as fh:
        return json.load(fh)


def tool_bytes_added(tool, stdout_path):
    """What the tool itself says it stored (informational)."""
    try:
        with open(stdout_path) as fh:
            text = fh.read()
    except OSError:
        return None
    try:
        if tool == "pvbackup":
            return json.loads(text)["stats"]["bytes_added"]
        if tool == "restic":
            for line in reversed(text.splitlines()):
                line = line.strip()
                if line.startswith("{") and '"summary"' in line:
                    return json.loads(line)["data_added"]
            return None
        if tool == "borg":
            return json.loads(text)["archive"]["stats"]["deduplicated_size"]
    except (ValueError, KeyError, TypeError):
        return None
    return None


def cmd_record(args):
    rd = args.rundir
    steps = {}
    for step in STEPS:
        p = os.path.join(rd, step + ".json")
        if os.path.exists(p):
            steps[step] = read_json(p)
    sizes = {}
    with open(os.path.join(rd, "sizes")) as fh:
        for line in fh:
            key, _, val = line.strip().partition("=")
            if key:
                sizes[key] = int(val)
    rec = {
        "tool": args.tool,
        "run": args.run,
        "dataset_bytes": args.dataset_bytes,
        "restore_bytes": args.restore_bytes,
        "steps": steps,
        "repo_bytes": {k[len("repo_"):]: v for k, v in sizes.items() if k.startswith("repo_")},
        "cache_bytes_after_incr": sizes.get("cache_after_incr"),
        "tool_bytes_added": {s: tool_bytes_added(args.tool, os.path.join(rd, s + ".out"))
                             for s in TIMED_BACKUPS},
        "verified": True,
    }
    rb = rec["repo_bytes"]
    rec["incr_bytes_stored"] = rb["after_incr"] - rb["after_nochange"]
    rec["nochange_bytes_stored"] = rb["after_nochange"] - rb["after_full"]
    rec["peak_rss_kib"] = max((s["rss_kib"] or 0) for s in steps.values())
    print(json.dumps(rec, sort_keys=True))
    return 0


# ---------------------------------------------------------------------------- finish
def cmd_finish(args):
    runs = []
    if os.path.exists(args.jsonl):
        with open(args.jsonl) as fh:
            runs = [json.loads(ln) for ln in fh if ln.strip()]
    meta = read_json(args.meta)
    res = {"meta": meta, "runs": runs, "medians": medians(runs)}
    tmp = args.out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(res, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, args.out)
    return 0


# ---------------------------------------------------------------------------- report
def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def cpu_s(step):
    if step.get("user_s") is None or step.get("sys_s") is None:
        return None
    return step["user_s"] + step["sys_s"]


def medians(runs):
    out = {}
    tools = []
    for r in runs:
        if r["tool"] not in tools:
            tools.append(r["tool"])
    for tool in tools:
        rs = [r for r in runs if r["tool"] == tool]
        m = {"runs": len(rs)}
        for step in STEPS:
            m[step + "_s"] = med([r["steps"].get(step, {}).get("wall_s") for r in rs])
            m[step + "_rss_kib"] = med([r["steps"].get(step, {}).get("rss_kib") for r in rs])
            m[step + "_cpu_s"] = med([cpu_s(r["steps"].get(step, {})) for r in rs])
        m["max_loadavg"] = max((r["steps"][st].get(k) or 0) for r in rs for st in r["steps"]
                               for k in ("loadavg_before", "loadavg_after"))
        m["peak_rss_kib"] = med([r["peak_rss_kib"] for r in rs])
        m["repo_after_full"] = med([r["repo_bytes"]["after_full"] for r in rs])
        m["incr_bytes_stored"] = med([r["incr_bytes_stored"] for r in rs])
        m["nochange_bytes_stored"] = med([r["nochange_bytes_stored"] for r in rs])
        m["incr_tool_bytes_added"] = med([r["tool_bytes_added"].get("incr") for r in rs])
        m["cache_bytes_after_incr"] = med([r.get("cache_bytes_after_incr") for r in rs])
        ds = med([r["dataset_bytes"] for r in rs])
        rb = med([r["restore_bytes"] for r in rs])
        m["full_mib_s"] = ds / MIB / m["full_s"] if m["full_s"] else None
        m["restore_mib_s"] = rb / MIB / m["restore_s"] if m["restore_s"] else None
        out[tool] = m
    return out


# Each row: label, key, formatter, ratio kind ("speed": peer/pvb from times or pvb/peer
# from throughputs; "size": pvb/peer), target (key into TARGETS) or None.
def f_s(v):
    return "-" if v is None else "%.3f" % v


def f_mib(v):
    if v is None:
        return "-"
    return "%.2f" % (v / MIB) if abs(v) < 10 * MIB else "%.1f" % (v / MIB)


def f_rate(v):
    return "-" if v is None else "%.1f" % v


def f_kib_mib(v):
    return "-" if v is None else "%.1f" % (v / 1024.0)


ROWS = [
    ("init (s)", "init_s", f_s, "time", None),
    ("full backup (s)", "full_s", f_s, "time", None),
    ("full throughput (MiB/s)", "full_mib_s", f_rate, "rate", "full"),
    ("no-change backup (s)", "nochange_s", f_s, "time", "nochange"),
    ("incremental backup (s)", "incr_s", f_s, "time", None),
    ("restore (s)", "restore_s", f_s, "time", None),
    ("restore throughput (MiB/s)", "restore_mib_s", f_rate, "rate", "restore"),
    ("CPU user+sys full (s)", "full_cpu_s", f_s, "time", None),
    ("CPU user+sys no-change (s)", "nochange_cpu_s", f_s, "time", None),
    ("CPU user+sys incremental (s)", "incr_cpu_s", f_s, "time", None),
    ("CPU user+sys restore (s)", "restore_cpu_s", f_s, "time", None),
    ("repo size after full (MiB)", "repo_after_full", f_mib, "size", "repo"),
    ("stored by no-change (MiB)", "nochange_bytes_stored", f_mib, "size", None),
    ("stored by incremental (MiB)", "incr_bytes_stored", f_mib, "size", "incr"),
    ("  tool's own 'added' figure (MiB)", "incr_tool_bytes_added", f_mib, "size", None),
    ("peak RSS full (MiB)", "full_rss_kib", f_kib_mib, "size", None),
    ("peak RSS no-change (MiB)", "nochange_rss_kib", f_kib_mib, "size", None),
    ("peak RSS incremental (MiB)", "incr_rss_kib", f_kib_mib, "size", None),
    ("peak RSS restore (MiB)", "restore_rss_kib", f_kib_mib, "size", None),
    ("peak RSS, max of steps (MiB)", "peak_rss_kib", f_kib_mib, "size", "rss"),
    ("local cache after incr (MiB)", "cache_bytes_after_incr", f_mib, "size", None),
    ("max 1-min load average seen", "max_loadavg", f_rate, None, None),
]

# target: (description, predicate on (pvb, restic) medians)
TARGETS = {
    "full": (">= 2x restic", lambda p, r: p >= 2 * r),
    "restore": (">= 2x restic", lambda p, r: p >= 2 * r),
    "nochange": (">= 2x faster than restic", lambda p, r: r >= 2 * p),
    "incr": ("<= 1/4 of restic", lambda p, r: 4 * p <= r),
    "repo": ("<= restic", lambda p, r: p <= r),
    "rss": ("<= restic", lambda p, r: p <= r),
}


def ratio(kind, pvb, peer):
    if kind is None or pvb is None or peer is None:
        return "-"
    if kind == "time":
        return "-" if pvb == 0 else "%.2fx" % (peer / pvb)
    if kind == "rate":
        return "-" if peer == 0 else "%.2fx" % (pvb / peer)
    return "-" if peer == 0 else "%.3f" % (pvb / peer)


def cmd_report(args):
    res = read_json(args.results)
    meds = res.get("medians") or medians(res["runs"])
    tools = [t for t in ("pvbackup", "restic", "borg") if t in meds]
    header = ["metric (median of runs)"] + ["%s" % t for t in tools]
    if "pvbackup" in meds:
        for peer in ("restic", "borg"):
            if peer in meds:
                header.append("pvb vs %s" % peer)
        header += ["target", "result"]
    rows = []
    verdicts = []
    for label, key, fmt, kind, target in ROWS:
        row = [label] + [fmt(meds[t].get(key)) for t in tools]
        if "pvbackup" in meds:
            pvb = meds["pvbackup"].get(key)
            for peer in ("restic", "borg"):
                if peer in meds:
                    row.append(ratio(kind, pvb, meds[peer].get(key)))
            if target:
                desc, pred = TARGETS[target]
                r = meds.get("restic", {}).get(key)
                if pvb is None or r is None:
                    verdict = "n/a"
                else:
                    verdict = "PASS" if pred(pvb, r) else "MISS"
                verdicts.append((label, verdict))
                row += [desc, verdict]
            else:
                row += ["", ""]
        rows.append(row)

    meta = res.get("meta", {})
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        print("pvbackup benchmark: %s MiB dataset (%s bytes), %s run(s) per tool, %s caches,"
              " %s" % (meta.get("size_mib"), meta.get("dataset_bytes"), meta.get("runs"),
            "warm" if meta.get("warm", True) else "dropped", meta.get("date", "")))
        widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
        line = "  ".join(h.ljust(widths[i]) if i == 0 else h.rjust(widths[i])
                         for i, h in enumerate(header))
        print(line)
        print("-" * len(line))
        for row in rows:
            print("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])
                            for i, c in enumerate(row)))
        print()
        print("Ratios: times and throughputs are speedups (>1: pvbackup faster);"
              " sizes and RSS are pvbackup/peer (<1: pvbackup smaller).")
        if verdicts:
            print("Targets: %d PASS, %d MISS, %d n/a" % (
                sum(v == "PASS" for _, v in verdicts), sum(v == "MISS" for _, v in verdicts),
                sum(v == "n/a" for _, v in verdicts)))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="sub", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--out", required=True)
    m.add_argument("--stdout", required=True)
    m.add_argument("--stderr", required=True)
    m.add_argument("--cwd")
    m.add_argument("--timeout", type=float, default=3600)
    m.add_argument("cmd", nargs=argparse.REMAINDER)
    t = sub.add_parser("tree-bytes")
    t.add_argument("manifest")
    r = sub.add_parser("record")
    r.add_argument("--rundir", required=True)
    r.add_argument("--tool", required=True)
    r.add_argument("--run", type=int, required=True)
    r.add_argument("--dataset-bytes", type=int, required=True)
    r.add_argument("--restore-bytes", type=int, required=True)
    f = sub.add_parser("finish")
    f.add_argument("--jsonl", required=True)
    f.add_argument("--meta", required=True)
    f.add_argument("--out", required=True)
    p = sub.add_parser("report")
    p.add_argument("results")
    p.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    if args.sub == "measure":
        if args.cmd and args.cmd[0] == "--":
            args.cmd = args.cmd[1:]
        if not args.cmd:
            ap.error("measure: no command")
        return cmd_measure(args)
    return {"tree-bytes": cmd_tree_bytes, "record": cmd_record, "finish": cmd_finish,
            "report": cmd_report}[args.sub](args)


if __name__ == "__main__":
    sys.exit(main())
