//! `callkeeper leads [--csv]`: the lead fields across the most recent calls, a row per call that
//! has any, as a table or as CSV for a spreadsheet or another CRM.

use callkeeper_core::store::CallStore;
use callkeeper_core::time::format_ms;
use serde_json::Value;
use std::fmt::Write;

struct Row {
    call_sid: String,
    started: String,
    contact: String,
    fields: serde_json::Map<String, Value>,
}

pub async fn list(store: &dyn CallStore, limit: usize, csv: bool) -> anyhow::Result<String> {
    let mut rows = Vec::new();
    for call in store.recent_calls(None, limit).await? {
        let Some(Value::Object(fields)) = store.lead(&call.call_sid).await? else { continue };
        if fields.values().all(Value::is_null) {
            continue;
        }
        rows.push(Row {
            call_sid: call.call_sid.to_string(),
            started: format_ms(call.created_at),
            contact: call.contact.as_ref().map_or_else(|| call.from.clone(), |p| p.to_string()),
            fields,
        });
    }
    // Every field any lead has, in the order they first appear (newest call first).
    let mut columns: Vec<String> = Vec::new();
    for row in &rows {
        for name in row.fields.keys() {
            if !columns.contains(name) {
                columns.push(name.clone());
            }
        }
    }
    let header: Vec<String> = ["call_sid", "started", "contact"].iter().map(|s| s.to_string()).chain(columns.iter().cloned()).collect();
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let fields = columns.iter().map(|c| r.fields.get(c).map_or(String::new(), cell));
            [r.call_sid.clone(), r.started.clone(), r.contact.clone()].into_iter().chain(fields).collect()
        })
        .collect();
    if csv {
        let mut out = String::new();
        for line in std::iter::once(&header).chain(table.iter()) {
            let cells: Vec<String> = line.iter().enumerate().map(|(i, v)| csv_cell(v, i >= 3)).collect();
            out += &cells.join(",");
            out += "\r\n";
        }
        return Ok(out);
    }
    if table.is_empty() {
        return Ok("no leads yet\n".into());
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| std::iter::once(&header).chain(table.iter()).map(|l| l[i].chars().count().min(40)).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for line in std::iter::once(&header).chain(table.iter()) {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(v, w)| {
                let cut: String = v.chars().take(*w).collect();
                format!("{cut:<w$}", w = *w)
            })
            .collect();
        writeln!(out, "{}", cells.join("  ").trim_end())?;
    }
    Ok(out)
}

/// A lead value as text: strings as they are, null as nothing, anything else as JSON.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break. A lead's
/// value is what a caller said: one that a spreadsheet would run as a formula (`=`, `+`, `-`,
/// `@`, a tab or a carriage return first) is kept as text with a leading `'`.
fn csv_cell(value: &str, from_a_caller: bool) -> String {
    let value = if from_a_caller && value.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{value}") } else { value.to_string() };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::csv_cell;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_cell("דירה בחיפה", true), "דירה בחיפה");
        assert_eq!(csv_cell("a, b", true), "\"a, b\"");
        assert_eq!(csv_cell("say \"hi\"\nbye", true), "\"say \"\"hi\"\"\nbye\"");
        assert_eq!(csv_cell("=HYPERLINK(\"http://x\")", true), "\"'=HYPERLINK(\"\"http://x\"\")\"");
        assert_eq!(csv_cell("+972501234567", false), "+972501234567", "our own columns are left as they are");
    }
}
