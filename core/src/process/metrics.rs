//! Metrics as CloudWatch Embedded Metric Format: one JSON line on stdout per data point, which
//! CloudWatch Logs turns into a metric (Lambda's log stream, and the relay's `awslogs` driver,
//! which sends with PutLogEvents). No SDK call, no batching, nothing lost when a process dies.
//!
//! Off unless `METRICS_NAMESPACE` is set (the template sets it), so a laptop's terminal stays
//! readable. Every metric the dashboard and the alarms use is in [`CATALOG`]; a test checks the
//! template names each of them.

use crate::domain::time::now_ms;
use serde_json::{json, Map, Value};
use std::io::Write;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// A metric: its name, unit, and the dimension keys it is broken down by. With
/// `with_total`, each point also counts in the metric without dimensions, which alarms use
/// (an alarm cannot sum over every value of a dimension).
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub unit: Unit,
    pub dimensions: &'static [&'static str],
    pub with_total: bool,
}

/// A call answered by `incoming_call`/`outbound_call`; by `Direction`.
pub const CALLS_ANSWERED: Metric = Metric { name: "CallsAnswered", unit: Unit::Count, dimensions: &["Direction"], with_total: true };
/// Time from the webhook's answer to the relay's `start` for the call.
pub const STREAM_START_LATENCY: Metric = Metric { name: "StreamStartLatency", unit: Unit::Milliseconds, dimensions: &[], with_total: true };
/// A call sent to the fallback; by `Reason` (`stream_never_started`, `stream_failed`, `heartbeat_stale`…).
pub const FALLBACKS: Metric = Metric { name: "Fallbacks", unit: Unit::Count, dimensions: &["Reason"], with_total: true };
/// A webhook's handling time inside the function; by `Route`.
pub const WEBHOOK_LATENCY: Metric = Metric { name: "WebhookLatency", unit: Unit::Milliseconds, dimensions: &["Route"], with_total: true };
/// Media streams a relay holds now, every few seconds from each relay; by `Instance`.
pub const RELAY_CONNECTIONS: Metric = Metric { name: "RelayConnections", unit: Unit::Count, dimensions: &["Instance"], with_total: true };
/// The age of the oldest heartbeat among streaming calls, at each watchdog pass.
pub const HEARTBEAT_LAG: Metric = Metric { name: "HeartbeatLag", unit: Unit::Milliseconds, dimensions: &[], with_total: true };
/// A queue job's result; by `Queue` (`transcription`, `replies`) and `Outcome`.
pub const JOB_OUTCOMES: Metric = Metric { name: "JobOutcomes", unit: Unit::Count, dimensions: &["Queue", "Outcome"], with_total: false };
/// From the end of the caller's speech to the agent's first audio, per turn.
pub const TURN_LATENCY: Metric = Metric { name: "TurnLatency", unit: Unit::Milliseconds, dimensions: &[], with_total: true };

/// The model's share of a turn: the caller stops → the model's first audio reaches the relay.
pub const MODEL_LATENCY: Metric = Metric { name: "ModelLatency", unit: Unit::Milliseconds, dimensions: &[], with_total: true };

/// A call's conversation moved to a new stream (a relay crash or hang, a lost socket, a draining
/// relay); by `Reason`.
pub const STREAM_RECONNECTS: Metric = Metric { name: "StreamReconnects", unit: Unit::Count, dimensions: &["Reason"], with_total: true };
/// The agent opened a new model session for a live call (a drop, a fatal error, the session's
/// cap); by `Reason`.
pub const MODEL_RECONNECTS: Metric = Metric { name: "ModelReconnects", unit: Unit::Count, dimensions: &["Reason"], with_total: true };

pub const CATALOG: [Metric; 11] = [
    CALLS_ANSWERED,
    STREAM_START_LATENCY,
    FALLBACKS,
    WEBHOOK_LATENCY,
    RELAY_CONNECTIONS,
    HEARTBEAT_LAG,
    JOB_OUTCOMES,
    TURN_LATENCY,
    MODEL_LATENCY,
    STREAM_RECONNECTS,
    MODEL_RECONNECTS,
];

pub const NAMESPACE_SETTING: &str = "METRICS_NAMESPACE";

fn namespace() -> Option<&'static str> {
    static NAMESPACE: OnceLock<Option<String>> = OnceLock::new();
    NAMESPACE.get_or_init(|| std::env::var(NAMESPACE_SETTING).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())).as_deref()
}

/// Whether points are recorded at all (`METRICS_NAMESPACE` is set).
pub fn enabled() -> bool {
    namespace().is_some()
}

/// Records one data point of `metric`; `dimensions` gives a value for each of its keys, in order.
pub fn record(metric: Metric, value: f64, dimensions: &[&str]) {
    let Some(namespace) = namespace() else { return };
    let line = document(namespace, now_ms(), metric, value, dimensions).to_string();
    // One write of one whole line, so a log line from another thread never lands inside it.
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(format!("{line}\n").as_bytes());
    let _ = out.flush();
}

/// The EMF document for one data point.
pub fn document(namespace: &str, timestamp_ms: i64, metric: Metric, value: f64, dimensions: &[&str]) -> Value {
    debug_assert_eq!(metric.dimensions.len(), dimensions.len(), "a value for each dimension of {}", metric.name);
    let mut sets: Vec<Vec<&str>> = Vec::new();
    if metric.with_total {
        sets.push(Vec::new());
    }
    if !metric.dimensions.is_empty() {
        sets.push(metric.dimensions.to_vec());
    }
    let mut doc = Map::new();
    doc.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": sets,
                "Metrics": [{ "Name": metric.name, "Unit": metric.unit.as_str() }],
            }],
        }),
    );
    for (key, value) in metric.dimensions.iter().zip(dimensions) {
        doc.insert((*key).into(), json!(value));
    }
    doc.insert(metric.name.into(), json!(value));
    Value::Object(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_with_a_total_and_a_breakdown() {
        let doc = document("Callkeeper/prod", 1_700_000_000_000, FALLBACKS, 1.0, &["heartbeat_stale"]);
        assert_eq!(
            doc,
            json!({
                "_aws": { "Timestamp": 1_700_000_000_000i64, "CloudWatchMetrics": [{
                    "Namespace": "Callkeeper/prod", "Dimensions": [[], ["Reason"]],
                    "Metrics": [{ "Name": "Fallbacks", "Unit": "Count" }] }] },
                "Reason": "heartbeat_stale", "Fallbacks": 1.0
            })
        );
    }

    #[test]
    fn a_point_without_dimensions_and_one_without_a_total() {
        let doc = document("ns", 5, TURN_LATENCY, 812.5, &[]);
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([[]]));
        assert_eq!(doc["TurnLatency"], json!(812.5));
        let doc = document("ns", 5, JOB_OUTCOMES, 1.0, &["transcription", "transcribed"]);
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([["Queue", "Outcome"]]));
        assert_eq!((doc["Queue"].as_str(), doc["Outcome"].as_str()), (Some("transcription"), Some("transcribed")));
    }

    #[test]
    fn every_metric_has_a_distinct_name() {
        let mut names: Vec<_> = CATALOG.iter().map(|m| m.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), CATALOG.len());
    }
}
