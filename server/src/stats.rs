//! The counters reported by `VSMMU_GET_STATS`: one [`Stats`], defined with
//! the wire formats (`vsmmu_protocol::stats`) so that both ends read the
//! same fields; the server counts them where the events happen.

pub(crate) use vsmmu_protocol::stats::Stats;
