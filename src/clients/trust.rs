//! Trust on first use, for the CLI on an operator's machine: the agent public keys the
//! operator trusts, per agent URL, kept in one JSON file whose path the caller gives. The
//! first time the CLI meets an agent it pins every key the agent serves; afterwards a key
//! it did not pin is refused until the operator trusts it explicitly
//! (`--trust-key KEY_ID=PUBLIC_KEY`). It never holds private keys, never talks to an agent
//! (the caller fetches the served keys), and never removes a pinned key by itself.
//!
//! The file (written atomically, mode 0600, its directory created 0700):
//!
//! ```json
//! {"agents": {"https://agent.example:8443": [
//!   {"key_id": "ed25519:…", "public_key": "<64 hex>", "trusted_at": "…", "how": "first-use"}
//! ]}}
//! ```
//!
//! Agent URLs are compared as given, without trailing slashes. Two CLI processes pinning
//! at the same moment are not arbitrated: the last write wins, and both wrote only keys
//! the operator accepted.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ed25519_dalek::VerifyingKey;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::clients::keys::{self, KeyError, PublicKeyInfo};

const FILE_MODE: u32 = 0o600;

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read the trusted keys file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the trusted keys file {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the trusted keys file {} is writable by group or others (mode {mode:04o}): anyone \
         could add a key to it; refusing it (chmod 600 it if it is yours)",
        path.display()
    )]
    FileTooOpen { path: PathBuf, mode: u32 },
    #[error("the trusted keys file {} is not valid", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the trusted keys file {} holds an invalid key for {url}", path.display())]
    CorruptKey {
        path: PathBuf,
        url: String,
        #[source]
        source: KeyError,
    },
    #[error("agent {url} serves no public key: there is nothing to pin")]
    NoKeysServed { url: String },
    #[error("agent {url} serves an invalid public key")]
    InvalidServedKey {
        url: String,
        #[source]
        source: KeyError,
    },
    #[error(
        "agent {url} serves key {key_id}, which {} does not trust; if the agent's key was \
         rotated on purpose, confirm the key with its operator and trust it with \
         --trust-key {key_id}={public_key}",
        path.display()
    )]
    UntrustedKey {
        url: String,
        key_id: String,
        public_key: String,
        path: PathBuf,
    },
    #[error(
        "for agent {url}, key {key_id} is now the public key {served}, but {} pinned \
         {pinned} under that id: something may be impersonating the agent; nothing was \
         trusted",
        path.display()
    )]
    KeyChanged {
        url: String,
        key_id: String,
        pinned: String,
        served: String,
        path: PathBuf,
    },
    #[error("--trust-key {arg:?}: {reason}")]
    BadKeyArg { arg: String, reason: String },
}

/// How a key came to be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrustedHow {
    /// Pinned the first time the CLI met the agent.
    FirstUse,
    /// Given by the operator (`--trust-key`).
    Explicit,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKey {
    pub key_id: String,
    /// 64 lowercase hex digits (as `keys` serves them).
    pub public_key: String,
    pub trusted_at: Timestamp,
    pub how: TrustedHow,
}

/// A key the operator names as `KEY_ID=PUBLIC_KEY`, checked: the id must be the public
/// key's own id, so that a mistyped or mismatched pair is refused rather than pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyArg {
    key_id: String,
    public_key: String,
}

impl KeyArg {
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn public_key(&self) -> &str {
        &self.public_key
    }
}

impl FromStr for KeyArg {
    type Err = TrustError;

    fn from_str(arg: &str) -> Result<Self, TrustError> {
        let bad = |reason: String| TrustError::BadKeyArg {
            arg: arg.to_owned(),
            reason,
        };
        let (key_id, public_key) = arg
            .split_once('=')
            .ok_or_else(|| bad("expected KEY_ID=PUBLIC_KEY".to_owned()))?;
        let (key_id, public_key) = (key_id.trim(), public_key.trim());
        keys::verifying_key_from_hex(key_id, public_key).map_err(|e| bad(e.to_string()))?;
        Ok(KeyArg {
            key_id: key_id.to_owned(),
            public_key: public_key.to_owned(),
        })
    }
}

/// What `pin_on_first_use` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pinned {
    /// The agent was new: these key ids are now pinned.
    FirstUse(Vec<String>),
    /// Every served key was pinned already.
    AlreadyTrusted,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustFile {
    agents: BTreeMap<String, Vec<TrustedKey>>,
}

#[derive(Debug)]
pub struct TrustedKeys {
    path: PathBuf,
    file: TrustFile,
}

impl TrustedKeys {
    /// Reads the file at `path`; a missing file trusts nothing. Every key in it is checked
    /// against its id, so an edited file cannot slip a key in under another's name.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, TrustError> {
        let path = path.as_ref().to_path_buf();
        let read_error = |source| TrustError::Read {
            path: path.clone(),
            source,
        };
        let (bytes, mode) = match keys::read_small(&path) {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(TrustedKeys {
                    path,
                    file: TrustFile::default(),
                });
            }
            Err(e) => return Err(read_error(e)),
        };
        if mode & 0o022 != 0 {
            return Err(TrustError::FileTooOpen { path, mode });
        }
        let file: TrustFile =
            serde_json::from_slice(&bytes).map_err(|source| TrustError::Corrupt {
                path: path.clone(),
                source,
            })?;
        for (url, trusted) in &file.agents {
            for key in trusted {
                keys::verifying_key_from_hex(&key.key_id, &key.public_key).map_err(|source| {
                    TrustError::CorruptKey {
                        path: path.clone(),
                        url: url.clone(),
                        source,
                    }
                })?;
            }
        }
        Ok(TrustedKeys { path, file })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The keys trusted for the agent at `url`, oldest first.
    pub fn keys(&self, url: &str) -> &[TrustedKey] {
        self.file
            .agents
            .get(normalize(url))
            .map_or(&[], Vec::as_slice)
    }

    /// The trusted public key with this id for the agent at `url`: what `artifact::verify`
    /// asks for.
    pub fn verifying_key(&self, url: &str, key_id: &str) -> Option<VerifyingKey> {
        let key = self.keys(url).iter().find(|k| k.key_id == key_id)?;
        // Checked on load and on insertion; a failure here cannot happen, and would mean
        // "not trusted" anyway.
        keys::verifying_key_from_hex(&key.key_id, &key.public_key).ok()
    }

    /// Trust on first use. For an agent never met, pins every key it serves and saves the
    /// file. For a known agent, every served key must be pinned already with the same
    /// public key: an unpinned key is refused with the `--trust-key` that would trust it.
    pub fn pin_on_first_use(
        &mut self,
        url: &str,
        served: &[PublicKeyInfo],
    ) -> Result<Pinned, TrustError> {
        let url = normalize(url);
        if served.is_empty() {
            return Err(TrustError::NoKeysServed {
                url: url.to_owned(),
            });
        }
        for info in served {
            info.verifying_key()
                .map_err(|source| TrustError::InvalidServedKey {
                    url: url.to_owned(),
                    source,
                })?;
        }
        if let Some(pinned) = self.file.agents.get(url) {
            for info in served {
                match pinned.iter().find(|k| k.key_id == info.key_id) {
                    Some(k) if k.public_key == info.public_key => {}
                    Some(k) => {
                        return Err(TrustError::KeyChanged {
                            url: url.to_owned(),
                            key_id: info.key_id.clone(),
                            pinned: k.public_key.clone(),
                            served: info.public_key.clone(),
                            path: self.path.clone(),
                        });
                    }
                    None => {
                        return Err(TrustError::UntrustedKey {
                            url: url.to_owned(),
                            key_id: info.key_id.clone(),
                            public_key: info.public_key.clone(),
                            path: self.path.clone(),
                        });
                    }
                }
            }
            return Ok(Pinned::AlreadyTrusted);
        }
        let now = Timestamp::now();
        let mut pinned: Vec<TrustedKey> = Vec::with_capacity(served.len());
        for info in served {
            // A list naming one key twice pins it once.
            if !pinned.iter().any(|k| k.key_id == info.key_id) {
                pinned.push(TrustedKey {
                    key_id: info.key_id.clone(),
                    public_key: info.public_key.clone(),
                    trusted_at: now,
                    how: TrustedHow::FirstUse,
                });
            }
        }
        let ids = pinned.iter().map(|k| k.key_id.clone()).collect();
        self.file.agents.insert(url.to_owned(), pinned);
        self.save()?;
        Ok(Pinned::FirstUse(ids))
    }

    /// Trusts `key` for the agent at `url` (the operator's `--trust-key`) and saves the
    /// file. Returns false if it was trusted already. A different public key pinned under
    /// the same id is refused, not replaced.
    pub fn trust(&mut self, url: &str, key: &KeyArg) -> Result<bool, TrustError> {
        let url = normalize(url);
        let path = self.path.clone();
        let pinned = self.file.agents.entry(url.to_owned()).or_default();
        match pinned.iter().find(|k| k.key_id == key.key_id) {
            Some(k) if k.public_key == key.public_key => return Ok(false),
            Some(k) => {
                return Err(TrustError::KeyChanged {
                    url: url.to_owned(),
                    key_id: key.key_id.clone(),
                    pinned: k.public_key.clone(),
                    served: key.public_key.clone(),
                    path,
                });
            }
            None => {}
        }
        pinned.push(TrustedKey {
            key_id: key.key_id.clone(),
            public_key: key.public_key.clone(),
            trusted_at: Timestamp::now(),
            how: TrustedHow::Explicit,
        });
        self.save()?;
        Ok(true)
    }

    fn save(&self) -> Result<(), TrustError> {
        let write_error = |source| TrustError::Write {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(write_error)?;
        }
        let mut json =
            serde_json::to_vec_pretty(&self.file).map_err(|e| write_error(io::Error::other(e)))?;
        json.push(b'\n');
        keys::write_atomic(&self.path, &json, FILE_MODE).map_err(write_error)
    }
}

fn normalize(url: &str) -> &str {
    url.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::keys::Keyring;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    const URL: &str = "https://agent.example:8443";

    fn agent(dir: &Path) -> Keyring {
        Keyring::initialize(dir).unwrap().0
    }

    #[test]
    fn first_use_pins_then_unpinned_keys_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config/trusted_keys.json");
        let mut agent = agent(&tmp.path().join("agent"));
        let first = agent.active().unwrap().key_id().to_owned();

        let mut store = TrustedKeys::load(&path).unwrap();
        assert!(store.keys(URL).is_empty());
        let pinned = store.pin_on_first_use(URL, &agent.public_keys()).unwrap();
        assert_eq!(pinned, Pinned::FirstUse(vec![first.clone()]));
        assert_eq!(fs_mode(&path), 0o600);
        assert_eq!(fs_mode(path.parent().unwrap()), 0o700);

        // Read back: same keys, same answer, and the trailing slash is the same agent.
        let mut store = TrustedKeys::load(&path).unwrap();
        assert_eq!(store.keys(&format!("{URL}/"))[0].how, TrustedHow::FirstUse);
        assert_eq!(
            store.pin_on_first_use(URL, &agent.public_keys()).unwrap(),
            Pinned::AlreadyTrusted
        );
        assert_eq!(
            store.verifying_key(URL, &first),
            agent.verifying_key(&first)
        );

        // The agent rotates: its new key is refused with the flag that would trust it.
        let second = agent.rotate().unwrap();
        let served = agent.public_keys();
        let err = store.pin_on_first_use(URL, &served).unwrap_err();
        let new_public = &served[1].public_key;
        assert!(
            matches!(&err, TrustError::UntrustedKey { key_id, .. } if *key_id == second),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains(&format!("--trust-key {second}={new_public}")),
            "{err}"
        );
        assert!(store.verifying_key(URL, &second).is_none());

        // Trusted explicitly, it passes; trusting again changes nothing.
        let arg: KeyArg = format!("{second}={new_public}").parse().unwrap();
        assert!(store.trust(URL, &arg).unwrap());
        assert!(!store.trust(URL, &arg).unwrap());
        let store = TrustedKeys::load(&path).unwrap();
        let mut store = store;
        assert_eq!(
            store.pin_on_first_use(URL, &served).unwrap(),
            Pinned::AlreadyTrusted
        );
        assert_eq!(store.keys(URL)[1].how, TrustedHow::Explicit);

        // Another agent URL is another first use.
        let other = "https://other.example";
        assert!(
            matches!(store.pin_on_first_use(other, &served).unwrap(), Pinned::FirstUse(ids) if ids.len() == 2)
        );
    }

    #[test]
    fn an_impostor_key_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("trusted.json");
        let real = agent(&tmp.path().join("real"));
        let impostor = agent(&tmp.path().join("impostor"));
        let mut store = TrustedKeys::load(&path).unwrap();
        store.pin_on_first_use(URL, &real.public_keys()).unwrap();
        let err = store
            .pin_on_first_use(URL, &impostor.public_keys())
            .unwrap_err();
        assert!(matches!(err, TrustError::UntrustedKey { .. }), "{err:?}");

        // A served key whose id does not match its public key (relabelled) is invalid.
        let mut lying = impostor.public_keys();
        lying[0].key_id = real.public_keys()[0].key_id.clone();
        let err = store.pin_on_first_use(URL, &lying).unwrap_err();
        assert!(
            matches!(err, TrustError::InvalidServedKey { .. }),
            "{err:?}"
        );
        let err = TrustedKeys::load(&path)
            .unwrap()
            .pin_on_first_use("https://new", &lying)
            .unwrap_err();
        assert!(
            matches!(err, TrustError::InvalidServedKey { .. }),
            "{err:?}"
        );
        assert!(matches!(
            store.pin_on_first_use(URL, &[]),
            Err(TrustError::NoKeysServed { .. })
        ));
    }

    #[test]
    fn a_pinned_id_with_another_public_key_is_refused() {
        // Only a crafted 64-bit id collision gets here; the pinned entry is altered in
        // memory to stand for it.
        let tmp = tempfile::tempdir().unwrap();
        let real = agent(&tmp.path().join("real")).public_keys();
        let other = agent(&tmp.path().join("other")).public_keys();
        let mut store = TrustedKeys::load(tmp.path().join("trusted.json")).unwrap();
        store.pin_on_first_use(URL, &real).unwrap();
        store.file.agents.get_mut(URL).unwrap()[0].public_key = other[0].public_key.clone();
        let err = store.pin_on_first_use(URL, &real).unwrap_err();
        assert!(matches!(err, TrustError::KeyChanged { .. }), "{err:?}");
        let arg: KeyArg = format!("{}={}", real[0].key_id, real[0].public_key)
            .parse()
            .unwrap();
        let err = store.trust(URL, &arg).unwrap_err();
        assert!(matches!(err, TrustError::KeyChanged { .. }), "{err:?}");
    }

    #[test]
    fn key_args_are_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let info = agent(tmp.path()).public_keys().remove(0);
        let arg: KeyArg = format!("{}={}", info.key_id, info.public_key)
            .parse()
            .unwrap();
        assert_eq!(
            (arg.key_id(), arg.public_key()),
            (info.key_id.as_str(), info.public_key.as_str())
        );
        for bad in [
            info.key_id.clone(),
            format!("ed25519:0000000000000000={}", info.public_key),
            format!("{}={}", info.key_id, &info.public_key[2..]),
        ] {
            assert!(
                matches!(bad.parse::<KeyArg>(), Err(TrustError::BadKeyArg { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_edited_file_cannot_slip_a_key_in() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("trusted.json");
        let real = agent(&tmp.path().join("real")).public_keys().remove(0);
        let other = agent(&tmp.path().join("other")).public_keys().remove(0);
        let mut store = TrustedKeys::load(&path).unwrap();
        store
            .pin_on_first_use(URL, std::slice::from_ref(&real))
            .unwrap();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace(&real.public_key, &other.public_key);
        keys::write_atomic(&path, text.as_bytes(), 0o600).unwrap();
        let err = TrustedKeys::load(&path).unwrap_err();
        assert!(
            matches!(&err, TrustError::CorruptKey { path: p, .. } if *p == path),
            "{err:?}"
        );

        keys::write_atomic(&path, b"{\"agents\": 1}", 0o600).unwrap();
        assert!(matches!(
            TrustedKeys::load(&path),
            Err(TrustError::Corrupt { .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
        assert!(matches!(
            TrustedKeys::load(&path),
            Err(TrustError::FileTooOpen { .. })
        ));
    }

    fn fs_mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o7777
    }
}
