//! The HTTP probe judges `GET {endpoint}` by the standard: 200 with `status: healthy` is a
//! success, `degraded` keeps a server degraded, and a 503, any other status, a timeout, a
//! refused connection or a body that is not the standard is a failure with its reason.
//! The chora-base spellings `ok` (healthy) and `down` (unhealthy) are accepted too.

use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CONNECTION, HOST};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use super::{ProbeOutcome, Prober, describe};

/// The standard's body. Unknown fields (dependencies, metrics) are allowed.
#[derive(Deserialize)]
struct HealthBody {
    status: String,
    version: Option<String>,
    uptime_seconds: Option<f64>,
}

/// How much of a health answer is read: the standard's body is a few hundred bytes, and a
/// misbehaving server must not make the agent buffer a stream.
const MAX_BODY_BYTES: usize = 64 * 1024;

impl Prober {
    pub(super) async fn http_probe(
        &self,
        addr: std::net::SocketAddr,
        endpoint: &str,
        timeout: Duration,
    ) -> (ProbeOutcome, String, Option<String>, Option<f64>) {
        let (status, body) = match tokio::time::timeout(timeout, get(addr, endpoint)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(why)) => return (ProbeOutcome::Unreachable, why, None, None),
            Err(_) => {
                return (
                    ProbeOutcome::Unreachable,
                    format!("no answer within {:.1}s", timeout.as_secs_f64()),
                    None,
                    None,
                );
            }
        };
        let body = String::from_utf8_lossy(&body);
        let snippet: String = body.chars().take(200).collect();
        let parsed: Option<HealthBody> = serde_json::from_str(&body).ok();
        let (version, uptime) = parsed
            .as_ref()
            .map(|b| (b.version.clone(), b.uptime_seconds))
            .unwrap_or((None, None));
        let outcome = match (status.as_u16(), parsed.as_ref().map(|b| b.status.as_str())) {
            (200, Some("healthy" | "ok")) => ProbeOutcome::Healthy,
            (200, Some("degraded")) => ProbeOutcome::Degraded,
            (200, Some(other)) if other == "unhealthy" || other == "down" => {
                ProbeOutcome::Unhealthy
            }
            (200, Some(other)) => {
                return (
                    ProbeOutcome::Unhealthy,
                    format!("HTTP 200 with unknown status `{other}`"),
                    version,
                    uptime,
                );
            }
            (200, None) => {
                return (
                    ProbeOutcome::Unhealthy,
                    format!("HTTP 200 but the body is not the health standard: {snippet}"),
                    None,
                    None,
                );
            }
            _ => ProbeOutcome::Unhealthy,
        };
        (
            outcome,
            format!("HTTP {}: {snippet}", status.as_u16()),
            version,
            uptime,
        )
    }
}

/// `GET http://{addr}{endpoint}` on a connection of its own, driven in the
/// calling task. A pooled client (reqwest) spawns a task per connection and hands every
/// request across tasks; at a thousand servers those wake-ups were most of the monitor's
/// CPU. One connection per probe costs a loopback handshake, and is the same whether or
/// not the server keeps connections alive. `connection: close` lets the server close
/// first, so the closed sockets wait out TIME_WAIT on its side, not ours.
///
/// An error says why there is no answer to judge.
async fn get(
    addr: std::net::SocketAddr,
    endpoint: &str,
) -> Result<(hyper::StatusCode, Bytes), String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| describe(&e))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| describe(&e))?;
    let request = hyper::Request::get(endpoint)
        .header(HOST, addr.to_string())
        .header(ACCEPT, "application/json")
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot ask for {endpoint:?}: {e}"))?;
    // The sender is dropped when the exchange ends, which ends the connection too when the
    // server ignored `close`.
    let exchange = async move {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| describe(&e))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    format!("the answer is longer than {} KiB", MAX_BODY_BYTES / 1024)
                } else {
                    describe(&*e)
                }
            })?
            .to_bytes();
        Ok((status, body))
    };
    let (answer, _) = tokio::join!(exchange, connection);
    answer
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use crate::health::probe::{ProbeOutcome, ProbeResult, Prober};
    use crate::manifest::ProbeKind;

    /// A one-shot HTTP server on loopback answering `status` with `body`.
    async fn serve_once(status: &str, body: &str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            // A probe that stops reading early (a body over the limit) closes on us.
            let _ = s.write_all(response.as_bytes()).await;
        });
        port
    }

    async fn http(status: &str, body: &str) -> ProbeResult {
        let port = serve_once(status, body).await;
        Prober::new()
            .probe(
                ProbeKind::Http,
                ([127, 0, 0, 1], port).into(),
                "/health",
                Duration::from_secs(2),
            )
            .await
    }

    #[tokio::test]
    async fn the_standard_body_decides() {
        let r = http(
            "200 OK",
            r#"{"status":"healthy","version":"1.2.0","uptime_seconds":3.5}"#,
        )
        .await;
        assert_eq!(r.outcome, ProbeOutcome::Healthy);
        assert_eq!(r.version.as_deref(), Some("1.2.0"));
        assert_eq!(r.uptime_seconds, Some(3.5));
        assert_eq!(
            http("200 OK", r#"{"status":"degraded"}"#).await.outcome,
            ProbeOutcome::Degraded
        );
        assert_eq!(
            http("200 OK", r#"{"status":"ok"}"#).await.outcome,
            ProbeOutcome::Healthy
        );
        assert_eq!(
            http("200 OK", r#"{"status":"down"}"#).await.outcome,
            ProbeOutcome::Unhealthy
        );
    }

    #[tokio::test]
    async fn a_503_or_a_foreign_body_is_unhealthy_with_its_reason() {
        let r = http("503 Service Unavailable", r#"{"status":"unhealthy"}"#).await;
        assert_eq!(r.outcome, ProbeOutcome::Unhealthy);
        assert!(r.detail.starts_with("HTTP 503"), "{}", r.detail);
        let r = http("200 OK", "<html>hi</html>").await;
        assert_eq!(r.outcome, ProbeOutcome::Unhealthy);
        assert!(r.detail.contains("not the health standard"), "{}", r.detail);
    }

    #[tokio::test]
    async fn an_endless_answer_is_cut_off_with_its_reason() {
        let body = "x".repeat(super::MAX_BODY_BYTES + 1);
        let r = http("200 OK", &body).await;
        assert_eq!(r.outcome, ProbeOutcome::Unreachable);
        assert_eq!(r.detail, "the answer is longer than 64 KiB");
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let r = Prober::new()
            .probe(
                ProbeKind::Http,
                ([127, 0, 0, 1], port).into(),
                "/health",
                Duration::from_secs(1),
            )
            .await;
        assert_eq!(r.outcome, ProbeOutcome::Unreachable);
        assert!(r.detail.to_lowercase().contains("refused"), "{}", r.detail);
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accept and hold the connection without answering.
        let held = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
            drop(s);
        });
        let r = Prober::new()
            .probe(
                ProbeKind::Http,
                ([127, 0, 0, 1], port).into(),
                "/health",
                Duration::from_millis(200),
            )
            .await;
        assert_eq!(r.outcome, ProbeOutcome::Unreachable);
        assert!(r.detail.contains("no answer within 0.2s"), "{}", r.detail);
        held.abort();
    }
}
