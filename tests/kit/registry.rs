//! A real OCI registry for the integration tests and benchmarks, and the tools around it
//! that need no Docker: a pusher speaking the distribution HTTP API, and an HTTP front that
//! adds what Debian's registry (distribution 2.8) cannot do on its own — Bearer token auth,
//! ETags, 429s, pagination — in front of the real thing.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use reqwest::Url;
use sha2::{Digest, Sha256};

use super::docker::{DEADLINE, free_port, http};

/// The user the authenticated [`TestRegistry`] accepts.
pub const REGISTRY_USER: &str = "mcp-test";
/// Its password.
pub const REGISTRY_PASSWORD: &str = "pull-secret";
/// `REGISTRY_USER:bcrypt(REGISTRY_PASSWORD)` (cost 4), written out so no htpasswd tool is
/// needed.
const REGISTRY_HTPASSWD: &str =
    "mcp-test:$2b$04$CNFHPlkmIGs/l1DvfT9xneFlIfOHitpBqJ2Z.tASRI/ppmUKRLexu";

/// Whether the `docker-registry` binary (Debian's distribution registry) is available.
/// Without it a test should return early: on CI (`CI=true`) that is a failure, because CI
/// must exercise the real thing; elsewhere a skip line.
pub fn registry_or_skip(test: &str) -> bool {
    let found = Command::new("docker-registry")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        true
    } else if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: `docker-registry` is required on CI (CI=true) but cannot be run")
    } else {
        eprintln!("skipping {test}: `docker-registry` is not installed");
        false
    }
}

/// A real OCI registry on 127.0.0.1, killed on drop. Two of them may share one storage
/// directory, e.g. an open one to push to and an authenticated one to pull from, because
/// pushing to a registry with auth would need `docker login` and its side effects.
pub struct TestRegistry {
    child: std::process::Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl TestRegistry {
    pub async fn start(storage: &Path, with_auth: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for the registry config");
        let port = free_port();
        let mut config = format!(
            "version: 0.1\n\
             log: {{ level: warn }}\n\
             storage: {{ filesystem: {{ rootdirectory: {} }}, delete: {{ enabled: true }} }}\n\
             http: {{ addr: 127.0.0.1:{port} }}\n",
            storage.display()
        );
        if with_auth {
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{REGISTRY_HTPASSWD}\n")).expect("write htpasswd");
            config.push_str(&format!(
                "auth: {{ htpasswd: {{ realm: mcp-test, path: {} }} }}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("registry log handle"))
            .stderr(log)
            .spawn()
            .expect("docker-registry starts");
        let registry = Self {
            child,
            port,
            _dir: dir,
        };
        // Open: 200; with auth: 401 until credentials are given. Either means it serves.
        let client = http();
        let url = format!("http://127.0.0.1:{port}/v2/");
        super::eventually(DEADLINE, &format!("the registry at {url}"), || async {
            let status = client.get(&url).send().await.ok()?.status();
            (status == reqwest::StatusCode::OK || status == reqwest::StatusCode::UNAUTHORIZED)
                .then_some(())
        })
        .await;
        registry
    }

    /// `127.0.0.1:PORT`, as it appears in image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What [`Pusher::push`] put into the registry.
pub struct Pushed {
    /// The exact manifest bytes PUT under every tag.
    pub manifest: Vec<u8>,
    /// `sha256:` of `manifest`, as the registry reported it.
    pub digest: String,
}

/// Pushes minimal OCI images (a config blob and a manifest without layers) over the
/// distribution HTTP API, the way `docker push` would but without Docker.
pub struct Pusher {
    http: reqwest::Client,
    base: Url,
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Manifest PUTs in flight at once; the registry handles these comfortably.
const PUSH_CONCURRENCY: usize = 32;

impl Pusher {
    /// A pusher for an open (no auth) registry.
    pub fn new(registry: &TestRegistry) -> Self {
        Self {
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("reqwest client"),
            base: Url::parse(&format!("http://{}/", registry.host())).expect("registry URL"),
        }
    }

    /// Uploads a config blob unique to `name`, then PUTs one manifest referring to it
    /// under every tag in `tags`, several at a time. Same name, same manifest: pushing
    /// more tags later adds tags to the same image.
    pub async fn push(&self, name: &str, tags: &[String]) -> Pushed {
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Labels":{{"test":"{name}"}}}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
        )
        .into_bytes();
        let config_digest = sha256(&config);
        self.upload_blob(name, &config, &config_digest).await;
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[]}}"#,
            config.len()
        )
        .into_bytes();

        let digests: Vec<String> = futures::stream::iter(tags)
            .map(|tag| self.put_manifest(name, tag, &manifest))
            .buffer_unordered(PUSH_CONCURRENCY)
            .try_collect()
            .await
            .unwrap_or_else(|e: String| panic!("pushing {name}: {e}"));
        let digest = sha256(&manifest);
        assert!(
            digests.iter().all(|d| *d == digest),
            "the registry reported other digests than {digest}"
        );
        Pushed { manifest, digest }
    }

    async fn upload_blob(&self, name: &str, blob: &[u8], digest: &str) {
        let start = self.url(&format!("/v2/{name}/blobs/uploads/"));
        let response = self
            .http
            .post(start.clone())
            .send()
            .await
            .expect("start a blob upload");
        assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED, "{start}");
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .expect("upload Location");
        // The Location may be relative and already carries a query (`_state`).
        let mut url = start.join(location).expect("upload URL");
        url.query_pairs_mut().append_pair("digest", digest);
        let response = self
            .http
            .put(url)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(blob.to_vec())
            .send()
            .await
            .expect("finish the blob upload");
        assert_eq!(
            response.status(),
            reqwest::StatusCode::CREATED,
            "blob upload: {}",
            response.text().await.unwrap_or_default()
        );
    }

    async fn put_manifest(&self, name: &str, tag: &str, manifest: &[u8]) -> Result<String, String> {
        let url = self.url(&format!("/v2/{name}/manifests/{tag}"));
        let response = self
            .http
            .put(url)
            .header(header::CONTENT_TYPE, OCI_MANIFEST)
            .body(manifest.to_vec())
            .send()
            .await
            .map_err(|e| format!("PUT manifest {tag}: {e}"))?;
        if response.status() != reqwest::StatusCode::CREATED {
            return Err(format!(
                "PUT manifest {tag}: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            ));
        }
        response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| format!("PUT manifest {tag}: no Docker-Content-Digest"))
    }

    fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("registry URL")
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// `count` distinct semver tags: `1.0.0`, `1.1.0`, ….
pub fn tags(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("1.{i}.0")).collect()
}

/// What a [`RegistryFront`] adds in front of the real registry.
#[derive(Clone, Default)]
pub struct FrontOptions {
    /// Require `Authorization: Bearer <token>`; `/token` issues it for these credentials.
    pub bearer: Option<BearerAuth>,
    /// Put an ETag on tag lists and answer a matching `If-None-Match` with 304.
    pub etag: bool,
    /// Answer the first tag-list request with 429 and `Retry-After: 1`.
    pub rate_limit_once: bool,
    /// Paginate tag lists the way distribution v3 does: sorted, at most this many per
    /// page (`n` may ask for fewer), `last` honoured, a relative `Link: <…>; rel="next"`.
    pub page_size: Option<usize>,
    /// Drop `Docker-Content-Digest` from manifest answers, as some registries do.
    pub hide_digest: bool,
}

/// The token service's one user and the token it issues.
#[derive(Clone)]
pub struct BearerAuth {
    pub username: String,
    pub password: String,
    pub token: String,
}

/// What a [`RegistryFront`] saw.
#[derive(Default)]
pub struct FrontCounters {
    /// Requests to `/token`, answered or refused.
    pub token_requests: AtomicUsize,
    /// Query strings of those requests.
    pub token_queries: Mutex<Vec<String>>,
    /// Tag-list requests that reached the front (before auth).
    pub tag_requests: AtomicUsize,
    pub rate_limited: AtomicUsize,
    pub not_modified: AtomicUsize,
}

/// An HTTP server on 127.0.0.1 in front of a real [`TestRegistry`]; stopped on drop.
pub struct RegistryFront {
    pub port: u16,
    pub counters: Arc<FrontCounters>,
    task: tokio::task::JoinHandle<()>,
}

struct Front {
    options: FrontOptions,
    upstream: Url,
    realm: String,
    http: reqwest::Client,
    counters: Arc<FrontCounters>,
    rate_limit_fired: AtomicBool,
}

impl RegistryFront {
    pub async fn start(upstream: &TestRegistry, options: FrontOptions) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let counters = Arc::new(FrontCounters::default());
        let front = Arc::new(Front {
            options,
            upstream: Url::parse(&format!("http://{}/", upstream.host())).expect("upstream"),
            realm: format!("http://127.0.0.1:{port}/token"),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("reqwest client"),
            counters: Arc::clone(&counters),
            rate_limit_fired: AtomicBool::new(false),
        });
        let app = Router::new().fallback(handle).with_state(front);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("the front serves");
        });
        Self {
            port,
            counters,
            task,
        }
    }

    /// `127.0.0.1:PORT`, as it appears in image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for RegistryFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(front): State<Arc<Front>>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let headers = request.headers().clone();
    if path == "/token" {
        return front.token(&headers, &query);
    }
    let is_tag_list = method == Method::GET && path.ends_with("/tags/list");
    if is_tag_list {
        front.counters.tag_requests.fetch_add(1, Ordering::SeqCst);
    }
    if let Some(bearer) = &front.options.bearer {
        let expected = format!("Bearer {}", bearer.token);
        if headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            != Some(&expected)
        {
            return front.challenge(&path);
        }
    }
    if is_tag_list {
        front.tags(&path, &query, &headers).await
    } else {
        front.proxy(method, &path, &query, &headers).await
    }
}

impl Front {
    fn token(&self, headers: &HeaderMap, query: &str) -> Response {
        self.counters.token_requests.fetch_add(1, Ordering::SeqCst);
        self.counters
            .token_queries
            .lock()
            .expect("queries lock")
            .push(query.to_string());
        let Some(bearer) = &self.options.bearer else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let expected = format!(
            "Basic {}",
            base64(format!("{}:{}", bearer.username, bearer.password).as_bytes())
        );
        if headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            != Some(&expected)
        {
            return error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "token service: bad credentials",
            );
        }
        axum::Json(serde_json::json!({ "token": bearer.token, "expires_in": 300 })).into_response()
    }

    fn challenge(&self, path: &str) -> Response {
        let mut value = format!(r#"Bearer realm="{}",service="test""#, self.realm);
        if let Some(name) = repository(path) {
            value.push_str(&format!(r#",scope="repository:{name}:pull""#));
        }
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&value).expect("header value"),
        );
        response
    }

    async fn tags(&self, path: &str, query: &str, headers: &HeaderMap) -> Response {
        if self.options.rate_limit_once && !self.rate_limit_fired.swap(true, Ordering::SeqCst) {
            self.counters.rate_limited.fetch_add(1, Ordering::SeqCst);
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "TOOMANYREQUESTS",
                "slow down",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
        // Debian's registry ignores `n` and `last`, so ask it for everything and page here.
        let upstream = self
            .http
            .get(self.upstream.join(path).expect("upstream URL"))
            .send()
            .await
            .expect("the registry answers");
        if upstream.status() != reqwest::StatusCode::OK {
            return pass_through(upstream).await;
        }
        let list: serde_json::Value = upstream.json().await.expect("a tag list");
        let mut tags: Vec<String> = list["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let mut link = None;
        if let Some(page_size) = self.options.page_size {
            let params: Vec<(String, String)> = Url::parse(&format!("http://x/?{query}"))
                .expect("query")
                .query_pairs()
                .into_owned()
                .collect();
            let param = |k: &str| {
                params
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.clone())
            };
            let n = param("n")
                .and_then(|n| n.parse::<usize>().ok())
                .map_or(page_size, |n| n.min(page_size));
            tags.sort();
            let start = param("last").map_or(0, |last| tags.partition_point(|t| *t <= last));
            let end = (start + n).min(tags.len());
            if end < tags.len() {
                link = Some(format!(
                    r#"<{path}?n={n}&last={}>; rel="next""#,
                    tags[end - 1]
                ));
            }
            tags = tags[start..end].to_vec();
        }
        let body = serde_json::to_vec(&serde_json::json!({ "name": list["name"], "tags": tags }))
            .expect("json");
        let etag = format!("\"{}\"", sha256(&body));
        let mut response = if self.options.etag
            && headers
                .get(header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                == Some(&etag)
        {
            self.counters.not_modified.fetch_add(1, Ordering::SeqCst);
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            (
                [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                body,
            )
                .into_response()
        };
        if self.options.etag {
            response
                .headers_mut()
                .insert(header::ETAG, HeaderValue::from_str(&etag).expect("etag"));
        }
        if let Some(link) = link {
            response
                .headers_mut()
                .insert(header::LINK, HeaderValue::from_str(&link).expect("link"));
        }
        response
    }

    async fn proxy(
        &self,
        method: Method,
        path: &str,
        query: &str,
        headers: &HeaderMap,
    ) -> Response {
        let mut url = self.upstream.join(path).expect("upstream URL");
        if !query.is_empty() {
            url.set_query(Some(query));
        }
        let mut request = self.http.request(method, url);
        if let Some(accept) = headers.get(header::ACCEPT) {
            request = request.header(header::ACCEPT, accept);
        }
        let upstream = request.send().await.expect("the registry answers");
        let mut response = pass_through(upstream).await;
        if self.options.hide_digest {
            response.headers_mut().remove("docker-content-digest");
        }
        response
    }
}

/// The registry's answer as ours: status, the headers a client reads, body.
async fn pass_through(upstream: reqwest::Response) -> Response {
    let status = upstream.status();
    let mut headers = HeaderMap::new();
    for name in [
        header::CONTENT_TYPE,
        header::ETAG,
        header::LINK,
        header::WWW_AUTHENTICATE,
        header::HeaderName::from_static("docker-content-digest"),
    ] {
        for value in upstream.headers().get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let body = upstream.bytes().await.expect("the registry's body");
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// A distribution-spec error answer.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "errors": [{ "code": code, "message": message }] })),
    )
        .into_response()
}

/// `NAME` of `/v2/NAME/tags/list`, `/v2/NAME/manifests/REF` or `/v2/NAME/blobs/…`.
fn repository(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v2/")?;
    ["/tags/list", "/manifests/", "/blobs/"]
        .iter()
        .find_map(|marker| rest.find(marker).map(|i| &rest[..i]))
}

/// Standard base64 with padding, for the token service's Basic check.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_matches_the_coreutils_tool() {
    // `echo -n mcp-test:pull-secret | base64`
    assert_eq!(
        base64(b"mcp-test:pull-secret"),
        "bWNwLXRlc3Q6cHVsbC1zZWNyZXQ="
    );
    assert_eq!(base64(b"ab"), "YWI=");
    assert_eq!(base64(b"a"), "YQ==");
}
