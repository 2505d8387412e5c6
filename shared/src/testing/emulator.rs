//! The AWS emulators in tests (feature `testing-aws`): moto server for S3,
//! SQS, SNS, Secrets Manager and SES, and AWS's DynamoDB Local for
//! DynamoDB (and its streams), which isolates concurrent transactions as
//! DynamoDB does (moto does not).
//!
//! These helpers live here, in `printworks::testing`, because two test
//! suites need them: the cross-crate tests (`printworks-tests`, which
//! depends on `edge-agent`) and `edge-agent/tests`. A dev-dependency of
//! `edge-agent` on `printworks-tests` would close a cycle and build a second
//! `edge-agent` whose types do not match the first; both suites already
//! depend on `printworks`, so the helpers cost them nothing new.
//!
//! `scripts/test` starts both, sets `AWS_ENDPOINT_URL` (moto) and
//! `AWS_ENDPOINT_URL_DYNAMODB` (DynamoDB Local); without the first an
//! emulator test calls [`endpoint`], is told `None` and returns, unless
//! `PRINTWORKS_REQUIRE_EMULATOR=1` makes it fail (as it does when the
//! second is missing). The SDK configuration of the adapters
//! ([`crate::adapters::aws::load_sdk_config`]) picks both variables up from
//! the environment: a DynamoDB client built from it talks to
//! `AWS_ENDPOINT_URL_DYNAMODB`, every other client to `AWS_ENDPOINT_URL`.
//! (An endpoint set in code on the shared configuration, as
//! `sdk_config_for` does, would win over the service's variable; the
//! emulator tests load theirs from the environment.)

use crate::adapters::aws::s3::S3Blobs;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
};

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn required() -> bool {
    std::env::var("PRINTWORKS_REQUIRE_EMULATOR").as_deref() == Ok("1")
}

/// The emulator endpoint (`AWS_ENDPOINT_URL`, moto). When
/// `PRINTWORKS_REQUIRE_EMULATOR=1` and it or DynamoDB Local's
/// (`AWS_ENDPOINT_URL_DYNAMODB`) is missing, this panics rather than
/// skipping, so the script can insist that these tests really ran, with
/// DynamoDB on DynamoDB Local.
pub fn endpoint() -> Option<String> {
    if required() && var("AWS_ENDPOINT_URL_DYNAMODB").is_none() {
        panic!("PRINTWORKS_REQUIRE_EMULATOR=1 but AWS_ENDPOINT_URL_DYNAMODB is not set");
    }
    match var("AWS_ENDPOINT_URL") {
        Some(endpoint) => Some(endpoint),
        None if required() => {
            panic!("PRINTWORKS_REQUIRE_EMULATOR=1 but AWS_ENDPOINT_URL is not set")
        }
        None => {
            eprintln!("AWS_ENDPOINT_URL not set: emulator test skipped (scripts/test runs it)");
            None
        }
    }
}

/// Where DynamoDB calls go: `AWS_ENDPOINT_URL_DYNAMODB` (DynamoDB Local),
/// else `AWS_ENDPOINT_URL`, as the SDK decides. For the calls a test makes
/// without the SDK (the DynamoDB Streams API).
pub fn dynamodb_endpoint() -> Option<String> {
    var("AWS_ENDPOINT_URL_DYNAMODB").or_else(|| var("AWS_ENDPOINT_URL"))
}

/// A fresh suffix for one test's resource names (ten hex digits), so tests
/// sharing one emulator never see each other's tables, buckets or queues.
pub fn run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_string()
}

/// Creates the orders table as the stack defines it: `pk`/`sk` strings,
/// on demand, with a stream of new images, the reconciler's `idle` index
/// and the operators' search indexes.
pub async fn create_orders_table(sdk: &aws_config::SdkConfig, table: &str) {
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("attribute definition")
    };
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .expect("key schema element")
    };
    use crate::adapters::aws::dynamodb::search;
    let mut create = aws_sdk_dynamodb::Client::new(sdk)
        .create_table()
        .attribute_definitions(attr(search::SORT_ATTRIBUTE));
    // The operators' search indexes, as `search::INDEXES` declares them
    // (and the template, which a test holds to the same list).
    for index in search::INDEXES {
        let projection = if index.include.is_empty() {
            Projection::builder().projection_type(ProjectionType::KeysOnly)
        } else {
            Projection::builder()
                .projection_type(ProjectionType::Include)
                .set_non_key_attributes(Some(index.include.iter().map(|a| a.to_string()).collect()))
        };
        create = create
            .attribute_definitions(attr(index.partition))
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(index.name)
                    .key_schema(key(index.partition, KeyType::Hash))
                    .key_schema(key(search::SORT_ATTRIBUTE, KeyType::Range))
                    .projection(projection.build())
                    .build()
                    .expect("global secondary index"),
            );
    }
    create
        .table_name(table)
        .attribute_definitions(attr("pk"))
        .attribute_definitions(attr("sk"))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .attribute_definitions(attr("idle_pk"))
        .attribute_definitions(attr("idle_sk"))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(crate::adapters::aws::dynamodb::IDLE_INDEX)
                .key_schema(key("idle_pk", KeyType::Hash))
                .key_schema(key("idle_sk", KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::KeysOnly)
                        .build(),
                )
                .build()
                .expect("global secondary index"),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewImage)
                .build()
                .expect("stream specification"),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("creating table {table}: {e:?}"));
    // The SDK chose the endpoint from the environment; a client pinned to
    // DynamoDB Local's endpoint finds the table there, or the test stops.
    if let Some(local) = var("AWS_ENDPOINT_URL_DYNAMODB") {
        let pinned = aws_sdk_dynamodb::config::Builder::from(sdk)
            .endpoint_url(&local)
            .build();
        aws_sdk_dynamodb::Client::from_conf(pinned)
            .describe_table()
            .table_name(table)
            .send()
            .await
            .unwrap_or_else(|e| panic!("table {table} is not in DynamoDB Local at {local}: {e:?}"));
    }
}

/// Creates `bucket` in the configuration's region (path-style client, as
/// the adapters use against an endpoint override).
pub async fn create_bucket(sdk: &aws_config::SdkConfig, bucket: &str) {
    S3Blobs::client(sdk, true)
        .create_bucket()
        .bucket(bucket)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                    sdk.region().expect("a region").as_ref(),
                ))
                .build(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("creating bucket {bucket}: {e:?}"));
}

/// Creates the SQS queue `name`; returns its URL.
pub async fn create_queue(sdk: &aws_config::SdkConfig, name: &str) -> String {
    aws_sdk_sqs::Client::new(sdk)
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("creating queue {name}: {e:?}"))
        .queue_url
        .expect("a queue URL")
}

/// The ARN of the queue at `url` (what an SNS subscription names).
pub async fn queue_arn(sdk: &aws_config::SdkConfig, url: &str) -> String {
    use aws_sdk_sqs::types::QueueAttributeName;
    let attrs = aws_sdk_sqs::Client::new(sdk)
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap_or_else(|e| panic!("the attributes of {url}: {e:?}"))
        .attributes
        .expect("queue attributes");
    attrs[&QueueAttributeName::QueueArn].clone()
}
