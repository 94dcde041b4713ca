//! Which build is running: crate version, git sha and build time.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct BuildInfo {
    pub version: &'static str,
    pub git_sha: &'static str,
    /// RFC 3339, UTC.
    pub built_at: String,
}

pub fn build_info() -> BuildInfo {
    let secs: u64 = env!("CALLKEEPER_BUILT_AT").parse().unwrap_or(0);
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    BuildInfo {
        version: env!("CARGO_PKG_VERSION"),
        git_sha: env!("CALLKEEPER_GIT_SHA"),
        built_at: humantime::format_rfc3339_seconds(at).to_string(),
    }
}

/// The short form sent as the `X-Callkeeper-Version` header: `0.1.0+abc123def456`.
pub fn version_header() -> String {
    format!("{}+{}", env!("CARGO_PKG_VERSION"), env!("CALLKEEPER_GIT_SHA"))
}
