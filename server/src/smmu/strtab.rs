//! The StreamTable: reads a StreamID's STE from guest RAM (linear or
//! 2-level) and turns it into a host configuration: abort, bypass, or a
//! nested vSTE.
//!
//! Configuration errors are architecturally raised by transactions, and on
//! a real host the kernel installs an abort STE for a vSTE it refuses, so
//! no transaction would ever report it. Hence one deliberate addition
//! (docs/design.md, "Configuration errors"): a valid STE that this SMMU or the host refuses raises one
//! C_BAD_STE (F_STE_FETCH if it cannot be read) when the guest issues
//! CFGI_STE / CFGI_STE_RANGE for it, and the StreamID is aborted. STEs of
//! StreamIDs without a host device are never read.

use vsmmu_protocol::smmu::event::Event;
use vsmmu_protocol::smmu::ste::{Ste, SteCaps, SteConfig, SteError};
use vsmmu_protocol::smmu::strtab::{L1Std, SteLocation, StrtabCaps, StrtabConfig};

use super::Ctx;
use crate::host::SteAction;

/// STRTAB_BASE / STRTAB_BASE_CFG: the stream table is its two registers
/// (part of the register block, [`super::Registers`]); its methods read
/// guest RAM through them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct StreamTable {
    /// SMMU_STRTAB_BASE.
    pub base: u64,
    /// SMMU_STRTAB_BASE_CFG.
    pub base_cfg: u32,
}

/// What installing a configuration (and consuming commands) depends on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InstallEnv {
    /// Advertised ID registers.
    pub idr: [u32; 6],
    /// CR0.SMMUEN.
    pub smmu_enabled: bool,
    /// GBPA.ABORT (used while SMMUEN = 0).
    pub gbpa_abort: bool,
}

/// What the stream table says of one transaction of a StreamID, as an
/// emulated SMMUv3 decides it (`VSMMU_TRANSLATE`, for devices the VMM
/// emulates): every configuration error is an event, once per transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnCheck {
    /// Go on: the configuration is valid (translation continues through the
    /// StreamID's installed configuration).
    Proceed,
    /// Terminated without an event (STE Config = abort, or the SMMU
    /// disabled with GBPA.ABORT).
    Abort,
    /// Terminated with this event: C_BAD_STREAMID, F_STE_FETCH, C_BAD_STE.
    Event([u64; 4]),
}

/// Why a StreamID is aborted, and the event to raise (if any).
enum Refusal {
    /// Not a valid configuration: abort, raise nothing.
    Quiet(String),
    /// Raise this event record.
    Event([u64; 4], String),
}

impl StreamTable {
    /// Derives the configuration of `sid` and installs it on the host.
    /// Returns the event to raise when the guest's STE is refused.
    pub(crate) fn install(
        &self,
        sid: u32,
        env: &InstallEnv,
        ctx: &mut Ctx<'_>,
    ) -> Option<[u64; 4]> {
        let action = if env.smmu_enabled {
            self.action_for(sid, env, ctx)
        } else if env.gbpa_abort {
            Ok(SteAction::Abort)
        } else {
            Ok(SteAction::Bypass)
        };
        let (action, refusal) = match action {
            Ok(a) => (a, None),
            Err(r) => (SteAction::Abort, Some(r)),
        };
        let mut event = None;
        match ctx.host.install_ste(sid, action) {
            Ok(()) => {}
            Err(e) => {
                // The host refused the nested vSTE: the guest sees C_BAD_STE.
                log::warn!("vSID {sid:#x}: host refused the STE: {e}: aborting, C_BAD_STE");
                event = Some(Event::c_bad_ste(sid, None).encode());
                if let Err(e) = ctx.host.install_ste(sid, SteAction::Abort) {
                    log::error!("vSID {sid:#x}: cannot install abort: {e}");
                }
            }
        }
        match refusal {
            Some(Refusal::Event(rec, why)) => {
                log::warn!("vSID {sid:#x}: {why}: aborting, event {:#x}", rec[0] & 0xff);
                Some(rec)
            }
            Some(Refusal::Quiet(why)) => {
                log::debug!("vSID {sid:#x}: {why}: aborting");
                event
            }
            None => event,
        }
    }

    /// The stream table's verdict on one transaction of `sid` (`ssid` for
    /// the event record): an unreadable table is F_STE_FETCH; a StreamID
    /// the table does not cover (beyond SIDSIZE, the table's size, or a
    /// level-1 descriptor's span, which is 0 in an unused descriptor) is
    /// C_BAD_STREAMID; STE.V = 0 or a configuration this SMMU does not
    /// support is C_BAD_STE. Unlike [`StreamTable::install`] nothing is
    /// quiet here: the architecture reports each of these per transaction.
    pub(crate) fn check_transaction(
        &self,
        sid: u32,
        ssid: Option<u32>,
        env: &InstallEnv,
        ctx: &mut Ctx<'_>,
    ) -> TxnCheck {
        if !env.smmu_enabled {
            return if env.gbpa_abort {
                TxnCheck::Abort
            } else {
                TxnCheck::Proceed
            };
        }
        let caps = StrtabCaps::from_idr(env.idr[0], env.idr[1]);
        let cfg = StrtabConfig::decode(self.base, self.base_cfg, &caps);
        let bad_streamid = TxnCheck::Event(Event::c_bad_streamid(sid, ssid).encode());
        let addr = match cfg.ste_location(sid) {
            Err(_) => return bad_streamid,
            Ok(SteLocation::Linear { ste_addr }) => ste_addr,
            Ok(SteLocation::TwoLevel {
                l1_desc_addr,
                l2_index,
            }) => {
                let Ok(desc) = ctx.mem.read_u64s::<1>(l1_desc_addr) else {
                    return TxnCheck::Event(Event::f_ste_fetch(sid, ssid, l1_desc_addr).encode());
                };
                match cfg.l2_ste_addr(L1Std::decode(desc[0]), l2_index) {
                    Ok(a) => a,
                    Err(_) => return bad_streamid,
                }
            }
        };
        let mut bytes = [0u8; 64];
        if ctx.mem.read(addr, &mut bytes).is_err() {
            return TxnCheck::Event(Event::f_ste_fetch(sid, ssid, addr).encode());
        }
        let caps = SteCaps::from_idr(env.idr[0], env.idr[1], env.idr[5]);
        match Ste::from_bytes(&bytes).validate(&caps) {
            Ok(SteConfig::Abort) => TxnCheck::Abort,
            Ok(_) => TxnCheck::Proceed,
            Err(_) => TxnCheck::Event(Event::c_bad_ste(sid, ssid).encode()),
        }
    }

    /// Re-installs the configuration of every attached StreamID.
    pub(crate) fn install_all(
        &self,
        attached: &[u32],
        env: &InstallEnv,
        ctx: &mut Ctx<'_>,
    ) -> Vec<[u64; 4]> {
        attached
            .iter()
            .filter_map(|&sid| self.install(sid, env, ctx))
            .collect()
    }

    fn action_for(
        &self,
        sid: u32,
        env: &InstallEnv,
        ctx: &mut Ctx<'_>,
    ) -> Result<SteAction, Refusal> {
        let addr = self.ste_addr(sid, env, ctx)?;
        let mut bytes = [0u8; 64];
        if let Err(e) = ctx.mem.read(addr, &mut bytes) {
            return Err(Refusal::Event(
                Event::f_ste_fetch(sid, None, addr).encode(),
                format!("STE fetch at {addr:#x}: {e}"),
            ));
        }
        let ste = Ste::from_bytes(&bytes);
        let caps = SteCaps::from_idr(env.idr[0], env.idr[1], env.idr[5]);
        match ste.validate(&caps) {
            Ok(SteConfig::Abort) => Ok(SteAction::Abort),
            Ok(SteConfig::Bypass) => Ok(SteAction::Bypass),
            Ok(cfg @ SteConfig::S1Translate(_)) => Ok(SteAction::Nested { ste: cfg.to_vste() }),
            Err(SteError::NotValid) => Err(Refusal::Quiet("STE.V = 0".into())),
            Err(e) => Err(Refusal::Event(
                Event::c_bad_ste(sid, None).encode(),
                e.to_string(),
            )),
        }
    }

    fn ste_addr(&self, sid: u32, env: &InstallEnv, ctx: &mut Ctx<'_>) -> Result<u64, Refusal> {
        let caps = StrtabCaps::from_idr(env.idr[0], env.idr[1]);
        let cfg = StrtabConfig::decode(self.base, self.base_cfg, &caps);
        // A StreamID the table does not cover would be C_BAD_STREAMID on a
        // transaction; the host simply aborts it.
        let quiet = |e: vsmmu_protocol::smmu::strtab::StrtabError| Refusal::Quiet(e.to_string());
        match cfg.ste_location(sid).map_err(quiet)? {
            SteLocation::Linear { ste_addr } => Ok(ste_addr),
            SteLocation::TwoLevel {
                l1_desc_addr,
                l2_index,
            } => {
                let desc = ctx.mem.read_u64s::<1>(l1_desc_addr).map_err(|e| {
                    Refusal::Event(
                        Event::f_ste_fetch(sid, None, l1_desc_addr).encode(),
                        format!("L1STD fetch at {l1_desc_addr:#x}: {e}"),
                    )
                })?;
                cfg.l2_ste_addr(L1Std::decode(desc[0]), l2_index)
                    .map_err(quiet)
            }
        }
    }
}
