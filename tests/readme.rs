//! The README stays true: every setting the code reads is in its table.

use callkeeper_core::config::SETTINGS;

#[test]
fn every_setting_is_documented_in_the_readme() {
    // Compiled in, so cargo rebuilds the test whenever the README changes.
    let readme = include_str!("../README.md");
    let missing: Vec<&str> = SETTINGS.iter().map(|(name, _, _)| *name).filter(|name| !readme.contains(&format!("| `{name}` |"))).collect();
    assert!(missing.is_empty(), "README.md's settings table lacks {missing:?}");
}
