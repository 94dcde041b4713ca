//! What a business's agent knows: its knowledge files (prices, hours, listings, an FAQ), kept
//! with the profile in the store so every process that answers calls reads the same.
//!
//! Small knowledge is simply part of the instructions. Past [`INLINE_LIMIT`] it would crowd the
//! model's context on every turn, so the agent gets a `search_knowledge` tool instead, answered
//! from an index the relay builds of these texts (see `relay::knowledge`).

use serde::{Deserialize, Serialize};

/// Knowledge up to this many bytes goes into the instructions whole.
pub const INLINE_LIMIT: usize = 6 * 1024;
/// The most a profile may hold: the profile is one store item (DynamoDB's limit is 400 KB).
pub const MAX_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnowledgeFile {
    /// The file's name, as the business wrote it in the profile: shown with what is found in it.
    pub name: String,
    pub text: String,
}

/// How the agent reaches its knowledge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    None,
    Inline,
    Search,
}

pub fn total_bytes(files: &[KnowledgeFile]) -> usize {
    files.iter().map(|f| f.text.len()).sum()
}

pub fn reach(files: &[KnowledgeFile]) -> Reach {
    match total_bytes(files) {
        0 => Reach::None,
        n if n <= INLINE_LIMIT => Reach::Inline,
        _ => Reach::Search,
    }
}

/// What the instructions gain: the files themselves, or how to search them.
pub fn instructions(files: &[KnowledgeFile]) -> Option<String> {
    match reach(files) {
        Reach::None => None,
        Reach::Inline => {
            let mut text = String::from("What you know about the business (answer from this; never invent what is not here):");
            for file in files {
                text.push_str(&format!("\n\n## {}\n{}", file.name, file.text.trim()));
            }
            Some(text)
        }
        Reach::Search => Some(format!(
            "The business's knowledge ({}) is searchable with the search_knowledge tool: before you answer a question about \
             prices, hours, listings, terms or anything else about the business, search it, and answer only from what it finds.",
            files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Reads knowledge files (Markdown or text, UTF-8), checking the limits.
pub fn read(paths: &[(String, std::path::PathBuf)]) -> Result<Vec<KnowledgeFile>, String> {
    let mut files = Vec::new();
    for (name, path) in paths {
        let bytes = std::fs::read(path).map_err(|e| format!("knowledge file {name}: {e}"))?;
        let text = String::from_utf8(bytes).map_err(|_| format!("knowledge file {name} is not UTF-8 text"))?;
        if text.trim().is_empty() {
            return Err(format!("knowledge file {name} is empty"));
        }
        files.push(KnowledgeFile { name: name.clone(), text });
    }
    let total = total_bytes(&files);
    if total > MAX_BYTES {
        return Err(format!("the knowledge files hold {total} bytes; at most {MAX_BYTES} are kept with a profile"));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_knowledge_is_told_and_large_is_searched() {
        let small = vec![KnowledgeFile { name: "hours.md".into(), text: "פתוח א׳-ה׳ 9:00-18:00".into() }];
        assert_eq!(reach(&small), Reach::Inline);
        assert!(instructions(&small).unwrap().contains("## hours.md\nפתוח"));
        let large = vec![KnowledgeFile { name: "listings.md".into(), text: "דירה ".repeat(2000) }];
        assert_eq!(reach(&large), Reach::Search);
        assert!(instructions(&large).unwrap().contains("search_knowledge tool") && instructions(&large).unwrap().contains("listings.md"));
        assert_eq!(instructions(&[]), None);
    }
}
