//! The results: a flat set of named figures, printed as a table with the
//! targets (reported, never asserted) and written as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::guest::GuestBench;
use crate::Plan;

/// Key suffix of the figures of the contended pass.
pub const CONTENDED: &str = "_contended";

/// How a target compares its figure with its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    /// The figure must be at least the bound.
    AtLeast,
    /// The figure must be at most the bound.
    AtMost,
}

/// One target of the issue: a figure, a comparison, a bound.
#[derive(Debug, Clone, Copy)]
struct Target {
    name: &'static str,
    key: &'static str,
    cmp: Cmp,
    bound: f64,
}

const TARGETS: [Target; 11] = [
    Target {
        name: "propagation >= 20x the seed-style read",
        key: "propagation_ratio",
        cmp: Cmp::AtLeast,
        bound: 20.0,
    },
    Target {
        name: "contended: propagation >= 20x the seed-style read",
        key: "propagation_ratio_contended",
        cmp: Cmp::AtLeast,
        bound: 20.0,
    },
    Target {
        name: "<= 2 vEVENTQ reads per 1,000 events in a storm",
        key: "veventq_reads_per_1000_events",
        cmp: Cmp::AtMost,
        bound: 2.0,
    },
    Target {
        name: "contended: <= 2 vEVENTQ reads per 1,000 events",
        key: "veventq_reads_per_1000_events_contended",
        cmp: Cmp::AtMost,
        bound: 2.0,
    },
    Target {
        name: "MMIO round trip <= 1.3x the raw socket",
        key: "mmio_rtt_ratio",
        cmp: Cmp::AtMost,
        bound: 1.3,
    },
    Target {
        name: "contended: MMIO round trip <= 2x the raw socket",
        key: "mmio_rtt_ratio_contended",
        cmp: Cmp::AtMost,
        bound: 2.0,
    },
    Target {
        name: "<= 1 host invalidation call per 32 commands",
        key: "host_calls_per_cmd_batched",
        cmp: Cmp::AtMost,
        bound: 1.0 / 32.0,
    },
    Target {
        name: "contended: <= 1 host invalidation call per 32 cmds",
        key: "host_calls_per_cmd_batched_contended",
        cmp: Cmp::AtMost,
        bound: 1.0 / 32.0,
    },
    Target {
        name: "guest: 4 KiB IOPS >= 0.8x built-in, iommu.strict=1",
        key: "guest_blk_iops_ratio_strict",
        cmp: Cmp::AtLeast,
        bound: 0.8,
    },
    Target {
        name: "guest: 4 KiB IOPS >= 0.8x built-in, iommu.strict=0",
        key: "guest_blk_iops_ratio_lazy",
        cmp: Cmp::AtLeast,
        bound: 0.8,
    },
    Target {
        name: "idle RSS <= 8 MiB",
        key: "idle_rss_kib",
        cmp: Cmp::AtMost,
        bound: 8192.0,
    },
];

impl Target {
    fn met(&self, v: f64) -> bool {
        match self.cmp {
            Cmp::AtLeast => v >= self.bound,
            Cmp::AtMost => v <= self.bound,
        }
    }

    fn contended(&self) -> bool {
        self.key.ends_with(CONTENDED)
    }

    fn guest(&self) -> bool {
        self.key.starts_with("guest_")
    }
}

/// Figures of one run.
#[derive(Debug)]
pub struct Report {
    quick: bool,
    vsmmud: PathBuf,
    values: BTreeMap<String, f64>,
    /// Appended to the keys set and read now ("" or [`CONTENDED`]).
    suffix: &'static str,
    /// Busy threads of the contended pass (0: no such pass).
    contend: usize,
    /// `/proc/loadavg` (1, 5, 15 minutes) at named points of the run.
    loads: Vec<(&'static str, [f64; 3])>,
    /// The last Linux e2e run's guest benchmark, if there was one.
    guest: Option<GuestBench>,
}

impl Report {
    /// An empty report of a run with `plan` against `vsmmud`, whose
    /// contended pass runs `contend` busy threads (0: none).
    pub fn new(plan: &Plan, vsmmud: &Path, contend: usize) -> Self {
        Report {
            quick: plan.quick,
            vsmmud: vsmmud.to_path_buf(),
            values: BTreeMap::new(),
            suffix: "",
            contend,
            loads: Vec::new(),
            guest: None,
        }
    }

    /// Adds the guest benchmark's ratios (their keys as the e2e wrote them).
    pub fn set_guest(&mut self, g: GuestBench) {
        for (k, v, _) in &g.ratios {
            self.values.insert((*k).to_string(), *v);
        }
        self.guest = Some(g);
    }

    /// From now on, figures belong to the contended pass (`true`) or not.
    pub fn set_pass(&mut self, contended: bool) {
        self.suffix = if contended { CONTENDED } else { "" };
    }

    /// Records the load average now, under `tag`.
    pub fn set_load(&mut self, tag: &'static str) {
        if let Some(l) = load_average() {
            self.loads.push((tag, l));
        }
    }

    /// Records figure `key` of the current pass.
    pub fn set(&mut self, key: &str, v: f64) {
        self.values.insert(format!("{key}{}", self.suffix), v);
    }

    /// Figure `key` of the current pass (NaN when not measured).
    pub fn get(&self, key: &str) -> f64 {
        self.value(&format!("{key}{}", self.suffix))
    }

    fn value(&self, key: &str) -> f64 {
        self.values.get(key).copied().unwrap_or(f64::NAN)
    }

    /// The targets of the passes that ran.
    fn targets(&self) -> impl Iterator<Item = &'static Target> + '_ {
        TARGETS
            .iter()
            .filter(move |t| self.contend > 0 || !t.contended())
            .filter(move |t| self.guest.is_some() || !t.guest())
    }

    /// The JSON document: every figure at the top level (NaN as null),
    /// plus `targets`, `mode`, `vsmmud` and `machine`.
    pub fn json(&self) -> Value {
        let mut m = serde_json::Map::new();
        for (k, v) in &self.values {
            m.insert(k.clone(), json!(v));
        }
        let targets: serde_json::Map<String, Value> = self
            .targets()
            .map(|t| {
                let v = self.value(t.key);
                (
                    t.key.to_string(),
                    json!({
                        "target": t.name,
                        "bound": t.bound,
                        "value": v,
                        "met": t.met(v),
                    }),
                )
            })
            .collect();
        m.insert("targets".into(), Value::Object(targets));
        m.insert(
            "mode".into(),
            json!(if self.quick { "quick" } else { "full" }),
        );
        m.insert("vsmmud".into(), json!(self.vsmmud.display().to_string()));
        if let Some(g) = &self.guest {
            m.insert(
                "guest_bench".into(),
                json!({
                    "file": g.path.display().to_string(),
                    "date": g.date,
                    "seconds_per_phase": g.seconds_per_phase,
                    "rounds": g.rounds,
                }),
            );
        }
        let mut mach = machine();
        let loads: serde_json::Map<String, Value> = self
            .loads
            .iter()
            .map(|(tag, l)| (tag.to_string(), json!(l)))
            .collect();
        mach["loadavg"] = Value::Object(loads);
        m.insert("machine".into(), mach);
        Value::Object(m)
    }

    /// Writes [`Report::json`] to `path`, creating its directory.
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut text = serde_json::to_string_pretty(&self.json()).map_err(std::io::Error::other)?;
        text.push('\n');
        std::fs::write(path, text)
    }

    /// The table of one pass (`sfx`: "" or [`CONTENDED`]).
    fn pass_table(&self, sfx: &str) -> Table {
        let g = |k: &str| self.value(&format!("{k}{sfx}"));
        let mut t = Table::default();
        t.row(
            "host-event propagation, events/s",
            num(g("propagation_events_per_s_batched")),
            num(g("propagation_events_per_s_seed_style")),
            ratio(g("propagation_ratio")),
        );
        t.row(
            "  vEVENTQ read calls per 1,000 events",
            fix(g("veventq_reads_per_1000_events"), 2),
            fix(g("veventq_reads_per_1000_events_seed_style"), 1),
            String::new(),
        );
        t.row(
            "  server CPU per event, ns",
            fix(g("server_cpu_ns_per_event_batched"), 0),
            fix(g("server_cpu_ns_per_event_seed_style"), 0),
            ratio(g("server_cpu_ratio")),
        );
        t.row(
            "  guest (bench process) CPU per event, ns",
            fix(g("guest_cpu_ns_per_event_batched"), 0),
            fix(g("guest_cpu_ns_per_event_seed_style"), 0),
            String::new(),
        );
        t.row(
            "  inject-to-EVTQ-irq latency p50, us",
            fix(g("propagation_irq_latency_p50_us"), 1),
            fix(g("propagation_irq_latency_seed_style_p50_us"), 1),
            String::new(),
        );
        t.row(
            "  inject-to-EVTQ-irq latency p99, us",
            fix(g("propagation_irq_latency_p99_us"), 1),
            fix(g("propagation_irq_latency_seed_style_p99_us"), 1),
            String::new(),
        );
        t.row(
            "  inject-to-guest latency p50, us",
            fix(g("propagation_latency_p50_us"), 1),
            fix(g("propagation_latency_seed_style_p50_us"), 1),
            String::new(),
        );
        t.row(
            "  inject-to-guest latency p99, us",
            fix(g("propagation_latency_p99_us"), 1),
            fix(g("propagation_latency_seed_style_p99_us"), 1),
            String::new(),
        );
        t.row(
            "MMIO round trip (median), us",
            fix(g("mmio_rtt_us"), 2),
            fix(g("raw_socket_rtt_us"), 2),
            ratio(g("mmio_rtt_ratio")),
        );
        t.row(
            "  p99, us",
            fix(g("mmio_rtt_p99_us"), 2),
            fix(g("raw_socket_rtt_p99_us"), 2),
            String::new(),
        );
        t.row(
            "  vs raw socket served by an epoll loop, us",
            fix(g("mmio_rtt_us"), 2),
            fix(g("raw_socket_epoll_rtt_us"), 2),
            ratio(g("mmio_rtt_ratio_vs_epoll")),
        );
        t.row(
            "  vs client-shim over the blocking echo, us",
            fix(g("mmio_rtt_us"), 2),
            fix(g("client_shim_echo_rtt_us"), 2),
            ratio(g("mmio_rtt_us") / g("client_shim_echo_rtt_us")),
        );
        t.row(
            "  server wakeups per round trip",
            fix(g("mmio_server_sleeps_per_rtt"), 2),
            String::new(),
            String::new(),
        );
        t.row(
            "TLBI flood, sync every 64: cmds/s",
            num(g("cmds_per_s_batched")),
            num(g("cmds_per_s_unbatched")),
            ratio(g("cmds_ratio")),
        );
        t.row(
            "  host invalidation calls per command",
            fix(g("host_calls_per_cmd_batched"), 4),
            fix(g("host_calls_per_cmd_unbatched"), 4),
            String::new(),
        );
        t.row(
            "TLBI flood, sync every 1: cmds/s",
            num(g("cmds_per_s_batched_n1")),
            num(g("cmds_per_s_unbatched_n1")),
            ratio(g("cmds_per_s_batched_n1") / g("cmds_per_s_unbatched_n1")),
        );
        t.row(
            "  host invalidation calls per command",
            fix(g("host_calls_per_cmd_batched_n1"), 4),
            fix(g("host_calls_per_cmd_unbatched_n1"), 4),
            String::new(),
        );
        t.row(
            "CMD_SYNC, us: MSI (default) vs polling CMDQ_CONS (--no-msi)",
            fix(g("cmd_sync_us_msi"), 2),
            fix(g("cmd_sync_us_polled"), 2),
            ratio(g("cmd_sync_us_msi") / g("cmd_sync_us_polled")),
        );
        t.row(
            "idle RSS, KiB (anon / file / shmem)",
            fix(g("idle_rss_kib"), 0),
            format!(
                "{} / {} / {}",
                fix(g("idle_rss_anon_kib"), 0),
                fix(g("idle_rss_file_kib"), 0),
                fix(g("idle_rss_shmem_kib"), 0)
            ),
            String::new(),
        );
        t.row(
            "startup to first VERSION reply, ms",
            fix(g("startup_ms"), 2),
            String::new(),
            String::new(),
        );
        t
    }

    /// The human-readable tables: the idle pass, the contended pass.
    pub fn table(&self) -> String {
        let g = |k: &str| self.value(k);
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nvsmmu-bench, {} run ({cpus} CPUs, {})",
            if self.quick { "quick" } else { "full" },
            cpu_model()
        );
        for (tag, l) in &self.loads {
            let _ = writeln!(
                out,
                "load average (1/5/15 min), {}: {:.2} {:.2} {:.2}",
                tag.replace('_', " "),
                l[0],
                l[1],
                l[2]
            );
        }
        let _ = writeln!(
            out,
            "baselines: seed-style vEVENTQ read (--veventq-read single), raw socket \
             ping-pong, one host call per command (--no-batch)"
        );
        let head = ["", "vsmmud", "baseline", "ratio"];
        let _ = writeln!(out, "\nidle (no busy threads added)\n");
        out.push_str(&self.pass_table("").render(head));
        if self.contend > 0 {
            let _ = writeln!(
                out,
                "\ncontended ({} busy threads on {cpus} CPUs, which got {} CPUs' worth of time)\n",
                self.contend,
                fix(g("contend_cpus_used"), 2)
            );
            out.push_str(&self.pass_table(CONTENDED).render(head));
        }
        match &self.guest {
            Some(g) => {
                let _ = writeln!(
                    out,
                    "\nguest (Linux e2e of {}, {}: virtio-blk behind vsmmud / behind QEMU's \
                     arm-smmuv3,\ngeometric means of reads and writes, {} s per phase, median \
                     of {} rounds (lowest-highest))\n",
                    g.date,
                    g.path.display(),
                    g.seconds_per_phase,
                    g.rounds
                );
                for (k, v, (lo, hi)) in &g.ratios {
                    let _ = writeln!(out, "  {k:<36} {}  ({lo:.2}-{hi:.2})", ratio(*v));
                }
            }
            None => {
                let _ = writeln!(
                    out,
                    "\nguest: no figures (tests/e2e/linux-boot.sh writes vsmmu-guest-bench.json)"
                );
            }
        }
        let _ = writeln!(
            out,
            "\nnote: the sim's vEVENTQ read and host invalidation run in-process (the kernel's \
             are syscalls);\na read(2) of 40 bytes costs {} ns here: with that per read, the \
             server CPU ratio would be about {} (estimate, idle pass).",
            fix(g("read_syscall_ns"), 0),
            ratio(g("server_cpu_ratio_kernel_read_est"))
        );
        let _ = writeln!(out, "\ntargets (reported, not asserted):");
        for tg in self.targets() {
            let v = self.value(tg.key);
            let _ = writeln!(
                out,
                "  [{}] {:<52} {}",
                if tg.met(v) { " met  " } else { "NOT met" },
                tg.name,
                fix(v, 4)
            );
        }
        out
    }
}

/// A four-column text table.
#[derive(Debug, Default)]
struct Table {
    rows: Vec<[String; 4]>,
}

impl Table {
    fn row(&mut self, label: &str, ours: String, base: String, ratio: String) {
        self.rows.push([label.to_string(), ours, base, ratio]);
    }

    fn render(&self, head: [&str; 4]) -> String {
        let mut w = head.map(str::len);
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |c: [&str; 4]| {
            format!(
                "{:<w0$}  {:>w1$}  {:>w2$}  {:>w3$}\n",
                c[0],
                c[1],
                c[2],
                c[3],
                w0 = w[0],
                w1 = w[1],
                w2 = w[2],
                w3 = w[3]
            )
        };
        let mut s = line(head);
        for r in &self.rows {
            s.push_str(&line([&r[0], &r[1], &r[2], &r[3]]));
        }
        s
    }
}

/// A large number with thousands separators.
fn num(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if v < 0.0 {
        out.insert(0, '-');
    }
    out
}

/// A fixed-point number.
fn fix(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        "n/a".into()
    }
}

/// A ratio such as `12.3x`.
fn ratio(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}x")
    } else {
        "n/a".into()
    }
}

/// The CPU model name from `/proc/cpuinfo`.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// `/proc/loadavg`'s three averages.
fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut f = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([f.next()??, f.next()??, f.next()??])
}

/// What machine the figures are from.
fn machine() -> Value {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu_model": cpu_model(),
        "kernel": kernel,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(num(1234567.4), "1,234,567");
        assert_eq!(num(999.0), "999");
        assert_eq!(num(f64::NAN), "n/a");
        assert_eq!(fix(1.25, 1), "1.2");
        assert_eq!(ratio(20.0), "20.00x");
    }

    #[test]
    fn targets_and_json() {
        let plan = crate::Plan::new(true);
        let mut r = Report::new(&plan, Path::new("/x/vsmmud"), 2);
        r.set("propagation_ratio", 25.0);
        r.set("veventq_reads_per_1000_events", 2.5);
        r.set("idle_rss_kib", 3000.0);
        r.set_pass(true);
        r.set("propagation_ratio", 19.0);
        r.set("veventq_reads_per_1000_events", 2.0);
        r.set("mmio_rtt_ratio", 1.9);
        assert_eq!(r.get("propagation_ratio"), 19.0);
        r.set_pass(false);
        assert_eq!(r.get("propagation_ratio"), 25.0);
        let j = r.json();
        assert_eq!(j["propagation_ratio"], 25.0);
        assert_eq!(j["propagation_ratio_contended"], 19.0);
        assert_eq!(j["targets"]["propagation_ratio"]["met"], true);
        assert_eq!(j["targets"]["propagation_ratio_contended"]["met"], false);
        assert_eq!(j["targets"]["veventq_reads_per_1000_events"]["met"], false);
        assert_eq!(
            j["targets"]["veventq_reads_per_1000_events_contended"]["met"],
            true
        );
        // 1.9 is too slow idle, fine contended.
        assert_eq!(j["targets"]["mmio_rtt_ratio_contended"]["met"], true);
        assert_eq!(j["targets"]["idle_rss_kib"]["met"], true);
        // Not measured: null, not met.
        assert_eq!(j["mmio_rtt_ratio"], Value::Null);
        assert_eq!(j["targets"]["mmio_rtt_ratio"]["met"], false);
        assert_eq!(j["mode"], "quick");
        let t = r.table();
        assert!(t.contains("NOT met"));
        assert!(t.contains("contended (2 busy threads"));
    }

    #[test]
    fn no_contended_pass_no_contended_targets() {
        let plan = crate::Plan::new(true);
        let r = Report::new(&plan, Path::new("/x/vsmmud"), 0);
        let j = r.json();
        assert!(j["targets"].get("mmio_rtt_ratio").is_some());
        assert!(j["targets"].get("mmio_rtt_ratio_contended").is_none());
        let t = r.table();
        assert!(!t.contains("contended"));
    }

    #[test]
    fn guest_figures_only_when_the_e2e_wrote_them() {
        let plan = crate::Plan::new(true);
        let mut r = Report::new(&plan, Path::new("/x/vsmmud"), 0);
        let j = r.json();
        assert!(j["targets"].get("guest_blk_iops_ratio_strict").is_none());
        assert!(j.get("guest_bench").is_none());
        assert!(r.table().contains("guest: no figures"));
        r.set_guest(GuestBench {
            path: "/t/vsmmu-guest-bench.json".into(),
            date: "2026-11-30 08:28".into(),
            seconds_per_phase: 2.0,
            rounds: 3,
            ratios: vec![
                ("guest_blk_iops_ratio_strict", 0.75, (0.7, 0.8)),
                ("guest_blk_iops_ratio_lazy", 0.85, (0.8, 0.9)),
            ],
        });
        let j = r.json();
        assert_eq!(j["guest_blk_iops_ratio_lazy"], 0.85);
        assert_eq!(j["targets"]["guest_blk_iops_ratio_strict"]["met"], false);
        assert_eq!(j["targets"]["guest_blk_iops_ratio_lazy"]["met"], true);
        assert_eq!(j["guest_bench"]["date"], "2026-11-30 08:28");
        let t = r.table();
        assert!(t.contains("guest (Linux e2e of 2026-11-30 08:28"));
        assert!(t.contains("guest_blk_iops_ratio_lazy            0.85x  (0.80-0.90)"));
        assert!(t.contains("median of 3 rounds"));
    }
}
