//! The lead fields across the most recent calls: a row per call that has any, a column per
//! field any lead has. The page, its CSV export and `callkeeper leads` share it; the export and
//! the command name the columns by the fields' names, the pages by their titles.

use callkeeper_core::call::Call;
use callkeeper_core::store::{CallStore, StoreResult};
use callkeeper_core::time::format_ms;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// The columns every row has before the lead's own.
pub const FIXED: [&str; 3] = ["call_sid", "started", "contact"];

#[derive(Debug, Clone, Serialize)]
pub struct LeadTable {
    /// [`FIXED`], then every field any lead has, in the order they first appear.
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// The leads of the `limit` most recent calls; also the calls, for who looks further.
pub async fn table(store: &dyn CallStore, limit: usize) -> StoreResult<(LeadTable, Vec<Call>)> {
    let mut leads = Vec::new();
    let calls = store.recent_calls(None, limit).await?;
    for call in &calls {
        let Some(Value::Object(fields)) = store.lead(&call.call_sid).await? else { continue };
        if fields.values().all(Value::is_null) {
            continue;
        }
        leads.push((call, fields));
    }
    let mut columns: Vec<String> = Vec::new();
    for (_, fields) in &leads {
        for name in fields.keys() {
            if !columns.contains(name) {
                columns.push(name.clone());
            }
        }
    }
    let header = FIXED.iter().map(|s| s.to_string()).chain(columns.iter().cloned()).collect();
    let rows = leads
        .iter()
        .map(|(call, fields)| {
            let contact = call.contact.as_ref().map_or_else(|| call.from.clone(), |p| p.to_string());
            let values = columns.iter().map(|c| fields.get(c).map_or(String::new(), cell));
            [call.call_sid.to_string(), format_ms(call.created_at), contact].into_iter().chain(values).collect()
        })
        .collect();
    let with_leads = leads.iter().map(|(call, _)| (*call).clone()).collect();
    Ok((LeadTable { header, rows }, with_leads))
}

impl LeadTable {
    /// RFC 4180, UTF-8, CRLF line ends.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        for line in std::iter::once(&self.header).chain(self.rows.iter()) {
            let cells: Vec<String> = line.iter().map(|v| csv_cell(v)).collect();
            out += &cells.join(",");
            out += "\r\n";
        }
        out
    }
}

/// What the pages call each lead field: the `title` a profile's lead schema gives it (the
/// business's own word, in its language), else the CRM's word for a built-in field, else its
/// name with spaces for underscores.
#[derive(Debug, Default)]
pub struct FieldTitles(BTreeMap<String, String>);

impl FieldTitles {
    /// The titles of the deployment's extraction schema, then of every stored profile; the
    /// first to title a field names it.
    pub async fn load(extraction_schema: &Value, store: &dyn CallStore) -> StoreResult<FieldTitles> {
        let stored = store.profiles().await?;
        let schemas = std::iter::once(extraction_schema).chain(stored.iter().map(|p| &p.profile.lead_schema));
        let mut titles = BTreeMap::new();
        for (field, spec) in schemas.filter_map(|s| s["properties"].as_object()).flatten() {
            if let Some(title) = spec["title"].as_str().map(str::trim).filter(|t| !t.is_empty()) {
                titles.entry(field.clone()).or_insert_with(|| title.to_string());
            }
        }
        Ok(FieldTitles(titles))
    }

    pub fn of(&self, field: &str, pages: &super::render::Pages) -> String {
        match self.0.get(field) {
            Some(title) => title.clone(),
            None => pages.lead_field(field).map_or_else(|| field.replace('_', " "), str::to_string),
        }
    }
}

/// A lead value as text: strings as they are, null as nothing, anything else as JSON.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break. Every
/// column is defused, as the contact falls back to the caller's `From` and a lead's value is
/// what a caller said: a value a spreadsheet would run as a formula (its first character, past
/// any spaces, one of `=`, `+`, `-`, `@`, a tab or a carriage return, or their full-width
/// forms, which some spreadsheets read alike) is kept as text with a leading `'`. A plain
/// number (`+972501234567`, `-3.5`) is left as it is: a spreadsheet reads it as a number, and
/// it runs nothing.
fn csv_cell(value: &str) -> String {
    let value = if runs_as_formula(value) { format!("'{value}") } else { value.to_string() };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

fn runs_as_formula(value: &str) -> bool {
    let trimmed = value.trim_start_matches(|c: char| c.is_whitespace() && c != '\t' && c != '\r');
    let Some(first) = trimmed.chars().next() else { return false };
    let risky = matches!(first, '=' | '+' | '-' | '@' | '\t' | '\r' | '\u{FF1D}' | '\u{FF0B}' | '\u{FF0D}' | '\u{FF20}');
    let number = trimmed.trim_end().strip_prefix(['+', '-']).is_some_and(|rest| {
        !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit() || c == '.') && rest.chars().filter(|c| *c == '.').count() <= 1
    });
    risky && !number
}

#[cfg(test)]
mod tests {
    use super::csv_cell;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_cell("דירה בחיפה"), "דירה בחיפה");
        assert_eq!(csv_cell("a, b"), "\"a, b\"");
        assert_eq!(csv_cell("say \"hi\"\nbye"), "\"say \"\"hi\"\"\nbye\"");
        assert_eq!(csv_cell("=HYPERLINK(\"http://x\")"), "\"'=HYPERLINK(\"\"http://x\"\")\"");
        assert_eq!(csv_cell(" =1+1"), "' =1+1", "past leading spaces");
        assert_eq!(csv_cell("\u{3000}=1+1"), "'\u{3000}=1+1", "past an ideographic space");
        assert_eq!(csv_cell("＝1+1"), "'＝1+1", "a full-width equals sign");
        assert_eq!(csv_cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_cell("-2+3+cmd|' /C calc'!A0"), "'-2+3+cmd|' /C calc'!A0");
        assert_eq!(csv_cell("+972501234567"), "+972501234567", "a phone number is a plain number");
        assert_eq!(csv_cell("-3.5"), "-3.5");
        assert_eq!(csv_cell("+"), "'+");
    }
}
