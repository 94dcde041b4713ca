//! Configuration for `callkeeper serve`: the environment when it configures Twilio, and
//! otherwise, for local use, generated secrets kept in the data folder and URLs on this machine.

use callkeeper_core::config::Config;
use callkeeper_core::ids::random_sid;
use callkeeper_core::secrets::Secret;
use serde_json::json;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

pub const LOCAL_SECRETS_FILE: &str = "local-secrets.json";

/// The settings whose presence means "this is a real Twilio setup": then all must be right.
const TWILIO_SETTINGS: [&str; 4] = ["PUBLIC_BASE_URL", "RELAY_PUBLIC_URL", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"];

/// Where the configuration came from, to tell the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Environment,
    /// Local use: generated secrets in this file.
    Local(PathBuf),
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Resolves the configuration for a server listening on `addr`.
pub fn resolve(data_dir: &Path, addr: SocketAddr) -> anyhow::Result<(Config, Source)> {
    if TWILIO_SETTINGS.iter().any(|name| env(name).is_some()) {
        return Ok((Config::from_env()?, Source::Environment));
    }
    let (account_sid, auth_token, path) = local_secrets(data_dir)?;
    let host = if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
    let host = if addr.is_ipv6() && !addr.ip().is_unspecified() { format!("[{host}]") } else { host };
    let defaults: HashMap<&str, String> = HashMap::from([
        ("PUBLIC_BASE_URL", format!("http://{host}:{}", addr.port())),
        ("RELAY_PUBLIC_URL", format!("ws://{host}:{}", addr.port())),
        ("TWILIO_ACCOUNT_SID", account_sid),
        ("TWILIO_AUTH_TOKEN", auth_token.expose().to_string()),
    ]);
    let config = Config::from_lookup(|name| env(name).or_else(|| defaults.get(name).cloned()))?;
    Ok((config, Source::Local(path)))
}

/// The settings as `serve` (or, with the `*_SSM_PARAMETER` settings, a deployed function) would
/// read them, and where they came from: for `doctor` and `twilio`, which read and never make
/// them (the local settings must already exist). An error is one line with the fix.
pub async fn existing(data_dir: &Path, port: u16) -> Result<(Config, String), String> {
    use callkeeper_core::parameters::{parameter_setting, SECRET_SETTINGS};
    use callkeeper_core::startup::{config_from_env, StartError};
    let named = |name: &str| env(name).is_some() || env(&parameter_setting(name)).is_some();
    if TWILIO_SETTINGS.iter().any(|name| named(name)) {
        let config = config_from_env().await.map_err(|e| match e {
            StartError::Secrets(e) => format!("{e}: check the parameter's name and this identity's ssm:GetParameter"),
            other => other.to_string(),
        })?;
        let from_ssm = SECRET_SETTINGS.iter().any(|name| env(&parameter_setting(name)).is_some());
        let source = if from_ssm { "the environment and SSM" } else { "the environment" };
        return Ok((config, source.to_string()));
    }
    let local = data_dir.join(LOCAL_SECRETS_FILE);
    if !local.exists() {
        return Err(format!(
            "no settings: set PUBLIC_BASE_URL, RELAY_PUBLIC_URL, TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (docs/deploying.md), or run `callkeeper serve` once for local ones in {}",
            data_dir.display()
        ));
    }
    let addr = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port);
    let (config, _) = resolve(data_dir, addr).map_err(|e| e.to_string())?;
    Ok((config, format!("local, {}", local.display())))
}

/// The local account sid and auth token, generated on first use and kept (mode 0600) so the
/// simulator and later runs sign with the same token.
pub fn local_secrets(data_dir: &Path) -> anyhow::Result<(String, Secret, PathBuf)> {
    let path = data_dir.join(LOCAL_SECRETS_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{} is not valid JSON: {e}", path.display()))?;
        let field = |name: &str| value[name].as_str().map(str::to_string).ok_or_else(|| anyhow::anyhow!("{} lacks {name}", path.display()));
        return Ok((field("account_sid")?, Secret::new(field("auth_token")?), path));
    }
    std::fs::create_dir_all(data_dir)?;
    let account_sid = random_sid("AC");
    let auth_token = Secret::generate();
    let text = serde_json::to_string_pretty(&json!({ "account_sid": account_sid, "auth_token": auth_token.expose() }))?;
    write_private(&path, &text)?;
    Ok((account_sid, auth_token, path))
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}
