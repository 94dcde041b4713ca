//! Sockets between their upgrade and their stream's `start`: counted, and capped, so a flood of
//! sockets that never start cannot hold the relay's memory (see [`MAX_OPENING`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Sockets upgraded but not yet started. Twilio sends `start` right after the upgrade, so a
/// relay has only a few at any moment; the upgrade signature is per URL, so whoever has seen one
/// could open sockets that never start: past this many, upgrades get 503 (Twilio then follows
/// `<Connect action>` to the fallback) and the live calls keep their descriptors.
pub const MAX_OPENING: usize = 256;

/// Held by a socket from its upgrade until its `start` (or its end); counted against
/// [`MAX_OPENING`].
pub struct Opening(Arc<AtomicUsize>);

impl Opening {
    pub fn enter(count: &Arc<AtomicUsize>) -> Option<Opening> {
        count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_OPENING).then_some(n + 1)).ok()?;
        Some(Opening(count.clone()))
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
