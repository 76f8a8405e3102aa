//! The HTTP client of every MCP session the agent opens with a server (the gateway's
//! backend sessions, the tool-set guard's listings): HTTP/1.1 on hyper over plain TCP, as
//! the HTTP probe. Servers are reached on 127.0.0.1 or a swarm node's address, never over
//! TLS, so no TLS library is initialised for them (reqwest's OpenSSL was 2.5 MiB of the
//! agent's idle RSS, BENCHMARKS.md "Start-up and idle memory").
//!
//! Connections are kept and reused: a call then costs no TCP handshake, no new socket on
//! either side and no conntrack entry. A reused connection meets the classic stall of
//! request/response traffic: a server that writes its answer in pieces without
//! `TCP_NODELAY` (axum's and uvicorn's default) holds the second piece until the first is
//! acknowledged, and Linux delays that ACK by 40 ms once a connection looks interactive.
//! So every read on our side re-arms `TCP_QUICKACK`, which sends the pending ACK at once.
//!
//! A kept connection the server closed meanwhile is noticed before the request is written
//! (hyper hands the request back), and the request goes on a new connection; a request is
//! never sent twice.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::http::{self, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::common::http_header::{
    EVENT_STREAM_MIME_TYPE, HEADER_SESSION_ID, JSON_MIME_TYPE,
};
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
};
use sse_stream::{Sse, SseStream};

use super::progress::Routes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How long a connection may wait idle for its next request. Short: servers close idle
/// connections on their own schedule (uvicorn after 5 s), and a request written onto a
/// connection the server is closing at that instant cannot be told apart from one the
/// server received.
const IDLE_FOR: Duration = Duration::from_secs(2);
/// How long a kept connection may take to be ready for the next request.
const READY_WAIT: Duration = Duration::from_millis(20);
/// Idle connections kept per server address.
const IDLE_PER_HOST: usize = 64;
/// The most of a JSON answer (or an error's body) that is read.
const MAX_JSON_BYTES: usize = 16 * 1024 * 1024;
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// The client; clones share its idle connections.
#[derive(Clone, Default)]
pub struct BackendHttp {
    pool: Arc<Pool>,
    /// Where the session id a server hands out is kept, for the client of one session.
    session: Option<Arc<OnceLock<Arc<str>>>>,
    /// Where the progress of that session's calls goes (see [`tap`]).
    progress: Option<Arc<Routes>>,
}

/// A connection's sending half.
type Sender = SendRequest<Full<Bytes>>;

#[derive(Default)]
struct Pool {
    /// By `host:port`, each with the instant it went idle.
    idle: Mutex<HashMap<String, Vec<(Sender, Instant)>>>,
}

impl Pool {
    fn take(&self, host: &str) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let kept = idle.get_mut(host)?;
        while let Some((sender, since)) = kept.pop() {
            if since.elapsed() < IDLE_FOR && !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn put(&self, host: &str, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let kept = idle.entry(host.to_owned()).or_default();
        kept.retain(|(s, since)| since.elapsed() < IDLE_FOR && !s.is_closed());
        if kept.len() < IDLE_PER_HOST {
            kept.push((sender, Instant::now()));
        }
    }
}

/// Why a request to a server failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendHttpError {
    /// No connection could be made: the request was not sent.
    #[error("cannot connect to {host}: {source}")]
    Connect {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("the request cannot be sent: {0}")]
    Request(String),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl BackendHttpError {
    /// Whether the request never left the agent (nothing listens at the address, or it
    /// could not be reached).
    pub fn never_sent(&self) -> bool {
        matches!(self, BackendHttpError::Connect { .. })
    }
}

type Failure = StreamableHttpError<BackendHttpError>;

/// Extra headers of a request, as rmcp hands them to a client.
pub type Headers = HashMap<HeaderName, HeaderValue>;

/// The events of an answer stream.
pub type Events = BoxStream<'static, Result<Sse, SseError>>;

/// The header a request on a session of `revision` carries; `None` for a revision that
/// is not a header value.
pub fn revision_header(revision: &str) -> Option<Headers> {
    let value = HeaderValue::from_str(revision).ok()?;
    Some(HashMap::from([(
        HeaderName::from_static("mcp-protocol-version"),
        value,
    )]))
}

impl BackendHttp {
    /// This client for one session: the id the server gives it is kept in the returned
    /// cell (the gateway posts calls on that session itself, `forward`), and the progress
    /// of its calls goes to `progress`.
    pub fn for_session(&self, progress: Arc<Routes>) -> (BackendHttp, Arc<OnceLock<Arc<str>>>) {
        let cell = Arc::new(OnceLock::new());
        let client = BackendHttp {
            pool: self.pool.clone(),
            session: Some(cell.clone()),
            progress: Some(progress),
        };
        (client, cell)
    }

    /// `events`, with the progress of calls in them passed on as they are read, so before
    /// the answer that follows, and blanked for rmcp: its session hands each notification
    /// to a task of its own, which may run after the answer was taken.
    fn tap(&self, events: Events) -> Events {
        use futures::StreamExt;
        let Some(routes) = self.progress.clone() else {
            return events;
        };
        events
            .then(move |event| {
                let routes = routes.clone();
                async move {
                    let mut event = event?;
                    if let Some(progress) = event.data.as_deref().and_then(progress_in) {
                        routes.pass_on(progress).await;
                        // Its id stays, for a resumption to start after it.
                        event.data = None;
                    }
                    Ok(event)
                }
            })
            .boxed()
    }

    /// How many connections to `host` (`ip:port`) are kept idle.
    #[cfg(test)]
    pub fn idle(&self, host: &str) -> usize {
        let idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.get(host).map_or(0, Vec::len)
    }

    /// Sends a request to `uri` and returns its answer (see [`request`]).
    async fn exchange(
        &self,
        method: Method,
        uri: &str,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
    ) -> Result<Response<Returning>, Failure> {
        let (host, request) = request(method, uri, headers, body)?;
        self.send(&host, request)
            .await
            .map_err(StreamableHttpError::Client)
    }

    /// Sends `request` to `host` on a kept connection, or a new one.
    async fn send(
        &self,
        host: &str,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<Returning>, BackendHttpError> {
        while let Some(mut sender) = self.pool.take(host) {
            // A connection whose last answer just ended is ready a moment later; one that
            // is not ready by then is left (`try_send_request` would hand the request back).
            if !sender.is_ready()
                && !matches!(
                    tokio::time::timeout(READY_WAIT, sender.ready()).await,
                    Ok(Ok(()))
                )
            {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.returning(host, sender, response)),
                Err(mut refused) => match refused.take_message() {
                    // Not written: the connection closed first.
                    Some(unsent) => request = unsent,
                    None => return Err(refused.into_error().into()),
                },
            }
        }
        let stream =
            TcpStream::connect(host)
                .await
                .map_err(|source| BackendHttpError::Connect {
                    host: host.to_owned(),
                    source,
                })?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(QuickAck(stream))).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "backend connection ended");
            }
        });
        let response = sender.send_request(request).await?;
        Ok(self.returning(host, sender, response))
    }

    /// `response`, whose connection goes back to the pool once its body was read to the
    /// end.
    fn returning(
        &self,
        host: &str,
        sender: Sender,
        response: Response<Incoming>,
    ) -> Response<Returning> {
        let pool = Arc::downgrade(&self.pool);
        let host = host.to_owned();
        response.map(|body| Returning {
            body,
            back: Some((pool, host, sender)),
        })
    }
}

/// A response body that hands its connection back to the pool when it ends. Dropped
/// before its end, it takes the connection with it.
pub struct Returning {
    body: Incoming,
    back: Option<(Weak<Pool>, String, Sender)>,
}

impl Returning {
    fn give_back(&mut self) {
        if let Some((pool, host, sender)) = self.back.take()
            && let Some(pool) = pool.upgrade()
        {
            pool.put(&host, sender);
        }
    }
}

impl Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A TCP stream that acknowledges what it reads at once (see the module's docs).
struct QuickAck(TcpStream);

impl QuickAck {
    fn quick_ack(&self) {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: a valid socket, a c_int option of the right size; failure is harmless
        // (the ACK is only delayed).
        unsafe {
            libc::setsockopt(
                self.0.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                std::ptr::from_ref(&on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

impl AsyncRead for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.0).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.quick_ack();
        }
        polled
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// A request to `uri`: the origin-form target and the `Host` it names, or why it cannot
/// be sent (only `http://` URLs are servers of ours).
fn request(
    method: Method,
    uri: &str,
    headers: impl IntoIterator<Item = (HeaderName, HeaderValue)>,
    body: Bytes,
) -> Result<(String, Request<Full<Bytes>>), Failure> {
    let refused = |why: String| StreamableHttpError::Client(BackendHttpError::Request(why));
    let parsed: Uri = uri
        .parse()
        .map_err(|e| refused(format!("`{uri}` is not a URL: {e}")))?;
    if parsed.scheme_str() != Some("http") {
        return Err(refused(format!(
            "`{uri}` is not an http:// URL (servers are reached over plain HTTP)"
        )));
    }
    let Some(authority) = parsed.authority() else {
        return Err(refused(format!("`{uri}` names no host")));
    };
    let host = if authority.port().is_some() {
        authority.as_str().to_owned()
    } else {
        format!("{}:80", authority.host())
    };
    let target = parsed.path_and_query().map_or("/", |p| p.as_str());
    let mut builder = Request::builder()
        .method(method)
        .uri(target)
        .header(http::header::HOST, authority.as_str());
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    let request = builder
        .body(Full::new(body))
        .map_err(|e| refused(e.to_string()))?;
    Ok((host, request))
}

/// The headers every request carries, after the caller's own (rmcp's protocol version,
/// standard MCP headers).
fn common_headers(
    session: Option<&str>,
    auth: Option<String>,
    custom: Headers,
) -> Result<Vec<(HeaderName, HeaderValue)>, Failure> {
    let mut headers: Vec<(HeaderName, HeaderValue)> = custom.into_iter().collect();
    if let Some(session) = session {
        headers.push((
            HeaderName::from_static("mcp-session-id"),
            header_value(session)?,
        ));
    }
    if let Some(token) = auth {
        headers.push((
            http::header::AUTHORIZATION,
            header_value(&format!("Bearer {token}"))?,
        ));
    }
    Ok(headers)
}

fn header_value(text: &str) -> Result<HeaderValue, Failure> {
    HeaderValue::from_str(text).map_err(|e| {
        StreamableHttpError::Client(BackendHttpError::Request(format!("a header: {e}")))
    })
}

/// The body of `response`, at most `max` bytes.
async fn read_body(response: Response<Returning>, max: usize) -> Result<Bytes, Failure> {
    let limited = Limited::new(response.into_body(), max);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => match e.downcast::<hyper::Error>() {
            Ok(e) => Err(StreamableHttpError::Client(BackendHttpError::Http(*e))),
            Err(_) => Err(StreamableHttpError::ResponseBodyTooLarge { max_size: max }),
        },
    }
}

fn content_type(response: &Response<Returning>) -> Option<&[u8]> {
    response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .map(HeaderValue::as_bytes)
}

/// The progress notification an event's `data` carries, if it carries one.
fn progress_in(data: &str) -> Option<rmcp::model::ProgressNotificationParam> {
    if !data.contains("notifications/progress") {
        return None;
    }
    match serde_json::from_str(data).ok()? {
        ServerJsonRpcMessage::Notification(n) => match n.notification {
            rmcp::model::ServerNotification::ProgressNotification(p) => Some(p.params),
            _ => None,
        },
        _ => None,
    }
}

fn sse(response: Response<Returning>) -> Events {
    use futures::StreamExt;
    SseStream::new(response.into_body()).boxed()
}

impl StreamableHttpClient for BackendHttp {
    type Error = BackendHttpError;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: Headers,
    ) -> Result<StreamableHttpPostResponse, Failure> {
        let body = serde_json::to_vec(&message)
            .map_err(|e| StreamableHttpError::Client(BackendHttpError::Json(e)))?;
        let mut headers = common_headers(session_id.as_deref(), auth_header, custom_headers)?;
        headers.push((
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(JSON_MIME_TYPE),
        ));
        headers.push((
            http::header::ACCEPT,
            HeaderValue::from_static("text/event-stream, application/json"),
        ));
        let response = self
            .exchange(Method::POST, &uri, headers, body.into())
            .await?;
        let status = response.status();
        if matches!(status, StatusCode::ACCEPTED | StatusCode::NO_CONTENT) {
            // Read to its (empty) end, so the connection is kept.
            let _ = read_body(response, MAX_ERROR_BYTES).await;
            return Ok(StreamableHttpPostResponse::Accepted);
        }
        if status == StatusCode::NOT_FOUND && session_id.is_some() {
            let _ = read_body(response, MAX_ERROR_BYTES).await;
            return Err(StreamableHttpError::SessionExpired);
        }
        if !status.is_success() {
            let body = read_body(response, MAX_ERROR_BYTES)
                .await
                .unwrap_or_default();
            let body = String::from_utf8_lossy(&body);
            // A server that speaks only revisions with `initialize` refuses
            // `server/discover` with a JSON-RPC error; rmcp reads that error to fall back.
            if let Ok(error @ ServerJsonRpcMessage::Error(_)) =
                serde_json::from_str::<ServerJsonRpcMessage>(&body)
            {
                return Ok(StreamableHttpPostResponse::Json(error, None));
            }
            return Err(StreamableHttpError::UnexpectedServerResponse(
                format!(
                    "HTTP {status}: {}",
                    body.chars().take(500).collect::<String>()
                )
                .into(),
            ));
        }
        let session = response
            .headers()
            .get(HEADER_SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let (Some(cell), Some(id)) = (&self.session, &session) {
            cell.get_or_init(|| id.as_str().into());
        }
        let answers = !matches!(message, ClientJsonRpcMessage::Request(_));
        match content_type(&response) {
            Some(ct) if ct.starts_with(EVENT_STREAM_MIME_TYPE.as_bytes()) => Ok(
                StreamableHttpPostResponse::Sse(self.tap(sse(response)), session),
            ),
            Some(ct) if ct.starts_with(JSON_MIME_TYPE.as_bytes()) => {
                let body = read_body(response, MAX_JSON_BYTES).await?;
                match serde_json::from_slice::<ServerJsonRpcMessage>(&body) {
                    Ok(parsed) => Ok(StreamableHttpPostResponse::Json(parsed, session)),
                    // What answers a notification or a response carries nothing to read.
                    Err(_) if answers => Ok(StreamableHttpPostResponse::Accepted),
                    Err(e) => Err(StreamableHttpError::UnexpectedServerResponse(
                        format!("the answer is not JSON-RPC: {e}").into(),
                    )),
                }
            }
            _ if answers => {
                let _ = read_body(response, MAX_ERROR_BYTES).await;
                Ok(StreamableHttpPostResponse::Accepted)
            }
            other => Err(StreamableHttpError::UnexpectedContentType(
                other.map(|ct| String::from_utf8_lossy(ct).into_owned()),
            )),
        }
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: Headers,
    ) -> Result<(), Failure> {
        let headers = common_headers(Some(&session_id), auth_header, custom_headers)?;
        let response = self
            .exchange(Method::DELETE, &uri, headers, Bytes::new())
            .await?;
        let status = response.status();
        let _ = read_body(response, MAX_ERROR_BYTES).await;
        if status.is_success() || status == StatusCode::METHOD_NOT_ALLOWED {
            Ok(())
        } else {
            Err(StreamableHttpError::UnexpectedServerResponse(
                format!("ending the session: HTTP {status}").into(),
            ))
        }
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: Headers,
    ) -> Result<Events, Failure> {
        let mut headers = common_headers(session_id.as_deref(), auth_header, custom_headers)?;
        headers.push((
            http::header::ACCEPT,
            HeaderValue::from_static("text/event-stream, application/json"),
        ));
        if let Some(id) = last_event_id {
            headers.push((HeaderName::from_static("last-event-id"), header_value(&id)?));
        }
        let response = self
            .exchange(Method::GET, &uri, headers, Bytes::new())
            .await?;
        let status = response.status();
        if status == StatusCode::METHOD_NOT_ALLOWED {
            return Err(StreamableHttpError::ServerDoesNotSupportSse);
        }
        if status == StatusCode::NOT_FOUND && session_id.is_some() {
            return Err(StreamableHttpError::SessionExpired);
        }
        if !status.is_success() {
            return Err(StreamableHttpError::UnexpectedServerResponse(
                format!("opening the event stream: HTTP {status}").into(),
            ));
        }
        match content_type(&response) {
            Some(ct)
                if ct.starts_with(EVENT_STREAM_MIME_TYPE.as_bytes())
                    || ct.starts_with(JSON_MIME_TYPE.as_bytes()) =>
            {
                Ok(self.tap(sse(response)))
            }
            other => Err(StreamableHttpError::UnexpectedContentType(
                other.map(|ct| String::from_utf8_lossy(ct).into_owned()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::{ClientNotification, InitializedNotification};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server on 127.0.0.1 that answers one request per connection with `202` and
    /// closes it when `close` is notified, without saying so (no `Connection: close`), as
    /// a server whose idle timeout fires does; it counts the connections it accepted.
    async fn one_shot_server(
        close: Arc<tokio::sync::Notify>,
    ) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                // Up to the end of the headers, then the body its content-length names.
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = socket.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    seen.extend_from_slice(&buf[..n]);
                }
                let text = String::from_utf8_lossy(&seen).to_lowercase();
                let head_end = text.find("\r\n\r\n").unwrap() + 4;
                let length: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                let mut body = seen.len() - head_end;
                while body < length {
                    body += socket.read(&mut buf).await.unwrap();
                }
                socket
                    .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
                    .await
                    .unwrap();
                close.notified().await;
                drop(socket);
            }
        });
        (format!("http://{addr}/mcp"), accepted)
    }

    fn notification() -> ClientJsonRpcMessage {
        ClientJsonRpcMessage::notification(ClientNotification::InitializedNotification(
            InitializedNotification::default(),
        ))
    }

    #[tokio::test]
    async fn a_kept_connection_the_server_closed_is_not_used_and_the_request_goes_once() {
        let close = Arc::new(tokio::sync::Notify::new());
        let (uri, accepted) = one_shot_server(close.clone()).await;
        let http = BackendHttp::default();
        let post = || {
            http.post_message(
                uri.clone().into(),
                notification(),
                None,
                None,
                HashMap::new(),
            )
        };
        assert!(matches!(
            post().await,
            Ok(StreamableHttpPostResponse::Accepted)
        ));
        // The connection went back to the pool. The server closes it; wait until our side
        // saw that, so the next request meets a closed kept connection, not a race.
        let host = uri
            .trim_start_matches("http://")
            .trim_end_matches("/mcp")
            .to_owned();
        let kept = |closed: bool| {
            let idle = http.pool.idle.lock().unwrap();
            idle.get(&host)
                .is_some_and(|kept| kept.len() == 1 && kept[0].0.is_closed() == closed)
        };
        assert!(kept(false), "the connection is kept");
        close.notify_one();
        crate::gateway::tests::until("the close seen", || kept(true)).await;
        assert!(matches!(
            post().await,
            Ok(StreamableHttpPostResponse::Accepted)
        ));
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
        close.notify_one();
    }

    #[tokio::test]
    async fn a_closed_port_is_a_request_never_sent() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = BackendHttp::default()
            .post_message(
                format!("http://127.0.0.1:{port}/mcp").into(),
                notification(),
                None,
                None,
                HashMap::new(),
            )
            .await
            .expect_err("nobody listens");
        assert!(
            matches!(&e, StreamableHttpError::Client(c) if c.never_sent()),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn only_plain_http_urls_are_servers() {
        let e = BackendHttp::default()
            .post_message(
                "https://127.0.0.1:1/mcp".into(),
                notification(),
                None,
                None,
                HashMap::new(),
            )
            .await
            .expect_err("no TLS");
        assert!(e.to_string().contains("not an http:// URL"), "{e}");
    }
}
