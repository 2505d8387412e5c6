//! What customers and tenants change on their own orders through the
//! tenant API, and what they may do now.
//!
//! - [`Order::customer_actions`]: what the order allows now (`cancel`,
//!   `replace_image` of which photo, `change_address`), as Prodigi's
//!   `actions`; every refusal repeats it ([`ChangeRefusal`]).
//! - [`Order::replace_image`]: a photo replaced while the order waits for
//!   its payment, before it was rendered, or while it is held for that very
//!   photo; the order renders what changed (the other images' renders are
//!   kept) and goes on.
//! - [`Order::change_details`]: the shipping address and method, the
//!   customer's e-mail and phone, until the order is dispatched; a change
//!   that would change what a paid order costs is refused
//!   ([`ChangeRefusal::TotalWouldChange`]).
//!
//! Every change is kept on the order ([`ChangeRecord`]: what, which API
//! key, when) and announced (`OrderChanged`, or `OrderResumed` when it
//! lifts a hold).

use super::catalog::Catalog;
use super::events::{EventEnvelope, EventType};
use super::money::Money;
use super::ops::Stage;
use super::order::{Customer, ItemImage, Order, Shipping};
use super::pricing;
use super::state::OrderState;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What a customer (through its tenant's API key) may do to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomerAction {
    Cancel,
    ReplaceImage,
    ChangeAddress,
}

impl CustomerAction {
    pub fn as_str(self) -> &'static str {
        match self {
            CustomerAction::Cancel => "cancel",
            CustomerAction::ReplaceImage => "replace_image",
            CustomerAction::ChangeAddress => "change_address",
        }
    }
}

/// One action allowed now; `replace_image` names its photo (the item's
/// `line` and the `image` index, from 0, as in the route).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowed {
    pub action: CustomerAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<u32>,
}

impl Allowed {
    fn plain(action: CustomerAction) -> Allowed {
        Allowed {
            action,
            line: None,
            image: None,
        }
    }

    /// `cancel`, `change_address`, `replace_image (item 1, image 0)`.
    pub fn describe(&self) -> String {
        match (self.line, self.image) {
            (Some(line), Some(image)) => {
                format!("{} (item {line}, image {image})", self.action.as_str())
            }
            _ => self.action.as_str().to_string(),
        }
    }
}

/// The photo an order is held for: the item's line and the image index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhotoRef {
    pub line: u32,
    pub image: u32,
}

/// One change a customer made, as the order keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRecord {
    pub action: CustomerAction,
    /// The id of the API key that made it (never the secret).
    pub by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub attempt: u32,
    /// What changed: field names, the photo, the stage it went on with;
    /// never the address or contact itself.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

/// Why a change was not made; each says what is allowed instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeRefusal {
    /// The order's state does not allow it now (HTTP 409).
    #[error("{message}")]
    NotNow {
        message: String,
        allowed: Vec<Allowed>,
    },
    /// A paid order's total would change (HTTP 409).
    #[error("{message}")]
    TotalWouldChange {
        message: String,
        from: Money,
        to: Money,
        allowed: Vec<Allowed>,
    },
    /// The photo named does not exist (HTTP 404).
    #[error("{message}")]
    NoSuchImage { message: String },
    /// The request names something wrong (HTTP 422).
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

/// A change made: the order to write (conditional on the one read) and
/// its events. `next` is `None` when nothing changed (nothing to write).
#[derive(Debug, Clone)]
pub struct Changed {
    pub next: Option<Order>,
    pub events: Vec<EventEnvelope>,
}

/// Whether the money for the order is in: a paid state (or held from one),
/// or an order paid by invoice.
fn is_paid(order: &Order) -> bool {
    let state = match (&order.state, &order.hold) {
        (OrderState::OnHold, Some(hold)) => hold.from,
        (state, _) => *state,
    };
    state != OrderState::Placed && state != OrderState::Cancelled
}

impl Order {
    /// The state production is judged by: for a held order, where it was.
    fn judged_state(&self) -> OrderState {
        match (&self.state, &self.hold) {
            (OrderState::OnHold, Some(hold)) => hold.from,
            (state, _) => *state,
        }
    }

    /// The photos that may be replaced now: every photo until the order is
    /// rendered (placed, or paid and not yet rendered), else only the photo
    /// it is held for.
    pub fn replaceable_images(&self) -> Vec<PhotoRef> {
        let every = || {
            self.items
                .iter()
                .flat_map(|item| {
                    (0..item.images.len()).map(|i| PhotoRef {
                        line: item.line,
                        image: i as u32,
                    })
                })
                .collect()
        };
        match self.state {
            OrderState::Placed | OrderState::Paid => every(),
            OrderState::OnHold => self
                .hold
                .as_ref()
                .and_then(|h| h.photo)
                .into_iter()
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Whether the address may change: until the order is dispatched.
    fn address_changeable(&self) -> bool {
        matches!(
            self.judged_state(),
            OrderState::Placed | OrderState::Paid | OrderState::Rendered
        ) && !self.state.is_terminal()
    }

    /// What the customer may do to the order now.
    pub fn customer_actions(&self) -> Vec<Allowed> {
        let mut allowed = Vec::new();
        if self.cancel("check", self.updated_at).is_ok() {
            allowed.push(Allowed::plain(CustomerAction::Cancel));
        }
        for photo in self.replaceable_images() {
            allowed.push(Allowed {
                action: CustomerAction::ReplaceImage,
                line: Some(photo.line),
                image: Some(photo.image),
            });
        }
        if self.address_changeable() {
            allowed.push(Allowed::plain(CustomerAction::ChangeAddress));
        }
        allowed
    }

    /// "allowed now: cancel, change_address" (or "nothing").
    fn allowed_now(&self) -> String {
        let names: Vec<String> = self
            .customer_actions()
            .iter()
            .map(Allowed::describe)
            .collect();
        if names.is_empty() {
            "allowed now: nothing, the order can no longer be changed".into()
        } else {
            format!("allowed now: {}", names.join(", "))
        }
    }

    fn refuse(&self, what: &str, why: String) -> ChangeRefusal {
        ChangeRefusal::NotNow {
            message: format!("cannot {what}: {why}; {}", self.allowed_now()),
            allowed: self.customer_actions(),
        }
    }

    fn keep(next: &mut Order, action: CustomerAction, by: &str, details: serde_json::Value) {
        next.changes.push(ChangeRecord {
            action,
            by: by.to_string(),
            at: next.updated_at,
            attempt: next.attempt,
            details,
        });
    }

    fn changed_event(&self, next: &Order, data: serde_json::Value) -> EventEnvelope {
        EventEnvelope::new(
            EventType::OrderChanged,
            &self.id,
            &self.tenant,
            next.updated_at,
            data,
        )
    }

    /// The customer cancels (until production starts: [`Order::cancel`]);
    /// a paid order's money still with the shop is to be refunded: a
    /// refund request, named in `OrderCancelled` (`refund_requested`).
    pub fn cancel_by_customer(
        &self,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<(Order, EventEnvelope), super::order::TransitionError> {
        let (mut next, mut event) = self.cancel(reason, now)?;
        if let Some(refund) = Order::request_refund_on_cancel(&mut next, now) {
            event.data["refund_requested"] = serde_json::to_value(refund).unwrap_or_default();
        }
        Ok((next, event))
    }

    /// Replaces image `image` (from 0) of item `line` with `with`. Until
    /// the order is rendered any photo may be replaced; a held order only
    /// the photo it is held for, which lifts the hold (a new attempt that
    /// renders again: `OrderResumed` to render). A paid order renders
    /// again (`OrderChanged` with `stage: render`); the other images'
    /// renders are kept, so only what changed is rendered.
    pub fn replace_image(
        &self,
        line: u32,
        image: u32,
        with: ItemImage,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<Changed, ChangeRefusal> {
        let Some(index) = self.items.iter().position(|i| i.line == line) else {
            let lines: Vec<String> = self.items.iter().map(|i| i.line.to_string()).collect();
            return Err(ChangeRefusal::NoSuchImage {
                message: format!(
                    "the order has no item {line}; its items: {}",
                    lines.join(", ")
                ),
            });
        };
        let item = &self.items[index];
        if image as usize >= item.images.len() {
            return Err(ChangeRefusal::NoSuchImage {
                message: format!(
                    "item {line} has {} image{} (index from 0), not an image {image}",
                    item.images.len(),
                    if item.images.len() == 1 { "" } else { "s" }
                ),
            });
        }
        let photo = PhotoRef { line, image };
        if !self.replaceable_images().contains(&photo) {
            let why = match (&self.state, &self.hold) {
                (OrderState::OnHold, Some(hold)) => match hold.photo {
                    Some(held) => format!(
                        "the order is held for item {}, image {}, not for this photo",
                        held.line, held.image
                    ),
                    None => format!("the order is held: {}", hold.reason),
                },
                (state, _) => format!(
                    "the order is {}: its photos are printed as they were rendered",
                    state.as_str()
                ),
            };
            return Err(self.refuse("replace this image", why));
        }
        if item.images[image as usize] == with {
            return Ok(Changed {
                next: None,
                events: Vec::new(),
            });
        }
        let mut next = self.successor(now);
        let item = &mut next.items[index];
        item.images[image as usize] = with;
        item.renders.retain(|r| r.image != image);
        let mut details = serde_json::json!({ "line": line, "image": image });
        let events = match (&self.state, &self.hold) {
            (OrderState::OnHold, Some(hold)) => {
                next.attempt = self.attempt + 1;
                next.state = hold.from;
                next.hold = None;
                details["stage"] = Stage::Render.as_str().into();
                details["from"] = "on_hold".into();
                Order::keep(&mut next, CustomerAction::ReplaceImage, by, details.clone());
                let mut data = details;
                data["attempt"] = next.attempt.into();
                data["action"] = CustomerAction::ReplaceImage.as_str().into();
                data["by"] = "customer".into();
                vec![EventEnvelope::new(
                    EventType::OrderResumed,
                    &self.id,
                    &self.tenant,
                    now,
                    data,
                )]
            }
            (state, _) => {
                if *state == OrderState::Paid {
                    details["stage"] = Stage::Render.as_str().into();
                }
                Order::keep(&mut next, CustomerAction::ReplaceImage, by, details.clone());
                let mut data = details;
                data["attempt"] = next.attempt.into();
                data["action"] = CustomerAction::ReplaceImage.as_str().into();
                vec![self.changed_event(&next, data)]
            }
        };
        Ok(Changed {
            next: Some(next),
            events,
        })
    }

    /// Changes the customer's contact and the shipping (address, method)
    /// to `customer` and `shipping`, parsed as at placement. Until the
    /// order is dispatched; an unpaid order is priced again (its checkout
    /// follows), a paid one is refused if its total would change.
    pub fn change_details(
        &self,
        customer: Customer,
        shipping: Shipping,
        catalog: &Catalog,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<Changed, ChangeRefusal> {
        if !self.address_changeable() {
            let why = format!(
                "the order is {}: the address goes to the plant with the jobs",
                self.state.as_str()
            );
            return Err(self.refuse("change the address", why));
        }
        let mut fields = Vec::new();
        if customer.email != self.customer.email {
            fields.push("customer.email");
        }
        if customer.phone != self.customer.phone {
            fields.push("customer.phone");
        }
        if shipping.address != self.shipping.address {
            fields.push("shipping.address");
        }
        if shipping.method != self.shipping.method {
            fields.push("shipping.method");
        }
        if fields.is_empty() {
            return Ok(Changed {
                next: None,
                events: Vec::new(),
            });
        }
        let totals = if shipping.address.country == self.shipping.address.country
            && shipping.method == self.shipping.method
        {
            self.totals.clone()
        } else {
            pricing::with_shipping(
                catalog,
                self.totals.subtotal,
                shipping.address.country,
                shipping.method,
            )
            .map_err(|e| ChangeRefusal::Invalid {
                field: "shipping",
                message: e.to_string(),
            })?
        };
        if totals != self.totals && is_paid(self) {
            return Err(ChangeRefusal::TotalWouldChange {
                message: format!(
                    "the order is paid and this change would make its total {} instead of {} \
                     (shipping {} and VAT {} instead of {} and {}): keep the country and the \
                     shipping method, or cancel the order and place it again; {}",
                    totals.total,
                    self.totals.total,
                    totals.shipping,
                    totals.vat,
                    self.totals.shipping,
                    self.totals.vat,
                    self.allowed_now()
                ),
                from: self.totals.total,
                to: totals.total,
                allowed: self.customer_actions(),
            });
        }
        let mut next = self.successor(now);
        next.customer = Customer {
            name: self.customer.name.clone(),
            ..customer
        };
        next.shipping = shipping;
        let repriced = totals != self.totals;
        next.totals = totals;
        let mut details = serde_json::json!({ "fields": fields });
        if repriced {
            details["total"] = serde_json::to_value(next.totals.total).unwrap_or_default();
        }
        Order::keep(
            &mut next,
            CustomerAction::ChangeAddress,
            by,
            details.clone(),
        );
        let mut data = details;
        data["action"] = CustomerAction::ChangeAddress.as_str().into();
        data["attempt"] = next.attempt.into();
        let event = self.changed_event(&next, data);
        Ok(Changed {
            next: Some(next),
            events: vec![event],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::catalog::ShippingMethod;
    use crate::domain::locale::CountryCode;
    use crate::domain::order::{Fit, ImageSource};
    use crate::domain::print::Unprintable;
    use crate::testing::paid_order;

    fn at() -> OffsetDateTime {
        time::macros::datetime!(2026-12-06 10:00:00 UTC)
    }

    fn photo(url: &str) -> ItemImage {
        ItemImage {
            source: ImageSource::Url { url: url.into() },
            fit: Fit::Fill,
            crop: None,
            background: None,
        }
    }

    fn names(allowed: &[Allowed]) -> Vec<String> {
        allowed.iter().map(Allowed::describe).collect()
    }

    #[test]
    fn a_paid_order_renders_again_with_the_new_photo() {
        let order = paid_order(&[("poster-30x40", 1)], "DE", at()).order;
        assert_eq!(
            names(&order.customer_actions()),
            [
                "cancel",
                "replace_image (item 1, image 0)",
                "change_address"
            ]
        );
        let changed = order
            .replace_image(1, 0, photo("https://example.com/b.jpg"), "key1", at())
            .unwrap();
        let next = changed.next.unwrap();
        assert_eq!((next.state, next.attempt), (OrderState::Paid, 1));
        assert_eq!(next.version, order.version + 1);
        assert_eq!(next.items[0].images[0], photo("https://example.com/b.jpg"));
        assert_eq!(changed.events.len(), 1);
        assert_eq!(changed.events[0].event_type, EventType::OrderChanged);
        assert_eq!(changed.events[0].data["stage"], "render");
        let record = next.changes.last().unwrap();
        assert_eq!(
            (record.action, record.by.as_str()),
            (CustomerAction::ReplaceImage, "key1")
        );
        // The same photo again changes nothing.
        let again = next
            .replace_image(1, 0, photo("https://example.com/b.jpg"), "key1", at())
            .unwrap();
        assert!(again.next.is_none() && again.events.is_empty());
    }

    #[test]
    fn a_held_photo_replaced_lifts_the_hold_and_keeps_the_other_renders() {
        let mut order = paid_order(&[("photobox-10x15", 1)], "DE", at()).order;
        let item = order.items[0].clone();
        assert!(item.images.len() > 2, "a photo box holds several photos");
        // Photo 1 was rendered before photo 2 failed.
        let first = crate::testing::rendered(&order, at()).0.items[0].renders[0].clone();
        order.items[0].renders = vec![first];
        let (held, _) = order
            .hold_unprintable(&item, 1, &Unprintable::UploadMissing, at())
            .unwrap();
        assert_eq!(
            held.hold.as_ref().unwrap().photo,
            Some(PhotoRef { line: 1, image: 1 })
        );
        assert_eq!(
            names(&held.customer_actions()),
            [
                "cancel",
                "replace_image (item 1, image 1)",
                "change_address"
            ]
        );
        let refused = held
            .replace_image(1, 0, photo("https://example.com/b.jpg"), "key1", at())
            .unwrap_err();
        assert!(
            matches!(&refused, ChangeRefusal::NotNow { message, .. }
                if message.contains("held for item 1, image 1")
                && message.contains("replace_image (item 1, image 1)")),
            "{refused}"
        );
        let changed = held
            .replace_image(1, 1, photo("https://example.com/b.jpg"), "key1", at())
            .unwrap();
        let next = changed.next.unwrap();
        assert_eq!((next.state, next.attempt), (OrderState::Paid, 2));
        assert!(next.hold.is_none());
        assert_eq!(next.items[0].renders.len(), 1, "photo 1's render is kept");
        let event = &changed.events[0];
        assert_eq!(event.event_type, EventType::OrderResumed);
        assert_eq!(crate::domain::ops::stage_of(event), Some(Stage::Render));
        assert_eq!(crate::domain::ops::attempt_of(event), 2);
    }

    #[test]
    fn a_hold_that_a_photo_cannot_fix_allows_no_replacement() {
        let order = paid_order(&[("poster-30x40", 1)], "DE", at()).order;
        let item = order.items[0].clone();
        let (held, _) = order
            .hold_unprintable(
                &item,
                0,
                &Unprintable::UnknownProduct {
                    sku: "poster-30x40".into(),
                },
                at(),
            )
            .unwrap();
        assert!(held.replaceable_images().is_empty());
        let refused = held
            .replace_image(1, 0, photo("https://example.com/b.jpg"), "k", at())
            .unwrap_err();
        assert!(matches!(refused, ChangeRefusal::NotNow { .. }), "{refused}");
    }

    #[test]
    fn a_rendered_order_keeps_its_photos_and_names_what_is_allowed() {
        let order = paid_order(&[("poster-30x40", 1)], "DE", at()).order;
        let rendered = crate::testing::rendered(&order, at()).0;
        let refused = rendered
            .replace_image(1, 0, photo("https://example.com/b.jpg"), "k", at())
            .unwrap_err();
        match refused {
            ChangeRefusal::NotNow { message, allowed } => {
                assert!(
                    message.contains("allowed now: cancel, change_address"),
                    "{message}"
                );
                assert_eq!(names(&allowed), ["cancel", "change_address"]);
            }
            other => panic!("{other:?}"),
        }
        let missing = rendered
            .replace_image(3, 0, photo("https://example.com/b.jpg"), "k", at())
            .unwrap_err();
        assert!(matches!(missing, ChangeRefusal::NoSuchImage { .. }));
        let missing = rendered
            .replace_image(1, 1, photo("https://example.com/b.jpg"), "k", at())
            .unwrap_err();
        assert!(matches!(missing, ChangeRefusal::NoSuchImage { .. }));
    }

    #[test]
    fn a_paid_order_keeps_its_total() {
        let order = paid_order(&[("poster-30x40", 1)], "DE", at()).order;
        let mut address = order.shipping.address.clone();
        address.line1 = "Neue Straße 5".into();
        let same_country = Shipping {
            method: order.shipping.method,
            address: address.clone(),
        };
        let changed = order
            .change_details(
                order.customer.clone(),
                same_country,
                Catalog::builtin(),
                "k",
                at(),
            )
            .unwrap();
        let next = changed.next.unwrap();
        assert_eq!(next.shipping.address.line1, "Neue Straße 5");
        assert_eq!(next.totals, order.totals);
        assert_eq!(
            changed.events[0].data["fields"],
            serde_json::json!(["shipping.address"])
        );
        assert!(
            !changed.events[0].data.to_string().contains("Neue"),
            "no address in events"
        );
        // Another method costs another price: refused for a paid order.
        let express = Shipping {
            method: ShippingMethod::Express,
            address,
        };
        let refused = order
            .change_details(
                order.customer.clone(),
                express,
                Catalog::builtin(),
                "k",
                at(),
            )
            .unwrap_err();
        match refused {
            ChangeRefusal::TotalWouldChange {
                from, to, message, ..
            } => {
                assert_eq!(from, order.totals.total);
                assert!(to.amount > from.amount, "express costs more");
                assert!(message.contains("allowed now: cancel"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unpaid_order_is_priced_again_for_its_new_country() {
        let mut order = paid_order(&[("poster-30x40", 1)], "DE", at()).order;
        order.state = OrderState::Placed;
        let mut address = order.shipping.address.clone();
        address.country = CountryCode::parse("FR").unwrap();
        address.postal_code = "75001".into();
        let shipping = Shipping {
            method: order.shipping.method,
            address,
        };
        let changed = order
            .change_details(
                order.customer.clone(),
                shipping,
                Catalog::builtin(),
                "k",
                at(),
            )
            .unwrap();
        let next = changed.next.unwrap();
        assert_eq!(next.totals.subtotal, order.totals.subtotal);
        assert_ne!(next.totals.vat_rate_bp, order.totals.vat_rate_bp);
        assert_eq!(
            next.totals.total.amount,
            next.totals.subtotal.amount + next.totals.shipping.amount + next.totals.vat.amount
        );
    }

    #[test]
    fn a_dispatched_order_keeps_its_address() {
        let order = paid_order(&[("poster-30x40", 1)], "DE", at()).order;
        let mut dispatched = crate::testing::rendered(&order, at()).0;
        dispatched.state = OrderState::Dispatched;
        assert!(dispatched.customer_actions().is_empty());
        let refused = dispatched
            .change_details(
                dispatched.customer.clone(),
                dispatched.shipping.clone(),
                Catalog::builtin(),
                "k",
                at(),
            )
            .unwrap_err();
        assert!(
            matches!(&refused, ChangeRefusal::NotNow { message, allowed }
                if allowed.is_empty() && message.contains("can no longer be changed")),
            "{refused}"
        );
    }
}
