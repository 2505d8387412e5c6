//! printworks: the library every function, the local runner and the edge
//! agent share.
//!
//! # Layout
//!
//! - [`domain`]: catalog, money, pricing, the order state machine, events,
//!   tenants and API keys, payments. No I/O, no AWS crate.
//! - [`ports`]: the traits the handlers take (`OrderStore`, `TenantStore`,
//!   `PaymentStore`, `SecretSource`, `BlobStore`, `EventPublisher`, `Clock`),
//!   and the data they carry.
//! - [`clock`]: the adapters of the `Clock` port, `SystemClock` (the wall
//!   clock) and `ManualClock` (moved by hand in tests).
//! - [`adapters`]: `aws` (DynamoDB, S3, SNS, SQS, Secrets Manager; feature
//!   `aws`) and `local` (SQLite, file system; feature `local`);
//!   `adapters::mime`, the MIME e-mail every mailer sends.
//! - `render` (feature `render`): the print-file pipeline, bytes in, bytes out.
//! - [`webhooks`]: payment providers' webhook signatures (Stripe, Adyen) and
//!   their events in our terms.
//! - `sqs_batch` (feature `lambda`): SQS batches with partial failures.
//! - `webhook_out` (feature `fetch`): signed tenant webhooks over the SSRF-safe fetcher.
//! - `adapters::smtp` (feature `smtp`): e-mail through a shop's own SMTP server.
//! - [`config`]: reading typed configuration from the environment ([`config::Vars`]).
//! - [`topology`]: the queue topology, declared once (names, topic filters,
//!   visibility timeouts, receive limits, dead-letter queues, consumers).
//! - `testing` (feature `testing`): fixtures for other crates' tests: orders
//!   moved along as the earlier stages would, `LocalEnv` (the local store,
//!   bus and clock of the handler tests) and, with `testing-aws`, the AWS
//!   emulator helpers.
//! - [`retry`]: `on_conflict`, the retry of writes that lost a race (jittered
//!   back-off), and `Retry`, the retryable failure of the queue-fed functions.
//! - [`telemetry`]: the one tracing init.
//! - [`faults`]: the fault-injection switch (off unless a test turns it on).

pub mod adapters;
pub mod clock;
pub mod config;
pub mod domain;
pub mod faults;
#[cfg(feature = "fetch")]
pub mod fetch;
pub mod ports;
#[cfg(feature = "render")]
pub mod render;
pub mod retry;
#[cfg(feature = "lambda")]
pub mod sqs_batch;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod topology;
#[cfg(feature = "fetch")]
pub mod webhook_out;
pub mod webhooks;
