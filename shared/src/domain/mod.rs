//! The domain: no I/O, no AWS crate, and no import of any module above it
//! (ports, adapters, the payment providers, config...): everything else
//! builds on the domain, never the other way round.
//!
//! - [`catalog`]: products, geometry, prices, plants, VAT and shipping rates
//! - [`changes`]: what customers change on their own orders (a photo, the
//!   address) and what they may do now
//! - [`money`]: integer minor units with a currency
//! - [`locale`]: ship-to countries and languages
//! - [`pricing`]: the server-side quote
//! - [`state`]: the order state machine and its rank (monotonic within a
//!   production attempt)
//! - [`operator`]: operators, their roles and keys
//! - [`ops`]: operators' actions on an order (release, reprint, cancel) and
//!   the production attempts that let an order go back
//! - [`order`]: the order request, its validation, the stored order, transitions
//! - [`events`]: the event envelope
//! - [`payment`]: the checkout, provider events and what they do to an order
//! - [`notify`]: who is told what, on which channel; daily caps; webhook signatures
//! - [`signature`]: the timestamped HMAC-SHA256 signature scheme (Stripe's)
//!   that Stripe's events and printworks' tenant calls share
//! - [`print`]: where an image's print files are stored, why an image cannot
//!   be printed and the hold that follows
//! - [`production`]: the plant choice, print jobs and plant status reports
//! - [`job_records`]: how an order's jobs are stored, each a record of its
//!   own, and a plant's report applied to one of them
//! - [`reconcile`]: what the reconciler repairs on an idle order (hand-overs
//!   to render or dispatch again, fresh print file URLs) and when an order
//!   is announced stuck
//! - [`stats`]: the business statistics as a projection of the events
//!   (what each event adds, percentiles, the report)
//! - [`tenant`]: tenants and API keys
//! - [`upload`]: upload ids, their tenant-scoped keys, which uploads an order
//!   may use

pub mod catalog;
pub mod changes;
pub mod events;
pub mod job_records;
pub mod locale;
pub mod money;
pub mod notify;
pub mod operator;
pub mod ops;
pub mod order;
pub mod payment;
pub mod pricing;
pub mod print;
pub mod production;
pub mod reconcile;
pub mod signature;
pub mod state;
pub mod stats;
pub mod tenant;
pub mod upload;
