//! Command line of `vsmmud`.

use clap::{Parser, ValueEnum};

/// Host IOMMU backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HostKind {
    /// Software host SMMU with the kernel's vEVENTQ semantics (default).
    Sim,
    /// Real iommufd on /dev/iommu (or --iommufd-fd).
    Iommufd,
}

/// seccomp mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SeccompMode {
    /// A forbidden syscall kills the process (default).
    Kill,
    /// A forbidden syscall raises SIGSYS; the handler names it and exits.
    Trap,
    /// Forbidden syscalls are logged by the kernel and allowed.
    Log,
    /// No filter.
    Off,
}

/// How the vEVENTQ is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReadMode {
    /// Drain with a buffer of many records until read returns 0 (default).
    Batched,
    /// One 40-byte record per wakeup, as QEMU does (for comparison).
    Single,
}

/// vsmmud: an SMMUv3 served over vfio-user, backed by the host IOMMU.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Args {
    /// Listen on this Unix socket path.
    #[arg(long, conflicts_with = "fd")]
    pub socket_path: Option<std::path::PathBuf>,

    /// Use this inherited file descriptor: a listening or a connected Unix
    /// socket. Without --socket-path and --fd, systemd socket activation
    /// (LISTEN_FDS) is used.
    #[arg(long)]
    pub fd: Option<i32>,

    /// Host IOMMU backend.
    #[arg(long, value_enum, default_value_t = HostKind::Sim)]
    pub host: HostKind,

    /// iommufd host: an already-open /dev/iommu descriptor.
    #[arg(long)]
    pub iommufd_fd: Option<i32>,

    /// sim host: vEVENTQ depth (default: the guest's EVENTQ size, as QEMU sizes the real one).
    #[arg(long)]
    pub sim_veventq_depth: Option<u32>,

    /// sim host: sequence number of the first event (to test the INT_MAX wrap).
    #[arg(long, default_value_t = 0)]
    pub sim_first_seq: u32,

    /// sim host fault injection: invalidation commands with this opcode
    /// fail with EIO (e.g. 0x12 for TLBI_NH_VA).
    #[arg(long, value_parser = parse_u8)]
    pub sim_reject_opcode: Option<u8>,

    /// Do not advertise IDR0.MSI: the guest then completes CMD_SYNC by
    /// polling CMDQ_CONS (MMIO reads) and gets wired interrupts only. By
    /// default IDR0.MSI is advertised: measured faster (README,
    /// "Performance").
    #[arg(long)]
    pub no_msi: bool,

    /// Advertise IDR0.MSI (the default; kept for existing command lines).
    #[arg(long, hide = true, conflicts_with = "no_msi")]
    pub msi: bool,

    /// One host invalidation call per command (as QEMU does), for comparison.
    #[arg(long)]
    pub no_batch: bool,

    /// How the vEVENTQ is read.
    #[arg(long, value_enum, default_value_t = ReadMode::Batched)]
    pub veventq_read: ReadMode,

    /// Host event records kept while the guest queue is full (default: the guest queue size, at least 1024).
    #[arg(long)]
    pub event_buffer: Option<usize>,

    /// Most microseconds to poll for the next client message before
    /// sleeping (the window adapts between 0 and this; 0 = never poll;
    /// the default is KVM's `halt_poll_ns` on x86).
    #[arg(long, default_value_t = 200)]
    pub poll_us: u32,

    /// Largest data transfer in one message, bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_data_xfer_size: u32,

    /// Largest number of simultaneous DMA mappings.
    #[arg(long, default_value_t = 1024)]
    pub max_dma_maps: u32,

    /// Largest number of file descriptors in one message.
    #[arg(long, default_value_t = 8)]
    pub max_msg_fds: u32,

    /// seccomp filter mode.
    #[arg(long, value_enum, default_value_t = SeccompMode::Kill)]
    pub seccomp: SeccompMode,

    /// Confinement after setup: rlimits, network namespace, no
    /// capabilities, landlock (see the README's sandbox section).
    #[arg(long, value_enum, default_value_t = crate::jail::JailMode::On)]
    pub jail: crate::jail::JailMode,

    /// Switch to this numeric user and group after setup (started as root).
    #[arg(long, value_name = "UID:GID", value_parser = crate::jail::parse_user)]
    pub user: Option<(u32, u32)>,

    /// Test hook: read the run queue from PATH instead of `/proc/loadavg`
    /// (polling stops while it shows the CPUs overcommitted).
    #[arg(long, hide = true)]
    pub run_queue_file: Option<std::path::PathBuf>,

    /// Test hook: once jailed, try to open PATH and log the result.
    #[arg(long, hide = true)]
    pub jail_selftest: Option<std::path::PathBuf>,

    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

fn parse_u8(s: &str) -> Result<u8, String> {
    let r = match s.strip_prefix("0x") {
        Some(h) => u8::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s:?}: {e}"))
}
