//! All integration tests, built as one binary so they share one build and one link.

mod agent_image;
mod api;
mod client_configs;
mod client_programs;
mod config_cli;
mod crash;
mod docker_runtime;
mod events;
mod gateway;
mod gateway_receiver;
mod gitops;
mod gitops_docker;
mod health;
mod holes;
mod hooks;
#[path = "../kit/mod.rs"]
mod kit;
mod manifest_fuzz;
mod mcp_probe;
mod mcp_tools;
mod new_user;
mod process_runtime;
mod profiles;
mod registry;
mod rollback;
mod schemathesis;
mod service;
mod status_page;
mod store_faults;
mod support;
mod swarm;
mod swarm_kit;
mod tidy;
mod tool_guard;
mod upgrades;
mod validate;
