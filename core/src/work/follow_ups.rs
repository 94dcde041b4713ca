//! Follow-ups after a call ([`crate::domain::follow_up`]): once the call is analysed, the
//! transcription worker puts a [`Job::FollowUp`] on the replies queue, and the replies worker
//! sends what the call's profile asks for — the caller's WhatsApp template, the business's
//! notice — each at most once, each kept as a `follow_up` event on the call.
//!
//! Once: before each message leaves, a mark (`follow-up-sent:{call}:{who}`) is claimed, as a
//! WhatsApp reply's is; a retry after Twilio took a message finds the mark and sends nothing.
//! A message Twilio refused (or never got) drops its mark and fails the job, which comes back
//! with backoff and then waits in the replies dead-letter queue.

use crate::domain::call::CallEvent;
use crate::domain::follow_up::CallFacts;
use crate::domain::ids::CallSid;
use crate::domain::job::{Job, JobClaim};
use crate::domain::time::now_ms;
use crate::process::config::Config;
use crate::store::{CallStore, JobQueue};
use crate::twilio::rest::{OutboundMessage, TwilioRest};
use crate::work::transcription::JobError;
use serde_json::json;
use std::time::Duration;

/// How long a sent mark is kept: far longer than any retry.
const SENT_MARK: Duration = Duration::from_secs(30 * 24 * 3600);

/// Puts the call's follow-up on the replies queue if its profile asks for one.
pub async fn enqueue_if_wanted(calls: &dyn CallStore, queue: &dyn JobQueue, config: &Config, call_sid: &CallSid) -> Result<bool, JobError> {
    let Some(call) = calls.get_call(call_sid).await? else { return Ok(false) };
    let number = crate::domain::profile::business_number(&call);
    let profile = crate::work::profiles::resolve(calls, config, number.as_ref()).await?;
    if profile.follow_up.is_empty() {
        return Ok(false);
    }
    crate::store::enqueue(queue, &Job::FollowUp { call_sid: call_sid.clone() }).await?;
    Ok(true)
}

/// One message of a call's follow-up: who it is for (the mark's and the event's name), the
/// message, and the template (its Content SID and variables) when it is one.
struct Outgoing {
    who: String,
    message: OutboundMessage,
    template: Option<(String, String)>,
}

/// What a follow-up job came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowedUp {
    /// Messages sent by this attempt.
    pub sent: usize,
    /// Messages an earlier attempt sent.
    pub earlier: usize,
}

/// Sends the follow-ups of `call_sid`.
pub async fn send(calls: &dyn CallStore, twilio: &TwilioRest, config: &Config, call_sid: &CallSid) -> Result<FollowedUp, JobError> {
    let call = calls.get_call(call_sid).await?.ok_or_else(|| JobError::BadJob(format!("no call {call_sid} to follow up")))?;
    let business = crate::domain::profile::business_number(&call);
    let profile = crate::work::profiles::resolve(calls, config, business.as_ref()).await?;
    let transcript = calls.transcripts(call_sid).await?.into_iter().last();
    let lead = calls.lead(call_sid).await?.unwrap_or(serde_json::Value::Null);
    let caller = call.contact.as_ref().map(|c| c.as_str().to_string()).unwrap_or_default();
    let business = business.map(|b| b.as_str().to_string()).unwrap_or_default();
    let facts = CallFacts {
        caller: &caller,
        business: &business,
        summary: transcript.as_ref().and_then(|t| t.summary.as_deref()),
        intent: transcript.as_ref().and_then(|t| t.intent.as_deref()),
        lead: &lead,
    };
    let mut outgoing: Vec<Outgoing> = Vec::new();
    let status_callback = Some(config.callback_url(crate::twilio::routes::Route::WhatsappStatus.path()));
    if let Some(message) = &profile.follow_up.caller {
        if caller.is_empty() || business.is_empty() {
            tracing::warn!(call_sid = %call_sid, "no caller's or business's number to send the follow-up between");
        } else {
            let whatsapp = OutboundMessage {
                to: format!("whatsapp:{caller}"),
                from: format!("whatsapp:{business}"),
                body: String::new(),
                media_urls: vec![],
                status_callback: status_callback.clone(),
            };
            let template = Some((message.template.clone(), facts.variables(message)));
            outgoing.push(Outgoing { who: "caller".into(), message: whatsapp, template });
        }
    }
    if let Some(notice) = &profile.follow_up.business {
        let whatsapp = notice.channel == "whatsapp";
        for to in &notice.to {
            let address = |n: &str| if whatsapp { format!("whatsapp:{n}") } else { n.to_string() };
            let message = OutboundMessage {
                to: address(to),
                from: address(&business),
                body: facts.notice(call_sid.as_str()),
                media_urls: vec![],
                status_callback: if whatsapp { status_callback.clone() } else { None },
            };
            outgoing.push(Outgoing { who: format!("business:{to}"), message, template: None });
        }
    }
    let mut done = FollowedUp { sent: 0, earlier: 0 };
    for Outgoing { who, message, template } in outgoing {
        let mark = format!("follow-up-sent:{call_sid}:{who}");
        if calls.claim_job(&mark, now_ms(), SENT_MARK).await? != JobClaim::Claimed {
            done.earlier += 1;
            continue;
        }
        let sent = match &template {
            Some((content_sid, variables)) => twilio.send_template(&message, content_sid, variables).await,
            None => twilio.send_message(&message).await,
        };
        let sent = match sent {
            Ok(sent) => sent,
            Err(e) if e.not_sent() => {
                if let Err(store) = calls.drop_job_claim(&mark).await {
                    tracing::error!(call_sid = %call_sid, error = %store, "a follow-up's sent mark stays: it will not be retried");
                }
                let detail = json!({ "to": who, "ok": false, "error": e.to_string() });
                let event = CallEvent { at: now_ms(), kind: "follow_up".into(), key: format!("follow_up:{who}:failed"), detail };
                let _ = calls.add_event(call_sid, &event).await;
                return Err(e.into());
            }
            Err(e) => {
                tracing::warn!(call_sid = %call_sid, who, error = %e, "Twilio may have taken the follow-up; not sent again");
                let detail = json!({ "to": who, "ok": false, "error": format!("unconfirmed: {e}") });
                calls
                    .add_event(call_sid, &CallEvent { at: now_ms(), kind: "follow_up".into(), key: format!("follow_up:{who}"), detail })
                    .await?;
                continue;
            }
        };
        let detail = json!({
            "to": who,
            "ok": true,
            "channel": if message.to.starts_with("whatsapp:") { "whatsapp" } else { "sms" },
            "template": template.as_ref().map(|(sid, _)| sid),
            "variables": template.as_ref().map(|(_, vars)| vars),
            "message_sid": sent.sid,
            "status": sent.status,
        });
        calls.add_event(call_sid, &CallEvent { at: now_ms(), kind: "follow_up".into(), key: format!("follow_up:{who}"), detail }).await?;
        tracing::info!(call_sid = %call_sid, who, message_sid = sent.sid, "follow-up sent");
        done.sent += 1;
    }
    Ok(done)
}
