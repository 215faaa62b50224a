#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
"""The Linux e2e's guest benchmark table and JSON.

    bench-report.py WORK OUT SECONDS ROUNDS CONFIG...

Reads the "BLK:" line blkbench printed on each bench boot's console
(WORK/bench-CONFIG-MODE-rN.out, MODE strict or lazy, N the round; the first
CONFIG is the reference, QEMU's built-in SMMUv3) and the IOTLB counters
QEMU traced (smmuv3_remote_iotlb in the .err files). Each round booted
every CONFIG in a row, so a ratio is taken within a round, and the one
reported is the median of the rounds' (a round's boots share the
machine's speed of the moment; it drifts between rounds). Prints a table
(each figure the median of its rounds) and the ratios with their spread,
and writes them as JSON to OUT (vsmmu-bench reads it:
guest_blk_iops_ratio_strict, ..._lazy, guest_blk_mbps_ratio_*; a "_nomsi"
suffix for vsmmud --no-msi; "spread" holds each ratio's lowest and highest
round). Reported, never asserted.
"""

import json
import re
import sys
import time
from statistics import median

KEYS = ["randread_iops", "randwrite_iops", "seqread_mbps", "seqwrite_mbps"]


def figures(work, name):
    try:
        text = open(f"{work}/{name}.out", errors="replace").read()
    except OSError:
        return {}
    m = re.search(r"^BLK: (.*?)\r?$", text, re.M)
    if not m:
        return {}
    return {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


def iotlb(work, name):
    try:
        text = open(f"{work}/{name}.err", errors="replace").read()
    except OSError:
        return None
    m = re.findall(r"smmuv3_remote_iotlb hits=(\d+) misses=(\d+)", text)
    return tuple(map(int, m[-1])) if m else None


def cell(key, figs):
    if key not in figs:
        return "-"
    return ("%.0f" if "iops" in key else "%.1f") % figs[key]


def ratios(figs, base):
    """One round's ratios to the reference, reads and writes apart and
    together (their geometric mean: they count alike)."""
    r = {k: figs[k] / base[k] for k in KEYS if k in figs and base.get(k)}
    if "randread_iops" in r and "randwrite_iops" in r:
        r["iops"] = (r["randread_iops"] * r["randwrite_iops"]) ** 0.5
    if "seqread_mbps" in r and "seqwrite_mbps" in r:
        r["mbps"] = (r["seqread_mbps"] * r["seqwrite_mbps"]) ** 0.5
    return r


def main():
    work, out, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
    rounds, configs = int(sys.argv[4]), sys.argv[5:]
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "seconds_per_phase": secs,
           "rounds": rounds, "figures": {}, "spread": {}}
    row = "    %-7s %-11s %10s %10s %12s %12s   %s"
    print(f"    medians of {rounds} rounds")
    print(row % ("mode", "SMMU", "rand rd/s", "rand wr/s", "seq rd MB/s", "seq wr MB/s", "IOTLB hits/misses"))
    for mode in ("strict", "lazy"):
        runs = {cfg: [figures(work, f"bench-{cfg}-{mode}-r{n}") for n in range(1, rounds + 1)]
                for cfg in configs}
        for cfg in configs:
            figs = {k: median([f[k] for f in runs[cfg] if k in f])
                    for k in KEYS if any(k in f for f in runs[cfg])}
            res["figures"][f"{cfg}_{mode}"] = figs
            t = [iotlb(work, f"bench-{cfg}-{mode}-r{n}") for n in range(1, rounds + 1)]
            t = [x for x in t if x]
            hm = "%d/%d" % (median([x[0] for x in t]), median([x[1] for x in t])) if t else "-"
            print(row % (mode, cfg, *[cell(k, figs) for k in KEYS], hm))
        for cfg in configs[1:]:
            suffix = "_" + cfg.split("-", 1)[1] if "-" in cfg else ""
            per_round = [ratios(f, b) for f, b in zip(runs[cfg], runs[configs[0]])]
            for k in KEYS + ["iops", "mbps"]:
                vals = [r[k] for r in per_round if k in r]
                if not vals:
                    continue
                name = f"guest_blk_{k}_ratio_{mode}{suffix}"
                res[name] = round(median(vals), 3)
                res["spread"][name] = [round(min(vals), 3), round(max(vals), 3)]
    print(f"    ratios to {configs[0]} (median of the rounds' geometric means of reads and "
          "writes, lowest-highest round; target for 4 KiB IOPS: >= 0.8):")
    for k in sorted(k for k in res if re.fullmatch(r"guest_blk_(iops|mbps)_ratio_.*", k)):
        lo, hi = res["spread"][k]
        print("      %-34s %.2fx  (%.2f-%.2f)" % (k, res[k], lo, hi))
    with open(out, "w") as f:
        json.dump(res, f, indent=2)
        f.write("\n")
    print(f"    wrote {out}")


if __name__ == "__main__":
    main()
