//! WhatsApp (and SMS) threads as conversations, and a person's answer from the page: sent
//! through Twilio as the reply worker sends, and only inside WhatsApp's 24-hour window.

use super::pages::urlencode;
use super::session::random_hex;
use super::{CrmError, CrmState, Viewer};
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use callkeeper_core::ids::MessageSid;
use callkeeper_core::message::{Message, MessageDirection, TimelineItem};
use callkeeper_core::phone::E164;
use callkeeper_core::replies::WINDOW_MS;
use callkeeper_core::store::Before;
use callkeeper_core::time::now_ms;
use callkeeper_core::transcript::JobClaim;
use callkeeper_core::twilio_rest::OutboundMessage;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// Recent messages the threads page groups; older threads are on each contact's page.
const SCAN: usize = 1_000;
/// How long a sent form is remembered, so a double submit does not send twice.
const SEND_MARK: Duration = Duration::from_secs(24 * 3600);

fn message_row(m: &Message) -> Value {
    let path = urlencode(m.contact.as_str());
    let media: Vec<Value> = m
        .media
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let src = x.blob_key.as_ref().map(|_| format!("/crm/whatsapp/{path}/media/{}/{i}", m.message_sid));
            json!({ "content_type": x.content_type, "image": x.is_image(), "audio": x.is_audio(), "src": src, "transcript": x.transcript, "problem": x.problem })
        })
        .collect();
    json!({
        "at": m.created_at, "direction": m.direction.as_str(), "channel": m.channel.as_str(),
        "status": m.status, "error_code": m.error_code, "body": m.body, "media": media,
    })
}

/// A message's picture or voice note, for the thread's page (see [`CrmState::blob_redirect`]).
pub async fn media(
    State(state): State<CrmState>,
    _viewer: Viewer,
    Path((phone, message_sid, index)): Path<(String, String, usize)>,
) -> Result<Response, CrmError> {
    let sid = MessageSid::parse(&message_sid).map_err(|_| CrmError::NotFound)?;
    let message = state.app.stores.calls.get_message(&sid).await?.ok_or(CrmError::NotFound)?;
    if message.contact.as_str() != phone {
        return Err(CrmError::NotFound);
    }
    let key = message.media.get(index).and_then(|m| m.blob_key.clone()).ok_or(CrmError::NotFound)?;
    state.blob_redirect(&key).await
}

pub async fn threads(State(state): State<CrmState>, viewer: Viewer) -> Result<Response, CrmError> {
    let store = state.app.stores.calls.as_ref();
    let mut latest: Vec<Message> = Vec::new();
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut before: Option<Before> = None;
    let mut scanned = 0;
    while scanned < SCAN {
        let batch = store.recent_messages(before.as_ref(), 200).await?;
        if batch.is_empty() {
            break;
        }
        scanned += batch.len();
        for m in batch {
            before = Some(Before { at: m.created_at, id: m.message_sid.to_string() });
            let count = counts.entry(m.contact.to_string()).or_insert(0);
            *count += 1;
            if *count == 1 {
                latest.push(m);
            }
        }
    }
    let mut rows = Vec::new();
    for m in &latest {
        let name = store.contact(&m.contact).await?.and_then(|c| c.profile_name);
        let mut row = message_row(m);
        row["contact"] = json!(m.contact.as_str());
        row["path"] = json!(urlencode(m.contact.as_str()));
        row["name"] = json!(name);
        row["count"] = json!(counts.get(m.contact.as_str()));
        rows.push(row);
    }
    let data = json!({ "title": state.pages.word("threads"), "user": viewer.name(), "csrf": viewer.csrf, "nav": "whatsapp", "rows": rows });
    Ok(state.pages.render("threads.html", StatusCode::OK, data))
}

#[derive(Deserialize, Default)]
pub struct Outcome {
    sent: Option<String>,
    problem: Option<String>,
}

/// The thread's messages, oldest first, newest at the bottom as a chat shows them.
async fn thread_messages(state: &CrmState, phone: &E164) -> Result<Vec<Message>, CrmError> {
    let mut messages: Vec<Message> = state
        .app
        .stores
        .calls
        .timeline(phone, 500)
        .await?
        .into_iter()
        .filter_map(|item| match item {
            TimelineItem::Message(m) => Some(m),
            TimelineItem::Call(_) => None,
        })
        .collect();
    messages.reverse();
    Ok(messages)
}

/// The customer's last message, if it opened a window that is still open.
fn open_window(messages: &[Message], now: i64) -> Option<&Message> {
    messages.iter().rev().find(|m| m.direction == MessageDirection::Inbound).filter(|m| now - m.created_at <= WINDOW_MS)
}

pub async fn thread(
    State(state): State<CrmState>,
    viewer: Viewer,
    Path(phone): Path<String>,
    Query(outcome): Query<Outcome>,
) -> Result<Response, CrmError> {
    let phone = E164::parse(&phone).ok_or(CrmError::NotFound)?;
    let messages = thread_messages(&state, &phone).await?;
    if messages.is_empty() {
        return Err(CrmError::NotFound);
    }
    let name = state.app.stores.calls.contact(&phone).await?.and_then(|c| c.profile_name);
    let problem = outcome.problem.as_deref().map(|p| state.pages.word(p));
    let data = json!({
        "title": format!("{} {}", state.pages.word("whatsapp"), phone), "user": viewer.name(), "csrf": viewer.csrf, "nav": "whatsapp",
        "phone": phone.as_str(), "path": urlencode(phone.as_str()), "name": name,
        "messages": messages.iter().map(message_row).collect::<Vec<_>>(),
        "window_open": open_window(&messages, now_ms()).is_some(), "send_id": random_hex(16),
        "sent": outcome.sent.is_some(), "problem": problem,
    });
    Ok(state.pages.render("thread.html", StatusCode::OK, data))
}

#[derive(Deserialize)]
pub struct Reply {
    csrf: Option<String>,
    send_id: String,
    body: String,
}

pub async fn reply(
    State(state): State<CrmState>,
    viewer: Viewer,
    Path(phone): Path<String>,
    Form(form): Form<Reply>,
) -> Result<Response, CrmError> {
    viewer.check_csrf(&state, form.csrf.as_deref())?;
    let phone = E164::parse(&phone).ok_or(CrmError::NotFound)?;
    let back = |query: &str| Redirect::to(&format!("/crm/whatsapp/{}?{query}", urlencode(phone.as_str()))).into_response();
    let text = form.body.trim();
    if text.is_empty() {
        return Ok(back("problem=empty_reply"));
    }
    if text.chars().count() > 1_600 {
        return Err(CrmError::BadRequest("a message is at most 1600 characters".into()));
    }
    if form.send_id.len() != 32 || !form.send_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CrmError::BadRequest("the form's send_id is missing".into()));
    }
    let messages = thread_messages(&state, &phone).await?;
    let Some(inbound) = open_window(&messages, now_ms()).cloned() else { return Ok(back("problem=window_closed")) };
    let store = state.app.stores.calls.as_ref();
    // One send per form: a double click or a reload of the POST finds the mark.
    let mark = format!("crm-send:{}", form.send_id);
    if store.claim_job(&mark, now_ms(), SEND_MARK).await? != JobClaim::Claimed {
        return Ok(back("sent=1"));
    }
    let (to, from) = (inbound.from.clone(), inbound.to.clone());
    let status_callback = Some(state.app.config.callback_url(callkeeper_core::routes::Route::WhatsappStatus.path()));
    let sent = match state
        .twilio
        .send_message(&OutboundMessage { to: to.clone(), from: from.clone(), body: text.to_string(), media_urls: vec![], status_callback })
        .await
    {
        Ok(sent) => sent,
        Err(e) => {
            tracing::warn!(user = viewer.name(), contact = %phone, error = %e, "a reply from the CRM was not sent");
            if e.not_sent() {
                let _ = store.drop_job_claim(&mark).await;
            }
            return Ok(back("problem=send_failed"));
        }
    };
    let now = now_ms();
    let message = Message {
        message_sid: MessageSid::parse(&sent.sid).map_err(|e| CrmError::BadRequest(format!("Twilio's message sid: {e}")))?,
        account_sid: inbound.account_sid.clone(),
        channel: inbound.channel,
        direction: MessageDirection::Outbound,
        contact: phone.clone(),
        from,
        to,
        body: text.to_string(),
        media: vec![],
        profile_name: None,
        status: sent.status.into(),
        error_code: None,
        created_at: now,
        updated_at: now,
        reply_enqueued_at: None,
    };
    store.put_message(&message).await?;
    store.finish_job(&mark, now).await?;
    tracing::info!(user = viewer.name(), contact = %phone, message_sid = %message.message_sid, "reply sent from the CRM");
    Ok(back("sent=1"))
}
