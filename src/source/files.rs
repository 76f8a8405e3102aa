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
    #[error(
        "{path} is not UTF-8 text: byte 0x{byte:02x} at offset {offset} (line {line}, column {column})"
    )]
    NotText {
        path: PathBuf,
        byte: u8,
        offset: usize,
        line: usize,
        column: usize,
    },
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
    // Not UTF-8 is not a read error: `check` reports it as the file's first problem.
    let manifest = TextFile::from_bytes(shown(manifest), read_bytes(&dir.join(manifest))?);

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
            policies.push(TextFile::from_bytes(shown(&rel), read_bytes(&path)?));
        }
    }

    let trust_path = dir.join(REPO_TRUST_FILE);
    let trust = if trust_path.is_file() {
        Some(TextFile::from_bytes(
            shown(Path::new(REPO_TRUST_FILE)),
            read_bytes(&trust_path)?,
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

fn read_bytes(path: &Path) -> Result<Vec<u8>, ReadError> {
    fs::read(path).map_err(|source| ReadError::Read {
        path: path.to_owned(),
        source,
    })
}

/// A file that must be text (a setting's file); one that is not UTF-8 is an error that
/// says where its first bad byte is.
pub fn read_text(path: &Path) -> Result<String, ReadError> {
    let file = TextFile::from_bytes(path.display().to_string(), read_bytes(path)?);
    match file.not_utf8 {
        None => Ok(file.text),
        Some(bad) => Err(ReadError::NotText {
            path: path.to_owned(),
            byte: bad.byte,
            offset: bad.offset,
            line: bad.at.line,
            column: bad.at.column,
        }),
    }
}
