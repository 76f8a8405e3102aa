//! Deploy results as git notes: each run's note on its commit under
//! `refs/notes/mcp-orchestration` in the mirror, and the notes ref pushed to the remote, so
//! `git log --notes=mcp-orchestration` shows them beside the history.
//!
//! The remote's notes come first: its ref is fetched and ours are written on top, so a
//! push is a fast-forward even when someone else added notes meanwhile. All calls block.

use git2::{FetchOptions, Oid, PushOptions, Signature};

use super::git::{GitError, GitSource, REMOTE};

/// The notes ref the agent writes, and pushes.
pub const NOTES_REF: &str = "refs/notes/mcp-orchestration";
/// Where the remote's notes ref is fetched to (outside `refs/notes/`, so `git notes` never
/// takes it for a notes ref of its own).
const REMOTE_NOTES: &str = "refs/mcp-orchestration/remote-notes";

impl GitSource {
    /// The note on `commit` in the mirror, if there is one.
    pub fn note(&self, commit: &str) -> Result<Option<String>, GitError> {
        let repo = self.repo()?;
        let oid = Oid::from_str(commit).map_err(|_| GitError::NoCommit {
            commit: commit.to_owned(),
        })?;
        Ok(repo
            .find_note(Some(NOTES_REF), oid)
            .ok()
            .and_then(|n| n.message().ok().map(str::to_owned)))
    }

    /// Writes `notes` (commit, text) on top of the remote's notes and pushes the notes ref.
    /// A note replaces the commit's earlier one; an unchanged note is not written again.
    pub fn publish_notes(&self, notes: &[(String, String)]) -> Result<(), GitError> {
        let repo = self.repo()?;
        let url = self.settings().url.clone();
        let failed = |message: String| GitError::Push {
            url: url.clone(),
            message,
        };
        let local = |source| GitError::Local {
            path: repo.path().to_owned(),
            source,
        };
        let mut remote = repo
            .find_remote(REMOTE)
            .map_err(|e| failed(e.message().to_owned()))?;
        let mut options = FetchOptions::new();
        options.remote_callbacks(self.callbacks());
        remote
            .fetch(
                &[format!("+{NOTES_REF}:{REMOTE_NOTES}")],
                Some(&mut options),
                None,
            )
            .map_err(|e| failed(format!("cannot read its notes: {}", e.message())))?;
        let theirs = repo.refname_to_id(REMOTE_NOTES).ok();
        if let Some(theirs) = theirs {
            repo.reference(
                NOTES_REF,
                theirs,
                true,
                "mcp-orchestration: the remote's notes",
            )
            .map_err(local)?;
        }
        let signature =
            Signature::now("mcp-orchestration", "mcp-orchestration@localhost").map_err(local)?;
        for (commit, text) in notes {
            let oid = Oid::from_str(commit).map_err(|_| GitError::NoCommit {
                commit: commit.clone(),
            })?;
            let current = repo
                .find_note(Some(NOTES_REF), oid)
                .ok()
                .and_then(|n| n.message().ok().map(str::to_owned));
            if current.as_deref() != Some(text.as_str()) {
                repo.note(&signature, &signature, Some(NOTES_REF), oid, text, true)
                    .map_err(local)?;
            }
        }
        let ours = repo.refname_to_id(NOTES_REF).ok();
        if ours.is_none() || ours == theirs {
            return Ok(());
        }
        // A refusal comes back per ref, not as the push's error.
        let refused = std::cell::RefCell::new(None);
        let mut callbacks = self.callbacks();
        callbacks.push_update_reference(|_, status| {
            if let Some(status) = status {
                *refused.borrow_mut() = Some(status.to_owned());
            }
            Ok(())
        });
        let mut options = PushOptions::new();
        options.remote_callbacks(callbacks);
        remote
            .push(&[format!("{NOTES_REF}:{NOTES_REF}")], Some(&mut options))
            .map_err(|e| failed(e.message().to_owned()))?;
        drop(options);
        if let Some(status) = refused.into_inner() {
            return Err(failed(format!("the remote refused {NOTES_REF}: {status}")));
        }
        Ok(())
    }
}
