//! Orders: the request a client sends ([`OrderRequest`], read strictly at
//! the edge), its parts parsed into domain values against the catalog and
//! the tenant ([`parse`]: [`OrderParts`] and the types it is made of), and
//! the stored [`Order`] with the transitions that emit events.
//!
//! - [`parse`]: `Text`, `EmailAddress`, `PhoneNumber`, `Quantity`,
//!   `InvalidField`, `Customer::parse`, `Address::parse`, `Shipping::parse`,
//!   `ItemImage::parse`, `OrderLine`, `OrderParts` (re-exported here).

use super::catalog::{Catalog, ShippingMethod};
use super::events::{EventEnvelope, EventType};
use super::locale::{CountryCode, Locale};
use super::money::Currency;
use super::pricing::{self, Totals};
use super::state::OrderState;
use super::tenant::{PaymentSetup, Tenant, TenantId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;

pub mod parse;
pub use parse::{EmailAddress, InvalidField, OrderLine, OrderParts, PhoneNumber, Quantity, Text};

pub const MAX_ITEMS: usize = 50;
pub const MAX_QUANTITY: i64 = 100;

/// `ord_` and 32 lowercase hex digits (a UUIDv7, so ids sort by time).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OrderId(String);

impl OrderId {
    pub fn new() -> OrderId {
        OrderId(format!("ord_{}", uuid::Uuid::now_v7().simple()))
    }

    pub fn parse(raw: &str) -> Option<OrderId> {
        let hex = raw.strip_prefix("ord_")?;
        (hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| OrderId(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for OrderId {
    fn default() -> Self {
        OrderId::new()
    }
}

impl TryFrom<String> for OrderId {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        OrderId::parse(&raw).ok_or_else(|| format!("bad order id {raw:?}"))
    }
}

impl From<OrderId> for String {
    fn from(id: OrderId) -> String {
        id.0
    }
}

impl std::fmt::Display for OrderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The longest photo side a crop rectangle may reach.
pub const MAX_PHOTO_SIDE: u32 = 65_535;

// ---------------------------------------------------------------- request --

/// `POST /v1/orders` as the client sends it. Unknown fields are refused;
/// prices and states are never accepted from a client.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    pub locale: String,
    pub currency: String,
    pub customer: CustomerRequest,
    pub shipping: ShippingRequest,
    pub items: Vec<ItemRequest>,
    /// The client's own reference (a B2B purchase order number).
    #[serde(default)]
    pub reference: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerRequest {
    pub name: String,
    pub email: String,
    #[serde(default)]
    pub phone: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShippingRequest {
    pub method: String,
    pub address: AddressRequest,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AddressRequest {
    pub name: String,
    #[serde(default)]
    pub company: Option<String>,
    pub line1: String,
    #[serde(default)]
    pub line2: Option<String>,
    pub postal_code: String,
    pub city: String,
    pub country: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ItemRequest {
    pub sku: String,
    pub quantity: i64,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    pub images: Vec<ImageRequest>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRequest {
    #[serde(default)]
    pub upload_id: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    /// `fill` (default) or `fit`.
    #[serde(default)]
    pub fit: Option<String>,
    /// The part of the photo to print, in pixels of the photo as shown.
    #[serde(default)]
    pub crop: Option<Crop>,
    /// The background of `fit`, `#rrggbb` (default white).
    #[serde(default)]
    pub background: Option<String>,
}

/// A rectangle of the photo as the customer saw it (EXIF orientation applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Crop {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// How a photo meets the print's shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fit {
    /// Cover the print, cutting the excess (centred, or the crop).
    #[default]
    Fill,
    /// The whole photo on the background colour.
    Fit,
}

/// What an `Idempotency-Key` is bound to: the SHA-256 (hex) of the request
/// as the server read it, serialized again. That form is canonical (fixed
/// field order, sorted option maps), so key order and whitespace in the
/// body do not change it; the same key with another request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyFingerprint(String);

impl IdempotencyFingerprint {
    pub fn of(request: &OrderRequest) -> Result<IdempotencyFingerprint, serde_json::Error> {
        use sha2::{Digest, Sha256};
        let canonical = serde_json::to_vec(request)?;
        Ok(IdempotencyFingerprint(hex::encode(Sha256::digest(
            canonical,
        ))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<IdempotencyFingerprint> for String {
    fn from(fingerprint: IdempotencyFingerprint) -> String {
        fingerprint.0
    }
}

/// Field names a client might send to set what only the server decides.
pub const SERVER_ONLY_FIELDS: &[&str] = &[
    "price",
    "prices",
    "unit_price",
    "line_total",
    "subtotal",
    "total",
    "totals",
    "vat",
    "amount",
    "status",
    "state",
    "rank",
    "paid",
    "id",
    "order_id",
    "tenant",
];

/// Finds a server-only field anywhere in a request body, with its path.
pub fn find_server_only_field(value: &serde_json::Value) -> Option<String> {
    fn walk(value: &serde_json::Value, path: &str) -> Option<String> {
        match value {
            serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
                let here = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if SERVER_ONLY_FIELDS.contains(&k.as_str()) {
                    Some(here)
                } else {
                    walk(v, &here)
                }
            }),
            serde_json::Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, v)| walk(v, &format!("{path}[{i}]"))),
            _ => None,
        }
    }
    walk(value, "")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

// ------------------------------------------------------------------ order --

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub name: String,
    pub email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub postal_code: String,
    pub city: String,
    pub country: CountryCode,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipping {
    pub method: ShippingMethod,
    pub address: Address,
}

/// Where an item's photo comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum ImageSource {
    /// A photo uploaded through `POST /v1/uploads`, under the tenant's prefix.
    Upload { upload_id: String, key: String },
    /// A photo the client hosts; fetched (with address checks) at render time.
    Url { url: String },
}

/// One image of an item: where it comes from and how it is placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemImage {
    #[serde(flatten)]
    pub source: ImageSource,
    #[serde(default)]
    pub fit: Fit,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop: Option<Crop>,
    /// `#rrggbb`; white when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<String>,
}

/// A file the render step stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderedFile {
    pub key: String,
    pub sha256: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
}

/// What rendering one image of an item produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderedImage {
    /// Index into the item's `images`.
    pub image: u32,
    pub print: RenderedFile,
    pub preview: RenderedFile,
    pub effective_dpi: u32,
    #[serde(default)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderItem {
    /// 1-based position in the order.
    pub line: u32,
    pub sku: String,
    pub name: String,
    pub quantity: u32,
    /// Every option of the product, defaults filled in.
    pub options: BTreeMap<String, String>,
    pub images: Vec<ItemImage>,
    pub unit_price: super::money::Money,
    pub line_total: super::money::Money,
    /// Filled in by the render step, one entry per image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub renders: Vec<RenderedImage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub reason: String,
    /// The state the order was in when it was held.
    pub from: OrderState,
    /// The photo the order is held for, when a photo the customer replaces
    /// lifts the hold ([`super::changes`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub photo: Option<super::changes::PhotoRef>,
    /// Why, for the statistics: the `details.code` of its `OrderOnHold`
    /// (`unprintable_resolution`, `production_failed`, `no_plant`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: OrderId,
    pub tenant: TenantId,
    pub state: OrderState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<Hold>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub locale: Locale,
    pub currency: Currency,
    pub customer: Customer,
    pub shipping: Shipping,
    pub items: Vec<OrderItem>,
    pub totals: Totals,
    pub payment: PaymentSetup,
    /// Where the money stands (provider-paid orders, once the provider
    /// said something).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_status: Option<super::payment::PaymentLedger>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The plant and the jobs, once dispatched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub production: Option<super::production::Production>,
    /// Bumped by every write; stores write conditionally on it, so two
    /// writers that read the same order cannot both win.
    #[serde(default)]
    pub version: u64,
    /// The production attempt: 1 from placement; an operator's release or
    /// reprint starts the next. Every message that starts work carries the
    /// attempt it belongs to, and work of an earlier attempt is not done
    /// (see [`super::ops`]).
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    /// The plant an operator chose for the next dispatch (a release at a
    /// chosen plant); dispatch takes it and clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plant_choice: Option<String>,
    /// What operators did to the order, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<super::ops::ActionRecord>,
    /// What the customer changed through the tenant API, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<super::changes::ChangeRecord>,
    /// What the reconciler did in the order's current state (hand-overs,
    /// fresh URLs, a stuck announcement; [`super::reconcile`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<super::reconcile::Watch>,
}

/// The attempt of an order placed, and of one stored before attempts
/// existed.
pub fn first_attempt() -> u32 {
    1
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransitionError {
    #[error("the order is {} and can no longer be cancelled", .0.as_str())]
    NotCancellable(OrderState),
    #[error("the order is already cancelled")]
    AlreadyCancelled,
    #[error("the order cannot move from {} to {}", .0.as_str(), .1.as_str())]
    NotAllowed(OrderState, OrderState),
}

impl Order {
    pub fn rank(&self) -> u32 {
        self.state.rank()
    }

    /// The copy every change starts from: the next version, updated now.
    pub fn successor(&self, now: OffsetDateTime) -> Order {
        let mut next = self.clone();
        next.version = self.version + 1;
        next.updated_at = now;
        next
    }

    /// Parses a request for `tenant` against `catalog` ([`OrderParts`];
    /// every problem is reported, so a client learns all that is wrong at
    /// once), prices it and builds the order with the events that announce
    /// it.
    pub fn place(
        catalog: &Catalog,
        tenant: &Tenant,
        request: &OrderRequest,
        now: OffsetDateTime,
    ) -> Result<(Order, Vec<EventEnvelope>), Vec<FieldError>> {
        let parts = OrderParts::parse(request, catalog, tenant)?;
        let (country, method, currency) = (
            parts.shipping.address.country,
            parts.shipping.method,
            parts.currency,
        );
        let lines: Vec<_> = parts
            .lines
            .iter()
            .map(|l| (l.product, l.quantity.get()))
            .collect();
        let totals = pricing::quote(catalog, &lines, country, method, currency).map_err(|e| {
            vec![FieldError {
                field: "items".into(),
                message: e.to_string(),
            }]
        })?;
        let state = if tenant.pays_by_invoice() {
            OrderState::Paid
        } else {
            OrderState::Placed
        };
        let order = Order {
            id: OrderId::new(),
            tenant: tenant.id.clone(),
            state,
            hold: None,
            cancel_reason: None,
            created_at: now,
            updated_at: now,
            locale: parts.locale,
            currency,
            customer: parts.customer,
            shipping: parts.shipping,
            items: parts
                .lines
                .into_iter()
                .zip(1..)
                .map(|(l, line)| l.priced(line, currency))
                .collect(),
            totals,
            payment: tenant.payment.clone(),
            payment_status: None,
            production: None,
            reference: parts.reference,
            version: 0,
            attempt: first_attempt(),
            plant_choice: None,
            actions: Vec::new(),
            changes: Vec::new(),
            watch: None,
        };
        let events = order.placement_events(now);
        Ok((order, events))
    }

    /// `OrderPlaced`, and `OrderPaid` for an order paid by invoice.
    fn placement_events(&self, now: OffsetDateTime) -> Vec<EventEnvelope> {
        let payment_method = match &self.payment {
            PaymentSetup::Invoice => "invoice",
            PaymentSetup::Provider { .. } => "provider",
        };
        let mut events = vec![EventEnvelope::new(
            EventType::OrderPlaced,
            &self.id,
            &self.tenant,
            now,
            serde_json::json!({
                "total": self.totals.total,
                "items": self.items.len(),
                "locale": self.locale,
                "ship_to": self.shipping.address.country,
                "payment": payment_method,
            }),
        )];
        if self.state == OrderState::Paid {
            events.push(EventEnvelope::new(
                EventType::OrderPaid,
                &self.id,
                &self.tenant,
                now,
                serde_json::json!({ "amount": self.totals.total, "vat": self.totals.vat, "method": "invoice", "attempt": self.attempt }),
            ));
        }
        events
    }

    /// Adds to an `OrderShipped` event's `data` what the statistics count
    /// its lead time by: when the order was placed, the plant and the
    /// order's products (`skus`).
    pub fn add_shipment_facts(&self, data: &mut serde_json::Value, plant: &str) {
        let placed_at = self
            .created_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        data["placed_at"] = serde_json::json!(placed_at);
        data["plant"] = serde_json::json!(plant);
        data["skus"] = serde_json::json!(self.items.iter().map(|i| &i.sku).collect::<Vec<_>>());
    }

    /// The state production is judged by: for a held order, where it was.
    fn effective_state(&self) -> OrderState {
        match (&self.state, &self.hold) {
            (OrderState::OnHold, Some(hold)) => hold.from,
            (state, _) => *state,
        }
    }

    /// Cancels the order if production has not started.
    pub fn cancel(
        &self,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<(Order, EventEnvelope), TransitionError> {
        if self.state == OrderState::Cancelled {
            return Err(TransitionError::AlreadyCancelled);
        }
        let effective = self.effective_state();
        if effective.production_started()
            || effective.is_terminal()
            || !self.state.can_move_to(OrderState::Cancelled)
        {
            return Err(TransitionError::NotCancellable(self.state));
        }
        let mut next = self.successor(now);
        next.state = OrderState::Cancelled;
        next.cancel_reason = Some(reason.to_string());
        let event = EventEnvelope::new(
            EventType::OrderCancelled,
            &self.id,
            &self.tenant,
            now,
            serde_json::json!({ "reason": reason, "from": self.state }),
        );
        Ok((next, event))
    }
}

impl Order {
    /// Paid -> Rendered, with every item's render records; `OrderRendered`.
    pub fn rendered(
        &self,
        renders: Vec<Vec<RenderedImage>>,
        now: OffsetDateTime,
    ) -> Result<(Order, EventEnvelope), TransitionError> {
        if self.state != OrderState::Paid || renders.len() != self.items.len() {
            return Err(TransitionError::NotAllowed(
                self.state,
                OrderState::Rendered,
            ));
        }
        let mut next = self.successor(now);
        for (item, r) in next.items.iter_mut().zip(renders) {
            item.renders = r;
        }
        next.state = OrderState::Rendered;
        let items: Vec<_> = next
            .items
            .iter()
            .map(|i| serde_json::json!({ "line": i.line, "sku": i.sku, "renders": i.renders }))
            .collect();
        let event = EventEnvelope::new(
            EventType::OrderRendered,
            &self.id,
            &self.tenant,
            now,
            serde_json::json!({ "items": items, "attempt": self.attempt }),
        );
        Ok((next, event))
    }

    /// Puts the order on hold with a reason the customer can be told;
    /// `OrderOnHold` carries the reason and `details` (e.g. which image).
    pub fn hold(
        &self,
        reason: &str,
        details: serde_json::Value,
        now: OffsetDateTime,
    ) -> Result<(Order, EventEnvelope), TransitionError> {
        if !self.state.can_move_to(OrderState::OnHold) {
            return Err(TransitionError::NotAllowed(self.state, OrderState::OnHold));
        }
        let mut next = self.successor(now);
        next.hold = Some(Hold {
            reason: reason.to_string(),
            from: self.state,
            photo: None,
            code: details
                .get("code")
                .and_then(serde_json::Value::as_str)
                .map(str::to_string),
        });
        next.state = OrderState::OnHold;
        let event = EventEnvelope::new(
            EventType::OrderOnHold,
            &self.id,
            &self.tenant,
            now,
            serde_json::json!({ "reason": reason, "from": self.state, "details": details }),
        );
        Ok((next, event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::tenant::TenantKind;

    fn tenant(kind: TenantKind) -> Tenant {
        Tenant {
            id: TenantId::parse("demo-brand").unwrap(),
            name: "Demo".into(),
            kind,
            brand: "demo".into(),
            countries: CountryCode::ALL.to_vec(),
            currencies: vec![Currency::Eur, Currency::Chf],
            default_locale: Locale::De,
            payment: match kind {
                TenantKind::B2b => PaymentSetup::Invoice,
                TenantKind::B2c => PaymentSetup::Provider {
                    provider: "stripe".into(),
                    merchant_account: None,
                },
            },
            notifications: Default::default(),
        }
    }

    fn request() -> OrderRequest {
        serde_json::from_value(serde_json::json!({
            "locale": "de",
            "currency": "EUR",
            "customer": {"name": "Erika Mustermann", "email": "erika@example.com"},
            "shipping": {"method": "standard", "address": {
                "name": "Erika Mustermann", "line1": "Heidestr. 17", "postal_code": "51147", "city": "Köln", "country": "DE"}},
            "items": [{"sku": "poster-30x40", "quantity": 2, "options": {"finish": "glossy"},
                       "images": [{"upload_id": "upl_0123456789abcdef0123456789abcdef"}]}]
        }))
        .unwrap()
    }

    fn now() -> OffsetDateTime {
        time::macros::datetime!(2026-11-22 10:00:00 UTC)
    }

    #[test]
    fn b2c_order_is_placed_with_server_prices() {
        let (order, events) = Order::place(
            Catalog::builtin(),
            &tenant(TenantKind::B2c),
            &request(),
            now(),
        )
        .unwrap();
        assert_eq!(order.state, OrderState::Placed);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type, EventType::OrderPlaced);
        let item = &order.items[0];
        assert_eq!(item.unit_price.amount, 1490);
        assert_eq!(item.line_total.amount, 2980);
        assert_eq!(item.options["finish"], "glossy");
        assert_eq!(
            item.images[0].source,
            ImageSource::Upload {
                upload_id: "upl_0123456789abcdef0123456789abcdef".into(),
                key: "uploads/demo-brand/upl_0123456789abcdef0123456789abcdef".into()
            }
        );
        assert_eq!(item.images[0].fit, Fit::Fill);
        assert_eq!(
            order.totals.total.amount,
            order.totals.subtotal.amount + order.totals.shipping.amount + order.totals.vat.amount
        );
    }

    #[test]
    fn b2b_order_is_paid_at_placement_and_emits_order_paid() {
        let (order, events) = Order::place(
            Catalog::builtin(),
            &tenant(TenantKind::B2b),
            &request(),
            now(),
        )
        .unwrap();
        assert_eq!(order.state, OrderState::Paid);
        let types: Vec<_> = events.iter().map(|e| e.event_type).collect();
        assert_eq!(types, vec![EventType::OrderPlaced, EventType::OrderPaid]);
        assert_eq!(
            events[1].data["amount"]["amount"],
            order.totals.total.amount
        );
    }

    #[test]
    fn options_default_and_unknown_options_are_refused() {
        let mut r = request();
        r.items[0].options.clear();
        let (order, _) =
            Order::place(Catalog::builtin(), &tenant(TenantKind::B2c), &r, now()).unwrap();
        assert_eq!(order.items[0].options["finish"], "matte");
        r.items[0].options.insert("wrap".into(), "mirror".into());
        let errors =
            Order::place(Catalog::builtin(), &tenant(TenantKind::B2c), &r, now()).unwrap_err();
        assert_eq!(errors[0].field, "items[0].options.wrap");
    }

    #[test]
    fn every_rule_reports_its_field() {
        type Mutation = Box<dyn Fn(&mut OrderRequest)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("locale", Box::new(|r| r.locale = "pt".into())),
            ("currency", Box::new(|r| r.currency = "USD".into())),
            (
                "customer.email",
                Box::new(|r| r.customer.email = "not-an-email".into()),
            ),
            (
                "customer.phone",
                Box::new(|r| r.customer.phone = Some("12".into())),
            ),
            (
                "customer.name",
                Box::new(|r| r.customer.name = "   ".into()),
            ),
            (
                "shipping.method",
                Box::new(|r| r.shipping.method = "drone".into()),
            ),
            (
                "shipping.address.country",
                Box::new(|r| r.shipping.address.country = "US".into()),
            ),
            (
                "shipping.address.postal_code",
                Box::new(|r| r.shipping.address.postal_code = "1234".into()),
            ),
            (
                "shipping.address.line1",
                Box::new(|r| r.shipping.address.line1 = "x".repeat(101)),
            ),
            (
                "items[0].sku",
                Box::new(|r| r.items[0].sku = "poster-1x1".into()),
            ),
            ("items[0].quantity", Box::new(|r| r.items[0].quantity = 0)),
            ("items[0].quantity", Box::new(|r| r.items[0].quantity = 101)),
            (
                "items[0].options.finish",
                Box::new(|r| {
                    r.items[0].options.insert("finish".into(), "gold".into());
                }),
            ),
            ("items[0].images", Box::new(|r| r.items[0].images.clear())),
            (
                "items[0].images[0].upload_id",
                Box::new(|r| r.items[0].images[0].upload_id = Some("../etc/passwd".into())),
            ),
            (
                "items[0].images[0]",
                Box::new(|r| r.items[0].images[0].url = Some("https://example.com/a.jpg".into())),
            ),
            ("items", Box::new(|r| r.items.clear())),
            (
                "items",
                Box::new(|r| {
                    let item = r.items[0].clone();
                    r.items = vec![item; 51];
                }),
            ),
            (
                "reference",
                Box::new(|r| r.reference = Some("r".repeat(65))),
            ),
        ];
        for (field, mutate) in cases {
            let mut r = request();
            mutate(&mut r);
            let errors =
                Order::place(Catalog::builtin(), &tenant(TenantKind::B2c), &r, now()).unwrap_err();
            assert!(
                errors.iter().any(|e| e.field == field),
                "expected an error on {field}, got {errors:?}"
            );
        }
    }

    #[test]
    fn problems_come_in_the_order_of_the_request_s_fields() {
        let mut r = request();
        r.locale = "pt".into();
        r.currency = "USD".into();
        r.customer.name = " ".into();
        r.shipping.method = "drone".into();
        r.shipping.address.country = "US".into();
        r.reference = Some("r".repeat(65));
        let mut second = r.items[0].clone();
        r.items[0].sku = "poster-1x1".into();
        second.quantity = 0;
        second.images[0] = ImageRequest {
            url: Some("http://example.com/a.jpg".into()),
            ..Default::default()
        };
        r.items.push(second);
        let errors =
            Order::place(Catalog::builtin(), &tenant(TenantKind::B2c), &r, now()).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "locale",
                "currency",
                "customer.name",
                "shipping.method",
                "shipping.address.country",
                "reference",
                "items[0].sku",
                "items[1].quantity",
                "items[1].images[0].url",
            ]
        );
        assert_eq!(errors[4].message, "we do not ship to \"US\"");
        assert_eq!(errors[7].message, "must be between 1 and 100");
    }

    #[test]
    fn boundaries_are_accepted() {
        let mut r = request();
        r.items[0].quantity = 100;
        let item = r.items[0].clone();
        r.items = vec![item; 50];
        assert!(Order::place(Catalog::builtin(), &tenant(TenantKind::B2c), &r, now()).is_ok());
        let mut r = request();
        r.items[0].images[0] = ImageRequest {
            url: Some("https://photos.example.com/p/1.jpg".into()),
            ..Default::default()
        };
        assert!(Order::place(Catalog::builtin(), &tenant(TenantKind::B2c), &r, now()).is_ok());
        r.items[0].images[0].url = Some("http://photos.example.com/p/1.jpg".into());
        assert!(Order::place(Catalog::builtin(), &tenant(TenantKind::B2c), &r, now()).is_err());
    }

    #[test]
    fn currency_and_country_must_be_enabled_for_the_tenant() {
        let mut t = tenant(TenantKind::B2c);
        t.currencies = vec![Currency::Chf];
        t.countries = vec![CountryCode::CH];
        let errors = Order::place(Catalog::builtin(), &t, &request(), now()).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert!(
            fields.contains(&"currency") && fields.contains(&"shipping.address.country"),
            "{fields:?}"
        );
    }

    #[test]
    fn placement_is_validated_and_kept() {
        let mut r = request();
        r.items[0].images[0].fit = Some("fit".into());
        r.items[0].images[0].background = Some("#102030".into());
        r.items[0].images[0].crop = Some(Crop {
            x: 10,
            y: 20,
            width: 300,
            height: 400,
        });
        let (order, _) =
            Order::place(Catalog::builtin(), &tenant(TenantKind::B2c), &r, now()).unwrap();
        let image = &order.items[0].images[0];
        assert_eq!(
            (image.fit, image.background.as_deref()),
            (Fit::Fit, Some("#102030"))
        );
        assert_eq!(image.crop.map(|c| (c.x, c.width)), Some((10, 300)));
        // The order's JSON round-trips (the source is flattened into the image).
        let json = serde_json::to_value(&order).unwrap();
        assert_eq!(json["items"][0]["images"][0]["source"], "upload");
        assert_eq!(json["items"][0]["images"][0]["fit"], "fit");
        assert_eq!(serde_json::from_value::<Order>(json).unwrap(), order);

        for (field, change) in [
            (
                "fit",
                Box::new(|i: &mut ImageRequest| i.fit = Some("stretch".into()))
                    as Box<dyn Fn(&mut ImageRequest)>,
            ),
            (
                "background",
                Box::new(|i: &mut ImageRequest| i.background = Some("red".into())),
            ),
            (
                "crop",
                Box::new(|i: &mut ImageRequest| {
                    i.crop = Some(Crop {
                        x: 0,
                        y: 0,
                        width: 0,
                        height: 10,
                    })
                }),
            ),
            (
                "crop",
                Box::new(|i: &mut ImageRequest| {
                    i.crop = Some(Crop {
                        x: u32::MAX,
                        y: 0,
                        width: 10,
                        height: 10,
                    })
                }),
            ),
        ] {
            let mut r = request();
            change(&mut r.items[0].images[0]);
            let errors =
                Order::place(Catalog::builtin(), &tenant(TenantKind::B2c), &r, now()).unwrap_err();
            assert_eq!(
                errors[0].field,
                format!("items[0].images[0].{field}"),
                "{errors:?}"
            );
        }
    }

    #[test]
    fn photo_box_takes_exactly_its_number_of_images() {
        let mut r = request();
        r.items[0].sku = "photobox-10x15".into();
        r.items[0].options.clear();
        let err =
            Order::place(Catalog::builtin(), &tenant(TenantKind::B2c), &r, now()).unwrap_err();
        assert!(err[0].message.contains("exactly 10 images"), "{err:?}");
        r.items[0].images = (0..10)
            .map(|i| ImageRequest {
                upload_id: Some(format!("upl_{i:032x}")),
                ..Default::default()
            })
            .collect();
        assert!(Order::place(Catalog::builtin(), &tenant(TenantKind::B2c), &r, now()).is_ok());
    }

    #[test]
    fn server_only_fields_are_found_anywhere() {
        let v = serde_json::json!({"items": [{"sku": "x", "unit_price": 1}]});
        assert_eq!(
            find_server_only_field(&v).as_deref(),
            Some("items[0].unit_price")
        );
        assert_eq!(
            find_server_only_field(&serde_json::json!({"status": "paid"})).as_deref(),
            Some("status")
        );
        assert_eq!(
            find_server_only_field(&serde_json::to_value(request()).unwrap()),
            None
        );
    }

    #[test]
    fn cancel_until_production_starts() {
        let (order, _) = Order::place(
            Catalog::builtin(),
            &tenant(TenantKind::B2b),
            &request(),
            now(),
        )
        .unwrap();
        let (cancelled, event) = order.cancel("customer_request", now()).unwrap();
        assert_eq!(cancelled.state, OrderState::Cancelled);
        assert_eq!(event.event_type, EventType::OrderCancelled);
        assert_eq!(
            cancelled.cancel(" ", now()).unwrap_err(),
            TransitionError::AlreadyCancelled
        );

        let mut producing = order.clone();
        producing.state = OrderState::InProduction;
        assert_eq!(
            producing.cancel("x", now()).unwrap_err(),
            TransitionError::NotCancellable(OrderState::InProduction)
        );

        let mut held = order.clone();
        held.state = OrderState::OnHold;
        held.hold = Some(Hold {
            reason: "photo too small".into(),
            from: OrderState::Paid,
            photo: None,
            code: None,
        });
        assert!(held.cancel("x", now()).is_ok());
        held.hold = Some(Hold {
            reason: "chargeback".into(),
            from: OrderState::Printed,
            photo: None,
            code: None,
        });
        assert!(held.cancel("x", now()).is_err());
    }
}
