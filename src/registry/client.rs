//! [`RegistryClient`]: the HTTP conversation with registries — authentication, retries on
//! 429, pagination, conditional requests and per-host concurrency — behind two calls,
//! `list_tags` and `digest`.

use crate::error_text::chain;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jiff::Timestamp;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Response, StatusCode, Url};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::{Instrument, debug, info_span, warn};

use super::auth::{Authorization, Challenge, RegistryAuth, TokenAnswer, pick_challenge};
use super::reference::{Repository, is_loopback_host, is_valid_reference, normalize_registry};
use super::{RegistryError, TagList};

/// Each HTTP request, connecting included, gets this long; a registry slower than that
/// is treated as down for this poll.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The page size we ask for. Registries that paginate cap it (Docker Hub at 100, GHCR
/// and distribution v3 at 1000); some (distribution 2.x, e.g. Debian's) ignore it.
const PAGE_SIZE: usize = 1000;
/// A registry whose `Link` headers go on longer than this is looping or hostile.
const MAX_PAGES: usize = 10_000;
/// One page of tags; generous because registries that ignore `n` send everything at once.
const MAX_TAGS_PAGE_BYTES: usize = 32 << 20;
/// The size registries must accept for a manifest, per the distribution spec.
const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Token answers and error bodies are small; anything bigger is not what we expect.
const MAX_SMALL_BODY_BYTES: usize = 64 << 10;
/// How often a 429 is retried before the call gives up with `RateLimited`.
const RATE_LIMIT_RETRIES: u32 = 3;
/// The longest we wait for a 429 inside one call. A registry asking for longer gets a
/// `RateLimited` at once, so the caller's poll loop backs off instead of this call
/// blocking for minutes.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);
/// The first wait after a 429 without `Retry-After`; it doubles per retry.
const DEFAULT_RETRY_WAIT: Duration = Duration::from_secs(1);
/// Every manifest flavour we can take a digest of: multi-platform indexes first, because
/// for a multi-platform image the index digest is what `docker pull` resolves a tag to.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
const USER_AGENT: &str = concat!("mcp-orchestration/", env!("CARGO_PKG_VERSION"));

/// Lists tags and resolves digests in OCI registries. Cheap to clone: clones share the
/// HTTP connections, the token and tag caches, the per-registry permits and the request
/// counter, so one client should serve the whole agent.
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// The HTTP clients, or why they could not be built (a broken TLS setup); kept as an
    /// error so no call can fail to build them twice and each reports the cause. Built at
    /// the first request: reading the system's CA bundle takes tens of milliseconds and a
    /// fleet that never polls a registry should not pay it.
    http: std::sync::OnceLock<Result<HttpClients, String>>,
    auths: Vec<RegistryAuth>,
    /// Permits per registry host, at least one.
    permits: usize,
    requests: AtomicU64,
    /// A std mutex: it guards map lookups only and is never held across an await.
    state: Mutex<State>,
}

/// The registry's HTTP clients, direct and proxied.
fn http_clients() -> Result<HttpClients, String> {
    let build = |proxy: bool| {
        let builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::limited(5));
        let builder = if proxy { builder } else { builder.no_proxy() };
        builder.build()
    };
    match (build(false), build(true)) {
        (Ok(direct), Ok(proxied)) => Ok(HttpClients { direct, proxied }),
        (Err(e), _) | (_, Err(e)) => {
            let message = format!("cannot build an HTTP client: {}", chain(&e));
            warn!(error = %message, "registry client unusable");
            Err(message)
        }
    }
}

struct HttpClients {
    /// For loopback registries: never through a proxy, which could not reach our
    /// loopback interface.
    direct: reqwest::Client,
    /// For everything else: honours `HTTPS_PROXY` and `NO_PROXY` like other tools.
    proxied: reqwest::Client,
}

#[derive(Default)]
struct State {
    /// One semaphore per `host:port` a request goes to.
    semaphores: HashMap<String, Arc<Semaphore>>,
    /// The last challenge each registry sent, so later requests carry the right
    /// `Authorization` at once instead of costing a 401 first.
    challenges: HashMap<String, Challenge>,
    /// Bearer tokens per (registry, scope), with the instant they stop being used.
    tokens: HashMap<(String, String), (String, Instant)>,
    /// The last full tag list per repository that came with an ETag.
    tags: HashMap<String, CachedTags>,
}

struct CachedTags {
    etag: HeaderValue,
    tags: Arc<[String]>,
}

/// An answer and the host's concurrency permit, held until the body has been read.
struct Answer {
    response: Response,
    _permit: OwnedSemaphorePermit,
}

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClient")
            .field("auths", &self.inner.auths)
            .field("per_registry_concurrency", &self.inner.permits)
            .field("requests_sent", &self.requests_sent())
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// A client using `auths` for the registries they name (matched the way Docker
    /// matches `docker login` entries) and sending at most `per_registry_concurrency`
    /// requests to one host at a time (0 counts as 1).
    pub fn new(auths: Vec<RegistryAuth>, per_registry_concurrency: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                http: std::sync::OnceLock::new(),
                auths,
                permits: per_registry_concurrency.max(1),
                requests: AtomicU64::new(0),
                state: Mutex::default(),
            }),
        }
    }

    /// All tags of an image repository (`127.0.0.1:5000/example/server`, `ghcr.io/org/x`,
    /// `nginx`, `docker.io/library/nginx`; a tag on the reference is ignored), every page
    /// merged, in the registry's order. When the registry sent an ETag last time and
    /// answers 304 now, the remembered list comes back with `cached: true` after one
    /// request. (Debian's registry, distribution 2.8, sends no ETag on tag lists, so
    /// there every poll is a full GET; it also ignores `n` and sends every tag at once.)
    pub async fn list_tags(&self, image: &str) -> Result<TagList, RegistryError> {
        let repo = parse(image)?;
        let span = info_span!("list_tags", registry = %repo.registry, image = %repo);
        self.inner.list_tags(&repo).instrument(span).await
    }

    /// The manifest digest of `image:tag` (`sha256:…`): what the registry reports in
    /// `Docker-Content-Digest` to a HEAD with the OCI and Docker v2 `Accept` types (a HEAD
    /// does not count against Docker Hub's pull limit), or else the sha256 of the manifest
    /// a GET returns. For a multi-platform image it is the index digest.
    pub async fn digest(&self, image: &str, tag: &str) -> Result<String, RegistryError> {
        let repo = parse(image)?;
        if !is_valid_reference(tag) {
            return Err(RegistryError::InvalidReference {
                image: format!("{image}:{tag}"),
                message: format!("`{tag}` is not a tag or digest"),
            });
        }
        let span = info_span!("digest", registry = %repo.registry, image = %repo, tag);
        self.inner.digest(&repo, tag).instrument(span).await
    }

    /// How many HTTP requests this client has sent in total, token requests and retries
    /// included (for the "registry requests per poll" benchmark).
    pub fn requests_sent(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }
}

fn parse(image: &str) -> Result<Repository, RegistryError> {
    Repository::parse(image).map_err(|message| RegistryError::InvalidReference {
        image: image.to_string(),
        message,
    })
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // The maps stay consistent even if a holder panicked: every update is one insert.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn list_tags(&self, repo: &Repository) -> Result<TagList, RegistryError> {
        let key = repo.to_string();
        let cached = self
            .state()
            .tags
            .get(&key)
            .map(|c| (c.etag.clone(), Arc::clone(&c.tags)));
        let mut conditional = HeaderMap::new();
        if let Some((etag, _)) = &cached {
            conditional.insert(header::IF_NONE_MATCH, etag.clone());
        }
        let mut url = repo.tags_url(PAGE_SIZE);
        let mut answer = self.request(repo, Method::GET, &url, &conditional).await?;
        if answer.response.status() == StatusCode::NOT_MODIFIED {
            return match cached {
                Some((_, tags)) => {
                    debug!(tags = tags.len(), "tag list unchanged (304)");
                    Ok(TagList {
                        tags: tags.to_vec(),
                        cached: true,
                    })
                }
                None => Err(protocol(
                    repo,
                    "304 Not Modified to an unconditional request",
                )),
            };
        }
        let etag = answer.response.headers().get(header::ETAG).cloned();

        let mut tags = Vec::new();
        let mut seen = HashSet::new();
        let mut visited = HashSet::from([url.clone()]);
        let mut pages = 0;
        loop {
            pages += 1;
            let next = self
                .read_tags_page(repo, answer, &url, &mut tags, &mut seen)
                .await?;
            let Some(next) = next else { break };
            if pages >= MAX_PAGES {
                return Err(protocol(
                    repo,
                    format!("the tag list goes on for more than {MAX_PAGES} pages"),
                ));
            }
            if !visited.insert(next.clone()) {
                return Err(protocol(
                    repo,
                    format!("the tag list's pagination loops back to {next}"),
                ));
            }
            answer = self
                .request(repo, Method::GET, &next, &HeaderMap::new())
                .await?;
            url = next;
        }

        // A first page's ETag vouches for that page only; when there are more, a change on
        // a later page would not show in it. So only single-page lists are revalidated.
        let mut state = self.state();
        match etag.filter(|_| pages == 1) {
            Some(etag) => {
                state.tags.insert(
                    key,
                    CachedTags {
                        etag,
                        tags: tags.clone().into(),
                    },
                );
            }
            None => {
                state.tags.remove(&key);
            }
        }
        drop(state);
        debug!(tags = tags.len(), pages, "listed tags");
        Ok(TagList {
            tags,
            cached: false,
        })
    }

    /// Reads one page into `tags` (skipping tags already seen, in case pages overlap) and
    /// returns the next page's URL.
    async fn read_tags_page(
        &self,
        repo: &Repository,
        answer: Answer,
        url: &Url,
        tags: &mut Vec<String>,
        seen: &mut HashSet<String>,
    ) -> Result<Option<Url>, RegistryError> {
        match answer.response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                return Err(RegistryError::NotFound {
                    image: repo.to_string(),
                });
            }
            _ => return Err(unexpected(repo, answer).await),
        }
        let links: Vec<&str> = answer
            .response
            .headers()
            .get_all(header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let next = next_link(&links, url).map_err(|message| protocol(repo, message))?;

        #[derive(Deserialize)]
        struct Page {
            // Some registries send `null` for a repository without tags.
            tags: Option<Vec<String>>,
        }
        let body = read_body(repo, answer, MAX_TAGS_PAGE_BYTES).await?;
        let page: Page = serde_json::from_slice(&body)
            .map_err(|e| protocol(repo, format!("the tag list is not valid JSON: {e}")))?;
        for tag in page.tags.unwrap_or_default() {
            if seen.insert(tag.clone()) {
                tags.push(tag);
            }
        }
        Ok(next)
    }

    async fn digest(&self, repo: &Repository, tag: &str) -> Result<String, RegistryError> {
        let url = repo.manifest_url(tag);
        let mut accept = HeaderMap::new();
        accept.insert(header::ACCEPT, HeaderValue::from_static(MANIFEST_TYPES));
        let not_found = || RegistryError::NotFound {
            image: format!("{repo}:{tag}"),
        };

        let head = self.request(repo, Method::HEAD, &url, &accept).await?;
        match head.response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Err(not_found()),
            _ => return Err(unexpected(repo, head).await),
        }
        let reported = head
            .response
            .headers()
            .get(DOCKER_CONTENT_DIGEST)
            .and_then(|v| v.to_str().ok())
            .filter(|d| is_sha256_digest(d))
            .map(str::to_string);
        drop(head);
        if let Some(digest) = reported {
            return Ok(digest);
        }

        debug!("no Docker-Content-Digest on HEAD; hashing the manifest");
        let get = self.request(repo, Method::GET, &url, &accept).await?;
        match get.response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Err(not_found()),
            _ => return Err(unexpected(repo, get).await),
        }
        let body = read_body(repo, get, MAX_MANIFEST_BYTES).await?;
        Ok(format!("sha256:{}", hex::encode(Sha256::digest(&body))))
    }

    /// One request to `repo`'s registry with whatever authentication it takes: the
    /// `Authorization` its last challenge called for (none the first time), then, on a
    /// 401, the answer to the new challenge, once. Refusals become `Unauthorized`, 5xx
    /// `Unreachable`; every other answer is the caller's to interpret.
    async fn request(
        &self,
        repo: &Repository,
        method: Method,
        url: &Url,
        headers: &HeaderMap,
    ) -> Result<Answer, RegistryError> {
        let mut auth = self.remembered_authorization(repo).await?;
        let mut answered_challenge = false;
        loop {
            let answer = self
                .send(&repo.registry, &method, url, headers, auth.as_ref())
                .await?;
            let status = answer.response.status();
            if status.is_server_error() {
                let message = registry_message(answer).await;
                return Err(RegistryError::Unreachable {
                    registry: repo.registry.clone(),
                    message: format!("HTTP {status}: {message}"),
                });
            }
            if status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN {
                return Ok(answer);
            }
            let challenge = (status == StatusCode::UNAUTHORIZED && !answered_challenge)
                .then(|| {
                    pick_challenge(
                        answer
                            .response
                            .headers()
                            .get_all(header::WWW_AUTHENTICATE)
                            .iter()
                            .filter_map(|v| v.to_str().ok()),
                    )
                })
                .flatten();
            // Read the refusal (and give back the permit) before asking a token realm,
            // which may be the same host.
            let message = registry_message(answer).await;
            let next = match challenge {
                Some(challenge) => {
                    self.state()
                        .challenges
                        .insert(repo.registry.clone(), challenge.clone());
                    // A token we sent was refused: fetch a fresh one, not the cached one.
                    let refresh = matches!(auth, Some(Authorization::Bearer(_)));
                    self.authorization_for(repo, &challenge, refresh).await?
                }
                None => None,
            };
            match next {
                Some(next) if auth.as_ref() != Some(&next) => {
                    debug!(kind = next.kind(), "answering the registry's challenge");
                    answered_challenge = true;
                    auth = Some(next);
                }
                _ => return Err(self.unauthorized(repo, status, &message)),
            }
        }
    }

    fn unauthorized(&self, repo: &Repository, status: StatusCode, message: &str) -> RegistryError {
        let hint = if self.credentials(repo).is_none() {
            format!(" (no credentials are configured for {})", repo.registry)
        } else {
            String::new()
        };
        RegistryError::Unauthorized {
            registry: repo.registry.clone(),
            message: format!("HTTP {status}: {message}{hint}"),
        }
    }

    /// What to send before being asked, from the registry's last challenge: a cached (or
    /// fresh) token for this repository, or Basic credentials.
    async fn remembered_authorization(
        &self,
        repo: &Repository,
    ) -> Result<Option<Authorization>, RegistryError> {
        let challenge = self.state().challenges.get(&repo.registry).cloned();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self.credentials(repo)),
            Some(Challenge::Bearer { realm, service, .. }) => self
                .token(repo, &realm, service.as_deref(), &repo.pull_scope(), false)
                .await
                .map(Some),
        }
    }

    /// The `Authorization` that answers `challenge`; `None` when we have nothing to offer
    /// (a Basic challenge without configured credentials).
    async fn authorization_for(
        &self,
        repo: &Repository,
        challenge: &Challenge,
        refresh: bool,
    ) -> Result<Option<Authorization>, RegistryError> {
        match challenge {
            Challenge::Basic => Ok(self.credentials(repo)),
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let scope = scope.clone().unwrap_or_else(|| repo.pull_scope());
                self.token(repo, realm, service.as_deref(), &scope, refresh)
                    .await
                    .map(Some)
            }
        }
    }

    /// A Bearer token for `scope`: the cached one while it is fresh (unless `refresh`),
    /// otherwise one from `realm`, asked with Basic credentials when configured for the
    /// registry and anonymously otherwise.
    async fn token(
        &self,
        repo: &Repository,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        refresh: bool,
    ) -> Result<Authorization, RegistryError> {
        let key = (repo.registry.clone(), scope.to_string());
        if !refresh {
            let state = self.state();
            if let Some((token, until)) = state.tokens.get(&key)
                && *until > Instant::now()
            {
                return Ok(Authorization::Bearer(token.clone()));
            }
        }

        let mut url = Url::parse(realm)
            .map_err(|e| protocol(repo, format!("token realm `{realm}` is not a URL: {e}")))?;
        if url.scheme() != "https" && url.scheme() != "http" {
            return Err(protocol(
                repo,
                format!("token realm `{realm}` is not an http(s) URL"),
            ));
        }
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            query.append_pair("scope", scope);
        }
        let secure = url.scheme() == "https" || url.host_str().is_some_and(is_loopback_host);
        let credentials = self.credentials(repo).filter(|_| {
            if !secure {
                warn!(
                    realm,
                    "not sending credentials to a token realm over plain HTTP"
                );
            }
            secure
        });

        let answer = self
            .send(
                &repo.registry,
                &Method::GET,
                &url,
                &HeaderMap::new(),
                credentials.as_ref(),
            )
            .await?;
        let status = answer.response.status();
        if status.is_server_error() {
            let message = registry_message(answer).await;
            return Err(RegistryError::Unreachable {
                registry: repo.registry.clone(),
                message: format!("token endpoint {realm}: HTTP {status}: {message}"),
            });
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let message = registry_message(answer).await;
            return Err(self.unauthorized(
                repo,
                status,
                &format!("token endpoint {realm}: {message}"),
            ));
        }
        if !status.is_success() {
            return Err(unexpected(repo, answer).await);
        }
        let body = read_body(repo, answer, MAX_SMALL_BODY_BYTES).await?;
        let (token, lifetime) = serde_json::from_slice::<TokenAnswer>(&body)
            .ok()
            .and_then(TokenAnswer::into_token)
            .ok_or_else(|| protocol(repo, format!("token endpoint {realm} sent no token")))?;
        debug!(
            scope,
            lifetime_s = lifetime.as_secs(),
            "got a registry token"
        );
        self.state()
            .tokens
            .insert(key, (token.clone(), Instant::now() + lifetime));
        Ok(Authorization::Bearer(token))
    }

    /// The configured credentials for `repo`'s registry.
    fn credentials(&self, repo: &Repository) -> Option<Authorization> {
        self.auths
            .iter()
            .find(|a| normalize_registry(&a.registry) == repo.registry)
            .map(|a| Authorization::Basic {
                username: a.username.clone(),
                password: a.password.clone(),
            })
    }

    /// One request, retried while the registry answers 429: after its `Retry-After`
    /// (seconds or an HTTP date), else 1 s, 2 s, 4 s. No permit is held while waiting.
    async fn send(
        &self,
        registry: &str,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        auth: Option<&Authorization>,
    ) -> Result<Answer, RegistryError> {
        let mut retries = 0;
        loop {
            let answer = self.send_once(registry, method, url, headers, auth).await?;
            if answer.response.status() != StatusCode::TOO_MANY_REQUESTS {
                return Ok(answer);
            }
            let wait = retry_after(answer.response.headers(), Timestamp::now())
                .unwrap_or(DEFAULT_RETRY_WAIT * 2u32.pow(retries));
            drop(answer);
            if retries >= RATE_LIMIT_RETRIES || wait > MAX_RETRY_WAIT {
                return Err(RegistryError::RateLimited {
                    registry: registry.to_string(),
                    retry_after: wait,
                });
            }
            retries += 1;
            debug!(
                wait_ms = wait.as_millis() as u64,
                retries, "rate limited (429); waiting"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// Exactly one HTTP request, under a permit of the target host's semaphore.
    async fn send_once(
        &self,
        registry: &str,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        auth: Option<&Authorization>,
    ) -> Result<Answer, RegistryError> {
        let unreachable = |message: String| RegistryError::Unreachable {
            registry: registry.to_string(),
            message,
        };
        let http = self
            .http
            .get_or_init(http_clients)
            .as_ref()
            .map_err(|e| unreachable(e.clone()))?;
        let client = if url.host_str().is_some_and(is_loopback_host) {
            &http.direct
        } else {
            &http.proxied
        };
        let permit = self
            .semaphore(url)
            .acquire_owned()
            .await
            .map_err(|_| unreachable("the client is shutting down".to_string()))?;
        let mut request = client
            .request(method.clone(), url.clone())
            .headers(headers.clone());
        if let Some(auth) = auth {
            request = auth.apply(request);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = request.send().await;
        let latency_ms = started.elapsed().as_millis() as u64;
        let auth = auth.map_or("none", Authorization::kind);
        match result {
            Ok(response) => {
                debug!(
                    %method, %url, auth, status = response.status().as_u16(), latency_ms,
                    "registry request"
                );
                Ok(Answer {
                    response,
                    _permit: permit,
                })
            }
            Err(e) => {
                let message = chain(&e);
                debug!(%method, %url, auth, latency_ms, error = %message, "registry request failed");
                Err(unreachable(message))
            }
        }
    }

    fn semaphore(&self, url: &Url) -> Arc<Semaphore> {
        let host = format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or_default()
        );
        let mut state = self.state();
        Arc::clone(
            state
                .semaphores
                .entry(host)
                .or_insert_with(|| Arc::new(Semaphore::new(self.permits))),
        )
    }
}

/// Reads a body of at most `limit` bytes; a bigger one is a protocol error rather than
/// a reason to run out of memory.
async fn read_body(
    repo: &Repository,
    mut answer: Answer,
    limit: usize,
) -> Result<Vec<u8>, RegistryError> {
    let mut body = Vec::new();
    loop {
        match answer.response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(protocol(
                        repo,
                        format!("an answer is larger than {limit} bytes"),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(RegistryError::Unreachable {
                    registry: repo.registry.clone(),
                    message: chain(&e),
                });
            }
        }
    }
}

/// The registry's own words from an error answer: the distribution spec's
/// `{"errors":[{"code","message"}]}`, else the start of the text, else the status.
async fn registry_message(mut answer: Answer) -> String {
    let status = answer.response.status();
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = answer.response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_SMALL_BODY_BYTES {
            break;
        }
    }
    describe_error_body(&body)
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("no reason").to_string())
}

fn describe_error_body(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(Deserialize)]
    struct ErrorEntry {
        code: Option<String>,
        message: Option<String>,
    }
    if let Ok(errors) = serde_json::from_slice::<Errors>(body) {
        let parts: Vec<String> = errors
            .errors
            .into_iter()
            .map(|e| match (e.code, e.message) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(text), None) | (None, Some(text)) => text,
                (None, None) => String::new(),
            })
            .filter(|s| !s.is_empty())
            .collect();
        if !parts.is_empty() {
            return Some(parts.join("; "));
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    (!text.is_empty()).then(|| text.chars().take(200).collect())
}

async fn unexpected(repo: &Repository, answer: Answer) -> RegistryError {
    let status = answer.response.status();
    let url = answer.response.url().clone();
    let message = registry_message(answer).await;
    protocol(
        repo,
        format!("unexpected HTTP {status} for {}: {message}", url.path()),
    )
}

fn protocol(repo: &Repository, message: impl Into<String>) -> RegistryError {
    RegistryError::Protocol {
        registry: repo.registry.clone(),
        message: message.into(),
    }
}

fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The `rel="next"` target of `Link` header values (RFC 8288), resolved against
/// `current`. A link to another scheme, host or port is refused: following it would
/// send our credentials elsewhere.
fn next_link(values: &[&str], current: &Url) -> Result<Option<Url>, String> {
    for value in values {
        let mut rest = *value;
        while let Some(open) = rest.find('<') {
            let Some(close) = rest[open..].find('>').map(|i| open + i) else {
                return Err(format!("malformed Link header `{value}`"));
            };
            let target = &rest[open + 1..close];
            let params_end = rest[close..].find('<').map_or(rest.len(), |i| close + i);
            let params = &rest[close + 1..params_end];
            rest = &rest[params_end..];
            let is_next = params.split(';').any(|p| {
                p.split_once('=').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("rel")
                        && v.trim()
                            .trim_end_matches(',')
                            .trim()
                            .trim_matches('"')
                            .split_whitespace()
                            .any(|r| r.eq_ignore_ascii_case("next"))
                })
            });
            if !is_next {
                continue;
            }
            let next = current
                .join(target)
                .map_err(|e| format!("Link target `{target}` is not a URL: {e}"))?;
            let same_origin = next.scheme() == current.scheme()
                && next.host_str() == current.host_str()
                && next.port_or_known_default() == current.port_or_known_default();
            if !same_origin {
                return Err(format!(
                    "the next page is on another host ({next}); not following it"
                ));
            }
            return Ok(Some(next));
        }
    }
    Ok(None)
}

/// `Retry-After` as a wait from `now`: delta seconds, or an HTTP date (a past date means
/// no wait).
fn retry_after(headers: &HeaderMap, now: Timestamp) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    Some(Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("test URL")
    }

    #[test]
    fn next_links_resolve_relative_and_absolute_on_the_same_host() {
        let current = url("http://127.0.0.1:5000/v2/a/tags/list?n=1000");
        assert_eq!(
            next_link(
                &[r#"</v2/a/tags/list?n=1000&last=x>; rel="next""#],
                &current
            ),
            Ok(Some(url(
                "http://127.0.0.1:5000/v2/a/tags/list?n=1000&last=x"
            )))
        );
        assert_eq!(
            next_link(
                &[r#"<http://127.0.0.1:5000/v2/a/tags/list?last=y>; rel=next"#],
                &current
            ),
            Ok(Some(url("http://127.0.0.1:5000/v2/a/tags/list?last=y")))
        );
        assert_eq!(
            next_link(
                &[r#"</first>; rel="first", </v2/a/tags/list?last=z>; rel="next""#],
                &current
            ),
            Ok(Some(url("http://127.0.0.1:5000/v2/a/tags/list?last=z")))
        );
        assert_eq!(next_link(&[r#"</prev>; rel="prev""#], &current), Ok(None));
        assert_eq!(next_link(&[], &current), Ok(None));
        assert!(next_link(&[r#"<http://127.0.0.2:5000/x>; rel="next""#], &current).is_err());
        assert!(next_link(&[r#"<https://127.0.0.1:5000/x>; rel="next""#], &current).is_err());
        assert!(next_link(&[r#"<//evil.example/x>; rel="next""#], &current).is_err());
        assert!(next_link(&[r#"</x; rel="next""#], &current).is_err());
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().expect("timestamp");
        let headers = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::RETRY_AFTER, HeaderValue::from_static(v));
            h
        };
        assert_eq!(
            retry_after(&headers("7"), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after(&headers("Thu, 01 Jan 2026 00:00:42 GMT"), now),
            Some(Duration::from_secs(42))
        );
        assert_eq!(
            retry_after(&headers("Wed, 31 Dec 2025 23:00:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers("soon"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn error_bodies_are_described_in_the_registrys_words() {
        assert_eq!(
            describe_error_body(
                br#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry","detail":{"name":"x"}}]}"#
            ),
            Some("NAME_UNKNOWN: repository name not known to registry".to_string())
        );
        assert_eq!(
            describe_error_body(b" upstream down \n"),
            Some("upstream down".into())
        );
        assert_eq!(describe_error_body(b""), None);
    }

    #[test]
    fn only_sha256_digests_are_taken_from_headers() {
        assert!(is_sha256_digest(&format!("sha256:{}", "0a".repeat(32))));
        assert!(!is_sha256_digest(&format!("sha256:{}", "0A".repeat(32))));
        assert!(!is_sha256_digest(&format!("sha512:{}", "0a".repeat(64))));
        assert!(!is_sha256_digest("sha256:abc"));
    }

    #[tokio::test]
    async fn invalid_references_send_nothing() {
        let client = RegistryClient::new(Vec::new(), 4);
        let err = client
            .list_tags("127.0.0.1:9/Upper/Case")
            .await
            .expect_err("invalid");
        assert!(
            matches!(err, RegistryError::InvalidReference { .. }),
            "{err}"
        );
        let err = client
            .digest("127.0.0.1:9/x", "../etc")
            .await
            .expect_err("invalid");
        assert!(
            matches!(err, RegistryError::InvalidReference { .. }),
            "{err}"
        );
        assert_eq!(client.requests_sent(), 0);
        assert!(!err.is_retryable());
    }
}
