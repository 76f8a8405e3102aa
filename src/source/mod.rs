//! Where manifests come from: the manifest repository (git2 mirror, fetch, reading a
//! commit's files) and plain directories (for `validate` and the hooks).
//!
//! The triggers that wake a sync (poll timer, webhook, filesystem watch) live in `agent`;
//! this module never deploys anything.

mod files;
mod git;
mod notes;
pub mod watch;

pub use files::{ReadError, read_repo_files, read_text};
pub use git::{FETCH_BUDGET_FACTOR, GitError, GitSettings, GitSource, Revision};
pub use notes::NOTES_REF;

/// A commit id as people read it: its first 10 characters.
pub fn short_commit(commit: &str) -> &str {
    commit.get(..10).unwrap_or(commit)
}
