#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
"""The Linux e2e's guest benchmark table and JSON.

    bench-report.py WORK OUT SECONDS CONFIG...

Reads the "BLK:" line blkbench printed on each bench boot's console
(WORK/bench-CONFIG-MODE.out, MODE strict or lazy; the first CONFIG is the
reference, QEMU's built-in SMMUv3) and the IOTLB counters QEMU traced
(smmuv3_remote_iotlb in WORK/bench-CONFIG-MODE.err); prints a table and
the ratios to the reference, and writes them as JSON to OUT (vsmmu-bench
reads it: guest_blk_iops_ratio_strict, ..._lazy, guest_blk_mbps_ratio_*;
a "_nomsi" suffix for vsmmud --no-msi). Reported, never asserted.
"""

import json
import re
import sys
import time

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


def main():
    work, out, secs, configs = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4:]
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "seconds_per_phase": secs, "figures": {}}
    row = "    %-7s %-11s %10s %10s %12s %12s   %s"
    print(row % ("mode", "SMMU", "rand rd/s", "rand wr/s", "seq rd MB/s", "seq wr MB/s", "IOTLB hits/misses"))
    for mode in ("strict", "lazy"):
        base = figures(work, f"bench-{configs[0]}-{mode}")
        for cfg in configs:
            name = f"bench-{cfg}-{mode}"
            figs = figures(work, name)
            res["figures"][f"{cfg}_{mode}"] = figs
            t = iotlb(work, name)
            print(row % (mode, cfg, *[cell(k, figs) for k in KEYS], "%d/%d" % t if t else "-"))
        for cfg in configs[1:]:
            figs = figures(work, f"bench-{cfg}-{mode}")
            suffix = "_" + cfg.split("-", 1)[1] if "-" in cfg else ""
            r = {k: figs[k] / base[k] for k in KEYS if k in figs and base.get(k)}
            for k, v in r.items():
                res[f"guest_blk_{k}_ratio_{mode}{suffix}"] = round(v, 3)
            # Reads and writes count alike: their geometric mean.
            if "randread_iops" in r and "randwrite_iops" in r:
                res[f"guest_blk_iops_ratio_{mode}{suffix}"] = round(
                    (r["randread_iops"] * r["randwrite_iops"]) ** 0.5, 3)
            if "seqread_mbps" in r and "seqwrite_mbps" in r:
                res[f"guest_blk_mbps_ratio_{mode}{suffix}"] = round(
                    (r["seqread_mbps"] * r["seqwrite_mbps"]) ** 0.5, 3)
    print(f"    ratios to {configs[0]} (geometric means of reads and writes; "
          "target for 4 KiB IOPS: >= 0.8):")
    for k in sorted(k for k in res if re.fullmatch(r"guest_blk_(iops|mbps)_ratio_.*", k)):
        print("      %-34s %.2fx" % (k, res[k]))
    with open(out, "w") as f:
        json.dump(res, f, indent=2)
        f.write("\n")
    print(f"    wrote {out}")


if __name__ == "__main__":
    main()
