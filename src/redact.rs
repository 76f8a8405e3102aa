//! Known secret values, blanked out of text that came from a server (log tails, probe
//! answers) before it becomes a reason, an event, a record or a notification.
//!
//! A server can print anything it was given, its environment included; what it prints must
//! not carry the operator's secrets to whoever reads rollout reasons or receives
//! notifications. Every value the agent hands to a server from the secrets file or its own
//! environment is registered here, as are the agent's own keys and tokens.

use std::sync::{Arc, RwLock};

/// What a redacted value is replaced with.
pub const MASK: &str = "[redacted]";

/// Values shorter than this are not redacted: blanking every `on` or `80` in a log tail
/// would make it unreadable, and such a value is no secret anyway.
const MIN_LEN: usize = 4;

/// A shared, growing set of secret values. Cloning shares the set.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    // A std lock: held only to copy or extend a short list, never across an await.
    values: Arc<RwLock<Vec<String>>>,
}

impl Redactor {
    /// Remembers `value` as secret from now on.
    pub fn add(&self, value: &str) {
        let value = value.trim();
        if value.chars().count() < MIN_LEN {
            return;
        }
        // A server that prints its configuration as JSON escapes quotes, backslashes and
        // control characters: that spelling is secret too.
        let escaped = serde_json::to_string(value)
            .ok()
            .map(|q| q[1..q.len() - 1].to_owned())
            .filter(|e| e != value);
        let mut values = self.values.write().unwrap_or_else(|p| p.into_inner());
        for v in std::iter::once(value.to_owned()).chain(escaped) {
            if !values.contains(&v) {
                values.push(v);
            }
        }
        // Longest first, so a secret that contains another is blanked whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }

    /// `text` with every known secret value replaced by [`MASK`].
    pub fn redact(&self, text: &str) -> String {
        let values = self.values.read().unwrap_or_else(|p| p.into_inner());
        let mut out = text.to_owned();
        for v in values.iter() {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), MASK);
            }
        }
        out
    }

    /// Every string inside `value`, redacted in place.
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(s) => *s = self.redact(s),
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            serde_json::Value::Object(map) => map.values_mut().for_each(|v| self.redact_json(v)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_are_blanked_longest_first_and_short_ones_kept() {
        let r = Redactor::default();
        r.add("s3cr3t");
        r.add("s3cr3t-and-more");
        r.add("on");
        let shared = r.clone();
        assert_eq!(
            shared.redact("KEY=s3cr3t-and-more OTHER=s3cr3t mode=on"),
            "KEY=[redacted] OTHER=[redacted] mode=on"
        );
        r.add("quo\"te");
        assert_eq!(r.redact(r#"{"K":"quo\"te"}"#), r#"{"K":"[redacted]"}"#);
        let mut v = serde_json::json!({"reason": ["x s3cr3t"], "n": 1});
        r.redact_json(&mut v);
        assert_eq!(v, serde_json::json!({"reason": ["x [redacted]"], "n": 1}));
    }
}
