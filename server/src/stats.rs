//! Counters reported by `VSMMU_GET_STATS` (their identities: docs/design.md,
//! "Event accounting").

use serde::Serialize;

/// Every counter of the server. Monotonic unless noted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Event records read from vEVENTQ fds.
    pub host_events_read: u64,
    /// Events the host dropped (LOST records and sequence gaps).
    pub host_events_lost: u64,
    /// Host records (from the vEVENTQ) written into the guest EVENTQ; the
    /// model's own events are counted in `model_events`.
    pub guest_events_written: u64,
    /// Host records dropped because the guest queue and the buffer were full.
    pub guest_events_dropped: u64,
    /// Host records dropped because EVENTQEN = 0.
    pub events_dropped_disabled: u64,
    /// Host records waiting in the bounded buffer now (a gauge).
    pub events_buffered: u64,
    /// Times EVENTQ_PROD.OVFLG was toggled.
    pub evtq_overflows: u64,
    /// Events the model itself raised: configuration errors found at CFGI
    /// or device attach, and by `VSMMU_TRANSLATE`'s stream table checks.
    pub model_events: u64,
    /// Commands consumed from the guest CMDQ.
    pub cmds_consumed: u64,
    /// Command errors (CMDQ_CONS.ERR set).
    pub cmd_errors: u64,
    /// CMD_SYNCs completed.
    pub cmd_syncs: u64,
    /// `IOMMU_HWPT_INVALIDATE` calls.
    pub host_invalidate_calls: u64,
    /// Entries in those calls.
    pub host_invalidate_entries: u64,
    /// `read(2)` calls on vEVENTQ fds.
    pub veventq_read_calls: u64,
    /// Interrupts signalled per index: EVENTQ, PRIQ, CMD_SYNC, GERROR.
    pub irqs: [u64; 4],
    /// MSI writes the model made into guest memory (CMD_SYNC MSI).
    pub msi_writes: u64,
    /// vfio-user messages handled.
    pub messages: u64,
    /// Posted (no-reply) commands that failed: logged, never lost silently.
    pub posted_errors: u64,
    /// Error replies sent.
    pub error_replies: u64,
    /// Clients accepted since start.
    pub clients: u64,
    /// `VSMMU_TRANSLATE` requests (VMM-emulated devices).
    pub translations: u64,
    /// Those that faulted.
    pub translation_faults: u64,
    /// Granules translated ahead of them (`TRANSLATE_AHEAD`).
    pub translations_ahead: u64,
    /// Invalidation records published to the VMM's ring.
    pub notify_records: u64,
    /// Kick eventfd signals (the VMM asked for acknowledgements).
    pub notify_kicks: u64,
    /// CMD_SYNCs held until the VMM acknowledged (each attempt counted).
    pub notify_sync_waits: u64,
    /// Client messages that arrived while the event loop polled for them.
    pub poll_hits: u64,
    /// Client messages that arrived after a polling window ran out.
    pub poll_misses: u64,
    /// Times the event loop went to sleep in the poller (each is a wakeup).
    pub loop_sleeps: u64,
    /// The adaptive polling window now, ns (a gauge).
    pub poll_window_ns: u64,
    /// The host SMMU's IDR0..IDR5 as `IOMMU_GET_HW_INFO` reported them (the
    /// sim: its own), all zero until known (a gauge).
    pub host_idr: [u32; 6],
}

impl Stats {
    /// The counters as a JSON object.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }
}
