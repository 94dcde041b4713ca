//! Logging: one line per event. JSON in Lambda and Fargate (and with `LOG_FORMAT=json`), where
//! CloudWatch Logs Insights queries the fields; readable text on a terminal.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let json = std::env::var("LOG_FORMAT").map(|v| v == "json").unwrap_or(false)
        || std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some()
        || std::env::var_os("ECS_CONTAINER_METADATA_URI_V4").is_some();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: a log file or CloudWatch gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi);
    // A second init (tests start many servers in one process) is not an error.
    let _ = if json { builder.json().flatten_event(true).with_current_span(false).try_init() } else { builder.compact().try_init() };
}
