//! Creating the table, queues and bucket on an empty endpoint: `callkeeper dev-resources`, and
//! every AWS test's fresh set. The deployed stack declares the same in `infra/template.yaml`.

use super::{dead_letter_queue_name, sdk_error, AwsNames};
use crate::domain::job::QueueName;
use crate::store::StoreResult;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType, ScalarAttributeType,
    TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;

/// Seconds a received job stays hidden: at least 6× the worker's timeout, as AWS advises.
pub const VISIBILITY_TIMEOUT_SECS: u32 = 360;

fn key(name: &str, kind: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder().attribute_name(name).key_type(kind).build().expect("name and type are set")
}

fn attr(name: &str, kind: ScalarAttributeType) -> AttributeDefinition {
    AttributeDefinition::builder().attribute_name(name).attribute_type(kind).build().expect("name and type are set")
}

fn index(name: &str, hash: &str, range: &str, projection: Projection) -> GlobalSecondaryIndex {
    GlobalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(key(hash, KeyType::Hash))
        .key_schema(key(range, KeyType::Range))
        .projection(projection)
        .build()
        .expect("name, keys and projection are set")
}

/// Creates what `names` name. Fails if any exists.
pub async fn create_resources(sdk: &aws_config::SdkConfig, names: &AwsNames, max_receives: u32) -> StoreResult<()> {
    use super::items::{ACTIVE_INDEX, RECENT_INDEX, TIMELINE_INDEX};
    let dynamo = aws_sdk_dynamodb::Client::new(sdk);
    let active_projection = Projection::builder()
        .projection_type(ProjectionType::Include)
        .set_non_key_attributes(Some(["call_sid", "status", "status_at", "heartbeat_at", "redirect_pending"].map(String::from).to_vec()))
        .build();
    let keys_only = || Projection::builder().projection_type(ProjectionType::KeysOnly).build();
    dynamo
        .create_table()
        .table_name(&names.table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .attribute_definitions(attr("pk", ScalarAttributeType::S))
        .attribute_definitions(attr("sk", ScalarAttributeType::S))
        .attribute_definitions(attr("active_pk", ScalarAttributeType::S))
        .attribute_definitions(attr("active_sk", ScalarAttributeType::N))
        .attribute_definitions(attr("recent_pk", ScalarAttributeType::S))
        .attribute_definitions(attr("recent_sk", ScalarAttributeType::S))
        .attribute_definitions(attr("contact_pk", ScalarAttributeType::S))
        .attribute_definitions(attr("contact_sk", ScalarAttributeType::S))
        .global_secondary_indexes(index(ACTIVE_INDEX, "active_pk", "active_sk", active_projection))
        .global_secondary_indexes(index(RECENT_INDEX, "recent_pk", "recent_sk", keys_only()))
        .global_secondary_indexes(index(TIMELINE_INDEX, "contact_pk", "contact_sk", keys_only()))
        .send()
        .await
        .map_err(sdk_error)?;
    dynamo
        .update_time_to_live()
        .table_name(&names.table)
        .time_to_live_specification(TimeToLiveSpecification::builder().enabled(true).attribute_name("expires_at").build().expect("set"))
        .send()
        .await
        .map_err(sdk_error)?;

    let sqs = aws_sdk_sqs::Client::new(sdk);
    for queue in QueueName::ALL.map(|q| names.queue(q)) {
        let dlq = sqs.create_queue().queue_name(dead_letter_queue_name(queue)).send().await.map_err(sdk_error)?;
        let dlq_url = dlq.queue_url().unwrap_or_default();
        let arn = sqs
            .get_queue_attributes()
            .queue_url(dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(sdk_error)?
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .unwrap_or_default();
        let redrive = serde_json::json!({ "deadLetterTargetArn": arn, "maxReceiveCount": max_receives.to_string() }).to_string();
        sqs.create_queue()
            .queue_name(queue)
            .attributes(QueueAttributeName::RedrivePolicy, redrive)
            .attributes(QueueAttributeName::VisibilityTimeout, VISIBILITY_TIMEOUT_SECS.to_string())
            .attributes(QueueAttributeName::MessageRetentionPeriod, (14 * 24 * 3600).to_string())
            .send()
            .await
            .map_err(sdk_error)?;
    }

    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(sdk).force_path_style(true).build());
    let mut bucket = s3.create_bucket().bucket(&names.bucket);
    if let Some(region) = sdk.region().map(|r| r.as_ref().to_string()).filter(|r| r != "us-east-1") {
        bucket = bucket.create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder().location_constraint(region.as_str().into()).build(),
        );
    }
    bucket.send().await.map_err(sdk_error)?;
    Ok(())
}
