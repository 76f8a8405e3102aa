//! The log files under `<data_dir>/logs/<server>/<instance>.log`: opened private for the
//! child's stdout and stderr, found again by instance id (also after the instance was
//! removed: logs are history), and tailed from the end.
//!
//! Never deletes a log, and never reads more than [`MAX_TAIL_BYTES`] of one.

use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::ProcessRuntime;
use super::pidfile::parse_instance_id;
use crate::runtime::RuntimeError;

/// At most this much of a log file is read for `logs_tail`, whatever `lines` asks for.
const MAX_TAIL_BYTES: u64 = 1024 * 1024;

impl ProcessRuntime {
    /// The last `lines` lines of instance `id`'s log, read on a blocking thread.
    pub(super) async fn logs_tail_inner(
        &self,
        id: &str,
        lines: usize,
    ) -> Result<String, RuntimeError> {
        let Some(path) = self.log_path(id).await? else {
            return Err(RuntimeError::NotFound(id.to_owned()));
        };
        let read_path = path.clone();
        let tail = tokio::task::spawn_blocking(move || tail_lines(&read_path, lines)).await;
        let message = match tail {
            Ok(Ok(text)) => return Ok(text),
            Ok(Err(err)) => format!("cannot read {}: {err}", path.display()),
            Err(err) => format!("reading {} failed: {err}", path.display()),
        };
        Err(RuntimeError::Operation {
            action: "logs",
            id: id.to_owned(),
            message,
        })
    }

    /// The log of instance `id`: from its pid file, or, once removed, by its name.
    async fn log_path(&self, id: &str) -> Result<Option<PathBuf>, RuntimeError> {
        if let Some((_, file)) = self.find(id).await? {
            return Ok(Some(file.log_path));
        }
        if parse_instance_id(id).is_none() {
            return Ok(None);
        }
        let mut dir = match tokio::fs::read_dir(&self.logs_dir).await {
            Ok(dir) => dir,
            Err(err) => return Err(self.unavailable(&self.logs_dir, &err)),
        };
        while let Ok(Some(entry)) = dir.next_entry().await {
            let candidate = entry.path().join(format!("{id}.log"));
            if tokio::fs::try_exists(&candidate).await.unwrap_or(false) {
                return Ok(Some(candidate));
            }
        }
        Ok(None)
    }
}

pub(super) fn open_log(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        // Servers may print their configuration, secrets included.
        .mode(0o600)
        .open(path)
}

/// The last `lines` lines of the file at `path`, reading backwards from its end in chunks
/// so a large log costs only what is returned (and never more than [`MAX_TAIL_BYTES`]).
fn tail_lines(path: &Path, lines: usize) -> io::Result<String> {
    const CHUNK: u64 = 8 * 1024;
    if lines == 0 {
        return Ok(String::new());
    }
    let mut file = std::fs::File::open(path)?;
    let len = file.seek(SeekFrom::End(0))?;
    let floor = len.saturating_sub(MAX_TAIL_BYTES);
    // Chunks read so far, the last part of the file first.
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut newlines = 0;
    let mut pos = len;
    while pos > floor {
        let read_from = pos.saturating_sub(CHUNK).max(floor);
        let mut chunk = vec![0; usize::try_from(pos - read_from).map_err(io::Error::other)?];
        file.seek(SeekFrom::Start(read_from))?;
        file.read_exact(&mut chunk)?;
        for i in (0..chunk.len()).rev() {
            // The file's final newline ends the last line; it does not start another one.
            if chunk[i] != b'\n' || read_from + i as u64 + 1 == len {
                continue;
            }
            newlines += 1;
            if newlines == lines {
                chunk.drain(..=i);
                chunks.push(chunk);
                return Ok(join_reversed(chunks));
            }
        }
        chunks.push(chunk);
        pos = read_from;
    }
    let mut text = join_reversed(chunks);
    if floor > 0 {
        // Capped: the first line is probably cut; start at the next whole one.
        let cut = text.find('\n').map_or(0, |i| i + 1);
        text.drain(..cut);
    }
    Ok(text)
}

fn join_reversed(chunks: Vec<Vec<u8>>) -> String {
    let bytes: Vec<u8> = chunks.into_iter().rev().flatten().collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_counts_lines_from_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let body: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, &body).expect("write");
        assert_eq!(
            tail_lines(&path, 3).expect("tail"),
            "line 19997\nline 19998\nline 19999\n"
        );
        assert_eq!(tail_lines(&path, 0).expect("tail"), "");
        assert_eq!(tail_lines(&path, 1_000_000).expect("tail"), body);

        std::fs::write(&path, "only\nthree\nlines").expect("write");
        assert_eq!(tail_lines(&path, 2).expect("tail"), "three\nlines");
        assert_eq!(tail_lines(&path, 10).expect("tail"), "only\nthree\nlines");
        std::fs::write(&path, "").expect("write");
        assert_eq!(tail_lines(&path, 10).expect("tail"), "");
    }

    #[test]
    fn tail_is_capped_at_whole_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let line = "x".repeat(999) + "\n";
        let lines = usize::try_from(MAX_TAIL_BYTES / 1000 * 3).expect("fits");
        std::fs::write(&path, line.repeat(lines)).expect("write");
        let tail = tail_lines(&path, lines).expect("tail");
        assert!(tail.len() as u64 <= MAX_TAIL_BYTES);
        assert!(tail.starts_with('x') && tail.ends_with('\n'));
        assert_eq!(tail.len() % 1000, 0);
    }
}
