//! The extractor every webhook starts with: a form post whose `X-Twilio-Signature` is valid for
//! the public URL Twilio called (`PUBLIC_BASE_URL` + path and query), or a 403.

use crate::webhook::{AppState, WebhookError};
use axum::extract::{FromRequest, Request};
use callkeeper_core::form::Form;
use callkeeper_core::signature::{self, Algorithm, SignedBody, SIGNATURE_HEADER, SIGNATURE_SETTINGS_HEADER};

/// Twilio's posts are a few kilobytes; anything far larger is not Twilio.
pub const MAX_BODY: usize = 64 * 1024;
/// Twilio's posts have a few dozen fields (a WhatsApp message with ten media about sixty);
/// more is refused before the signature is even computed.
pub const MAX_FIELDS: usize = 256;

pub struct SignedForm(pub Form);

impl FromRequest<AppState> for SignedForm {
    type Rejection = WebhookError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let signature = header(SIGNATURE_HEADER).ok_or(WebhookError::Forbidden("missing X-Twilio-Signature"))?.to_string();
        let algorithm = Algorithm::from_settings_header(header(SIGNATURE_SETTINGS_HEADER))
            .ok_or(WebhookError::Forbidden("unsupported signature algorithm"))?;
        let path_and_query = parts.uri.path_and_query().map_or(parts.uri.path(), |pq| pq.as_str());
        let urls = state.config.signed_urls(path_and_query);
        let bytes = axum::body::to_bytes(body, MAX_BODY)
            .await
            .map_err(|_| WebhookError::BadRequest(format!("body larger than {MAX_BODY} bytes")))?;
        let fields = bytes.split(|b| *b == b'&').filter(|field| !field.is_empty()).count();
        if fields > MAX_FIELDS {
            return Err(WebhookError::BadRequest(format!("{fields} form fields; Twilio sends at most {MAX_FIELDS}")));
        }
        let form = Form::parse(&bytes);
        let signed = |key: &[u8]| {
            urls.iter().any(|url| signature::validate(key, algorithm, url.as_str(), SignedBody::Form(form.pairs()), &signature))
        };
        if !state.config.signature_keys().any(signed) {
            tracing::warn!(url = %urls[0], "invalid Twilio signature");
            return Err(WebhookError::Forbidden("invalid X-Twilio-Signature"));
        }
        Ok(SignedForm(form))
    }
}
