//! The short way of a `tools/call` to a backend: posted on the gateway's session with it
//! by the handler's own task, and its answer read from the reply, without going through
//! rmcp's client session. That session is one event loop per backend, so every client's
//! call to a server went through it and its channels (five task hops a call); under
//! load that loop was the gateway's bottleneck (BENCHMARKS.md, "The MCP gateway").
//!
//! Only for a backend on a revision with sessions (up to 2025-11-25), whose requests need
//! nothing but the session id and the revision header; a backend on 2026-07-28 is called
//! through its rmcp session, which adds that revision's request headers. The request ids
//! are far from the ones rmcp's session numbers its own requests with, so the two never
//! meet in the backend's bookkeeping.
//!
//! A failure before the request reached the backend is reported as rmcp's session would
//! report it (`service::never_delivered`, `service::session_expired` read both alike);
//! anything after, including an answer stream that broke off and could not be resumed,
//! is a call that may have run.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use super::http::{BackendHttp, BackendHttpError, Events, Headers};
use super::progress::Progress;
use futures::StreamExt;
use rmcp::ServiceError;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, CancelledNotification,
    CancelledNotificationParam, ClientJsonRpcMessage, ClientNotification, ClientRequest,
    ClientResult, EmptyResult, ErrorCode, ErrorData, NumberOrString, ServerJsonRpcMessage,
    ServerNotification, ServerRequest, ServerResult,
};
use rmcp::transport::DynamicTransportError;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
};

/// Where the ids of the gateway's own requests start (rmcp's session counts from 0).
const FIRST_ID: i64 = 1 << 40;
/// How often an answer stream that ended without the answer is resumed.
const RESUMES: usize = 3;
/// How long the end of an answer stream is waited for after the answer.
const FINISH_WAIT: Duration = Duration::from_secs(1);
/// The longest wait before a resumption a server may ask for (its `retry`).
const MAX_RESUME_WAIT: Duration = Duration::from_secs(1);

/// How to post to one backend session.
pub struct Direct {
    session: Arc<Session>,
    next_id: AtomicI64,
}

/// What a message to the backend session needs.
struct Session {
    http: BackendHttp,
    uri: Arc<str>,
    id: Option<Arc<str>>,
    /// `mcp-protocol-version`, as the session's revision.
    headers: Headers,
}

impl Session {
    async fn post(
        &self,
        message: ClientJsonRpcMessage,
    ) -> Result<StreamableHttpPostResponse, Failure> {
        self.http
            .post_message(
                self.uri.clone(),
                message,
                self.id.clone(),
                None,
                self.headers.clone(),
            )
            .await
    }
}

type Failure = StreamableHttpError<BackendHttpError>;

impl Direct {
    /// Posting to the session `session` (none for a backend without sessions) at `uri`,
    /// on `protocol_version`; `None` for a revision that needs more than that.
    pub fn new(
        http: BackendHttp,
        uri: &str,
        session: Option<Arc<str>>,
        protocol_version: &rmcp::model::ProtocolVersion,
    ) -> Option<Direct> {
        if !protocol_version.has_initialize() {
            return None;
        }
        Some(Direct {
            session: Arc::new(Session {
                http,
                uri: uri.into(),
                id: session,
                headers: super::http::revision_header(protocol_version.as_str())?,
            }),
            next_id: AtomicI64::new(FIRST_ID),
        })
    }

    /// Calls the tool `params` names, as `Peer::call_tool_once` would; the call's
    /// progress (under the client's token, which `params` carries) goes to `progress`.
    pub async fn call_tool(
        &self,
        params: CallToolRequestParams,
        progress: Option<&Progress>,
    ) -> Result<CallToolResponse, ServiceError> {
        let id = NumberOrString::Number(self.next_id.fetch_add(1, Ordering::Relaxed));
        let request = ClientJsonRpcMessage::request(
            ClientRequest::CallToolRequest(CallToolRequest::new(params)),
            id.clone(),
        );
        let posted = self
            .session
            .post(request)
            .await
            .map_err(transport_failure)?;
        // Delivered: from here a caller that gives up (its client cancelled, or went away)
        // has the backend told, as rmcp's session tells it.
        let abandoned = Abandoned(Some((self.session.clone(), id.clone())));
        let answer = match posted {
            StreamableHttpPostResponse::Json(message, _) => Some(message),
            StreamableHttpPostResponse::Sse(stream, _) => self.read(stream, &id, progress).await?,
            _ => None,
        };
        abandoned.disarm();
        match answer {
            Some(ServerJsonRpcMessage::Response(r)) if r.id == id => match r.result {
                ServerResult::CallToolResult(result) => Ok(CallToolResponse::Complete(result)),
                ServerResult::InputRequiredResult(result) => {
                    Ok(CallToolResponse::InputRequired(result))
                }
                ServerResult::CreateTaskResult(result) => Ok(CallToolResponse::Task(result)),
                _ => Err(ServiceError::UnexpectedResponse),
            },
            Some(ServerJsonRpcMessage::Error(e)) => Err(ServiceError::McpError(e.error)),
            _ => Err(ServiceError::UnexpectedResponse),
        }
    }

    /// Reads `stream` (and its resumptions) up to the answer to `id`, passing the call's
    /// progress on to `progress`; `None` when it ended without an answer.
    async fn read(
        &self,
        mut stream: Events,
        id: &NumberOrString,
        progress: Option<&Progress>,
    ) -> Result<Option<ServerJsonRpcMessage>, ServiceError> {
        let mut last_event = None;
        let mut wait = Duration::ZERO;
        for resumed in 0..=RESUMES {
            if resumed > 0 {
                // 2025-11-25 lets a server close the stream of a long call and have the
                // client come back for the rest with the id of the last event it saw.
                let Some(from) = last_event.clone() else {
                    return Ok(None);
                };
                tokio::time::sleep(wait).await;
                let session = &self.session;
                stream = session
                    .http
                    .get_stream(
                        session.uri.clone(),
                        session.id.clone(),
                        Some(from),
                        None,
                        session.headers.clone(),
                    )
                    .await
                    .map_err(|e| broke_off(&e))?;
            }
            while let Some(event) = stream.next().await {
                let event = event.map_err(|e| broke_off(&e))?;
                if event.id.is_some() {
                    last_event = event.id;
                }
                if let Some(ms) = event.retry {
                    wait = Duration::from_millis(ms).min(MAX_RESUME_WAIT);
                }
                let Some(data) = event.data.filter(|d| !d.trim().is_empty()) else {
                    continue;
                };
                match serde_json::from_str::<ServerJsonRpcMessage>(&data) {
                    Ok(ServerJsonRpcMessage::Response(r)) if r.id == *id => {
                        finish(stream);
                        return Ok(Some(ServerJsonRpcMessage::Response(r)));
                    }
                    Ok(ServerJsonRpcMessage::Error(e)) if e.id.as_ref() == Some(id) => {
                        finish(stream);
                        return Ok(Some(ServerJsonRpcMessage::Error(e)));
                    }
                    Ok(ServerJsonRpcMessage::Request(r)) => self.answer(r.id, &r.request).await,
                    Ok(ServerJsonRpcMessage::Notification(n)) => {
                        if let ServerNotification::ProgressNotification(p) = n.notification
                            && let Some(progress) = progress
                            && p.params.progress_token == *progress.token()
                        {
                            progress.forward(p.params).await;
                        }
                    }
                    // Other notifications of the call are the gateway's to drop, as its
                    // rmcp session does.
                    _ => {}
                }
            }
        }
        Ok(None)
    }

    /// Answers a request the backend sent in the middle of a call: a ping with an empty
    /// result, anything else (the gateway offers backends no capability) as unknown.
    async fn answer(&self, id: NumberOrString, request: &ServerRequest) {
        let reply = match request {
            ServerRequest::PingRequest(_) => {
                ClientJsonRpcMessage::response(ClientResult::EmptyResult(EmptyResult {}), id)
            }
            _ => ClientJsonRpcMessage::error(
                ErrorData::new(
                    ErrorCode::METHOD_NOT_FOUND,
                    "the gateway offers its backends no client capability",
                    None,
                ),
                Some(id),
            ),
        };
        if let Err(e) = self.session.post(reply).await {
            tracing::debug!(error = %e, "cannot answer a backend's request");
        }
    }
}

/// A delivered call its caller gave up on before the answer: the backend gets
/// `notifications/cancelled` for it.
struct Abandoned(Option<(Arc<Session>, NumberOrString)>);

impl Abandoned {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        let Some((session, id)) = self.0.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let cancelled =
            ClientJsonRpcMessage::notification(ClientNotification::CancelledNotification(
                CancelledNotification::new(CancelledNotificationParam::new(
                    Some(id),
                    Some("the client gave the call up".into()),
                )),
            ));
        runtime.spawn(async move {
            if let Err(e) = session.post(cancelled).await {
                tracing::debug!(error = %e, "cannot tell a backend a call was given up");
            }
        });
    }
}

/// Reads what is left of an answer stream (its end follows the answer at once), so its
/// connection goes back to the pool instead of being closed; a stream a server keeps
/// open is given up after [`FINISH_WAIT`].
fn finish(mut stream: Events) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(FINISH_WAIT, async {
            while stream.next().await.is_some() {}
        })
        .await;
    });
}

/// A transport failure, in the form rmcp's session reports one.
fn transport_failure(e: Failure) -> ServiceError {
    ServiceError::TransportSend(DynamicTransportError::from_parts(
        "gateway",
        std::any::TypeId::of::<Direct>(),
        Box::new(e),
    ))
}

/// The answer stream of a delivered request broke off: never a request that was not
/// delivered, whatever the cause (a refused resumption included).
fn broke_off(e: &dyn std::fmt::Display) -> ServiceError {
    transport_failure(Failure::UnexpectedServerResponse(
        format!("the answer stream broke off: {e}").into(),
    ))
}
