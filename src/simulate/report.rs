//! What a run prints: a call's timeline and record, the fault matrix, and the load summary with
//! the local stack's CPU and memory.

use super::call::Played;
use super::checks::{self, Check, Crm, Verdict};
use super::scenarios::Scenario;
use super::stack::LocalStack;
use super::{CallReport, Run};
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

pub fn call_report(played: Played, crm: Option<Crm>, checks: Vec<Check>) -> CallReport {
    let passed = checks::passed(&checks);
    let time_to_fallback_ms = match (played.fault_at_ms, played.fallback_at_ms) {
        (Some(fault), Some(fallback)) => Some(fallback.saturating_sub(fault)),
        _ => None,
    };
    CallReport {
        call_sid: played.call_sid,
        scenario: played.scenario.name(),
        outcome: played.outcome.as_str(),
        expected: played.scenario.expected().as_str(),
        longest_silence_ms: played.timeline.longest_silence_ms,
        fault_at_ms: played.fault_at_ms,
        time_to_fallback_ms,
        subprotocol: played.subprotocol,
        greeting_after_ms: played.greeting_after_ms,
        greeting_ms: played.greeting_ms,
        answer_after_ms: played.answer_after_ms,
        agent_audio_ms: played.agent_audio_ms,
        marks_echoed: played.marks_echoed,
        close: played.close,
        frames_sent: played.frames_sent,
        frames_heard: played.frames_heard,
        streams: played.streams,
        gap_ms: played.gap_ms,
        crm,
        checks,
        passed,
        timeline: played.timeline,
        audio: played.audio,
        record: None,
    }
}

/// A call the simulator could not play to its end: it fails, with the reason.
pub fn failed_call(scenario: Scenario, error: &anyhow::Error) -> CallReport {
    let played = Played::new("-".into(), scenario, tokio::time::Instant::now());
    call_report(played, None, vec![Check { name: "played", verdict: Verdict::Fail(format!("{error:#}")) }])
}

/// Samples the local stack's CPU and memory while calls run.
pub struct Sampler {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<StackUsage>,
}

/// The stack's CPU and memory over a run.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct StackUsage {
    pub cpu_ms: u64,
    pub rss_before_kib: u64,
    pub rss_peak_kib: u64,
}

impl Sampler {
    pub fn start(stack: Arc<tokio::sync::Mutex<LocalStack>>) -> Sampler {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let first = stack.lock().await.usage().unwrap_or_default();
            let (mut peak, mut last, mut cpu_ms) = (first.rss_kib, first, 0);
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
                if let Some(now) = stack.lock().await.usage() {
                    peak = peak.max(now.rss_kib);
                    // CPU is summed sample to sample: a restarted relay counts from zero again,
                    // and what the old one used stays counted (all but its last 250 ms).
                    cpu_ms += now.cpu_ms.saturating_sub(last.cpu_ms);
                    last = now;
                }
            }
            StackUsage { cpu_ms, rss_before_kib: first.rss_kib, rss_peak_kib: peak }
        });
        Sampler { stop, task }
    }

    pub async fn stop(self) -> StackUsage {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    pub calls: usize,
    pub outcomes: std::collections::BTreeMap<String, usize>,
    pub passed: usize,
    pub webhook_ms_p50: Option<u64>,
    pub webhook_ms_p99: Option<u64>,
    pub greeting_ms_p50: Option<u64>,
    pub greeting_ms_p99: Option<u64>,
    pub turn_ms_p50: Option<u64>,
    pub turn_ms_p99: Option<u64>,
    /// After a fault, the silence before the agent was heard again, over calls that had one.
    pub gap_ms_p50: Option<u64>,
    pub gap_ms_p99: Option<u64>,
    /// Calls that moved to a new stream at least once, and the streams over all calls.
    pub calls_moved: usize,
    pub streams: u64,
    /// Caller frames the relay did not count, and agent frames the relay sent that the caller
    /// did not hear, over all calls whose record says.
    pub caller_frames_lost: u64,
    pub agent_frames_lost: u64,
    pub concurrency: usize,
    pub elapsed_ms: u64,
    /// The stack's CPU per call, and its memory per concurrent call (peak over the start).
    pub cpu_ms_per_call: Option<f64>,
    pub rss_kib_per_call: Option<f64>,
    pub usage: Option<StackUsage>,
}

fn percentile(values: &mut [u64], q: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

impl Summary {
    pub fn of(calls: &[CallReport], usage: Option<StackUsage>, elapsed: Duration, concurrency: usize) -> Summary {
        let mut webhooks: Vec<u64> =
            calls.iter().flat_map(|c| c.timeline.webhooks.iter().filter(|w| w.status != 0).map(|w| w.ms)).collect();
        let mut greetings: Vec<u64> = calls.iter().filter_map(|c| c.greeting_after_ms).collect();
        let mut turns: Vec<u64> = calls.iter().flat_map(|c| c.answer_after_ms.iter().flatten().copied()).collect();
        let mut gaps: Vec<u64> = calls.iter().filter_map(|c| c.gap_ms).collect();
        let mut outcomes = std::collections::BTreeMap::new();
        for c in calls {
            *outcomes.entry(c.outcome.to_string()).or_insert(0) += 1;
        }
        let (mut caller_lost, mut agent_lost) = (0, 0);
        // Only where the call ended as it should; a stream cut on purpose loses what was in flight.
        for c in calls.iter().filter(|c| c.outcome == "conversation") {
            if let Some(crm) = &c.crm {
                if let (Some(frames_in), Some(frames_out)) = (crm.frames_in, crm.frames_out) {
                    caller_lost += c.frames_sent.saturating_sub(frames_in);
                    agent_lost += frames_out.saturating_sub(c.frames_heard);
                }
            }
        }
        let n = calls.len().max(1) as f64;
        Summary {
            calls: calls.len(),
            outcomes,
            passed: calls.iter().filter(|c| c.passed).count(),
            webhook_ms_p50: percentile(&mut webhooks, 0.5),
            webhook_ms_p99: percentile(&mut webhooks, 0.99),
            greeting_ms_p50: percentile(&mut greetings, 0.5),
            greeting_ms_p99: percentile(&mut greetings, 0.99),
            turn_ms_p50: percentile(&mut turns, 0.5),
            turn_ms_p99: percentile(&mut turns, 0.99),
            gap_ms_p50: percentile(&mut gaps, 0.5),
            gap_ms_p99: percentile(&mut gaps, 0.99),
            calls_moved: calls.iter().filter(|c| c.streams > 1).count(),
            streams: calls.iter().map(|c| u64::from(c.streams)).sum(),
            caller_frames_lost: caller_lost,
            agent_frames_lost: agent_lost,
            concurrency,
            elapsed_ms: elapsed.as_millis() as u64,
            cpu_ms_per_call: usage.map(|u| u.cpu_ms as f64 / n),
            rss_kib_per_call: usage
                .map(|u| u.rss_peak_kib.saturating_sub(u.rss_before_kib) as f64 / concurrency.min(calls.len()).max(1) as f64),
            usage,
        }
    }
}

fn ms(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| format!("{v} ms"))
}

/// One call for a person: the timeline, the checks, the record.
pub fn describe(c: &CallReport) -> String {
    let mut out = format!("call {} — scenario {}: {} (expected {})\n", c.call_sid, c.scenario, c.outcome, c.expected);
    let mut lines: Vec<(u64, String)> = c.timeline.moments.iter().map(|m| (m.at_ms, m.what.clone())).collect();
    lines.extend(c.timeline.webhooks.iter().map(|w| (w.at_ms, format!("webhook {} → {} in {} ms", w.name, w.status, w.ms))));
    lines.extend(c.timeline.silences.iter().map(|s| (s.from_ms, format!("silence of {:.1} s", s.ms as f64 / 1000.0))));
    lines.sort_by_key(|(at, _)| *at);
    for (at, what) in lines {
        let _ = writeln!(out, "  {:>7.2} s  {what}", at as f64 / 1000.0);
    }
    let _ = writeln!(out, "  {:>7.2} s  the call is over", c.timeline.ended_ms as f64 / 1000.0);
    let _ = writeln!(
        out,
        "  greeting after {}, answers after {}; longest silence {} ms; time to fallback {}",
        ms(c.greeting_after_ms),
        c.answer_after_ms.iter().map(|a| ms(*a)).collect::<Vec<_>>().join(", "),
        c.longest_silence_ms,
        ms(c.time_to_fallback_ms)
    );
    match &c.crm {
        Some(crm) => {
            let _ = writeln!(out, "  the CRM holds: {}", holds(crm));
        }
        None => out += "  the CRM: not checked (its store is not readable from here)\n",
    }
    for check in &c.checks {
        let _ = writeln!(out, "  check {:<26} {}", check.name, verdict(&check.verdict));
    }
    out
}

fn verdict(v: &Verdict) -> String {
    match v {
        Verdict::Pass => "pass".into(),
        Verdict::Fail(why) => format!("FAIL: {why}"),
        Verdict::NotChecked(why) => format!("not checked: {why}"),
    }
}

fn holds(crm: &Crm) -> String {
    let mut parts = vec![crm.status.clone()];
    if let Some(reason) = &crm.fallback_reason {
        parts.push(format!("fallback {} ({reason})", crm.fallback_action.as_deref().unwrap_or("-")));
    }
    parts.push(format!("{} turns", crm.turns));
    if crm.generation > 0 || crm.model_resumes > 0 {
        parts.push(format!("{} stream moves, {} model resumes ({} lines replayed)", crm.generation, crm.model_resumes, crm.lines_replayed));
    }
    parts.push(format!("{} transcript lines", crm.transcript_lines));
    if crm.recordings > 0 {
        parts.push(format!("{} recordings", crm.recordings));
    }
    if let Some(note) = &crm.transcript_note {
        parts.push(format!("note: {note}"));
    }
    parts.join(", ")
}

/// Many calls: a row per scenario, with the worst silence and the slowest fallback.
pub fn by_scenario(run: &Run) -> String {
    let mut out = format!(
        "{:<20} {:>6} {:>7}  {:<40} {:>14} {:>16}\n",
        "SCENARIO", "CALLS", "PASSED", "OUTCOMES", "WORST SILENCE", "SLOWEST FALLBACK"
    );
    let mut names: Vec<&str> = run.calls.iter().map(|c| c.scenario).collect();
    names.dedup();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let calls: Vec<&CallReport> = run.calls.iter().filter(|c| c.scenario == name).collect();
        let mut outcomes = std::collections::BTreeMap::new();
        for c in &calls {
            *outcomes.entry(c.outcome).or_insert(0) += 1;
        }
        let _ = writeln!(
            out,
            "{name:<20} {:>6} {:>7}  {:<40} {:>11} ms {:>16}",
            calls.len(),
            calls.iter().filter(|c| c.passed).count(),
            outcomes.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", "),
            calls.iter().map(|c| c.longest_silence_ms).max().unwrap_or(0),
            ms(calls.iter().filter_map(|c| c.time_to_fallback_ms).max()),
        );
    }
    out
}

/// The fault matrix: a row per call.
pub fn matrix(run: &Run) -> String {
    let mut out = format!(
        "{:<20} {:<13} {:<5} {:>10} {:>12} {:>9} {:>7}  {}\n",
        "SCENARIO", "OUTCOME", "PASS", "SILENCE", "TO FALLBACK", "GAP", "STREAMS", "THE CRM HOLDS"
    );
    for c in &run.calls {
        let crm = c.crm.as_ref().map_or("not checked".to_string(), holds);
        let _ = writeln!(
            out,
            "{:<20} {:<13} {:<5} {:>10} {:>12} {:>9} {:>7}  {crm}",
            c.scenario,
            c.outcome,
            if c.passed { "yes" } else { "NO" },
            format!("{} ms", c.longest_silence_ms),
            ms(c.time_to_fallback_ms),
            ms(c.gap_ms),
            c.streams
        );
    }
    for (scenario, why) in &run.skipped {
        let _ = writeln!(out, "{:<20} not played: {why}", scenario.name());
    }
    if let Some(letters) = &run.dead_letters {
        let _ = writeln!(out, "dead letters after the run: {}", if letters.is_empty() { "none".to_string() } else { letters.join("; ") });
    }
    out
}

pub fn summary(s: &Summary) -> String {
    let mut out = format!(
        "{} calls, {} at a time, in {:.1} s: {}; {} passed\n",
        s.calls,
        s.concurrency,
        s.elapsed_ms as f64 / 1000.0,
        s.outcomes.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", "),
        s.passed
    );
    let _ = writeln!(out, "  webhook answer   p50 {}  p99 {}", ms(s.webhook_ms_p50), ms(s.webhook_ms_p99));
    let _ = writeln!(out, "  greeting after   p50 {}  p99 {}", ms(s.greeting_ms_p50), ms(s.greeting_ms_p99));
    let _ = writeln!(out, "  answer after     p50 {}  p99 {}", ms(s.turn_ms_p50), ms(s.turn_ms_p99));
    if s.gap_ms_p50.is_some() || s.calls_moved > 0 {
        let _ = writeln!(
            out,
            "  after a fault    gap p50 {}  p99 {}; {} calls moved to a new stream ({} streams in all)",
            ms(s.gap_ms_p50),
            ms(s.gap_ms_p99),
            s.calls_moved,
            s.streams
        );
    }
    let _ = writeln!(out, "  frames lost      {} of the callers', {} of the agent's", s.caller_frames_lost, s.agent_frames_lost);
    if let (Some(cpu), Some(rss), Some(usage)) = (s.cpu_ms_per_call, s.rss_kib_per_call, s.usage) {
        let _ = writeln!(
            out,
            "  local stack      {cpu:.0} CPU-ms per call, {rss:.0} KiB per concurrent call (RSS {} → {} KiB)",
            usage.rss_before_kib, usage.rss_peak_kib
        );
    }
    out
}
