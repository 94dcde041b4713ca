// Stamps the build with its git sha and time, for `/version` and `X-Callkeeper-Version`:
// the first question when a deploy misbehaves is "which build is serving?".
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    let sha = std::env::var("CALLKEEPER_GIT_SHA").ok().filter(|s| !s.is_empty()).or_else(|| {
        Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
    });
    let built = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    println!("cargo:rustc-env=CALLKEEPER_GIT_SHA={}", sha.unwrap_or_else(|| "unknown".into()));
    println!("cargo:rustc-env=CALLKEEPER_BUILT_AT={built}");
    println!("cargo:rerun-if-env-changed=CALLKEEPER_GIT_SHA");
    // Rebuild the stamp when HEAD moves, not on every source change.
    for path in ["../.git/HEAD", "../.git/refs/heads"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
