//! The web CRM at `/crm`: what the business sees of its calls, contacts, leads and WhatsApp
//! threads, and the queues behind them. Served by `callkeeper serve` and by the `crm` function
//! behind the same HTTP API in AWS: one router.
//!
//! Server-rendered HTML in the agent's language; a little JavaScript for local times, the live
//! calls' refresh and the recordings. Nobody reads a page without signing in
//! ([`session`], [`limiter`]); every form carries the session's CSRF token.

pub mod leads;
pub mod limiter;
mod pages;
pub mod render;
pub mod session;
mod sign_in;
mod whatsapp;

use crate::app::AppState;
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

pub const BASE: &str = "/crm";
/// Where a recording's or a message's media's signed link points on the embedded store.
pub const BLOB_PATH: &str = "/crm/blob";

#[derive(Clone)]
pub struct CrmState {
    pub app: AppState,
    pub keys: session::Keys,
    pub pages: Arc<render::Pages>,
    pub limiter: Arc<limiter::Limiter>,
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
            pages: Arc::new(render::Pages::new(&app.config.language)),
            limiter: Arc::default(),
            twilio: TwilioRest::from_config(&app.config),
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

/// Where a request comes from, for the sign-in limit: the client API Gateway saw, or the peer
/// of the connection under `serve`. Never a header the client writes.
pub fn client_address(request: &Request) -> String {
    use lambda_http::request::RequestContext;
    if let Some(RequestContext::ApiGatewayV2(context)) = request.extensions().get::<RequestContext>() {
        if let Some(ip) = &context.http.source_ip {
            return ip.clone();
        }
    }
    match request.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>() {
        Some(axum::extract::ConnectInfo(peer)) => peer.ip().to_string(),
        None => "unknown".into(),
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
