//! The registry client against a real OCI registry (Debian's `docker-registry`, i.e.
//! distribution 2.8) on 127.0.0.1, over real HTTP. Images are pushed through the
//! distribution API by `support::registry::Pusher`, so none of this needs Docker.
//!
//! What Debian's registry does, as observed (distribution 2.8.2+ds1): `tags/list` ignores
//! `n` and `last` and returns every tag in one answer without a `Link` header, and sends
//! no ETag (it ignores `If-None-Match`); manifests do carry an ETag and
//! `Docker-Content-Digest`. Pagination, ETags, Bearer tokens and 429s are therefore
//! exercised through `RegistryFront`, a small HTTP server in front of the real registry
//! that adds exactly that behaviour and proxies the rest.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mcp_orchestration::registry::{RegistryAuth, RegistryClient, RegistryError, TagList};
use tempfile::TempDir;

use crate::support::docker::free_port;
use crate::support::registry::{
    BearerAuth, FrontOptions, Pusher, REGISTRY_PASSWORD, REGISTRY_USER, RegistryFront,
    TestRegistry, registry_or_skip, sha256, tags,
};

/// Every client call gets this long; they all finish in well under a second except the
/// 429 test, which waits one.
const CALL_DEADLINE: Duration = Duration::from_secs(20);

/// An open registry and the storage it lives on (dropped after it).
async fn open_registry() -> (TestRegistry, TempDir) {
    let storage = tempfile::tempdir().expect("registry storage");
    let registry = TestRegistry::start(storage.path(), false).await;
    (registry, storage)
}

async fn within<T>(what: &str, call: impl Future<Output = T>) -> T {
    tokio::time::timeout(CALL_DEADLINE, call)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {CALL_DEADLINE:?}"))
}

async fn list(client: &RegistryClient, image: &str) -> TagList {
    within(&format!("list_tags({image})"), client.list_tags(image))
        .await
        .unwrap_or_else(|e| panic!("list_tags({image}): {e}"))
}

fn sorted(mut tags: Vec<String>) -> Vec<String> {
    tags.sort();
    tags
}

fn strings(tags: &[&str]) -> Vec<String> {
    tags.iter().map(|t| t.to_string()).collect()
}

#[tokio::test]
async fn registry_lists_tags_of_a_plain_http_loopback_registry() {
    if !registry_or_skip("registry_lists_tags_of_a_plain_http_loopback_registry") {
        return;
    }
    let (registry, _storage) = open_registry().await;
    let pushed = strings(&["1.0.0", "1.1.0", "2.0.0-rc.1", "latest"]);
    Pusher::new(&registry).push("example/server", &pushed).await;
    let client = RegistryClient::new(Vec::new(), 4);

    let listed = list(&client, &format!("{}/example/server", registry.host())).await;

    assert_eq!(sorted(listed.tags), sorted(pushed));
    assert!(!listed.cached);
    assert_eq!(client.requests_sent(), 1);
}

#[tokio::test]
async fn registry_follows_pagination_for_thousands_of_tags() {
    if !registry_or_skip("registry_follows_pagination_for_thousands_of_tags") {
        return;
    }
    let (registry, _storage) = open_registry().await;
    let pushed = tags(2_500);
    let started = Instant::now();
    Pusher::new(&registry).push("example/many", &pushed).await;
    eprintln!("pushed {} tags in {:.1?}", pushed.len(), started.elapsed());

    // Debian's registry ignores `n`: everything comes in one answer.
    let direct = RegistryClient::new(Vec::new(), 4);
    let listed = list(&direct, &format!("{}/example/many", registry.host())).await;
    assert_eq!(sorted(listed.tags), sorted(pushed.clone()));
    assert_eq!(direct.requests_sent(), 1);

    // A registry that pages at 1,000 (as GHCR and distribution v3 do) takes three pages,
    // linked by relative `Link` URLs.
    let front = RegistryFront::start(
        &registry,
        FrontOptions {
            page_size: Some(1_000),
            ..FrontOptions::default()
        },
    )
    .await;
    let paged = RegistryClient::new(Vec::new(), 4);
    let listed = list(&paged, &format!("{}/example/many", front.host())).await;
    assert_eq!(listed.tags.len(), pushed.len(), "no tag twice, none lost");
    assert_eq!(sorted(listed.tags), sorted(pushed));
    assert!(paged.requests_sent() > 1);
    assert_eq!(paged.requests_sent(), 3);
    assert_eq!(front.counters.tag_requests.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn registry_basic_auth_credentials_are_used() {
    if !registry_or_skip("registry_basic_auth_credentials_are_used") {
        return;
    }
    // Push to an open registry; read through a second one with htpasswd on the same
    // storage.
    let (open, storage) = open_registry().await;
    let locked = TestRegistry::start(storage.path(), true).await;
    Pusher::new(&open)
        .push("example/private", &strings(&["1.0.0"]))
        .await;
    let image = format!("{}/example/private", locked.host());
    let auth = |password: &str| RegistryAuth {
        registry: locked.host(),
        username: REGISTRY_USER.to_string(),
        password: password.to_string(),
    };

    let anonymous = RegistryClient::new(Vec::new(), 4);
    let err = within("anonymous list", anonymous.list_tags(&image))
        .await
        .expect_err("no credentials");
    assert!(
        matches!(&err, RegistryError::Unauthorized { registry, .. } if *registry == locked.host()),
        "{err}"
    );
    assert!(!err.is_retryable());

    let wrong = RegistryClient::new(vec![auth("wrong")], 4);
    let err = within("list with a wrong password", wrong.list_tags(&image))
        .await
        .expect_err("wrong password");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");

    // Credentials written the way `docker login` stores them still match.
    let mut right = auth(REGISTRY_PASSWORD);
    right.registry = format!("http://{}/", locked.host());
    let client = RegistryClient::new(vec![right], 4);
    assert_eq!(list(&client, &image).await.tags, strings(&["1.0.0"]));
    // 401, then Basic; the second call sends Basic at once.
    assert_eq!(client.requests_sent(), 2);
    assert_eq!(list(&client, &image).await.tags, strings(&["1.0.0"]));
    assert_eq!(client.requests_sent(), 3);
}

#[tokio::test]
async fn registry_bearer_token_challenge_is_followed() {
    if !registry_or_skip("registry_bearer_token_challenge_is_followed") {
        return;
    }
    let (registry, _storage) = open_registry().await;
    Pusher::new(&registry)
        .push("example/tokened", &strings(&["1.0.0", "1.1.0"]))
        .await;
    // Debian's registry cannot issue tokens without certificates: the front does.
    let front = RegistryFront::start(
        &registry,
        FrontOptions {
            bearer: Some(BearerAuth {
                username: "robot".into(),
                password: "s3cret".into(),
                token: "the-token".into(),
            }),
            ..FrontOptions::default()
        },
    )
    .await;
    let image = format!("{}/example/tokened", front.host());

    let anonymous = RegistryClient::new(Vec::new(), 4);
    let err = within("anonymous list", anonymous.list_tags(&image))
        .await
        .expect_err("the token service wants credentials");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert_eq!(front.counters.token_requests.load(Ordering::SeqCst), 1);

    let client = RegistryClient::new(
        vec![RegistryAuth {
            registry: front.host(),
            username: "robot".into(),
            password: "s3cret".into(),
        }],
        4,
    );
    let first = list(&client, &image).await;
    let second = list(&client, &image).await;

    assert_eq!(sorted(first.tags), strings(&["1.0.0", "1.1.0"]));
    assert_eq!(sorted(second.tags), strings(&["1.0.0", "1.1.0"]));
    assert_eq!(
        front.counters.token_requests.load(Ordering::SeqCst),
        2,
        "one refused anonymous request, then one token for both calls"
    );
    let queries = front.counters.token_queries.lock().expect("lock").clone();
    assert!(
        queries[1].contains("service=test")
            && queries[1].contains("repository%3Aexample%2Ftokened%3Apull"),
        "{queries:?}"
    );
    // 401, token, retry; then the cached token goes with the first request.
    assert_eq!(client.requests_sent(), 4);
}

#[tokio::test]
async fn registry_digest_matches_the_pushed_manifest() {
    if !registry_or_skip("registry_digest_matches_the_pushed_manifest") {
        return;
    }
    let (registry, _storage) = open_registry().await;
    let pushed = Pusher::new(&registry)
        .push("example/digest", &strings(&["1.0.0"]))
        .await;
    let expected = sha256(&pushed.manifest);
    assert_eq!(pushed.digest, expected);
    let image = format!("{}/example/digest", registry.host());
    let client = RegistryClient::new(Vec::new(), 4);

    let digest = within("digest", client.digest(&image, "1.0.0"))
        .await
        .expect("digest");
    assert_eq!(digest, expected);
    assert_eq!(client.requests_sent(), 1, "one HEAD");

    let err = within("digest of a missing tag", client.digest(&image, "9.9.9"))
        .await
        .expect_err("no such tag");
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");

    // Without Docker-Content-Digest the client hashes the manifest a GET returns.
    let front = RegistryFront::start(
        &registry,
        FrontOptions {
            hide_digest: true,
            ..FrontOptions::default()
        },
    )
    .await;
    let fallback = RegistryClient::new(Vec::new(), 4);
    let digest = within(
        "digest without the header",
        fallback.digest(&format!("{}/example/digest", front.host()), "1.0.0"),
    )
    .await
    .expect("digest");
    assert_eq!(digest, expected);
    assert_eq!(fallback.requests_sent(), 2, "HEAD, then GET");
}

#[tokio::test]
async fn registry_etag_makes_unchanged_polls_cheap() {
    if !registry_or_skip("registry_etag_makes_unchanged_polls_cheap") {
        return;
    }
    let (registry, _storage) = open_registry().await;
    let pusher = Pusher::new(&registry);
    pusher.push("example/etag", &strings(&["1.0.0"])).await;

    // Debian's registry (distribution 2.8) sends no ETag on tags/list, so the
    // conditional path is exercised through a front that adds one and answers 304 to a
    // matching If-None-Match. Should a later registry send ETags itself, the check runs
    // against it directly too.
    let raw = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(format!(
            "http://{}/v2/example/etag/tags/list",
            registry.host()
        ))
        .send()
        .await
        .expect("tags/list");
    let registry_sends_etags = raw.headers().contains_key(reqwest::header::ETAG);
    eprintln!("the registry sends ETags on tags/list: {registry_sends_etags}");

    let front = RegistryFront::start(
        &registry,
        FrontOptions {
            etag: true,
            ..FrontOptions::default()
        },
    )
    .await;
    let mut hosts = vec![front.host()];
    if registry_sends_etags {
        hosts.push(registry.host());
    }
    for (round, host) in hosts.iter().enumerate() {
        let image = format!("{host}/example/etag");
        let client = RegistryClient::new(Vec::new(), 4);
        let first = list(&client, &image).await;
        assert!(!first.cached);
        let before = client.requests_sent();

        let unchanged = list(&client, &image).await;

        assert!(unchanged.cached, "{host}: the 304 reuses the list");
        assert_eq!(sorted(unchanged.tags), sorted(first.tags.clone()));
        assert_eq!(
            client.requests_sent() - before,
            1,
            "{host}: one request per poll"
        );

        let new_tag = format!("1.{}.0", round + 1);
        pusher
            .push("example/etag", std::slice::from_ref(&new_tag))
            .await;
        let changed = list(&client, &image).await;
        assert!(!changed.cached, "{host}: a new tag changes the ETag");
        assert!(changed.tags.contains(&new_tag), "{:?}", changed.tags);
    }
    assert_eq!(front.counters.not_modified.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn registry_429_is_retried_after_retry_after() {
    if !registry_or_skip("registry_429_is_retried_after_retry_after") {
        return;
    }
    let (registry, _storage) = open_registry().await;
    Pusher::new(&registry)
        .push("example/limited", &strings(&["1.0.0"]))
        .await;
    let front = RegistryFront::start(
        &registry,
        FrontOptions {
            rate_limit_once: true,
            ..FrontOptions::default()
        },
    )
    .await;
    let client = RegistryClient::new(Vec::new(), 4);

    let started = Instant::now();
    let listed = list(&client, &format!("{}/example/limited", front.host())).await;
    let elapsed = started.elapsed();

    assert_eq!(listed.tags, strings(&["1.0.0"]));
    assert!(elapsed >= Duration::from_secs(1), "waited only {elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "waited {elapsed:?}");
    assert_eq!(front.counters.rate_limited.load(Ordering::SeqCst), 1);
    assert_eq!(client.requests_sent(), 2);
}

#[tokio::test]
async fn registry_down_is_a_retryable_error_quickly() {
    // A port that was free a moment ago: nothing listens, so connecting is refused.
    let port = free_port();
    let client = RegistryClient::new(Vec::new(), 4);

    let started = Instant::now();
    let err = within(
        "listing from a closed port",
        client.list_tags(&format!("127.0.0.1:{port}/example/server")),
    )
    .await
    .expect_err("nothing listens");

    assert!(
        matches!(&err, RegistryError::Unreachable { registry, .. } if *registry == format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(err.is_retryable());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn registry_unknown_repository_is_not_found() {
    if !registry_or_skip("registry_unknown_repository_is_not_found") {
        return;
    }
    let (registry, _storage) = open_registry().await;
    let client = RegistryClient::new(Vec::new(), 4);
    let image = format!("{}/example/missing", registry.host());

    let err = within("listing a missing repository", client.list_tags(&image))
        .await
        .expect_err("unknown repository");

    assert!(
        matches!(&err, RegistryError::NotFound { image: i } if *i == image),
        "{err}"
    );
    assert!(!err.is_retryable());
}
