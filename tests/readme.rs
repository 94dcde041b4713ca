//! The README stays true: every setting the code reads is in its table.

use callkeeper_core::config::SETTINGS;

#[test]
fn every_setting_is_documented_in_the_readme() {
    // Compiled in, so cargo rebuilds the test whenever the README changes.
    let readme = include_str!("../README.md");
    let missing: Vec<&str> = SETTINGS.iter().map(|(name, _, _)| *name).filter(|name| !readme.contains(&format!("| `{name}` |"))).collect();
    assert!(missing.is_empty(), "README.md's settings table lacks {missing:?}");
}

#[test]
fn the_readmes_agent_profile_is_one_the_agent_takes() {
    let readme = include_str!("../README.md");
    let start = readme.find("```toml\n# agent.toml").expect("README shows an agent profile") + "```toml\n".len();
    let text = &readme[start..start + readme[start..].find("```").unwrap()];
    let defaults = callkeeper_core::profile::AgentProfile::builtin("he-IL", &callkeeper_core::config::default_extraction_schema());
    let profile = callkeeper_core::profile::parse(text, "README.md", std::path::Path::new("."), &defaults).unwrap();
    assert_eq!(profile.lead_fields(), ["area", "budget", "name"]);
    assert_eq!(profile.transfer_number.map(|n| n.to_string()).as_deref(), Some("+972501112222"));
}
