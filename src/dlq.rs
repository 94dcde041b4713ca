//! `callkeeper dlq`: the jobs that failed too often, for a person to inspect and send again.

use callkeeper_core::job::QueueName;
use callkeeper_core::store::JobQueue;
use callkeeper_core::time::format_ms;
use std::fmt::Write;

pub async fn list(queue: &dyn JobQueue, name: QueueName, as_json: bool) -> anyhow::Result<String> {
    let letters = queue.dead_letters(name, 1000).await?;
    if as_json {
        return Ok(serde_json::to_string_pretty(&letters)? + "\n");
    }
    let depth = queue.depth(name).await?;
    let mut out = format!("{} queue: {} waiting, {} in flight, {} dead\n", name.as_str(), depth.visible, depth.in_flight, depth.dead);
    for l in &letters {
        writeln!(
            out,
            "  {}  dead {}  {} receives  {}",
            l.id,
            format_ms(l.dead_at),
            l.receive_count,
            l.last_error.as_deref().unwrap_or("-")
        )?;
    }
    Ok(out)
}

/// `None` when there is no such dead letter.
pub async fn show(queue: &dyn JobQueue, name: QueueName, id: &str) -> anyhow::Result<Option<String>> {
    Ok(match queue.dead_letter(name, id).await? {
        Some(letter) => Some(serde_json::to_string_pretty(&letter)? + "\n"),
        None => None,
    })
}

pub async fn redrive(queue: &dyn JobQueue, name: QueueName, id: Option<&str>) -> anyhow::Result<String> {
    let moved = queue.redrive(name, id).await?;
    Ok(match id {
        Some(id) if moved == 0 => anyhow::bail!("no dead letter {id} in the {} queue", name.as_str()),
        Some(id) => format!("{id} sent back to the {} queue\n", name.as_str()),
        None => format!("{moved} dead letter(s) sent back to the {} queue\n", name.as_str()),
    })
}
