//! The web CRM at `/crm`: what the business sees of its calls, contacts, leads and WhatsApp
//! threads, and the queues behind them. Served by `callkeeper serve` and by the `crm` function
//! behind the same HTTP API in AWS: one router.
//!
//! Server-rendered HTML in the agent's language; a little JavaScript for local times, the live
//! calls' refresh and the recordings. Nobody reads a page without signing in
//! ([`session`], [`limiter`]); every form carries the session's CSRF token.

mod dates;
pub mod leads;
pub mod limiter;
mod pages;
pub mod render;
pub mod session;
mod sign_in;
pub mod verifier;
mod whatsapp;

use crate::webhook::AppState;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use callkeeper_core::store::StoreError;
use callkeeper_core::time::now_ms;
use callkeeper_core::twilio_rest::TwilioRest;
use std::sync::Arc;

pub use callkeeper_core::routes::{CRM_BASE as BASE, CRM_BLOB_PATH as BLOB_PATH};

#[derive(Clone)]
pub struct CrmState {
    pub app: AppState,
    pub keys: session::Keys,
    pub pages: Arc<render::Pages>,
    pub limiter: Arc<limiter::Limiter>,
    pub verifiers: Arc<verifier::Verifiers>,
    pub twilio: TwilioRest,
}

impl CrmState {
    /// A redirect to a link that works for a few minutes to the blob at `key` (a recording, a
    /// message's media): S3's presigned URL in AWS, our own signed route on the embedded store.
    pub async fn blob_redirect(&self, key: &str) -> Result<Response, CrmError> {
        let link = match self.app.stores.blobs.presigned_url(key, session::LINK_LIFETIME).await? {
            Some(url) => url,
            None => self.keys.blob_link(key, now_ms() + session::LINK_LIFETIME.as_millis() as i64),
        };
        Ok(Redirect::to(&link).into_response())
    }

    pub fn new(app: AppState) -> CrmState {
        CrmState {
            keys: session::Keys::derive(&app.config.stream_token_secret),
            pages: Arc::new(render::Pages::new(&app.config.language, &app.config.crm_time_zone)),
            limiter: Arc::default(),
            verifiers: Arc::new(verifier::Verifiers::start()),
            twilio: app.config.twilio_rest(),
            app,
        }
    }
}

/// Every page of the CRM.
pub fn routes(state: AppState) -> Router {
    let state = CrmState::new(state);
    Router::new()
        .route(BASE, get(|| async { Redirect::to("/crm/now") }))
        .route("/crm/", get(|| async { Redirect::to("/crm/now") }))
        .route("/crm/assets/crm.css", get(|| async { asset("text/css; charset=utf-8", render::CSS) }))
        .route("/crm/assets/crm.js", get(|| async { asset("text/javascript; charset=utf-8", render::JS) }))
        .route("/crm/sign-in", get(sign_in::form).post(sign_in::submit))
        .route("/crm/sign-out", post(sign_in::sign_out))
        .route("/crm/now", get(pages::now))
        .route("/crm/calls", get(pages::calls))
        .route("/crm/calls/{call_sid}", get(pages::call))
        .route("/crm/calls/{call_sid}/recordings/{recording_sid}", get(pages::listen))
        .route("/crm/calls/{call_sid}/recordings/{recording_sid}/played", post(pages::played))
        .route(BLOB_PATH, get(pages::audio))
        .route("/crm/contacts", get(pages::find_contact))
        .route("/crm/contacts/{phone}", get(pages::contact))
        .route("/crm/leads", get(pages::leads))
        .route("/crm/leads.csv", get(pages::leads_csv))
        .route("/crm/whatsapp", get(whatsapp::threads))
        .route("/crm/whatsapp/{phone}", get(whatsapp::thread).post(whatsapp::reply))
        .route("/crm/whatsapp/{phone}/media/{message_sid}/{index}", get(whatsapp::media))
        .route("/crm/operations", get(pages::operations))
        .route("/crm/operations/redrive", post(pages::redrive))
        .with_state(state)
}

/// The stylesheet and the script: the same for every user, so cached for a day.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=86400")], body).into_response()
}

/// A signed-in user, read from the session cookie and checked against the store on every
/// request. A request without one is sent to the sign-in page.
pub struct Viewer {
    pub session: session::Session,
    pub csrf: String,
}

impl Viewer {
    pub fn name(&self) -> &str {
        self.session.user.as_str()
    }

    /// A form's CSRF token must be this session's: a page of another site cannot post here.
    pub fn check_csrf(&self, state: &CrmState, token: Option<&str>) -> Result<(), CrmError> {
        match token {
            Some(token) if state.keys.csrf_ok(&self.session, token) => Ok(()),
            _ => Err(CrmError::Forbidden),
        }
    }
}

impl FromRequestParts<CrmState> for Viewer {
    type Rejection = CrmError;

    async fn from_request_parts(parts: &mut Parts, state: &CrmState) -> Result<Viewer, CrmError> {
        let Some(session) = cookie(&parts.headers, session::COOKIE).and_then(|v| state.keys.read(v, now_ms())) else {
            return Err(CrmError::SignIn);
        };
        match state.app.stores.calls.user(&session.user).await? {
            Some(user) if state.keys.still_valid(&session, &user) => {
                let csrf = state.keys.csrf_token(&session);
                Ok(Viewer { session, csrf })
            }
            _ => Err(CrmError::SignIn),
        }
    }
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// Where a request comes from, for the sign-in limit: the client API Gateway saw; under
/// `serve`, the peer of the connection, or with `trusted_hops` proxies in front (ngrok, a load
/// balancer), the address the outermost of them saw. Each proxy appends the address it was
/// called from to `X-Forwarded-For`, so that is the `trusted_hops`-th entry from the right,
/// counting the peer; entries further left are the client's own writing and never believed.
pub fn client_address(request: &Request, trusted_hops: usize) -> String {
    use lambda_http::request::RequestContext;
    if let Some(RequestContext::ApiGatewayV2(context)) = request.extensions().get::<RequestContext>() {
        if let Some(ip) = &context.http.source_ip {
            return ip.clone();
        }
    }
    let peer = match request.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>() {
        Some(axum::extract::ConnectInfo(peer)) => peer.ip().to_string(),
        None => "unknown".into(),
    };
    let forwarded: Vec<&str> = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    if trusted_hops == 0 {
        if !forwarded.is_empty() {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::warn!(
                    "CRM requests carry X-Forwarded-For: if a proxy (ngrok, a load balancer) is in front of callkeeper, set \
                     TRUSTED_PROXY_HOPS, or every visitor shares the proxy's sign-in limit"
                )
            });
        }
        return peer;
    }
    // [client's own entries…, what each proxy saw…, the peer]: a proxy that was bypassed or
    // wrote nothing leaves fewer entries, and the leftmost one there is is taken.
    let chain: Vec<&str> = forwarded.into_iter().chain(std::iter::once(peer.as_str())).collect();
    let at = chain.len().saturating_sub(trusted_hops + 1);
    match chain[at].parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_string(),
        // Not an address: a proxy that writes something else is not one to trust.
        Err(_) => peer,
    }
}

/// Why a page was not shown.
#[derive(Debug, thiserror::Error)]
pub enum CrmError {
    #[error("sign in first")]
    SignIn,
    #[error("refused: the form's token is missing or not this session's")]
    Forbidden,
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IntoResponse for CrmError {
    fn into_response(self) -> Response {
        match self {
            CrmError::SignIn => Redirect::to("/crm/sign-in").into_response(),
            CrmError::Forbidden => plain(StatusCode::FORBIDDEN, "forbidden: the form's CSRF token is missing or not this session's"),
            CrmError::NotFound => plain(StatusCode::NOT_FOUND, "not found"),
            CrmError::BadRequest(reason) => plain(StatusCode::BAD_REQUEST, &reason),
            CrmError::Store(e) => {
                tracing::error!(error = %e, "a CRM page's store read failed");
                plain(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable, try again in a moment")
            }
        }
    }
}

fn plain(status: StatusCode, text: &str) -> Response {
    let mut response = (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{text}\n")).into_response();
    render::secure_headers(response.headers_mut());
    response
}

#[cfg(test)]
mod tests {
    use super::client_address;
    use axum::extract::{ConnectInfo, Request};

    fn request(forwarded: &[&str]) -> Request {
        let mut builder = Request::builder().uri("/crm/sign-in");
        for value in forwarded {
            builder = builder.header("x-forwarded-for", *value);
        }
        let mut request = builder.body(axum::body::Body::empty()).unwrap();
        request.extensions_mut().insert(ConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 5000))));
        request
    }

    #[test]
    fn the_address_is_the_one_the_outermost_trusted_proxy_saw() {
        assert_eq!(client_address(&request(&["203.0.113.7"]), 0), "127.0.0.1", "no proxy trusted: the peer");
        assert_eq!(client_address(&request(&["203.0.113.7"]), 1), "203.0.113.7");
        assert_eq!(client_address(&request(&["6.6.6.6, 203.0.113.7"]), 1), "203.0.113.7", "the client's own entry is not believed");
        assert_eq!(client_address(&request(&["6.6.6.6", "203.0.113.7"]), 1), "203.0.113.7", "over two header lines");
        assert_eq!(client_address(&request(&["6.6.6.6, 203.0.113.7, 10.0.0.2"]), 2), "203.0.113.7", "two proxies");
        assert_eq!(client_address(&request(&[]), 1), "127.0.0.1", "a proxy bypassed: the peer");
        assert_eq!(client_address(&request(&["203.0.113.7"]), 3), "203.0.113.7", "fewer entries than hops: the leftmost");
        assert_eq!(client_address(&request(&["not an address"]), 1), "127.0.0.1");
    }
}
