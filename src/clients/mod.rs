//! MCP clients' own configuration files, and the signed artifacts they are written from:
//! which clients there are and where their files live (`registry`), the entry each gets for
//! a profile of the gateway (`entry`), edits that touch only the managed entries (`edit`),
//! writing the user's file safely (`deploy`), the agent's signing keys (`keys`), signed and
//! content-addressed configuration artifacts (`artifact`), and the keys an operator's
//! machine trusts (`trust`). Nothing here talks to the gateway or decides which profiles a
//! user wants.

pub mod artifact;
pub mod deploy;
pub mod diff;
pub mod edit;
pub mod entry;
pub mod install;
pub mod keys;
pub mod registry;
pub mod service;
pub mod trust;
pub mod validate;
