//! `callkeeper doctor`: is this deployment ready for a real call? One check a line, ✓ or ✗, and
//! for each ✗ the fix in one sentence: the settings, Twilio's credentials and numbers, the
//! webhooks and the relay as Twilio reaches them, OpenAI, the store and the events receiver.
//!
//! It changes nothing (its one webhook post is a signed probe that the webhook answers without
//! writing a call) and prints no secret (a token or key appears as its last 4 characters). A
//! check that cannot run (no network, no permission, a setting missing) is ✗ with why, never
//! skipped.

mod services;
mod twilio;

use crate::local_config;
use callkeeper_core::config::Config;
use callkeeper_core::store::open::{open, StoreKind};
use serde::Serialize;
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

/// How long any one request of the doctor may take.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    /// What was found; on a failure, what to do about it.
    pub detail: String,
}

impl Check {
    fn pass(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check { name: name.into(), ok: true, detail: detail.into() }
    }
    fn fail(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check { name: name.into(), ok: false, detail: detail.into() }
    }
}

/// What to check.
pub struct Options<'a> {
    pub data_dir: &'a Path,
    pub store: StoreKind,
    /// The local server's port, whose URLs the local settings name when no Twilio settings are set.
    pub port: u16,
    /// Only these numbers (+E164); all of the account's when empty.
    pub numbers: Vec<String>,
}

/// Every check, in the order a call meets what they check.
pub async fn run(options: &Options<'_>) -> Vec<Check> {
    let mut checks = Vec::new();
    let config = match local_config::existing(options.data_dir, options.port).await {
        Ok((config, source)) => {
            checks.push(Check::pass("settings", format!("complete and consistent ({source})")));
            config
        }
        Err(why) => {
            checks.push(Check::fail("settings", why));
            for name in ["public URLs", "twilio credentials", "numbers", "webhooks", "relay", "openai", "store"] {
                checks.push(Check::fail(name, "not run: the settings are not complete"));
            }
            return checks;
        }
    };
    checks.push(match callkeeper_core::twilio::numbers::unreachable_by_twilio(&config) {
        None => Check::pass("public URLs", format!("{} and {}", config.public_base_url, config.relay_public_url)),
        Some(why) => Check::fail("public URLs", why),
    });
    let http =
        reqwest::Client::builder().timeout(TIMEOUT).redirect(reqwest::redirect::Policy::none()).build().expect("a TLS client builds");
    checks.extend(twilio::credentials_and_numbers(&config, &options.numbers).await);
    checks.extend(twilio::webhooks(&config, &http).await);
    checks.push(twilio::relay(&config).await);
    checks.extend(services::openai(&config, &http).await);
    checks.extend(services::store(&config, options).await);
    checks.push(services::events(&config, &http).await);
    checks
}

/// The store `serve` would open, if it exists: the doctor does not make one.
async fn open_store(config: &Config, options: &Options<'_>) -> Result<callkeeper_core::store::Stores, String> {
    if options.store == StoreKind::Embedded && !options.data_dir.exists() {
        return Err(format!("no embedded store in {}: run `callkeeper serve` there first, or pass --data-dir", options.data_dir.display()));
    }
    open(options.store, options.data_dir, config.queue_max_receives).await.map_err(|e| e.to_string())
}

/// A secret as the doctor shows it: its last 4 characters.
fn last4(secret: &str) -> String {
    let tail: String = secret.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    format!("…{tail}")
}

/// One line a check: `✓ name: detail`.
pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for check in checks {
        let mark = if check.ok { '✓' } else { '✗' };
        let _ = writeln!(out, "{mark} {}: {}", check.name, check.detail);
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    let _ = match failed {
        0 => writeln!(out, "all {} checks passed", checks.len()),
        n => writeln!(out, "{n} of {} checks failed", checks.len()),
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_shows_only_its_last_four_characters() {
        assert_eq!(last4("sk-proj-abcdefgh1234"), "…1234");
        assert_eq!(last4("ab"), "…ab");
    }

    #[test]
    fn the_report_marks_each_check_and_counts_failures() {
        let text = render(&[Check::pass("settings", "fine"), Check::fail("relay", "HTTP 426: fix it")]);
        assert_eq!(text, "✓ settings: fine\n✗ relay: HTTP 426: fix it\n1 of 2 checks failed\n");
    }
}
