//! The local SQS endpoint with the real `aws-sdk-sqs` client, through
//! `SqsQueue` (what an edge agent uses), over HTTP on 127.0.0.1.

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use printworks::adapters::aws::sqs::SqsQueue;
use printworks::adapters::local::bus::{LocalBus, QueueConfig};
use printworks::adapters::local::db::{Db, Durability};
use printworks::adapters::local::sqs_api;
use printworks::clock::SystemClock;
use printworks::ports::{MessageQueue, QueueError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

struct Fixture {
    _dir: tempfile::TempDir,
    bus: LocalBus,
    base: String,
    sdk: aws_config::SdkConfig,
    stop: watch::Sender<bool>,
}

impl Fixture {
    fn queue(&self, name: &str) -> SqsQueue {
        SqsQueue::from_sdk(&self.sdk, format!("{}/queues/{name}", self.base))
    }

    fn client(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk)
    }
}

async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("eu-central-1"))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .load()
        .await
}

async fn start() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(dir.path().join("pw.sqlite"), Durability::Normal).unwrap());
    let bus = LocalBus::new(db, Arc::new(SystemClock));
    for (name, visibility) in [("jobs", 30), ("short", 1)] {
        bus.declare_queue(
            name,
            QueueConfig {
                visibility_timeout: Duration::from_secs(visibility),
                max_receive_count: 10,
                dead_letter: None,
            },
        )
        .await
        .unwrap();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = watch::channel(false);
    let app = sqs_api::router_with_shutdown(bus.clone(), base.clone(), stopped);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let sdk = sdk_config(&base).await;
    Fixture {
        _dir: dir,
        bus,
        base,
        sdk,
        stop,
    }
}

fn bodies(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{{\"job\":{i},\"note\":\"größe ✓\"}}"))
        .collect()
}

#[tokio::test]
async fn a_batch_of_25_is_sent_received_once_each_and_deleted() {
    let f = start().await;
    let url = f
        .client()
        .get_queue_url()
        .queue_name("jobs")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    assert_eq!(url, format!("{}/queues/jobs", f.base));
    let sqs = SqsQueue::from_sdk(&f.sdk, url);
    let q: &dyn MessageQueue = &sqs;

    q.send_batch(&bodies(25)).await.unwrap();
    assert_eq!(sqs.depth().await.unwrap(), 25);
    let mut got = Vec::new();
    for _ in 0..10 {
        let batch = q.receive(10, Duration::ZERO).await.unwrap();
        assert!(batch.len() <= 10);
        if batch.is_empty() {
            break;
        }
        got.extend(batch);
    }
    assert_eq!(got.len(), 25);
    assert!(got.iter().all(|m| m.receive_count == 1));
    let mut received: Vec<_> = got.iter().map(|m| m.body.clone()).collect();
    received.sort();
    let mut sent = bodies(25);
    sent.sort();
    assert_eq!(received, sent, "bodies arrive intact (UTF-8 included)");

    for m in &got {
        q.delete(&m.receipt).await.unwrap();
    }
    assert_eq!(sqs.depth().await.unwrap(), 0);
    assert_eq!(f.bus.depth("jobs").await.unwrap(), 0);
    // The old inherent API still works on the same queue.
    sqs.receive(10, 0).await.unwrap();
}

#[tokio::test]
async fn an_undeleted_message_comes_back_after_its_visibility_timeout() {
    let f = start().await;
    let sqs = f.queue("short");
    let q: &dyn MessageQueue = &sqs;
    q.send_batch(&bodies(1)).await.unwrap();
    let first = q.receive(10, Duration::ZERO).await.unwrap().remove(0);
    assert_eq!(first.receive_count, 1);
    assert!(q.receive(10, Duration::ZERO).await.unwrap().is_empty());

    // A long poll picks it up as soon as its 1 s visibility timeout ends.
    let start = Instant::now();
    let again = q
        .receive(10, Duration::from_secs(5))
        .await
        .unwrap()
        .remove(0);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(again.message_id, first.message_id);
    assert_eq!(again.receive_count, 2);

    // The first delivery's receipt is stale now.
    assert!(matches!(
        q.delete(&first.receipt).await,
        Err(QueueError::StaleReceipt)
    ));
    assert!(matches!(
        q.change_visibility(&first.receipt, Duration::ZERO).await,
        Err(QueueError::StaleReceipt)
    ));
    assert!(matches!(
        q.delete("not-a-receipt").await,
        Err(QueueError::StaleReceipt)
    ));
    q.delete(&again.receipt).await.unwrap();
}

#[tokio::test]
async fn changing_the_visibility_to_zero_makes_a_message_visible_at_once() {
    let f = start().await;
    let sqs = f.queue("jobs");
    let q: &dyn MessageQueue = &sqs;
    q.send_batch(&bodies(1)).await.unwrap();
    let m = q.receive(1, Duration::ZERO).await.unwrap().remove(0);
    assert!(q.receive(1, Duration::ZERO).await.unwrap().is_empty());
    q.change_visibility(&m.receipt, Duration::ZERO)
        .await
        .unwrap();
    let again = q.receive(1, Duration::ZERO).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].receive_count, 2);
    // And hides it again for as long as asked.
    q.change_visibility(&again[0].receipt, Duration::from_secs(600))
        .await
        .unwrap();
    assert!(q.receive(1, Duration::ZERO).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_long_poll_waits_and_returns_early_when_a_message_is_sent() {
    let f = start().await;
    let sqs = f.queue("jobs");
    let q: &dyn MessageQueue = &sqs;

    let start = Instant::now();
    assert!(
        q.receive(10, Duration::from_secs(2))
            .await
            .unwrap()
            .is_empty()
    );
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(1900), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    let sender = f.queue("jobs");
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        MessageQueue::send_batch(&sender, &["late".to_string()])
            .await
            .unwrap();
    });
    let start = Instant::now();
    let got = q.receive(10, Duration::from_secs(20)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "late");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_long_poll_ends_when_the_server_stops() {
    let f = start().await;
    let sqs = f.queue("jobs");
    let start = Instant::now();
    let (got, ()) = tokio::join!(
        MessageQueue::receive(&sqs, 10, Duration::from_secs(20)),
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            f.stop.send(true).unwrap();
        }
    );
    assert!(got.unwrap().is_empty());
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn queue_attributes_count_visible_and_in_flight_messages() {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let f = start().await;
    let sqs = f.queue("jobs");
    MessageQueue::send_batch(&sqs, &bodies(3)).await.unwrap();
    MessageQueue::receive(&sqs, 1, Duration::ZERO)
        .await
        .unwrap();
    let out = f
        .client()
        .get_queue_attributes()
        .queue_url(sqs.url())
        .attribute_names(A::All)
        .send()
        .await
        .unwrap();
    let attributes = out.attributes().unwrap();
    assert_eq!(attributes[&A::ApproximateNumberOfMessages], "2");
    assert_eq!(attributes[&A::ApproximateNumberOfMessagesNotVisible], "1");
    assert_eq!(sqs.depth().await.unwrap(), 3);
}

#[tokio::test]
async fn bodies_carry_their_md5_and_batches_report_entries_one_by_one() {
    let f = start().await;
    let client = f.client();
    let url = format!("{}/queues/jobs", f.base);
    let sent = client
        .send_message()
        .queue_url(&url)
        .message_body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(
        sent.md5_of_message_body(),
        Some("5d41402abc4b2a76b9719d911017c592")
    );
    let got = client
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    let m = &got.messages()[0];
    assert_eq!(m.md5_of_body(), Some("5d41402abc4b2a76b9719d911017c592"));
    assert!(m.attributes().is_none(), "attributes only when asked");

    // One stale receipt in a batch fails that entry only.
    let entry = |id: &str, receipt: &str| {
        aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
            .id(id)
            .receipt_handle(receipt)
            .build()
            .unwrap()
    };
    let out = client
        .delete_message_batch()
        .queue_url(&url)
        .entries(entry("good", m.receipt_handle().unwrap()))
        .entries(entry("stale", "0123"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.successful().len(), 1);
    assert_eq!(out.failed()[0].id(), "stale");
    assert_eq!(out.failed()[0].code(), "ReceiptHandleIsInvalid");

    // So does a body SQS would refuse, in SqsQueue::send_batch.
    let sqs = f.queue("jobs");
    let batch = vec![
        "ok".to_string(),
        "bad \u{1} byte".to_string(),
        "ok too".to_string(),
    ];
    match MessageQueue::send_batch(&sqs, &batch).await {
        Err(QueueError::NotSent { failed, cause }) => {
            assert_eq!(failed, vec![1]);
            assert!(
                format!("{cause:#}").contains("InvalidMessageContents"),
                "{cause:#}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(f.bus.depth("jobs").await.unwrap(), 2);

    // ChangeMessageVisibilityBatch, the same way.
    let received = MessageQueue::receive(&sqs, 10, Duration::ZERO)
        .await
        .unwrap();
    let vis = |id: &str, receipt: &str| {
        aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry::builder()
            .id(id)
            .receipt_handle(receipt)
            .visibility_timeout(0)
            .build()
            .unwrap()
    };
    let out = client
        .change_message_visibility_batch()
        .queue_url(&url)
        .entries(vis("a", &received[0].receipt))
        .entries(vis("b", "stale"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.successful()[0].id(), "a");
    assert_eq!(out.failed()[0].id(), "b");
    assert_eq!(
        MessageQueue::receive(&sqs, 10, Duration::ZERO)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn an_unknown_queue_is_an_error() {
    let f = start().await;
    let err = f
        .client()
        .get_queue_url()
        .queue_name("nope")
        .send()
        .await
        .unwrap_err();
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_queue_does_not_exist()),
        "{err:?}"
    );

    let sqs = f.queue("nope");
    match MessageQueue::receive(&sqs, 1, Duration::ZERO).await {
        Err(QueueError::Unavailable(e)) => {
            let text = format!("{e:#}");
            assert!(text.contains("QueueDoesNotExist"), "{text}");
            assert!(text.contains("nope does not exist"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    match MessageQueue::send_batch(&sqs, &bodies(12)).await {
        Err(QueueError::NotSent { failed, .. }) => assert_eq!(failed, (0..12).collect::<Vec<_>>()),
        other => panic!("{other:?}"),
    }
    assert!(sqs.depth().await.is_err());
}

#[tokio::test]
async fn bad_requests_get_a_400_with_a_json_error() {
    let f = start().await;
    let http = reqwest::Client::new();
    let url = format!("{}/queues/jobs", f.base);
    let cases: Vec<(Option<&str>, String, &str, &str)> = vec![
        (
            Some("AmazonSQS.ReceiveMessage"),
            "{not json".into(),
            "InvalidParameterValue",
            "InvalidParameterValue;Sender",
        ),
        (
            Some("AmazonSQS.ReceiveMessage"),
            "[1, 2]".into(),
            "InvalidParameterValue",
            "InvalidParameterValue;Sender",
        ),
        (
            Some("AmazonSQS.ReceiveMessage"),
            format!(r#"{{"QueueUrl": "{url}", "MaxNumberOfMessages": "ten"}}"#),
            "InvalidParameterValue",
            "InvalidParameterValue;Sender",
        ),
        (
            Some("AmazonSQS.ReceiveMessage"),
            format!(r#"{{"QueueUrl": "{url}", "MaxNumberOfMessages": 11}}"#),
            "InvalidParameterValue",
            "InvalidParameterValue;Sender",
        ),
        (
            Some("AmazonSQS.ReceiveMessage"),
            format!(r#"{{"QueueUrl": "{url}", "WaitTimeSeconds": 21}}"#),
            "InvalidParameterValue",
            "InvalidParameterValue;Sender",
        ),
        (
            Some("AmazonSQS.DeleteMessage"),
            format!(r#"{{"QueueUrl": "{url}"}}"#),
            "MissingParameter",
            "MissingParameter;Sender",
        ),
        (
            Some("AmazonSQS.SendMessage"),
            format!(r#"{{"QueueUrl": "{url}", "MessageBody": "x", "DelaySeconds": 5}}"#),
            "InvalidParameterValue",
            "InvalidParameterValue;Sender",
        ),
        (
            Some("AmazonSQS.SendMessageBatch"),
            format!(r#"{{"QueueUrl": "{url}", "Entries": []}}"#),
            "EmptyBatchRequest",
            "AWS.SimpleQueueService.EmptyBatchRequest;Sender",
        ),
        (
            Some("AmazonSQS.SendMessageBatch"),
            format!(
                r#"{{"QueueUrl": "{url}", "Entries": [{{"Id": "a", "MessageBody": "x"}}, {{"Id": "a", "MessageBody": "y"}}]}}"#
            ),
            "BatchEntryIdsNotDistinct",
            "AWS.SimpleQueueService.BatchEntryIdsNotDistinct;Sender",
        ),
        (
            Some("AmazonSQS.GetQueueAttributes"),
            r#"{"QueueUrl": "http://127.0.0.1:1/queues/nope"}"#.into(),
            "QueueDoesNotExist",
            "AWS.SimpleQueueService.NonExistentQueue;Sender",
        ),
        (
            Some("AmazonSQS.CreateQueue"),
            r#"{"QueueName": "new"}"#.into(),
            "UnsupportedOperation",
            "AWS.SimpleQueueService.UnsupportedOperation;Sender",
        ),
        (
            None,
            "{}".into(),
            "UnsupportedOperation",
            "AWS.SimpleQueueService.UnsupportedOperation;Sender",
        ),
    ];
    for (target, body, shape, query_error) in cases {
        let mut request = http
            .post(format!("{}/", f.base))
            .header("content-type", "application/x-amz-json-1.0")
            .body(body.clone());
        if let Some(target) = target {
            request = request.header("x-amz-target", target);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 400, "{target:?} {body}");
        assert_eq!(
            response.headers()["x-amzn-query-error"],
            query_error,
            "{target:?} {body}"
        );
        let json: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            json["__type"],
            format!("com.amazonaws.sqs#{shape}"),
            "{target:?} {body}: {json}"
        );
        assert!(
            json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{json}"
        );
    }
    // The queue is untouched by all that.
    assert_eq!(f.bus.depth("jobs").await.unwrap(), 0);
}
