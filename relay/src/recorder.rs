//! Writes a stream's state to the store off the socket's path: heartbeats on a timer, turns as
//! they change. One task per call, so writes for a call stay in order and a slow store never
//! holds up Twilio's frames.

use callkeeper_core::ids::CallSid;
use callkeeper_core::store::CallStore;
use callkeeper_core::stream_report::Turn;
use callkeeper_core::time::Millis;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Turn writes waiting for the store; a call makes a few per turn.
const CAPACITY: usize = 64;
/// Tries of one turn write before it is given up, logged.
const TURN_ATTEMPTS: u32 = 4;

pub struct Recorder {
    /// When the relay last saw media from the caller; the heartbeat writes it. Set for every
    /// frame, read every few seconds: an atomic, not a channel that would wake anyone.
    last_media: Arc<AtomicI64>,
    /// Boxed: a channel holds its first 32 slots from the start, and a turn is large.
    turns: mpsc::Sender<Box<Turn>>,
    task: JoinHandle<u64>,
}

impl Recorder {
    pub fn start(calls: Arc<dyn CallStore>, call_sid: CallSid, interval: Duration, started_at: Millis) -> Recorder {
        let last_media = Arc::new(AtomicI64::new(started_at));
        let (turns, turns_rx) = mpsc::channel(CAPACITY);
        let task = tokio::spawn(run(calls, call_sid, interval, last_media.clone(), turns_rx));
        Recorder { last_media, turns, task }
    }

    /// Media from the caller reached the relay at `at`.
    pub fn media_at(&self, at: Millis) {
        self.last_media.store(at, Ordering::Relaxed);
    }

    /// Queues a turn's latest state. If the store is that far behind, the write is dropped:
    /// the turn's later state will be written, and the call never waits.
    pub fn turn(&self, turn: Turn) {
        if let Err(e) = self.turns.try_send(Box::new(turn)) {
            tracing::warn!(error = %e, "turn write dropped: the store is behind");
        }
    }

    /// Writes what is queued and stops. Returns the heartbeats written.
    pub async fn finish(self) -> u64 {
        let Recorder { last_media, turns, task } = self;
        drop((last_media, turns));
        task.await.unwrap_or(0)
    }
}

async fn run(
    calls: Arc<dyn CallStore>,
    call_sid: CallSid,
    interval: Duration,
    last_media: Arc<AtomicI64>,
    mut turns: mpsc::Receiver<Box<Turn>>,
) -> u64 {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut written: Millis = last_media.load(Ordering::Relaxed);
    let mut beating = true;
    let mut beats = 0u64;
    loop {
        tokio::select! {
            turn = turns.recv() => match turn {
                Some(turn) => write_turn(calls.as_ref(), &call_sid, &turn).await,
                None => break,
            },
            _ = ticker.tick(), if beating => {
                let last = last_media.load(Ordering::Relaxed);
                // No media since the last beat: no beat, so the watchdog sees the stream go quiet.
                if last <= written {
                    continue;
                }
                match calls.heartbeat(&call_sid, last).await {
                    Ok(true) => {
                        written = last;
                        beats += 1;
                    }
                    Ok(false) => {
                        tracing::info!(call_sid = %call_sid, "call is no longer streaming; heartbeats stop");
                        beating = false;
                    }
                    // The next tick is the retry.
                    Err(e) => tracing::warn!(call_sid = %call_sid, error = %e, "heartbeat failed"),
                }
            }
        }
    }
    beats
}

async fn write_turn(calls: &dyn CallStore, call_sid: &CallSid, turn: &Turn) {
    let mut delay = Duration::from_millis(50);
    for attempt in 1..=TURN_ATTEMPTS {
        match calls.put_turn(call_sid, turn).await {
            Ok(()) => return,
            Err(e) if attempt == TURN_ATTEMPTS => {
                tracing::error!(call_sid = %call_sid, seq = turn.seq, error = %e, "turn not written");
            }
            Err(e) => {
                tracing::warn!(call_sid = %call_sid, seq = turn.seq, attempt, error = %e, "turn write failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 4;
            }
        }
    }
}
