//! Signed, content-addressed artifacts: a published client configuration (the payload),
//! the envelope that says what it is for and who signed it, an Ed25519 signature over the
//! envelope, and an id that is the hash of all three. It owns the canonical byte forms
//! that are hashed and signed, signing with the keyring's active key, and verification.
//! It never reads or writes files, never holds keys (`keys` does), and never decides which
//! keys to trust: `verify` asks its caller for each key by id.
//!
//! # What is hashed and signed
//!
//! `JCS(x)` is the RFC 8785 canonical JSON of `x`, as UTF-8 bytes: object members sorted
//! by their UTF-16 code units, no whitespace, numbers as ECMAScript writes doubles.
//!
//! 1. `payload_digest = "sha256:" + hex(SHA-256(JCS(payload)))`.
//! 2. `signature = hex(Ed25519(active key, JCS(envelope)))`: pure Ed25519 (RFC 8032, no
//!    prehash, no context), the 64 signature bytes as 128 lowercase hex digits. The
//!    envelope is the object `{"client", "created_at", "key_id", "parent",
//!    "payload_digest", "profile"}`: `created_at` as an RFC 3339 UTC string as jiff writes
//!    it (`"2026-01-02T03:04:05Z"`, fractional seconds only when non-zero), `parent` is
//!    `null` when there is none. The signature thus covers the payload (through its
//!    digest), the client, the profile, the time, the key id and the parent.
//! 3. `id = "sha256:" + hex(SHA-256(JCS({"envelope": …, "payload": …, "signature": …})))`:
//!    the artifact without its id.
//!
//! The wire form is the JSON object `{"id", "envelope", "payload", "signature"}`; unknown
//! members are refused (they would be covered by nothing). The test
//! `worked_example_matches_independent_computation` spells out every byte string for one
//! artifact, with values computed outside this code.
//!
//! JCS writes every number as an IEEE 754 double, so two integers past 2^53 that round to
//! the same double would share one digest and one signature. Signing and verifying refuse
//! a payload holding an integer that a double cannot represent exactly.
//!
//! # Verification
//!
//! `verify` checks, in order, and stops at the first failure: the payload matches its
//! digest; the key id is one the caller trusts; the signature verifies over the envelope
//! (strict Ed25519: no malleable signatures, no weak keys); the id matches the content.
//! `verify_for` also refuses a valid artifact made for another client or profile, so that
//! one client's configuration is never installed as another's.

use ed25519_dalek::{Signature, VerifyingKey};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::clients::keys::Keyring;

/// What the signature covers (module doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// `"sha256:<hex>"` of the payload's canonical JSON.
    pub payload_digest: String,
    pub client: String,
    pub profile: String,
    pub created_at: Timestamp,
    pub key_id: String,
    /// The id of the previous artifact for the same (client, profile), if any.
    pub parent: Option<String>,
}

/// A signed configuration. Immutable: made by `sign` or read from its wire form, and only
/// read after that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    id: String,
    envelope: Envelope,
    payload: Value,
    signature: String,
}

impl Artifact {
    /// `"sha256:<hex>"` of the artifact's canonical form without the id.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    pub fn payload(&self) -> &Value {
        &self.payload
    }

    /// 128 lowercase hex digits.
    pub fn signature(&self) -> &str {
        &self.signature
    }
}

/// The part of an artifact its id is the hash of.
#[derive(Serialize)]
struct Body<'a> {
    envelope: &'a Envelope,
    payload: &'a Value,
    signature: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum CanonicalError {
    #[error("cannot write the {what} as canonical JSON (RFC 8785)")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "the payload's number {number} at {pointer:?} is not exactly an IEEE 754 double, the \
         only number canonical JSON (RFC 8785) has: another number would share its digest; \
         write it as a string"
    )]
    InexactNumber { pointer: String, number: String },
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the keyring in {} has no active key to sign with (initialize it first)", dir.display())]
    NoActiveKey { dir: std::path::PathBuf },
    #[error(transparent)]
    Canonical(#[from] CanonicalError),
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(
        "the payload does not match the digest its envelope records ({recorded}; the payload \
         hashes to {computed}): it was altered"
    )]
    PayloadDigestMismatch { recorded: String, computed: String },
    #[error("the artifact is signed by key {key_id}, which is not trusted")]
    UnknownKey { key_id: String },
    #[error("the signature by key {key_id} is malformed: {reason}")]
    MalformedSignature { key_id: String, reason: String },
    #[error(
        "the signature does not verify with key {key_id}: the envelope (payload digest, \
         client, profile, created_at, key id or parent) was altered, or another key signed it"
    )]
    BadSignature {
        key_id: String,
        #[source]
        source: ed25519_dalek::SignatureError,
    },
    #[error("the artifact's id {recorded} does not match its content, which hashes to {computed}")]
    IdMismatch { recorded: String, computed: String },
    #[error(
        "artifact {id} is for client {client:?} profile {profile:?}, not client \
         {expected_client:?} profile {expected_profile:?}"
    )]
    WrongTarget {
        id: String,
        client: String,
        profile: String,
        expected_client: String,
        expected_profile: String,
    },
    #[error(transparent)]
    Canonical(#[from] CanonicalError),
}

/// Signs `payload` for (`client`, `profile`) with the keyring's active key.
pub fn sign(
    payload: Value,
    client: &str,
    profile: &str,
    created_at: Timestamp,
    parent: Option<&str>,
    keyring: &Keyring,
) -> Result<Artifact, SignError> {
    let key = keyring.active().ok_or_else(|| SignError::NoActiveKey {
        dir: keyring.dir().to_path_buf(),
    })?;
    let envelope = Envelope {
        payload_digest: payload_digest(&payload)?,
        client: client.to_owned(),
        profile: profile.to_owned(),
        created_at,
        key_id: key.key_id().to_owned(),
        parent: parent.map(str::to_owned),
    };
    let signature = hex::encode(key.sign(&canonical(&envelope, "envelope")?).to_bytes());
    let id = artifact_id(&envelope, &payload, &signature)?;
    Ok(Artifact {
        id,
        envelope,
        payload,
        signature,
    })
}

/// Checks an artifact (module doc, "Verification"). `trusted` returns the public key for a
/// key id the caller trusts: `|id| keyring.verifying_key(id)` on the agent,
/// `|id| trusted_keys.verifying_key(agent_url, id)` on an operator's machine.
pub fn verify(
    artifact: &Artifact,
    trusted: impl Fn(&str) -> Option<VerifyingKey>,
) -> Result<(), VerifyError> {
    let envelope = &artifact.envelope;
    let computed = payload_digest(&artifact.payload)?;
    if computed != envelope.payload_digest {
        return Err(VerifyError::PayloadDigestMismatch {
            recorded: envelope.payload_digest.clone(),
            computed,
        });
    }
    let key_id = &envelope.key_id;
    let key = trusted(key_id).ok_or_else(|| VerifyError::UnknownKey {
        key_id: key_id.clone(),
    })?;
    let signature = decode_signature(&artifact.signature).map_err(|reason| {
        VerifyError::MalformedSignature {
            key_id: key_id.clone(),
            reason,
        }
    })?;
    key.verify_strict(&canonical(envelope, "envelope")?, &signature)
        .map_err(|source| VerifyError::BadSignature {
            key_id: key_id.clone(),
            source,
        })?;
    let computed = artifact_id(envelope, &artifact.payload, &artifact.signature)?;
    if computed != artifact.id {
        return Err(VerifyError::IdMismatch {
            recorded: artifact.id.clone(),
            computed,
        });
    }
    Ok(())
}

/// `verify`, and the artifact must be for this (`client`, `profile`): a validly signed
/// artifact for another target is refused.
pub fn verify_for(
    artifact: &Artifact,
    client: &str,
    profile: &str,
    trusted: impl Fn(&str) -> Option<VerifyingKey>,
) -> Result<(), VerifyError> {
    verify(artifact, trusted)?;
    let envelope = &artifact.envelope;
    if envelope.client != client || envelope.profile != profile {
        return Err(VerifyError::WrongTarget {
            id: artifact.id.clone(),
            client: envelope.client.clone(),
            profile: envelope.profile.clone(),
            expected_client: client.to_owned(),
            expected_profile: profile.to_owned(),
        });
    }
    Ok(())
}

/// `"sha256:<hex>"` of the payload's canonical JSON; refuses numbers JCS would round.
pub fn payload_digest(payload: &Value) -> Result<String, CanonicalError> {
    check_numbers(payload, &mut String::new())?;
    Ok(sha256_id(&canonical(payload, "payload")?))
}

/// RFC 8785 canonical JSON of `value`.
pub fn canonical(value: &impl Serialize, what: &'static str) -> Result<Vec<u8>, CanonicalError> {
    serde_json_canonicalizer::to_vec(value)
        .map_err(|source| CanonicalError::Serialize { what, source })
}

fn artifact_id(
    envelope: &Envelope,
    payload: &Value,
    signature: &str,
) -> Result<String, CanonicalError> {
    let body = Body {
        envelope,
        payload,
        signature,
    };
    Ok(sha256_id(&canonical(&body, "artifact")?))
}

fn sha256_id(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// One spelling per signature: lowercase hex only, or the same signature would give the
/// artifact several ids.
fn decode_signature(text: &str) -> Result<Signature, String> {
    if text.len() != 128 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!(
            "expected 128 lowercase hex digits, found {} characters",
            text.len()
        ));
    }
    let mut bytes = [0u8; 64];
    hex::decode_to_slice(text, &mut bytes).map_err(|e| e.to_string())?;
    Ok(Signature::from_bytes(&bytes))
}

/// Refuses integers that JCS would write as a rounded double. `pointer` is the JSON Pointer
/// (RFC 6901) of `value`, for the message.
fn check_numbers(value: &Value, pointer: &mut String) -> Result<(), CanonicalError> {
    match value {
        Value::Number(n) => {
            // Floats are doubles already; an integer is exact when the double it becomes
            // converts back to the same integer (i128 holds both i64 and u64).
            let exact = match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => (i as f64) as i128 == i128::from(i),
                (None, Some(u)) => (u as f64) as i128 == i128::from(u),
                (None, None) => true,
            };
            if !exact {
                return Err(CanonicalError::InexactNumber {
                    pointer: pointer.clone(),
                    number: n.to_string(),
                });
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = pointer.len();
                pointer.push_str(&format!("/{i}"));
                check_numbers(item, pointer)?;
                pointer.truncate(len);
            }
        }
        Value::Object(members) => {
            for (name, member) in members {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&name.replace('~', "~0").replace('/', "~1"));
                check_numbers(member, pointer)?;
                pointer.truncate(len);
            }
        }
        Value::Null | Value::Bool(_) | Value::String(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    fn ring(dir: &Path) -> Keyring {
        Keyring::initialize(dir.join("keys")).unwrap().0
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn config() -> Value {
        json!({"mcpServers": {"files": {"command": "mcp-files", "args": ["--root", "/srv"]}}})
    }

    fn signed(ring: &Keyring) -> Artifact {
        sign(
            config(),
            "claude-desktop",
            "default",
            at("2026-01-02T03:04:05Z"),
            Some("sha256:0000000000000000000000000000000000000000000000000000000000000000"),
            ring,
        )
        .unwrap()
    }

    #[test]
    fn sign_then_verify_round_trips_through_json() {
        let tmp = tempfile::tempdir().unwrap();
        let ring = ring(tmp.path());
        let artifact = signed(&ring);
        verify(&artifact, |id| ring.verifying_key(id)).unwrap();
        assert!(artifact.id().starts_with("sha256:") && artifact.id().len() == 7 + 64);
        assert_eq!(artifact.envelope().key_id, ring.active().unwrap().key_id());

        let text = serde_json::to_string_pretty(&artifact).unwrap();
        let back: Artifact = serde_json::from_str(&text).unwrap();
        assert_eq!(back, artifact);
        verify(&back, |id| ring.verifying_key(id)).unwrap();
        assert_eq!(serde_json::to_string_pretty(&back).unwrap(), text);
    }

    #[test]
    fn created_at_is_an_rfc3339_string() {
        let tmp = tempfile::tempdir().unwrap();
        let ring = ring(tmp.path());
        let mut artifact = signed(&ring);
        let wire = serde_json::to_value(&artifact).unwrap();
        assert_eq!(wire["envelope"]["created_at"], "2026-01-02T03:04:05Z");
        artifact = sign(
            json!(1),
            "c",
            "p",
            at("2026-01-02T03:04:05.120Z"),
            None,
            &ring,
        )
        .unwrap();
        let wire = serde_json::to_value(&artifact).unwrap();
        assert_eq!(wire["envelope"]["created_at"], "2026-01-02T03:04:05.12Z");
        assert_eq!(wire["envelope"]["parent"], Value::Null);
        let back: Artifact = serde_json::from_value(wire).unwrap();
        verify(&back, |id| ring.verifying_key(id)).unwrap();
    }

    #[test]
    fn tampering_with_any_part_is_detected_with_its_own_error() {
        let tmp = tempfile::tempdir().unwrap();
        let ring = ring(tmp.path());
        let other = Keyring::initialize(tmp.path().join("other")).unwrap().0;
        let trusted = |id: &str| ring.verifying_key(id).or_else(|| other.verifying_key(id));
        let good = signed(&ring);

        type Tamper = fn(&mut Artifact);
        let bad_signature: &[(&str, Tamper)] = &[
            ("client", |a| a.envelope.client = "cursor".into()),
            ("profile", |a| a.envelope.profile = "work".into()),
            ("created_at", |a| {
                a.envelope.created_at = at("2026-01-02T03:04:06Z")
            }),
            ("parent", |a| a.envelope.parent = None),
            ("parent", |a| a.envelope.parent = Some("sha256:11".into())),
            ("payload and its digest together", |a| {
                a.payload["mcpServers"]["files"]["command"] = json!("evil");
                a.envelope.payload_digest = payload_digest(&a.payload).unwrap();
            }),
            ("signature", |a| {
                let flipped = if a.signature.starts_with('0') {
                    "1"
                } else {
                    "0"
                };
                a.signature.replace_range(..1, flipped);
            }),
        ];
        for (field, tamper) in bad_signature {
            let mut a = good.clone();
            tamper(&mut a);
            let err = verify(&a, trusted).unwrap_err();
            assert!(
                matches!(err, VerifyError::BadSignature { .. }),
                "{field}: {err:?}"
            );
        }

        // The key id of another trusted key: the signature is checked against that key.
        let mut a = good.clone();
        a.envelope.key_id = other.active().unwrap().key_id().to_owned();
        let err = verify(&a, trusted).unwrap_err();
        assert!(matches!(err, VerifyError::BadSignature { .. }), "{err:?}");

        let mut a = good.clone();
        a.payload["mcpServers"]["files"]["args"][1] = json!("/");
        let err = verify(&a, trusted).unwrap_err();
        assert!(
            matches!(err, VerifyError::PayloadDigestMismatch { .. }),
            "{err:?}"
        );

        let mut a = good.clone();
        a.envelope.payload_digest = format!("sha256:{}", "0".repeat(64));
        let err = verify(&a, trusted).unwrap_err();
        assert!(
            matches!(err, VerifyError::PayloadDigestMismatch { .. }),
            "{err:?}"
        );

        let mut a = good.clone();
        a.envelope.key_id = "ed25519:0123456789abcdef".into();
        let err = verify(&a, trusted).unwrap_err();
        assert!(
            matches!(&err, VerifyError::UnknownKey { key_id } if key_id == "ed25519:0123456789abcdef"),
            "{err:?}"
        );

        for malformed in [
            good.signature.to_uppercase(),
            good.signature[2..].to_owned(),
            "zz".repeat(64),
        ] {
            let mut a = good.clone();
            a.signature = malformed;
            let err = verify(&a, trusted).unwrap_err();
            assert!(
                matches!(err, VerifyError::MalformedSignature { .. }),
                "{err:?}"
            );
        }

        let mut a = good.clone();
        a.id = format!("sha256:{}", "0".repeat(64));
        let err = verify(&a, trusted).unwrap_err();
        assert!(
            matches!(&err, VerifyError::IdMismatch { computed, .. } if *computed == good.id),
            "{err:?}"
        );

        verify(&good, trusted).unwrap();
    }

    #[test]
    fn a_foreign_key_is_unknown() {
        let tmp = tempfile::tempdir().unwrap();
        let ours = ring(tmp.path());
        let theirs = Keyring::initialize(tmp.path().join("theirs")).unwrap().0;
        let artifact = signed(&theirs);
        let err = verify(&artifact, |id| ours.verifying_key(id)).unwrap_err();
        let theirs_id = theirs.active().unwrap().key_id().to_owned();
        assert!(
            matches!(&err, VerifyError::UnknownKey { key_id } if *key_id == theirs_id),
            "{err:?}"
        );
        assert!(err.to_string().contains(&theirs_id));
    }

    #[test]
    fn an_artifact_for_another_target_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let ring = ring(tmp.path());
        let artifact = signed(&ring);
        let trusted = |id: &str| ring.verifying_key(id);
        verify_for(&artifact, "claude-desktop", "default", trusted).unwrap();
        for (client, profile) in [("cursor", "default"), ("claude-desktop", "work")] {
            let err = verify_for(&artifact, client, profile, trusted).unwrap_err();
            assert!(matches!(err, VerifyError::WrongTarget { .. }), "{err:?}");
        }
    }

    #[test]
    fn rotation_keeps_old_artifacts_verifiable() {
        let tmp = tempfile::tempdir().unwrap();
        let mut ring = ring(tmp.path());
        let old_key = ring.active().unwrap().key_id().to_owned();
        let old = signed(&ring);
        let new_key = ring.rotate().unwrap();
        let new = sign(
            config(),
            "claude-desktop",
            "default",
            at("2026-02-01T00:00:00Z"),
            Some(old.id()),
            &ring,
        )
        .unwrap();
        assert_eq!(old.envelope().key_id, old_key);
        assert_eq!(new.envelope().key_id, new_key);
        let reopened = Keyring::open(ring.dir()).unwrap();
        for artifact in [&old, &new] {
            verify(artifact, |id| reopened.verifying_key(id)).unwrap();
        }
    }

    #[test]
    fn member_order_does_not_change_digest_or_id() {
        let tmp = tempfile::tempdir().unwrap();
        let ring = ring(tmp.path());
        let a: Value =
            serde_json::from_str(r#"{"b": {"y": 1, "x": [2, {"q": 1, "p": 0}]}, "a": "s"}"#)
                .unwrap();
        let b: Value =
            serde_json::from_str(r#"{"a": "s", "b": {"x": [2, {"p": 0, "q": 1}], "y": 1}}"#)
                .unwrap();
        assert_eq!(payload_digest(&a).unwrap(), payload_digest(&b).unwrap());
        let t = at("2026-01-02T03:04:05Z");
        let sa = sign(a, "c", "p", t, None, &ring).unwrap();
        let sb = sign(b, "c", "p", t, None, &ring).unwrap();
        // Ed25519 is deterministic: the same envelope gives the same signature, hence id.
        assert_eq!(sa.id(), sb.id());
        // Array order is content, not spelling.
        assert_ne!(
            payload_digest(&json!([1, 2])).unwrap(),
            payload_digest(&json!([2, 1])).unwrap()
        );
        // JCS also fixes number spelling: 1, 1.0 and 1e0 are one double, so one digest.
        let one = payload_digest(&json!(1)).unwrap();
        for spelling in ["1.0", "1e0", "10e-1"] {
            let value: Value = serde_json::from_str(spelling).unwrap();
            assert_eq!(payload_digest(&value).unwrap(), one, "{spelling}");
        }
    }

    #[test]
    fn the_canonicalizer_passes_rfc_8785_vectors() {
        // RFC 8785, section 3.2.2 (the example) and 3.2.3 (sorting by UTF-16 code units:
        // U+1F600 is the surrogate pair D83D DE00, which sorts before U+FB33).
        let example = r#"{
          "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
          "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
          "literals": [null, true, false]
        }"#;
        let expected = r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#;
        let value: Value = serde_json::from_str(example).unwrap();
        assert_eq!(
            String::from_utf8(canonical(&value, "test").unwrap()).unwrap(),
            expected
        );

        let sorting = r#"{"\u20ac": "Euro Sign", "\r": "Carriage Return",
          "\ufb33": "Hebrew Letter Dalet With Dagesh", "1": "One",
          "\ud83d\ude00": "Emoji: Grinning Face", "\u0080": "Control",
          "\u00f6": "Latin Small Letter O With Diaeresis"}"#;
        let value: Value = serde_json::from_str(sorting).unwrap();
        let names: Vec<String> = {
            let text = String::from_utf8(canonical(&value, "test").unwrap()).unwrap();
            let back: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
            // serde_json's Map is sorted by code point; read the order from the text instead.
            let mut names: Vec<(usize, String)> = back
                .keys()
                .map(|k| {
                    (
                        text.find(&serde_json::to_string(k).unwrap()).unwrap(),
                        k.clone(),
                    )
                })
                .collect();
            names.sort();
            names.into_iter().map(|(_, k)| k).collect()
        };
        assert_eq!(names, ["\r", "1", "\u{80}", "ö", "€", "😀", "\u{fb33}"]);
    }

    #[test]
    fn integers_a_double_cannot_hold_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let ring = ring(tmp.path());
        // 2^53 + 1 and 2^53 would both be written as 9007199254740992.
        let payload = json!({"servers": [{"port": 9007199254740993u64}]});
        let err = sign(payload, "c", "p", at("2026-01-02T03:04:05Z"), None, &ring).unwrap_err();
        assert!(
            matches!(&err, SignError::Canonical(CanonicalError::InexactNumber { pointer, .. }) if pointer == "/servers/0/port"),
            "{err:?}"
        );
        for exact in [
            json!(9007199254740992u64),
            json!(-9007199254740992i64),
            json!(1u64 << 60),
            json!(0.1),
        ] {
            payload_digest(&exact).unwrap();
        }
        for inexact in [json!(u64::MAX), json!(i64::MAX), json!(i64::MIN + 1)] {
            assert!(payload_digest(&inexact).is_err(), "{inexact}");
        }
        // And on the verifying side, whatever the signer did.
        let mut artifact = sign(
            json!({"n": 1}),
            "c",
            "p",
            at("2026-01-02T03:04:05Z"),
            None,
            &ring,
        )
        .unwrap();
        artifact.payload = json!({"n": 9007199254740993u64});
        let err = verify(&artifact, |id| ring.verifying_key(id)).unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::Canonical(CanonicalError::InexactNumber { .. })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn unknown_members_are_refused_on_the_wire() {
        let tmp = tempfile::tempdir().unwrap();
        let ring = ring(tmp.path());
        let mut wire = serde_json::to_value(signed(&ring)).unwrap();
        wire["envelope"]["note"] = json!("unsigned");
        assert!(serde_json::from_value::<Artifact>(wire.clone()).is_err());
        wire["envelope"].as_object_mut().unwrap().remove("note");
        wire["extra"] = json!(1);
        assert!(serde_json::from_value::<Artifact>(wire).is_err());
    }

    #[test]
    fn signing_needs_an_active_key() {
        let tmp = tempfile::tempdir().unwrap();
        let empty = Keyring::open(tmp.path()).unwrap();
        let err = sign(
            json!({}),
            "c",
            "p",
            at("2026-01-02T03:04:05Z"),
            None,
            &empty,
        )
        .unwrap_err();
        assert!(matches!(err, SignError::NoActiveKey { .. }), "{err:?}");
    }

    /// The module doc's recipe, byte for byte, for the RFC 8032 test key 1. Every expected
    /// value below was computed outside this code (Python's hashlib and `cryptography`).
    #[test]
    fn worked_example_matches_independent_computation() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
            .create(&dir)
            .unwrap();
        let seed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
        let public = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
        let key_id = "ed25519:21fe31dfa154a261";
        crate::clients::keys::write_atomic(
            &dir.join("ed25519-21fe31dfa154a261.key"),
            format!("{seed}\n").as_bytes(),
            0o600,
        )
        .unwrap();
        let record = json!({"key_id": key_id, "algorithm": "ed25519", "public_key": public, "created_at": "2026-01-01T00:00:00Z"});
        crate::clients::keys::write_atomic(
            &dir.join("ed25519-21fe31dfa154a261.pub"),
            record.to_string().as_bytes(),
            0o644,
        )
        .unwrap();
        crate::clients::keys::write_atomic(
            &dir.join("active"),
            format!("{key_id}\n").as_bytes(),
            0o644,
        )
        .unwrap();
        let ring = Keyring::open(&dir).unwrap();

        let artifact = sign(
            config(),
            "claude-desktop",
            "default",
            at("2026-01-02T03:04:05Z"),
            None,
            &ring,
        )
        .unwrap();

        let payload_jcs =
            r#"{"mcpServers":{"files":{"args":["--root","/srv"],"command":"mcp-files"}}}"#;
        assert_eq!(
            canonical(artifact.payload(), "test").unwrap(),
            payload_jcs.as_bytes()
        );
        let digest = "sha256:c8fff83b451a11f6659cc858650a42936d45311aeafdb4cdeb69cc0811eedd3f";
        assert_eq!(artifact.envelope().payload_digest, digest);

        let envelope_jcs = format!(
            r#"{{"client":"claude-desktop","created_at":"2026-01-02T03:04:05Z","key_id":"{key_id}","parent":null,"payload_digest":"{digest}","profile":"default"}}"#
        );
        assert_eq!(
            canonical(artifact.envelope(), "test").unwrap(),
            envelope_jcs.as_bytes()
        );
        let signature = "7ddb8d6c86ab47eaf97ad79492e025fede2a0dc809105c52c97c6f72b6e8f2062b54a636407def454e77952445dcfdc4a6605dbba0f41378fe3652972a770605";
        assert_eq!(artifact.signature(), signature);

        let body_jcs = format!(
            r#"{{"envelope":{envelope_jcs},"payload":{payload_jcs},"signature":"{signature}"}}"#
        );
        let body = Body {
            envelope: artifact.envelope(),
            payload: artifact.payload(),
            signature,
        };
        assert_eq!(canonical(&body, "test").unwrap(), body_jcs.as_bytes());
        assert_eq!(
            artifact.id(),
            "sha256:c1f07f088e6ad5609170934273bf9ba06823e80c861e35dc252b5e930726c585"
        );
        verify(&artifact, |id| ring.verifying_key(id)).unwrap();
    }
}
