//! The agent's signing keyring: Ed25519 keys kept in one directory (the agent's data dir +
//! `/keys`), the record of which key is active, and the public keys the agent serves so
//! that clients can verify what it signed. It also owns the atomic file write that the
//! keyring and the trust store use. It never signs artifacts (`artifact` does), never
//! decides which keys an operator trusts (`trust` does), never changes a file's mode after
//! writing it, and never deletes a key: an artifact signed by an old key stays verifiable.
//!
//! Layout of the directory (created 0700):
//!
//! ```text
//! ed25519-<16 hex>.key   0600  the 32-byte secret seed (RFC 8032), 64 lowercase hex digits + "\n"
//! ed25519-<16 hex>.pub   0644  JSON {"key_id", "algorithm", "public_key", "created_at"}
//! active                 0644  the active key id + "\n"
//! ```
//!
//! - **Key id**: `ed25519:` + the first 16 lowercase hex digits (64 bits) of SHA-256 over
//!   the 32 public key bytes. It is a name to look a key up by, not a security binding:
//!   whoever checks a key (the keyring on load, the trust store on pinning) compares the
//!   full public key, so a crafted key with a colliding id is still refused.
//! - **Public key**: the 32-byte compressed Edwards point of RFC 8032, as 64 lowercase hex
//!   digits (hex rather than base64: the same spelling as digests and ids everywhere else).
//! - **Crash safety**: every file is written to a temporary sibling (a name starting with
//!   `.`, which `open` skips), synced, renamed over its final name, and the directory is
//!   synced. A new key is written `.key`, then `.pub`, then `active`: a crash leaves at worst
//!   a `.key` without its `.pub` (never published, never active, so ignored) or a complete
//!   key not yet active (`initialize` activates it).
//! - **Permissions**: a private key file readable or writable by group or others is
//!   refused, as ssh refuses one; so is a directory writable by group or others (anyone
//!   could swap its keys). Files are opened without following symbolic links.
//! - One agent owns the directory: two processes rotating at once are not arbitrated.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The one algorithm the keyring holds, as spelled in key ids and `PublicKeyInfo`.
pub const ALGORITHM: &str = "ed25519";

const ACTIVE_FILE: &str = "active";
const DIR_MODE: u32 = 0o700;
const PRIVATE_MODE: u32 = 0o600;
const PUBLIC_MODE: u32 = 0o644;
/// Hex digits of the public key's SHA-256 kept in a key id.
const KEY_ID_HEX_DIGITS: usize = 16;
/// A private key file is 65 bytes; reading stops well past that rather than swallowing a
/// huge file put there by mistake.
const PRIVATE_FILE_LIMIT: u64 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot create the keys directory {}", dir.display())]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the keys directory {}", dir.display())]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the keys directory {} is not a directory", dir.display())]
    NotADirectory { dir: PathBuf },
    #[error(
        "the keys directory {} is writable by group or others (mode {mode:04o}): anyone could \
         replace its keys; refusing it (chmod 700 it if it is yours)",
        dir.display()
    )]
    DirTooOpen { dir: PathBuf, mode: u32 },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "private key {} is accessible by group or others (mode {mode:04o}); refusing to use \
         it (chmod 600 it if it is yours, or remove it)",
        path.display()
    )]
    LoosePermissions { path: PathBuf, mode: u32 },
    #[error("private key {} is not a regular file", path.display())]
    NotARegularFile { path: PathBuf },
    #[error("{} is corrupt: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{} is not a key record (JSON)", path.display())]
    CorruptRecord {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{} holds {found} bytes where an Ed25519 private key is {expected} bytes \
         ({} hex digits)",
        path.display(),
        expected * 2
    )]
    WrongLength {
        path: PathBuf,
        expected: usize,
        found: usize,
    },
    #[error("{} holds key {found}, not key {expected} that its name and record say", path.display())]
    Mismatch {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("{} names key {key_id} as active, but the keyring has no private key {key_id}", path.display())]
    ActiveUnknown { path: PathBuf, key_id: String },
    #[error("a new key has the id {key_id} of a key the keyring already holds")]
    DuplicateKeyId { key_id: String },
    #[error("cannot draw random bytes from the operating system for a new key")]
    Random {
        #[source]
        source: getrandom::Error,
    },
    #[error("public key {key_id} is invalid: {reason}")]
    InvalidPublicKey { key_id: String, reason: String },
}

/// A public key as the agent serves it for verification (and as the trust store receives
/// it). `public_key` is 64 lowercase hex digits; `key_id` is derived from it (module doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PublicKeyInfo {
    pub key_id: String,
    pub algorithm: String,
    pub public_key: String,
    pub created_at: Timestamp,
    pub active: bool,
}

impl PublicKeyInfo {
    /// The key this describes, refused unless the algorithm is Ed25519, the key decodes,
    /// and `key_id` is the id of that very key (so a served list cannot mislabel a key).
    pub fn verifying_key(&self) -> Result<VerifyingKey, KeyError> {
        if self.algorithm != ALGORITHM {
            return Err(KeyError::InvalidPublicKey {
                key_id: self.key_id.clone(),
                reason: format!("algorithm {:?} is not {ALGORITHM}", self.algorithm),
            });
        }
        verifying_key_from_hex(&self.key_id, &self.public_key)
    }
}

/// The key id of a public key: `ed25519:` + the first 16 hex digits of its SHA-256.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = hex::encode(Sha256::digest(key.as_bytes()));
    format!("{ALGORITHM}:{}", &digest[..KEY_ID_HEX_DIGITS])
}

/// Decodes a public key given as hex and checks that `key_id` is its id.
pub fn verifying_key_from_hex(
    key_id_claimed: &str,
    public_key: &str,
) -> Result<VerifyingKey, KeyError> {
    let invalid = |reason: String| KeyError::InvalidPublicKey {
        key_id: key_id_claimed.to_owned(),
        reason,
    };
    let key = decode_public_key(public_key).map_err(invalid)?;
    let derived = key_id(&key);
    if derived != key_id_claimed {
        return Err(invalid(format!("the key's id is {derived}")));
    }
    Ok(key)
}

/// The reason is worded to follow "public key … is invalid:" or a file name.
fn decode_public_key(text: &str) -> Result<VerifyingKey, String> {
    // Lower-case only, so that one key has one spelling wherever it is compared as text.
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("the public key is not lowercase hex".to_owned());
    }
    let bytes = hex::decode(text).map_err(|e| format!("the public key is not hex ({e})"))?;
    let bytes: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("the public key is {} bytes, not 32", bytes.len()))?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|_| "the public key is not an Ed25519 point".to_owned())
}

/// The active signing key, lent by the keyring.
#[derive(Clone, Copy)]
pub struct ActiveKey<'a> {
    key_id: &'a str,
    signing: &'a SigningKey,
}

impl ActiveKey<'_> {
    pub fn key_id(&self) -> &str {
        self.key_id
    }

    /// Pure Ed25519 (RFC 8032: no prehash, no context) over `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        self.signing.sign(message)
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }
}

impl std::fmt::Debug for ActiveKey<'_> {
    // The secret never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveKey")
            .field("key_id", &self.key_id)
            .finish()
    }
}

/// What `.pub` files hold.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRecord {
    key_id: String,
    algorithm: String,
    public_key: String,
    created_at: Timestamp,
}

struct Key {
    record: KeyRecord,
    verifying: VerifyingKey,
    /// `None` when only the public half is kept: it still verifies, it can never sign.
    signing: Option<SigningKey>,
}

/// The keys of one directory, oldest first.
pub struct Keyring {
    dir: PathBuf,
    keys: Vec<Key>,
    active: Option<String>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.record.key_id.as_str()).collect();
        f.debug_struct("Keyring")
            .field("dir", &self.dir)
            .field("keys", &ids)
            .field("active", &self.active)
            .finish()
    }
}

impl Keyring {
    /// Reads the keyring in `dir`. A missing or empty directory is an empty keyring; it
    /// writes nothing.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, KeyError> {
        let dir = dir.as_ref().to_path_buf();
        let mut ring = Keyring {
            dir,
            keys: Vec::new(),
            active: None,
        };
        let meta = match fs::symlink_metadata(&ring.dir) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ring),
            Err(source) => {
                return Err(KeyError::ReadDir {
                    dir: ring.dir,
                    source,
                });
            }
        };
        if !meta.is_dir() {
            return Err(KeyError::NotADirectory { dir: ring.dir });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(KeyError::DirTooOpen {
                dir: ring.dir,
                mode,
            });
        }
        let read_dir_error = |source| KeyError::ReadDir {
            dir: ring.dir.clone(),
            source,
        };
        for entry in fs::read_dir(&ring.dir).map_err(read_dir_error)? {
            let name = entry.map_err(read_dir_error)?.file_name();
            let Some(name) = name.to_str() else { continue };
            // Dot files are temporaries of an interrupted write; other files are not ours.
            if name.starts_with('.') {
                continue;
            }
            if let Some(stem) = name.strip_suffix(".pub") {
                ring.keys.push(load_key(&ring.dir, stem)?);
            }
        }
        ring.keys.sort_by(|a, b| {
            (a.record.created_at, &a.record.key_id).cmp(&(b.record.created_at, &b.record.key_id))
        });
        let active_path = ring.dir.join(ACTIVE_FILE);
        match read_small(&active_path) {
            Ok((text, _)) => {
                let key_id = String::from_utf8_lossy(&text).trim().to_owned();
                let usable = ring
                    .keys
                    .iter()
                    .any(|k| k.record.key_id == key_id && k.signing.is_some());
                if !usable {
                    return Err(KeyError::ActiveUnknown {
                        path: active_path,
                        key_id,
                    });
                }
                ring.active = Some(key_id);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(KeyError::Read {
                    path: active_path,
                    source,
                });
            }
        }
        Ok(ring)
    }

    /// Opens the keyring in `dir`, creating the directory and a first active key if there
    /// is none. Idempotent: `created` is true only when this call made a new key. A key left
    /// inactive by a crash during an earlier call is activated rather than a new one made.
    pub fn initialize(dir: impl AsRef<Path>) -> Result<(Self, bool), KeyError> {
        let dir = dir.as_ref();
        create_dir(dir)?;
        let mut ring = Self::open(dir)?;
        if ring.active.is_some() {
            return Ok((ring, false));
        }
        let newest_private = ring
            .keys
            .iter()
            .rev()
            .find(|k| k.signing.is_some())
            .map(|k| k.record.key_id.clone());
        if let Some(key_id) = newest_private {
            ring.write_active(key_id)?;
            return Ok((ring, false));
        }
        ring.add_active_key()?;
        Ok((ring, true))
    }

    /// Makes a new key the active one and returns its id. Old keys stay in the keyring (and
    /// in `public_keys`) so that what they signed still verifies.
    pub fn rotate(&mut self) -> Result<String, KeyError> {
        create_dir(&self.dir)?;
        self.add_active_key()
    }

    /// The key new artifacts are signed with; `None` until `initialize`.
    pub fn active(&self) -> Option<ActiveKey<'_>> {
        let key_id = self.active.as_deref()?;
        let key = self.keys.iter().find(|k| k.record.key_id == key_id)?;
        Some(ActiveKey {
            key_id: &key.record.key_id,
            signing: key.signing.as_ref()?,
        })
    }

    /// Every key, oldest first: what the agent serves for verification.
    pub fn public_keys(&self) -> Vec<PublicKeyInfo> {
        self.keys
            .iter()
            .map(|k| PublicKeyInfo {
                key_id: k.record.key_id.clone(),
                algorithm: k.record.algorithm.clone(),
                public_key: k.record.public_key.clone(),
                created_at: k.record.created_at,
                active: self.active.as_deref() == Some(k.record.key_id.as_str()),
            })
            .collect()
    }

    /// The public key with this id, active or not.
    pub fn verifying_key(&self, key_id: &str) -> Option<VerifyingKey> {
        self.keys
            .iter()
            .find(|k| k.record.key_id == key_id)
            .map(|k| k.verifying)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn add_active_key(&mut self) -> Result<String, KeyError> {
        let signing = generate()?;
        let verifying = signing.verifying_key();
        let key_id = key_id(&verifying);
        // 2^-64 per pair of keys; checked because a clash would overwrite a key's files.
        if self.keys.iter().any(|k| k.record.key_id == key_id) {
            return Err(KeyError::DuplicateKeyId { key_id });
        }
        let stem = file_stem(&key_id);
        let record = KeyRecord {
            key_id: key_id.clone(),
            algorithm: ALGORITHM.to_owned(),
            public_key: hex::encode(verifying.as_bytes()),
            created_at: Timestamp::now(),
        };

        // The hex seed stays on the stack and is wiped, not left in a freed String.
        let mut secret = [0u8; 65];
        let encoded = hex::encode_to_slice(signing.as_bytes(), &mut secret[..64]);
        secret[64] = b'\n';
        let key_path = self.dir.join(format!("{stem}.key"));
        let written = encoded
            .map_err(io::Error::other)
            .and_then(|()| write_atomic(&key_path, &secret, PRIVATE_MODE));
        wipe(&mut secret);
        written.map_err(|source| KeyError::Write {
            path: key_path,
            source,
        })?;

        let pub_path = self.dir.join(format!("{stem}.pub"));
        let mut json = serde_json::to_vec_pretty(&record).map_err(|source| KeyError::Write {
            path: pub_path.clone(),
            source: io::Error::other(source),
        })?;
        json.push(b'\n');
        write_atomic(&pub_path, &json, PUBLIC_MODE).map_err(|source| KeyError::Write {
            path: pub_path,
            source,
        })?;

        self.keys.push(Key {
            record,
            verifying,
            signing: Some(signing),
        });
        self.write_active(key_id.clone())?;
        Ok(key_id)
    }

    fn write_active(&mut self, key_id: String) -> Result<(), KeyError> {
        let path = self.dir.join(ACTIVE_FILE);
        write_atomic(&path, format!("{key_id}\n").as_bytes(), PUBLIC_MODE)
            .map_err(|source| KeyError::Write { path, source })?;
        self.active = Some(key_id);
        Ok(())
    }
}

/// `ed25519:0123…` → `ed25519-0123…`: no `:` in file names, which some tools (scp, rsync
/// with host prefixes) read as a separator.
fn file_stem(key_id: &str) -> String {
    key_id.replace(':', "-")
}

fn create_dir(dir: &Path) -> Result<(), KeyError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|source| KeyError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })
}

fn load_key(dir: &Path, stem: &str) -> Result<Key, KeyError> {
    let pub_path = dir.join(format!("{stem}.pub"));
    let (text, _) = read_small(&pub_path).map_err(|source| KeyError::Read {
        path: pub_path.clone(),
        source,
    })?;
    let record: KeyRecord =
        serde_json::from_slice(&text).map_err(|source| KeyError::CorruptRecord {
            path: pub_path.clone(),
            source,
        })?;
    if record.algorithm != ALGORITHM {
        return Err(KeyError::Corrupt {
            path: pub_path,
            reason: format!("algorithm {:?} is not {ALGORITHM}", record.algorithm),
        });
    }
    let verifying = decode_public_key(&record.public_key).map_err(|reason| KeyError::Corrupt {
        path: pub_path.clone(),
        reason,
    })?;
    let derived = key_id(&verifying);
    if derived != record.key_id {
        return Err(KeyError::Mismatch {
            path: pub_path,
            expected: record.key_id,
            found: derived,
        });
    }
    // A record copied under another key's name would pair it with that key's private file.
    if file_stem(&derived) != stem {
        return Err(KeyError::Corrupt {
            path: pub_path,
            reason: format!(
                "it records key {derived}, whose files are named {}.*",
                file_stem(&derived)
            ),
        });
    }
    let key_path = dir.join(format!("{stem}.key"));
    let signing = read_private(&key_path)?;
    if let Some(signing) = &signing {
        let found = key_id(&signing.verifying_key());
        if found != record.key_id {
            return Err(KeyError::Mismatch {
                path: key_path,
                expected: record.key_id,
                found,
            });
        }
    }
    Ok(Key {
        record,
        verifying,
        signing,
    })
}

/// The private key at `path`, `None` if there is no such file. The mode is checked on the
/// opened file itself, so the file read is the file checked.
fn read_private(path: &Path) -> Result<Option<SigningKey>, KeyError> {
    let read_error = |source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = match open_nofollow(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_error(e)),
    };
    let meta = file.metadata().map_err(read_error)?;
    if !meta.file_type().is_file() {
        return Err(KeyError::NotARegularFile {
            path: path.to_path_buf(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::LoosePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut text = Vec::with_capacity(65);
    let read = file.take(PRIVATE_FILE_LIMIT).read_to_end(&mut text);
    let key = read
        .map_err(read_error)
        .and_then(|_| decode_seed(path, &text));
    wipe(&mut text);
    key.map(Some)
}

fn decode_seed(path: &Path, text: &[u8]) -> Result<SigningKey, KeyError> {
    let digits = text.trim_ascii();
    if !digits
        .iter()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(KeyError::Corrupt {
            path: path.to_path_buf(),
            reason: "a private key file holds lowercase hex digits only".to_owned(),
        });
    }
    if digits.len() != 64 {
        return Err(KeyError::WrongLength {
            path: path.to_path_buf(),
            expected: 32,
            found: digits.len() / 2,
        });
    }
    let mut seed = [0u8; 32];
    let decoded = hex::decode_to_slice(digits, &mut seed);
    let key = decoded.map(|()| SigningKey::from_bytes(&seed));
    wipe(&mut seed);
    key.map_err(|e| KeyError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn generate() -> Result<SigningKey, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|source| KeyError::Random { source })?;
    let key = SigningKey::from_bytes(&seed);
    wipe(&mut seed);
    Ok(key)
}

/// Best effort: overwrite secret bytes before their memory is released (`black_box` keeps
/// the compiler from dropping the stores as dead).
fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(bytes);
}

fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Small files only (records, the active id, the trust store): read through a limit so
/// that a runaway file is an error rather than an allocation. Also returns the permission
/// bits of the file read (not of whatever the path names a moment later).
pub(crate) fn read_small(path: &Path) -> io::Result<(Vec<u8>, u32)> {
    const LIMIT: u64 = 1 << 20;
    let file = open_nofollow(path)?;
    let mode = file.metadata()?.permissions().mode() & 0o7777;
    let mut bytes = Vec::new();
    file.take(LIMIT + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > LIMIT {
        return Err(io::Error::other(format!("larger than {LIMIT} bytes")));
    }
    Ok((bytes, mode))
}

/// Writes `bytes` to `path` so that a reader (or a crash) sees the old file or the new
/// one, never half of one: a temporary sibling created with `mode` (never chmod'ed: the
/// bytes are never readable under a looser mode), synced, renamed over `path`, and the
/// directory synced so the rename itself survives a power cut.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("the path has no file name"))?
        .to_string_lossy();
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(io::Error::other)?;
    let tmp = dir.join(format!(".{name}.{}.tmp", hex::encode(nonce)));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        // Best effort: the temporary is invisible to readers anyway (dot file).
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o7777
    }

    fn key_file(ring: &Keyring, suffix: &str) -> PathBuf {
        let id = ring.active().unwrap().key_id().to_owned();
        ring.dir().join(format!("{}.{suffix}", file_stem(&id)))
    }

    #[test]
    fn an_empty_or_missing_dir_is_an_empty_keyring() {
        let tmp = tempfile::tempdir().unwrap();
        let ring = Keyring::open(tmp.path().join("missing")).unwrap();
        assert!(ring.is_empty() && ring.active().is_none());
        assert!(!tmp.path().join("missing").exists(), "open writes nothing");
        let dir = tmp.path().join("keys");
        DirBuilder::new().mode(0o700).create(&dir).unwrap();
        let ring = Keyring::open(&dir).unwrap();
        assert!(ring.is_empty() && ring.public_keys().is_empty());
    }

    #[test]
    fn initialize_is_idempotent_and_sets_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data/keys");
        let (ring, created) = Keyring::initialize(&dir).unwrap();
        assert!(created);
        let first = ring.active().unwrap().key_id().to_owned();
        assert!(first.starts_with("ed25519:") && first.len() == "ed25519:".len() + 16);

        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&key_file(&ring, "key")), 0o600);
        assert_eq!(mode(&key_file(&ring, "pub")), 0o644);
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "temporaries left: {leftovers:?}");

        let (again, created) = Keyring::initialize(&dir).unwrap();
        assert!(!created);
        assert_eq!(again.active().unwrap().key_id(), first);
        assert_eq!(again.public_keys().len(), 1);

        let reopened = Keyring::open(&dir).unwrap();
        assert_eq!(reopened.public_keys(), ring.public_keys());
        let info = &reopened.public_keys()[0];
        assert!(info.active && info.algorithm == "ed25519" && info.public_key.len() == 64);
        assert_eq!(
            info.verifying_key().unwrap(),
            reopened.verifying_key(&first).unwrap()
        );
    }

    #[test]
    fn rotate_keeps_old_keys_for_verification() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut ring, _) = Keyring::initialize(tmp.path().join("keys")).unwrap();
        let old = ring.active().unwrap().key_id().to_owned();
        let new = ring.rotate().unwrap();
        assert_ne!(old, new);
        assert_eq!(ring.active().unwrap().key_id(), new);

        let reopened = Keyring::open(ring.dir()).unwrap();
        assert_eq!(reopened.active().unwrap().key_id(), new);
        assert!(reopened.verifying_key(&old).is_some());
        let served = reopened.public_keys();
        let flags: Vec<(&str, bool)> = served
            .iter()
            .map(|k| (k.key_id.as_str(), k.active))
            .collect();
        assert_eq!(flags, [(old.as_str(), false), (new.as_str(), true)]);
    }

    #[test]
    fn a_private_key_readable_by_others_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (ring, _) = Keyring::initialize(tmp.path().join("keys")).unwrap();
        let path = key_file(&ring, "key");
        for loose in [0o640, 0o604, 0o660] {
            fs::set_permissions(&path, fs::Permissions::from_mode(loose)).unwrap();
            let err = Keyring::open(ring.dir()).unwrap_err();
            assert!(
                matches!(&err, KeyError::LoosePermissions { path: p, mode } if *p == path && *mode == loose),
                "{err:?}"
            );
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{err}"
            );
        }
    }

    #[test]
    fn a_dir_writable_by_others_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (ring, _) = Keyring::initialize(tmp.path().join("keys")).unwrap();
        fs::set_permissions(ring.dir(), fs::Permissions::from_mode(0o777)).unwrap();
        let err = Keyring::open(ring.dir()).unwrap_err();
        assert!(
            matches!(err, KeyError::DirTooOpen { mode: 0o777, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn corrupt_or_wrong_length_key_files_are_refused_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let (ring, _) = Keyring::initialize(tmp.path().join("keys")).unwrap();
        let path = key_file(&ring, "key");
        type Check = fn(&KeyError) -> bool;
        let cases: [(&[u8], Check); 4] = [
            (b"zz not hex\n", |e| matches!(e, KeyError::Corrupt { .. })),
            (&[b'a'; 62], |e| {
                matches!(e, KeyError::WrongLength { found: 31, .. })
            }),
            (&[b'a'; 128], |e| {
                matches!(e, KeyError::WrongLength { found: 64, .. })
            }),
            // A valid key, but not the one the record and the file name are for.
            (&[b'a'; 64], |e| matches!(e, KeyError::Mismatch { .. })),
        ];
        for (bytes, expected) in cases {
            fs::remove_file(&path).unwrap();
            write_atomic(&path, bytes, 0o600).unwrap();
            let err = Keyring::open(ring.dir()).unwrap_err();
            assert!(expected(&err), "{err:?}");
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{err}"
            );
        }

        let pub_path = key_file(&ring, "pub");
        write_atomic(&pub_path, b"{\"key_id\":", 0o644).unwrap();
        let err = Keyring::open(ring.dir()).unwrap_err();
        assert!(
            matches!(&err, KeyError::CorruptRecord { path, .. } if *path == pub_path),
            "{err:?}"
        );
    }

    #[test]
    fn a_record_under_another_keys_name_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut ring, _) = Keyring::initialize(tmp.path().join("keys")).unwrap();
        let old_pub = key_file(&ring, "pub");
        ring.rotate().unwrap();
        let new_pub = key_file(&ring, "pub");
        fs::copy(&old_pub, &new_pub).unwrap();
        let err = Keyring::open(ring.dir()).unwrap_err();
        assert!(
            matches!(&err, KeyError::Corrupt { path, .. } if *path == new_pub),
            "{err:?}"
        );
    }

    #[test]
    fn a_symlinked_private_key_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let (ring, _) = Keyring::initialize(tmp.path().join("keys")).unwrap();
        let path = key_file(&ring, "key");
        let elsewhere = tmp.path().join("elsewhere.key");
        fs::rename(&path, &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        let err = Keyring::open(ring.dir()).unwrap_err();
        assert!(
            matches!(&err, KeyError::Read { path: p, .. } if *p == path),
            "{err:?}"
        );
    }

    #[test]
    fn crash_leftovers_are_recovered() {
        let tmp = tempfile::tempdir().unwrap();
        let (ring, _) = Keyring::initialize(tmp.path().join("keys")).unwrap();
        let id = ring.active().unwrap().key_id().to_owned();
        // A crash between writing a key and activating it: no `active` record, a stray
        // temporary, and an orphan private key whose `.pub` was never written.
        fs::remove_file(ring.dir().join(ACTIVE_FILE)).unwrap();
        write_atomic(&ring.dir().join(".active.0011.tmp"), b"garbage", 0o600).unwrap();
        write_atomic(&ring.dir().join("ed25519-00.key"), &[b'b'; 64], 0o600).unwrap();
        assert!(Keyring::open(ring.dir()).unwrap().active().is_none());
        let (ring, created) = Keyring::initialize(ring.dir()).unwrap();
        assert!(!created);
        assert_eq!(ring.active().unwrap().key_id(), id);
        assert_eq!(ring.public_keys().len(), 1);
    }

    #[test]
    fn an_active_record_naming_an_unknown_key_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (ring, _) = Keyring::initialize(tmp.path().join("keys")).unwrap();
        let path = ring.dir().join(ACTIVE_FILE);
        write_atomic(&path, b"ed25519:0000000000000000\n", 0o644).unwrap();
        let err = Keyring::open(ring.dir()).unwrap_err();
        assert!(
            matches!(&err, KeyError::ActiveUnknown { key_id, .. } if key_id == "ed25519:0000000000000000"),
            "{err:?}"
        );
    }

    #[test]
    fn a_public_key_without_its_private_half_still_verifies() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut ring, _) = Keyring::initialize(tmp.path().join("keys")).unwrap();
        let old = ring.active().unwrap().key_id().to_owned();
        let old_key = ring.dir().join(format!("{}.key", file_stem(&old)));
        ring.rotate().unwrap();
        fs::remove_file(old_key).unwrap();
        let ring = Keyring::open(ring.dir()).unwrap();
        assert!(ring.verifying_key(&old).is_some());
        assert_ne!(ring.active().unwrap().key_id(), old);
    }

    #[test]
    fn served_key_info_is_checked_against_its_id() {
        let tmp = tempfile::tempdir().unwrap();
        let (ring, _) = Keyring::initialize(tmp.path().join("keys")).unwrap();
        let mut info = ring.public_keys().remove(0);
        info.key_id = "ed25519:0123456789abcdef".to_owned();
        assert!(matches!(
            info.verifying_key(),
            Err(KeyError::InvalidPublicKey { .. })
        ));
        let mut info = ring.public_keys().remove(0);
        info.algorithm = "rsa".to_owned();
        assert!(matches!(
            info.verifying_key(),
            Err(KeyError::InvalidPublicKey { .. })
        ));
        let mut info = ring.public_keys().remove(0);
        info.public_key = info.public_key.to_uppercase();
        assert!(matches!(
            info.verifying_key(),
            Err(KeyError::InvalidPublicKey { .. })
        ));
    }

    #[test]
    fn the_key_id_is_the_documented_hash() {
        // RFC 8032, section 7.1, test 1.
        let public =
            hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
                .unwrap();
        let key = VerifyingKey::from_bytes(&public.try_into().unwrap()).unwrap();
        // python3 -c 'import hashlib; print(hashlib.sha256(bytes.fromhex("d75a…511a")).hexdigest()[:16])'
        assert_eq!(key_id(&key), "ed25519:21fe31dfa154a261");
    }
}
