//! `callkeeper leads [--csv]`: the lead fields across the most recent calls, a row per call that
//! has any, as a table or as CSV for a spreadsheet or another CRM (the CRM page's table).

use callkeeper_core::store::CallStore;
use callkeeper_functions::crm::leads;
use std::fmt::Write;

pub use callkeeper_functions::crm::leads::cell;

pub async fn list(store: &dyn CallStore, limit: usize, csv: bool) -> anyhow::Result<String> {
    let (table, _) = leads::table(store, limit).await?;
    if csv {
        return Ok(table.to_csv());
    }
    if table.rows.is_empty() {
        return Ok("no leads yet\n".into());
    }
    let lines = || std::iter::once(&table.header).chain(table.rows.iter());
    let widths: Vec<usize> = (0..table.header.len()).map(|i| lines().map(|l| l[i].chars().count().min(40)).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for line in lines() {
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
