//! The notify function: customer-facing events in (SQS, subscribed to the
//! topic); customers told by e-mail and SMS in their language and their
//! brand, B2B tenants' systems by signed webhooks.
//!
//! # Layout
//!
//! - `notifier.rs`: [`Notifier`] — [`Notifier::handle`] (one event: plan, render,
//!   claim, send, record), [`Notifier::sweep`] (deferred messages whose day
//!   has come), [`Notifier::handle_sqs`] (a Lambda batch with partial
//!   failures and back-off), [`webhook_body`];
//! - [`templates`]: [`templates::Templates`], the message templates
//!   (minijinja) compiled with their catalogs and brands; renders an
//!   e-mail or a text message;
//! - [`context`]: [`context::MessageContext`] (brand, languages, order,
//!   event) and the view a template is given;
//! - [`catalogs`]: the per-language message catalogs and the `t()` lookup;
//! - [`brands`]: the white-label brands (`brands.json`);
//! - [`format`]: money, dates and tracking links for a language;
//! - [`config`]: [`Config`], [`Resources`] and the constructors
//!   [`Notifier::new`] (local runner, tests) and `Notifier::on_aws` (Lambda);
//! - [`lambda`]: the Lambda's two payloads (queue batch, scheduled sweep).
//!
//! Who is told what is decided by `printworks::domain::notify::plan`. Every
//! message is a record in the `NotificationStore` keyed by (order, event,
//! channel, recipient): a claim on it is atomic with the tenant's daily
//! counter for the channel, so a message is sent once however often the
//! event arrives or however many invocations race, and a message over the
//! cap waits for the next day (deferred, then sent by the sweep), never
//! dropped. A failed send releases the claim (and the count) and fails the
//! queue message, which comes back after a back-off and is dead-lettered
//! after the queue's limit; what was already sent for the event stays sent.

pub mod brands;
pub mod catalogs;
pub mod config;
pub mod context;
pub mod format;
pub mod lambda;
mod notifier;
pub mod templates;

pub use config::{Config, Ports, Resources, SWEEP_MAX};
pub use notifier::{Channels, Delivery, Notifier, Outcome, Retry, backoff, webhook_body};

#[cfg(test)]
mod tests;
