//! The watchdog: no caller sits in silence. It finds calls whose stream never started or went
//! quiet, while the caller is still on the line. A stream gone quiet (its relay hangs) is first
//! moved to a new stream through Twilio's REST API, so another relay continues the conversation
//! (see [`reconnect`]); a stream that never started, or a call out of recoveries, is redirected
//! to the fallback.
//!
//! Each pass reads the store's active-call index once (never a scan of all calls) and decides
//! from what the index holds. A stale call is claimed with the same conditional write
//! `stream_ended` uses ([`fallback::claim`]), so one call gets one redirect however many watchdogs
//! run and whatever `stream_ended` does. A claimed call stays on the list (`redirect_pending`)
//! until Twilio has taken the redirect; a call Twilio says is over (21220, 20404) is closed out.
//! Every decision is an event on the call, with its times.

use crate::domain::call::{ActiveCall, CallEvent, CallPatch, CallStatus};
use crate::domain::ids::CallSid;
use crate::domain::time::{now_ms, Millis};
use crate::domain::transcript::JobClaim;
use crate::housekeeping::fallback::{self, Claim, ClaimedBy};
use crate::housekeeping::reconnect::{self, Next, Why};
use crate::process::config::{Config, Timeouts};
use crate::store::{CallStore, StoreResult};
use crate::twilio::rest::{CallUpdate, TwilioRest, Updated};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// Redirects in flight at once within a pass.
const CONCURRENT_REDIRECTS: usize = 16;
/// After claiming a call whose heartbeats stopped, how long the watchdog gives writes that were
/// stuck behind the same store trouble (the relay's end of the stream) before it looks again.
const AFTER_CLAIM: Duration = Duration::from_millis(500);
/// One redirect attempt at a time per call, across watchdogs: the attempt holds a claim this
/// long at most (Twilio's retries inside one request take 10 s at most, plus `AFTER_CLAIM`), so a
/// watchdog that dies mid-attempt leaves the call to the next pass after it.
const REDIRECT_ATTEMPT: Duration = Duration::from_secs(30);
/// A pending redirect is retried by other passes only this long after its call was claimed:
/// the claimant goes first (and looks whether the stream has ended, `AFTER_CLAIM`).
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// A call `ringing` this long can no longer be: Twilio rings an outbound call for at most 600 s
/// (`Timeout`), so its final status callback was lost. Twilio is asked, and the call closed out.
pub const RINGING_AT_MOST: Duration = Duration::from_secs(11 * 60);
/// How often Twilio is asked about one such call while it says the call goes on.
const ASK_EVERY: Duration = Duration::from_secs(60);

/// Why a call needs the fallback, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stale {
    pub reason: &'static str,
    /// When it became stale: the start timeout's or the heartbeat's deadline.
    pub since: Millis,
}

/// Whether the call on the list is stale at `now`.
pub fn staleness(call: &ActiveCall, now: Millis, timeouts: &Timeouts) -> Option<Stale> {
    let deadline = |from: Millis, limit: Duration| from + limit.as_millis() as Millis;
    let stale = match call.status {
        CallStatus::AwaitingStream => Stale { reason: "stream_never_started", since: deadline(call.status_at, timeouts.stream_start) },
        // Until its first heartbeat, a stream is as fresh as the moment it started; a later
        // stream of the call (a new generation) too, whatever the last one's heartbeats were.
        CallStatus::Streaming => {
            let fresh = call.heartbeat_at.map_or(call.status_at, |beat| beat.max(call.status_at));
            Stale { reason: "heartbeat_stale", since: deadline(fresh, timeouts.heartbeat_stale) }
        }
        // Not answered yet (Twilio has not asked for TwiML), or already handled.
        CallStatus::Ringing | CallStatus::Fallback | CallStatus::Transferred | CallStatus::Completed => return None,
    };
    (now >= stale.since).then_some(stale)
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PassReport {
    /// Calls on the list.
    pub active: usize,
    pub stale: usize,
    pub redirected: usize,
    /// Calls whose relay hung, moved to a new stream (another relay continues the conversation).
    pub reconnected: usize,
    /// Claimed by someone else first, or ended meanwhile.
    pub already_handled: usize,
    /// Twilio said the call was over: closed out.
    pub call_over: usize,
    /// Ringing past any ring, and over by Twilio's account (or unknown to it): closed out.
    pub aged_out: usize,
    /// The redirect failed; it stays pending when the failure may pass.
    pub failed: usize,
    /// Store operations this pass issued.
    pub store_reads: u64,
    pub store_writes: u64,
}

impl PassReport {
    fn add(&mut self, other: &PassReport) {
        self.stale += other.stale;
        self.redirected += other.redirected;
        self.reconnected += other.reconnected;
        self.already_handled += other.already_handled;
        self.call_over += other.call_over;
        self.aged_out += other.aged_out;
        self.failed += other.failed;
        self.store_reads += other.store_reads;
        self.store_writes += other.store_writes;
    }
}

/// What a run of passes did (one scheduled invocation, or `serve`'s loop so far).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunReport {
    pub passes: u64,
    pub store_errors: u64,
    pub totals: PassReport,
}

#[derive(Clone)]
pub struct Watchdog {
    calls: Arc<dyn CallStore>,
    twilio: TwilioRest,
    config: Arc<Config>,
    /// When Twilio was last asked about each call ringing too long.
    asked: Arc<std::sync::Mutex<std::collections::HashMap<crate::domain::ids::CallSid, Millis>>>,
}

impl Watchdog {
    pub fn new(calls: Arc<dyn CallStore>, twilio: TwilioRest, config: Arc<Config>) -> Watchdog {
        Watchdog { calls, twilio, config, asked: Arc::default() }
    }

    /// Whether to ask Twilio about a call ringing too long now (at most once per [`ASK_EVERY`]).
    fn ask_now(&self, call: &ActiveCall, now: Millis) -> bool {
        if call.status != CallStatus::Ringing || now - call.status_at < RINGING_AT_MOST.as_millis() as Millis {
            return false;
        }
        let mut asked = self.asked.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match asked.get(&call.call_sid) {
            Some(at) if now - at < ASK_EVERY.as_millis() as Millis => false,
            _ => {
                asked.insert(call.call_sid.clone(), now);
                true
            }
        }
    }

    /// A call ringing past any ring: closed out if Twilio says it is over or does not know it.
    async fn age_out(&self, call: &ActiveCall) -> StoreResult<PassReport> {
        let mut report = PassReport::default();
        let sid = &call.call_sid;
        let end_reason = match self.twilio.fetch_call(sid).await {
            Ok(None) => "unknown_to_twilio".to_string(),
            Ok(Some(call)) if call.is_over() => call.status.replace('-', "_"),
            Ok(Some(call)) => {
                tracing::warn!(call_sid = %sid, status = call.status, "watchdog: ringing for long, and Twilio says it goes on; asking again later");
                return Ok(report);
            }
            Err(e) => {
                tracing::warn!(call_sid = %sid, error = %e, "watchdog: could not ask Twilio about a call ringing for long");
                return Ok(report);
            }
        };
        let at = now_ms();
        let patch = CallPatch { end_reason: Some(end_reason.clone()), ..Default::default() };
        self.calls.transition(sid, &[CallStatus::Ringing], CallStatus::Completed, &patch, at).await?;
        let detail = json!({ "end_reason": end_reason, "ringing_since": call.status_at });
        self.calls.add_event(sid, &CallEvent { at, kind: "watchdog_aged_out".into(), key: "watchdog_aged_out".into(), detail }).await?;
        self.asked.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(sid);
        tracing::info!(call_sid = %sid, end_reason, "watchdog: a call whose final status never came is closed out");
        report.aged_out = 1;
        report.store_writes = 2;
        Ok(report)
    }

    /// One look at the list, acting on every stale call.
    pub async fn pass(&self) -> StoreResult<PassReport> {
        let now = now_ms();
        let list = self.calls.active_calls().await?;
        let mut report = PassReport { active: list.len(), store_reads: 1, ..Default::default() };
        // The oldest heartbeat among streaming calls: how close the relays run to the stale line.
        // A call streaming for less than one interval has none yet, and counts from its start.
        let lag = list
            .iter()
            .filter(|c| c.status == CallStatus::Streaming && !c.redirect_pending)
            .map(|c| now - c.heartbeat_at.unwrap_or(c.status_at))
            .max();
        if let Some(lag) = lag {
            crate::process::metrics::record(crate::process::metrics::HEARTBEAT_LAG, lag.max(0) as f64, &[]);
        }
        let mut work = JoinSet::new();
        let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_REDIRECTS));
        for call in list {
            if self.ask_now(&call, now) {
                let (watchdog, permits) = (self.clone(), permits.clone());
                work.spawn(async move {
                    let _permit = permits.acquire_owned().await.expect("never closed");
                    watchdog.age_out(&call).await
                });
                continue;
            }
            let stale = if call.redirect_pending {
                (now - call.status_at >= RETRY_AFTER.as_millis() as Millis)
                    .then_some(Stale { reason: "redirect_retry", since: call.status_at })
            } else {
                staleness(&call, now, &self.config.timeouts)
            };
            let Some(stale) = stale else { continue };
            let (watchdog, permits) = (self.clone(), permits.clone());
            work.spawn(async move {
                let _permit = permits.acquire_owned().await.expect("never closed");
                watchdog.handle(&call, stale, now).await
            });
        }
        while let Some(done) = work.join_next().await {
            match done {
                Ok(Ok(one)) => report.add(&one),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "watchdog: store failed on a stale call; it is retried next pass");
                    report.failed += 1;
                }
                Err(e) => tracing::error!(error = %e, "watchdog task failed"),
            }
        }
        Ok(report)
    }

    async fn handle(&self, call: &ActiveCall, stale: Stale, detected_at: Millis) -> StoreResult<PassReport> {
        let mut report = PassReport { stale: 1, ..Default::default() };
        let sid = &call.call_sid;
        // A relay that hangs: the conversation first tries to go on on a new stream.
        if !call.redirect_pending && stale.reason == "heartbeat_stale" && self.reconnect(call, stale, detected_at, &mut report).await? {
            return Ok(report);
        }
        if !call.redirect_pending {
            report.store_writes += 1;
            match fallback::claim(self.calls.as_ref(), &self.config, sid, stale.reason, ClaimedBy::Watchdog).await? {
                Claim::Won(_) => report.store_writes += 1, // and its event
                Claim::AlreadyInFallback(_) | Claim::Ended(_) | Claim::Moved(_) | Claim::NotFound => {
                    report.already_handled = 1;
                    return Ok(report);
                }
            }
        }
        // Another watchdog (or this one's next pass) sees the call pending while this attempt
        // runs: only the holder of the attempt's claim redirects, so the caller hears the
        // fallback once.
        let attempt = format!("redirect:{sid}");
        report.store_writes += 1;
        if self.calls.claim_job(&attempt, now_ms(), REDIRECT_ATTEMPT).await? != JobClaim::Claimed {
            report.already_handled = 1;
            return Ok(report);
        }
        if !call.redirect_pending {
            if stale.reason == "heartbeat_stale" && self.stream_is_over(sid, &mut report).await? {
                self.calls.finish_job(&attempt, now_ms()).await?;
                return Ok(report);
            }
            tracing::warn!(call_sid = %sid, reason = stale.reason, stale_ms = detected_at - stale.since, "watchdog: redirecting the call to the fallback");
        }
        let requested_at = now_ms();
        let twiml = fallback::twiml(&self.config).into_string();
        let outcome = self.twilio.update_call(sid, &CallUpdate::Twiml(twiml)).await;
        let answered_at = now_ms();
        let times = json!({
            "reason": stale.reason,
            "stale_at": stale.since,
            "detected_at": detected_at,
            "requested_at": requested_at,
            "detection_ms": requested_at - stale.since,
            "twilio_ms": answered_at - requested_at,
        });
        let done = CallPatch { redirect_pending: Some(false), ..Default::default() };
        // A transient failure is retried by a later pass, which needs the attempt's claim back.
        let retried = matches!(&outcome, Err(error) if error.is_transient());
        let (kind, detail) = match outcome {
            Ok(Updated::Done { status }) => {
                self.calls.patch_call(sid, &done, answered_at).await?;
                report.redirected = 1;
                tracing::info!(call_sid = %sid, detection_ms = requested_at - stale.since, "watchdog: call redirected");
                ("watchdog_redirected", json!({ "times": times, "twilio_status": status }))
            }
            Ok(Updated::CallOver { code }) => {
                let patch = CallPatch { end_reason: Some("ended_before_fallback".into()), ..done };
                self.calls.transition(sid, &[CallStatus::Fallback], CallStatus::Completed, &patch, answered_at).await?;
                report.call_over = 1;
                tracing::info!(call_sid = %sid, code, "watchdog: the call was already over; closed out");
                ("watchdog_call_over", json!({ "times": times, "twilio_code": code }))
            }
            Err(error) => {
                report.failed = 1;
                let transient = error.is_transient();
                if !transient {
                    // Twilio refused for good (credentials, a bad request): retrying every pass would not help.
                    self.calls.patch_call(sid, &done, answered_at).await?;
                }
                tracing::error!(call_sid = %sid, error = %error, retried_next_pass = transient, "watchdog: redirect failed");
                ("watchdog_redirect_failed", json!({ "times": times, "error": error.to_string(), "retried_next_pass": transient }))
            }
        };
        report.store_writes += 3;
        let event = CallEvent { at: answered_at, kind: kind.into(), key: format!("{kind}:{requested_at}"), detail };
        self.calls.add_event(sid, &event).await?;
        if retried {
            self.calls.drop_job_claim(&attempt).await?;
        } else {
            self.calls.finish_job(&attempt, now_ms()).await?;
        }
        Ok(report)
    }

    /// Moves a call whose relay hangs to a new stream through the REST API, so another relay
    /// continues the conversation. `true` when that is done (or someone else handled the call);
    /// `false` when the fallback must follow: the call has had its recoveries, or Twilio did
    /// not take the new stream (the call then awaits a stream that will not come, and the
    /// fallback's claim takes it from there).
    async fn reconnect(&self, active: &ActiveCall, stale: Stale, detected_at: Millis, report: &mut PassReport) -> StoreResult<bool> {
        let sid = &active.call_sid;
        // Heartbeats also stop when a stream simply ended while the store was failing, and the
        // relay's record of that end may be just behind: as before a fallback redirect (see
        // `stream_is_over`), the watchdog gives it `AFTER_CLAIM` to land, or it would move a
        // caller Twilio has already given the fallback.
        tokio::time::sleep(AFTER_CLAIM).await;
        report.store_reads += 1;
        let Some(call) = self.calls.get_call(sid).await? else { return Ok(false) };
        if call.status != CallStatus::Streaming {
            // Moved or ended meanwhile.
            report.already_handled = 1;
            return Ok(true);
        }
        if current_stream_ended(&call) {
            // Twilio is on the `<Connect action>` already, whose answer (made without the store,
            // or it would not be stale) is the fallback: claimed, never redirected (see
            // `stream_is_over`).
            return Ok(false);
        }
        report.store_writes += 2;
        let moved = match reconnect::next_generation(self.calls.as_ref(), &call, Why::Fault(stale.reason), "watchdog").await? {
            Next::Moved(moved) => moved,
            Next::NoRecoveriesLeft(_) => return Ok(false),
            Next::Stale(_) | Next::NotFound => {
                report.already_handled = 1;
                return Ok(true);
            }
        };
        tracing::warn!(call_sid = %sid, stale_ms = detected_at - stale.since, generation = moved.generation, "watchdog: the relay hangs; moving the call to a new stream");
        let requested_at = now_ms();
        let twiml = reconnect::stream_twiml(&self.config, sid, moved.generation).into_string();
        let outcome = self.twilio.update_call(sid, &CallUpdate::Twiml(twiml)).await;
        let answered_at = now_ms();
        let times = json!({
            "reason": stale.reason, "stale_at": stale.since, "detected_at": detected_at, "requested_at": requested_at,
            "detection_ms": requested_at - stale.since, "twilio_ms": answered_at - requested_at, "generation": moved.generation,
        });
        report.store_writes += 1;
        let (kind, done) = match outcome {
            Ok(Updated::Done { .. }) => {
                report.reconnected = 1;
                ("watchdog_reconnected", true)
            }
            Ok(Updated::CallOver { code }) => {
                let patch = CallPatch { end_reason: Some("ended_before_reconnect".into()), ..Default::default() };
                self.calls.transition(sid, &[CallStatus::AwaitingStream], CallStatus::Completed, &patch, answered_at).await?;
                report.call_over = 1;
                tracing::info!(call_sid = %sid, code, "watchdog: the call was already over; closed out");
                ("watchdog_call_over", true)
            }
            Err(error) => {
                tracing::error!(call_sid = %sid, error = %error, "watchdog: Twilio did not take the new stream; the fallback follows");
                ("watchdog_reconnect_failed", false)
            }
        };
        let event =
            CallEvent { at: answered_at, kind: kind.into(), key: format!("{kind}:{requested_at}"), detail: json!({ "times": times }) };
        self.calls.add_event(sid, &event).await?;
        Ok(done)
    }

    /// Whether Twilio has already left the call's `<Connect>`: the relay recorded the stream's
    /// end, so Twilio is on (or past) the `<Connect action>`, whose answer is the caller's
    /// fallback. Heartbeats stop with a stream that ended, and when the store failed as it ended,
    /// `stream_ended` answered without it and its write has not landed: a redirect then would cut
    /// the caller's fallback (the apology again, the voicemail restarted). So the claim stands
    /// and the redirect is skipped. The look comes `AFTER_CLAIM`, so that the relay's write, stuck
    /// behind the same trouble as the claim, lands first; it costs a hung relay's caller that
    /// much more silence.
    async fn stream_is_over(&self, sid: &CallSid, report: &mut PassReport) -> StoreResult<bool> {
        tokio::time::sleep(AFTER_CLAIM).await;
        report.store_reads += 1;
        let Some(now) = self.calls.get_call(sid).await? else { return Ok(false) };
        let Some(stream) = now.stream.as_ref().filter(|_| current_stream_ended(&now)) else { return Ok(false) };
        let at = now_ms();
        let done = CallPatch { redirect_pending: Some(false), ..Default::default() };
        self.calls.patch_call(sid, &done, at).await?;
        let detail = json!({ "stream_end": stream.end.as_str(), "stream_ended_at": stream.ended_at });
        let event = CallEvent { at, kind: "watchdog_redirect_skipped".into(), key: format!("watchdog_redirect_skipped:{at}"), detail };
        self.calls.add_event(sid, &event).await?;
        report.store_writes += 2;
        report.already_handled = 1;
        tracing::info!(call_sid = %sid, end = stream.end.as_str(), "watchdog: the stream had ended, so Twilio is on the <Connect action>: no redirect");
        Ok(true)
    }

    /// Passes every `poll` until `until` resolves.
    pub async fn run_until(&self, until: impl std::future::Future<Output = ()>) -> RunReport {
        let mut run = RunReport::default();
        let mut ticker = tokio::time::interval(self.config.watchdog.poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(until);
        loop {
            tokio::select! {
                _ = &mut until => return run,
                _ = ticker.tick() => {}
            }
            run.passes += 1;
            match self.pass().await {
                Ok(report) => run.totals.add(&report),
                Err(e) => {
                    run.store_errors += 1;
                    tracing::error!(error = %e, "watchdog pass failed; trying again next poll");
                }
            }
        }
    }

    /// Passes for `duration`: one scheduled invocation.
    pub async fn run_for(&self, duration: Duration) -> RunReport {
        self.run_until(tokio::time::sleep(duration)).await
    }
}

/// The relay recorded the end of the call's latest stream (not of an earlier generation's).
fn current_stream_ended(call: &crate::domain::call::Call) -> bool {
    call.stream.as_ref().is_some_and(|figures| call.stream_sid.as_deref() == Some(figures.stream_sid.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::CallSid;

    fn call(status: CallStatus, status_at: Millis, heartbeat_at: Option<Millis>) -> ActiveCall {
        ActiveCall {
            call_sid: CallSid::parse(&crate::domain::ids::random_sid("CA")).unwrap(),
            status,
            status_at,
            heartbeat_at,
            redirect_pending: false,
        }
    }

    #[test]
    fn stale_after_the_start_timeout_or_the_heartbeat_limit() {
        let t = Timeouts {
            stream_start: Duration::from_secs(8),
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_stale: Duration::from_secs(15),
        };
        let waiting = call(CallStatus::AwaitingStream, 1_000, None);
        assert_eq!(staleness(&waiting, 8_999, &t), None);
        assert_eq!(staleness(&waiting, 9_000, &t), Some(Stale { reason: "stream_never_started", since: 9_000 }));
        let fresh_stream = call(CallStatus::Streaming, 1_000, None);
        assert_eq!(staleness(&fresh_stream, 15_999, &t), None, "no heartbeat yet: counts from the start");
        let beating = call(CallStatus::Streaming, 1_000, Some(20_000));
        assert_eq!(staleness(&beating, 34_999, &t), None);
        assert_eq!(staleness(&beating, 35_000, &t), Some(Stale { reason: "heartbeat_stale", since: 35_000 }));
        // The call moved to a new stream at 40 s: the old stream's last beat does not count.
        let moved = call(CallStatus::Streaming, 40_000, Some(20_000));
        assert_eq!(staleness(&moved, 54_999, &t), None, "a new stream counts from its start");
        assert_eq!(staleness(&moved, 55_000, &t), Some(Stale { reason: "heartbeat_stale", since: 55_000 }));
        assert_eq!(staleness(&call(CallStatus::Ringing, 0, None), 1_000_000, &t), None);
    }
}
