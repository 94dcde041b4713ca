//! Twilio's REST API as the simulator plays it, on loopback: the local stack's `TWILIO_API_BASE`.
//! A redirect (`POST Calls/{sid}.json` with `Twiml` or `Url`) or a hang-up (`Status=completed`)
//! is handed to the live simulated call, which stops its stream and follows it, as Twilio does;
//! `GET Calls/{sid}.json` answers the call's status; the recordings the simulated calls made are
//! served (`Recordings/{sid}.wav`) and listed (`Recordings.json`, for the reconciler). It can be
//! told to fail a call's next redirects, and it logs every request for the checks.

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// What Twilio was asked to do with a live call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// New TwiML, given inline.
    Twiml(String),
    /// New TwiML, to fetch (POST) from this URL.
    Url(String),
    Hangup,
}

/// A recording a simulated call made, as Twilio keeps it.
#[derive(Debug, Clone)]
pub struct Recording {
    pub sid: String,
    pub call_sid: String,
    pub wav: bytes::Bytes,
    pub channels: u32,
    pub duration_secs: u64,
    /// `StartCallRecordingTwiML` (the whole call) or `RecordVerb` (a voicemail).
    pub source: &'static str,
    pub created: std::time::SystemTime,
}

/// A REST request as it came, and what it was answered.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub call_sid: Option<String>,
    pub status: u16,
}

struct LiveCall {
    status: String,
    from: String,
    to: String,
    updates: mpsc::UnboundedSender<Update>,
}

#[derive(Default)]
struct Inner {
    calls: HashMap<String, LiveCall>,
    recordings: Vec<Recording>,
    log: Vec<Logged>,
    /// Redirects still to refuse, by call.
    failing_redirects: HashMap<String, u32>,
}

#[derive(Clone)]
pub struct FakeTwilio {
    pub addr: SocketAddr,
    pub account_sid: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeTwilio {
    pub async fn start(account_sid: &str) -> anyhow::Result<FakeTwilio> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let fake = FakeTwilio { addr: listener.local_addr()?, account_sid: account_sid.to_string(), inner: Default::default() };
        let router = axum::Router::new().fallback(handle).with_state(fake.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(fake)
    }

    /// `TWILIO_API_BASE` for the stack.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("not poisoned")
    }

    /// A call is ringing: REST updates for it come out of the receiver.
    pub fn ring(&self, call_sid: &str, from: &str, to: &str) -> mpsc::UnboundedReceiver<Update> {
        let (updates, receiver) = mpsc::unbounded_channel();
        let call = LiveCall { status: "in-progress".into(), from: from.into(), to: to.into(), updates };
        self.inner().calls.insert(call_sid.to_string(), call);
        receiver
    }

    /// The call is over: later updates are refused as Twilio refuses them (21220).
    pub fn end(&self, call_sid: &str) {
        if let Some(call) = self.inner().calls.get_mut(call_sid) {
            call.status = "completed".into();
        }
    }

    /// The call's next `times` redirects are answered 500.
    pub fn fail_redirects(&self, call_sid: &str, times: u32) {
        self.inner().failing_redirects.insert(call_sid.to_string(), times);
    }

    pub fn keep_recording(&self, recording: Recording) {
        self.inner().recordings.push(recording);
    }

    /// Every request about this call, in order.
    pub fn requests_for(&self, call_sid: &str) -> Vec<Logged> {
        self.inner().log.iter().filter(|l| l.call_sid.as_deref() == Some(call_sid)).cloned().collect()
    }

    fn answer(&self, method: &Method, path: &str, form: &HashMap<String, String>) -> (StatusCode, Response) {
        let prefix = format!("/2010-04-01/Accounts/{}/", self.account_sid);
        let Some(rest) = path.strip_prefix(&prefix) else {
            return error(StatusCode::NOT_FOUND, 20404, "no such account");
        };
        let mut inner = self.inner();
        match (method.as_str(), rest.split_once('/')) {
            ("POST", Some(("Calls", file))) => {
                let Some(sid) = file.strip_suffix(".json") else { return error(StatusCode::NOT_FOUND, 20404, "not found") };
                let update = match (form.get("Twiml"), form.get("Url"), form.get("Status").map(String::as_str)) {
                    (Some(twiml), _, _) => Update::Twiml(twiml.clone()),
                    (None, Some(url), _) => Update::Url(url.clone()),
                    (None, None, Some("completed" | "canceled")) => Update::Hangup,
                    _ => return error(StatusCode::BAD_REQUEST, 21218, "Twiml, Url or Status is required"),
                };
                if let Some(left) = inner.failing_redirects.get_mut(sid).filter(|left| **left > 0) {
                    *left -= 1;
                    return error(StatusCode::INTERNAL_SERVER_ERROR, 20500, "Internal Server Error (the simulator was told to fail)");
                }
                let Some(call) = inner.calls.get_mut(sid) else { return error(StatusCode::NOT_FOUND, 20404, "no such call") };
                if call.status != "in-progress" {
                    return error(StatusCode::BAD_REQUEST, 21220, "Call is not in-progress. Cannot redirect.");
                }
                if update == Update::Hangup {
                    call.status = "completed".into();
                }
                let _ = call.updates.send(update);
                (StatusCode::OK, axum::Json(json!({ "sid": sid, "status": call.status })).into_response())
            }
            ("GET", Some(("Calls", file))) => {
                let sid = file.strip_suffix(".json").unwrap_or(file);
                match inner.calls.get(sid) {
                    Some(call) => (
                        StatusCode::OK,
                        axum::Json(json!({ "sid": sid, "status": call.status, "from": call.from, "to": call.to, "direction": "inbound" }))
                            .into_response(),
                    ),
                    None => error(StatusCode::NOT_FOUND, 20404, "no such call"),
                }
            }
            ("GET", Some(("Recordings", file))) if file.ends_with(".wav") => {
                let sid = file.trim_end_matches(".wav");
                match inner.recordings.iter().find(|r| r.sid == sid) {
                    Some(r) => (StatusCode::OK, ([("content-type", "audio/x-wav")], r.wav.clone()).into_response()),
                    None => error(StatusCode::NOT_FOUND, 20404, "no such recording"),
                }
            }
            ("DELETE", Some(("Recordings", file))) => {
                let sid = file.trim_end_matches(".json");
                inner.recordings.retain(|r| r.sid != sid);
                (StatusCode::NO_CONTENT, StatusCode::NO_CONTENT.into_response())
            }
            ("GET", None) if rest == "Recordings.json" => {
                let list: Vec<_> = inner
                    .recordings
                    .iter()
                    .map(|r| {
                        json!({
                            "sid": r.sid, "call_sid": r.call_sid, "status": "completed", "duration": r.duration_secs.to_string(),
                            "channels": r.channels, "source": r.source,
                            "date_created": httpdate(r.created),
                        })
                    })
                    .collect();
                (StatusCode::OK, axum::Json(json!({ "recordings": list, "next_page_uri": null })).into_response())
            }
            _ => error(StatusCode::NOT_FOUND, 20404, "the simulator does not play this resource"),
        }
    }
}

fn error(status: StatusCode, code: u32, message: &str) -> (StatusCode, Response) {
    (status, (status, axum::Json(json!({ "code": code, "message": message, "status": status.as_u16() }))).into_response())
}

/// RFC 2822 in GMT, as Twilio writes `date_created`.
fn httpdate(at: std::time::SystemTime) -> String {
    let secs = at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!("{weekday}, {day:02} {} {year} {:02}:{:02}:{:02} +0000", months[(month - 1) as usize], rem / 3600, rem % 3600 / 60, rem % 60)
}

async fn handle(State(fake): State<FakeTwilio>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let path = parts.uri.path().to_string();
    let (status, response) = fake.answer(&parts.method, &path, &form);
    let call_sid = path.split('/').find_map(|s| s.strip_prefix("CA").map(|rest| format!("CA{}", rest.trim_end_matches(".json"))));
    fake.inner().log.push(Logged { method: parts.method.to_string(), path, call_sid, status: status.as_u16() });
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_are_written_as_twilio_writes_them() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_764_547_200); // 2025-12-01 00:00:00
        assert_eq!(super::httpdate(at), "Mon, 01 Dec 2025 00:00:00 +0000");
    }
}
