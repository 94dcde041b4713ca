//! ECS task scale-in protection, with `RELAY_SCALE_IN_PROTECTION=on`: while this relay holds
//! calls its task is protected, so scale-in stops an idle task instead and no call has to move.
//!
//! The ECS agent's endpoint (`$ECS_AGENT_URI/task-protection/v1/state`, which ECS sets in the
//! container) takes `{"ProtectionEnabled": true, "ExpiresInMinutes": N}`; renewing resets the
//! expiry. Protection is renewed every minute while calls are live and expires by itself
//! [`EXPIRES_IN_MINUTES`] after a relay that hangs stops renewing; it is released when the last
//! call ends and at the drain, so a SIGTERM (a deploy, a Fargate retirement) is never held up.
//!
//! The price, and why it is off by default: ECS's deployments wait for protected tasks too, so a
//! deploy waits until each old task's calls have ended. With it off, scale-in and deploys move
//! calls to another relay at a quiet moment instead (`DRAIN_MOVE_SECS`).

use crate::drain::Drain;
use std::time::Duration;

/// How long protection outlives the last renewal: a relay that hangs keeps it no longer.
pub const EXPIRES_IN_MINUTES: u32 = 10;
/// Renewal while calls are live; far inside the expiry, so one failed request costs nothing.
const RENEW_EVERY: Duration = Duration::from_secs(60);
/// How often the relay looks whether it holds calls.
pub const LOOK_EVERY: Duration = Duration::from_secs(5);

/// What the agent was last told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Told {
    Nothing,
    Protected(tokio::time::Instant),
    Unprotected,
}

/// Keeps the task's protection in step with its live calls until the process ends, looking every
/// `look_every` ([`LOOK_EVERY`]); `agent_uri` is `$ECS_AGENT_URI`.
pub async fn keep(agent_uri: String, drain: Drain, look_every: Duration) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a plain HTTP client builds");
    let url = format!("{}/task-protection/v1/state", agent_uri.trim_end_matches('/'));
    let mut told = Told::Nothing;
    let mut draining = drain.draining_signal();
    loop {
        let want = drain.live() > 0 && !drain.is_draining();
        let now = tokio::time::Instant::now();
        let due = match (want, told) {
            (true, Told::Protected(at)) => now.duration_since(at) >= RENEW_EVERY,
            (true, _) => true,
            (false, Told::Unprotected) => false,
            // Nothing told yet and nothing held: the task starts unprotected.
            (false, Told::Nothing) => false,
            (false, Told::Protected(_)) => true,
        };
        if due {
            match set(&client, &url, want).await {
                Ok(()) => {
                    tracing::info!(protected = want, live = drain.live(), "task scale-in protection");
                    told = if want { Told::Protected(now) } else { Told::Unprotected };
                }
                // Tried again at the next look; an expiry covers a relay that cannot say.
                Err(e) => tracing::warn!(error = %e, protected = want, "task scale-in protection not set"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(look_every) => {}
            _ = draining.changed() => {}
        }
    }
}

async fn set(client: &reqwest::Client, url: &str, protected: bool) -> anyhow::Result<()> {
    let body = if protected {
        serde_json::json!({ "ProtectionEnabled": true, "ExpiresInMinutes": EXPIRES_IN_MINUTES })
    } else {
        serde_json::json!({ "ProtectionEnabled": false })
    };
    let response = client.put(url).json(&body).send().await?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    // The agent answers 200 with `{"failure": …}` when ECS refused (no permission, a task that
    // is stopping): that is no protection either.
    if !status.is_success() || text.contains("\"failure\"") || text.contains("\"error\"") {
        anyhow::bail!("the ECS agent answered {status}: {}", text.chars().take(300).collect::<String>());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::put;
    use std::sync::{Arc, Mutex};

    /// The ECS agent's endpoint, keeping each body it was sent.
    async fn fake_agent() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = seen.clone();
        let app = axum::Router::new().route(
            "/task-protection/v1/state",
            put(move |axum::Json(body): axum::Json<serde_json::Value>| {
                let kept = kept.clone();
                async move {
                    kept.lock().unwrap().push(body.clone());
                    axum::Json(serde_json::json!({"protection": {"ProtectionEnabled": body["ProtectionEnabled"], "TaskArn": "arn:aws:ecs:eu-west-1:1:task/c/t"}}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (uri, seen)
    }

    async fn wait_for(seen: &Mutex<Vec<serde_json::Value>>, n: usize) -> Vec<serde_json::Value> {
        for _ in 0..200 {
            if seen.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        seen.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn a_relay_is_protected_while_it_holds_calls_and_released_when_the_last_ends_or_it_drains() {
        let (uri, seen) = fake_agent().await;
        let drain = Drain::default();
        let keeper = tokio::spawn(keep(uri, drain.clone(), Duration::from_millis(20)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(seen.lock().unwrap().is_empty(), "an idle relay asks nothing");

        let first = drain.enter();
        let second = drain.enter();
        let told = wait_for(&seen, 1).await;
        assert_eq!(told, vec![serde_json::json!({"ProtectionEnabled": true, "ExpiresInMinutes": EXPIRES_IN_MINUTES})]);
        drop(first);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(seen.lock().unwrap().len(), 1, "still holding a call: nothing new until the renewal");
        drop(second);
        let told = wait_for(&seen, 2).await;
        assert_eq!(told[1], serde_json::json!({"ProtectionEnabled": false}));

        // A call again, then the drain: released at once, though the call is still live.
        let _call = drain.enter();
        wait_for(&seen, 3).await;
        let drained = drain.clone();
        tokio::spawn(async move { drained.run(Duration::from_secs(5)).await });
        let told = wait_for(&seen, 4).await;
        assert_eq!(told[2]["ProtectionEnabled"], true);
        assert_eq!(told[3], serde_json::json!({"ProtectionEnabled": false}));
        keeper.abort();
    }

    #[tokio::test]
    async fn a_refusal_from_ecs_is_no_protection_and_is_asked_again() {
        let answers = Arc::new(Mutex::new(0u32));
        let counted = answers.clone();
        let app = axum::Router::new().route(
            "/task-protection/v1/state",
            put(move || {
                let counted = counted.clone();
                async move {
                    *counted.lock().unwrap() += 1;
                    axum::Json(serde_json::json!({"failure": {"Arn": "arn", "Reason": "TASK_NOT_VALID", "Detail": "stopping"}}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let client = reqwest::Client::new();
        let url = format!("{uri}/task-protection/v1/state");
        let err = set(&client, &url, true).await.unwrap_err().to_string();
        assert!(err.contains("TASK_NOT_VALID"), "{err}");

        let drain = Drain::default();
        let _call = drain.enter();
        let keeper = tokio::spawn(keep(uri, drain, Duration::from_millis(20)));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(*answers.lock().unwrap() >= 3, "asked again at each look until ECS agrees");
        keeper.abort();
    }
}
