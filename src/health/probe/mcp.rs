//! The MCP probe proves the protocol works, for servers without `/health`: it speaks
//! JSON-RPC over streamable HTTP at the server's MCP path. It sends `initialize`; a server
//! on a revision with the handshake (up to 2025-11-25) then gets `notifications/initialized`
//! and `ping`, a server on 2026-07-28 or later gets `server/discover`. Any JSON-RPC result
//! is healthy; a JSON-RPC error, an HTTP error or an answer that is not JSON-RPC is
//! unhealthy with its reason; a refused connection or no answer in time is unreachable.
//! The whole exchange fits in the probe's timeout, and the session it opens is ended with a
//! `DELETE` the probe does not wait for, so probing does not pile up sessions on the server.

use std::fmt;
use std::time::Duration;

use futures::FutureExt;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

use super::{ProbeOutcome, Prober, describe};

/// The revision the MCP probe offers in `initialize`. A server that knows it echoes it; an
/// older one answers with its own, and the probe goes along with that.
const MCP_OFFERED_REVISION: &str = "2025-06-18";
/// The first MCP revision without the `initialize` handshake (lifecycle moved into each
/// request's `_meta`); servers on it or later are asked `server/discover` instead of `ping`.
const MCP_DISCOVER_REVISION: &str = "2026-07-28";
/// The JSON-RPC error a server without the handshake answers `initialize` with; its
/// `data.supported` lists the revisions it does speak.
const MCP_UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
/// How much of one answer is read looking for the response before giving up on it. A
/// `ping` answer is tens of bytes; this only stops a misbehaving stream.
const MCP_MAX_ANSWER_BYTES: usize = 1 << 20;
const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");

/// The MCP probe. A separate `impl` so the exchange reads top to bottom: `mcp_probe` runs
/// `mcp_exchange` and ends the session; the exchange is built from `mcp_post`.
impl Prober {
    pub(super) async fn mcp_probe(
        &self,
        addr: std::net::SocketAddr,
        endpoint: &str,
        timeout: Duration,
    ) -> (ProbeOutcome, String, Option<String>, Option<f64>) {
        let url = format!("http://{addr}{endpoint}");
        let budget = Budget::new(timeout);
        // Filled as soon as `initialize` hands out a session, so the session is ended
        // whether or not the rest of the exchange succeeds.
        let mut session = HeaderMap::new();
        let outcome = self.mcp_exchange(&url, budget, &mut session).await;
        if session.contains_key(MCP_SESSION_ID) {
            self.end_mcp_session(url, session, timeout);
        }
        match outcome {
            Ok(McpAnswered { detail, version }) => (ProbeOutcome::Healthy, detail, version, None),
            Err(McpFailure::Unhealthy(detail)) => (ProbeOutcome::Unhealthy, detail, None, None),
            Err(McpFailure::Unreachable(detail)) => (ProbeOutcome::Unreachable, detail, None, None),
        }
    }

    /// `initialize`, then `notifications/initialized` and `ping` on a revision with the
    /// handshake, or `server/discover` on one without. `session` collects the headers that
    /// identify the session: `Mcp-Session-Id` and `MCP-Protocol-Version`.
    async fn mcp_exchange(
        &self,
        url: &str,
        budget: Budget,
        session: &mut HeaderMap,
    ) -> Result<McpAnswered, McpFailure> {
        let params = json!({
            "protocolVersion": MCP_OFFERED_REVISION,
            "capabilities": {},
            "clientInfo": client_info(),
        });
        let reply = self
            .mcp_post(
                url,
                "initialize",
                Some(1),
                Some(params),
                HeaderMap::new(),
                budget,
            )
            .await?;
        if let Some(id) = &reply.session {
            session.insert(MCP_SESSION_ID, id.clone());
        }
        // A server that speaks only revisions without the handshake refuses it, naming
        // them. A session it may have opened for the refused handshake is not used.
        if let Some(McpAnswer::Error(e)) = &reply.answer
            && let Some(revision) = e.discover_revision()
        {
            return self
                .mcp_discover(url, revision, None, HeaderMap::new(), budget)
                .await;
        }
        let init = reply.into_result("initialize")?;
        let Some(revision) = init.get("protocolVersion").and_then(Value::as_str) else {
            return Err(McpFailure::Unhealthy(
                "MCP initialize answered without a protocolVersion".to_owned(),
            ));
        };
        let revision = revision.to_owned();
        let server_version = init
            .pointer("/serverInfo/version")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if is_discover_revision(&revision) {
            // The handshake succeeded on a revision that does not need it: requests carry
            // their own `_meta` from here on, in the session if the server opened one.
            return self
                .mcp_discover(url, revision, server_version, session.clone(), budget)
                .await;
        }
        let Ok(header) = HeaderValue::from_str(&revision) else {
            return Err(McpFailure::Unhealthy(format!(
                "MCP initialize answered with protocolVersion {revision:?}, which cannot be sent back in a header"
            )));
        };
        session.insert(MCP_PROTOCOL_VERSION, header);

        let method = "notifications/initialized";
        let reply = self
            .mcp_post(url, method, None, None, session.clone(), budget)
            .await?;
        if !reply.status.is_success() {
            return Err(McpFailure::Unhealthy(reply.http_failure(method)));
        }
        self.mcp_post(url, "ping", Some(2), None, session.clone(), budget)
            .await?
            .into_result("ping")?;
        Ok(McpAnswered {
            detail: format!("MCP ping answered (protocol {revision})"),
            version: server_version,
        })
    }

    /// `server/discover` on `revision`, which has no session lifecycle: the request carries
    /// the revision and who is asking in its own `_meta` and headers, added to `headers`.
    async fn mcp_discover(
        &self,
        url: &str,
        revision: String,
        server_version: Option<String>,
        mut headers: HeaderMap,
        budget: Budget,
    ) -> Result<McpAnswered, McpFailure> {
        let method = "server/discover";
        let Ok(header) = HeaderValue::from_str(&revision) else {
            return Err(McpFailure::Unhealthy(format!(
                "MCP server named protocol {revision:?}, which cannot be sent in a header"
            )));
        };
        headers.insert(MCP_PROTOCOL_VERSION, header);
        headers.insert(MCP_METHOD, HeaderValue::from_static("server/discover"));
        let params = json!({
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": revision,
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": client_info(),
            }
        });
        let result = self
            .mcp_post(url, method, Some(2), Some(params), headers, budget)
            .await?
            .into_result(method)?;
        let version = result
            .get("_meta")
            .and_then(|m| m.get("io.modelcontextprotocol/serverInfo"))
            .and_then(|i| i.get("version"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or(server_version);
        Ok(McpAnswered {
            detail: format!("MCP server/discover answered (protocol {revision})"),
            version,
        })
    }

    /// POSTs one JSON-RPC message: a request when `id` is given, else a notification. For a
    /// request the answer (JSON or an SSE stream) is read until the response with `id`
    /// arrives; a notification's answer is not read beyond its status. Everything happens
    /// before the budget's deadline.
    async fn mcp_post(
        &self,
        url: &str,
        method: &str,
        id: Option<u64>,
        params: Option<Value>,
        headers: HeaderMap,
        budget: Budget,
    ) -> Result<McpReply, McpFailure> {
        let mut message = json!({ "jsonrpc": "2.0", "method": method });
        if let Some(id) = id {
            message["id"] = id.into();
        }
        if let Some(params) = params {
            message["params"] = params;
        }
        let send = self
            .http()
            .post(url)
            .headers(headers)
            .header(ACCEPT, "application/json, text/event-stream")
            // `json` sets `Content-Type: application/json`.
            .json(&message)
            .send();
        let mut response = budget
            .within(method, send)
            .await?
            .map_err(|e| McpFailure::Unreachable(format!("MCP {method}: {}", describe(&e))))?;
        let status = response.status();
        let session = response.headers().get(MCP_SESSION_ID).cloned();
        let sse = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
        let mut scan = AnswerScan::new(sse, id);
        if id.is_none() && status.is_success() {
            release(response);
            return Ok(McpReply {
                status,
                session,
                answer: None,
                snippet: String::new(),
            });
        }
        let read = async {
            while scan.len() < MCP_MAX_ANSWER_BYTES {
                match response.chunk().await? {
                    Some(chunk) => {
                        if let Some(answer) = scan.push(&chunk) {
                            release(response);
                            return Ok(Some(answer));
                        }
                    }
                    None => break,
                }
            }
            Ok::<_, reqwest::Error>(scan.finish())
        };
        let answer = match budget.within(method, read).await {
            Ok(Ok(answer)) => answer,
            // An error status says enough on its own; a body that then stalls or breaks
            // off does not make the server unreachable.
            Ok(Err(_)) | Err(_) if !status.is_success() => None,
            Ok(Err(e)) => {
                return Err(McpFailure::Unreachable(format!(
                    "MCP {method} answer broke off: {}",
                    describe(&e)
                )));
            }
            Err(late) => return Err(late),
        };
        Ok(McpReply {
            status,
            session,
            answer,
            snippet: scan.snippet(),
        })
    }

    /// Ends the probe's session with `DELETE`, without waiting: the probe's verdict is
    /// already made, and a server that ignores the request only keeps a session it would
    /// have kept anyway. Bounded by `timeout`, so the task cannot outlive the probe by more.
    fn end_mcp_session(&self, url: String, session: HeaderMap, timeout: Duration) {
        let request = self.http().delete(url).headers(session).timeout(timeout);
        tokio::spawn(async move {
            if let Err(e) = request.send().await {
                tracing::debug!(error = %describe(&e), "ending the MCP probe session failed");
            }
        });
    }
}

/// What a successful MCP probe learnt.
struct McpAnswered {
    /// `MCP ping answered (protocol 2025-06-18)`.
    detail: String,
    /// The server's own version, from `serverInfo` (`initialize` or `server/discover`).
    version: Option<String>,
}

/// Why an MCP probe failed, in words, split the way [`ProbeOutcome`] splits failures.
#[derive(Debug)]
enum McpFailure {
    /// The server answered, and the answer is an error or not MCP.
    Unhealthy(String),
    /// Refused, broken off, or not answered before the deadline.
    Unreachable(String),
}

/// The deadline for one whole MCP exchange, and the timeout it came from (for the words).
#[derive(Clone, Copy)]
struct Budget {
    deadline: tokio::time::Instant,
    timeout: Duration,
}

impl Budget {
    fn new(timeout: Duration) -> Budget {
        Budget {
            deadline: tokio::time::Instant::now() + timeout,
            timeout,
        }
    }

    /// Runs `step` of `method` unless the deadline passes first.
    async fn within<F: Future>(self, method: &str, step: F) -> Result<F::Output, McpFailure> {
        tokio::time::timeout_at(self.deadline, step)
            .await
            .map_err(|_| {
                McpFailure::Unreachable(format!(
                    "no answer to MCP {method} within {:.1}s",
                    self.timeout.as_secs_f64()
                ))
            })
    }
}

/// One HTTP answer to an MCP POST.
struct McpReply {
    status: StatusCode,
    session: Option<HeaderValue>,
    /// The JSON-RPC response to the request, if the body held one.
    answer: Option<McpAnswer>,
    /// The start of the body, for the words when it held no response.
    snippet: String,
}

impl McpReply {
    /// The JSON-RPC result, or why there is none.
    fn into_result(mut self, method: &str) -> Result<Value, McpFailure> {
        match (self.status.is_success(), self.answer.take()) {
            (true, Some(McpAnswer::Result(result))) => Ok(result),
            (true, Some(McpAnswer::Error(e))) => {
                Err(McpFailure::Unhealthy(format!("MCP {method} failed: {e}")))
            }
            (true, None) if self.snippet.is_empty() => Err(McpFailure::Unhealthy(format!(
                "MCP {method} answered HTTP {} with an empty body",
                self.status.as_u16()
            ))),
            (true, None) => Err(McpFailure::Unhealthy(format!(
                "MCP {method} answered HTTP {} without a JSON-RPC response: {}",
                self.status.as_u16(),
                self.snippet
            ))),
            (false, Some(McpAnswer::Error(e))) => Err(McpFailure::Unhealthy(format!(
                "MCP {method} failed: HTTP {}, {e}",
                self.status.as_u16()
            ))),
            (false, _) => Err(McpFailure::Unhealthy(self.http_failure(method))),
        }
    }

    /// `MCP initialize failed: HTTP 404`, with the body's start when there is one.
    fn http_failure(&self, method: &str) -> String {
        let status = self.status.as_u16();
        if self.snippet.is_empty() {
            format!("MCP {method} failed: HTTP {status}")
        } else {
            format!("MCP {method} failed: HTTP {status}: {}", self.snippet)
        }
    }
}

/// A JSON-RPC response: a result or an error.
#[derive(Debug, PartialEq)]
enum McpAnswer {
    Result(Value),
    Error(RpcError),
}

#[derive(Debug, PartialEq)]
struct RpcError {
    code: i64,
    message: String,
    data: Option<Value>,
}

impl RpcError {
    /// The revision to use `server/discover` with, when this error refuses `initialize`
    /// because the server only speaks revisions without it. 2026-07-28 when it is listed,
    /// else the newest listed.
    fn discover_revision(&self) -> Option<String> {
        if self.code != MCP_UNSUPPORTED_PROTOCOL_VERSION {
            return None;
        }
        let supported = self.data.as_ref()?.get("supported")?.as_array()?;
        let modern = supported
            .iter()
            .filter_map(Value::as_str)
            .filter(|r| is_discover_revision(r));
        let mut newest: Option<&str> = None;
        for revision in modern {
            if revision == MCP_DISCOVER_REVISION {
                return Some(revision.to_owned());
            }
            newest = newest.max(Some(revision));
        }
        newest.map(str::to_owned)
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JSON-RPC error {}: {}", self.code, self.message)
    }
}

/// Whether `revision` is one without the handshake. Revisions are dates, which compare as
/// strings; anything that is not a date is treated as an old revision.
fn is_discover_revision(revision: &str) -> bool {
    let is_date = revision.len() == 10
        && revision.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    is_date && revision >= MCP_DISCOVER_REVISION
}

fn client_info() -> Value {
    json!({ "name": "mcp-orchestration", "version": env!("CARGO_PKG_VERSION") })
}

/// Lets the connection go back to the pool if the rest of the body has already arrived,
/// without waiting on a stream the server keeps open.
fn release(mut response: reqwest::Response) {
    for _ in 0..4 {
        match response.chunk().now_or_never() {
            Some(Ok(Some(_))) => continue,
            _ => break,
        }
    }
}

/// Finds the JSON-RPC response with one id in an answer that arrives in chunks: a JSON
/// body, or an SSE stream whose `data:` fields carry JSON-RPC messages (requests and
/// notifications from the server, priming events with empty data, and the response).
/// No IO: the caller feeds it bytes.
struct AnswerScan {
    sse: bool,
    /// The request's id; `None` for a notification, whose answer holds no response.
    id: Option<u64>,
    body: Vec<u8>,
    events: crate::sse::Parser,
}

impl AnswerScan {
    fn new(sse: bool, id: Option<u64>) -> AnswerScan {
        AnswerScan {
            sse,
            id,
            body: Vec::new(),
            events: crate::sse::Parser::default(),
        }
    }

    fn len(&self) -> usize {
        self.body.len()
    }

    /// Takes the next chunk; returns the response once it is complete.
    fn push(&mut self, chunk: &[u8]) -> Option<McpAnswer> {
        self.body.extend_from_slice(chunk);
        if !self.sse {
            // A JSON body parses once it is all there; until then this fails cheaply.
            return serde_json::from_slice(&self.body)
                .ok()
                .and_then(|v| self.response_in(&v));
        }
        // `event:`, `id:`, `retry:` and `:` comments say nothing about the response.
        self.events
            .push(chunk)
            .iter()
            .find_map(|m| self.response_in_data(&m.data))
    }

    /// The body has ended: an SSE event without its closing blank line still counts.
    fn finish(&mut self) -> Option<McpAnswer> {
        if !self.sse {
            return None;
        }
        let last = self.events.finish()?;
        self.response_in_data(&last.data)
    }

    fn response_in_data(&self, data: &str) -> Option<McpAnswer> {
        let value: Value = serde_json::from_str(data).ok()?;
        self.response_in(&value)
    }

    /// The response to our request in one message or batch. An error without an id (the
    /// server could not read the request) answers it too.
    fn response_in(&self, message: &Value) -> Option<McpAnswer> {
        if let Some(batch) = message.as_array() {
            return batch.iter().find_map(|m| self.response_in(m));
        }
        let id = self.id?;
        let ours = message.get("id").and_then(Value::as_u64) == Some(id);
        if let Some(result) = message.get("result").filter(|_| ours) {
            return Some(McpAnswer::Result(result.clone()));
        }
        let error = message.get("error")?;
        let anonymous = matches!(message.get("id"), None | Some(Value::Null));
        if !(ours || anonymous) {
            return None;
        }
        Some(McpAnswer::Error(RpcError {
            code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("(no message)")
                .to_owned(),
            data: error.get("data").cloned(),
        }))
    }

    /// The start of the body, for the words.
    fn snippet(&self) -> String {
        String::from_utf8_lossy(&self.body)
            .chars()
            .take(200)
            .collect::<String>()
            .trim()
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::health::probe::ProbeResult;
    use crate::manifest::ProbeKind;

    /// One request as the fake MCP server saw it.
    #[derive(Debug)]
    struct Seen {
        method: String,
        headers: Vec<(String, String)>,
        body: Value,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        /// The JSON-RPC method, or the HTTP method when there is no body (`DELETE`).
        fn rpc(&self) -> &str {
            self.body["method"].as_str().unwrap_or(&self.method)
        }
    }

    /// What the fake MCP server does with one request.
    enum Answer {
        /// Writes this raw HTTP response.
        Send(String),
        /// Writes it after a while.
        SendAfter(Duration, String),
        /// Never answers, and holds the connection open.
        Hold,
    }

    /// A loopback HTTP/1.1 server that answers every request (on kept-alive connections
    /// too) as `answer(request)` says, and reports each request on the returned channel.
    async fn fake_mcp(
        answer: impl Fn(&Seen) -> Answer + Send + Sync + 'static,
    ) -> (u16, tokio::sync::mpsc::UnboundedReceiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let answer = std::sync::Arc::new(answer);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (tx, answer) = (tx.clone(), answer.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while let Some(seen) = read_request(&mut stream, &mut buf).await {
                        let response = answer(&seen);
                        let _ = tx.send(seen);
                        let response = match response {
                            Answer::Send(r) => r,
                            Answer::SendAfter(delay, r) => {
                                tokio::time::sleep(delay).await;
                                r
                            }
                            Answer::Hold => std::future::pending().await,
                        };
                        if stream.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (port, rx)
    }

    /// Reads one request off a kept-alive connection; `buf` holds what was read past it.
    async fn read_request(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<Seen> {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.lines();
        let method = lines.next()?.split(' ').next()?.to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or(Value::Null);
        buf.drain(..head_end + length);
        Some(Seen {
            method,
            headers,
            body,
        })
    }

    fn reply(status: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut r = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\n", body.len());
        for (n, v) in headers {
            r.push_str(&format!("{n}: {v}\r\n"));
        }
        Answer::Send(format!("{r}\r\n{body}"))
    }

    fn json_answer(body: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn json_reply(body: Value) -> Answer {
        Answer::Send(json_answer(&body.to_string()))
    }

    /// The next request the fake saw, waiting at most two seconds.
    async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Seen>) -> Seen {
        tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .expect("a request within 2s")
            .expect("the fake server is running")
    }

    async fn mcp(port: u16, timeout: Duration) -> ProbeResult {
        Prober::new()
            .probe(
                ProbeKind::Mcp,
                ([127, 0, 0, 1], port).into(),
                "/mcp",
                timeout,
            )
            .await
    }

    const INIT_RESULT: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"fake","version":"3.1.4"}}}"#;

    #[tokio::test]
    async fn mcp_ping_over_sse_is_healthy_and_the_session_is_ended() {
        let (port, mut seen) = fake_mcp(|r| match r.rpc() {
            // A priming event with empty data comes first, as rmcp sends it.
            "initialize" => reply(
                "200 OK",
                &[
                    ("content-type", "text/event-stream"),
                    ("mcp-session-id", "s-1"),
                ],
                &format!("data: \nid: 0\nretry: 3000\n\ndata: {INIT_RESULT}\n\n"),
            ),
            "notifications/initialized" => reply("202 Accepted", &[], ""),
            "ping" => reply(
                "200 OK",
                &[("content-type", "text/event-stream")],
                "event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{}}\r\n\r\n",
            ),
            _ => reply("202 Accepted", &[], ""),
        })
        .await;
        let r = mcp(port, Duration::from_secs(2)).await;
        assert_eq!(r.outcome, ProbeOutcome::Healthy, "{}", r.detail);
        assert_eq!(r.detail, "MCP ping answered (protocol 2025-06-18)");
        assert_eq!(r.version.as_deref(), Some("3.1.4"));

        let init = next(&mut seen).await;
        assert_eq!(init.method, "POST");
        assert_eq!(init.body["params"]["protocolVersion"], "2025-06-18");
        assert_eq!(
            init.header("accept"),
            Some("application/json, text/event-stream")
        );
        assert_eq!(init.header("content-type"), Some("application/json"));
        for method in ["notifications/initialized", "ping", "DELETE"] {
            let r = next(&mut seen).await;
            assert_eq!(r.rpc(), method);
            assert_eq!(r.header("mcp-session-id"), Some("s-1"), "{method}");
            assert_eq!(
                r.header("mcp-protocol-version"),
                Some("2025-06-18"),
                "{method}"
            );
        }
    }

    #[tokio::test]
    async fn a_server_without_the_handshake_is_asked_server_discover() {
        // What rmcp answers when it speaks only 2026-07-28.
        let (port, mut seen) = fake_mcp(|r| match r.rpc() {
            // With a session id for the refused handshake, which discovery must not use.
            "initialize" => reply(
                "200 OK",
                &[
                    ("content-type", "application/json"),
                    ("mcp-session-id", "s-3"),
                ],
                &json!({
                    "jsonrpc": "2.0", "id": 1,
                    "error": {
                        "code": -32022, "message": "Unsupported protocol version",
                        "data": {"requested": "2025-06-18", "supported": ["2026-07-28"]},
                    },
                })
                .to_string(),
            ),
            "server/discover" => json_reply(json!({
                "jsonrpc": "2.0", "id": 2,
                "result": {
                    "supportedVersions": ["2026-07-28"], "capabilities": {},
                    "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "m", "version": "9.0.0"}},
                },
            })),
            _ => reply("404 Not Found", &[], ""),
        })
        .await;
        let r = mcp(port, Duration::from_secs(2)).await;
        assert_eq!(r.outcome, ProbeOutcome::Healthy, "{}", r.detail);
        assert_eq!(
            r.detail,
            "MCP server/discover answered (protocol 2026-07-28)"
        );
        assert_eq!(r.version.as_deref(), Some("9.0.0"));
        assert_eq!(next(&mut seen).await.rpc(), "initialize");
        let discover = next(&mut seen).await;
        assert_eq!(discover.rpc(), "server/discover");
        assert_eq!(discover.header("mcp-protocol-version"), Some("2026-07-28"));
        assert_eq!(discover.header("mcp-method"), Some("server/discover"));
        assert_eq!(discover.header("mcp-session-id"), None);
        let meta = &discover.body["params"]["_meta"];
        assert_eq!(
            meta["io.modelcontextprotocol/protocolVersion"],
            "2026-07-28"
        );
        assert_eq!(
            meta["io.modelcontextprotocol/clientCapabilities"],
            json!({})
        );
        let delete = next(&mut seen).await;
        assert_eq!(delete.rpc(), "DELETE");
        assert_eq!(delete.header("mcp-session-id"), Some("s-3"));
    }

    #[tokio::test]
    async fn a_handshake_naming_a_modern_revision_leads_to_server_discover() {
        let (port, _seen) = fake_mcp(|r| match r.rpc() {
            "initialize" => json_reply(json!({
                "jsonrpc": "2.0", "id": 1,
                "result": {"protocolVersion": "2026-07-28", "capabilities": {},
                           "serverInfo": {"name": "m", "version": "2.0.0"}},
            })),
            "server/discover" => json_reply(json!({"jsonrpc": "2.0", "id": 2, "result": {}})),
            _ => reply("404 Not Found", &[], ""),
        })
        .await;
        let r = mcp(port, Duration::from_secs(2)).await;
        assert_eq!(r.outcome, ProbeOutcome::Healthy, "{}", r.detail);
        assert_eq!(
            r.detail,
            "MCP server/discover answered (protocol 2026-07-28)"
        );
        // server/discover named no serverInfo, so the handshake's stands.
        assert_eq!(r.version.as_deref(), Some("2.0.0"));
    }

    #[tokio::test]
    async fn a_jsonrpc_error_to_ping_is_unhealthy_and_still_ends_the_session() {
        let (port, mut seen) = fake_mcp(|r| match r.rpc() {
            "initialize" => reply(
                "200 OK",
                &[
                    ("content-type", "application/json"),
                    ("mcp-session-id", "s-2"),
                ],
                INIT_RESULT,
            ),
            "ping" => json_reply(json!({
                "jsonrpc": "2.0", "id": 2,
                "error": {"code": -32601, "message": "Method not found"},
            })),
            _ => reply("202 Accepted", &[], ""),
        })
        .await;
        let r = mcp(port, Duration::from_secs(2)).await;
        assert_eq!(r.outcome, ProbeOutcome::Unhealthy);
        assert_eq!(
            r.detail,
            "MCP ping failed: JSON-RPC error -32601: Method not found"
        );
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(next(&mut seen).await.rpc().to_owned());
        }
        assert_eq!(
            got,
            ["initialize", "notifications/initialized", "ping", "DELETE"]
        );
    }

    #[tokio::test]
    async fn an_http_error_or_an_answer_that_is_not_jsonrpc_is_unhealthy() {
        let (port, _) = fake_mcp(|_| reply("404 Not Found", &[], "")).await;
        let r = mcp(port, Duration::from_secs(2)).await;
        assert_eq!(r.outcome, ProbeOutcome::Unhealthy);
        assert_eq!(r.detail, "MCP initialize failed: HTTP 404");

        let (port, _) = fake_mcp(|_| {
            reply(
                "200 OK",
                &[("content-type", "text/html")],
                "<html>hi</html>",
            )
        })
        .await;
        let r = mcp(port, Duration::from_secs(2)).await;
        assert_eq!(r.outcome, ProbeOutcome::Unhealthy);
        assert_eq!(
            r.detail,
            "MCP initialize answered HTTP 200 without a JSON-RPC response: <html>hi</html>"
        );

        let (port, _) = fake_mcp(|r| match r.rpc() {
            "initialize" => json_reply(json!({"jsonrpc": "2.0", "id": 1, "result": {}})),
            _ => reply("202 Accepted", &[], ""),
        })
        .await;
        let r = mcp(port, Duration::from_secs(2)).await;
        assert_eq!(r.outcome, ProbeOutcome::Unhealthy);
        assert_eq!(
            r.detail,
            "MCP initialize answered without a protocolVersion"
        );

        let (port, _) = fake_mcp(|r| match r.rpc() {
            "initialize" => json_reply(serde_json::from_str(INIT_RESULT).unwrap()),
            _ => reply("400 Bad Request", &[], "Bad Request: no session"),
        })
        .await;
        let r = mcp(port, Duration::from_secs(2)).await;
        assert_eq!(r.outcome, ProbeOutcome::Unhealthy);
        assert_eq!(
            r.detail,
            "MCP notifications/initialized failed: HTTP 400: Bad Request: no session"
        );
    }

    #[tokio::test]
    async fn mcp_on_a_closed_port_is_unreachable() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let r = mcp(port, Duration::from_secs(1)).await;
        assert_eq!(r.outcome, ProbeOutcome::Unreachable);
        assert!(r.detail.starts_with("MCP initialize: "), "{}", r.detail);
        assert!(r.detail.to_lowercase().contains("refused"), "{}", r.detail);
    }

    #[tokio::test]
    async fn mcp_that_never_answers_is_unreachable_within_the_timeout() {
        let (port, _) = fake_mcp(|_| Answer::Hold).await;
        let timeout = Duration::from_millis(300);
        let start = Instant::now();
        let r = mcp(port, timeout).await;
        assert_eq!(r.outcome, ProbeOutcome::Unreachable);
        assert_eq!(r.detail, "no answer to MCP initialize within 0.3s");
        assert!(start.elapsed() < timeout * 3, "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn the_whole_exchange_shares_one_timeout() {
        // `initialize` and `ping` each answer well within the timeout, but not both.
        let slow = Duration::from_millis(600);
        let (port, _) = fake_mcp(move |r| match r.rpc() {
            "initialize" => Answer::SendAfter(slow, json_answer(INIT_RESULT)),
            "ping" => {
                Answer::SendAfter(slow, json_answer(r#"{"jsonrpc":"2.0","id":2,"result":{}}"#))
            }
            _ => reply("202 Accepted", &[], ""),
        })
        .await;
        let timeout = Duration::from_secs(1);
        let start = Instant::now();
        let r = mcp(port, timeout).await;
        assert_eq!(r.outcome, ProbeOutcome::Unreachable);
        assert_eq!(r.detail, "no answer to MCP ping within 1.0s");
        assert!(start.elapsed() < slow * 2, "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn an_sse_stream_kept_open_after_the_response_does_not_hold_the_probe() {
        // Chunked and never finished: the probe must stop at the response, not at the end.
        let (port, _) = fake_mcp(|r| match r.rpc() {
            "initialize" => json_reply(serde_json::from_str(INIT_RESULT).unwrap()),
            "ping" => {
                let event = "data: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{}}\n\n";
                Answer::Send(format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{event}\r\n",
                    event.len()
                ))
            }
            _ => reply("202 Accepted", &[], ""),
        })
        .await;
        let r = mcp(port, Duration::from_secs(5)).await;
        assert_eq!(r.outcome, ProbeOutcome::Healthy, "{}", r.detail);
        assert!(r.latency_ms < 2000.0, "{}", r.latency_ms);
    }

    #[test]
    fn an_sse_answer_is_found_across_chunks_among_other_messages() {
        let mut scan = AnswerScan::new(true, Some(2));
        let stream = concat!(
            ": a comment\n",
            "data:\n\n",
            "event: message\n",
            "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n",
            "data: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"other\":true}}\n\n",
            "data: {\"jsonrpc\":\"2.0\",\n",
            "data:  \"id\":2,\"result\":{\"é\":1}}\r\n\r\n",
        );
        let mut found = None;
        // Byte by byte, so lines, events and a two-byte character are all split.
        for b in stream.as_bytes() {
            assert!(found.is_none(), "found before the end: {found:?}");
            found = scan.push(std::slice::from_ref(b));
        }
        assert_eq!(found, Some(McpAnswer::Result(json!({"é": 1}))));
    }

    #[test]
    fn an_sse_event_cut_off_by_the_end_of_the_body_still_counts() {
        let mut scan = AnswerScan::new(true, Some(1));
        assert_eq!(
            scan.push(b"data: {\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32603,\"message\":\"boom\"}}"),
            None
        );
        assert_eq!(
            scan.finish(),
            Some(McpAnswer::Error(RpcError {
                code: -32603,
                message: "boom".to_owned(),
                data: None,
            }))
        );
    }

    #[test]
    fn revisions_from_2026_07_28_have_no_handshake() {
        assert!(!is_discover_revision("2025-11-25"));
        assert!(!is_discover_revision("2024-11-05"));
        assert!(is_discover_revision("2026-07-28"));
        assert!(is_discover_revision("2027-01-01"));
        assert!(!is_discover_revision("draft"));
        assert!(!is_discover_revision("zzzz-zz-zz"));
        let refusal = |supported: Value| RpcError {
            code: MCP_UNSUPPORTED_PROTOCOL_VERSION,
            message: String::new(),
            data: Some(json!({ "supported": supported })),
        };
        assert_eq!(
            refusal(json!(["2027-03-01", "2026-07-28"])).discover_revision(),
            Some("2026-07-28".to_owned())
        );
        assert_eq!(
            refusal(json!(["2027-03-01", "2028-01-01"])).discover_revision(),
            Some("2028-01-01".to_owned())
        );
        assert_eq!(refusal(json!(["2025-11-25"])).discover_revision(), None);
    }
}
