//! Shutting down without dropping a call. On SIGTERM the relay stops being ready and refuses new
//! streams at once; each live call moves to a stream on another relay at its next quiet moment
//! (`DRAIN_MOVE_SECS`, see `session`); a call still here at the deadline has its socket closed
//! normally, so Twilio asks `<Connect action>`, which continues it on a new stream too.

use std::time::Duration;
use tokio::sync::watch;

/// How long sessions get to write their figures after being told to close.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Drain {
    draining: watch::Sender<bool>,
    /// Set when live calls must close now.
    closing: watch::Sender<bool>,
    live: watch::Sender<usize>,
}

/// Held by a live call; its drop is how the drain knows the call has ended.
pub struct LiveCall(watch::Sender<usize>);

impl Drop for LiveCall {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// What a drain did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Calls live when the drain began.
    pub live_at_start: usize,
    /// Calls still live at the deadline, whose sockets were closed.
    pub closed_at_deadline: usize,
}

impl Default for Drain {
    fn default() -> Self {
        Drain { draining: watch::channel(false).0, closing: watch::channel(false).0, live: watch::channel(0).0 }
    }
}

impl Drain {
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    pub fn live(&self) -> usize {
        *self.live.borrow()
    }

    pub fn enter(&self) -> LiveCall {
        self.live.send_modify(|n| *n += 1);
        LiveCall(self.live.clone())
    }

    /// Turns `true` when the drain begins: live calls move to other relays at a quiet moment.
    pub fn draining_signal(&self) -> watch::Receiver<bool> {
        self.draining.subscribe()
    }

    /// Turns `true` when live calls must close.
    pub fn closing_signal(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Stops taking calls and moves the live ones, with no deadline: the load balancer has let
    /// this relay go (see [`crate::deregistration`]), and SIGTERM follows.
    pub fn leave(&self) {
        self.draining.send_replace(true);
    }

    /// Stops taking calls, waits for live ones up to `deadline`, then closes the rest.
    pub async fn run(&self, deadline: Duration) -> Drained {
        self.leave();
        let live_at_start = self.live();
        tracing::info!(live = live_at_start, deadline_secs = deadline.as_secs(), "draining: no new streams");
        let mut live = self.live.subscribe();
        if tokio::time::timeout(deadline, live.wait_for(|n| *n == 0)).await.is_ok() {
            return Drained { live_at_start, closed_at_deadline: 0 };
        }
        let closed_at_deadline = self.live();
        tracing::warn!(live = closed_at_deadline, "drain deadline passed; closing live streams");
        self.closing.send_replace(true);
        if tokio::time::timeout(CLOSE_GRACE, live.wait_for(|n| *n == 0)).await.is_err() {
            tracing::error!(live = self.live(), "streams did not close in time");
        }
        Drained { live_at_start, closed_at_deadline }
    }
}
