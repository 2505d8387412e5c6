//! The cross-crate integration tests (package `printworks-tests`), one of
//! the workspace's six integration-test binaries (ARCHITECTURE.md lists them).
//!
//! - `local_e2e`: the real local platform over HTTP
//! - `local_changes`: customers replace a held photo and change the address through the tenant API
//! - `local_first_start`: the banner's example request, run by a shell, ships
//! - `local_payments`: `printworks up` takes signed provider webhooks
//! - `local_notify`: `printworks up` mails customers and signs tenant webhooks
//! - `local_render`: `printworks up` renders paid orders, or holds them
//! - `local_plants`: `printworks up` takes orders to shipped through both plants' agents
//! - `chaos`: 500 orders under injected faults, agents killed with SIGKILL
//! - `aws_emulator`: the AWS adapters against moto server (`emulator_*`)
//! - `openapi`: the spec against the router, and its examples
//! - `properties`: generated bad input at the routers (proptest): 4xx, JSON error, nothing stored
//! - `sample_events`: every file in `events/` through its handler
//! - `topology`: the templates' queues and function environments against the code

mod aws_emulator;
mod chaos;
mod local_changes;
mod local_e2e;
mod local_first_start;
mod local_notify;
mod local_ops;
mod local_payments;
mod local_plants;
mod local_render;
mod openapi;
mod properties;
mod sample_events;
mod topology;
