//! Health: probing a server the way the health standard says, and (later) the state
//! machine, the monitor loop and recovery. Probes never deploy anything.

pub mod probe;

pub use probe::{ProbeOutcome, ProbeResult, Prober};
