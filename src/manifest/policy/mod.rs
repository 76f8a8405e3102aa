//! Named update policies and the operator's trust policy.
//!
//! Update policies say *how* a server follows new versions; the trust policy says *what* a
//! pushed commit may make this host run at all. This module decides; it never does network
//! or clock work.

mod named;
mod resolve;
mod trust;

pub use named::{POLICY_FILE_FIELDS, PolicySet};
pub use resolve::{Resolution, resolve, tag_version};
pub use trust::{TRUST_FIELDS, TrustPolicy};
