//! Where manifests come from: the files of a manifest repository checkout.
//!
//! Later this module also owns git (clone, fetch, the poll loop, webhooks and the local
//! watch); it never deploys anything.

mod files;

pub use files::{ReadError, read_repo_files, read_text};
