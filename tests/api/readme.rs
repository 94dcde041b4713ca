//! The documentation stays true: every setting the code reads is in the settings table of
//! docs/running-locally.md, and the agent profile docs/agent.md shows is one the agent takes.
//! README.md stays a short front page.

use callkeeper_core::config::SETTINGS;

fn doc(name: &str) -> String {
    std::fs::read_to_string(format!("{}/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn every_setting_is_documented() {
    let settings = doc("docs/running-locally.md");
    let missing: Vec<&str> =
        SETTINGS.iter().map(|(name, _, _)| *name).filter(|name| !settings.contains(&format!("| `{name}` |"))).collect();
    assert!(missing.is_empty(), "docs/running-locally.md's settings table lacks {missing:?}");
}

#[test]
fn the_documented_agent_profile_is_one_the_agent_takes() {
    let agent = doc("docs/agent.md");
    let start = agent.find("```toml\n# agent.toml").expect("docs/agent.md shows an agent profile") + "```toml\n".len();
    let text = &agent[start..start + agent[start..].find("```").unwrap()];
    let defaults = callkeeper_core::profile::AgentProfile::builtin("he-IL", &callkeeper_core::config::default_extraction_schema());
    let profile = callkeeper_core::profile::parse(text, "docs/agent.md", std::path::Path::new("."), &defaults).unwrap();
    assert_eq!(profile.lead_fields(), ["area", "budget", "name"]);
    assert_eq!(profile.transfer_number.map(|n| n.to_string()).as_deref(), Some("+972501112222"));
}

#[test]
fn the_readme_is_a_front_page_whose_links_lead_somewhere() {
    let readme = doc("README.md");
    assert!(readme.lines().count() <= 250, "README.md has {} lines", readme.lines().count());
    assert!(readme.contains("cargo run --release ") && readme.contains("./scripts/test.sh"), "the two commands");
    // Every relative link of README and docs/ names a file that exists (and an anchor its headings make).
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![("README.md".to_string(), readme)];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push((format!("docs/{}", path.file_name().unwrap().to_str().unwrap()), std::fs::read_to_string(&path).unwrap()));
        }
    }
    for (page, text) in &pages {
        let dir = std::path::Path::new(page).parent().unwrap();
        for link in text.split("](").skip(1).filter_map(|rest| rest.split(')').next()) {
            if link.starts_with("http") || link.contains(' ') {
                continue;
            }
            let (file, anchor) = link.split_once('#').unwrap_or((link, ""));
            let target = if file.is_empty() { std::path::PathBuf::from(page) } else { dir.join(file) };
            assert!(root.join(&target).exists(), "{page} links to {link}, which is not there");
            if !anchor.is_empty() {
                let body = std::fs::read_to_string(root.join(&target)).unwrap();
                let found = body.lines().filter_map(|l| l.strip_prefix('#')).any(|h| slug(h.trim_start_matches('#')) == anchor);
                assert!(found, "{page} links to {link}: no such heading");
            }
        }
    }
}

/// A heading's anchor, as GitHub makes it.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == ' ' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}
