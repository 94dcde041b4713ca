//! Signing in and out. A wrong name and a wrong password look alike, and cost alike: an unknown
//! name is checked against a hash no password matches, so timing does not tell which names
//! exist. Signing out ends every session of the user, not only this cookie.

use super::limiter::Attempt;
use super::session::{self, random_hex};
use super::verifier::Busy;
use super::{client_address, cookie, CrmError, CrmState, Viewer};
use axum::extract::{Form, FromRequest, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use callkeeper_core::time::now_ms;
use callkeeper_core::users::UserName;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
pub struct SignIn {
    name: String,
    password: String,
    token: String,
}

pub async fn form(State(state): State<CrmState>) -> Response {
    page(&state, StatusCode::OK, None)
}

/// The form, with a fresh nonce in its cookie and the token bound to it.
fn page(state: &CrmState, status: StatusCode, problem: Option<&str>) -> Response {
    let nonce = random_hex(16);
    let token = state.keys.sign_in_token(&nonce);
    let mut response =
        state.pages.render("sign_in.html", status, json!({ "title": state.pages.word("sign_in"), "token": token, "problem": problem }));
    set_cookie(&mut response, &format!("{}={nonce}; Path=/crm; HttpOnly; Secure; SameSite=Strict; Max-Age=3600", session::SIGN_IN_COOKIE));
    response
}

/// Longest name or password a sign-in form may carry: names are at most 64 bytes
/// ([`UserName`]), and no password needs more than this. Longer ones are refused before they
/// are counted, checked or logged.
const MAX_NAME_BYTES: usize = 64;
const MAX_PASSWORD_BYTES: usize = 1024;

pub async fn submit(State(state): State<CrmState>, request: Request) -> Result<Response, CrmError> {
    let address = client_address(&request, state.app.config.trusted_proxy_hops);
    let nonce = cookie(request.headers(), session::SIGN_IN_COOKIE).unwrap_or("").to_string();
    let Form(form) = Form::<SignIn>::from_request(request, &state)
        .await
        .map_err(|e| CrmError::BadRequest(format!("the sign-in form is incomplete: {e}")))?;
    if !state.keys.sign_in_ok(&nonce, &form.token) {
        return Err(CrmError::Forbidden);
    }
    let name = form.name.trim().to_lowercase();
    if name.len() > MAX_NAME_BYTES || form.password.len() > MAX_PASSWORD_BYTES {
        return Err(CrmError::BadRequest(format!(
            "a user name is at most {MAX_NAME_BYTES} bytes and a password at most {MAX_PASSWORD_BYTES}"
        )));
    }
    let attempt = Attempt::new(&name, &address);
    let now = now_ms();
    // Counted before the check, so a burst of guesses is held to the limit as it arrives.
    if let Err(wait) = state.limiter.reserve(&attempt, now) {
        // The name is the visitor's writing: logged escaped (`?`), so it cannot forge a line.
        tracing::warn!(user = ?name, %address, wait_secs = wait.as_secs(), "sign-in refused: too many failures");
        let mut response = page(&state, StatusCode::TOO_MANY_REQUESTS, Some(state.pages.word("too_many")));
        set_header(&mut response, header::RETRY_AFTER, &wait.as_secs().max(1).to_string());
        return Ok(response);
    }
    let user = match UserName::parse(&name) {
        Ok(name) => state.app.stores.calls.user(&name).await?,
        Err(_) => None,
    };
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let right = match state.verifiers.verify(hash, form.password).await {
        Ok(right) => right,
        Err(Busy) => {
            // Not the visitor's failure: the attempt is given back.
            state.limiter.not_checked(&attempt);
            tracing::warn!(user = ?name, %address, "sign-in refused: too many password checks under way");
            let mut response = page(&state, StatusCode::SERVICE_UNAVAILABLE, Some(state.pages.word("busy")));
            set_header(&mut response, header::RETRY_AFTER, "1");
            return Ok(response);
        }
    };
    let Some(user) = user.filter(|_| right) else {
        tracing::warn!(user = ?name, %address, "sign-in failed");
        return Ok(page(&state, StatusCode::UNAUTHORIZED, Some(state.pages.word("wrong_password"))));
    };
    state.limiter.succeeded(&attempt);
    tracing::info!(user = %user.name.as_str(), %address, "signed in");
    let session = state.keys.open(&user, now);
    let mut response = Redirect::to("/crm/now").into_response();
    set_cookie(
        &mut response,
        &format!(
            "{}={}; Path=/crm; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
            session::COOKIE,
            state.keys.cookie_value(&session),
            session::LIFETIME.as_secs()
        ),
    );
    set_cookie(&mut response, &format!("{}=; Path=/crm; HttpOnly; Secure; SameSite=Strict; Max-Age=0", session::SIGN_IN_COOKIE));
    Ok(response)
}

#[derive(Deserialize)]
pub struct SignOut {
    csrf: Option<String>,
}

pub async fn sign_out(State(state): State<CrmState>, viewer: Viewer, Form(form): Form<SignOut>) -> Result<Response, CrmError> {
    viewer.check_csrf(&state, form.csrf.as_deref())?;
    // Every session of the user ends, this cookie's and any copy of it.
    state.app.stores.calls.end_sessions(&viewer.session.user, now_ms()).await?;
    tracing::info!(user = %viewer.name(), "signed out");
    let mut response = Redirect::to("/crm/sign-in").into_response();
    set_cookie(&mut response, &format!("{}=; Path=/crm; HttpOnly; Secure; SameSite=Strict; Max-Age=0", session::COOKIE));
    Ok(response)
}

fn set_cookie(response: &mut Response, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

fn set_header(response: &mut Response, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}
