//! Local adapters: real and durable, for `printworks up` and the tests.
//!
//! - [`db`]: the SQLite file (WAL), its group-committing writer thread and readers
//! - [`store`]: orders, idempotency records, tenants and API keys, the outbox
//! - [`bus`]: topic fan-out filtered by event type, queues with visibility
//!   timeout, redelivery and dead-lettering, the outbox relay
//! - [`notify`]: the notification ledger and the daily send counters
//! - [`stats`]: the statistics projection's counters
//! - [`outbox`]: e-mail (`.eml`) and SMS files in an outbox folder
//! - [`blobs`]: the file-system blob store and its HMAC-presigned URLs
//! - `sqs_api` (feature `sqs-api`): the bus's queues behind the SQS JSON
//!   protocol, for edge agents (separate processes) and the SQS SDK

pub mod blobs;
pub mod bus;
pub mod db;
pub mod notify;
pub mod operators;
pub mod outbox;
#[cfg(feature = "sqs-api")]
pub mod sqs_api;
pub mod stats;
pub mod store;

#[cfg(test)]
mod tests;
