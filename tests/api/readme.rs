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

/// The one deploy checklist (docs/first-real-call.md) agrees with the template and the code: each
/// SSM name of step 1 is answered to a template parameter in step 3, and step 5 sets the setting
/// the template fills from that parameter to the same name; every other setting it exports is one
/// callkeeper reads; every `callkeeper` command it gives takes the flags written.
#[test]
fn the_deploy_checklist_agrees_with_the_template_and_the_commands() {
    let page = doc("docs/first-real-call.md");
    let template = doc("infra/template.yaml");
    let checklist = &page[page.find("## The checklist").unwrap()..page.find("Locally the doctor").unwrap()];

    let ssm_names: Vec<&str> = checklist
        .lines()
        .filter(|l| l.contains("aws ssm put-parameter"))
        .map(|l| l.split("--name ").nth(1).unwrap())
        .map(|r| r.split(' ').next().unwrap())
        .collect();
    assert!(ssm_names.contains(&"/callkeeper/stream-token-secret") && ssm_names.len() >= 3, "{ssm_names:?}");
    let answers: Vec<(&str, &str)> =
        checklist.lines().filter_map(|l| l.trim().strip_prefix("| `")).filter_map(|r| r.split_once("` | ")).collect();
    assert!(answers.len() >= 6, "step 3's table: {answers:?}");
    for (parameter, _) in &answers {
        assert!(template.contains(&format!("\n  {parameter}:\n    Type:")), "{parameter} is no parameter of infra/template.yaml");
    }
    let exports = &checklist[checklist.find("export ").unwrap()..checklist.find("callkeeper doctor\n").unwrap()];
    let exported: Vec<(&str, &str)> = exports.split_whitespace().filter_map(|w| w.split_once('=')).collect();
    for name in &ssm_names {
        let (parameter, _) = answers
            .iter()
            .find(|(_, a)| a.starts_with(&format!("`{name}`")))
            .unwrap_or_else(|| panic!("{name} is given to no parameter in step 3"));
        // The setting the template fills from that parameter, in either of its two spellings.
        let setting = template
            .lines()
            .find_map(|l| {
                let l = l.trim().trim_start_matches("- { Name: ");
                let (setting, value) = l.split_once([':', ','])?;
                (setting.ends_with("_SSM_PARAMETER") && value.contains(&format!("!Ref {parameter}"))).then_some(setting)
            })
            .unwrap_or_else(|| panic!("the template passes {parameter} to no setting"));
        assert!(exported.contains(&(setting, name)), "step 5 sets {setting}={name}: {exported:?}");
    }
    // Every setting exported is one of docs/running-locally.md's table (which holds every one the
    // code reads: the test above), the store's and the AWS SDK's included.
    let table = doc("docs/running-locally.md");
    for (setting, _) in &exported {
        let documented = table.lines().any(|l| l.starts_with("| `") && l.split(" | ").next().unwrap().contains(&format!("`{setting}`")));
        assert!(documented, "{setting} is no setting callkeeper reads (docs/running-locally.md)");
    }

    // Every `callkeeper …` command: its subcommands exist and take the flags written.
    let commands: Vec<&str> = checklist
        .split('`')
        .chain(checklist.lines())
        .map(str::trim)
        .filter(|c| c.starts_with("callkeeper ") && !c.contains('\n'))
        .collect();
    assert!(commands.len() >= 5, "{commands:?}");
    let top_help = help(&[]);
    for command in commands {
        let words: Vec<&str> = command.split_whitespace().skip(1).collect();
        let path: Vec<&str> =
            words.iter().copied().take_while(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !w.starts_with('-')).collect();
        let text = help(&path);
        for flag in words.iter().filter(|w| w.starts_with("--")) {
            assert!(text.contains(flag) || top_help.contains(flag), "`{command}`: `callkeeper {} --help` has no {flag}", path.join(" "));
        }
    }
}

/// `callkeeper <path> --help`, which fails on a subcommand that does not exist.
fn help(path: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callkeeper")).args(path).arg("--help").output().unwrap();
    assert!(out.status.success(), "callkeeper {} --help: {}", path.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}
