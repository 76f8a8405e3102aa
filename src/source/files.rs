//! Reading the files that decide what runs from a directory (a checkout or an export).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::manifest::{REPO_POLICY_DIR, REPO_TRUST_FILE, RepoFiles, TextFile};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The manifest (or a policy file) exists but could not be read, or does not exist.
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not UTF-8 text")]
    NotText { path: PathBuf },
}

/// Reads `manifest` (relative to `dir`) and, beside it in `dir`, the repo's `policies/*.yaml`
/// and `trust-policy.yaml`. Files are named in messages relative to `shown_as`: pass `dir`
/// itself for paths people typed, or `.` inside an export.
pub fn read_repo_files(dir: &Path, manifest: &Path) -> Result<RepoFiles, ReadError> {
    let shown = |rel: &Path| {
        if dir == Path::new(".") || dir.as_os_str().is_empty() {
            rel.display().to_string()
        } else {
            dir.join(rel).display().to_string()
        }
    };
    let manifest = TextFile::new(shown(manifest), read_text(&dir.join(manifest))?);

    let mut policies = Vec::new();
    let policy_dir = dir.join(REPO_POLICY_DIR);
    if policy_dir.is_dir() {
        let entries = fs::read_dir(&policy_dir).map_err(|source| ReadError::Read {
            path: policy_dir.clone(),
            source,
        })?;
        let mut names: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        names.sort();
        for path in names {
            let rel = Path::new(REPO_POLICY_DIR).join(path.file_name().unwrap_or_default());
            policies.push(TextFile::new(shown(&rel), read_text(&path)?));
        }
    }

    let trust_path = dir.join(REPO_TRUST_FILE);
    let trust = if trust_path.is_file() {
        Some(TextFile::new(
            shown(Path::new(REPO_TRUST_FILE)),
            read_text(&trust_path)?,
        ))
    } else {
        None
    };
    Ok(RepoFiles {
        manifest,
        policies,
        trust,
    })
}

pub fn read_text(path: &Path) -> Result<String, ReadError> {
    let bytes = fs::read(path).map_err(|source| ReadError::Read {
        path: path.to_owned(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|_| ReadError::NotText {
        path: path.to_owned(),
    })
}
