//! `callkeeper twilio numbers` and `callkeeper twilio configure`: the account's phone numbers,
//! whether each sends its calls and messages to this deployment, and pointing one here through
//! the IncomingPhoneNumbers API. What a number needs is `callkeeper_core::twilio::numbers`.

use callkeeper_core::config::Config;
use callkeeper_core::phone::E164;
use callkeeper_core::twilio::numbers::{changes, unreachable_by_twilio, whatsapp_sender_hint, Change};
use serde_json::json;
use std::fmt::Write;

/// Why `configure` did nothing: the number is not the account's, or the deployment's URLs are
/// not ones Twilio can reach. The command exits 2 with it.
#[derive(Debug)]
pub struct Refused(pub String);

/// Every number of the account, and what differs from what this deployment needs.
pub async fn list(config: &Config, as_json: bool) -> anyhow::Result<String> {
    let numbers = config.twilio_rest().incoming_numbers(None).await?;
    let mut out = String::new();
    if as_json {
        let rows: Vec<_> = numbers
            .iter()
            .map(|number| {
                let changes = changes(config, number);
                json!({
                    "phone_number": number.phone_number,
                    "sid": number.sid,
                    "voice_url": number.voice_url,
                    "points_here": changes.is_empty(),
                    "changes": changes.iter().map(|c| json!({ "field": c.field, "from": c.from, "to": c.to })).collect::<Vec<_>>(),
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(out);
    }
    if numbers.is_empty() {
        writeln!(
            out,
            "account {} has no phone numbers (buy one in Twilio's console: Phone Numbers → Buy a number)",
            config.twilio_account_sid
        )?;
        return Ok(out);
    }
    let mut any_elsewhere = false;
    for number in &numbers {
        let changes = changes(config, number);
        let voice = if number.voice_url.is_empty() { "(no voice URL)" } else { number.voice_url.as_str() };
        if changes.is_empty() {
            writeln!(out, "{}  {}  points here", number.phone_number, number.sid)?;
        } else {
            any_elsewhere = true;
            let fields: Vec<_> = changes.iter().map(|c| c.field).collect();
            writeln!(out, "{}  {}  elsewhere: {voice} (differs: {})", number.phone_number, number.sid, fields.join(", "))?;
        }
    }
    if any_elsewhere {
        writeln!(out, "point one here with: callkeeper twilio configure --number +E164")?;
    }
    Ok(out)
}

/// Sets `number`'s URLs to this deployment (or with `dry_run`, only says what it would set) and
/// prints each field it changed. A number that already points here is left alone: no request.
pub async fn configure(config: &Config, number: &str, dry_run: bool) -> anyhow::Result<Result<String, Refused>> {
    let Some(number) = E164::parse(number) else {
        return Ok(Err(Refused(format!("--number must be a +E164 number, got {number:?}"))));
    };
    if let Some(why) = unreachable_by_twilio(config) {
        return Ok(Err(Refused(why)));
    }
    let rest = config.twilio_rest();
    let found = rest.incoming_numbers(Some(number.as_str())).await?;
    let Some(current) = found.into_iter().find(|n| n.phone_number == number.as_str()) else {
        return Ok(Err(Refused(format!(
            "{number} is not a number of account {} (see `callkeeper twilio numbers`)",
            config.twilio_account_sid
        ))));
    };
    let wanted = changes(config, &current);
    let mut out = String::new();
    if wanted.is_empty() {
        writeln!(out, "{number} ({}) already points here; nothing changed", current.sid)?;
    } else {
        let verb = if dry_run { "would change" } else { "changed" };
        writeln!(out, "{number} ({}) {verb}:", current.sid)?;
        for change in &wanted {
            writeln!(out, "  {}", describe(change))?;
        }
        if dry_run {
            writeln!(out, "(dry run: nothing was sent)")?;
        } else {
            let fields: Vec<(&str, String)> = wanted.iter().map(|c| (c.field, c.to.clone())).collect();
            let now = rest.update_incoming_number(&current.sid, &fields).await?;
            let left = changes(config, &now);
            if !left.is_empty() {
                anyhow::bail!(
                    "Twilio took the update but {number} still differs: {}",
                    left.iter().map(describe).collect::<Vec<_>>().join("; ")
                );
            }
        }
    }
    if !current.voice_capable {
        writeln!(out, "note: {number} cannot take voice calls on Twilio (its capabilities say voice: false)")?;
    }
    writeln!(out, "WhatsApp: a WhatsApp sender's webhooks are not a number's; set them in {}", whatsapp_sender_hint(config))?;
    Ok(Ok(out))
}

fn describe(change: &Change) -> String {
    let from = if change.from.is_empty() { "(not set)" } else { change.from.as_str() };
    format!("{}: {from} → {}", change.field, change.to)
}
