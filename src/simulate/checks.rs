//! What the CRM holds of a simulated call, and whether the call kept the promise: the record
//! holds the conversation's turns, or a fallback with a transcript or a voicemail, never nothing;
//! no silence over 10 s; nothing twice; the outcome the scenario calls for.

use super::call::Played;
use super::scenarios::{Outcome, Scenario};
use callkeeper_core::call::CallStatus;
use callkeeper_core::ids::CallSid;
use callkeeper_core::store::{CallStore, JobQueue};
use serde::Serialize;
use std::collections::HashSet;
use std::time::Duration;
use tokio::time::Instant;

/// The longest a caller may sit in silence.
pub const MAX_SILENCE_MS: u64 = 10_000;

/// The call as the CRM holds it.
#[derive(Debug, Clone, Serialize)]
pub struct Crm {
    pub status: String,
    pub end_reason: Option<String>,
    pub fallback_reason: Option<String>,
    pub fallback_action: Option<String>,
    pub turns: usize,
    /// Lines of the live transcript (what the agent heard and said).
    pub live_lines: usize,
    pub recordings: usize,
    pub transcripts: usize,
    pub transcript_lines: usize,
    pub summary: Option<String>,
    /// Why a transcript has no lines, when one says.
    pub transcript_note: Option<String>,
    pub frames_in: Option<u64>,
    pub frames_out: Option<u64>,
    pub bad_frames: u64,
    pub events: Vec<String>,
    /// The call's last stream generation (0: it never moved) and how many faults moved it.
    pub generation: u32,
    pub recoveries: u32,
    /// Model sessions opened after the call's first (a drop, a rotation, a new relay), and the
    /// most lines of the conversation any of them was given.
    pub model_resumes: usize,
    pub lines_replayed: u64,
    /// The details of the call's `tool_call` events.
    pub tool_calls: Vec<serde_json::Value>,
    /// The caller's live transcript lines that hold a keypad entry (`… ⌨ 1 2 3 #`).
    pub keypad_lines: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "result", content = "detail", rename_all = "kebab-case")]
pub enum Verdict {
    Pass,
    Fail(String),
    /// Cannot be seen from where the simulator stands (a remote stack's store or Twilio).
    NotChecked(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// Reads the call once the stack has settled it: its status final and each reported
/// recording transcribed (or `settle` gone by).
pub async fn read(store: &dyn CallStore, played: &Played, settle: Duration) -> anyhow::Result<Option<Crm>> {
    let sid = CallSid::parse(&played.call_sid)?;
    let until = Instant::now() + settle;
    loop {
        let call = store.get_call(&sid).await.ok().flatten();
        let transcripts = store.transcripts(&sid).await.unwrap_or_default();
        let transcribed: HashSet<String> = transcripts.iter().map(|t| t.recording_sid.to_string()).collect();
        let settled = call.as_ref().is_some_and(|c| c.status == CallStatus::Completed)
            && transcribable(played).all(|r| transcribed.contains(r))
            && transcripts.iter().all(|t| t.summary.is_some() || t.note.is_some() || t.lines.is_empty());
        if settled || Instant::now() >= until {
            let Some(call) = call else { return Ok(None) };
            let turns = store.turns(&sid).await?;
            let recordings = store.recordings(&sid).await?;
            let events = store.events(&sid).await?;
            let live_lines = turns.iter().map(|t| usize::from(t.caller_text.is_some()) + usize::from(t.agent_text.is_some())).sum();
            return Ok(Some(Crm {
                status: call.status.as_str().to_string(),
                end_reason: call.end_reason.clone(),
                fallback_reason: call.fallback_reason.clone(),
                fallback_action: call.fallback_action.clone(),
                turns: turns.len(),
                live_lines,
                recordings: recordings.len(),
                transcripts: transcripts.len(),
                transcript_lines: transcripts.iter().map(|t| t.lines.len()).sum(),
                summary: transcripts.iter().find_map(|t| t.summary.clone()),
                transcript_note: transcripts.iter().find_map(|t| t.note.clone()),
                frames_in: call.stream.as_ref().map(|s| s.frames_in),
                frames_out: call.stream.as_ref().map(|s| s.frames_out),
                bad_frames: call.stream.as_ref().map_or(0, |s| s.bad_frames.values().sum()),
                events: events.iter().map(|e| e.kind.clone()).collect(),
                generation: call.generation,
                recoveries: call.recoveries,
                model_resumes: events.iter().filter(|e| e.kind == "model_session").count(),
                lines_replayed: events
                    .iter()
                    .filter(|e| e.kind == "model_session")
                    .filter_map(|e| e.detail["lines_replayed"].as_u64())
                    .max()
                    .unwrap_or(0),
                tool_calls: events.iter().filter(|e| e.kind == "tool_call").map(|e| e.detail.clone()).collect(),
                keypad_lines: turns.iter().filter_map(|t| t.caller_text.clone()).filter(|t| t.contains('⌨')).collect(),
            }));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The recordings long enough to be transcribed (`MIN_RECORDING_SECS`, 2 by default): shorter
/// ones are kept and skipped.
fn transcribable(played: &Played) -> impl Iterator<Item = &String> {
    let min_secs: u64 = std::env::var("MIN_RECORDING_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    played.recordings.iter().filter(move |(_, secs)| *secs >= min_secs).map(|(sid, _)| sid)
}

/// The checks on one call; `twilio` when the simulator plays Twilio's REST (and can see it).
pub fn checks(played: &Played, crm: Option<&Crm>, twilio: Option<&super::fake_twilio::FakeTwilio>) -> Vec<Check> {
    let mut out = Vec::new();
    let mut push = |name, verdict| out.push(Check { name, verdict });
    let scenario = played.scenario;
    let expected = scenario.expected();
    push(
        "outcome",
        if played.outcome == expected {
            Verdict::Pass
        } else {
            Verdict::Fail(format!("expected {}, the caller got {}", expected.as_str(), played.outcome.as_str()))
        },
    );
    push(
        "silence",
        if played.timeline.longest_silence_ms <= MAX_SILENCE_MS {
            Verdict::Pass
        } else {
            Verdict::Fail(format!("the caller sat {} ms in silence (at most {MAX_SILENCE_MS})", played.timeline.longest_silence_ms))
        },
    );
    push(
        "one-fallback",
        if played.redirects_in_fallback == 0 {
            Verdict::Pass
        } else {
            Verdict::Fail(format!("{} redirects cut the caller's fallback (the apology again)", played.redirects_in_fallback))
        },
    );
    let Some(crm) = crm else {
        let why = "the stack's store is not readable from here".to_string();
        push("crm-holds-the-call", Verdict::NotChecked(why.clone()));
        push("nothing-twice", Verdict::NotChecked(why));
        return out;
    };
    let voicemail = played.voicemail && crm.recordings >= 2;
    let holds = match played.outcome {
        Outcome::Conversation | Outcome::Continued | Outcome::Hangup => crm.turns > 0 || crm.transcript_lines > 0,
        Outcome::Fallback => crm.fallback_reason.is_some() && (crm.transcript_lines > 0 || voicemail || crm.turns > 0),
    };
    push(
        "crm-holds-the-call",
        if !holds {
            Verdict::Fail(format!("the CRM holds {crm:?}"))
        } else if crm.status != "completed" {
            Verdict::Fail(format!("the call is still {} in the CRM", crm.status))
        } else if crm.transcripts < transcribable(played).count() {
            Verdict::Fail(format!(
                "{} recordings to transcribe reported, {} transcripts kept",
                transcribable(played).count(),
                crm.transcripts
            ))
        } else {
            Verdict::Pass
        },
    );
    push(
        "nothing-twice",
        if crm.transcripts > played.recordings.len().max(crm.recordings) {
            Verdict::Fail(format!("{} transcripts for {} recordings", crm.transcripts, crm.recordings))
        } else if crm.events.iter().filter(|k| *k == "twiml_served").count() > 1 {
            Verdict::Fail("the call's TwiML was served twice".into())
        } else if crm.events.iter().filter(|k| k.starts_with("fallback")).count() > 1 {
            Verdict::Fail(format!("more than one fallback: {:?}", crm.events))
        } else {
            Verdict::Pass
        },
    );
    if expected == Outcome::Continued {
        // The conversation went on where it was: a new session was given the turns before.
        push(
            "history-replayed",
            if crm.model_resumes > 0 && crm.lines_replayed > 0 {
                Verdict::Pass
            } else {
                Verdict::Fail(format!("{} model sessions resumed, at most {} lines replayed", crm.model_resumes, crm.lines_replayed))
            },
        );
        push(
            "no-fallback",
            if crm.fallback_reason.is_none() {
                Verdict::Pass
            } else {
                Verdict::Fail(format!("the call fell back ({:?})", crm.fallback_reason))
            },
        );
    }
    match scenario {
        Scenario::BadFrames => push(
            "bad-frames-counted",
            if crm.bad_frames >= played.bad_frames_sent {
                Verdict::Pass
            } else {
                Verdict::Fail(format!("{} bad frames sent, {} counted", played.bad_frames_sent, crm.bad_frames))
            },
        ),
        Scenario::TwilioRestFlaps => push(
            "redirect-retried",
            match twilio {
                None => Verdict::NotChecked("Twilio's REST side is real here".into()),
                Some(twilio) => {
                    let redirects: Vec<u16> =
                        twilio.requests_for(&played.call_sid).iter().filter(|r| r.method == "POST").map(|r| r.status).collect();
                    if redirects.len() >= 3 && redirects[..2] == [500, 500] && redirects.contains(&200) {
                        Verdict::Pass
                    } else {
                        Verdict::Fail(format!("redirect answers {redirects:?}: expected two 500s, then a 200"))
                    }
                }
            },
        ),
        Scenario::ToolCall | Scenario::ToolCallSlow | Scenario::ToolCallDown => push("tool-answered", tool_answered(scenario, crm)),
        Scenario::Keypad => push(
            "keypad-read",
            if crm.keypad_lines.iter().any(|l| l.contains("⌨ 1 2 3 #")) {
                Verdict::Pass
            } else {
                Verdict::Fail(format!("the live transcript's keypad lines: {:?}", crm.keypad_lines))
            },
        ),
        Scenario::AfterHours => push(
            "after-hours-voicemail",
            if crm.fallback_reason.as_deref() == Some("after_hours") && crm.events.iter().any(|e| e == "after_hours") {
                Verdict::Pass
            } else {
                Verdict::Fail(format!("fallback {:?}, events {:?}", crm.fallback_reason, crm.events))
            },
        ),
        Scenario::RecordingAbsent => push(
            "turns-without-recording",
            if crm.recordings == 0 && crm.live_lines > 0 {
                Verdict::Pass
            } else {
                Verdict::Fail(format!("{} recordings, {} live lines", crm.recordings, crm.live_lines))
            },
        ),
        _ => {}
    }
    out
}

/// The scenario's one business tool call: answered (a filler said only when it was slow), or,
/// with the system down, failed and told to the model while the call went on.
fn tool_answered(scenario: Scenario, crm: &Crm) -> Verdict {
    let [call] = crm.tool_calls.as_slice() else { return Verdict::Fail(format!("{} tool calls, not one", crm.tool_calls.len())) };
    let (ok, filler) = (call["ok"].as_bool().unwrap_or(false), call["filler_said"].as_bool().unwrap_or(false));
    let wanted = match scenario {
        Scenario::ToolCall => (true, false),
        Scenario::ToolCallSlow => (true, true),
        _ => (false, false),
    };
    if call["tool"] != "check_availability" || (ok, filler) != wanted {
        return Verdict::Fail(format!("expected ok={} filler={}, the call has {call}", wanted.0, wanted.1));
    }
    Verdict::Pass
}

/// Dead letters on either queue: a job the stack gave up on (nothing may be lost).
pub async fn dead_letters(queue: &dyn JobQueue) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for name in callkeeper_core::job::QueueName::ALL {
        for letter in queue.dead_letters(name, 100).await? {
            out.push(format!("{}: {}", name.as_str(), letter.last_error.unwrap_or_default()));
        }
    }
    Ok(out)
}

pub fn passed(checks: &[Check]) -> bool {
    checks.iter().all(|c| !matches!(c.verdict, Verdict::Fail(_)))
}

/// `transcription-flaps`: two transcriptions failed on purpose, then one worked, and its lines were
/// kept. Counted on the simulator's OpenAI around that call only (`before` and `after` are its
/// asked and failed totals).
pub fn transcription_retried(report: &mut super::CallReport, before: (u64, u64), after: (u64, u64)) {
    let (asked, failed) = (after.0 - before.0, after.1 - before.1);
    let lines = report.crm.as_ref().map_or(0, |c| c.transcript_lines);
    let verdict = if failed == 2 && asked > failed && lines > 0 {
        Verdict::Pass
    } else {
        Verdict::Fail(format!("{asked} transcriptions asked, {failed} failed on purpose, {lines} lines kept"))
    };
    report.checks.push(Check { name: "transcription-retried", verdict });
    report.passed = passed(&report.checks);
}
