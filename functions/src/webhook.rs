//! What every webhook handler shares: the state (configuration and stores), the error a
//! webhook answers with, and the TwiML answer. The router that puts handlers on paths is
//! [`crate::app`]; it stands above the handlers, which stand on this.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use callkeeper_core::config::Config;
use callkeeper_core::store::{StoreError, Stores};
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub stores: Stores,
}

/// Why a webhook did not do its work. Bad input is never a 5xx: Twilio would retry it forever.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// 403: the request is not Twilio's.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 400: a field is missing or malformed; the reason is one line.
    #[error("{0}")]
    BadRequest(String),
    /// 503: the store failed; Twilio retries.
    #[error(transparent)]
    Unavailable(#[from] StoreError),
}

impl From<callkeeper_core::form::FieldError> for WebhookError {
    fn from(e: callkeeper_core::form::FieldError) -> Self {
        WebhookError::BadRequest(e.to_string())
    }
}

impl From<callkeeper_core::phone::InvalidPhone> for WebhookError {
    fn from(e: callkeeper_core::phone::InvalidPhone) -> Self {
        WebhookError::BadRequest(e.to_string())
    }
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        let status = match &self {
            WebhookError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebhookError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebhookError::Unavailable(e) => {
                tracing::error!(error = %e, "store failed; answering 503 so Twilio retries");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        let body = match &self {
            WebhookError::Unavailable(_) => "storage unavailable, retry\n".to_string(),
            other => format!("{other}\n"),
        };
        (status, [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
    }
}

/// A TwiML answer: `text/xml`, with an explicit `Content-Length`.
pub fn twiml_response(doc: callkeeper_core::twiml::Twiml) -> Response {
    let body = doc.into_string();
    (
        StatusCode::OK,
        [
            (axum::http::header::CONTENT_TYPE, callkeeper_core::twiml::CONTENT_TYPE.to_string()),
            (axum::http::header::CONTENT_LENGTH, body.len().to_string()),
        ],
        body,
    )
        .into_response()
}
