//! Writing a client's file on the user's disk, safely: under an advisory lock, only when
//! the managed entries change, with a backup of the previous file, through a temporary
//! file in the same directory that is synced and renamed over the target (then the
//! directory synced), keeping the file's mode and owner, and writing through symlinks.
//! Also restores that backup and reports whether the file still holds what we wrote.
//! Never decides what the entries are (`entry`) or how the text changes (`edit`), and
//! never writes a file whose permissions say it must not change.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::clients::edit::{self, EditError};
use crate::clients::registry::Client;

/// Appended to the file's name for its backup. One backup is kept: the file as it was
/// before our latest write, which is what `restore_backup` puts back.
pub const BACKUP_SUFFIX: &str = ".mcp-orchestration.bak";
/// Appended to the file's name for the lock file beside it.
pub const LOCK_SUFFIX: &str = ".mcp-orchestration.lock";
/// The file as it was before the first deploy changed it, kept for good.
pub const ORIGINAL_SUFFIX: &str = ".mcp-orchestration.orig";
const TEMP_SUFFIX: &str = ".mcp-orchestration.tmp";

/// A new file may come to hold credentials (users paste tokens into these files, and
/// `~/.claude.json` holds account data), and the clients create theirs owner-only too.
const NEW_FILE_MODE: u32 = 0o600;
/// Missing parent directories (`~/.cursor`) are created for the owner only, like the file.
const NEW_DIR_MODE: u32 = 0o700;
/// How long to wait for another writer's lock before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Edit(#[from] EditError),
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not UTF-8 text; it was left untouched")]
    NotUtf8 { path: PathBuf },
    #[error("{path} is read-only (no write permission); it was left untouched")]
    ReadOnlyFile { path: PathBuf },
    #[error(
        "the directory {dir} is read-only (no write permission), so {path} cannot be replaced; it was left untouched"
    )]
    ReadOnlyDir { dir: PathBuf, path: PathBuf },
    #[error("{path} is locked by another writer (waited {waited:?} for {lock})")]
    Locked {
        path: PathBuf,
        lock: PathBuf,
        waited: Duration,
    },
    #[error("{path} is a symlink that does not resolve to a file (a loop, or more than 40 links)")]
    SymlinkLoop { path: PathBuf },
    #[error("there is no backup of {path} to restore ({backup} does not exist)")]
    NoBackup { path: PathBuf, backup: PathBuf },
    #[error(
        "{path} already has {} {} that this tool did not write; rename ours or replace them (force)",
        if names.len() == 1 { "an entry" } else { "entries" },
        names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
    )]
    Unmanaged { path: PathBuf, names: Vec<String> },
    #[error("the lock file {path} is not a regular file; it was left untouched")]
    LockNotAFile { path: PathBuf },
}

/// What `deploy` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    /// The file written, after following symlinks.
    pub path: PathBuf,
    /// The backup of the previous file, when this call replaced an existing file.
    pub backup: Option<PathBuf>,
    pub changed: bool,
    /// SHA-256 (hex) of the managed entries as canonical JSON (see `digest`).
    pub digest: String,
}

/// How the file on disk compares with what we expect it to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileStatus {
    InSync,
    /// Managed entries present on disk but not as expected (edited by someone else).
    /// Takes precedence when some entries also are missing.
    ModifiedOutside {
        entries: Vec<String>,
    },
    /// The file, or these managed entries in it, do not exist.
    Missing {
        entries: Vec<String>,
    },
}

/// Writes `managed` into the client's file at `path` and removes the entries of
/// `previously_managed` no longer managed, leaving everything else in the file as it was.
pub fn deploy(
    path: &Path,
    client: &Client,
    managed: &BTreeMap<String, Value>,
    previously_managed: &BTreeSet<String>,
) -> Result<Deployed, DeployError> {
    deploy_guarded(path, client, managed, previously_managed, false)
}

/// [`deploy`]; with `protect`, an entry of a name in `managed` that `previously_managed`
/// does not know and that differs from ours (someone else's) is refused, checked under
/// the lock, so a writer between a check and the write cannot be overwritten.
pub fn deploy_guarded(
    path: &Path,
    client: &Client,
    managed: &BTreeMap<String, Value>,
    previously_managed: &BTreeSet<String>,
    protect: bool,
) -> Result<Deployed, DeployError> {
    let target = resolve(path)?;
    let unchanged = |target: PathBuf| Deployed {
        path: target,
        backup: None,
        changed: false,
        digest: digest(managed),
    };
    let dir = parent(&target);
    if !dir.is_dir() {
        if managed.is_empty() {
            return Ok(unchanged(target));
        }
        ensure_dir(dir)?;
    }
    // A read-only directory cannot take the lock file; such a deploy can only succeed
    // by finding nothing to change, and then it writes nothing.
    let _lock = if is_read_only(dir) {
        None
    } else {
        Some(Lock::acquire(&target)?)
    };
    let current = read_text(&target)?;
    let current_text = current.as_ref().map(|c| c.text.as_str());
    if current_text.is_none() && managed.is_empty() {
        return Ok(unchanged(target));
    }
    if protect && let Some(text) = current_text {
        let new_names: BTreeSet<String> = managed
            .keys()
            .filter(|n| !previously_managed.contains(*n))
            .cloned()
            .collect();
        let theirs: Vec<String> = edit::read_managed(client, &target, text, &new_names)?
            .into_iter()
            .filter(|(name, value)| managed.get(name) != Some(value))
            .map(|(name, _)| name)
            .collect();
        if !theirs.is_empty() {
            return Err(DeployError::Unmanaged {
                path: target,
                names: theirs,
            });
        }
    }
    let new_text = edit::apply(client, &target, current_text, managed, previously_managed)?;
    if current_text == Some(new_text.as_str()) {
        return Ok(unchanged(target));
    }
    check_writable(&target)?;
    let backup = match &current {
        Some(current) => {
            // The file as it was before this tool ever wrote it is kept once, apart from
            // the rolling backup of the latest write: later deploys would otherwise
            // overwrite the user's original with our own earlier output.
            let original = sibling(&target, ORIGINAL_SUFFIX);
            if read_bytes(&original)?.is_none() {
                replace(&original, current.text.as_bytes(), &current.mode)?;
            }
            let backup = sibling(&target, BACKUP_SUFFIX);
            replace(&backup, current.text.as_bytes(), &current.mode)?;
            Some(backup)
        }
        None => None,
    };
    let mode = current.map_or_else(Mode::new_file, |c| c.mode);
    replace(&target, new_text.as_bytes(), &mode)?;
    Ok(Deployed {
        path: target,
        backup,
        changed: true,
        digest: digest(managed),
    })
}

/// Puts the backup of `path` back in its place; returns the path written.
pub fn restore_backup(path: &Path) -> Result<PathBuf, DeployError> {
    let target = resolve(path)?;
    let backup = sibling(&target, BACKUP_SUFFIX);
    check_writable(&target)?;
    // Read under the lock, so a deploy in between cannot leave an older backup restored.
    let _lock = Lock::acquire(&target)?;
    let Some(saved) = read_bytes(&backup)? else {
        return Err(DeployError::NoBackup {
            path: target,
            backup,
        });
    };
    let mode = if target.exists() {
        Mode::of(&target)?
    } else {
        Mode::of(&backup)?
    };
    replace(&target, &saved, &mode)?;
    Ok(target)
}

/// Whether the file at `path` holds `expected` under the client's servers key.
pub fn status(
    path: &Path,
    client: &Client,
    expected: &BTreeMap<String, Value>,
) -> Result<FileStatus, DeployError> {
    let target = resolve(path)?;
    let names: BTreeSet<String> = expected.keys().cloned().collect();
    let on_disk = match read_text(&target)? {
        Some(current) => edit::read_managed(client, &target, &current.text, &names)?,
        None => BTreeMap::new(),
    };
    Ok(compare(expected, &on_disk))
}

/// The decision, apart from the disk.
fn compare(expected: &BTreeMap<String, Value>, on_disk: &BTreeMap<String, Value>) -> FileStatus {
    let mut modified = Vec::new();
    let mut missing = Vec::new();
    for (name, want) in expected {
        match on_disk.get(name) {
            None => missing.push(name.clone()),
            Some(have) if have != want => modified.push(name.clone()),
            Some(_) => {}
        }
    }
    if !modified.is_empty() {
        FileStatus::ModifiedOutside { entries: modified }
    } else if !missing.is_empty() {
        FileStatus::Missing { entries: missing }
    } else {
        FileStatus::InSync
    }
}

/// SHA-256 of the entries as canonical JSON: keys sorted at every depth, no whitespace,
/// so the digest does not depend on map ordering or on the file's formatting.
pub fn digest(managed: &BTreeMap<String, Value>) -> String {
    let mut text = String::new();
    let as_value = Value::Object(
        managed
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    );
    canonical(&as_value, &mut text);
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Follows symlinks to the file they name (which may not exist yet), so dotfile managers'
/// links stay links and the file they point at is the one written.
fn resolve(path: &Path) -> Result<PathBuf, DeployError> {
    let mut current = path.to_path_buf();
    for _ in 0..40 {
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let link = fs::read_link(&current).map_err(|source| DeployError::Io {
                    action: "read the symlink",
                    path: current.clone(),
                    source,
                })?;
                current = match current.parent() {
                    Some(dir) if link.is_relative() => dir.join(link),
                    _ => link,
                };
            }
            Ok(_) => return Ok(current),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(current),
            Err(source) => {
                return Err(DeployError::Io {
                    action: "inspect",
                    path: current,
                    source,
                });
            }
        }
    }
    Err(DeployError::SymlinkLoop {
        path: path.to_path_buf(),
    })
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// An exclusive `flock` on a lock file beside the target, released when dropped. Not on
/// the target itself: the target is replaced by rename, so a lock on its old inode would
/// not exclude a writer that opened the new one.
struct Lock {
    _file: File,
}

impl Lock {
    fn acquire(target: &Path) -> Result<Lock, DeployError> {
        let lock = sibling(target, LOCK_SUFFIX);
        // Never through a symlink: one planted at the lock's name would have us create or
        // open a file wherever it points.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(NEW_FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock)
            .map_err(|source| DeployError::Io {
                action: "open the lock file",
                path: lock.clone(),
                source,
            })?;
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return Err(DeployError::LockNotAFile { path: lock });
        }
        let started = Instant::now();
        loop {
            // SAFETY: flock on a descriptor we own; it only reads the descriptor.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(Lock { _file: file });
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::WouldBlock && err.kind() != io::ErrorKind::Interrupted {
                return Err(DeployError::Io {
                    action: "lock",
                    path: lock,
                    source: err,
                });
            }
            if started.elapsed() >= LOCK_WAIT {
                return Err(DeployError::Locked {
                    path: target.to_path_buf(),
                    lock,
                    waited: LOCK_WAIT,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn ensure_dir(dir: &Path) -> Result<(), DeployError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(NEW_DIR_MODE)
        .create(dir)
        .map_err(|source| DeployError::Io {
            action: "create the directory",
            path: dir.to_path_buf(),
            source,
        })
}

/// The file's permissions and owner, to give its replacement.
#[derive(Debug, Clone)]
struct Mode {
    permissions: u32,
    owner: Option<(u32, u32)>,
}

impl Mode {
    fn new_file() -> Mode {
        Mode {
            permissions: NEW_FILE_MODE,
            owner: None,
        }
    }

    fn of(path: &Path) -> Result<Mode, DeployError> {
        let meta = fs::metadata(path).map_err(|source| DeployError::Io {
            action: "inspect",
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Mode {
            permissions: meta.mode() & 0o7777,
            owner: Some((meta.uid(), meta.gid())),
        })
    }
}

struct Current {
    text: String,
    mode: Mode,
}

fn read_bytes(path: &Path) -> Result<Option<Vec<u8>>, DeployError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DeployError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn read_text(path: &Path) -> Result<Option<Current>, DeployError> {
    let Some(bytes) = read_bytes(path)? else {
        return Ok(None);
    };
    let text = String::from_utf8(bytes).map_err(|_| DeployError::NotUtf8 {
        path: path.to_path_buf(),
    })?;
    Ok(Some(Current {
        text,
        mode: Mode::of(path)?,
    }))
}

/// Refuses what the permission bits forbid even when we could override them (as root):
/// a user who made the file or its directory read-only does not want it changed.
fn check_writable(path: &Path) -> Result<(), DeployError> {
    if is_read_only(path) {
        return Err(DeployError::ReadOnlyFile {
            path: path.to_path_buf(),
        });
    }
    let dir = parent(path);
    if is_read_only(dir) {
        return Err(DeployError::ReadOnlyDir {
            dir: dir.to_path_buf(),
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// No write bit at all (a missing path is not read-only).
fn is_read_only(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.permissions().readonly())
}

/// Replaces `path` with `bytes` atomically: a temporary file beside it, given `mode`,
/// written and synced, renamed over `path`, then the directory synced so the rename
/// survives a crash.
fn replace(path: &Path, bytes: &[u8], mode: &Mode) -> Result<(), DeployError> {
    check_writable(path)?;
    let temp = sibling(path, &format!("{TEMP_SUFFIX}.{}", std::process::id()));
    let result = write_temp(&temp, bytes, mode).and_then(|()| {
        fs::rename(&temp, path).map_err(|source| DeployError::Io {
            action: "rename the new file over",
            path: path.to_path_buf(),
            source,
        })
    });
    if result.is_err() {
        // Nothing to report if it is already gone; the target was not touched.
        let _ = fs::remove_file(&temp);
        return result;
    }
    let dir = parent(path);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| DeployError::Io {
            action: "sync the directory",
            path: dir.to_path_buf(),
            source,
        })
}

fn write_temp(temp: &Path, bytes: &[u8], mode: &Mode) -> Result<(), DeployError> {
    let io_err = |action| {
        move |source| DeployError::Io {
            action,
            path: temp.to_path_buf(),
            source,
        }
    };
    // A leftover from a crashed run of ours, never anyone else's file.
    let _ = fs::remove_file(temp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(NEW_FILE_MODE)
        .open(temp)
        .map_err(io_err("create the temporary file"))?;
    if let Some((uid, gid)) = mode.owner {
        let meta = file
            .metadata()
            .map_err(io_err("inspect the temporary file"))?;
        if (meta.uid(), meta.gid()) != (uid, gid) {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
                .map_err(io_err("give the original owner to the temporary file"))?;
        }
    }
    // After chown, which may clear set-id bits; set explicitly, as the umask narrowed the
    // mode given at creation.
    file.set_permissions(Permissions::from_mode(mode.permissions))
        .map_err(io_err("set the permissions of the temporary file"))?;
    file.write_all(bytes)
        .map_err(io_err("write the temporary file"))?;
    file.sync_all().map_err(io_err("sync the temporary file"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::entry::{Target, render};
    use crate::clients::registry::{Env, Os, Scope, client, config_path};
    use serde_json::json;
    use std::os::unix::fs::symlink;

    const URL: &str = "http://127.0.0.1:7071/profiles/dev/mcp";
    const NAME: &str = "gateway-dev";

    fn env(home: &Path) -> Env {
        Env {
            home: home.to_path_buf(),
            xdg_config_home: None,
            appdata: None,
            codex_home: None,
            claude_config_dir: None,
        }
    }

    fn user_path(id: &str, home: &Path) -> PathBuf {
        config_path(client(id).unwrap(), Os::Linux, &Scope::User, &env(home)).unwrap()
    }

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap()
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn managed_for(id: &str, key: Option<&str>) -> BTreeMap<String, Value> {
        let target = Target {
            key_env: key.map(str::to_owned),
            ..Target::new(NAME, URL, "dev")
        };
        BTreeMap::from([(
            NAME.to_owned(),
            render(client(id).unwrap(), &target).unwrap(),
        )])
    }

    /// The whole document as a value, to compare what is not ours.
    fn parsed(id: &str, text: &str) -> Value {
        edit::to_json(client(id).unwrap(), Path::new("f"), text).unwrap()
    }

    /// Between the longest common prefix and suffix, the old text lost nothing but layout.
    fn only_layout_lost(old: &str, new: &str) {
        let prefix = old
            .bytes()
            .zip(new.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        let suffix = old[prefix..]
            .bytes()
            .rev()
            .zip(new[prefix..].bytes().rev())
            .take_while(|(a, b)| a == b)
            .count();
        let lost = &old[prefix..old.len() - suffix];
        assert!(
            lost.chars().all(|c| c.is_whitespace() || c == ','),
            "the edit removed {lost:?} from the old text"
        );
    }

    struct Fixture {
        id: &'static str,
        key: Option<&'static str>,
        existing: &'static str,
        /// Names of other servers that must survive.
        others: &'static [&'static str],
    }

    fn check_client(f: &Fixture) {
        let home = tempfile::tempdir().unwrap();
        let c = client(f.id).unwrap();
        let path = user_path(f.id, home.path());
        write(&path, f.existing);
        let managed = managed_for(f.id, f.key);
        let others_before = edit::read_managed(c, &path, f.existing, &names(f.others)).unwrap();
        assert_eq!(others_before.len(), f.others.len(), "{}: fixture", f.id);

        let first = deploy(&path, c, &managed, &BTreeSet::new()).unwrap();
        assert!(first.changed, "{}", f.id);
        assert_eq!(first.path, path);
        assert_eq!(first.digest, digest(&managed));
        let written = read(&path);
        only_layout_lost(f.existing, &written);
        let all = names(&[&[NAME][..], f.others].concat());
        let now = edit::read_managed(c, &path, &written, &all).unwrap();
        assert_eq!(now[NAME], managed[NAME], "{}", f.id);
        for other in f.others {
            assert_eq!(now[*other], others_before[*other], "{}: {other}", f.id);
        }
        let mut without_ours = parsed(f.id, &written);
        without_ours[c.servers_key]
            .as_object_mut()
            .unwrap()
            .remove(NAME);
        let mut before = parsed(f.id, f.existing);
        if before.get(c.servers_key).is_none() {
            before[c.servers_key] = json!({});
        }
        assert_eq!(without_ours, before, "{}: other keys changed", f.id);
        assert_eq!(
            status(&path, c, &managed).unwrap(),
            FileStatus::InSync,
            "{}",
            f.id
        );

        // The same input again changes nothing, not even the backup.
        let backup = first.backup.clone().unwrap();
        assert_eq!(read(&backup), f.existing);
        let second = deploy(&path, c, &managed, &names(&[NAME])).unwrap();
        assert!(!second.changed, "{}", f.id);
        assert_eq!(second.backup, None);
        assert_eq!(read(&path), written);
        assert_eq!(read(&backup), f.existing);

        // The backup puts the old file back, byte for byte.
        assert_eq!(restore_backup(&path).unwrap(), path);
        assert_eq!(read(&path), f.existing, "{}", f.id);

        // Deploy again, then stop managing the entry: it goes, the rest stays.
        deploy(&path, c, &managed, &BTreeSet::new()).unwrap();
        let removed = deploy(&path, c, &BTreeMap::new(), &names(&[NAME])).unwrap();
        assert!(removed.changed);
        let after = read(&path);
        assert!(
            edit::read_managed(c, &path, &after, &names(&[NAME]))
                .unwrap()
                .is_empty()
        );
        if f.others.is_empty() {
            only_layout_lost(&after, &written);
        } else {
            assert_eq!(after, f.existing, "{}: removal is not the inverse", f.id);
        }
        assert_eq!(
            status(&path, c, &managed).unwrap(),
            FileStatus::Missing {
                entries: vec![NAME.to_owned()]
            }
        );
    }

    #[test]
    fn claude_desktop() {
        check_client(&Fixture {
            id: "claude-desktop",
            key: Some("MCP_GATEWAY_KEY"),
            existing: r#"{
  "mcpServers": {
    "filesystem": {
      "command": "npx",
      "args": ["-y", "@modelcontextprotocol/server-filesystem", "/home/u/Desktop"]
    }
  },
  "globalShortcut": "Ctrl+Space",
  "preferences": {
    "quickEntryShortcut": "off"
  }
}
"#,
            others: &["filesystem"],
        });
    }

    #[test]
    fn claude_code_user_file_with_state_and_project_servers() {
        // A project's local-scope server of the same name is not ours to touch.
        check_client(&Fixture {
            id: "claude-code",
            key: Some("MCP_GATEWAY_KEY"),
            existing: r#"{
  "numStartups": 182,
  "installMethod": "native",
  "autoUpdates": true,
  "theme": "dark",
  "tipsHistory": {
    "new-user-warmup": 7,
    "memory-command": 3
  },
  "userID": "5f0c0ffee",
  "firstStartTime": "2026-01-04T10:11:12.000Z",
  "projects": {
    "/home/u/app": {
      "allowedTools": [],
      "mcpServers": {
        "gateway-dev": { "type": "http", "url": "http://elsewhere/mcp" }
      },
      "hasTrustDialogAccepted": true,
      "lastCost": 0.4211
    }
  },
  "mcpServers": {
    "github": {
      "type": "http",
      "url": "https://api.githubcopilot.com/mcp/",
      "headers": { "Authorization": "Bearer ${GITHUB_PAT}" }
    },
    "memory": {
      "type": "stdio",
      "command": "npx",
      "args": ["-y", "@modelcontextprotocol/server-memory"],
      "env": {}
    }
  },
  "oauthAccount": {
    "emailAddress": "u@example.com",
    "organizationRole": "admin"
  },
  "hasCompletedOnboarding": true,
  "lastReleaseNotesSeen": "2.1.300"
}
"#,
            others: &["github", "memory"],
        });
    }

    #[test]
    fn cursor() {
        check_client(&Fixture {
            id: "cursor",
            key: Some("MCP_GATEWAY_KEY"),
            existing: r#"{
  "mcpServers": {
    "playwright": {
      "command": "npx",
      "args": ["-y", "@playwright/mcp@latest"]
    },
    "context7": {
      "url": "https://mcp.context7.com/mcp",
      "headers": { "CONTEXT7_API_KEY": "${env:CONTEXT7_API_KEY}" }
    }
  }
}
"#,
            others: &["playwright", "context7"],
        });
    }

    #[test]
    fn vscode_with_comments_inputs_and_trailing_commas() {
        check_client(&Fixture {
            id: "vscode",
            key: Some("MCP_GATEWAY_KEY"),
            existing: "// User MCP servers\n{\n\t\"inputs\": [\n\t\t{\n\t\t\t\"type\": \"promptString\",\n\t\t\t\"id\": \"gh-token\",\n\t\t\t\"description\": \"GitHub token\",\n\t\t\t\"password\": true,\n\t\t},\n\t],\n\t\"servers\": {\n\t\t// GitHub's own server\n\t\t\"github\": {\n\t\t\t\"type\": \"http\",\n\t\t\t\"url\": \"https://api.githubcopilot.com/mcp/\",\n\t\t\t\"headers\": { \"Authorization\": \"Bearer ${input:gh-token}\" },\n\t\t},\n\t\t/* local notes */\n\t\t\"memory\": { \"command\": \"npx\", \"args\": [\"-y\", \"@modelcontextprotocol/server-memory\"] },\n\t},\n}\n",
            others: &["github", "memory"],
        });
    }

    #[test]
    fn windsurf() {
        check_client(&Fixture {
            id: "windsurf",
            key: Some("MCP_GATEWAY_KEY"),
            existing: r#"{
    "mcpServers": {
        "github": {
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-github"],
            "env": { "GITHUB_PERSONAL_ACCESS_TOKEN": "${env:GH_TOKEN}" }
        },
        "figma": { "serverUrl": "https://mcp.figma.com/mcp" }
    }
}
"#,
            others: &["github", "figma"],
        });
    }

    #[test]
    fn zed_settings_with_comments_and_trailing_commas() {
        check_client(&Fixture {
            id: "zed",
            key: None,
            existing: r#"// Zed settings
//
// For information on how to configure Zed, see the Zed
// documentation: https://zed.dev/docs/configuring-zed
{
  "theme": {
    "mode": "system",
    "light": "One Light",
    "dark": "One Dark",
  },
  "ui_font_size": 16,
  "buffer_font_size": 15,
  /* servers for the agent */
  "context_servers": {
    "postgres": {
      "command": "postgres-mcp",
      "args": ["--dsn", "postgres://localhost/app"],
      "env": {},
    },
  },
  "languages": {
    "Rust": { "tab_size": 4 }, // rustfmt agrees
  },
}
"#,
            others: &["postgres"],
        });
    }

    #[test]
    fn zed_settings_without_context_servers() {
        check_client(&Fixture {
            id: "zed",
            key: None,
            existing: "// Zed settings\n{\n  \"vim_mode\": true,\n  \"ui_font_size\": 16, // big\n}\n",
            others: &[],
        });
    }

    #[test]
    fn gemini_cli() {
        check_client(&Fixture {
            id: "gemini-cli",
            key: Some("MCP_GATEWAY_KEY"),
            existing: r#"{
  // chosen at first start
  "security": { "auth": { "selectedType": "gemini-api-key" } },
  "ui": { "theme": "GitHub" },
  "mcpServers": {
    "pythonTools": {
      "command": "python",
      "args": ["-m", "my_mcp_server"],
      "env": { "API_KEY": "$MY_API_TOKEN" },
      "timeout": 15000
    }
  },
  "general": { "vimMode": false }
}
"#,
            others: &["pythonTools"],
        });
    }

    const CODEX: &str = r#"# Codex configuration
model = "gpt-5-codex"
approval_policy = "on-request"

[profiles.fast]
model = "gpt-5-mini"

# Docs lookups
[mcp_servers.docs]
command = "npx"
args = ["-y", "@upstash/context7-mcp"]

[mcp_servers.docs.env]
LOG = "info"

[tui]
notifications = true # ping me
"#;

    #[test]
    fn codex_with_other_tables_and_comments() {
        check_client(&Fixture {
            id: "codex",
            key: Some("MCP_GATEWAY_KEY"),
            existing: CODEX,
            others: &["docs"],
        });
    }

    #[test]
    fn codex_without_servers() {
        check_client(&Fixture {
            id: "codex",
            key: None,
            existing: "model = \"o3\" # the default\n",
            others: &[],
        });
    }

    #[test]
    fn codex_entry_reads_back_in_the_rendered_shape() {
        let home = tempfile::tempdir().unwrap();
        let path = user_path("codex", home.path());
        write(&path, CODEX);
        let managed = managed_for("codex", Some("MCP_GATEWAY_KEY"));
        deploy(&path, client("codex").unwrap(), &managed, &BTreeSet::new()).unwrap();
        let text = read(&path);
        assert!(
            text.contains(
                "[mcp_servers.gateway-dev]\nurl = \"http://127.0.0.1:7071/profiles/dev/mcp\"\nbearer_token_env_var = \"MCP_GATEWAY_KEY\"\n"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("[tui]\nnotifications = true # ping me\n"),
            "{text}"
        );
    }

    #[test]
    fn a_new_file_and_its_directories_are_created_owner_only() {
        let home = tempfile::tempdir().unwrap();
        let path = user_path("cursor", home.path());
        let managed = managed_for("cursor", None);
        let done = deploy(&path, client("cursor").unwrap(), &managed, &BTreeSet::new()).unwrap();
        assert!(done.changed);
        assert_eq!(done.backup, None);
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777,
            0o700
        );
        assert_eq!(
            read(&path),
            "{\n  \"mcpServers\": {\n    \"gateway-dev\": {\n      \"url\": \"http://127.0.0.1:7071/profiles/dev/mcp\"\n    }\n  }\n}\n"
        );
        let restore = restore_backup(&path).unwrap_err();
        assert!(
            matches!(restore, DeployError::NoBackup { .. }),
            "{restore:?}"
        );
    }

    #[test]
    fn nothing_to_write_and_no_file_creates_nothing() {
        let home = tempfile::tempdir().unwrap();
        let path = user_path("cursor", home.path());
        let done = deploy(
            &path,
            client("cursor").unwrap(),
            &BTreeMap::new(),
            &names(&[NAME]),
        )
        .unwrap();
        assert!(!done.changed);
        assert!(!path.parent().unwrap().exists());
    }

    #[test]
    fn the_file_mode_is_kept() {
        let home = tempfile::tempdir().unwrap();
        let path = user_path("cursor", home.path());
        write(&path, "{}\n");
        fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
        deploy(
            &path,
            client("cursor").unwrap(),
            &managed_for("cursor", None),
            &BTreeSet::new(),
        )
        .unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o640);
        let backup = sibling(&path, BACKUP_SUFFIX);
        assert_eq!(fs::metadata(&backup).unwrap().mode() & 0o7777, 0o640);
    }

    #[test]
    fn the_owner_is_kept_when_root_writes_a_users_file() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let home = tempfile::tempdir().unwrap();
        let path = user_path("cursor", home.path());
        write(&path, "{}\n");
        std::os::unix::fs::chown(&path, Some(4321), Some(4321)).unwrap();
        deploy(
            &path,
            client("cursor").unwrap(),
            &managed_for("cursor", None),
            &BTreeSet::new(),
        )
        .unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4321, 4321));
    }

    fn assert_untouched(dir: &Path, path: &Path, text: &str) {
        assert_eq!(read(path), text);
        let strays: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".bak") || n.contains(".tmp"))
            .collect();
        assert!(strays.is_empty(), "{strays:?}");
    }

    #[test]
    fn invalid_json_is_an_error_naming_path_and_position_and_nothing_is_written() {
        let home = tempfile::tempdir().unwrap();
        let path = user_path("claude-code", home.path());
        let text = "{\n  \"numStartups\": 3,\n  \"mcpServers\": {\n    \"a\": {\"url\": \"x\"}\n";
        write(&path, text);
        let err = deploy(
            &path,
            client("claude-code").unwrap(),
            &managed_for("claude-code", None),
            &BTreeSet::new(),
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("{}:", path.display())),
            "{message}"
        );
        assert!(
            matches!(err, DeployError::Edit(EditError::Json { .. })),
            "{err:?}"
        );
        assert_untouched(home.path(), &path, text);
    }

    #[test]
    fn invalid_toml_is_an_error_naming_path_and_position_and_nothing_is_written() {
        let home = tempfile::tempdir().unwrap();
        let path = user_path("codex", home.path());
        let text = "model = \"o3\"\n\n[mcp_servers.docs\ncommand = \"npx\"\n";
        write(&path, text);
        let err = deploy(
            &path,
            client("codex").unwrap(),
            &managed_for("codex", None),
            &BTreeSet::new(),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{}:3:", path.display())),
            "{err}"
        );
        assert_untouched(path.parent().unwrap(), &path, text);
    }

    #[test]
    fn servers_of_the_wrong_type_are_an_error_and_nothing_is_written() {
        let home = tempfile::tempdir().unwrap();
        for (id, text) in [
            ("gemini-cli", "{\n  \"mcpServers\": [\"x\"]\n}\n"),
            ("zed", "{\n  // off\n  \"context_servers\": null,\n}\n"),
            ("codex", "mcp_servers = [\"x\"]\n"),
        ] {
            let path = user_path(id, home.path());
            write(&path, text);
            let err = deploy(
                &path,
                client(id).unwrap(),
                &managed_for(id, None),
                &BTreeSet::new(),
            )
            .unwrap_err();
            assert!(
                matches!(err, DeployError::Edit(EditError::ServersNotObject { .. })),
                "{id}: {err:?}"
            );
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{err}"
            );
            assert_untouched(path.parent().unwrap(), &path, text);
        }
    }

    #[test]
    fn a_read_only_file_is_left_untouched() {
        let home = tempfile::tempdir().unwrap();
        let path = user_path("cursor", home.path());
        write(&path, "{}\n");
        fs::set_permissions(&path, Permissions::from_mode(0o444)).unwrap();
        let err = deploy(
            &path,
            client("cursor").unwrap(),
            &managed_for("cursor", None),
            &BTreeSet::new(),
        )
        .unwrap_err();
        assert!(matches!(err, DeployError::ReadOnlyFile { .. }), "{err:?}");
        assert!(err.to_string().contains(&path.display().to_string()));
        assert_untouched(path.parent().unwrap(), &path, "{}\n");
    }

    #[test]
    fn a_read_only_directory_is_left_untouched_unless_nothing_changes() {
        let home = tempfile::tempdir().unwrap();
        let c = client("cursor").unwrap();
        let path = user_path("cursor", home.path());
        let dir = path.parent().unwrap().to_path_buf();
        let managed = managed_for("cursor", None);
        deploy(&path, c, &managed, &BTreeSet::new()).unwrap();
        let text = read(&path);
        fs::remove_file(sibling(&path, LOCK_SUFFIX)).unwrap();
        fs::set_permissions(&dir, Permissions::from_mode(0o555)).unwrap();
        let same = deploy(&path, c, &managed, &BTreeSet::new());
        let other = managed_for("cursor", Some("K"));
        let err = deploy(&path, c, &other, &BTreeSet::new());
        let listing: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        fs::set_permissions(&dir, Permissions::from_mode(0o700)).unwrap();
        assert!(!same.unwrap().changed);
        let err = err.unwrap_err();
        assert!(matches!(err, DeployError::ReadOnlyDir { .. }), "{err:?}");
        assert_eq!(read(&path), text);
        assert_eq!(listing, vec![path.file_name().unwrap().to_owned()]);
    }

    #[test]
    fn a_symlinked_file_is_written_through_and_the_link_kept() {
        let home = tempfile::tempdir().unwrap();
        let c = client("cursor").unwrap();
        let path = user_path("cursor", home.path());
        let real = home.path().join("dotfiles").join("cursor-mcp.json");
        write(&real, "{ \"mcpServers\": {} }\n");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        symlink("../dotfiles/cursor-mcp.json", &path).unwrap();
        let managed = managed_for("cursor", None);
        let done = deploy(&path, c, &managed, &BTreeSet::new()).unwrap();
        assert_eq!(
            done.path,
            path.parent().unwrap().join("../dotfiles/cursor-mcp.json")
        );
        assert_eq!(done.backup, Some(sibling(&done.path, BACKUP_SUFFIX)));
        assert!(
            fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            fs::read_link(&path).unwrap(),
            Path::new("../dotfiles/cursor-mcp.json")
        );
        assert_eq!(status(&path, c, &managed).unwrap(), FileStatus::InSync);
        assert!(read(&real).contains(NAME));
        restore_backup(&path).unwrap();
        assert_eq!(read(&real), "{ \"mcpServers\": {} }\n");
        assert!(
            fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn a_dangling_symlink_creates_its_target() {
        let home = tempfile::tempdir().unwrap();
        let path = user_path("cursor", home.path());
        let real = home.path().join("dotfiles").join("mcp.json");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::create_dir_all(real.parent().unwrap()).unwrap();
        symlink(&real, &path).unwrap();
        deploy(
            &path,
            client("cursor").unwrap(),
            &managed_for("cursor", None),
            &BTreeSet::new(),
        )
        .unwrap();
        assert!(read(&real).contains(NAME));
        assert!(
            fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn a_symlink_loop_is_an_error() {
        let home = tempfile::tempdir().unwrap();
        let a = home.path().join("a.json");
        let b = home.path().join("b.json");
        symlink(&b, &a).unwrap();
        symlink(&a, &b).unwrap();
        let err = deploy(
            &a,
            client("cursor").unwrap(),
            &managed_for("cursor", None),
            &BTreeSet::new(),
        )
        .unwrap_err();
        assert!(matches!(err, DeployError::SymlinkLoop { .. }), "{err:?}");
    }

    #[test]
    fn status_tells_edited_from_missing() {
        let home = tempfile::tempdir().unwrap();
        let c = client("cursor").unwrap();
        let path = user_path("cursor", home.path());
        let mut managed = managed_for("cursor", None);
        managed.insert(
            "gateway-prod".into(),
            json!({"url": "http://127.0.0.1:7071/profiles/prod/mcp"}),
        );
        assert_eq!(
            status(&path, c, &managed).unwrap(),
            FileStatus::Missing {
                entries: vec!["gateway-dev".into(), "gateway-prod".into()]
            }
        );
        deploy(&path, c, &managed, &BTreeSet::new()).unwrap();
        let text = read(&path).replace("profiles/dev", "profiles/other");
        fs::write(&path, &text).unwrap();
        assert_eq!(
            status(&path, c, &managed).unwrap(),
            FileStatus::ModifiedOutside {
                entries: vec!["gateway-dev".into()]
            }
        );
        deploy(&path, c, &managed, &BTreeSet::new()).unwrap();
        assert_eq!(status(&path, c, &managed).unwrap(), FileStatus::InSync);
    }

    #[test]
    fn a_held_lock_is_waited_for() {
        let home = tempfile::tempdir().unwrap();
        let path = user_path("cursor", home.path());
        write(&path, "{}\n");
        let held = Lock::acquire(&path).unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(held);
        });
        let started = Instant::now();
        deploy(
            &path,
            client("cursor").unwrap(),
            &managed_for("cursor", None),
            &BTreeSet::new(),
        )
        .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(150));
        releaser.join().unwrap();
    }

    #[test]
    fn the_digest_is_canonical() {
        let a = BTreeMap::from([("x".to_owned(), json!({"b": 1, "a": [true, null, "s"]}))]);
        let text = r#"{"x":{"a":[true,null,"s"],"b":1}}"#;
        assert_eq!(digest(&a), hex::encode(Sha256::digest(text.as_bytes())));
        assert_eq!(digest(&BTreeMap::new()), hex::encode(Sha256::digest(b"{}")));
    }
}
