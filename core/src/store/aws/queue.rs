//! `JobQueue` on SQS: one queue per job kind, each with a redrive policy to its dead-letter
//! queue (`{name}-dlq`, `maxReceiveCount` = `QUEUE_MAX_RECEIVES`). SQS messages cannot carry a
//! worker's error, so `release` keeps it in the table (`JOBERR#{id}`, expiring with the
//! message's retention) where `dlq show` reads it.

use super::items::{from_item, key, to_attrs};
use super::{dead_letter_queue_name, sdk_error, AwsNames, DynamoStore};
use crate::domain::job::{DeadLetter, Delivery, QueueName};
use crate::domain::time::{now_ms, Millis};
use crate::store::{JobQueue, QueueDepth, StoreError, StoreResult};
use async_trait::async_trait;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use aws_sdk_sqs::Client;
use std::collections::HashMap;
use std::time::Duration;

/// How long a worker's error is kept: SQS's longest retention.
const ERROR_TTL_SECS: i64 = 14 * 24 * 3600;
/// Dead letters peeked per round, and rounds without a new one before the list is complete.
const PEEK_BATCH: i32 = 10;
const QUIET_ROUNDS: u32 = 3;

#[derive(Clone)]
struct Urls {
    queue: String,
    dead: String,
}

#[derive(Clone)]
pub struct SqsQueue {
    client: Client,
    urls: HashMap<QueueName, Urls>,
    table: DynamoStore,
    max_receives: u32,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct JobError {
    error: String,
    receive_count: u32,
    at: Millis,
    expires_at: i64,
}

impl SqsQueue {
    pub async fn connect(client: Client, table: DynamoStore, names: &AwsNames, max_receives: u32) -> StoreResult<SqsQueue> {
        // Every cold start waits for these lookups: all at once, one round trip rather than four.
        let lookups = QueueName::ALL.map(|queue| {
            let (client, name) = (&client, names.queue(queue));
            async move {
                let dead = dead_letter_queue_name(name);
                let (queue_url, dead_url) = tokio::try_join!(Self::lookup_url(client, name), Self::lookup_url(client, &dead))?;
                Ok::<_, StoreError>((queue, Urls { queue: queue_url, dead: dead_url }))
            }
        });
        let urls = futures_util::future::try_join_all(lookups).await?.into_iter().collect();
        Ok(SqsQueue { client, urls, table, max_receives })
    }

    async fn lookup_url(client: &Client, name: &str) -> StoreResult<String> {
        let out = client.get_queue_url().queue_name(name).send().await.map_err(sdk_error)?;
        out.queue_url.ok_or_else(|| StoreError::Unavailable(format!("no URL for queue {name}")))
    }

    fn urls(&self, queue: QueueName) -> &Urls {
        &self.urls[&queue]
    }

    /// The item keeping a message's last error.
    fn error_pk(id: &str) -> String {
        format!("JOBERR#{id}")
    }

    async fn job_error(&self, id: &str) -> StoreResult<Option<JobError>> {
        let item = self.table.get(Self::error_pk(id), "JOBERR").await?;
        // TTL deletes late: an expired error is gone.
        let error: Option<JobError> = item.map(|i| from_item(i, "job error")).transpose()?;
        Ok(error.filter(|e| e.expires_at > now_ms() / 1000))
    }

    /// Every message in the dead-letter queue, seen without taking it: received with no
    /// visibility timeout until rounds bring nothing new.
    async fn peek_dead(&self, queue: QueueName, limit: usize) -> StoreResult<Vec<aws_sdk_sqs::types::Message>> {
        let mut seen: Vec<aws_sdk_sqs::types::Message> = Vec::new();
        let mut quiet = 0;
        while quiet < QUIET_ROUNDS && seen.len() < limit {
            let out = self
                .client
                .receive_message()
                .queue_url(&self.urls(queue).dead)
                .max_number_of_messages(PEEK_BATCH)
                .visibility_timeout(0)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .map_err(sdk_error)?;
            let mut fresh = false;
            for message in out.messages.unwrap_or_default() {
                if !seen.iter().any(|m| m.message_id == message.message_id) {
                    seen.push(message);
                    fresh = true;
                }
            }
            quiet = if fresh { 0 } else { quiet + 1 };
        }
        seen.truncate(limit);
        Ok(seen)
    }

    async fn dead_letter_of(&self, queue: QueueName, message: &aws_sdk_sqs::types::Message) -> StoreResult<DeadLetter> {
        let id = message.message_id.clone().unwrap_or_default();
        let attr =
            |name: MessageSystemAttributeName| message.attributes.as_ref().and_then(|a| a.get(&name)).and_then(|v| v.parse::<i64>().ok());
        let error = self.job_error(&id).await?;
        let sent_at = attr(MessageSystemAttributeName::SentTimestamp).unwrap_or(0);
        Ok(DeadLetter {
            id,
            queue,
            body: message.body.clone().unwrap_or_default(),
            receive_count: error.as_ref().map_or(self.max_receives, |e| e.receive_count),
            sent_at,
            dead_at: error.as_ref().map_or(sent_at, |e| e.at),
            last_error: error.map(|e| e.error),
        })
    }
}

#[async_trait]
impl JobQueue for SqsQueue {
    fn max_receives(&self) -> u32 {
        self.max_receives
    }

    async fn send(&self, queue: QueueName, body: &str) -> StoreResult<String> {
        let out = self.client.send_message().queue_url(&self.urls(queue).queue).message_body(body).send().await.map_err(sdk_error)?;
        out.message_id.ok_or_else(|| StoreError::Unavailable("SQS gave no message id".into()))
    }

    async fn receive(&self, queue: QueueName, max: usize, visibility: Duration) -> StoreResult<Vec<Delivery>> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.urls(queue).queue)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .visibility_timeout(visibility.as_secs().max(1) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| Delivery {
                id: m.message_id.clone().unwrap_or_default(),
                receipt: m.receipt_handle.clone().unwrap_or_default(),
                receive_count: m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1),
                body: m.body.unwrap_or_default(),
            })
            .collect())
    }

    async fn ack(&self, queue: QueueName, receipt: &str) -> StoreResult<()> {
        match self.client.delete_message().queue_url(&self.urls(queue).queue).receipt_handle(receipt).send().await {
            Ok(_) => Ok(()),
            // A receipt from an earlier receive: the message is someone else's now.
            Err(e) if e.as_service_error().is_some_and(|s| s.is_receipt_handle_is_invalid()) => Ok(()),
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn release(&self, queue: QueueName, delivery: &Delivery, error: &str, retry_after: Duration) -> StoreResult<()> {
        let at = now_ms();
        let record =
            JobError { error: error.to_string(), receive_count: delivery.receive_count, at, expires_at: at / 1000 + ERROR_TTL_SECS };
        let mut item = to_attrs(&record);
        item.extend(key(Self::error_pk(&delivery.id), "JOBERR"));
        self.table.put(item).await?;
        let visible_in = retry_after.as_secs_f64().ceil() as i32;
        match self
            .client
            .change_message_visibility()
            .queue_url(&self.urls(queue).queue)
            .receipt_handle(&delivery.receipt)
            .visibility_timeout(visible_in)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_receipt_handle_is_invalid() || s.is_message_not_inflight()) => Ok(()),
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn extend(&self, queue: QueueName, receipt: &str, visibility: Duration) -> StoreResult<()> {
        let change = self
            .client
            .change_message_visibility()
            .queue_url(&self.urls(queue).queue)
            .receipt_handle(receipt)
            .visibility_timeout(visibility.as_secs() as i32);
        match change.send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_receipt_handle_is_invalid() || s.is_message_not_inflight()) => Ok(()),
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn depth(&self, queue: QueueName) -> StoreResult<QueueDepth> {
        let counts = |url: String| {
            let client = self.client.clone();
            async move {
                let out = client
                    .get_queue_attributes()
                    .queue_url(url)
                    .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                    .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                    .send()
                    .await
                    .map_err(sdk_error)?;
                let get = |name: QueueAttributeName| {
                    out.attributes.as_ref().and_then(|a| a.get(&name)).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
                };
                Ok::<_, StoreError>((
                    get(QueueAttributeName::ApproximateNumberOfMessages),
                    get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
                ))
            }
        };
        let (visible, in_flight) = counts(self.urls(queue).queue.clone()).await?;
        let (dead, dead_in_flight) = counts(self.urls(queue).dead.clone()).await?;
        Ok(QueueDepth { visible, in_flight, dead: dead + dead_in_flight })
    }

    async fn dead_letters(&self, queue: QueueName, limit: usize) -> StoreResult<Vec<DeadLetter>> {
        let mut letters = Vec::new();
        for message in self.peek_dead(queue, limit).await? {
            letters.push(self.dead_letter_of(queue, &message).await?);
        }
        letters.sort_by_key(|l| (l.dead_at, l.sent_at));
        Ok(letters)
    }

    async fn dead_letter(&self, queue: QueueName, id: &str) -> StoreResult<Option<DeadLetter>> {
        Ok(self.dead_letters(queue, usize::MAX).await?.into_iter().find(|l| l.id == id))
    }

    /// One dead letter: taken from the dead-letter queue, sent again with a fresh count. All:
    /// SQS's own `StartMessageMoveTask`, which moves them in the background.
    async fn redrive(&self, queue: QueueName, id: Option<&str>) -> StoreResult<usize> {
        let urls = self.urls(queue).clone();
        let Some(id) = id else {
            let dead = self.depth(queue).await?.dead as usize;
            let arn = |url: String| {
                let client = self.client.clone();
                async move {
                    let out = client
                        .get_queue_attributes()
                        .queue_url(url)
                        .attribute_names(QueueAttributeName::QueueArn)
                        .send()
                        .await
                        .map_err(sdk_error)?;
                    Ok::<_, StoreError>(out.attributes.and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned()).unwrap_or_default())
                }
            };
            let (source, destination) = (arn(urls.dead.clone()).await?, arn(urls.queue.clone()).await?);
            self.client.start_message_move_task().source_arn(source).destination_arn(destination).send().await.map_err(sdk_error)?;
            return Ok(dead);
        };
        for _ in 0..QUIET_ROUNDS * 10 {
            let out = self
                .client
                .receive_message()
                .queue_url(&urls.dead)
                .max_number_of_messages(PEEK_BATCH)
                .visibility_timeout(30)
                .send()
                .await
                .map_err(sdk_error)?;
            let messages = out.messages.unwrap_or_default();
            if messages.is_empty() {
                return Ok(0);
            }
            let mut moved = 0;
            for message in messages {
                let receipt = message.receipt_handle.clone().unwrap_or_default();
                if message.message_id.as_deref() == Some(id) {
                    self.send(queue, message.body.as_deref().unwrap_or_default()).await?;
                    self.client.delete_message().queue_url(&urls.dead).receipt_handle(receipt).send().await.map_err(sdk_error)?;
                    moved = 1;
                } else {
                    // Not this one: back in the dead-letter queue at once.
                    self.client
                        .change_message_visibility()
                        .queue_url(&urls.dead)
                        .receipt_handle(receipt)
                        .visibility_timeout(0)
                        .send()
                        .await
                        .map_err(sdk_error)?;
                }
            }
            if moved == 1 {
                return Ok(1);
            }
        }
        Ok(0)
    }
}
