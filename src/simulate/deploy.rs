//! The `deploy` scenario: a rolling deploy of the local stack's relays while calls talk. Each
//! relay in turn is stopped as ECS stops a task (SIGTERM: it stops being ready, moves each call
//! to a new stream at a quiet moment, and exits) and replaced by a fresh one, a few seconds
//! apart, again and again until the calls are over, so every call long enough is moved.

use super::call::Ctx;
use super::scenarios::Scenario;
use super::stack::LocalStack;
use super::CallReport;
use callkeeper_core::store::Stores;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Mutex};

/// The deploy begins once the first calls are past their greeting.
const FIRST_AFTER: Duration = Duration::from_secs(4);
/// Between replacing one relay and the next: ECS stops old tasks in batches, and a call moved
/// off the first relay talks on the second for a while before that one goes too.
const BETWEEN_RELAYS: Duration = Duration::from_secs(3);
/// Between one deploy (both relays replaced) and the next.
const BETWEEN: Duration = Duration::from_secs(6);

/// Plays `count` calls, `concurrency` at a time, while the relays are replaced under them.
pub async fn play(
    ctx: &Arc<Ctx>,
    stack: Arc<Mutex<LocalStack>>,
    stores: Option<Stores>,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<anyhow::Result<CallReport>>> {
    let (done, mut over) = watch::channel(false);
    let deployer = tokio::spawn(async move {
        let mut rounds = 0u32;
        tokio::select! {
            _ = over.wait_for(|over| *over) => return Ok(rounds),
            () = tokio::time::sleep(FIRST_AFTER) => {}
        }
        loop {
            for i in 0..super::stack::RELAYS {
                {
                    let mut stack = stack.lock().await;
                    stack.stop_relay(i).await?;
                    stack.start_relay(i).await?;
                }
                tokio::select! {
                    _ = over.wait_for(|over| *over) => return Ok(rounds),
                    () = tokio::time::sleep(BETWEEN_RELAYS) => {}
                }
            }
            rounds += 1;
            tokio::select! {
                _ = over.wait_for(|over| *over) => return Ok::<u32, anyhow::Error>(rounds),
                () = tokio::time::sleep(BETWEEN) => {}
            }
        }
    });
    let queue = Arc::new(std::sync::Mutex::new(0..count));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (ctx, queue, stores) = (ctx.clone(), queue.clone(), stores.clone());
        workers.push(tokio::spawn(async move {
            let mut played = Vec::new();
            while queue.lock().expect("not poisoned").next().is_some() {
                played.push(super::play_one(&ctx, Scenario::Deploy, stores.as_ref()).await);
            }
            played
        }));
    }
    let mut reports = Vec::new();
    for worker in workers {
        reports.extend(worker.await?);
    }
    let _ = done.send(true);
    let rounds = deployer.await??;
    tracing::info!(rounds, "deploy: both relays replaced this many times while the calls talked");
    Ok(reports)
}
