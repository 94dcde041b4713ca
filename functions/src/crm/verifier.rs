//! Password checks, on threads of their own. Argon2id takes tens of milliseconds of CPU and
//! 19 MiB of memory per check, so the checks are bounded: [`THREADS`] at once and [`WAITING`]
//! queued; past that a sign-in is answered at once that the server is busy, instead of queueing
//! without bound (a burst of 40 once took `serve` from 173 MiB to 2.8 GiB). They run apart from
//! tokio's blocking pool, where the embedded store's SQLite work runs, so a burst of sign-ins
//! never delays a webhook's write; and each check gives its memory back when it ends
//! ([`callkeeper_core::users::verify_password`]).

use callkeeper_core::users::{verify_password, NO_ONES_HASH};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

/// Checks at once: two cores' worth.
pub const THREADS: usize = 2;
/// Checks waiting for a thread, past which a sign-in is refused as busy.
pub const WAITING: usize = 6;

struct Check {
    /// `None`: an unknown name, checked against a hash no password matches.
    hash: Option<String>,
    password: String,
    answer: tokio::sync::oneshot::Sender<bool>,
}

/// Too many checks are under way: try again in a second.
#[derive(Debug)]
pub struct Busy;

pub struct Verifiers {
    checks: SyncSender<Check>,
}

impl Verifiers {
    /// Starts the threads; they end when this is dropped.
    pub fn start() -> Verifiers {
        let (checks, queue) = sync_channel::<Check>(WAITING);
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..THREADS {
            let queue = queue.clone();
            std::thread::Builder::new().name(format!("crm-verify-{i}")).spawn(move || run(&queue)).expect("a password check thread starts");
        }
        Verifiers { checks }
    }

    /// Whether `password` matches `hash`, or `Err(Busy)` at once when the queue is full.
    pub async fn verify(&self, hash: Option<String>, password: String) -> Result<bool, Busy> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        match self.checks.try_send(Check { hash, password, answer }) {
            Ok(()) => Ok(answered.await.unwrap_or(false)),
            Err(TrySendError::Full(_)) => Err(Busy),
            // The threads are gone (a check panicked in each): nothing can be verified.
            Err(TrySendError::Disconnected(_)) => Ok(false),
        }
    }
}

fn run(queue: &Mutex<Receiver<Check>>) {
    loop {
        // The lock is held only while waiting for the next check, not while checking.
        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(check) = next else { return };
        let right = verify_password(check.hash.as_deref().unwrap_or(NO_ONES_HASH), &check.password);
        let _ = check.answer.send(right);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn checks_past_the_queue_are_refused_at_once_and_the_rest_answered() {
        let verifiers = Arc::new(Verifiers::start());
        let hash = callkeeper_core::users::hash_password("correct horse battery").unwrap();
        let tries: Vec<_> = (0..20)
            .map(|_| {
                let (verifiers, hash) = (verifiers.clone(), hash.clone());
                tokio::spawn(async move { verifiers.verify(Some(hash), "correct horse battery".into()).await })
            })
            .collect();
        let mut answered = 0;
        let mut busy = 0;
        for t in tries {
            match t.await.unwrap() {
                Ok(right) => {
                    assert!(right);
                    answered += 1
                }
                Err(Busy) => busy += 1,
            }
        }
        assert!((THREADS..=THREADS + WAITING + THREADS).contains(&answered), "{answered} answered");
        assert!(busy >= 20 - (THREADS + WAITING + THREADS), "{busy} refused");
        assert_eq!(verifiers.verify(None, "anything at all".into()).await.ok(), Some(false), "an unknown name");
    }
}
