//! The WhatsApp reply worker: answers an inbound message from the contact's recent timeline
//! (calls and messages), with the LLM under the configured system prompt, or with the configured
//! fixed text when there is no OpenAI key. WhatsApp allows a free-form answer only within 24
//! hours of the customer's last message; outside it the worker records that a template is
//! needed instead of sending.
//!
//! Before answering, the worker keeps the message's media (pictures, voice notes) in the blob
//! store and transcribes its voice notes with the calls' transcription, so the answer is to what
//! the customer said, and the CRM shows and plays them.

use crate::domain::ids::{random_sid, MessageSid};
use crate::domain::job::Job;
use crate::domain::message::Media;
use crate::domain::message::{Message, MessageDirection, MessageStatus, TimelineItem};
use crate::domain::time::{now_ms, Millis};
use crate::domain::transcript::JobClaim;
use crate::domain::transcript::Speaker;
use crate::process::config::Config;
use crate::store::{BlobStore, CallStore};
use crate::twilio::rest::{OutboundMessage, TwilioRest};
use crate::work::claims;
use crate::work::openai::OpenAi;
use crate::work::transcription::JobError;
use std::sync::Arc;
use std::time::Duration;

/// WhatsApp's customer service window.
pub const WINDOW_MS: Millis = 24 * 3600 * 1000;
/// Timeline items the LLM sees.
const HISTORY: usize = 20;
/// How long the mark that a reply went to Twilio is kept: longer than any job can be retried.
/// It is a claim that is never finished nor, once the request has left, dropped.
const SENT_MARK: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replied {
    Sent {
        message_sid: String,
    },
    TemplateNeeded,
    Duplicate,
    /// An earlier attempt sent it (or may have): a retry never sends again.
    SentEarlier,
    /// The request left and no answer came: recorded as `unconfirmed`, not sent again.
    Unconfirmed,
    /// A call's follow-ups ([`crate::work::follow_ups`]).
    FollowedUp(crate::work::follow_ups::FollowedUp),
}

impl Replied {
    pub fn kind(&self) -> &'static str {
        match self {
            Replied::Sent { .. } => "sent",
            Replied::TemplateNeeded => "template_needed",
            Replied::Duplicate => "duplicate",
            Replied::SentEarlier => "sent_earlier",
            Replied::Unconfirmed => "unconfirmed",
            Replied::FollowedUp(_) => "followed_up",
        }
    }
}

#[derive(Clone)]
pub struct Replier {
    calls: Arc<dyn CallStore>,
    blobs: Arc<dyn BlobStore>,
    twilio: TwilioRest,
    openai: Option<OpenAi>,
    config: Arc<Config>,
}

impl Replier {
    pub fn new(calls: Arc<dyn CallStore>, blobs: Arc<dyn BlobStore>, twilio: TwilioRest, config: Arc<Config>) -> Replier {
        Replier { calls, blobs, twilio, openai: config.openai.clone().map(OpenAi::new), config }
    }

    /// Keeps each of the message's media in the blob store and transcribes its voice notes, once:
    /// what a failed attempt already did is not done again by the retry (it is stored before the
    /// error is). A medium that cannot be kept or transcribed for good (Twilio has none at that
    /// URL, the transcription refuses the file: any customer can send a corrupt voice note) is
    /// recorded with its problem and the message is answered without it; only a failure that a
    /// retry may mend fails the job.
    async fn keep_media(&self, inbound: Message) -> Result<Message, JobError> {
        if inbound.media.iter().all(|m| self.is_done(m)) {
            return Ok(inbound);
        }
        let mut media = inbound.media.clone();
        let mut failed = None;
        for (i, m) in media.iter_mut().enumerate() {
            if let Err(e) = self.keep_one(&inbound, i, m).await {
                failed = Some(e);
                break;
            }
        }
        self.calls.keep_media(&inbound.message_sid, &media, now_ms()).await?;
        match failed {
            Some(e) => Err(e),
            None => Ok(Message { media, ..inbound }),
        }
    }

    /// Nothing more to do for `m`: kept (and transcribed, if it is a voice note that can be),
    /// or given up on with its problem.
    fn is_done(&self, m: &Media) -> bool {
        m.problem.is_some() || (m.blob_key.is_some() && (m.transcript.is_some() || !self.transcribes(m)))
    }

    fn transcribes(&self, m: &Media) -> bool {
        self.openai.is_some() && m.is_audio() && TRANSCRIBABLE.contains(&m.extension())
    }

    async fn keep_one(&self, inbound: &Message, index: usize, m: &mut Media) -> Result<(), JobError> {
        if self.is_done(m) {
            return Ok(());
        }
        let sid = &inbound.message_sid;
        let bytes = match &m.blob_key {
            Some(key) => match self.blobs.get(key).await? {
                Some(bytes) => bytes,
                None => {
                    m.problem = Some(format!("not transcribed: the kept file {key} is gone"));
                    return Ok(());
                }
            },
            None => {
                let bytes = match self.twilio.fetch_media(&m.url).await {
                    Ok(bytes) => bytes,
                    Err(e) if media_gone(&e) => {
                        tracing::warn!(message_sid = %sid, error = %e, "a medium cannot be fetched; answering without it");
                        m.problem = Some(format!("not kept: {e}"));
                        return Ok(());
                    }
                    Err(e) => return Err(e.into()),
                };
                let key = media_key(inbound, index, m);
                self.blobs.put(&key, bytes::Bytes::from(bytes.clone())).await?;
                m.blob_key = Some(key);
                bytes
            }
        };
        if let (Some(openai), true) = (&self.openai, self.transcribes(m)) {
            match openai.transcribe_file(bytes, m.extension(), &self.config.transcription.language, Speaker::Caller).await {
                Ok(lines) => m.transcript = Some(lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>().join(" ")),
                Err(e) if e.refused_the_input() => {
                    tracing::warn!(message_sid = %sid, error = %e, "a voice note cannot be transcribed; answering without its words");
                    m.problem = Some(format!("not transcribed: {e}"));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// A failed reply's first backoff: `JOB_RETRY_BASE_SECS`, as for every job.
    pub fn retry_base(&self) -> Duration {
        self.config.jobs.retry_base
    }

    /// How long its claim on a job holds unrenewed.
    pub fn lease(&self) -> Duration {
        self.config.jobs.lease
    }

    pub async fn handle(&self, body: &str) -> Result<Replied, JobError> {
        let message_sid = match Job::from_body(body) {
            Ok(Job::WhatsappReply { message_sid, .. }) => message_sid,
            Ok(Job::FollowUp { call_sid }) => {
                let done = crate::work::follow_ups::send(self.calls.as_ref(), &self.twilio, &self.config, &call_sid).await?;
                return Ok(Replied::FollowedUp(done));
            }
            Ok(other) => return Err(JobError::BadJob(format!("{other:?}"))),
            Err(e) => return Err(JobError::BadJob(e.to_string())),
        };
        let key = format!("reply:{message_sid}");
        match self.calls.claim_job(&key, now_ms(), self.config.jobs.lease).await? {
            JobClaim::Done => return Ok(Replied::Duplicate),
            JobClaim::Busy => return Err(JobError::Busy),
            JobClaim::Claimed => {}
        }
        match claims::holding(self.calls.as_ref(), &key, self.config.jobs.lease, self.reply(&message_sid)).await {
            Ok(done) => {
                self.calls.finish_job(&key, now_ms()).await?;
                Ok(done)
            }
            Err(e) => {
                let _ = self.calls.drop_job_claim(&key).await;
                Err(e)
            }
        }
    }

    async fn compose(&self, inbound: &Message) -> Result<String, JobError> {
        let Some(openai) = &self.openai else { return Ok(self.config.replies.fixed_text.clone()) };
        let mut timeline = self.calls.timeline(&inbound.contact, HISTORY).await?;
        timeline.reverse();
        let history: Vec<(&str, String)> = timeline
            .iter()
            .map(|item| match item {
                TimelineItem::Message(m) if m.direction == MessageDirection::Inbound => ("user", said(m)),
                TimelineItem::Message(m) => ("assistant", m.body.clone()),
                TimelineItem::Call(c) => (
                    "system",
                    format!(
                        "(a phone call on {}; it ended: {})",
                        crate::domain::time::format_ms(c.created_at),
                        c.end_reason.as_deref().unwrap_or("-")
                    ),
                ),
            })
            .filter(|(_, text)| !text.is_empty())
            .collect();
        Ok(openai.reply(&self.config.replies.system_prompt, &history).await?)
    }

    async fn reply(&self, message_sid: &MessageSid) -> Result<Replied, JobError> {
        let inbound =
            self.calls.get_message(message_sid).await?.ok_or_else(|| JobError::BadJob(format!("no message {message_sid} to answer")))?;
        let inbound = self.keep_media(inbound).await?;
        let text = self.compose(&inbound).await?;
        let now = now_ms();
        // The customer's address is the inbound sender; ours is where they wrote.
        let (to, from) = (inbound.from.clone(), inbound.to.clone());
        let mut outbound = Message {
            message_sid: MessageSid::parse(&random_sid("SM")).expect("a fresh sid parses"),
            account_sid: inbound.account_sid.clone(),
            channel: inbound.channel,
            direction: MessageDirection::Outbound,
            contact: inbound.contact.clone(),
            from: from.clone(),
            to: to.clone(),
            body: text.clone(),
            media: vec![],
            profile_name: None,
            status: MessageStatus::TemplateNeeded,
            error_code: None,
            created_at: now,
            updated_at: now,
            reply_enqueued_at: None,
        };
        if now - inbound.created_at > WINDOW_MS {
            tracing::warn!(message_sid = %message_sid, "outside WhatsApp's 24-hour window: a template is needed");
            self.calls.put_message(&outbound).await?;
            return Ok(Replied::TemplateNeeded);
        }
        // The mark goes down before the request leaves: whatever fails after Twilio took the
        // message (a store write, the worker itself), a retry finds the mark and sends nothing.
        let sent_mark = format!("reply-sent:{message_sid}");
        if self.calls.claim_job(&sent_mark, now_ms(), SENT_MARK).await? != JobClaim::Claimed {
            tracing::warn!(message_sid = %message_sid, "an earlier attempt sent this reply to Twilio; not sending it again");
            return Ok(Replied::SentEarlier);
        }
        let status_callback = Some(self.config.callback_url(crate::twilio::routes::Route::WhatsappStatus.path()));
        let sent = match self.twilio.send_message(&OutboundMessage { to, from, body: text, media_urls: vec![], status_callback }).await {
            Ok(sent) => sent,
            Err(e) if e.not_sent() => {
                // Twilio refused it or was never reached: no message exists, so a retry may send.
                if let Err(store) = self.calls.drop_job_claim(&sent_mark).await {
                    tracing::error!(message_sid = %message_sid, error = %store, "the reply's sent mark stays: it will not be retried");
                }
                return Err(e.into());
            }
            Err(e) => {
                tracing::warn!(message_sid = %message_sid, error = %e, "Twilio may have taken the reply; recorded as unconfirmed, not sent again");
                outbound.status = MessageStatus::Unconfirmed;
                self.calls.put_message(&outbound).await?;
                return Ok(Replied::Unconfirmed);
            }
        };
        outbound.message_sid = MessageSid::parse(&sent.sid).map_err(|e| JobError::BadJob(format!("Twilio's message sid: {e}")))?;
        outbound.status = MessageStatus::from(sent.status);
        // If this write fails the job is retried and finds the mark; Twilio's status callbacks
        // for the sid still record the message (without its text).
        self.calls.put_message(&outbound).await?;
        Ok(Replied::Sent { message_sid: sent.sid })
    }
}

/// Twilio will never give this medium: it has none there (4xx other than a refused token or
/// a throttle), or the URL or its redirect is not one callkeeper fetches.
fn media_gone(e: &crate::twilio::rest::RestError) -> bool {
    use crate::twilio::rest::RestError;
    match e {
        RestError::Api { status, .. } => (400..500).contains(status) && ![401, 408, 429].contains(status),
        RestError::Unexpected(_) => true,
        RestError::Network(_) => false,
    }
}

/// Audio the transcription reads (by extension); WhatsApp's voice notes are Ogg Opus.
const TRANSCRIBABLE: [&str; 5] = ["ogg", "mp3", "m4a", "wav", "webm"];

/// Where a message's media is kept: by date, then message, by its place in the message.
fn media_key(message: &Message, index: usize, media: &Media) -> String {
    let date = &crate::domain::time::format_ms(message.created_at)[..10];
    format!("media/{}/{}/{index}.{}", date.replace('-', "/"), message.message_sid, media.extension())
}

/// What the customer said, for the LLM: the text, each voice note's words, and what else came.
fn said(message: &Message) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !message.body.trim().is_empty() {
        parts.push(message.body.clone());
    }
    for m in &message.media {
        match &m.transcript {
            Some(words) => parts.push(format!("(voice note) {words}")),
            None if m.is_image() => parts.push("(sent a picture)".into()),
            None if m.is_audio() && m.problem.is_some() => parts.push("(sent a voice note that could not be played)".into()),
            None if m.is_audio() => parts.push("(sent a voice note)".into()),
            None => parts.push("(sent a file)".into()),
        }
    }
    parts.join("\n")
}
