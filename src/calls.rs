//! `callkeeper calls list`, `calls show` and `calls trace`: what the CRM holds, as text or JSON.

use callkeeper_core::call::Call;
use callkeeper_core::ids::CallSid;
use callkeeper_core::store::CallStore;
use callkeeper_core::stream_report::Turn;
use callkeeper_core::time::format_ms;
use serde_json::json;
use std::fmt::Write;

pub async fn list(store: &dyn CallStore, limit: usize, as_json: bool) -> anyhow::Result<String> {
    let calls = store.recent_calls(None, limit).await?;
    if as_json {
        return Ok(serde_json::to_string_pretty(&calls)? + "\n");
    }
    if calls.is_empty() {
        return Ok("no calls yet\n".into());
    }
    let mut out = format!("{:<24}  {:<34}  {:<8}  {:<15}  {:<16}  {}\n", "STARTED", "CALL SID", "DIR", "STATUS", "CONTACT", "OUTCOME");
    for c in &calls {
        writeln!(
            out,
            "{:<24}  {:<34}  {:<8}  {:<15}  {:<16}  {}",
            format_ms(c.created_at),
            c.call_sid,
            c.direction.as_str(),
            c.status.as_str(),
            c.contact.as_ref().map_or("-", |p| p.as_str()),
            outcome(c)
        )?;
    }
    Ok(out)
}

/// What was said during the call, as the agent heard and spoke it: per turn, the caller's words
/// (which ended the turn), then the agent's answer.
fn live_transcript(turns: &[Turn]) -> Vec<(&'static str, &str)> {
    let mut lines = Vec::new();
    for t in turns {
        if let Some(text) = &t.caller_text {
            lines.push(("caller", text.as_str()));
        }
        if let Some(text) = &t.agent_text {
            lines.push(("agent", text.as_str()));
        }
    }
    lines
}

/// How a call ended, in a few words: its fallback and why, and its end reason.
pub fn outcome(c: &Call) -> String {
    match (&c.fallback_reason, &c.end_reason) {
        (Some(f), Some(e)) => format!("fallback ({f}), ended: {e}"),
        (Some(f), None) => format!("fallback ({f})"),
        (None, Some(e)) => format!("ended: {e}"),
        (None, None) => "-".into(),
    }
}

/// `None` when the CRM has no such call.
pub async fn show(store: &dyn CallStore, call_sid: &CallSid, as_json: bool) -> anyhow::Result<Option<String>> {
    let Some(call) = store.get_call(call_sid).await? else { return Ok(None) };
    let events = store.events(call_sid).await?;
    let recordings = store.recordings(call_sid).await?;
    let turns = store.turns(call_sid).await?;
    let transcripts = store.transcripts(call_sid).await?;
    let lead = store.lead(call_sid).await?;
    let live = live_transcript(&turns);
    if as_json {
        let live: Vec<_> = live.iter().map(|(speaker, text)| json!({ "speaker": speaker, "text": text })).collect();
        let doc = json!({
            "call": call, "lead": lead, "live_transcript": live, "transcripts": transcripts,
            "turns": turns, "events": events, "recordings": recordings
        });
        return Ok(Some(serde_json::to_string_pretty(&doc)? + "\n"));
    }
    let mut out = String::new();
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    writeln!(out, "call        {}", call.call_sid)?;
    writeln!(out, "direction   {}", call.direction.as_str())?;
    writeln!(out, "from        {}", call.from)?;
    writeln!(out, "to          {}", call.to)?;
    writeln!(out, "status      {} (since {})", call.status, format_ms(call.status_at))?;
    writeln!(out, "started     {}", format_ms(call.created_at))?;
    writeln!(out, "stream      {}", opt(&call.stream_sid))?;
    writeln!(
        out,
        "fallback    {}",
        call.fallback_reason.as_ref().map_or("-".to_string(), |r| format!("{r} → {}", opt(&call.fallback_action)))
    )?;
    writeln!(out, "ended       {}", opt(&call.end_reason))?;
    if let Some(to) = &call.transfer_to {
        writeln!(out, "transfer    to {to}")?;
    }
    writeln!(out, "twilio      {}", opt(&call.twilio_status))?;
    writeln!(out, "relay       {}, last media {}", opt(&call.relay_instance), call.heartbeat_at.map_or("-".to_string(), format_ms))?;
    if let Some(f) = &call.stream {
        writeln!(
            out,
            "media       {} after {:.1}s: {} frames in ({} missing), {} out, {} marks heard of {}, {} barge-in(s), {} heartbeat(s), bad frames {:?}, {}/{} µs per frame p50/p99",
            f.end.as_str(),
            f.duration_ms() as f64 / 1000.0,
            f.frames_in,
            f.gaps,
            f.frames_out,
            f.marks_heard,
            f.marks_sent,
            f.barge_ins,
            f.heartbeats,
            f.bad_frames,
            f.frame_us_p50,
            f.frame_us_p99,
        )?;
        if f.to_model_us_p99 > 0 || f.from_model_us_p99 > 0 {
            writeln!(
                out,
                "model       {}/{} µs caller → model, {}/{} µs model → caller p50/p99 (the relay's own time)",
                f.to_model_us_p50, f.to_model_us_p99, f.from_model_us_p50, f.from_model_us_p99
            )?;
        }
    }
    writeln!(out, "\nlead")?;
    match lead.as_ref().and_then(|l| l.as_object()).filter(|l| !l.is_empty()) {
        None => writeln!(out, "  nothing saved yet")?,
        Some(fields) => {
            for (name, value) in fields {
                writeln!(out, "  {name:<16} {}", value.as_str().map_or_else(|| value.to_string(), str::to_string))?;
            }
        }
    }
    writeln!(out, "\nlive transcript (during the call)")?;
    if live.is_empty() {
        writeln!(out, "  none")?;
    }
    for (speaker, text) in &live {
        writeln!(out, "  {speaker:<6} {text}")?;
    }
    for t in &transcripts {
        writeln!(out, "\ntranscript of {} ({}, after the call)", t.recording_sid, t.language)?;
        if let Some(note) = &t.note {
            writeln!(out, "  ({note})")?;
        }
        for line in &t.lines {
            let speaker = format!("{:?}", line.speaker).to_lowercase();
            writeln!(out, "  {:>7}  {speaker:<6} {}", format!("{:.1}s", line.start_ms as f64 / 1000.0), line.text)?;
        }
        writeln!(out, "  summary  {}", t.summary.as_deref().unwrap_or("-"))?;
        writeln!(out, "  intent   {}", t.intent.as_deref().unwrap_or("-"))?;
    }
    writeln!(out, "\nturns (latency from the caller's end of speech: model, relay, heard)")?;
    if turns.is_empty() {
        writeln!(out, "  none")?;
    }
    for t in &turns {
        let since = |at: Option<i64>| match (t.caller_stopped_at, at) {
            (Some(stop), Some(at)) => format!("{} ms", at - stop),
            (None, Some(at)) => format_ms(at),
            (_, None) => "-".into(),
        };
        let relay = match (t.model_audio_at, t.first_audio_at) {
            (Some(model), Some(sent)) => format!("+{} ms", sent - model),
            _ => "-".into(),
        };
        writeln!(
            out,
            "  #{:<2} caller stopped {}  model audio {}  sent {} ({relay} relay)  first heard {}{}",
            t.seq,
            t.caller_stopped_at.map_or("-".to_string(), format_ms),
            since(t.model_audio_at),
            since(t.first_audio_at),
            since(t.first_mark_at),
            if t.interrupted { format!("  cut at {} ms", t.heard_ms.unwrap_or(0)) } else { String::new() },
        )?;
    }
    writeln!(out, "\nrecordings")?;
    if recordings.is_empty() {
        writeln!(out, "  none yet")?;
    }
    for r in &recordings {
        writeln!(
            out,
            "  {}  {:<11} {:>5}s  {} channel(s)  {}  transcription {}",
            r.recording_sid,
            r.status,
            r.duration_secs.map_or("?".into(), |d| d.to_string()),
            r.channels.map_or("?".into(), |c| c.to_string()),
            r.source.as_deref().unwrap_or("-"),
            r.job_enqueued_at.map_or("not queued".to_string(), |at| format!("queued {}", format_ms(at))),
        )?;
    }
    writeln!(out, "\nevents")?;
    for e in &events {
        writeln!(out, "  {}  {:<14} {}", format_ms(e.at), e.kind, e.detail)?;
    }
    Ok(Some(out))
}

/// The call's trace (`CALL_TRACES`), as JSON lines in the order they happened: the webhooks'
/// lines and each stream's chunks merged by time. `None` when the call has no trace.
pub async fn trace(store: &dyn CallStore, call_sid: &CallSid) -> anyhow::Result<Option<String>> {
    let mut lines: Vec<(i64, String)> = store
        .trace(call_sid)
        .await?
        .into_iter()
        .map(|line| (serde_json::from_str::<serde_json::Value>(&line).ok().and_then(|v| v["at"].as_i64()).unwrap_or(0), line))
        .collect();
    if lines.is_empty() {
        return Ok(None);
    }
    // Stable: lines of one millisecond keep the order they were written in.
    lines.sort_by_key(|(at, _)| *at);
    Ok(Some(lines.into_iter().map(|(_, line)| line + "\n").collect()))
}
