//! Redriving a whole dead-letter queue on SQS uses `StartMessageMoveTask`, which moto does not
//! implement: this checks that call against a fake SQS (wiremock speaking SQS's JSON protocol).

use callkeeper_core::job::QueueName;
use callkeeper_core::store::aws::{AwsNames, DynamoStore, SqsQueue};
use callkeeper_core::store::JobQueue;
use wiremock::matchers::{body_string_contains, header, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn target(operation: &str) -> wiremock::matchers::HeaderExactMatcher {
    header("x-amz-target", format!("AmazonSQS.{operation}").as_str())
}

#[tokio::test]
async fn redrive_all_starts_a_message_move_task_from_the_dead_letter_queue() {
    let sqs = MockServer::start().await;
    let names = AwsNames::with_suffix("t1");
    let url = |name: &str| format!("{}/123456789012/{name}", sqs.uri());
    for queue in [&names.transcription_queue, &names.replies_queue, &names.events_queue] {
        for name in [queue.clone(), format!("{queue}-dlq")] {
            Mock::given(method("POST"))
                .and(target("GetQueueUrl"))
                .and(body_string_contains(format!("\"QueueName\":\"{name}\"")))
                .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({ "QueueUrl": url(&name) })))
                .mount(&sqs)
                .await;
        }
    }
    let dlq = format!("{}-dlq", names.transcription_queue);
    let arn = |name: &str| format!("arn:aws:sqs:eu-west-1:123456789012:{name}");
    for name in [names.transcription_queue.clone(), dlq.clone()] {
        let attributes = serde_json::json!({ "Attributes": {
            "QueueArn": arn(&name),
            "ApproximateNumberOfMessages": if name == dlq { "7" } else { "0" },
            "ApproximateNumberOfMessagesNotVisible": "0"
        } });
        Mock::given(method("POST"))
            .and(target("GetQueueAttributes"))
            .and(body_string_contains(format!("\"QueueUrl\":\"{}\"", url(&name))))
            .respond_with(ResponseTemplate::new(200).set_body_json(attributes))
            .mount(&sqs)
            .await;
    }
    Mock::given(method("POST"))
        .and(target("StartMessageMoveTask"))
        .and(body_string_contains(format!("\"SourceArn\":\"{}\"", arn(&dlq))))
        .and(body_string_contains(format!("\"DestinationArn\":\"{}\"", arn(&names.transcription_queue))))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({ "TaskHandle": "handle-1" })))
        .expect(1)
        .mount(&sqs)
        .await;

    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(sqs.uri())
        .region(aws_config::Region::new("eu-west-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("testing", "testing", None, None, "fake"))
        .load()
        .await;
    let table = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), &names.table);
    let queue = SqsQueue::connect(aws_sdk_sqs::Client::new(&sdk), table, &names, 5).await.unwrap();
    assert_eq!(queue.redrive(QueueName::Transcription, None).await.unwrap(), 7, "the dead letters it moves");
}
