//! mcp-orchestration: a GitOps agent that runs a fleet of MCP servers from a git repository.
//!
//! The binary (`main.rs`) is a thin shell over this library; see `ARCHITECTURE.md` for the
//! pipeline and the code map.

pub mod agent;
pub mod api;
pub mod cli;
pub mod clients;
pub mod error_text;
pub mod fleet;
pub mod gateway;
pub mod health;
pub mod manifest;
pub mod mcp;
pub mod metrics;
pub mod publish;
pub mod reconcile;
pub mod redact;
pub mod registry;
pub mod runtime;
pub mod settings;
pub mod source;
pub mod sse;
pub mod store;
pub mod subscriptions;
pub mod sync_windows;
pub mod ui;
