//! The manifest repository through git2: a bare mirror in the data dir, fetched on demand,
//! from which a commit's manifest files are read without a checkout.
//!
//! All calls block; async callers use `spawn_blocking`.

use std::path::{Path, PathBuf};

use git2::{Cred, FetchOptions, RemoteCallbacks, Repository, Tree};
use jiff::Timestamp;

use crate::manifest::{REPO_POLICY_DIR, REPO_TRUST_FILE, RepoFiles, TextFile};

/// Where and how to reach the manifest repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitSettings {
    /// A URL (https://, ssh://, git@host:path) or a local path.
    pub url: String,
    pub branch: String,
    /// The manifest's path inside the repository.
    pub manifest_path: String,
    /// A token for https remotes (sent as the password of `x-access-token`).
    pub token: Option<String>,
    /// A private key file for ssh remotes.
    pub ssh_key: Option<PathBuf>,
    /// How long connecting, and each wait for data, may take during a fetch; a whole
    /// fetch may take [`FETCH_BUDGET_FACTOR`] times as long.
    pub timeout: std::time::Duration,
}

/// A fetch that still receives data may run this many times the timeout in all.
pub const FETCH_BUDGET_FACTOR: u32 = 10;

impl GitSettings {
    /// The repository's git directory when `url` is a local path, for the filesystem watch.
    pub fn local_git_dir(&self) -> Option<PathBuf> {
        let path = Path::new(&self.url);
        if !path.is_dir() {
            return None;
        }
        let dot_git = path.join(".git");
        if dot_git.is_dir() {
            Some(dot_git)
        } else if path.join("HEAD").is_file() && path.join("refs").is_dir() {
            Some(path.to_owned())
        } else {
            None
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The remote could not be reached or refused us. Retryable.
    #[error("cannot fetch {url}: {message}")]
    Fetch { url: String, message: String },
    /// The remote has no such branch.
    #[error("the remote {url} has no branch `{branch}`")]
    NoBranch { url: String, branch: String },
    #[error("git error in the local mirror {path}")]
    Local {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("commit {commit} not found in the mirror")]
    NoCommit { commit: String },
    /// The remote refused a push, or could not be reached for one.
    #[error("cannot push to {url}: {message}")]
    Push { url: String, message: String },
}

impl GitError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, GitError::Fetch { .. })
    }
}

/// A commit of the manifest repository and the files that decide what runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Revision {
    pub commit: String,
    pub author: Option<String>,
    pub message: Option<String>,
    pub committed_at: Option<Timestamp>,
    /// `None` when the commit has no manifest at the configured path.
    pub files: Option<RepoFiles>,
}

/// The local mirror of the manifest repository.
#[derive(Clone, Debug)]
pub struct GitSource {
    settings: GitSettings,
    mirror: PathBuf,
}

pub(super) const REMOTE: &str = "origin";

impl GitSource {
    /// Opens (initialising if needed) the bare mirror at `mirror`, pointed at the settings' URL.
    pub fn open(settings: GitSettings, mirror: PathBuf) -> Result<GitSource, GitError> {
        let local = |source| GitError::Local {
            path: mirror.clone(),
            source,
        };
        let repo = match Repository::open_bare(&mirror) {
            Ok(r) => r,
            Err(_) => Repository::init_bare(&mirror).map_err(local)?,
        };
        let url = absolute_url(&settings.url);
        match repo.find_remote(REMOTE) {
            Ok(remote) if remote.url().ok() == Some(url.as_str()) => {}
            Ok(_) => repo.remote_set_url(REMOTE, &url).map_err(local)?,
            Err(_) => {
                repo.remote_with_fetch(REMOTE, &url, "+refs/heads/*:refs/remotes/origin/*")
                    .map_err(local)?;
            }
        }
        Ok(GitSource { settings, mirror })
    }

    pub fn settings(&self) -> &GitSettings {
        &self.settings
    }

    pub(super) fn repo(&self) -> Result<Repository, GitError> {
        Repository::open_bare(&self.mirror).map_err(|source| GitError::Local {
            path: self.mirror.clone(),
            source,
        })
    }

    /// Fetches the branch (force-updating it, so rewritten history is followed) and returns
    /// its head commit id.
    pub fn fetch(&self) -> Result<String, GitError> {
        let repo = self.repo()?;
        let url = absolute_url(&self.settings.url);
        let fetch_err = |e: git2::Error| GitError::Fetch {
            url: self.settings.url.clone(),
            message: e.message().to_owned(),
        };
        let mut remote = repo.find_remote(REMOTE).map_err(fetch_err)?;
        let mut callbacks = self.callbacks();
        let deadline = std::time::Instant::now() + self.settings.timeout * FETCH_BUDGET_FACTOR;
        callbacks.transfer_progress(move |_| std::time::Instant::now() < deadline);
        let mut options = FetchOptions::new();
        options.remote_callbacks(callbacks);
        options.prune(git2::FetchPrune::On);
        let refspec = format!(
            "+refs/heads/{0}:refs/remotes/origin/{0}",
            self.settings.branch
        );
        remote
            .fetch(&[refspec.as_str()], Some(&mut options), None)
            .map_err(fetch_err)?;
        drop(remote);
        let reference = format!("refs/remotes/origin/{}", self.settings.branch);
        let head = repo
            .refname_to_id(&reference)
            .map_err(|_| GitError::NoBranch {
                url,
                branch: self.settings.branch.clone(),
            })?;
        Ok(head.to_string())
    }

    /// Credentials for the remote (`--git-token`, `--ssh-key`), and the timeouts every
    /// connection to it is bounded by.
    pub(super) fn callbacks<'a>(&self) -> RemoteCallbacks<'a> {
        let mut callbacks = RemoteCallbacks::new();
        let token = self.settings.token.clone();
        let key = self.settings.ssh_key.clone();
        let mut tries = 0;
        callbacks.credentials(move |_url, username, allowed| {
            // libgit2 asks again after a refused credential; stop instead of looping.
            tries += 1;
            if tries > 2 {
                return Err(git2::Error::from_str("credentials were refused"));
            }
            if allowed.is_ssh_key()
                && let Some(key) = &key
            {
                return Cred::ssh_key(username.unwrap_or("git"), None, key, None);
            }
            if allowed.is_user_pass_plaintext()
                && let Some(token) = &token
            {
                return Cred::userpass_plaintext("x-access-token", token);
            }
            Err(git2::Error::from_str(
                "the remote asks for credentials; give --git-token or --ssh-key",
            ))
        });
        // A remote that accepts and then never answers must not hold the sync loop: bound
        // the connect and every read (libgit2's server timeouts, for http and ssh), and the
        // whole transfer while data trickles in.
        let timeout_ms = i32::try_from(self.settings.timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: these only store an integer in libgit2's global options; they race with
        // nothing that reads them mid-call (each socket reads them when it opens).
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(timeout_ms);
            let _ = git2::opts::set_server_timeout_in_milliseconds(timeout_ms);
        }
        callbacks
    }

    /// The commit `rev` names in the mirror: a commit id or an abbreviation of one, or a
    /// branch of the remote (`main`, `main~2`), as last fetched.
    pub fn resolve(&self, rev: &str) -> Result<String, GitError> {
        let repo = self.repo()?;
        let missing = || GitError::NoCommit {
            commit: rev.to_owned(),
        };
        // Options are not revisions; and `revparse` reads nothing else from the string.
        if rev.is_empty() || rev.starts_with('-') {
            return Err(missing());
        }
        let object = repo
            .revparse_single(rev)
            .or_else(|_| repo.revparse_single(&format!("refs/remotes/{REMOTE}/{rev}")))
            .map_err(|_| missing())?;
        let commit = object.peel_to_commit().map_err(|_| missing())?;
        Ok(commit.id().to_string())
    }

    /// Reads a commit's metadata and its manifest, `policies/` and `trust-policy.yaml`
    /// (the latter two beside the manifest).
    pub fn revision(&self, commit: &str) -> Result<Revision, GitError> {
        let repo = self.repo()?;
        let no_commit = || GitError::NoCommit {
            commit: commit.to_owned(),
        };
        let oid = git2::Oid::from_str(commit).map_err(|_| no_commit())?;
        let c = repo.find_commit(oid).map_err(|_| no_commit())?;
        let tree = c.tree().map_err(|_| no_commit())?;
        let author = c.author();
        let author = match (author.name().ok(), author.email().ok()) {
            (Some(n), Some(e)) => Some(format!("{n} <{e}>")),
            (Some(n), None) => Some(n.to_owned()),
            _ => None,
        };
        let manifest_path = Path::new(&self.settings.manifest_path);
        let base = manifest_path.parent().unwrap_or(Path::new(""));
        let manifest = read_blob(
            &repo,
            &tree,
            manifest_path,
            self.settings.manifest_path.clone(),
        );
        let files = manifest.map(|manifest| {
            let shown = |rel: &Path| base.join(rel).display().to_string();
            let mut policies = Vec::new();
            if let Ok(entry) = tree.get_path(&base.join(REPO_POLICY_DIR))
                && let Ok(dir) = entry.to_object(&repo).and_then(|o| o.peel_to_tree())
            {
                let mut names: Vec<String> = dir
                    .iter()
                    .filter_map(|e| e.name().ok().map(str::to_owned))
                    .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
                    .collect();
                names.sort();
                for name in names {
                    let rel = Path::new(REPO_POLICY_DIR).join(&name);
                    if let Some(file) = read_blob(&repo, &tree, &base.join(&rel), shown(&rel)) {
                        policies.push(file);
                    }
                }
            }
            let trust = read_blob(
                &repo,
                &tree,
                &base.join(REPO_TRUST_FILE),
                shown(Path::new(REPO_TRUST_FILE)),
            );
            RepoFiles {
                manifest,
                policies,
                trust,
            }
        });
        Ok(Revision {
            commit: commit.to_owned(),
            author,
            message: c.summary().ok().flatten().map(str::to_owned),
            committed_at: Timestamp::from_second(c.time().seconds()).ok(),
            files,
        })
    }
}

/// A blob's bytes; `None` when absent (the run then reports a missing manifest). Bytes
/// that are not UTF-8 are `check`'s to report, as an invalid file.
fn read_blob(repo: &Repository, tree: &Tree<'_>, path: &Path, shown: String) -> Option<TextFile> {
    let entry = tree.get_path(path).ok()?;
    // The size comes from the object's header: a blob of gigabytes (which packs into a few
    // megabytes) is never loaded, or reading the commit would exhaust memory before
    // validation could refuse it.
    let size = repo
        .odb()
        .and_then(|odb| odb.read_header(entry.id()))
        .map(|(size, _)| size as u64)
        .ok()?;
    if size > crate::manifest::MAX_FILE_BYTES as u64 {
        return Some(TextFile::too_large(shown, size));
    }
    let blob = entry.to_object(repo).ok()?.peel_to_blob().ok()?;
    Some(TextFile::from_bytes(shown, blob.content().to_vec()))
}

/// Local paths become absolute, so the mirror keeps working whatever the working directory.
fn absolute_url(url: &str) -> String {
    let path = Path::new(url);
    if path.exists() {
        std::fs::canonicalize(path)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| url.to_owned())
    } else {
        url.to_owned()
    }
}
