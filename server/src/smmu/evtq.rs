//! The EventQueue: event records into the guest's queue, and the host
//! vEVENTQ records that feed it.
//!
//! Host records are accounted one way each (docs/design.md, "Event
//! accounting"): written into the guest queue, dropped because the guest
//! queue and the bounded buffer were full, dropped because EVENTQEN = 0, or
//! waiting in the buffer. Host loss (LOST records and sequence gaps) and
//! buffer overflow reach the guest as EVENTQ_PROD.OVFLG, which toggles only
//! once the previous overflow was acknowledged through EVENTQ_CONS.OVACKFLG.

use std::collections::VecDeque;

use vsmmu_protocol::iommufd::{parse_vevents, Vevent, VEVENT_SEQ_MASK};
use vsmmu_protocol::smmu::queue::{QueueBase, EVENT_ENTRY_SIZE};
use vsmmu_protocol::smmu::regs::*;

use super::{Ctx, EvtqRegs, Registers};
use crate::irq::IRQ_EVENTQ;

/// Most `read(2)` calls spent draining a vEVENTQ that is being freed
/// (each takes up to 1,638 records: more than a queue of 2^19 in total).
const MAX_DRAIN_READS: usize = 512;

/// Smallest default for the bounded buffer of host records.
const MIN_BUFFER: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Pending {
    rec: [u64; 4],
    /// From the host vEVENTQ (counted in the identities), or raised by the model.
    host: bool,
}

/// The allocated vEVENTQ as the model tracks it.
#[derive(Debug, Clone, Copy)]
struct Veventq {
    /// Guest queue LOG2SIZE it was sized for.
    log2size: u8,
    /// Sequence the next record should carry.
    expected: u32,
}

/// The bounded buffer and the vEVENTQ lifetime behind the guest EVENTQ,
/// whose registers ([`EvtqRegs`]) the methods are handed with the rest of
/// the register block.
#[derive(Debug)]
pub(crate) struct EventQueue {
    buffer: VecDeque<Pending>,
    buffer_override: Option<usize>,
    overflow_pending: bool,
    veventq: Option<Veventq>,
    generation: u64,
    /// Events lost in the current burst (0: no burst), for one log line per burst.
    burst_lost: u64,
    /// Migration STOP: guest memory must not change; records wait.
    pub paused: bool,
    /// Reused serialization buffer for runs of records.
    scratch: Vec<u8>,
}

impl EventQueue {
    /// A queue at reset; `buffer` overrides the bounded buffer's size.
    pub(crate) fn new(buffer: Option<usize>) -> Self {
        EventQueue {
            buffer: VecDeque::new(),
            buffer_override: buffer,
            overflow_pending: false,
            veventq: None,
            generation: 0,
            burst_lost: 0,
            paused: false,
            scratch: Vec::new(),
        }
    }

    fn capacity(&self, q: &EvtqRegs) -> usize {
        self.buffer_override
            .unwrap_or_else(|| (q.queue().entries() as usize).max(MIN_BUFFER))
    }

    /// Host records waiting in the buffer.
    pub(crate) fn host_buffered(&self) -> usize {
        self.buffer.iter().filter(|p| p.host).count()
    }

    /// Changes whenever the vEVENTQ is allocated or freed.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Device reset (the registers are reset by the caller): frees the
    /// vEVENTQ; buffered host records are dropped (and counted).
    pub(crate) fn reset(&mut self, ctx: &mut Ctx<'_>) {
        // Buffered records first: the drain below must not count them.
        let dropped = self.host_buffered() as u64;
        ctx.stats.guest_events_dropped += dropped;
        if dropped > 0 {
            log::warn!("device reset dropped {dropped} buffered host events");
        }
        self.buffer.clear();
        self.free_veventq(ctx);
        *self = EventQueue {
            generation: self.generation,
            paused: self.paused,
            ..EventQueue::new(self.buffer_override)
        };
    }

    /// Frees the vEVENTQ after reading what it still holds: those records
    /// arrived while EVENTQEN was 0 (a queue resize) or are cut by a device
    /// reset, and are counted as `events_dropped_disabled`, never lost
    /// unread.
    pub(crate) fn free_veventq(&mut self, ctx: &mut Ctx<'_>) {
        // Read against registers at reset (EVENTQEN = 0): what is read,
        // and what the buffer holds, is counted as dropped; nothing
        // reaches guest RAM or the model's registers.
        let mut disabled = Registers::default();
        self.deliver_and_free(&mut disabled, ctx);
    }

    /// Frees the vEVENTQ after delivering what it still holds as any read
    /// is delivered, against `regs`: when the host ends the vIOMMU (its
    /// last device detached) the guest's queue is still on, and those
    /// records are faults its devices raised.
    pub(crate) fn deliver_and_free(&mut self, regs: &mut Registers, ctx: &mut Ctx<'_>) {
        if self.veventq.is_none() {
            return;
        }
        let mut buf = vec![0u8; 64 * 1024];
        // Bounded: a device that keeps faulting must not hold the server
        // here (what arrives later is dropped with the queue, as the
        // kernel drops it).
        for _ in 0..MAX_DRAIN_READS {
            match ctx.host.read_veventq(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    ctx.stats.veventq_read_calls += 1;
                    self.host_records(&buf[..n], regs, ctx);
                }
                Err(e) => {
                    log::warn!("draining the vEVENTQ before freeing it: {e}");
                    break;
                }
            }
        }
        self.veventq = None;
        ctx.host.free_veventq();
        self.generation += 1;
    }

    /// EVENTQEN rose: make sure a vEVENTQ sized for the guest queue exists.
    /// It lives until device reset or a guest queue size change.
    pub(crate) fn enable(&mut self, q: &EvtqRegs, max_log2: u32, ctx: &mut Ctx<'_>) {
        let log2size = QueueBase::decode(q.base).queue(max_log2 as u8).log2size();
        if self.veventq.is_some_and(|v| v.log2size == log2size) {
            return;
        }
        self.free_veventq(ctx);
        let depth = 1u32 << log2size;
        match ctx.host.alloc_veventq(depth) {
            Ok(()) => {
                self.veventq = Some(Veventq {
                    log2size,
                    expected: ctx.host.veventq_first_seq(),
                });
                self.generation += 1;
                log::info!("vEVENTQ allocated with depth {depth}");
            }
            // No vIOMMU before the first device: device_attached retries.
            Err(e) if e.errno == libc::ENODEV => {
                log::info!("vEVENTQ (depth {depth}) deferred until the first device is attached")
            }
            Err(e) => log::error!("vEVENTQ allocation (depth {depth}) failed: host events will not reach the guest: {e}"),
        }
    }

    /// Records read from the vEVENTQ: account sequence gaps, then write
    /// them into the guest queue (or the buffer while it is full).
    pub(crate) fn host_records(&mut self, buf: &[u8], regs: &mut Registers, ctx: &mut Ctx<'_>) {
        let enabled = CR0_EVTQEN.is_set32(regs.cr0);
        for rec in parse_vevents(buf) {
            let rec = match rec {
                Ok(r) => r,
                Err(e) => {
                    log::error!("malformed vEVENTQ data, rest of this read skipped: {e}");
                    break;
                }
            };
            let Some(v) = self.veventq.as_mut() else {
                log::warn!("vEVENTQ record without an allocated vEVENTQ: dropped");
                break;
            };
            // Sequences wrap from INT_MAX to 0: the gap is taken modulo 2^31.
            let gap = rec.seq().wrapping_sub(v.expected) & VEVENT_SEQ_MASK;
            v.expected = rec.seq().wrapping_add(1) & VEVENT_SEQ_MASK;
            match rec {
                Vevent::Lost { .. } => self.host_loss(u64::from(gap) + 1, ctx),
                Vevent::Event { evt, .. } => {
                    if gap > 0 {
                        self.host_loss(gap.into(), ctx);
                    }
                    ctx.stats.host_events_read += 1;
                    if enabled {
                        // Written below, in one pass for the whole read.
                        self.buffer.push_back(Pending {
                            rec: evt,
                            host: true,
                        });
                    } else {
                        ctx.stats.events_dropped_disabled += 1;
                    }
                }
            }
        }
        // What fits goes into the guest queue; the rest waits in the
        // buffer, and only what exceeds its bound is dropped.
        let written = self.write_pending(regs, ctx);
        self.signal(written, regs.irq_ctrl, ctx);
    }

    fn host_loss(&mut self, n: u64, ctx: &mut Ctx<'_>) {
        ctx.stats.host_events_lost += n;
        self.overflow_pending = true;
        self.note_loss(n, "the host vEVENTQ overflowed");
    }

    fn note_loss(&mut self, n: u64, why: &str) {
        if self.burst_lost == 0 {
            log::warn!("events lost: {why} ({n} so far); more losses in this burst are counted, not logged");
        }
        self.burst_lost += n;
    }

    /// Queues an event raised by the model itself (e.g. C_BAD_STE at
    /// CFGI_STE); [`EventQueue::deliver`] writes it.
    pub(crate) fn push_model_event(&mut self, rec: [u64; 4], q: &EvtqRegs, ctx: &mut Ctx<'_>) {
        ctx.stats.model_events += 1;
        self.buffer.push_back(Pending { rec, host: false });
        self.trim(q, ctx);
    }

    /// Drops the newest records beyond the buffer's bound, signalling overflow.
    fn trim(&mut self, q: &EvtqRegs, ctx: &mut Ctx<'_>) {
        while self.buffer.len() > self.capacity(q) {
            if let Some(p) = self.buffer.pop_back() {
                if p.host {
                    ctx.stats.guest_events_dropped += 1;
                }
                self.overflow_pending = true;
                self.note_loss(1, "the guest EVENTQ and the event buffer are full");
            }
        }
    }

    /// Writes buffered records while the guest queue has room, signals
    /// OVFLG for pending losses and the EVENTQ interrupt for new records.
    pub(crate) fn deliver(&mut self, regs: &mut Registers, ctx: &mut Ctx<'_>) {
        let written = self.write_pending(regs, ctx);
        self.signal(written, regs.irq_ctrl, ctx);
    }

    fn signal(&mut self, written: u64, irq_ctrl: u32, ctx: &mut Ctx<'_>) {
        if written == 0 {
            return;
        }
        if self.burst_lost > 0 && self.buffer.is_empty() {
            log::info!("loss burst over: {} events lost in it", self.burst_lost);
            self.burst_lost = 0;
        }
        if IRQ_CTRL_EVTQ_IRQEN.is_set32(irq_ctrl) && ctx.irqs.trigger(IRQ_EVENTQ) {
            ctx.stats.irqs[IRQ_EVENTQ] += 1;
        }
    }

    /// Moves records from the buffer into the guest queue while it has
    /// room; returns how many were written. Trims the buffer to its bound.
    fn write_pending(&mut self, regs: &mut Registers, ctx: &mut Ctx<'_>) -> u64 {
        if !CR0_EVTQEN.is_set32(regs.cr0) {
            for p in self.buffer.drain(..) {
                if p.host {
                    ctx.stats.events_dropped_disabled += 1;
                }
            }
            self.overflow_pending = false;
            return 0;
        }
        // No guest RAM (between clients) or stopped for migration: keep
        // records for later.
        if !self.paused && ctx.mem.mappings().next().is_some() {
            self.write_to_guest(regs, ctx)
        } else {
            self.trim(&regs.evtq, ctx);
            0
        }
    }

    fn write_to_guest(&mut self, regs: &mut Registers, ctx: &mut Ctx<'_>) -> u64 {
        let q = regs.evtq.queue();
        let base = QueueBase::decode(regs.evtq.base);
        let mut written = 0u64;
        // Contiguous runs of slots (up to the wrap or a full queue) are
        // written with one copy each.
        // `free`, not `!is_full`: a guest CONS inconsistent with PROD leaves
        // no room (fuzzing found the busy loop the other test gives).
        while !self.buffer.is_empty() && q.free(regs.evtq.prod, regs.evtq.cons) > 0 {
            let idx = q.index(regs.evtq.prod);
            let run = (q.free(regs.evtq.prod, regs.evtq.cons))
                .min(q.entries() - idx)
                .min(self.buffer.len() as u32) as usize;
            self.scratch.clear();
            for p in self.buffer.iter().take(run) {
                for w in p.rec {
                    self.scratch.extend_from_slice(&w.to_le_bytes());
                }
            }
            let addr = base.entry_addr(idx, EVENT_ENTRY_SIZE);
            if addr.is_none_or(|a| ctx.mem.write(a, &self.scratch).is_err()) {
                if self.buffer.pop_front().is_some_and(|p| p.host) {
                    ctx.stats.guest_events_dropped += 1;
                }
                log::warn!(
                    "EVENTQ write outside guest RAM at base {:#x}: EVENTQ_ABT_ERR",
                    regs.evtq.base
                );
                regs.gerr.raise(GERROR_EVTQ_ABT_ERR, regs.irq_ctrl, ctx);
                break;
            }
            for p in self.buffer.drain(..run) {
                if p.host {
                    ctx.stats.guest_events_written += 1;
                }
            }
            let prod = regs.evtq.prod;
            regs.evtq.prod = q.with_ptr(prod, prod.wrapping_add(run as u32));
            written += run as u64;
        }
        self.trim(&regs.evtq, ctx);
        if self.overflow_pending {
            self.overflow_pending = false;
            // Toggle only once the previous overflow was acknowledged.
            let r = &mut regs.evtq;
            if (r.prod & Q_PROD_OVFLG) == (r.cons & Q_CONS_OVACKFLG) {
                r.prod ^= Q_PROD_OVFLG;
                ctx.stats.evtq_overflows += 1;
            }
        }
        written
    }
}

/// What of the EventQueue migrates besides its registers (which travel in
/// the register block): the buffered records.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct EventQueueState {
    buffer: Vec<Pending>,
    overflow_pending: bool,
}

impl EventQueue {
    /// The migratable state.
    pub(crate) fn save(&self) -> EventQueueState {
        EventQueueState {
            buffer: self.buffer.iter().copied().collect(),
            overflow_pending: self.overflow_pending,
        }
    }

    /// Loads `st` (the registers are loaded by the caller, which also
    /// re-allocates the vEVENTQ when EVTQEN).
    pub(crate) fn restore(&mut self, st: EventQueueState, ctx: &mut Ctx<'_>) {
        self.free_veventq(ctx);
        ctx.stats.events_buffered = 0;
        self.buffer = st.buffer.into_iter().collect();
        self.overflow_pending = st.overflow_pending;
    }
}
