//! printworks-local: the whole platform on one machine (binary `printworks`).
//!
//! # Layout
//!
//! - [`platform`]: [`platform::start`] wires the local adapters (SQLite,
//!   file-system blobs, local bus) to the functions' handlers, serves the
//!   API and the SQS endpoint on 127.0.0.1, runs the outbox relay, and one
//!   edge agent with a simulated machine per plant;
//!   [`platform::Running::stop`] stops it cleanly. Tests start the real
//!   platform through it.
//! - [`blob_routes`]: `PUT`/`GET /blobs/...` (and `/prints/blobs/...`) for presigned URLs.
//! - [`catch_panic`]: a handler that panics answers 500 with the JSON error
//!   body instead of dropping the connection.
//! - [`operators`]: `printworks operator add`; [`ops_cmd`]: `printworks ops ...`.
//! - [`payments`]: the local webhook secrets and `printworks pay`.
//! - [`seed`]: the demo tenants and `printworks tenant add`.
//! - [`workers`]: the queue consumers (render, dispatch, production-events)
//!   around the functions' handlers.
//! - [`demo`]: `printworks demo`: sample orders through both plants, and what became of them.

pub mod blob_routes;
pub mod catch_panic;
pub mod demo;
pub mod operators;
pub mod ops_cmd;
pub mod payments;
pub mod platform;
pub mod seed;
pub mod workers;
