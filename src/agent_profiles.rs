//! `callkeeper agent set/show/list`: the AI agent's profiles in the store, per number.

use callkeeper_core::config::default_extraction_schema;
use callkeeper_core::profile::{self, AgentProfile, BadProfile, ProfileKey};
use callkeeper_core::store::ProfilesPort;
use callkeeper_core::time::{format_ms, now_ms};
use std::fmt::Write;
use std::path::Path;

/// What a profile file leaves out: the built-in profile in `AGENT_LANGUAGE` (Hebrew by default).
pub fn defaults() -> AgentProfile {
    let language = std::env::var("AGENT_LANGUAGE").ok().filter(|l| !l.trim().is_empty()).unwrap_or_else(|| "he-IL".into());
    AgentProfile::builtin(language.trim(), &default_extraction_schema())
}

/// Reads and checks `file`, then stores it whole at `key`. A bad file writes nothing.
pub async fn set(store: &dyn ProfilesPort, key: &ProfileKey, file: &Path) -> anyhow::Result<Result<String, BadProfile>> {
    let parsed = match profile::read_file(file, &defaults()) {
        Ok(parsed) => parsed,
        Err(bad) => return Ok(Err(bad)),
    };
    store.put_profile(key, &parsed, now_ms()).await?;
    Ok(Ok(format!("agent profile {} set from {}: {}\n", key.as_str(), file.display(), summary(&parsed))))
}

fn summary(p: &AgentProfile) -> String {
    let mut extras = String::new();
    if !p.tools.is_empty() {
        let names: Vec<&str> = p.tools.iter().map(|t| t.name.as_str()).collect();
        extras.push_str(&format!(", tools {}", names.join(", ")));
    }
    if !p.knowledge.is_empty() {
        let how = match callkeeper_core::knowledge::reach(&p.knowledge) {
            callkeeper_core::knowledge::Reach::Search => "searched",
            _ => "in the instructions",
        };
        extras.push_str(&format!(
            ", knowledge {} files {} KiB ({how})",
            p.knowledge.len(),
            callkeeper_core::knowledge::total_bytes(&p.knowledge).div_ceil(1024)
        ));
    }
    if let Some(hours) = &p.hours {
        extras.push_str(&format!(", hours in {}", hours.time_zone));
    }
    if !p.follow_up.is_empty() {
        extras.push_str(", follow-ups");
    }
    format!(
        "{} voice {}, transfer {}, lead fields {}, idle {}+{} s{}{extras}",
        p.language,
        p.voice,
        p.transfer_number.as_ref().map_or("none".to_string(), |n| n.redacted()),
        p.lead_fields().join(", "),
        p.idle.prompt_after_secs,
        p.idle.hangup_after_secs,
        p.greeting_clip.as_ref().map_or(String::new(), |c| format!(", greeting clip {:.1} s", c.audio().len() as f64 / 8000.0)),
    )
}

/// The profile at `key`; for a number without one, what its calls get instead, and why.
pub async fn show(store: &dyn ProfilesPort, key: &ProfileKey, as_json: bool) -> anyhow::Result<String> {
    let (profile, source) = match store.profile(key).await? {
        Some(p) => (p, format!("stored for {}", key.as_str())),
        None => match (key, store.profile(&ProfileKey::Default).await?) {
            (ProfileKey::Number(_), Some(p)) => (p, format!("no profile for {}: its calls get the default profile", key.as_str())),
            _ => (defaults(), "no profile stored: calls get the built-in profile".to_string()),
        },
    };
    if as_json {
        return Ok(serde_json::to_string_pretty(&serde_json::json!({ "key": key.as_str(), "source": source, "profile": profile }))? + "\n");
    }
    let mut out = String::new();
    writeln!(out, "{source}")?;
    writeln!(out, "{}", summary(&profile))?;
    writeln!(out, "\ngreeting\n  {}", profile.greeting_clip.as_ref().map_or(profile.greeting.as_str(), |c| c.text.as_str()))?;
    writeln!(out, "\ninstructions")?;
    for line in profile.instructions.lines() {
        writeln!(out, "  {line}")?;
    }
    writeln!(out, "\nlead schema\n  {}", profile.lead_schema)?;
    for tool in &profile.tools {
        writeln!(
            out,
            "\ntool {} → {} (timeout {} ms)\n  {}\n  parameters {}",
            tool.name, tool.url, tool.timeout_ms, tool.description, tool.parameters
        )?;
    }
    for file in &profile.knowledge {
        writeln!(out, "\nknowledge {} ({} bytes)", file.name, file.text.len())?;
    }
    if let Some(hours) = &profile.hours {
        let after = match &hours.after_hours {
            callkeeper_core::hours::AfterHours::Agent { .. } => "the after-hours agent",
            callkeeper_core::hours::AfterHours::Voicemail { .. } => "voicemail",
        };
        writeln!(
            out,
            "\nhours {}; closed {}; after hours: {after}",
            hours.describe(),
            if hours.closed.is_empty() { "-".to_string() } else { hours.closed.join(", ") }
        )?;
    }
    Ok(out)
}

pub async fn list(store: &dyn ProfilesPort, as_json: bool) -> anyhow::Result<String> {
    let profiles = store.profiles().await?;
    if as_json {
        return Ok(serde_json::to_string_pretty(&profiles)? + "\n");
    }
    if profiles.is_empty() {
        return Ok("no agent profiles: every call gets the built-in profile (`callkeeper agent set FILE`)\n".into());
    }
    let mut out = format!("{:<16}  {:<24}  {}\n", "NUMBER", "UPDATED", "PROFILE");
    for p in &profiles {
        writeln!(out, "{:<16}  {:<24}  {}", p.key.as_str(), format_ms(p.updated_at), summary(&p.profile))?;
    }
    Ok(out)
}
