//! Signing in and out. A wrong name and a wrong password look alike, and cost alike: an unknown
//! name is checked against a dummy hash, so timing does not tell which names exist.

use super::session::{self, random_hex};
use super::{client_address, cookie, CrmError, CrmState, Viewer};
use axum::extract::{Form, FromRequest, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use callkeeper_core::time::now_ms;
use callkeeper_core::users::{verify_password, UserName};
use serde::Deserialize;
use serde_json::json;
use std::sync::OnceLock;

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

pub async fn submit(State(state): State<CrmState>, request: Request) -> Result<Response, CrmError> {
    let address = client_address(&request);
    let nonce = cookie(request.headers(), session::SIGN_IN_COOKIE).unwrap_or("").to_string();
    let Form(form) = Form::<SignIn>::from_request(request, &state)
        .await
        .map_err(|e| CrmError::BadRequest(format!("the sign-in form is incomplete: {e}")))?;
    if !state.keys.sign_in_ok(&nonce, &form.token) {
        return Err(CrmError::Forbidden);
    }
    let name = form.name.trim().to_lowercase();
    let keys = [format!("name:{name}"), format!("addr:{address}")];
    let now = now_ms();
    if let Err(wait) = state.limiter.check(&keys, now) {
        tracing::warn!(user = %name, %address, wait_secs = wait.as_secs(), "sign-in refused: too many failures");
        let mut response = page(&state, StatusCode::TOO_MANY_REQUESTS, Some(state.pages.word("too_many")));
        set_header(&mut response, header::RETRY_AFTER, &wait.as_secs().max(1).to_string());
        return Ok(response);
    }
    let user = match UserName::parse(&name) {
        Ok(name) => state.app.stores.calls.user(&name).await?,
        Err(_) => None,
    };
    let hash = user.as_ref().map_or_else(|| dummy_hash().as_str(), |u| u.password_hash.as_str()).to_string();
    let password = form.password;
    // Argon2id takes tens of milliseconds of CPU: off the async workers.
    let right = tokio::task::spawn_blocking(move || verify_password(&hash, &password)).await.unwrap_or(false);
    let Some(user) = user.filter(|_| right) else {
        state.limiter.failed(&keys, now);
        tracing::warn!(user = %name, %address, "sign-in failed");
        return Ok(page(&state, StatusCode::UNAUTHORIZED, Some(state.pages.word("wrong_password"))));
    };
    state.limiter.succeeded(&keys[0]);
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
    let mut response = Redirect::to("/crm/sign-in").into_response();
    set_cookie(&mut response, &format!("{}=; Path=/crm; HttpOnly; Secure; SameSite=Strict; Max-Age=0", session::COOKIE));
    Ok(response)
}

/// A hash no password matches, made once, so an unknown name costs what a known one does.
fn dummy_hash() -> &'static String {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| callkeeper_core::users::hash_password(&random_hex(16)).expect("a random password hashes"))
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
