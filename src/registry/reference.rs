//! Image references as Docker reads them: which registry a repository lives in, where
//! that registry's API is, and whether it is spoken over plain HTTP.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use reqwest::Url;

/// Docker Hub's name in image references and in [`super::RegistryAuth::registry`].
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API actually answers; `docker.io` itself does not.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// The registry host of an image reference, by Docker's rule: the first path component
/// is a host when it contains `.` or `:` or is `localhost`; otherwise it is Docker Hub.
pub fn registry_host(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => {
            normalize_registry(first)
        }
        _ => DOCKER_HUB.to_string(),
    }
}

/// The one spelling of a registry used to match credentials, so that
/// `https://index.docker.io/v1/` (what `docker login` writes) and `docker.io` name the
/// same registry. A scheme and a path are dropped and the host is lowercased.
pub fn normalize_registry(registry: &str) -> String {
    let host = registry
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_string()
        }
        _ => host,
    }
}

/// An image repository resolved to the registry API that serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Repository {
    /// The registry as [`normalize_registry`] spells it: the key for credentials and
    /// the name in errors and log fields.
    pub registry: String,
    /// `http://host[:port]` or `https://host[:port]`, where `/v2/` is served.
    pub base: Url,
    /// The repository path inside the registry, e.g. `library/nginx`.
    pub name: String,
}

impl Repository {
    /// Resolves `image` (`127.0.0.1:5000/example/server`, `ghcr.io/org/x`, `nginx`,
    /// `docker.io/library/nginx`). A tag or digest on the reference is ignored: a
    /// repository is what is asked for. On failure, says why the reference is invalid.
    pub fn parse(image: &str) -> Result<Self, String> {
        let image = image.trim();
        let without_digest = match image.split_once('@') {
            Some((name, digest)) if is_valid_reference(digest) && digest.contains(':') => name,
            Some((_, digest)) => return Err(format!("`{digest}` is not a digest")),
            None => image,
        };
        let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
        let without_tag = match without_digest[last_slash..].rfind(':') {
            Some(i) if is_valid_reference(&without_digest[last_slash + i + 1..]) => {
                &without_digest[..last_slash + i]
            }
            Some(i) => {
                return Err(format!(
                    "`{}` is not a tag",
                    &without_digest[last_slash + i + 1..]
                ));
            }
            None => without_digest,
        };
        let (host, path) = match without_tag.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                (first, rest)
            }
            _ => (DOCKER_HUB, without_tag),
        };
        check_host(host)?;
        check_path(path)?;
        let registry = normalize_registry(host);
        let name = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        let api_host = if registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            registry.as_str()
        };
        // Docker treats registries on loopback as insecure by default; so do we, and only
        // those: everything else is HTTPS.
        let scheme = if is_loopback_host(api_host) {
            "http"
        } else {
            "https"
        };
        let base = Url::parse(&format!("{scheme}://{api_host}/"))
            .map_err(|e| format!("`{host}` is not a usable registry host: {e}"))?;
        Ok(Self {
            registry,
            base,
            name,
        })
    }

    /// `GET /v2/<name>/tags/list?n=<page_size>`.
    pub fn tags_url(&self, page_size: usize) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!("/v2/{}/tags/list", self.name));
        url.set_query(Some(&format!("n={page_size}")));
        url
    }

    /// `/v2/<name>/manifests/<reference>`.
    pub fn manifest_url(&self, reference: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!("/v2/{}/manifests/{reference}", self.name));
        url
    }

    /// The default token scope for reading this repository.
    pub fn pull_scope(&self) -> String {
        format!("repository:{}:pull", self.name)
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.name)
    }
}

/// Whether `host` (`127.0.0.1:5000`, `localhost`, `[::1]:5000`; a URL host without
/// brackets also works) is on this machine's loopback interface.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let bare = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if host.parse::<Ipv6Addr>().is_ok() {
        host.as_str()
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host.as_str(), |(name, _)| name)
    };
    bare == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A registry host must not smuggle a path, query or credentials into the URL we build.
fn check_host(host: &str) -> Result<(), String> {
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("`{host}` is not a registry host"))
    }
}

/// The distribution spec's repository grammar, loosely: lowercase path components of
/// `[a-z0-9._-]` that start with a letter or digit. It keeps `..`, `?` and `#` out of
/// the URL path.
fn check_path(path: &str) -> Result<(), String> {
    let component_ok = |c: &str| {
        c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    };
    if path.split('/').all(component_ok) {
        Ok(())
    } else {
        Err(format!(
            "`{path}` is not a repository name (lowercase letters, digits, `.`, `_`, `-` and `/`)"
        ))
    }
}

/// Whether `tag` can be put into a manifest URL: a tag by the distribution spec's
/// grammar, or a digest.
pub(crate) fn is_valid_reference(tag: &str) -> bool {
    let is_tag = tag.len() <= 128
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    let is_digest = tag.split_once(':').is_some_and(|(algorithm, hex)| {
        !algorithm.is_empty()
            && algorithm
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
            && hex.len() >= 32
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
    });
    is_tag || is_digest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(image: &str) -> (String, String, String) {
        let r = Repository::parse(image).unwrap_or_else(|e| panic!("{image}: {e}"));
        (r.registry, r.base.to_string(), r.name)
    }

    #[test]
    fn references_resolve_like_docker() {
        assert_eq!(
            parse("127.0.0.1:5000/example/server"),
            (
                "127.0.0.1:5000".into(),
                "http://127.0.0.1:5000/".into(),
                "example/server".into()
            )
        );
        assert_eq!(
            parse("ghcr.io/org/x:1.0.0"),
            ("ghcr.io".into(), "https://ghcr.io/".into(), "org/x".into())
        );
        assert_eq!(
            parse("nginx"),
            (
                "docker.io".into(),
                "https://registry-1.docker.io/".into(),
                "library/nginx".into()
            )
        );
        assert_eq!(parse("docker.io/library/nginx"), parse("nginx:1.25"));
        assert_eq!(parse("acme/server").2, "acme/server");
        let digest = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            parse(&format!("localhost/x@{digest}")).1,
            "http://localhost/"
        );
        assert_eq!(parse("localhost:5000/x").1, "http://localhost:5000/");
        assert_eq!(parse("[::1]:5000/x").1, "http://[::1]:5000/");
        assert_eq!(parse("127.1.2.3:80/x").1, "http://127.1.2.3/");
        assert_eq!(
            parse("registry.local:5000/x").1,
            "https://registry.local:5000/"
        );
        assert_eq!(parse("10.0.0.1:5000/x").1, "https://10.0.0.1:5000/");
    }

    #[test]
    fn invalid_references_are_refused() {
        for image in [
            "",
            "Nginx",
            "127.0.0.1:5000/../x",
            "127.0.0.1:5000/x?y",
            "127.0.0.1:5000/a//b",
            "user@evil.example/x",
            "127.0.0.1:5000/x:bad/tag",
            "127.0.0.1:5000/x:",
            "127.0.0.1:5000/",
        ] {
            assert!(Repository::parse(image).is_err(), "{image:?} was accepted");
        }
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in [
            "127.0.0.1",
            "127.0.0.1:5000",
            "127.9.9.9:1",
            "localhost",
            "LOCALHOST:80",
            "[::1]",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "128.0.0.1:5000",
            "localhost.example",
            "example.com",
            "[::2]:1",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn registry_hosts_follow_dockers_rule() {
        assert_eq!(registry_host("ghcr.io/acme/server:1.0.0"), "ghcr.io");
        assert_eq!(registry_host("127.0.0.1:5000/x/y:1.0.0"), "127.0.0.1:5000");
        assert_eq!(registry_host("localhost/x:1"), "localhost");
        assert_eq!(registry_host("acme/server:1.0.0"), "docker.io");
        assert_eq!(registry_host("server:1.0.0"), "docker.io");
        assert_eq!(
            normalize_registry("https://index.docker.io/v1/"),
            "docker.io"
        );
        assert_eq!(normalize_registry("GHCR.io"), "ghcr.io");
    }

    #[test]
    fn manifest_references_are_tags_or_digests() {
        assert!(is_valid_reference("1.0.0"));
        assert!(is_valid_reference("_x"));
        assert!(is_valid_reference(&format!("sha256:{}", "a".repeat(64))));
        assert!(!is_valid_reference(""));
        assert!(!is_valid_reference("-x"));
        assert!(!is_valid_reference("../x"));
        assert!(!is_valid_reference(&"a".repeat(129)));
    }
}
