//! The model's WebSocket: opened and configured within the connect timeout, then events in and
//! out. Every way it can fail is an `AgentError` with a reason for the log.

use super::protocol::{self, ServerEvent, PCMU};
use crate::agent::AgentError;
use crate::trace::Tracer;
use callkeeper_core::config::RealtimeSettings;
use callkeeper_core::secrets::Secret;
use callkeeper_core::trace::{Direction, Peer};
use futures_util::{SinkExt, StreamExt};

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The largest event we accept from the model: audio deltas are a few KiB.
const MAX_MESSAGE: usize = 4 << 20;
/// The socket's read buffer: an audio delta's frame (100 ms of μ-law is ~1.2 KB of JSON) at a
/// time; it grows for a larger one. Tungstenite's default (128 KiB) would be most of a call's
/// memory.
const READ_BUFFER: usize = 2048;

pub struct Connection {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Every event either way, when the call is traced.
    tracer: Tracer,
}

pub(super) fn unavailable(message: impl Into<String>) -> AgentError {
    AgentError::Unavailable(message.into())
}

/// A session whose audio is not μ-law both ways would be heard as loud static.
pub fn check_formats(input: Option<&str>, output: Option<&str>) -> Result<(), AgentError> {
    if input == Some(PCMU) && output == Some(PCMU) {
        Ok(())
    } else {
        Err(AgentError::Refused(format!(
            "the model's session is not μ-law both ways (input {}, output {})",
            input.unwrap_or("unset"),
            output.unwrap_or("unset")
        )))
    }
}

impl Connection {
    /// Connects, sends `update` and waits for its echo, all within the connect timeout.
    pub async fn open(settings: &RealtimeSettings, key: &Secret, update: String, tracer: Tracer) -> Result<Connection, AgentError> {
        let opening = async {
            let url = format!("{}?model={}", settings.url, settings.model);
            let mut request = url.as_str().into_client_request().map_err(|e| unavailable(format!("bad Realtime URL: {e}")))?;
            let bearer = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                .map_err(|_| unavailable("the OpenAI key is not a header value"))?;
            request.headers_mut().insert("authorization", bearer);
            let config = WebSocketConfig::default()
                .read_buffer_size(READ_BUFFER)
                .max_message_size(Some(MAX_MESSAGE))
                .max_frame_size(Some(MAX_MESSAGE));
            let (socket, _) = tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, Some(crate::tls::connector()))
                .await
                .map_err(|e| {
                    let message = format!("the model refused the connection: {e}");
                    // The key, the account or the URL: another try would be refused the same way.
                    match &e {
                        WsError::Http(response) if [401, 403, 404].contains(&response.status().as_u16()) => AgentError::Refused(message),
                        _ => unavailable(message),
                    }
                })?;
            let mut connection = Connection { socket, tracer };
            connection.send(update).await?;
            loop {
                match connection.next().await? {
                    ServerEvent::SessionUpdated { input, output } => {
                        check_formats(input.as_deref(), output.as_deref())?;
                        return Ok(connection);
                    }
                    error @ ServerEvent::Error { .. } => {
                        let message = format!("the model refused the session: {error:?}");
                        return Err(if error.is_fatal_error() { AgentError::Refused(message) } else { unavailable(message) });
                    }
                    _ => {}
                }
            }
        };
        match tokio::time::timeout(settings.connect_timeout, opening).await {
            Ok(result) => result,
            Err(_) => Err(unavailable(format!("no model session within {:?}", settings.connect_timeout))),
        }
    }

    /// Ends the session with a close frame.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }

    pub async fn send(&mut self, event: String) -> Result<(), AgentError> {
        self.send_all(std::iter::once(event)).await
    }

    /// Sends events in one write.
    pub async fn send_all(&mut self, events: impl Iterator<Item = String>) -> Result<(), AgentError> {
        let failed = |e: WsError| unavailable(format!("the model's socket failed: {e}"));
        for event in events {
            self.tracer.text(Peer::OpenAi, Direction::Out, &event);
            self.socket.feed(Message::text(event)).await.map_err(failed)?;
        }
        self.socket.flush().await.map_err(failed)
    }

    /// The next event the model sends; frames that are not events are skipped and logged.
    pub async fn next(&mut self) -> Result<ServerEvent, AgentError> {
        loop {
            let message = match self.socket.next().await {
                None | Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => {
                    return Err(unavailable("the model's socket closed without a close frame"))
                }
                Some(Err(e)) => return Err(unavailable(format!("the model's socket failed: {e}"))),
                Some(Ok(message)) => message,
            };
            match message {
                Message::Text(text) => {
                    self.tracer.text(Peer::OpenAi, Direction::In, text.as_str());
                    match protocol::parse(text.as_str()) {
                        Ok(event) => return Ok(event),
                        Err(e) => tracing::warn!(error = e, "model event skipped"),
                    }
                }
                Message::Close(frame) => {
                    let why = frame.map(|f| format!("{} {}", u16::from(f.code), f.reason)).unwrap_or_else(|| "no reason".into());
                    return Err(unavailable(format!("the model closed the session: {why}")));
                }
                _ => {}
            }
        }
    }
}
