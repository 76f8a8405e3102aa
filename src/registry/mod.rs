//! Talking to OCI registries: the tags of an image repository and the digest of a tag.
//!
//! It owns everything between an image reference and the registry's HTTP API: resolving
//! the reference the way Docker does (Docker Hub's `library/`, plain HTTP only for
//! loopback registries), authentication (anonymous first, then the Bearer token flow or
//! Basic credentials the registry asks for, with tokens cached until they expire),
//! pagination of tag lists, conditional requests (`If-None-Match`, so an unchanged list
//! costs one request that returns no body), `429 Retry-After`, timeouts, and a cap on
//! concurrent requests per registry host. [`RegistryClient`] is the one entry point.
//!
//! It never chooses versions: which tag to run is `policy`'s decision, made from the
//! [`TagList`] this module returns in the registry's own order. It never writes to a
//! registry and never follows a pagination link to another host.

mod auth;
mod client;
mod reference;

use std::time::Duration;

pub use auth::RegistryAuth;
pub use client::RegistryClient;
pub use reference::{DOCKER_HUB, normalize_registry, registry_host};

/// The tags of one image repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagList {
    /// Every tag, all pages merged, in the order the registry sent them.
    pub tags: Vec<String>,
    /// True when the registry answered 304 to our ETag and the cached list was reused:
    /// nothing changed since the last call.
    pub cached: bool,
}

/// Why a registry call failed. [`RegistryError::is_retryable`] separates the failures
/// worth another poll from those that need a person.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry could not be reached or failed on its side: connection refused, DNS,
    /// TLS, a timeout, or a 5xx answer. Retryable.
    #[error("registry {registry} is unreachable: {message}")]
    Unreachable { registry: String, message: String },
    /// The registry kept answering 429 after the retries, or asked for a longer wait than
    /// a poll should block for. Retryable after `retry_after`.
    #[error("registry {registry} is rate limiting us; retry after {}s", retry_after.as_secs())]
    RateLimited {
        registry: String,
        retry_after: Duration,
    },
    /// The registry does not know the repository (or the tag, for a digest).
    #[error("image {image} was not found in its registry")]
    NotFound { image: String },
    /// The registry refused us after we tried the credentials or token it asked for.
    #[error("registry {registry} refused access: {message}")]
    Unauthorized { registry: String, message: String },
    /// The registry answered something we cannot use: unparseable JSON, an unexpected
    /// status, a pagination link to another host.
    #[error("registry {registry} gave an unusable answer: {message}")]
    Protocol { registry: String, message: String },
    /// The image reference or tag cannot name anything in a registry (e.g. uppercase
    /// letters, `..`), so no request was sent.
    #[error("`{image}` is not a valid image reference: {message}")]
    InvalidReference { image: String, message: String },
}

impl RegistryError {
    /// Whether trying again later can succeed without anyone changing anything: the
    /// registry being down, slow or rate limiting us.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::RateLimited { .. })
    }
}
