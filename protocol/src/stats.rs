//! The counters of `VSMMU_GET_STATS` (their identities: docs/design.md,
//! "Event accounting").
//!
//! The reply carries them as one JSON object whose keys are the field
//! names below (the README's extension command table). vsmmud fills a
//! [`Stats`] and sends [`Stats::to_json`]; a client reads it back with
//! [`Stats::from_json`], so both ends name every counter by its field.

use serde::{Deserialize, Serialize};

/// Every counter of the server. Monotonic unless noted.
///
/// A counter the sender does not know (an older vsmmud) reads as 0, and
/// one the receiver does not know (a newer vsmmud) is ignored, so client
/// and server need not be built from the same version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
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
    /// Interrupts signalled per irq index ([`crate::vfio_user::irq`]):
    /// EVENTQ, PRIQ, CMD_SYNC, GERROR.
    pub irqs: [u64; crate::vfio_user::irq::COUNT],
    /// MSI writes the model made into guest memory (CMD_SYNC MSI).
    pub msi_writes: u64,
    /// vfio-user messages handled.
    pub messages: u64,
    /// Posted (no-reply) commands that failed: logged, never lost silently.
    pub posted_errors: u64,
    /// Error replies sent.
    pub error_replies: u64,
    /// Clients that negotiated VERSION since start.
    pub clients: u64,
    /// `VSMMU_TRANSLATE` requests (VMM-emulated devices).
    pub translations: u64,
    /// Those that faulted.
    pub translation_faults: u64,
    /// Granules translated along with them (`TRANSLATE_AHEAD`,
    /// `TRANSLATE_BEHIND`).
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
    /// Waits for the client that did not poll because the CPUs were
    /// overcommitted (`vsmmu_protocol::run_queue`).
    pub polls_skipped_busy: u64,
    /// Times the event loop went to sleep in the poller (each is a wakeup).
    pub loop_sleeps: u64,
    /// The adaptive polling window now, ns (a gauge).
    pub poll_window_ns: u64,
    /// The host SMMU's IDR0..IDR5 as `IOMMU_GET_HW_INFO` reported them (the
    /// sim: its own), all zero until known (a gauge).
    pub host_idr: [u32; 6],
}

impl Stats {
    /// The counters as a JSON object (the `VSMMU_GET_STATS` reply after its
    /// `argsz, flags`).
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain integers cannot fail; `{}` keeps this total.
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }

    /// Where the host records read so far went: into the guest EVENTQ,
    /// dropped (guest queue and buffer full, or EVENTQEN = 0), or still
    /// buffered. Always `host_events_read` (docs/design.md, "Event
    /// accounting").
    pub fn host_events_accounted(&self) -> u64 {
        self.guest_events_written
            .saturating_add(self.guest_events_dropped)
            .saturating_add(self.events_dropped_disabled)
            .saturating_add(self.events_buffered)
    }

    /// Reads the counters from a `VSMMU_GET_STATS` reply's JSON object.
    pub fn from_json(json: &[u8]) -> Result<Stats, serde_json::Error> {
        serde_json::from_slice(json)
    }

    /// Reads a `VSMMU_GET_STATS` reply's JSON after checking that it is
    /// what vsmmud sends: one JSON object whose values are counters
    /// (unsigned integers, or arrays of them), known to [`Stats`] or not,
    /// with the known ones well typed.
    pub fn check_json(json: &[u8]) -> Result<Stats, String> {
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(json).map_err(|e| e.to_string())?;
        let counter = |v: &serde_json::Value| {
            v.is_u64() || v.as_array().is_some_and(|a| a.iter().all(|x| x.is_u64()))
        };
        if let Some((k, _)) = map.iter().find(|(_, v)| !counter(v)) {
            return Err(format!("stats: {k:?} is not a counter"));
        }
        serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| e.to_string())
    }
}

/// The JSON object, as on the wire.
impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_json()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_every_counter() {
        let s = Stats {
            host_events_read: 7,
            irqs: [1, 2, 3, 4],
            clients: 2,
            poll_window_ns: 10_000,
            host_idr: [0x0d48_101a, 0x0273_0510, 0, 0x1400, 0, 0x75],
            ..Stats::default()
        };
        assert_eq!(Stats::from_json(&s.to_json()).unwrap(), s);
        let placed = Stats {
            guest_events_written: 1,
            guest_events_dropped: 2,
            events_dropped_disabled: 4,
            events_buffered: 8,
            ..s
        };
        assert_eq!(placed.host_events_accounted(), 15);
        assert_eq!(s.to_string().as_bytes(), s.to_json());
    }

    #[test]
    fn the_wire_names_are_the_field_names() {
        let json = String::from_utf8(Stats::default().to_json()).unwrap();
        for key in [
            "\"host_events_read\":0",
            "\"irqs\":[0,0,0,0]",
            "\"host_idr\":[0,0,0,0,0,0]",
            "\"poll_window_ns\":0",
        ] {
            assert!(json.contains(key), "{key} in {json}");
        }
        assert!(json.starts_with("{\"host_events_read\":"), "{json}");
    }

    #[test]
    fn missing_counters_read_zero_and_unknown_ones_are_ignored() {
        let s = Stats::from_json(br#"{"cmd_syncs": 3, "counted_by_a_newer_vsmmud": 1}"#).unwrap();
        assert_eq!(
            s,
            Stats {
                cmd_syncs: 3,
                ..Stats::default()
            }
        );
        assert!(Stats::from_json(b"7").is_err());
        assert!(Stats::from_json(br#"{"cmd_syncs": -1}"#).is_err());
    }

    #[test]
    fn check_json_takes_objects_of_counters_only() {
        assert_eq!(
            Stats::check_json(br#"{"cmds_consumed":7,"irqs":[1,2,3,4]}"#),
            Ok(Stats {
                cmds_consumed: 7,
                irqs: [1, 2, 3, 4],
                ..Stats::default()
            })
        );
        // A counter this version does not know is fine.
        assert_eq!(
            Stats::check_json(br#"{"a_newer_counter":5,"b":[0]}"#),
            Ok(Stats::default())
        );
        assert_eq!(Stats::check_json(b"{}"), Ok(Stats::default()));
        for bad in [
            &b"[]"[..],
            b"[1,2]",
            br#"{"x":"str"}"#,
            br#"{"y":[1,"2"]}"#,
            br#"{"z":-1}"#,
            br#"{"cmds_consumed":"7"}"#,
            b"nope",
        ] {
            assert!(
                Stats::check_json(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
