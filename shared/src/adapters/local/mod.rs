//! Local adapters: real and durable, for `printworks up` and the tests.
//!
//! - [`db`]: the SQLite file (WAL), its group-committing writer thread and readers
//! - [`store`]: orders, idempotency records, tenants and API keys, the outbox
//! - [`bus`]: topic fan-out filtered by event type, queues with visibility
//!   timeout, redelivery and dead-lettering, the outbox relay
//! - [`blobs`]: the file-system blob store and its HMAC-presigned URLs

pub mod blobs;
pub mod bus;
pub mod db;
pub mod store;

#[cfg(test)]
mod tests;
