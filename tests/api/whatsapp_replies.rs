//! The WhatsApp reply worker: an inbound message is answered through a fake Twilio, from the
//! contact's timeline with a fake OpenAI (or the fixed text without a key), and never outside
//! WhatsApp's 24-hour window.

use crate::common;

use callkeeper_core::ids::{random_sid, MessageSid};
use callkeeper_core::job::Job;
use callkeeper_core::message::MessageStatus;
use callkeeper_core::message::{MessageDirection, TimelineItem};
use callkeeper_core::phone::E164;
use callkeeper_core::replies::Replier;
use callkeeper_core::worker::poll_once;
use common::*;
use wiremock::matchers::{body_string_contains, method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CUSTOMER: &str = "+972507654321";

fn inbound(message_sid: &str, body: &str) -> Vec<(String, String)> {
    params(&[
        ("AccountSid", ACCOUNT_SID),
        ("MessageSid", message_sid),
        ("From", &format!("whatsapp:{CUSTOMER}")),
        ("To", "whatsapp:+14155238886"),
        ("Body", body),
        ("ProfileName", "דנה"),
        ("NumMedia", "0"),
        ("SmsStatus", "received"),
    ])
}

async fn twilio_sends(expected_body: &str) -> (MockServer, String) {
    let twilio = MockServer::start().await;
    let sent = random_sid("SM");
    Mock::given(method("POST"))
        .and(path_regex(r"^/2010-04-01/Accounts/AC[0-9a-f]{32}/Messages\.json$"))
        .and(body_string_contains("To=whatsapp%3A%2B972507654321"))
        .and(body_string_contains("From=whatsapp%3A%2B14155238886"))
        .and(body_string_contains(form_urlencoded::byte_serialize(expected_body.as_bytes()).collect::<String>()))
        .and(body_string_contains("StatusCallback=https%3A%2F%2Fck.example.com%2Fwebhook%2Fwhatsapp%2Fstatus"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({ "sid": sent, "status": "queued" })))
        .expect(1)
        .mount(&twilio)
        .await;
    (twilio, sent)
}

/// The chat model's answer, as the API sends it.
fn chat_answer(answer: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(serde_json::json!({ "choices": [{ "message": { "role": "assistant", "content": answer } }] }))
}

/// The app with OpenAI (chat and transcription) on `openai` and Twilio's REST API on `twilio`.
async fn app_with_llm(twilio: &MockServer, openai: &MockServer) -> TestApp {
    let openai_base = format!("{}/v1", openai.uri());
    spawn_app_with(&[("TWILIO_API_BASE", &twilio.uri()), ("OPENAI_API_KEY", "sk-test"), ("OPENAI_BASE_URL", &openai_base)]).await
}

fn replier(app: &TestApp) -> Replier {
    Replier::new(app.stores.calls.clone(), app.stores.blobs.clone(), app.config.twilio_rest(), app.config.clone())
}

async fn outbound(app: &TestApp) -> Vec<callkeeper_core::message::Message> {
    let timeline = app.stores.calls.timeline(&E164::parse(CUSTOMER).unwrap(), 10).await.unwrap();
    timeline
        .into_iter()
        .filter_map(|item| match item {
            TimelineItem::Message(m) if m.direction == MessageDirection::Outbound => Some(m),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_message_is_answered_by_the_llm_from_the_timeline() {
    let answer = "שלום דנה! איזה אזור מעניין אותך?";
    let (twilio, sent) = twilio_sends(answer).await;
    let openai = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains("מחפשת דירה"))
        .respond_with(chat_answer(answer))
        .expect(1)
        .mount(&openai)
        .await;
    let app = app_with_llm(&twilio, &openai).await;
    let msid = random_sid("SM");
    twiml_of(app.post("/webhook/whatsapp/inbound", &inbound(&msid, "היי, מחפשת דירה")).await).await;

    let polled = poll_once(app.stores.queue.as_ref(), &replier(&app)).await.unwrap();
    assert_eq!((polled.received, polled.done), (1, 1));
    let replies = outbound(&app).await;
    assert_eq!(replies.len(), 1);
    assert_eq!((replies[0].message_sid.as_str(), replies[0].body.as_str(), replies[0].status.as_str()), (sent.as_str(), answer, "queued"));
    // The system prompt went first.
    let chat: serde_json::Value = serde_json::from_slice(&openai.received_requests().await.unwrap()[0].body).unwrap();
    assert_eq!(chat["messages"][0]["role"], "system");
    assert_eq!(chat["messages"].as_array().unwrap().last().unwrap()["content"], "היי, מחפשת דירה");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_openai_key_the_fixed_text_is_sent() {
    let (twilio, _) = twilio_sends("תודה! נחזור אליך.").await;
    let app = spawn_app_with(&[("TWILIO_API_BASE", &twilio.uri()), ("REPLY_FIXED_TEXT", "תודה! נחזור אליך.")]).await;
    twiml_of(app.post("/webhook/whatsapp/inbound", &inbound(&random_sid("SM"), "שלום")).await).await;
    assert_eq!(poll_once(app.stores.queue.as_ref(), &replier(&app)).await.unwrap().done, 1);
    assert_eq!(outbound(&app).await[0].body, "תודה! נחזור אליך.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_the_24_hour_window_nothing_is_sent_and_a_template_is_noted() {
    let twilio = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(201)).expect(0).mount(&twilio).await;
    let app = spawn_app_with(&[("TWILIO_API_BASE", &twilio.uri())]).await;
    let msid = random_sid("SM");
    twiml_of(app.post("/webhook/whatsapp/inbound", &inbound(&msid, "שלום")).await).await;
    // The job waited more than a day (the worker was down): the window has closed.
    let sid = MessageSid::parse(&msid).unwrap();
    let mut old = app.stores.calls.get_message(&sid).await.unwrap().unwrap();
    old.message_sid = MessageSid::parse(&random_sid("SM")).unwrap();
    old.created_at -= 25 * 3600 * 1000;
    app.stores.calls.put_message(&old).await.unwrap();
    let job = Job::WhatsappReply { message_sid: old.message_sid.clone(), contact: old.contact.clone() };
    let queue = app.stores.queue.as_ref();
    queue.receive(callkeeper_core::job::QueueName::Replies, 10, std::time::Duration::from_secs(600)).await.unwrap();
    callkeeper_core::store::enqueue(queue, &job).await.unwrap();
    assert_eq!(poll_once(queue, &replier(&app)).await.unwrap().done, 1);
    let replies = outbound(&app).await;
    assert_eq!((replies.len(), &replies[0].status), (1, &MessageStatus::TemplateNeeded));
}

/// Twilio's side of a send that takes the message, then has the store locked from another
/// connection for `hold` before it answers: the worker's next write fails after the send.
struct TakesItThenLocksTheStore {
    database: std::path::PathBuf,
    sid: String,
    hold: std::time::Duration,
}

impl wiremock::Respond for TakesItThenLocksTheStore {
    fn respond(&self, _: &wiremock::Request) -> ResponseTemplate {
        let connection = rusqlite::Connection::open(&self.database).unwrap();
        connection.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let hold = self.hold;
        std::thread::spawn(move || {
            std::thread::sleep(hold);
            connection.execute_batch("COMMIT").unwrap();
        });
        ResponseTemplate::new(201).set_body_json(serde_json::json!({ "sid": self.sid, "status": "queued" }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_twilio_took_is_never_sent_again_when_the_store_fails_after() {
    let twilio = MockServer::start().await;
    let app = spawn_app_with(&[("TWILIO_API_BASE", &twilio.uri()), ("REPLY_FIXED_TEXT", "תודה!"), ("JOB_RETRY_BASE_SECS", "0")]).await;
    let sent = random_sid("SM");
    // Held past the store's 5 s busy timeout: the write of the sent message fails, the release of
    // the job (a second later) succeeds.
    let database = app.data_dir.path().join(callkeeper_core::store::embedded::DATABASE_FILE);
    let responder = TakesItThenLocksTheStore { database, sid: sent.clone(), hold: std::time::Duration::from_secs(6) };
    Mock::given(method("POST")).and(path_regex(r"/Messages\.json$")).respond_with(responder).expect(1).mount(&twilio).await;
    twiml_of(app.post("/webhook/whatsapp/inbound", &inbound(&random_sid("SM"), "שלום")).await).await;
    let queue = app.stores.queue.as_ref();
    let first = poll_once(queue, &replier(&app)).await.unwrap();
    assert_eq!((first.received, first.failed), (1, 1), "the write after the send failed");
    // The retry finds the sent mark and sends nothing (the mock expects one send).
    let second = poll_once(queue, &replier(&app)).await.unwrap();
    assert_eq!((second.received, second.done), (1, 1));
    assert_eq!(app.stores.queue.depth(callkeeper_core::job::QueueName::Replies).await.unwrap().visible, 0);
    // Twilio's status callback for its sid still puts the message on the timeline.
    let status = params(&[
        ("AccountSid", ACCOUNT_SID),
        ("MessageSid", &sent),
        ("From", "whatsapp:+14155238886"),
        ("To", &format!("whatsapp:{CUSTOMER}")),
        ("MessageStatus", "delivered"),
    ]);
    assert_eq!(app.post("/webhook/whatsapp/status", &status).await.status(), 204);
    let replies = outbound(&app).await;
    assert_eq!((replies.len(), replies[0].message_sid.as_str()), (1, sent.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_twilio_refused_is_sent_on_the_retry() {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(r"/Messages\.json$"))
        .respond_with(ResponseTemplate::new(503).set_body_json(serde_json::json!({ "code": 20500, "message": "busy" })))
        .up_to_n_times(1)
        .mount(&twilio)
        .await;
    let (_, sent) = (twilio.uri(), random_sid("SM"));
    Mock::given(method("POST"))
        .and(path_regex(r"/Messages\.json$"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({ "sid": sent, "status": "queued" })))
        .expect(1)
        .mount(&twilio)
        .await;
    let app = spawn_app_with(&[("TWILIO_API_BASE", &twilio.uri()), ("JOB_RETRY_BASE_SECS", "0")]).await;
    twiml_of(app.post("/webhook/whatsapp/inbound", &inbound(&random_sid("SM"), "שלום")).await).await;
    let queue = app.stores.queue.as_ref();
    assert_eq!(poll_once(queue, &replier(&app)).await.unwrap().failed, 1);
    assert_eq!(poll_once(queue, &replier(&app)).await.unwrap().done, 1);
    assert_eq!(outbound(&app).await[0].message_sid.as_str(), sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_whose_answer_never_came_is_kept_unconfirmed_and_not_sent_again() {
    let twilio = MockServer::start().await;
    // Slower than the client's per-attempt timeout (5 s): the request left, no answer came.
    Mock::given(method("POST"))
        .and(path_regex(r"/Messages\.json$"))
        .respond_with(ResponseTemplate::new(201).set_delay(std::time::Duration::from_secs(8)))
        .expect(1)
        .mount(&twilio)
        .await;
    let app = spawn_app_with(&[("TWILIO_API_BASE", &twilio.uri()), ("REPLY_FIXED_TEXT", "תודה!")]).await;
    twiml_of(app.post("/webhook/whatsapp/inbound", &inbound(&random_sid("SM"), "שלום")).await).await;
    let polled = poll_once(app.stores.queue.as_ref(), &replier(&app)).await.unwrap();
    assert_eq!(polled.done, 1);
    let replies = outbound(&app).await;
    assert_eq!((replies.len(), &replies[0].status, replies[0].body.as_str()), (1, &MessageStatus::Unconfirmed, "תודה!"));
}

/// An inbound message with these media (URL path on the fake Twilio, content type).
fn with_media(message_sid: &str, twilio: &MockServer, media: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut form = inbound(message_sid, "");
    form.retain(|(k, _)| k != "NumMedia");
    form.push(("NumMedia".into(), media.len().to_string()));
    for (i, (url, content_type)) in media.iter().enumerate() {
        let url = if url.starts_with("http") { url.to_string() } else { format!("{}{url}", twilio.uri()) };
        form.push((format!("MediaUrl{i}"), url));
        form.push((format!("MediaContentType{i}"), content_type.to_string()));
    }
    form
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voice_note_is_kept_transcribed_and_answered_and_a_picture_kept() {
    let answer = "בטח, מחר בעשר מתאים?";
    let (twilio, _) = twilio_sends(answer).await;
    let msid = random_sid("SM");
    let media_path = |me: &str| format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{msid}/Media/{me}");
    let (me1, me2) = (random_sid("ME"), random_sid("ME"));
    let voice = b"OggS\x00\x02voice note bytes".to_vec();
    let picture = b"\xFF\xD8\xFF\xE0 a jpeg".to_vec();
    for (me, bytes, content_type) in [(me1.as_str(), voice.clone(), "audio/ogg"), (me2.as_str(), picture.clone(), "image/jpeg")] {
        Mock::given(method("GET"))
            .and(path(media_path(me)))
            .respond_with(ResponseTemplate::new(200).set_body_raw(bytes, content_type))
            .expect(1)
            .mount(&twilio)
            .await;
    }
    let openai = MockServer::start().await;
    let words = "אני רוצה לקבוע פגישה";
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .and(body_string_contains("filename=\"audio.ogg\""))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({ "text": words, "segments": [{ "start": 0.0, "end": 1.8, "text": words }] })),
        )
        .expect(1)
        .mount(&openai)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains(format!("(voice note) {words}")))
        .and(body_string_contains("(sent a picture)"))
        .respond_with(chat_answer(answer))
        .expect(1)
        .mount(&openai)
        .await;
    let app = app_with_llm(&twilio, &openai).await;
    let form = with_media(&msid, &twilio, &[(&media_path(&me1), "audio/ogg"), (&media_path(&me2), "image/jpeg")]);
    twiml_of(app.post("/webhook/whatsapp/inbound", &form).await).await;

    let polled = poll_once(app.stores.queue.as_ref(), &replier(&app)).await.unwrap();
    assert_eq!((polled.received, polled.done), (1, 1));
    let message = app.stores.calls.get_message(&MessageSid::parse(&msid).unwrap()).await.unwrap().unwrap();
    assert_eq!(message.media[0].transcript.as_deref(), Some(words));
    assert_eq!(message.media[1].transcript, None);
    for (m, bytes) in message.media.iter().zip([voice, picture]) {
        let key = m.blob_key.as_deref().expect("kept");
        assert!(key.starts_with("media/") && key.contains(&msid), "{key}");
        assert_eq!(app.stores.blobs.get(key).await.unwrap(), Some(bytes));
    }
    assert_eq!(outbound(&app).await[0].body, answer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_that_is_not_the_accounts_is_never_fetched_and_the_message_still_answered() {
    let (twilio, _) = twilio_sends("תודה! נחזור אליך.").await;
    let app = spawn_app_with(&[("TWILIO_API_BASE", &twilio.uri()), ("REPLY_FIXED_TEXT", "תודה! נחזור אליך.")]).await;
    let msid = random_sid("SM");
    let elsewhere = format!("{}/2010-04-01/Accounts/AC{}/Messages/{msid}/Media/ME1", twilio.uri(), "9".repeat(32));
    let form = with_media(&msid, &twilio, &[(&elsewhere, "image/jpeg"), ("http://169.254.169.254/latest/meta-data/iam", "image/jpeg")]);
    twiml_of(app.post("/webhook/whatsapp/inbound", &form).await).await;
    let polled = poll_once(app.stores.queue.as_ref(), &replier(&app)).await.unwrap();
    assert_eq!((polled.received, polled.done), (1, 1));
    let fetched: Vec<_> = twilio.received_requests().await.unwrap().into_iter().filter(|r| r.method.as_str() == "GET").collect();
    assert!(fetched.is_empty(), "another account's media is not fetched with ours: {fetched:?}");
    let message = app.stores.calls.get_message(&MessageSid::parse(&msid).unwrap()).await.unwrap().unwrap();
    assert!(message.media.iter().all(|m| m.blob_key.is_none()), "kept as a URL only");
    assert!(message.media.iter().all(|m| m.problem.as_deref().is_some_and(|p| p.contains("not this account's"))), "{:?}", message.media);
}

/// A path that climbs out of the account's media, however it is spelled, is not fetched: it
/// would reach the rest of Twilio's API with our credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_media_path_that_climbs_out_is_never_fetched() {
    let (twilio, _) = twilio_sends("תודה! נחזור אליך.").await;
    let app = spawn_app_with(&[("TWILIO_API_BASE", &twilio.uri()), ("REPLY_FIXED_TEXT", "תודה! נחזור אליך.")]).await;
    let msid = random_sid("SM");
    let messages = format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages");
    let climbing = [
        format!("{messages}/%2e%2e/%2e%2e/Recordings.json"),
        format!("{messages}/{msid}/Media/.%2E/.%2E/.%2E/Calls.json"),
        format!("{messages}/{msid}/Media/..\\..\\..\\Calls.json"),
    ];
    let media: Vec<(&str, &str)> = climbing.iter().map(|p| (p.as_str(), "image/jpeg")).collect();
    twiml_of(app.post("/webhook/whatsapp/inbound", &with_media(&msid, &twilio, &media)).await).await;
    let polled = poll_once(app.stores.queue.as_ref(), &replier(&app)).await.unwrap();
    assert_eq!((polled.received, polled.done), (1, 1), "answered");
    let fetched: Vec<_> = twilio.received_requests().await.unwrap().into_iter().filter(|r| r.method.as_str() == "GET").collect();
    assert!(fetched.is_empty(), "fetched: {:?}", fetched.iter().map(|r| r.url.to_string()).collect::<Vec<_>>());
}

/// Twilio's media answers with a redirect to its CDN; one anywhere else (here, a stand-in for
/// the cloud's metadata service) is not followed, and the message is answered without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_media_redirect_off_twilios_hosts_is_not_followed() {
    let (twilio, _) = twilio_sends("תודה! נחזור אליך.").await;
    let metadata = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("AccessKeyId: ASIA-secret"))
        .expect(0)
        .mount(&metadata)
        .await;
    let msid = random_sid("SM");
    let media = format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{msid}/Media/{}", random_sid("ME"));
    Mock::given(method("GET"))
        .and(path(media.clone()))
        .respond_with(ResponseTemplate::new(302).insert_header("location", format!("{}/latest/meta-data/iam", metadata.uri())))
        .expect(1)
        .mount(&twilio)
        .await;
    let app = spawn_app_with(&[("TWILIO_API_BASE", &twilio.uri()), ("REPLY_FIXED_TEXT", "תודה! נחזור אליך.")]).await;
    twiml_of(app.post("/webhook/whatsapp/inbound", &with_media(&msid, &twilio, &[(&media, "image/jpeg")])).await).await;
    let polled = poll_once(app.stores.queue.as_ref(), &replier(&app)).await.unwrap();
    assert_eq!((polled.received, polled.done), (1, 1), "answered, and not retried: the redirect will not change");
    let message = app.stores.calls.get_message(&MessageSid::parse(&msid).unwrap()).await.unwrap().unwrap();
    assert_eq!(message.media[0].blob_key, None);
    let problem = message.media[0].problem.as_deref().unwrap();
    assert!(problem.contains("not to Twilio's media hosts"), "{problem}");
    assert_eq!(outbound(&app).await.len(), 1);
}

/// A medium Twilio no longer has (404) and a voice note the transcription refuses (a corrupt
/// file: any customer can send one) are recorded as such, and the message is answered at once,
/// not retried into the dead-letter queue. What each said, the LLM is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_that_cannot_be_kept_or_transcribed_does_not_stop_the_answer() {
    let answer = "קיבלתי, תודה! אפשר לשלוח שוב את ההקלטה?";
    let (twilio, _) = twilio_sends(answer).await;
    let msid = random_sid("SM");
    let media_path = |me: &str| format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{msid}/Media/{me}");
    let (gone, corrupt) = (random_sid("ME"), random_sid("ME"));
    Mock::given(method("GET"))
        .and(path(media_path(&gone)))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(serde_json::json!({ "code": 20404, "message": "The requested resource was not found" })),
        )
        .expect(1)
        .mount(&twilio)
        .await;
    Mock::given(method("GET"))
        .and(path(media_path(&corrupt)))
        .respond_with(ResponseTemplate::new(200).set_body_raw(b"OggS not really".to_vec(), "audio/ogg"))
        .expect(1)
        .mount(&twilio)
        .await;
    let openai = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "error": { "message": "Audio file might be corrupted or unsupported", "type": "invalid_request_error", "param": "file", "code": "invalid_value" }
        })))
        .expect(1)
        .mount(&openai)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains("(sent a voice note that could not be played)"))
        .and(body_string_contains("(sent a picture)"))
        .respond_with(chat_answer(answer))
        .expect(1)
        .mount(&openai)
        .await;
    let app = app_with_llm(&twilio, &openai).await;
    let form = with_media(&msid, &twilio, &[(&media_path(&gone), "image/jpeg"), (&media_path(&corrupt), "audio/ogg")]);
    twiml_of(app.post("/webhook/whatsapp/inbound", &form).await).await;
    let polled = poll_once(app.stores.queue.as_ref(), &replier(&app)).await.unwrap();
    assert_eq!((polled.received, polled.done), (1, 1), "answered on the first try");
    let message = app.stores.calls.get_message(&MessageSid::parse(&msid).unwrap()).await.unwrap().unwrap();
    let (picture, voice) = (&message.media[0], &message.media[1]);
    assert_eq!(picture.blob_key, None);
    assert!(picture.problem.as_deref().unwrap().contains("404"), "{picture:?}");
    assert!(voice.blob_key.is_some(), "the voice note is kept, to be heard in the CRM");
    assert_eq!(voice.transcript, None);
    assert!(voice.problem.as_deref().unwrap().starts_with("not transcribed"), "{voice:?}");
    assert_eq!(outbound(&app).await[0].body, answer);
}

/// A transient failure (Twilio's 503) is retried, and what was done before it is not redone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_media_failure_is_retried_without_fetching_again_what_was_kept() {
    let (twilio, _) = twilio_sends("תודה! נחזור אליך.").await;
    let msid = random_sid("SM");
    let media_path = |me: &str| format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{msid}/Media/{me}");
    let (first, second) = (random_sid("ME"), random_sid("ME"));
    Mock::given(method("GET"))
        .and(path(media_path(&first)))
        .respond_with(ResponseTemplate::new(200).set_body_raw(b"\x89PNG".to_vec(), "image/png"))
        .expect(1)
        .mount(&twilio)
        .await;
    // Busy for every try of the first receive (the client's own retries), then there.
    Mock::given(method("GET"))
        .and(path(media_path(&second)))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(4)
        .mount(&twilio)
        .await;
    Mock::given(method("GET"))
        .and(path(media_path(&second)))
        .respond_with(ResponseTemplate::new(200).set_body_raw(b"\x89PNG 2".to_vec(), "image/png"))
        .mount(&twilio)
        .await;
    let app =
        spawn_app_with(&[("TWILIO_API_BASE", &twilio.uri()), ("REPLY_FIXED_TEXT", "תודה! נחזור אליך."), ("JOB_RETRY_BASE_SECS", "0")])
            .await;
    let form = with_media(&msid, &twilio, &[(&media_path(&first), "image/png"), (&media_path(&second), "image/png")]);
    twiml_of(app.post("/webhook/whatsapp/inbound", &form).await).await;
    let polled = poll_once(app.stores.queue.as_ref(), &replier(&app)).await.unwrap();
    assert_eq!((polled.received, polled.done), (1, 0), "failed, to be retried");
    let kept = app.stores.calls.get_message(&MessageSid::parse(&msid).unwrap()).await.unwrap().unwrap();
    assert!(kept.media[0].blob_key.is_some() && kept.media[1].blob_key.is_none(), "{:?}", kept.media);
    let polled = poll_once(app.stores.queue.as_ref(), &replier(&app)).await.unwrap();
    assert_eq!((polled.received, polled.done), (1, 1));
    let message = app.stores.calls.get_message(&MessageSid::parse(&msid).unwrap()).await.unwrap().unwrap();
    assert!(message.media.iter().all(|m| m.blob_key.is_some() && m.problem.is_none()), "{:?}", message.media);
    assert_eq!(outbound(&app).await.len(), 1);
}
