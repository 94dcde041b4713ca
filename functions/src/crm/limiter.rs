//! Sign-in attempts, slowed down progressively rather than locked out. Each attempt is counted
//! against three keys before its password is checked, atomically, so a burst of concurrent
//! guesses is counted as it arrives (not after each has been verified):
//!
//! - the name from this address ([`Rule::NAME_FROM_ADDRESS`]): the brake on guessing one
//!   user's password; after five failures each further attempt waits 30 s, then 1, 2, 4 …
//!   minutes, at most 15;
//! - the address ([`Rule::ADDRESS`]): one address guessing many names;
//! - the name from anywhere ([`Rule::NAME`]): many addresses guessing one name, with a short
//!   cap (30 s), so nobody elsewhere can keep a user out for long.
//!
//! An attacker at another address therefore cannot lock a user out: only the name's own key is
//! shared, and it delays by seconds. Failures are forgotten [`FORGET_AFTER`] after the last.
//! Counted in the process: in AWS each warm instance of the `crm` function counts on its own,
//! and the HTTP API's throttle on the sign-in route caps them all together.

use callkeeper_core::time::Millis;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// A key's failures are forgotten this long after its last one.
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// More entries than this and the forgotten ones are dropped: a flood of names cannot grow it
/// without bound.
const PRUNE_ABOVE: usize = 10_000;

/// How one key slows down: `free` failures cost nothing; from then on an attempt waits `first`
/// after the last failure, doubling with each further failure, at most `cap`.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub free: u32,
    pub first: Duration,
    pub cap: Duration,
}

impl Rule {
    pub const NAME_FROM_ADDRESS: Rule = Rule { free: 5, first: Duration::from_secs(30), cap: Duration::from_secs(15 * 60) };
    /// An office behind one address mistypes more than one person does.
    pub const ADDRESS: Rule = Rule { free: 10, first: Duration::from_secs(30), cap: Duration::from_secs(15 * 60) };
    pub const NAME: Rule = Rule { free: 20, first: Duration::from_secs(1), cap: Duration::from_secs(30) };

    /// The wait after the last failure, with `failures` counted.
    fn delay(&self, failures: u32) -> Duration {
        if failures < self.free {
            return Duration::ZERO;
        }
        let doublings = (failures - self.free).min(20);
        self.first.saturating_mul(1 << doublings).min(self.cap)
    }
}

/// The keys one attempt is counted against.
#[derive(Debug, Clone)]
pub struct Attempt {
    keys: [(String, Rule); 3],
}

impl Attempt {
    /// `name` is at most 64 bytes (the form refuses longer ones before it gets here).
    pub fn new(name: &str, address: &str) -> Attempt {
        Attempt {
            keys: [
                (format!("name:{name}|addr:{address}"), Rule::NAME_FROM_ADDRESS),
                (format!("addr:{address}"), Rule::ADDRESS),
                (format!("name:{name}"), Rule::NAME),
            ],
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Count {
    failures: u32,
    last: Millis,
}

#[derive(Default)]
pub struct Limiter {
    counts: Mutex<HashMap<String, Count>>,
}

impl Limiter {
    /// Counts the attempt as a failure before its password is checked; `Err(wait)` when one of
    /// its keys must wait longer (nothing counted then). A right password is given back with
    /// [`Limiter::succeeded`].
    pub fn reserve(&self, attempt: &Attempt, now: Millis) -> Result<(), Duration> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let forget = FORGET_AFTER.as_millis() as Millis;
        if counts.len() > PRUNE_ABOVE {
            counts.retain(|_, c| now - c.last < forget);
        }
        let current = |counts: &HashMap<String, Count>, key: &str| counts.get(key).filter(|c| now - c.last < forget).copied();
        let wait = attempt
            .keys
            .iter()
            .filter_map(|(key, rule)| {
                let count = current(&counts, key)?;
                let until = count.last + rule.delay(count.failures).as_millis() as Millis;
                (until > now).then(|| Duration::from_millis((until - now) as u64))
            })
            .max();
        if let Some(wait) = wait {
            return Err(wait);
        }
        for (key, _) in &attempt.keys {
            let failures = current(&counts, key).map_or(0, |c| c.failures) + 1;
            counts.insert(key.clone(), Count { failures, last: now });
        }
        Ok(())
    }

    /// The password was right: the name's failures from this address are cleared, and the
    /// attempt is taken back from the others (one good account must not clear an address that
    /// is guessing others).
    pub fn succeeded(&self, attempt: &Attempt) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.remove(&attempt.keys[0].0);
        take_back(&mut counts, &attempt.keys[1..]);
    }

    /// The password was never checked (the server was busy): the attempt is taken back.
    pub fn not_checked(&self, attempt: &Attempt) {
        take_back(&mut self.counts.lock().unwrap_or_else(|e| e.into_inner()), &attempt.keys);
    }
}

fn take_back(counts: &mut HashMap<String, Count>, keys: &[(String, Rule)]) {
    for (key, _) in keys {
        if let Some(count) = counts.get_mut(key) {
            count.failures = count.failures.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Millis = 1000;

    #[test]
    fn five_failures_then_a_wait_that_doubles_up_to_its_cap() {
        let limiter = Limiter::default();
        let dana = Attempt::new("dana", "1.2.3.4");
        for i in 0..5 {
            assert!(limiter.reserve(&dana, i).is_ok(), "attempt {i} is free");
        }
        let wait = limiter.reserve(&dana, 10).unwrap_err();
        assert!(wait > Duration::from_secs(29) && wait <= Duration::from_secs(30), "{wait:?}");
        assert!(limiter.reserve(&dana, 4 + 30 * S).is_ok(), "the wait passed");
        assert_eq!(limiter.reserve(&dana, 5 + 30 * S).unwrap_err().as_secs(), 59, "then a minute");
        assert!(limiter.reserve(&dana, 4 + 90 * S).is_ok());
        assert!(limiter.reserve(&dana, 5 + 90 * S).unwrap_err() > Duration::from_secs(119), "then two");
        assert!(limiter.reserve(&Attempt::new("dana", "5.6.7.8"), 6 + 90 * S).is_ok(), "from elsewhere the name still signs in");
        assert!(limiter.reserve(&Attempt::new("avi", "1.2.3.4"), 6 + 90 * S).is_ok(), "another name from the address too");
        assert!(limiter.reserve(&dana, 4 + 90 * S + FORGET_AFTER.as_millis() as Millis).is_ok(), "forgotten");
    }

    #[test]
    fn the_rules_cap_their_waits() {
        assert_eq!(Rule::NAME_FROM_ADDRESS.delay(4), Duration::ZERO);
        assert_eq!(Rule::NAME_FROM_ADDRESS.delay(5), Duration::from_secs(30));
        assert_eq!(Rule::NAME_FROM_ADDRESS.delay(1000), Duration::from_secs(15 * 60));
        assert_eq!(Rule::NAME.delay(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn a_burst_is_counted_as_it_arrives() {
        let limiter = Limiter::default();
        let dana = Attempt::new("dana", "1.2.3.4");
        let admitted = (0..29).filter(|_| limiter.reserve(&dana, 0).is_ok()).count();
        assert_eq!(admitted, 5, "no more guesses than the rule's free ones are let through to be checked");
    }

    #[test]
    fn a_right_password_clears_its_name_and_gives_the_address_its_attempt_back() {
        let limiter = Limiter::default();
        let dana = Attempt::new("dana", "1.2.3.4");
        for _ in 0..4 {
            limiter.reserve(&dana, 0).unwrap();
        }
        limiter.reserve(&dana, 0).unwrap();
        limiter.succeeded(&dana);
        for _ in 0..5 {
            assert!(limiter.reserve(&dana, 0).is_ok(), "the name's count starts again");
        }
        // The address: 4 failures before, 5 now (the success given back), 10 free.
        let others: Vec<Attempt> = (0..2).map(|i| Attempt::new(&format!("u{i}"), "1.2.3.4")).collect();
        assert!(limiter.reserve(&others[0], 0).is_ok());
        assert!(limiter.reserve(&others[1], 0).unwrap_err() > Duration::ZERO, "the address has used its ten");
    }
}
