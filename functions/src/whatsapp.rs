//! WhatsApp: inbound messages onto the contact's timeline (a reply job enqueued once), and
//! delivery statuses of what we sent.

use crate::signed_form::SignedForm;
use crate::webhook::{twiml_response, AppState, WebhookError};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use callkeeper_core::form::Form;
use callkeeper_core::ids::{AccountSid, MessageSid};
use callkeeper_core::job::Job;
use callkeeper_core::message::{Media, Message, MessageDirection, MessageStatusUpdate};
use callkeeper_core::phone::parse_address;
use callkeeper_core::store::enqueue;
use callkeeper_core::time::now_ms;
use callkeeper_core::twiml;

/// Twilio sends up to 10 media items per message.
const MAX_MEDIA: u64 = 10;

fn media(form: &Form) -> Result<Vec<Media>, WebhookError> {
    let count = form.parse_count("NumMedia")?.unwrap_or(0);
    if count > MAX_MEDIA {
        return Err(WebhookError::BadRequest(format!("NumMedia must be at most {MAX_MEDIA}, got {count}")));
    }
    (0..count)
        .map(|i| {
            let url = form.get(&format!("MediaUrl{i}")).ok_or_else(|| WebhookError::BadRequest(format!("missing field MediaUrl{i}")))?;
            Ok(Media::new(url, form.get(&format!("MediaContentType{i}"))))
        })
        .collect()
}

pub async fn inbound(State(state): State<AppState>, SignedForm(form): SignedForm) -> Result<Response, WebhookError> {
    let message_sid: MessageSid = form.parse_required("MessageSid")?;
    let account_sid: AccountSid = form.parse_required("AccountSid")?;
    let from = form.required("From")?;
    let to = form.required("To")?;
    let (channel, contact) = parse_address(from, "From")?;
    let media = media(&form)?;
    let body = form.get("Body").unwrap_or("").to_string();
    let at = now_ms();
    let message = Message {
        message_sid: message_sid.clone(),
        account_sid,
        channel,
        direction: MessageDirection::Inbound,
        contact: contact.clone(),
        from: from.to_string(),
        to: to.to_string(),
        body,
        media,
        profile_name: form.get("ProfileName").map(str::to_string),
        status: form.get("SmsStatus").unwrap_or("received").into(),
        error_code: None,
        created_at: at,
        updated_at: at,
        reply_enqueued_at: None,
    };
    let store = state.stores.calls.as_ref();
    let written = store.put_message(&message).await?;
    if written.message.reply_enqueued_at.is_none() {
        // Enqueue, then mark (see recording_done): a duplicate reply job is caught by the worker,
        // a lost one would leave the contact unanswered.
        enqueue(state.stores.queue.as_ref(), &Job::WhatsappReply { message_sid: message_sid.clone(), contact: contact.clone() }).await?;
        store.mark_reply_enqueued(&message_sid, now_ms()).await?;
    }
    tracing::info!(message_sid = %message_sid, contact = %contact.redacted(), new = written.created, media = message.media.len(), "message received");
    Ok(twiml_response(twiml::empty()))
}

pub async fn status(State(state): State<AppState>, SignedForm(form): SignedForm) -> Result<StatusCode, WebhookError> {
    let message_sid: MessageSid = form.parse_required("MessageSid")?;
    let account_sid: AccountSid = form.parse_required("AccountSid")?;
    let status = form.get("MessageStatus").or(form.get("SmsStatus")).ok_or(callkeeper_core::form::FieldError::Missing("MessageStatus"))?;
    let from = form.required("From")?;
    let to = form.required("To")?;
    let (channel, contact) = parse_address(to, "To")?;
    let update = MessageStatusUpdate {
        message_sid: message_sid.clone(),
        account_sid,
        channel,
        contact,
        from: from.to_string(),
        to: to.to_string(),
        status: status.into(),
        error_code: form.get("ErrorCode").map(str::to_string),
        at: now_ms(),
    };
    let applied = state.stores.calls.update_message_status(&update).await?;
    tracing::info!(message_sid = %message_sid, status, ?applied, error_code = ?update.error_code, "message status");
    Ok(StatusCode::NO_CONTENT)
}
