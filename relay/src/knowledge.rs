//! The agent's `search_knowledge` tool: a full-text index (tantivy, in memory) of a profile's
//! knowledge files, built when a relay first needs it and shared by every call of that profile.
//!
//! The files are kept in the store with the profile; the index is made from them, so every relay
//! (and `serve`) answers a search alike without a second copy to keep in step. Building takes
//! milliseconds for the largest knowledge a profile may hold (256 KiB).
//!
//! Hebrew: tantivy's default tokenizer splits on what is not a letter or digit, which keeps
//! Hebrew words whole, but Hebrew writes its prepositions and articles onto the word
//! ("בחיפה" is "in Haifa"). So each word is also indexed, and searched, without one or two of
//! those prefix letters, and "בחיפה" finds "חיפה" and the other way round.

use callkeeper_core::knowledge::KnowledgeFile;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{Field, Schema, Value as _, STORED, TEXT};
use tantivy::{doc, Index, IndexReader, TantivyDocument};

/// A passage is about a paragraph: enough to answer from, short enough that three fit a turn.
const PASSAGE_CHARS: usize = 600;
/// Passages a search returns.
const HITS: usize = 3;

pub struct KnowledgeIndex {
    index: Index,
    reader: IndexReader,
    text: Field,
    id: Field,
    passages: Vec<(String, String)>,
}

impl std::fmt::Debug for KnowledgeIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KnowledgeIndex({} passages)", self.passages.len())
    }
}

impl KnowledgeIndex {
    pub fn build(files: &[KnowledgeFile]) -> tantivy::Result<KnowledgeIndex> {
        let mut schema = Schema::builder();
        let text = schema.add_text_field("text", TEXT);
        let id = schema.add_u64_field("id", STORED);
        let index = Index::create_in_ram(schema.build());
        // One thread, tantivy's smallest arena: knowledge is small, and the relay's cores are
        // for calls.
        let mut writer = index.writer_with_num_threads(1, 15_000_000)?;
        let mut passages = Vec::new();
        for file in files {
            for passage in passages_of(&file.text) {
                writer.add_document(doc!(text => searchable(&passage), id => passages.len() as u64))?;
                passages.push((file.name.clone(), passage));
            }
        }
        writer.commit()?;
        let reader = index.reader()?;
        Ok(KnowledgeIndex { index, reader, text, id, passages })
    }

    /// The passages that best match `query`, best first, with their file's name.
    pub fn search(&self, query: &str) -> Vec<(String, String)> {
        let parser = QueryParser::for_index(&self.index, vec![self.text]);
        let (query, _) = parser.parse_query_lenient(&searchable(query));
        let searcher = self.reader.searcher();
        let Ok(top) = searcher.search(&query, &TopDocs::with_limit(HITS)) else { return vec![] };
        top.into_iter()
            .filter_map(|(_, address)| {
                let doc: TantivyDocument = searcher.doc(address).ok()?;
                let i = doc.get_first(self.id)?.as_u64()? as usize;
                self.passages.get(i).cloned()
            })
            .collect()
    }

    /// The tool's output for the model.
    pub fn answer(&self, query: &str) -> Value {
        let found = self.search(query);
        if found.is_empty() {
            return json!({ "ok": true, "found": [], "note": "Nothing in the business's knowledge matches. Say you do not know, and offer to have someone call back." });
        }
        let found: Vec<Value> = found.into_iter().map(|(file, text)| json!({ "file": file, "text": text })).collect();
        json!({ "ok": true, "found": found })
    }
}

/// Indexes shared between calls, by the knowledge they were built from: a profile re-read every
/// few seconds is not re-indexed unless its knowledge changed, and an index no call holds goes.
#[derive(Default, Clone)]
pub struct KnowledgeIndexes {
    built: Arc<Mutex<HashMap<u64, Weak<KnowledgeIndex>>>>,
}

impl KnowledgeIndexes {
    pub fn for_files(&self, files: &[KnowledgeFile]) -> Option<Arc<KnowledgeIndex>> {
        if callkeeper_core::knowledge::reach(files) != callkeeper_core::knowledge::Reach::Search {
            return None;
        }
        let key = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            for f in files {
                (&f.name, &f.text).hash(&mut h);
            }
            h.finish()
        };
        let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(index) = built.get(&key).and_then(Weak::upgrade) {
            return Some(index);
        }
        match KnowledgeIndex::build(files) {
            Ok(index) => {
                let index = Arc::new(index);
                built.retain(|_, w| w.strong_count() > 0);
                built.insert(key, Arc::downgrade(&index));
                Some(index)
            }
            Err(e) => {
                tracing::error!(error = %e, "knowledge index not built; search_knowledge answers that it cannot search");
                None
            }
        }
    }
}

/// Splits a file into passages: its paragraphs, each under the heading it falls under, short
/// ones joined and long ones cut at line or sentence ends.
fn passages_of(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut heading = String::new();
    let mut current = String::new();
    let flush = |current: &mut String, out: &mut Vec<String>, heading: &str| {
        if !current.trim().is_empty() {
            let body = current.trim();
            out.push(if heading.is_empty() || body.starts_with(heading) { body.to_string() } else { format!("{heading}\n{body}") });
        }
        current.clear();
    };
    for paragraph in text.split("\n\n") {
        let paragraph = paragraph.trim();
        if paragraph.is_empty() {
            continue;
        }
        if paragraph.starts_with('#') {
            flush(&mut current, &mut out, &heading);
            let (first, rest) = paragraph.split_once('\n').unwrap_or((paragraph, ""));
            heading = first.trim_start_matches('#').trim().to_string();
            if !rest.trim().is_empty() {
                current.push_str(rest.trim());
            }
            continue;
        }
        for piece in pieces(paragraph) {
            if current.chars().count() + piece.chars().count() > PASSAGE_CHARS {
                flush(&mut current, &mut out, &heading);
            }
            if !current.is_empty() {
                current.push('\n');
            }
            current.push_str(&piece);
        }
    }
    flush(&mut current, &mut out, &heading);
    out
}

/// A paragraph in pieces of at most [`PASSAGE_CHARS`], cut at line ends, then sentence ends,
/// then anywhere.
fn pieces(paragraph: &str) -> Vec<String> {
    if paragraph.chars().count() <= PASSAGE_CHARS {
        return vec![paragraph.to_string()];
    }
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    for part in paragraph.split_inclusive(['\n', '.', '?', '!']) {
        if current.chars().count() + part.chars().count() > PASSAGE_CHARS && !current.is_empty() {
            out.push(std::mem::take(&mut current).trim().to_string());
        }
        current.push_str(part);
        while current.chars().count() > PASSAGE_CHARS {
            let cut: String = current.chars().take(PASSAGE_CHARS).collect();
            current = current.chars().skip(PASSAGE_CHARS).collect();
            out.push(cut);
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out
}

/// Hebrew's one-letter prefixes: and, the, in, to, from, that, as.
const PREFIXES: &[char] = &['ו', 'ה', 'ב', 'ל', 'מ', 'ש', 'כ'];

/// The text as indexed and searched: each word, and each Hebrew word also without one or two
/// prefix letters (leaving at least three), lower-cased.
fn searchable(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        let word = word.to_lowercase();
        out.push_str(&word);
        out.push(' ');
        let mut stem = word.as_str();
        for _ in 0..2 {
            let mut chars = stem.chars();
            match chars.next() {
                Some(first) if PREFIXES.contains(&first) && chars.clone().count() >= 3 => {
                    stem = chars.as_str();
                    out.push_str(stem);
                    out.push(' ');
                }
                _ => break,
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Vec<KnowledgeFile> {
        let listings = "# דירות להשכרה\n\nהרצל 12, חיפה: שלושה חדרים, קומה שנייה, 5,200 ₪ לחודש. פנויה מינואר.\n\n\
                        ויצמן 4, תל אביב: שני חדרים עם מרפסת, 7,900 ₪. הושכרה.\n\n# Parking\n\nEvery flat in Haifa has a parking space.";
        let mut filler = String::new();
        for i in 0..200 {
            filler.push_str(&format!("שאלה {i}: תשובה כללית על השירות שלנו ועל תנאי התשלום.\n\n"));
        }
        vec![KnowledgeFile { name: "listings.md".into(), text: listings.into() }, KnowledgeFile { name: "faq.md".into(), text: filler }]
    }

    #[test]
    fn hebrew_is_found_with_and_without_its_prefixes() {
        let index = KnowledgeIndex::build(&files()).unwrap();
        let found = index.search("יש לכם דירה בחיפה?");
        assert_eq!(found[0].0, "listings.md", "{found:?}");
        assert!(found[0].1.contains("הרצל 12, חיפה"), "{found:?}");
        assert!(found[0].1.starts_with("דירות להשכרה"), "a passage keeps its heading: {found:?}");
        let found = index.search("מה עם הרצל?");
        assert!(found[0].1.contains("5,200"), "{found:?}");
        let found = index.search("parking");
        assert!(found[0].1.contains("parking space"), "{found:?}");
        assert!(index.search("קנגורו").is_empty());
        assert_eq!(index.answer("קנגורו")["found"], json!([]));
    }

    #[test]
    fn passages_are_short_and_indexes_are_shared() {
        let long = KnowledgeFile { name: "a.txt".into(), text: "מילה. ".repeat(1000) };
        assert!(passages_of(&long.text).iter().all(|p| p.chars().count() <= PASSAGE_CHARS));
        let indexes = KnowledgeIndexes::default();
        let a = indexes.for_files(&files()).unwrap();
        let b = indexes.for_files(&files()).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let small = [KnowledgeFile { name: "s.md".into(), text: "small".into() }];
        assert!(indexes.for_files(&small).is_none(), "small knowledge goes in the instructions");
    }
}
