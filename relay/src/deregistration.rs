//! Leaving the load balancer before it leaves us. On a deploy or a scale-in ECS first
//! deregisters the task from the ALB's target group and sends SIGTERM only once the
//! deregistration delay is over; at that moment the ALB closes the connections still open to the
//! target. A relay that waited for SIGTERM would have each of its calls cut by the ALB and
//! recovered as a fault (a 3 s silence, one of the call's two recoveries). So on ECS the relay
//! asks the target group about itself (`DescribeTargetHealth`, its own IP and port) every
//! [`LOOK_EVERY`], and once its target is `draining` — or no longer registered, having been — it
//! drains as on SIGTERM: no new streams, each call moves at a quiet moment within
//! `DRAIN_MOVE_SECS`, well inside the delay (45 s in the template).
//!
//! A failed look changes nothing: the SIGTERM that follows the delay still drains.

use crate::drain::Drain;
use aws_sdk_elasticloadbalancingv2::types::{TargetDescription, TargetHealthStateEnum};
use std::time::Duration;

/// How often the relay asks: a fraction of the 45 s delay, and 12 requests a minute per task.
pub const LOOK_EVERY: Duration = Duration::from_secs(5);

/// Where this relay is in the target group.
#[derive(Debug, Clone)]
pub struct Target {
    pub target_group_arn: String,
    /// The task's private IP (`awsvpc`: the targets are IPs).
    pub ip: String,
    pub port: u16,
}

/// What the target group says of this relay, as far as draining goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Registered: `initial`, `healthy` or `unhealthy`.
    Registered,
    /// Deregistration is under way: traffic has stopped, the ALB will close the connections.
    Draining,
    /// Not registered (`unused`, `unavailable`): before registration, or after it ended.
    NotRegistered,
}

pub fn standing(state: Option<&TargetHealthStateEnum>) -> Standing {
    match state {
        Some(TargetHealthStateEnum::Draining | TargetHealthStateEnum::UnhealthyDraining) => Standing::Draining,
        Some(TargetHealthStateEnum::Unused | TargetHealthStateEnum::Unavailable) | None => Standing::NotRegistered,
        Some(_) => Standing::Registered,
    }
}

/// Whether to drain, given what was seen before and now: draining, or gone after having been
/// registered (a task not yet registered is starting, not leaving).
pub fn leaving(seen_registered: bool, now: Standing) -> bool {
    match now {
        Standing::Draining => true,
        Standing::NotRegistered => seen_registered,
        Standing::Registered => false,
    }
}

/// Watches the target group until this relay is leaving it, then starts the drain. Ends then,
/// or never.
pub async fn watch(client: aws_sdk_elasticloadbalancingv2::Client, target: Target, drain: Drain, look_every: Duration) {
    let mut seen_registered = false;
    let mut every = tokio::time::interval(look_every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if drain.is_draining() {
            return;
        }
        let now = match look(&client, &target).await {
            Ok(now) => now,
            Err(e) => {
                tracing::warn!(error = %e, "could not read this relay's target health; SIGTERM will still drain it");
                continue;
            }
        };
        if leaving(seen_registered, now) {
            tracing::info!(standing = ?now, live = drain.live(), "deregistered from the load balancer: draining before it closes the streams");
            drain.leave();
            return;
        }
        seen_registered |= now == Standing::Registered;
    }
}

async fn look(client: &aws_sdk_elasticloadbalancingv2::Client, target: &Target) -> anyhow::Result<Standing> {
    let me = TargetDescription::builder().id(&target.ip).port(i32::from(target.port)).build();
    let health = client.describe_target_health().target_group_arn(&target.target_group_arn).targets(me).send().await?;
    let state = health
        .target_health_descriptions()
        .iter()
        .find(|d| d.target().is_some_and(|t| t.id() == Some(target.ip.as_str())))
        .and_then(|d| d.target_health())
        .and_then(|h| h.state());
    Ok(standing(state))
}

/// This task's private IP, from the ECS container metadata endpoint
/// (`$ECS_CONTAINER_METADATA_URI_V4`: `Networks[0].IPv4Addresses[0]`).
pub async fn task_ip(metadata_uri: &str) -> anyhow::Result<String> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let body: serde_json::Value = client.get(metadata_uri).send().await?.error_for_status()?.json().await?;
    body["Networks"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|n| n["IPv4Addresses"].as_array().and_then(|a| a.first()).and_then(|ip| ip.as_str()))
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no IPv4 address in the container metadata"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_drains_when_its_target_drains_or_is_gone_after_being_registered() {
        use TargetHealthStateEnum as S;
        assert_eq!(standing(Some(&S::Healthy)), Standing::Registered);
        assert_eq!(standing(Some(&S::Initial)), Standing::Registered);
        assert_eq!(standing(Some(&S::Unhealthy)), Standing::Registered);
        assert_eq!(standing(Some(&S::Draining)), Standing::Draining);
        assert_eq!(standing(Some(&S::Unused)), Standing::NotRegistered);
        assert!(leaving(false, Standing::Draining));
        assert!(!leaving(false, Standing::NotRegistered), "a task not yet registered is starting");
        assert!(leaving(true, Standing::NotRegistered));
        assert!(!leaving(true, Standing::Registered));
    }
}
