//! The gateway's `/mcp` (and each profile's and server's path) with a shortcut for its hot
//! path: a `tools/call` on an open
//! session (revisions up to 2025-11-25) is answered here, with `application/json`, by the
//! same `Gateway::call` rmcp's handler uses, without passing through rmcp's session
//! worker and its event stream (three task hops and a stream per call, most of the
//! gateway's own work per call: BENCHMARKS.md, "The MCP gateway"). The spec lets a server
//! answer a POSTed request with JSON or with a stream: a call that asks for its progress
//! is answered with a stream once its backend reports some (`answer`), so nothing is lost.
//!
//! Everything else goes to rmcp unchanged, and so does any request the shortcut is not
//! sure of: another method, a batch, a body without a declared length or over the limit,
//! a session rmcp does not hold open (rmcp restores one the agent signed before a restart,
//! or answers 404), a `Host` rmcp would refuse (DNS rebinding), a revision header that is
//! not a revision with sessions, an `Accept` without both types. So what a client can be
//! refused, it is refused by rmcp, in rmcp's words.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, Response, StatusCode, header};
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ErrorData, NumberOrString, ProgressNotification,
    ProtocolVersion, RequestParamsMeta, ServerJsonRpcMessage, ServerResult,
};
use rmcp::transport::streamable_http_server::SessionManager;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::progress::Progress;
use super::service::{Gateway, HttpService, Sessions};

/// `/mcp`: the shortcut in front of rmcp's service.
#[derive(Clone)]
pub struct Endpoint {
    rmcp: HttpService,
    gateway: Gateway,
    sessions: Arc<Sessions>,
    /// Whether any `Host` is served (keys are required), as rmcp's service is configured.
    any_host: bool,
    calls: Arc<Calls>,
}

impl Endpoint {
    pub fn new(
        rmcp: HttpService,
        gateway: Gateway,
        sessions: Arc<Sessions>,
        any_host: bool,
    ) -> Endpoint {
        Endpoint {
            rmcp,
            gateway,
            sessions,
            any_host,
            calls: Arc::default(),
        }
    }

    /// Answers `request`, the shortcut's way or rmcp's.
    pub async fn handle(mut self, request: Request<Body>) -> Response<Body> {
        let Some(session) = self.eligible(request.headers(), request.method()) else {
            return self.pass_on(request).await;
        };
        let (parts, body) = request.into_parts();
        // The declared length was checked against the limit; a body longer than declared
        // is hyper's to refuse.
        let bytes = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => return plain(StatusCode::BAD_REQUEST, "Bad Request: unreadable body"),
        };
        // A request naming its revision in `_meta` (2026-07-28's way) is rmcp's to judge;
        // looking for the word is enough to leave every such request to it.
        let per_request_revision = bytes.windows(15).any(|w| w == b"protocolVersion");
        let call = serde_json::from_slice::<Call>(&bytes)
            .ok()
            .filter(|c| c.jsonrpc == "2.0" && c.method == "tools/call" && !per_request_revision);
        let Some(call) = call else {
            // rmcp never saw the shortcut's calls, so their cancellation is the shortcut's
            // to carry out; rmcp answers the notification as ever.
            if let Ok(cancelled) = serde_json::from_slice::<Cancelled>(&bytes)
                && cancelled.method == "notifications/cancelled"
                && let Some(id) = cancelled.params.request_id
            {
                self.calls.cancel(&session, id);
            }
            return self
                .pass_on(Request::from_parts(parts, Body::from(bytes)))
                .await;
        };
        if !self
            .sessions
            .has_session(&session.as_str().into())
            .await
            .unwrap_or(false)
        {
            return self
                .pass_on(Request::from_parts(parts, Body::from(bytes)))
                .await;
        }
        self.answer(call, session).await
    }

    /// Makes `call` on `session`. The answer goes as JSON, unless the client asked for
    /// progress and the backend reported some before answering: then as a stream of that
    /// progress and the answer, as rmcp's session would send it.
    async fn answer(self, call: Call, session: String) -> Response<Body> {
        let id = call.id;
        let running = self.calls.start(&session, &id);
        let Some(token) = call.params.progress_token() else {
            let answer = running
                .unless_cancelled(&self.gateway, call.params, &session, None)
                .await;
            return json(&message(answer, id));
        };
        let (to_answer, mut heard) = mpsc::unbounded_channel();
        let progress = Progress::to_answer(token, to_answer);
        let gateway = self.gateway;
        let params = call.params;
        let mut answering = Box::pin(async move {
            running
                .unless_cancelled(&gateway, params, &session, Some(progress))
                .await
        });
        // What the backend reported is passed on before the call returns, so with the
        // progress polled first none is left behind when the answer goes as JSON.
        let first = tokio::select! {
            biased;
            Some(first) = heard.recv() => first,
            answer = &mut answering => return json(&message(answer, id)),
        };
        let (frames, stream) = mpsc::unbounded_channel();
        let event = |message: &ServerJsonRpcMessage| {
            let data = serde_json::to_string(message).unwrap_or_default();
            Ok::<_, Infallible>(axum::body::Bytes::from(format!(
                "event: message\ndata: {data}\n\n"
            )))
        };
        let progress = |p| ServerJsonRpcMessage::notification(ProgressNotification::new(p).into());
        let _ = frames.send(event(&progress(first)));
        tokio::spawn(async move {
            let answer = loop {
                tokio::select! {
                    biased;
                    Some(next) = heard.recv() => {
                        let _ = frames.send(event(&progress(next)));
                    }
                    answer = &mut answering => break answer,
                    // The client went away: the call is dropped, which tells the backend,
                    // as when a JSON answer's connection closes.
                    () = frames.closed() => return,
                }
            };
            let _ = frames.send(event(&message(answer, id)));
        });
        let body = futures::stream::unfold(stream, |mut stream| async move {
            stream.recv().await.map(|frame| (frame, stream))
        });
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(Body::from_stream(body))
            .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, ""))
    }

    /// The session a request can take the shortcut on, when its headers allow it.
    fn eligible(&self, headers: &HeaderMap, method: &Method) -> Option<String> {
        if method != Method::POST {
            return None;
        }
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let session = text("mcp-session-id")?;
        let length: usize = text("content-length")?.parse().ok()?;
        if length > crate::api::BODY_LIMIT {
            return None;
        }
        let json = |v: &str| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        };
        if !text("content-type").is_some_and(json) {
            return None;
        }
        let accepts = |wanted: &str| {
            headers.get_all(header::ACCEPT).iter().any(|v| {
                v.to_str().is_ok_and(|v| {
                    v.split(',').any(|t| {
                        t.split(';')
                            .next()
                            .is_some_and(|t| t.trim().eq_ignore_ascii_case(wanted))
                    })
                })
            })
        };
        if !accepts("application/json") || !accepts("text/event-stream") {
            return None;
        }
        if let Some(version) = text("mcp-protocol-version") {
            let known = ProtocolVersion::KNOWN_VERSIONS
                .iter()
                .find(|v| v.as_str() == version)?;
            if !known.has_initialize() {
                return None;
            }
        }
        if !self.any_host && !loopback_host(text("host")?) {
            return None;
        }
        Some(session.to_owned())
    }

    async fn pass_on(&mut self, request: Request<Body>) -> Response<Body> {
        use tower_service::Service;
        match self.rmcp.call(request).await {
            Ok(response) => response.map(Body::new),
            Err(never) => match never {},
        }
    }
}

impl tower_service::Service<Request<Body>> for Endpoint {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let endpoint = self.clone();
        Box::pin(async move { Ok(endpoint.handle(request).await) })
    }
}

/// What the shortcut reads of a request: a single JSON-RPC `tools/call`.
#[derive(Deserialize)]
struct Call {
    jsonrpc: String,
    id: NumberOrString,
    method: String,
    params: CallToolRequestParams,
}

/// What the shortcut reads of a notification that cancels a call.
#[derive(Deserialize)]
struct Cancelled {
    method: String,
    params: rmcp::model::CancelledNotificationParam,
}

/// The shortcut's calls in flight, by session and request id, for their client's
/// `notifications/cancelled`.
#[derive(Default)]
struct Calls(Mutex<HashMap<(String, NumberOrString), CancellationToken>>);

impl Calls {
    fn start(self: &Arc<Self>, session: &str, id: &NumberOrString) -> Running {
        let key = (session.to_owned(), id.clone());
        let cancelled = CancellationToken::new();
        if let Ok(mut calls) = self.0.lock() {
            calls.insert(key.clone(), cancelled.clone());
        }
        Running {
            calls: self.clone(),
            key,
            cancelled,
        }
    }

    fn cancel(&self, session: &str, id: NumberOrString) {
        let key = (session.to_owned(), id);
        if let Some(cancelled) = self.0.lock().ok().and_then(|mut c| c.remove(&key)) {
            cancelled.cancel();
        }
    }
}

/// A call the shortcut is making; it leaves [`Calls`] when dropped.
struct Running {
    calls: Arc<Calls>,
    key: (String, NumberOrString),
    cancelled: CancellationToken,
}

impl Running {
    /// Makes the call `params` of `session`, unless its client cancels it first: then it
    /// is dropped (which tells the backend) and answered with an error its client ignores.
    async fn unless_cancelled(
        &self,
        gateway: &Gateway,
        params: CallToolRequestParams,
        session: &str,
        progress: Option<Progress>,
    ) -> Result<CallToolResponse, ErrorData> {
        tokio::select! {
            answer = gateway.call(params, Some(session), progress) => answer,
            () = self.cancelled.cancelled() => Err(super::service::cancelled()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(mut calls) = self.calls.0.lock() {
            calls.remove(&self.key);
        }
    }
}

/// Whether `host` (a `Host` header) names this machine as rmcp's default allows:
/// `localhost`, `127.0.0.1` or `[::1]`, with any port.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1" || name == "::1"
}

/// The JSON-RPC answer to the request `id`.
fn message(
    answer: Result<CallToolResponse, ErrorData>,
    id: NumberOrString,
) -> ServerJsonRpcMessage {
    match answer {
        Ok(answer) => ServerJsonRpcMessage::response(ServerResult::from(answer), id),
        Err(e) => ServerJsonRpcMessage::error(e, Some(id)),
    }
}

fn json(message: &ServerJsonRpcMessage) -> Response<Body> {
    match serde_json::to_vec(message) {
        Ok(json) => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(json))
            .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "")),
        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "the answer is not JSON"),
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_machines_names_are_loopback_hosts() {
        for host in [
            "localhost",
            "LOCALHOST:7071",
            "127.0.0.1",
            "127.0.0.1:7071",
            "[::1]:7071",
            "[::1]",
        ] {
            assert!(loopback_host(host), "{host}");
        }
        for host in [
            "example.com",
            "127.0.0.1.example.com:80",
            "localhost.evil:7071",
            "10.0.0.1:7071",
            "[::2]:1",
            "",
        ] {
            assert!(!loopback_host(host), "{host}");
        }
    }
}
