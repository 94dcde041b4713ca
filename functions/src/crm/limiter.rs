//! Sign-in attempts: after [`MAX_FAILURES`] wrong passwords within [`WINDOW`] for one name, or
//! from one address, that name or address is refused until the window has passed, even with the
//! right password. Counted in the process: in AWS each warm instance of the `crm` function
//! counts on its own, and the HTTP API's throttle on the sign-in route caps them all together.

use callkeeper_core::time::Millis;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

pub const MAX_FAILURES: u32 = 5;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// More entries than this and the expired ones are dropped: a flood of names cannot grow it
/// without bound.
const PRUNE_ABOVE: usize = 10_000;

#[derive(Default)]
pub struct Limiter {
    failures: Mutex<HashMap<String, (u32, Millis)>>,
}

impl Limiter {
    /// `Err(wait)` when any of `keys` has failed too often.
    pub fn check(&self, keys: &[String], now: Millis) -> Result<(), Duration> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let window = WINDOW.as_millis() as Millis;
        let wait = keys
            .iter()
            .filter_map(|k| failures.get(k))
            .filter(|(count, first)| *count >= MAX_FAILURES && now - first < window)
            .map(|(_, first)| window - (now - first))
            .max();
        match wait {
            Some(ms) => Err(Duration::from_millis(ms.max(0) as u64)),
            None => Ok(()),
        }
    }

    pub fn failed(&self, keys: &[String], now: Millis) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let window = WINDOW.as_millis() as Millis;
        if failures.len() > PRUNE_ABOVE {
            failures.retain(|_, (_, first)| now - *first < window);
        }
        for key in keys {
            let entry = failures.entry(key.clone()).or_insert((0, now));
            if now - entry.1 >= window {
                *entry = (0, now);
            }
            entry.0 += 1;
        }
    }

    /// A right password clears the name's count (not the address's: one good account must not
    /// reopen an address that is guessing others).
    pub fn succeeded(&self, name_key: &str) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(name_key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_close_the_name_for_the_window() {
        let limiter = Limiter::default();
        let keys = vec!["name:dana".to_string(), "addr:1.2.3.4".to_string()];
        for i in 0..MAX_FAILURES {
            assert!(limiter.check(&keys, i as i64).is_ok());
            limiter.failed(&keys, i as i64);
        }
        let wait = limiter.check(&keys, 10).unwrap_err();
        assert!(wait > Duration::from_secs(14 * 60), "{wait:?}");
        assert!(limiter.check(&["addr:1.2.3.4".to_string()], 10).is_err(), "the address too");
        assert!(limiter.check(&["name:other".to_string()], 10).is_ok());
        assert!(limiter.check(&keys, WINDOW.as_millis() as i64 + 1).is_ok(), "the window passed");
        limiter.succeeded("name:dana");
        assert!(limiter.check(&["name:dana".to_string()], 10).is_ok());
    }
}
