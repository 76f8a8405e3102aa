//! The data dir's exclusive lock: one agent per data dir.
//!
//! Two agents on one data dir would both roll out every commit and stop each other's
//! instances, and a second one failing to start would already have marked the first one's
//! runs interrupted. So the very first thing an agent does is take an advisory `flock` on
//! `<data-dir>/agent.lock` (released by the kernel when the process dies, `kill -9`
//! included) and write its pid there for the message another agent shows.
//!
//! A start that fails leaves no data dir behind when there was none: [`Created`] removes
//! it on drop unless told to keep it.

use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::AgentError;

const LOCK_FILE: &str = "agent.lock";

/// Held for the agent's lifetime; dropping it releases the lock.
#[derive(Debug)]
pub struct DataDir {
    _file: std::fs::File,
}

/// Removes a data dir this start created, unless [`Created::keep`] was called.
#[derive(Debug)]
pub struct Created(Option<PathBuf>);

impl Created {
    pub fn keep(&mut self) {
        self.0 = None;
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl DataDir {
    /// Creates `dir` if needed and takes its lock, or says which agent holds it.
    pub fn acquire(dir: &Path) -> Result<(DataDir, Created), AgentError> {
        let io = |source| AgentError::DataDir {
            path: dir.to_owned(),
            source,
        };
        // Only a directory this call made is removed again: `create_dir` tells, where an
        // `exists()` check would race with another agent starting on the same path.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut created = match std::fs::create_dir(dir) {
            Ok(()) => Created(Some(dir.to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Created(None),
            Err(e) => return Err(io(e)),
        };
        let path = dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|source| AgentError::DataDir {
                path: path.clone(),
                source,
            })?;
        // SAFETY: flock only acts on the descriptor, which `file` keeps open.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                // The directory belongs to the agent holding the lock.
                created.keep();
                return Err(AgentError::Locked {
                    path: dir.to_owned(),
                    holder: text.trim().parse().ok(),
                });
            }
            return Err(AgentError::DataDir { path, source: err });
        }
        let write_pid = |file: &mut std::fs::File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            writeln!(file, "{}", std::process::id())
        };
        write_pid(&mut file).map_err(|source| AgentError::DataDir { path, source })?;
        Ok((DataDir { _file: file }, created))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let (held, _) = DataDir::acquire(dir.path()).unwrap();
        match DataDir::acquire(dir.path()) {
            Err(AgentError::Locked { holder, .. }) => {
                assert_eq!(holder, Some(std::process::id()))
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(held);
        assert!(DataDir::acquire(dir.path()).is_ok(), "released on drop");
    }

    #[test]
    fn a_data_dir_made_by_a_failed_start_is_removed() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("new");
        {
            let (_lock, _created) = DataDir::acquire(&dir).unwrap();
            assert!(dir.exists());
        }
        assert!(!dir.exists());
        let (_lock, mut created) = DataDir::acquire(&dir).unwrap();
        created.keep();
        drop(created);
        assert!(dir.exists());
    }
}
