//! The pages that read: now, calls, a call, a contact, leads, operations; and the recording's
//! audio, the CSV export and the redrive, which are the other things a page asks for.

use super::leads::{FieldTitles, FIXED};
use super::{CrmError, CrmState, Viewer};
use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use callkeeper_core::call::{Call, CallEvent, CallStatus};
use callkeeper_core::ids::CallSid;
use callkeeper_core::job::QueueName;
use callkeeper_core::phone::E164;
use callkeeper_core::store::{Before, CallStore, Contact};
use callkeeper_core::stream_report::Turn;
use callkeeper_core::time::{format_ms, now_ms, Millis};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;

/// Calls a page shows.
const PAGE: usize = 50;
/// Calls one request reads at most while filtering: a filter that matches little still answers
/// quickly, and says the search stopped there.
const SCAN: usize = 2_000;

/// A call as a row of a list.
#[derive(Serialize)]
struct Row {
    sid: String,
    at: Millis,
    who: String,
    contact: Option<String>,
    name: Option<String>,
    direction: &'static str,
    status: &'static str,
    outcome: &'static str,
    reason: Option<String>,
    duration: Option<String>,
}

fn row(c: &Call, name: Option<String>) -> Row {
    Row {
        sid: c.call_sid.to_string(),
        at: c.created_at,
        who: c.contact.as_ref().map_or_else(|| c.from.clone(), |p| p.to_string()),
        contact: c.contact.as_ref().map(|p| p.to_string()),
        name,
        direction: c.direction.as_str(),
        status: c.status.as_str(),
        outcome: c.outcome(),
        reason: c.fallback_reason.clone().or_else(|| c.end_reason.clone()),
        duration: duration(c),
    }
}

/// From the call's start to its end, when it has ended.
fn duration(c: &Call) -> Option<String> {
    (c.status == CallStatus::Completed).then(|| {
        let secs = ((c.status_at - c.created_at).max(0) + 500) / 1000;
        format!("{}:{:02}", secs / 60, secs % 60)
    })
}

/// A contact's name, as WhatsApp or the agent's lead has it.
fn contact_name(contact: &Contact) -> Option<String> {
    let lead = contact.lead.as_ref().and_then(|l| l.as_object());
    let from_lead = lead.and_then(|l| ["name", "full_name", "customer_name"].iter().find_map(|k| l.get(*k)?.as_str().map(str::to_string)));
    from_lead.or_else(|| contact.profile_name.clone())
}

/// The name of whoever made `call`, where their contact has one.
async fn caller_name(store: &dyn CallStore, call: &Call) -> Result<Option<String>, CrmError> {
    Ok(match &call.contact {
        Some(phone) => store.contact(phone).await?.as_ref().and_then(contact_name),
        None => None,
    })
}

#[derive(Deserialize, Default)]
pub struct CallsQuery {
    status: Option<String>,
    outcome: Option<String>,
    q: Option<String>,
    from: Option<String>,
    to: Option<String>,
    before: Option<String>,
}

fn parse_before(value: &str) -> Result<Before, CrmError> {
    let (at, id) = value.split_once('_').ok_or_else(|| CrmError::BadRequest("`before` is TIME_SID".into()))?;
    Ok(Before { at: at.parse().map_err(|_| CrmError::BadRequest("`before` is TIME_SID".into()))?, id: id.to_string() })
}

fn cursor(at: Millis, id: &str) -> String {
    format!("{at}_{id}")
}

pub async fn calls(State(state): State<CrmState>, viewer: Viewer, Query(query): Query<CallsQuery>) -> Result<Response, CrmError> {
    let store = state.app.stores.calls.as_ref();
    let filled = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
    let (status, wanted_outcome, q) = (filled(&query.status), filled(&query.outcome), filled(&query.q).map(|q| q.to_lowercase()));
    if let Some(s) = &status {
        if !CallStatus::ALL.iter().any(|c| c.as_str() == s) {
            return Err(CrmError::BadRequest(format!("no call status {s:?}")));
        }
    }
    // Days are the business's (CRM_TIME_ZONE), typed in its form or ISO.
    let day = |d: String| state.pages.clock.day(&d).map_err(CrmError::BadRequest);
    let from = filled(&query.from).map(day).transpose()?.map(|(start, _)| start);
    let to_end = filled(&query.to).map(day).transpose()?.map(|(_, end)| end);
    // A `to` date starts the scan at its day's end: no id sorts below "" at that instant.
    let mut before = match filled(&query.before) {
        Some(b) => Some(parse_before(&b)?),
        None => to_end.map(|at| Before { at, id: String::new() }),
    };
    let by_number = q.as_deref().is_some_and(|q| q.chars().all(|c| c.is_ascii_digit() || c == '+'));
    let mut names: HashMap<String, Option<String>> = HashMap::new();
    let (mut rows, mut scanned, mut exhausted) = (Vec::new(), 0usize, false);
    'scan: while rows.len() < PAGE && scanned < SCAN {
        let batch = store.recent_calls(before.as_ref(), 200).await?;
        if batch.is_empty() {
            exhausted = true;
            break;
        }
        for call in batch {
            scanned += 1;
            before = Some(Before { at: call.created_at, id: call.call_sid.to_string() });
            if from.is_some_and(|from| call.created_at < from) {
                exhausted = true;
                break 'scan;
            }
            if !(status.as_deref().is_none_or(|s| call.status.as_str() == s)
                && wanted_outcome.as_deref().is_none_or(|o| call.outcome() == o))
            {
                continue;
            }
            if by_number && !q.as_deref().is_some_and(|q| [call.from.as_str(), call.to.as_str()].iter().any(|n| n.contains(q))) {
                continue;
            }
            // Names come from the contact: read once per number, only for calls that passed the rest.
            let name = match &call.contact {
                Some(phone) => match names.get(phone.as_str()) {
                    Some(name) => name.clone(),
                    None => {
                        let name = caller_name(store, &call).await?;
                        names.insert(phone.to_string(), name.clone());
                        name
                    }
                },
                None => None,
            };
            let matches = by_number || q.as_deref().is_none_or(|q| name.as_deref().is_some_and(|n| n.to_lowercase().contains(q)));
            if matches {
                rows.push(row(&call, name));
                if rows.len() == PAGE {
                    break 'scan;
                }
            }
        }
    }
    let next = (!exhausted).then(|| before.as_ref().map(|b| cursor(b.at, &b.id))).flatten();
    let mut keep: Vec<(&str, String)> = Vec::new();
    for (name, value) in [
        ("status", &status),
        ("outcome", &wanted_outcome),
        ("q", &filled(&query.q)),
        ("from", &filled(&query.from)),
        ("to", &filled(&query.to)),
    ] {
        if let Some(v) = value {
            keep.push((name, v.clone()));
        }
    }
    let next_url = next.map(|n| {
        let mut url = form_urlencoded::Serializer::new(String::new());
        url.extend_pairs(keep.iter().map(|(k, v)| (*k, v.as_str())));
        url.append_pair("before", &n);
        format!("/crm/calls?{}", url.finish())
    });
    let data = json!({
        "title": state.pages.word("calls"), "user": viewer.name(), "csrf": viewer.csrf, "nav": "calls",
        "rows": rows, "next": next_url, "paged": query.before.is_some(),
        "statuses": CallStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "outcomes": ["conversation", "fallback", "missed", "live"],
        "f": {
            "status": status, "outcome": wanted_outcome, "q": filled(&query.q),
            "from": filled(&query.from).map(|d| state.pages.clock.date_text(&d)),
            "to": filled(&query.to).map(|d| state.pages.clock.date_text(&d)),
        },
        "date_form": state.pages.clock.date_form(),
        "stopped": scanned >= SCAN && rows.len() < PAGE,
    });
    Ok(state.pages.render("calls.html", StatusCode::OK, data))
}

/// The caller's words and the agent's, turn by turn, as the agent heard and spoke them.
fn live_transcript(turns: &[Turn]) -> Vec<Value> {
    let mut lines = Vec::new();
    for t in turns {
        if let Some(text) = &t.caller_text {
            lines.push(json!({ "speaker": "caller", "text": text }));
        }
        if let Some(text) = &t.agent_text {
            lines.push(json!({ "speaker": "agent", "text": text }));
        }
    }
    lines
}

/// A turn's latencies from the caller's end of speech, in milliseconds.
fn turn_row(t: &Turn) -> Value {
    let since = |at: Option<Millis>| t.caller_stopped_at.zip(at).map(|(stop, at)| at - stop);
    json!({
        "seq": t.seq,
        "model_ms": since(t.model_audio_at),
        "relay_ms": t.model_audio_at.zip(t.first_audio_at).map(|(model, sent)| sent - model),
        "heard_ms": since(t.first_mark_at),
        "cut_at_ms": t.interrupted.then_some(t.heard_ms.unwrap_or(0)),
    })
}

/// A lead's fields that have a value, as (title, text) for the page.
async fn lead_fields(state: &CrmState, lead: Option<&Value>) -> Vec<(String, String)> {
    let given: Vec<(&String, &Value)> = lead.and_then(|l| l.as_object()).into_iter().flatten().filter(|(_, v)| !v.is_null()).collect();
    if given.is_empty() {
        return Vec::new();
    }
    let titles = field_titles(state).await;
    given.into_iter().map(|(k, v)| (titles.of(k, &state.pages), super::leads::cell(v))).collect()
}

/// The lead fields' titles. A profile the store cannot read costs the page its titles, not the
/// page: the fields are then shown by their words or names, and the log says why.
async fn field_titles(state: &CrmState) -> FieldTitles {
    FieldTitles::load(&state.app.config.transcription.extraction_schema, state.app.stores.calls.as_ref()).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "lead field titles not read; fields shown by name");
        FieldTitles::default()
    })
}

fn event_row(e: &CallEvent) -> Value {
    let detail = match &e.detail {
        Value::Null => String::new(),
        Value::Object(o) if o.is_empty() => String::new(),
        other => other.to_string(),
    };
    json!({ "at": e.at, "kind": e.kind, "detail": detail })
}

/// A `tool_call` event as the call page shows it: what was asked, how it went, how long it took.
fn tool_row(e: &CallEvent) -> Value {
    let d = &e.detail;
    // A built-in's arguments are the model's JSON text; a business tool's, the parsed object.
    let arguments = match &d["arguments"] {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let ok = d["ok"].as_bool().or_else(|| d["output"]["ok"].as_bool()).unwrap_or(true);
    json!({
        "at": e.at, "tool": d["tool"], "arguments": arguments, "ok": ok,
        "http_status": d["http_status"], "error": d["error"].as_str().or_else(|| d["output"]["error"].as_str()),
        "latency_ms": d["latency_ms"], "filler_said": d["filler_said"].as_bool().unwrap_or(false),
    })
}

/// A `follow_up` event: to whom, on which channel, and how Twilio took it.
fn follow_up_row(e: &CallEvent) -> Value {
    let d = &e.detail;
    json!({
        "at": e.at, "to": d["to"], "channel": d["channel"], "template": d["template"],
        "ok": d["ok"].as_bool().unwrap_or(false), "status": d["status"], "error": d["error"],
    })
}

fn call_sid(value: &str) -> Result<CallSid, CrmError> {
    CallSid::parse(value).map_err(|_| CrmError::NotFound)
}

pub async fn call(State(state): State<CrmState>, viewer: Viewer, Path(sid): Path<String>) -> Result<Response, CrmError> {
    let store = state.app.stores.calls.as_ref();
    let sid = call_sid(&sid)?;
    let Some(call) = store.get_call(&sid).await? else { return Err(CrmError::NotFound) };
    let (events, recordings, turns, transcripts, lead) = (
        store.events(&sid).await?,
        store.recordings(&sid).await?,
        store.turns(&sid).await?,
        store.transcripts(&sid).await?,
        store.lead(&sid).await?,
    );
    let name = caller_name(store, &call).await?;
    let kept: HashMap<String, bool> = transcripts.iter().map(|t| (t.recording_sid.to_string(), t.blob_key.is_some())).collect();
    let recordings: Vec<Value> = recordings
        .iter()
        .map(|r| {
            let sid = r.recording_sid.to_string();
            json!({
                "sid": sid, "status": r.status, "duration_secs": r.duration_secs, "channels": r.channels, "source": r.source,
                "listen": kept.get(&sid).copied().unwrap_or(false).then(|| format!("/crm/calls/{}/recordings/{sid}", call.call_sid)),
            })
        })
        .collect();
    let transcripts: Vec<Value> = transcripts
        .iter()
        .map(|t| {
            let lines: Vec<Value> = t
                .lines
                .iter()
                .map(|l| json!({ "speaker": format!("{:?}", l.speaker).to_lowercase(), "at": format!("{:.1}", l.start_ms as f64 / 1000.0), "text": l.text }))
                .collect();
            json!({ "recording_sid": t.recording_sid.to_string(), "language": t.language, "note": t.note, "lines": lines, "summary": t.summary, "intent": t.intent })
        })
        .collect();
    let lead = lead_fields(&state, lead.as_ref()).await;
    let figures = call.stream.as_ref().map(|f| {
        json!({
            "end": f.end.as_str(), "secs": format!("{:.1}", f.duration_ms() as f64 / 1000.0), "frames_in": f.frames_in, "gaps": f.gaps,
            "frames_out": f.frames_out, "marks": format!("{}/{}", f.marks_heard, f.marks_sent), "barge_ins": f.barge_ins,
            "bad_frames": f.bad_frames, "frame_us": format!("{}/{}", f.frame_us_p50, f.frame_us_p99),
            "model_us": (f.to_model_us_p99 > 0 || f.from_model_us_p99 > 0).then(|| format!(
                "{}/{} · {}/{}", f.to_model_us_p50, f.to_model_us_p99, f.from_model_us_p50, f.from_model_us_p99
            )),
        })
    });
    let data = json!({
        "title": format!("{} {}", state.pages.word("call"), call.call_sid), "user": viewer.name(), "csrf": viewer.csrf, "nav": "calls",
        "c": row(&call, name), "call": call, "figures": figures, "lead": lead, "live": live_transcript(&turns),
        "transcripts": transcripts, "turns": turns.iter().map(turn_row).collect::<Vec<_>>(),
        "recordings": recordings, "events": events.iter().map(event_row).collect::<Vec<_>>(),
        "tool_calls": events.iter().filter(|e| e.kind == "tool_call").map(tool_row).collect::<Vec<_>>(),
        "follow_ups": events.iter().filter(|e| e.kind == "follow_up").map(follow_up_row).collect::<Vec<_>>(),
        "after_hours": events.iter().find(|e| e.kind == "after_hours").map(|e| e.detail.clone()),
    });
    Ok(state.pages.render("call.html", StatusCode::OK, data))
}

/// The recording's audio, for the page's player, which loads its length as the page opens: a
/// redirect to a short-lived link ([`CrmState::blob_redirect`]). Who opened it is recorded (the
/// link gives the whole file), once per user and recording in ten minutes; who pressed play is
/// [`played`]'s to record.
pub async fn listen(
    State(state): State<CrmState>,
    viewer: Viewer,
    Path((sid, recording_sid)): Path<(String, String)>,
) -> Result<Response, CrmError> {
    let (sid, key) = recording_blob(&state, &sid, &recording_sid).await?;
    let at = now_ms();
    let event = CallEvent {
        at,
        kind: "crm_recording_opened".into(),
        key: format!("crm_recording_opened:{recording_sid}:{}:{}", viewer.name(), at / OPENED_WINDOW_MS),
        detail: json!({ "user": viewer.name(), "recording_sid": recording_sid }),
    };
    state.app.stores.calls.add_event(&sid, &event).await?;
    state.blob_redirect(&key).await
}

/// Opening the same recording again within this long records nothing more.
const OPENED_WINDOW_MS: i64 = 10 * 60 * 1000;

#[derive(Deserialize)]
pub struct Played {
    csrf: Option<String>,
}

/// The page's player began to play the recording (its script posts this once a page): recorded
/// as who listened, and when.
pub async fn played(
    State(state): State<CrmState>,
    viewer: Viewer,
    Path((sid, recording_sid)): Path<(String, String)>,
    Form(form): Form<Played>,
) -> Result<Response, CrmError> {
    viewer.check_csrf(&state, form.csrf.as_deref())?;
    let (sid, _) = recording_blob(&state, &sid, &recording_sid).await?;
    let at = now_ms();
    let event = CallEvent {
        at,
        kind: "crm_recording_played".into(),
        key: format!("crm_recording_played:{recording_sid}:{}:{at}", viewer.name()),
        detail: json!({ "user": viewer.name(), "recording_sid": recording_sid }),
    };
    state.app.stores.calls.add_event(&sid, &event).await?;
    tracing::info!(user = viewer.name(), call_sid = %sid, %recording_sid, "recording played");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The call and the blob key of one of its kept recordings, or 404.
async fn recording_blob(state: &CrmState, sid: &str, recording_sid: &str) -> Result<(CallSid, String), CrmError> {
    let sid = call_sid(sid)?;
    let transcripts = state.app.stores.calls.transcripts(&sid).await?;
    let key = transcripts.iter().find(|t| t.recording_sid.as_str() == recording_sid).and_then(|t| t.blob_key.clone());
    key.map(|key| (sid, key)).ok_or(CrmError::NotFound)
}

#[derive(Deserialize)]
pub struct BlobLink {
    key: String,
    expires: Millis,
    sig: String,
}

/// A blob by its signed link (the embedded store's presigned URL), typed by its extension, with
/// byte ranges so the player can seek.
pub async fn audio(State(state): State<CrmState>, headers: HeaderMap, Query(link): Query<BlobLink>) -> Result<Response, CrmError> {
    if !state.keys.blob_link_ok(&link.key, link.expires, &link.sig, now_ms()) {
        return Err(CrmError::Forbidden);
    }
    let Some(bytes) = state.app.stores.blobs.get(&link.key).await? else { return Err(CrmError::NotFound) };
    let total = bytes.len();
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).and_then(|v| byte_range(v, total));
    let (status, body, content_range) = match range {
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, bytes[start..=end].to_vec(), Some(format!("bytes {start}-{end}/{total}"))),
        None => (StatusCode::OK, bytes, None),
    };
    let (content_type, inline) = callkeeper_core::store::blob_content_type(&link.key);
    let disposition = if inline { "inline" } else { "attachment" };
    let mut response = (
        status,
        [(header::CONTENT_TYPE, content_type), (header::CONTENT_DISPOSITION, disposition), (header::ACCEPT_RANGES, "bytes")],
        body,
    )
        .into_response();
    super::render::secure_headers(response.headers_mut());
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=300"));
    if let Some(value) = content_range.and_then(|v| HeaderValue::from_str(&v).ok()) {
        response.headers_mut().insert(header::CONTENT_RANGE, value);
    }
    Ok(response)
}

/// One `bytes=a-b`, `bytes=a-` or `bytes=-n` range within `total`, inclusive; anything else
/// (several ranges, out of bounds) is answered whole.
fn byte_range(value: &str, total: usize) -> Option<(usize, usize)> {
    let spec = value.strip_prefix("bytes=")?;
    if spec.contains(',') || total == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => (total.saturating_sub(n.parse().ok()?), total - 1),
        (a, "") => (a.parse().ok()?, total - 1),
        (a, b) => (a.parse().ok()?, b.parse::<usize>().ok()?.min(total - 1)),
    };
    (start <= end && start < total).then_some((start, end))
}

#[derive(Deserialize)]
pub struct FindContact {
    phone: Option<String>,
}

pub async fn find_contact(_viewer: Viewer, Query(find): Query<FindContact>) -> Result<Response, CrmError> {
    let phone = find.phone.unwrap_or_default().replace([' ', '-'], "");
    match E164::parse(&phone) {
        Some(phone) => Ok(Redirect::to(&format!("/crm/contacts/{}", urlencode(phone.as_str()))).into_response()),
        None => Err(CrmError::BadRequest(format!("{phone:?} is not a number in E.164 form (+972501234567)"))),
    }
}

pub fn urlencode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

pub async fn contact(State(state): State<CrmState>, viewer: Viewer, Path(phone): Path<String>) -> Result<Response, CrmError> {
    let store = state.app.stores.calls.as_ref();
    let phone = E164::parse(&phone).ok_or(CrmError::NotFound)?;
    let Some(contact) = store.contact(&phone).await? else { return Err(CrmError::NotFound) };
    let timeline = store.timeline(&phone, 200).await?;
    let items: Vec<Value> = timeline
        .iter()
        .map(|item| match item {
            callkeeper_core::message::TimelineItem::Call(c) => json!({ "kind": "call", "c": row(c, None) }),
            callkeeper_core::message::TimelineItem::Message(m) => json!({
                "kind": "message", "at": m.created_at, "channel": m.channel.as_str(),
                "direction": m.direction.as_str(), "status": m.status, "body": m.body, "media": m.media.len(),
            }),
        })
        .collect();
    let lead = lead_fields(&state, contact.lead.as_ref()).await;
    let data = json!({
        "title": format!("{} {}", state.pages.word("contact"), contact.phone), "user": viewer.name(), "csrf": viewer.csrf, "nav": "calls",
        "phone": contact.phone.as_str(), "phone_path": urlencode(contact.phone.as_str()), "name": contact_name(&contact),
        "first_seen": contact.first_seen,
        "last_seen": contact.last_seen, "lead": lead, "items": items,
    });
    Ok(state.pages.render("contact.html", StatusCode::OK, data))
}

/// Leads of this many recent calls: the page and the export.
const LEAD_CALLS: usize = 1_000;

pub async fn leads(State(state): State<CrmState>, viewer: Viewer) -> Result<Response, CrmError> {
    let store = state.app.stores.calls.as_ref();
    let (table, calls) = super::leads::table(store, LEAD_CALLS).await?;
    let titles = field_titles(&state).await;
    let pages = &state.pages;
    let fields = &table.header[FIXED.len()..];
    let header: Vec<String> =
        ["id", "started", "contact"].iter().map(|w| pages.word(w).to_string()).chain(fields.iter().map(|f| titles.of(f, pages))).collect();
    // The rows and the calls come in the same order.
    let rows: Vec<Value> = table
        .rows
        .iter()
        .zip(&calls)
        .map(|(row, call)| json!({ "sid": row[0], "at": call.created_at, "contact": row[2], "values": &row[FIXED.len()..] }))
        .collect();
    let data =
        json!({ "title": pages.word("leads"), "user": viewer.name(), "csrf": viewer.csrf, "nav": "leads", "header": header, "rows": rows });
    Ok(state.pages.render("leads.html", StatusCode::OK, data))
}

/// The leads as CSV. An export takes the callers' details out of the CRM: every call in it
/// records who exported it.
pub async fn leads_csv(State(state): State<CrmState>, viewer: Viewer) -> Result<Response, CrmError> {
    let store = state.app.stores.calls.as_ref();
    let (table, calls) = super::leads::table(store, LEAD_CALLS).await?;
    let at = now_ms();
    for call in &calls {
        let event = CallEvent {
            at,
            kind: "crm_exported".into(),
            key: format!("crm_exported:{}:{at}", viewer.name()),
            detail: json!({ "user": viewer.name(), "what": "leads.csv" }),
        };
        store.add_event(&call.call_sid, &event).await?;
    }
    tracing::info!(user = viewer.name(), rows = table.rows.len(), "leads exported");
    let name = format!("attachment; filename=\"leads-{}.csv\"", &format_ms(at)[..10]);
    let mut response = (StatusCode::OK, [(header::CONTENT_TYPE, "text/csv; charset=utf-8")], table.to_csv()).into_response();
    super::render::secure_headers(response.headers_mut());
    if let Ok(value) = HeaderValue::from_str(&name) {
        response.headers_mut().insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

pub async fn now(State(state): State<CrmState>, viewer: Viewer) -> Result<Response, CrmError> {
    let store = state.app.stores.calls.as_ref();
    let at = now_ms();
    let mut rows = Vec::new();
    for active in store.active_calls().await? {
        let Some(call) = store.get_call(&active.call_sid).await? else { continue };
        let mut r = json!(row(&call, caller_name(store, &call).await?));
        r["since_secs"] = json!((at - active.status_at).max(0) / 1000);
        r["media_secs"] = json!(active.heartbeat_at.map(|h| (at - h).max(0) / 1000));
        r["redirect_pending"] = json!(active.redirect_pending);
        rows.push(r);
    }
    let data = json!({ "title": state.pages.word("now"), "user": viewer.name(), "csrf": viewer.csrf, "nav": "now", "rows": rows });
    Ok(state.pages.render("now.html", StatusCode::OK, data))
}

pub async fn operations(
    State(state): State<CrmState>,
    viewer: Viewer,
    Query(done): Query<HashMap<String, String>>,
) -> Result<Response, CrmError> {
    let queue = state.app.stores.queue.as_ref();
    let mut queues = Vec::new();
    for name in QueueName::ALL {
        let depth = queue.depth(name).await?;
        let letters: Vec<Value> = queue
            .dead_letters(name, 100)
            .await?
            .iter()
            .map(|l| {
                let body: String = l.body.chars().take(200).collect();
                json!({ "id": l.id, "dead_at": l.dead_at, "receives": l.receive_count, "error": l.last_error, "body": body })
            })
            .collect();
        queues.push(json!({ "name": name.as_str(), "depth": depth, "letters": letters }));
    }
    let data = json!({
        "title": state.pages.word("operations"), "user": viewer.name(), "csrf": viewer.csrf, "nav": "operations",
        "queues": queues, "redriven": done.get("redriven"),
    });
    Ok(state.pages.render("operations.html", StatusCode::OK, data))
}

#[derive(Deserialize)]
pub struct Redrive {
    csrf: Option<String>,
    queue: String,
    id: Option<String>,
}

pub async fn redrive(State(state): State<CrmState>, viewer: Viewer, Form(form): Form<Redrive>) -> Result<Response, CrmError> {
    viewer.check_csrf(&state, form.csrf.as_deref())?;
    let name = QueueName::parse(&form.queue).ok_or_else(|| CrmError::BadRequest(format!("no queue {:?}", form.queue)))?;
    let id = form.id.as_deref().filter(|id| !id.is_empty());
    let moved = state.app.stores.queue.redrive(name, id).await?;
    tracing::info!(user = viewer.name(), queue = name.as_str(), id = ?id, moved, "dead letters redriven from the CRM");
    Ok(Redirect::to(&format!("/crm/operations?redriven={moved}")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges_are_read_within_the_blob() {
        assert_eq!(byte_range("bytes=0-", 10), Some((0, 9)));
        assert_eq!(byte_range("bytes=2-4", 10), Some((2, 4)));
        assert_eq!(byte_range("bytes=-3", 10), Some((7, 9)));
        assert_eq!(byte_range("bytes=5-100", 10), Some((5, 9)));
        assert_eq!(byte_range("bytes=10-", 10), None);
        assert_eq!(byte_range("bytes=0-1,4-5", 10), None);
        assert_eq!(byte_range("items=0-1", 10), None);
    }
}
