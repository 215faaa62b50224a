//! The guest benchmark's figures: `tests/e2e/linux-boot.sh` measures what a
//! Linux guest's virtio-blk disk does behind QEMU's built-in SMMUv3 and
//! behind vsmmud (`tests/e2e/guest/bench-report.py` writes them to
//! `vsmmu-guest-bench.json` in cargo's target directory). Booting guests
//! takes minutes and a patched QEMU, so the bench reads the last e2e run's
//! file rather than running it; the table says when that was.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The keys the bench takes from the file: ratios to the built-in SMMUv3
/// (geometric means of reads and writes), IOPS of 4 KiB random transfers
/// and MB/s of 1 MiB sequential ones, for `iommu.strict=1` and `=0`, with
/// vsmmud's default (MSI CMD_SYNC) and with `--no-msi`.
pub const KEYS: [&str; 8] = [
    "guest_blk_iops_ratio_strict",
    "guest_blk_iops_ratio_lazy",
    "guest_blk_mbps_ratio_strict",
    "guest_blk_mbps_ratio_lazy",
    "guest_blk_iops_ratio_strict_nomsi",
    "guest_blk_iops_ratio_lazy_nomsi",
    "guest_blk_mbps_ratio_strict_nomsi",
    "guest_blk_mbps_ratio_lazy_nomsi",
];

/// One e2e run's guest figures.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestBench {
    /// The file read.
    pub path: PathBuf,
    /// When the e2e wrote it ("YYYY-MM-DD HH:MM").
    pub date: String,
    /// Seconds each phase of the guest benchmark ran.
    pub seconds_per_phase: f64,
    /// Rounds of boots the ratios are the median of (older files: 1).
    pub rounds: u64,
    /// `(key, ratio, (lowest, highest round))` for each of [`KEYS`] the
    /// file has (the spread is the ratio itself for a one-round file).
    pub ratios: Vec<(&'static str, f64, (f64, f64))>,
}

/// Where the e2e writes the file: `$CARGO_TARGET_DIR`, else `target/` at
/// the workspace root.
pub fn default_path(workspace_root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root.join("target"), PathBuf::from)
        .join("vsmmu-guest-bench.json")
}

/// Reads `path`: `Ok(None)` when there is no such file (no e2e run yet),
/// an error when it is there but not the e2e's JSON.
pub fn read(path: &Path) -> anyhow::Result<Option<GuestBench>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    };
    parse(path, &text).map(Some)
}

fn parse(path: &Path, text: &str) -> anyhow::Result<GuestBench> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", path.display()))?;
    let date = v["date"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("{}: no \"date\"", path.display()))?
        .to_string();
    let ratios = KEYS
        .iter()
        .filter_map(|&k| {
            let r = v[k].as_f64()?;
            let spread = &v["spread"][k];
            let lo = spread[0].as_f64().unwrap_or(r);
            let hi = spread[1].as_f64().unwrap_or(r);
            Some((k, r, (lo, hi)))
        })
        .collect();
    Ok(GuestBench {
        path: path.to_path_buf(),
        date,
        seconds_per_phase: v["seconds_per_phase"].as_f64().unwrap_or(f64::NAN),
        rounds: v["rounds"].as_u64().unwrap_or(1),
        ratios,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_bench_report_writes() {
        let text = r#"{"date": "2026-11-30 08:28", "seconds_per_phase": 2.0,
            "rounds": 3,
            "figures": {"builtin_strict": {"randread_iops": 1966.0}},
            "guest_blk_iops_ratio_strict": 0.509,
            "guest_blk_iops_ratio_lazy": 0.706,
            "guest_blk_randread_iops_ratio_lazy": 0.665,
            "spread": {"guest_blk_iops_ratio_strict": [0.48, 0.55]}}"#;
        let g = parse(Path::new("g.json"), text).unwrap();
        assert_eq!(g.date, "2026-11-30 08:28");
        assert_eq!((g.seconds_per_phase, g.rounds), (2.0, 3));
        assert_eq!(
            g.ratios,
            vec![
                ("guest_blk_iops_ratio_strict", 0.509, (0.48, 0.55)),
                ("guest_blk_iops_ratio_lazy", 0.706, (0.706, 0.706))
            ]
        );
    }

    #[test]
    fn missing_file_is_none_and_garbage_an_error() {
        let dir = std::env::temp_dir().join(format!("vsmmu-guest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(read(&dir.join("absent.json")).unwrap(), None);
        let bad = dir.join("bad.json");
        std::fs::write(&bad, "not json").unwrap();
        assert!(read(&bad).is_err());
        std::fs::write(&bad, "{}").unwrap();
        assert!(read(&bad).unwrap_err().to_string().contains("no \"date\""));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
