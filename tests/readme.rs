//! The README stays true: every setting the code reads is in its table.

use callkeeper_core::config::SETTINGS;

#[test]
fn every_setting_is_documented_in_the_readme() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let missing: Vec<&str> = SETTINGS.iter().map(|(name, _, _)| *name).filter(|name| !readme.contains(&format!("| `{name}` |"))).collect();
    assert!(missing.is_empty(), "README.md's settings table lacks {missing:?}");
}
