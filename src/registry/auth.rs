//! Registry credentials and the pieces of the Docker token protocol: parsing
//! `WWW-Authenticate` challenges and the token endpoint's answer.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// Credentials for one registry host, used when pulling images from it and when listing
/// its tags. The agent reads a list of them from `--registry-credentials FILE` (YAML).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryAuth {
    /// Registry host as it appears in image references, e.g. `ghcr.io` or
    /// `127.0.0.1:5000`; `docker.io` for Docker Hub. A scheme or path is ignored.
    pub registry: String,
    pub username: String,
    pub password: String,
}

// Written out so the password never reaches a log line.
impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What a registry asked for in `WWW-Authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// Fetch a token from `realm` and send it as `Authorization: Bearer`.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    /// Send the configured username and password as `Authorization: Basic`.
    Basic,
}

/// The `Authorization` a request carries.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Authorization {
    Basic { username: String, password: String },
    Bearer(String),
}

impl Authorization {
    pub fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Self::Basic { username, password } => request.basic_auth(username, Some(password)),
            Self::Bearer(token) => request.bearer_auth(token),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Basic { .. } => "basic",
            Self::Bearer(_) => "bearer",
        }
    }
}

/// Picks the challenge to answer from all `WWW-Authenticate` values: a Bearer one when
/// offered (it works anonymously too), otherwise Basic.
pub(crate) fn pick_challenge<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Challenge> {
    let mut basic = None;
    for value in values {
        match parse_challenge(value) {
            Some(bearer @ Challenge::Bearer { .. }) => return Some(bearer),
            Some(Challenge::Basic) => basic = Some(Challenge::Basic),
            None => {}
        }
    }
    basic
}

/// Parses one challenge, `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
/// Parameter values may be quoted (with `\` escapes) or bare tokens; scopes contain
/// commas, so quotes are honoured. Other schemes and a Bearer without realm are `None`.
pub(crate) fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, params) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let (mut realm, mut service, mut scope) = (None, None, None);
    let mut rest = params.trim_start();
    while !rest.is_empty() {
        let (name, after_name) = rest.split_once('=')?;
        let name = name.trim().trim_start_matches(',').trim();
        let after_name = after_name.trim_start();
        let (val, after_value) = if let Some(quoted) = after_name.strip_prefix('"') {
            let mut val = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => val.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => val.push(c),
                }
            }
            (val, &quoted[end?..])
        } else {
            let end = after_name.find(',').unwrap_or(after_name.len());
            (after_name[..end].trim().to_string(), &after_name[end..])
        };
        match name.to_ascii_lowercase().as_str() {
            "realm" => realm = Some(val),
            "service" => service = Some(val),
            "scope" => scope = Some(val),
            _ => {}
        }
        rest = after_value
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
    }
    Some(Challenge::Bearer {
        realm: realm?,
        service,
        scope,
    })
}

/// A token endpoint's answer. Docker Hub sends both `token` and `access_token`; the
/// OAuth2 flavour only the latter.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// What the token spec says to assume when `expires_in` is missing.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

impl TokenAnswer {
    /// The token and how long to reuse it: its lifetime less a margin (a tenth, at most
    /// 10 s) so that a token is not sent in its last moments and refused on arrival.
    pub fn into_token(self) -> Option<(String, Duration)> {
        let token = self.token.or(self.access_token).filter(|t| !t.is_empty())?;
        let lifetime = self
            .expires_in
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
        let margin = (lifetime / 10).min(Duration::from_secs(10));
        Some((token, lifetime - margin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_auth_debug_hides_the_password() {
        let auth = RegistryAuth {
            registry: "ghcr.io".into(),
            username: "me".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{auth:?}").contains("hunter2"));
    }

    #[test]
    fn bearer_challenges_are_parsed() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/nginx:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(
                r#"bearer realm=http://127.0.0.1:1/token, scope="repository:a/b:pull,push", error="insufficient_scope""#
            ),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:1/token".into(),
                service: None,
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Bearer realm="a\"b""#),
            Some(Challenge::Bearer {
                realm: "a\"b".into(),
                service: None,
                scope: None
            })
        );
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None);
        assert_eq!(parse_challenge(r#"Bearer realm="unterminated"#), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn basic_is_used_only_without_bearer() {
        assert_eq!(
            pick_challenge([r#"Basic realm="mcp-test""#]),
            Some(Challenge::Basic)
        );
        assert!(matches!(
            pick_challenge([r#"Basic realm="x""#, r#"Bearer realm="https://a/t""#]),
            Some(Challenge::Bearer { .. })
        ));
        assert_eq!(pick_challenge(["Negotiate"]), None);
    }

    #[test]
    fn token_lifetimes_default_to_a_minute_less_a_margin() {
        let answer: TokenAnswer = serde_json::from_str(r#"{"token":"t"}"#).expect("json");
        assert_eq!(
            answer.into_token(),
            Some(("t".to_string(), Duration::from_secs(54)))
        );
        let answer: TokenAnswer =
            serde_json::from_str(r#"{"access_token":"a","expires_in":300}"#).expect("json");
        assert_eq!(
            answer.into_token(),
            Some(("a".to_string(), Duration::from_secs(290)))
        );
        let answer: TokenAnswer = serde_json::from_str(r#"{"token":""}"#).expect("json");
        assert_eq!(answer.into_token(), None);
    }
}
