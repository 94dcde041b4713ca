//! `callkeeper contacts show +E164`: one person as the CRM knows them: when they were first and
//! last seen, their lead fields (merged from every call), and their calls and WhatsApp messages,
//! newest first.

use callkeeper_core::message::TimelineItem;
use callkeeper_core::phone::E164;
use callkeeper_core::store::CallStore;
use callkeeper_core::time::format_ms;
use serde_json::json;
use std::fmt::Write;

/// `None` when the CRM has never heard of the number.
pub async fn show(store: &dyn CallStore, phone: &E164, limit: usize, as_json: bool) -> anyhow::Result<Option<String>> {
    let Some(contact) = store.contact(phone).await? else { return Ok(None) };
    let timeline = store.timeline(phone, limit).await?;
    if as_json {
        let items: Vec<_> = timeline
            .iter()
            .map(|item| match item {
                TimelineItem::Call(call) => json!({ "kind": "call", "call": call }),
                TimelineItem::Message(message) => json!({ "kind": "message", "message": message }),
            })
            .collect();
        return Ok(Some(serde_json::to_string_pretty(&json!({ "contact": contact, "timeline": items }))? + "\n"));
    }
    let mut out = String::new();
    writeln!(out, "contact     {}", contact.phone)?;
    writeln!(out, "name        {}", contact.profile_name.as_deref().unwrap_or("-"))?;
    writeln!(out, "first seen  {}", format_ms(contact.first_seen))?;
    writeln!(out, "last seen   {}", format_ms(contact.last_seen))?;
    match contact.lead.as_ref().and_then(|l| l.as_object()).filter(|l| !l.is_empty()) {
        Some(lead) => {
            writeln!(out, "lead")?;
            for (name, value) in lead {
                writeln!(out, "  {name:<14} {}", crate::leads::cell(value))?;
            }
        }
        None => writeln!(out, "lead        -")?,
    }
    writeln!(out, "\ntimeline (newest first)")?;
    if timeline.is_empty() {
        writeln!(out, "  nothing yet")?;
    }
    for item in &timeline {
        match item {
            TimelineItem::Call(c) => {
                let outcome = crate::calls::outcome(c);
                writeln!(
                    out,
                    "  {}  call      {:<8}  {:<15}  {}  {outcome}",
                    format_ms(c.created_at),
                    c.direction.as_str(),
                    c.status.as_str(),
                    c.call_sid
                )?;
            }
            TimelineItem::Message(m) => {
                let body: String = m.body.chars().take(60).collect();
                let more = if m.body.chars().count() > 60 { "…" } else { "" };
                let media = if m.media.is_empty() { String::new() } else { format!(" [{} media]", m.media.len()) };
                writeln!(
                    out,
                    "  {}  {:<8}  {:<8}  {:<15}  {body}{more}{media}",
                    format_ms(m.created_at),
                    m.channel.as_str(),
                    m.direction.as_str(),
                    m.status
                )?;
            }
        }
    }
    Ok(Some(out))
}
