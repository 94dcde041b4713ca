//! `JobQueue` on SQLite, with SQS's semantics: a received message is hidden for its visibility
//! timeout; a message received `max_receives` times and still not acknowledged moves to the
//! dead-letter queue on its next receive; dead letters can be listed, shown and redriven.

use super::EmbeddedStore;
use crate::domain::ids::random_sid;
use crate::domain::job::{DeadLetter, Delivery, QueueName};
use crate::domain::time::now_ms;
use crate::store::{JobQueue, QueueDepth, StoreResult};
use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, Row};
use std::time::Duration;

fn dead_letter_row(r: &Row<'_>) -> rusqlite::Result<(String, String, u32, i64, i64, Option<String>)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

fn to_dead_letter(
    queue: QueueName,
    (id, body, receive_count, sent_at, dead_at, last_error): (String, String, u32, i64, i64, Option<String>),
) -> DeadLetter {
    DeadLetter { id, queue, body, receive_count, sent_at, dead_at, last_error }
}

const DEAD_LETTER_COLUMNS: &str = "id, body, receive_count, sent_at, dead_at, last_error";

#[async_trait]
impl JobQueue for EmbeddedStore {
    fn max_receives(&self) -> u32 {
        self.max_receives
    }

    async fn send(&self, queue: QueueName, body: &str) -> StoreResult<String> {
        let body = body.to_string();
        self.with_conn(move |conn| {
            let id = random_sid("");
            let now = now_ms();
            conn.execute(
                "INSERT INTO jobs (id, queue, body, sent_at, visible_at) VALUES (?1, ?2, ?3, ?4, ?4)",
                params![id, queue.as_str(), body, now],
            )?;
            Ok(id)
        })
        .await
    }

    async fn receive(&self, queue: QueueName, max: usize, visibility: Duration) -> StoreResult<Vec<Delivery>> {
        let max_receives = self.max_receives;
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let now = now_ms();
            let mut delivered = Vec::new();
            // Dead-lettering a message frees its slot, so look again until full or empty.
            while delivered.len() < max {
                let next = tx
                    .query_row(
                        "SELECT id, body, receive_count FROM jobs
                         WHERE queue = ?1 AND dead_at IS NULL AND visible_at <= ?2
                         ORDER BY visible_at, sent_at LIMIT 1",
                        params![queue.as_str(), now],
                        |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, u32>(2)?)),
                    )
                    .optional()?;
                let Some((id, body, count)) = next else { break };
                if count >= max_receives {
                    tx.execute("UPDATE jobs SET dead_at = ?1, receipt = NULL WHERE id = ?2", params![now, id])?;
                    tracing::warn!(queue = queue.as_str(), job_id = %id, receives = count, "job moved to the dead-letter queue");
                    continue;
                }
                let receipt = format!("{id}.{}", random_sid(""));
                tx.execute(
                    "UPDATE jobs SET receive_count = receive_count + 1, receipt = ?1, visible_at = ?2 WHERE id = ?3",
                    params![receipt, now + visibility.as_millis() as i64, id],
                )?;
                delivered.push(Delivery { id, receipt, receive_count: count + 1, body });
            }
            tx.commit()?;
            Ok(delivered)
        })
        .await
    }

    async fn ack(&self, queue: QueueName, receipt: &str) -> StoreResult<()> {
        let receipt = receipt.to_string();
        self.with_conn(move |conn| {
            conn.execute("DELETE FROM jobs WHERE queue = ?1 AND receipt = ?2 AND dead_at IS NULL", params![queue.as_str(), receipt])?;
            Ok(())
        })
        .await
    }

    async fn release(&self, queue: QueueName, delivery: &Delivery, error: &str, retry_after: Duration) -> StoreResult<()> {
        let (receipt, error) = (delivery.receipt.clone(), error.to_string());
        self.with_conn(move |conn| {
            conn.execute(
                "UPDATE jobs SET visible_at = ?1, last_error = ?2 WHERE queue = ?3 AND receipt = ?4 AND dead_at IS NULL",
                params![now_ms() + retry_after.as_millis() as i64, error, queue.as_str(), receipt],
            )?;
            Ok(())
        })
        .await
    }

    async fn extend(&self, queue: QueueName, receipt: &str, visibility: Duration) -> StoreResult<()> {
        let receipt = receipt.to_string();
        self.with_conn(move |conn| {
            conn.execute(
                "UPDATE jobs SET visible_at = ?1 WHERE queue = ?2 AND receipt = ?3 AND dead_at IS NULL",
                params![now_ms() + visibility.as_millis() as i64, queue.as_str(), receipt],
            )?;
            Ok(())
        })
        .await
    }

    async fn depth(&self, queue: QueueName) -> StoreResult<QueueDepth> {
        self.with_conn(move |conn| {
            Ok(conn.query_row(
                "SELECT coalesce(sum(dead_at IS NULL AND visible_at <= ?2), 0),
                        coalesce(sum(dead_at IS NULL AND visible_at > ?2), 0),
                        coalesce(sum(dead_at IS NOT NULL), 0)
                 FROM jobs WHERE queue = ?1",
                params![queue.as_str(), now_ms()],
                |r| {
                    Ok(QueueDepth {
                        visible: r.get::<_, i64>(0)? as u64,
                        in_flight: r.get::<_, i64>(1)? as u64,
                        dead: r.get::<_, i64>(2)? as u64,
                    })
                },
            )?)
        })
        .await
    }

    async fn dead_letters(&self, queue: QueueName, limit: usize) -> StoreResult<Vec<DeadLetter>> {
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {DEAD_LETTER_COLUMNS} FROM jobs WHERE queue = ?1 AND dead_at IS NOT NULL ORDER BY dead_at, id LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![queue.as_str(), limit as i64], dead_letter_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows.into_iter().map(|r| to_dead_letter(queue, r)).collect())
        })
        .await
    }

    async fn dead_letter(&self, queue: QueueName, id: &str) -> StoreResult<Option<DeadLetter>> {
        let id = id.to_string();
        self.with_conn(move |conn| {
            Ok(conn
                .query_row(
                    &format!("SELECT {DEAD_LETTER_COLUMNS} FROM jobs WHERE queue = ?1 AND id = ?2 AND dead_at IS NOT NULL"),
                    params![queue.as_str(), id],
                    dead_letter_row,
                )
                .optional()?
                .map(|r| to_dead_letter(queue, r)))
        })
        .await
    }

    async fn redrive(&self, queue: QueueName, id: Option<&str>) -> StoreResult<usize> {
        let id = id.map(str::to_string);
        self.with_conn(move |conn| {
            let moved = conn.execute(
                "UPDATE jobs SET dead_at = NULL, receive_count = 0, receipt = NULL, visible_at = ?1
                 WHERE queue = ?2 AND dead_at IS NOT NULL AND (?3 IS NULL OR id = ?3)",
                params![now_ms(), queue.as_str(), id],
            )?;
            Ok(moved)
        })
        .await
    }
}
