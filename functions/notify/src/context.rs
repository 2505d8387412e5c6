//! What a template is given: [`MessageContext`] (the brand, the languages,
//! the order and the event a message is about) and the view built from
//! it, the only values a template can show. Money, percentages and dates
//! in it are already formatted for the language and ship-to country
//! ([`crate::format`]). Event data is read defensively: a missing or odd
//! field gives the generic text, never an error.

use crate::brands::Brand;
use crate::catalogs::HOLD_CODES;
use crate::format;
use printworks::domain::events::EventEnvelope;
use printworks::domain::locale::Locale;
use printworks::domain::money::Money;
use printworks::domain::notify::Template;
use printworks::domain::order::{Order, OrderId};
use serde::{Deserialize, Serialize};

/// What a message is about and for whom.
#[derive(Debug, Clone, Copy)]
pub struct MessageContext<'a> {
    pub brand: &'a Brand,
    /// The order's locale.
    pub language: Locale,
    /// The tenant's default locale (lenient mode's first fallback).
    pub fallback: Locale,
    pub order: &'a Order,
    pub event: &'a EventEnvelope,
}

/// The number customers see: the last 8 hex digits of the order id,
/// upper-cased (`ord_...8f90a1b2` -> `8F90A1B2`).
pub fn short_order_number(id: &OrderId) -> String {
    let hex = id.as_str().strip_prefix("ord_").unwrap_or(id.as_str());
    let start = hex.len().saturating_sub(8);
    hex.get(start..).unwrap_or(hex).to_ascii_uppercase()
}

/// The template context; [`crate::templates`] lists its fields.
#[derive(Serialize)]
pub(crate) struct View<'a> {
    lang: &'static str,
    fallback_lang: &'static str,
    colon: &'static str,
    brand: &'a Brand,
    ink: Ink,
    customer: CustomerView<'a>,
    order: OrderView<'a>,
    hold: HoldView,
    shipments: Vec<ShipmentView>,
    sms_tracking: Option<String>,
    cancel: CancelView,
    refund: RefundView,
    resumed: ResumedView,
}

/// Why the order goes on again: a released hold, or a reprint.
#[derive(Serialize, Default)]
struct ResumedView {
    key: &'static str,
}

#[derive(Serialize)]
struct Ink {
    on_primary: &'static str,
    on_accent: &'static str,
}

#[derive(Serialize)]
struct CustomerView<'a> {
    name: &'a str,
    first_name: &'a str,
}

#[derive(Serialize)]
struct OrderView<'a> {
    id: &'a str,
    number: String,
    date: String,
    reference: Option<&'a str>,
    items: Vec<ItemView<'a>>,
    subtotal: String,
    shipping: String,
    vat: String,
    vat_rate: String,
    total: String,
    ship_to: AddressView,
    pay_url: String,
}

#[derive(Serialize)]
struct ItemView<'a> {
    name: &'a str,
    quantity: u32,
    total: String,
}

#[derive(Serialize)]
struct AddressView {
    lines: Vec<String>,
    /// The catalog key of the country's name.
    country: String,
}

#[derive(Serialize, Default)]
struct HoldView {
    key: String,
    item: Option<String>,
    /// The storefront page where the customer replaces the photo, when a
    /// new photo lifts the hold.
    fix_url: Option<String>,
}

#[derive(Serialize)]
struct ShipmentView {
    carrier: String,
    tracking: String,
    url: Option<String>,
}

#[derive(Serialize, Default)]
struct CancelView {
    key: &'static str,
}

#[derive(Serialize, Default)]
struct RefundView {
    amount: Option<String>,
    /// The refunded total, when it differs from `amount`.
    refunded: Option<String>,
    kind: Option<&'static str>,
}

/// At most this many shipments are listed (event data comes from plants).
const MAX_SHIPMENTS: usize = 20;

/// A string from outside, made fit to show: trimmed, without control
/// characters, at most `max` characters.
fn clean(raw: &str, max: usize) -> String {
    raw.trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect()
}

/// `#ffffff` or `#111111`, whichever reads better on `background`
/// (WCAG contrast).
fn readable_on(background: &str) -> &'static str {
    let channel = |i: usize| {
        background
            .get(i..i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .map_or(0.0, |v| {
                let c = f64::from(v) / 255.0;
                if c <= 0.03928 {
                    c / 12.92
                } else {
                    ((c + 0.055) / 1.055).powf(2.4)
                }
            })
    };
    let luminance = 0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5);
    let on_white = 1.05 / (luminance + 0.05);
    let on_black = (luminance + 0.05) / 0.05;
    if on_white >= on_black {
        "#ffffff"
    } else {
        "#111111"
    }
}

impl<'a> View<'a> {
    pub(crate) fn new(template: Template, ctx: &MessageContext<'a>) -> View<'a> {
        let order = ctx.order;
        let lang = ctx.language;
        let data = &ctx.event.data;
        let country = order.shipping.address.country;
        let money = |m: Money| format::money(m, lang, country);
        let address = &order.shipping.address;
        let mut lines = vec![address.name.clone()];
        lines.extend(address.company.clone());
        lines.push(address.line1.clone());
        lines.extend(address.line2.clone());
        lines.push(format!("{} {}", address.postal_code, address.city));
        let customer_name = order.customer.name.as_str();
        let mut view = View {
            lang: lang.code(),
            fallback_lang: ctx.fallback.code(),
            colon: if lang == Locale::Fr { "\u{a0}:" } else { ":" },
            brand: ctx.brand,
            ink: Ink {
                on_primary: readable_on(&ctx.brand.colors.primary),
                on_accent: readable_on(&ctx.brand.colors.accent),
            },
            customer: CustomerView {
                name: customer_name,
                first_name: customer_name
                    .split_whitespace()
                    .next()
                    .unwrap_or(customer_name),
            },
            order: OrderView {
                id: order.id.as_str(),
                number: short_order_number(&order.id),
                date: format::date(format::customer_date(order.created_at), lang),
                reference: order.reference.as_deref(),
                items: order
                    .items
                    .iter()
                    .map(|item| ItemView {
                        name: &item.name,
                        quantity: item.quantity,
                        total: money(item.line_total),
                    })
                    .collect(),
                subtotal: money(order.totals.subtotal),
                shipping: money(order.totals.shipping),
                vat: money(order.totals.vat),
                vat_rate: format::percent_bp(order.totals.vat_rate_bp, lang),
                total: money(order.totals.total),
                ship_to: AddressView {
                    lines,
                    country: format!("country.{}", country.code()),
                },
                pay_url: format!("{}/orders/{}/pay", ctx.brand.website, order.id),
            },
            hold: HoldView::default(),
            shipments: Vec::new(),
            sms_tracking: None,
            cancel: CancelView::default(),
            refund: RefundView::default(),
            resumed: ResumedView::default(),
        };
        match template {
            Template::OrderOnHold => {
                let code = data.pointer("/details/code").and_then(|v| v.as_str());
                let key = match code {
                    Some(code) if HOLD_CODES.contains(&code) => format!("hold.{code}"),
                    _ => "hold.other".to_string(),
                };
                let item = data
                    .pointer("/details/line")
                    .and_then(|v| v.as_u64())
                    .and_then(|line| order.items.iter().find(|i| u64::from(i.line) == line))
                    .map(|i| i.name.clone());
                let photo = data.pointer("/details/photo");
                let fix_url = photo
                    .and_then(|p| Some((p.get("line")?.as_u64()?, p.get("image")?.as_u64()?)))
                    .and_then(|(line, image)| {
                        Some((u32::try_from(line).ok()?, u32::try_from(image).ok()?))
                    })
                    .map(|(line, image)| ctx.brand.fix_photo_link(order.id.as_str(), line, image));
                view.hold = HoldView { key, item, fix_url };
            }
            Template::OrderShipped => {
                view.shipments = data
                    .get("shipments")
                    .and_then(|v| v.as_array())
                    .map(|list| {
                        list.iter()
                            .filter_map(|s| {
                                let carrier = clean(s.get("carrier")?.as_str()?, 60);
                                let tracking = clean(s.get("tracking")?.as_str()?, 80);
                                (!carrier.is_empty() && !tracking.is_empty()).then(|| {
                                    ShipmentView {
                                        url: format::tracking_url(&carrier, &tracking),
                                        carrier,
                                        tracking,
                                    }
                                })
                            })
                            .take(MAX_SHIPMENTS)
                            .collect()
                    })
                    .unwrap_or_default();
                view.sms_tracking =
                    view.shipments
                        .iter()
                        .find_map(|s| s.url.clone())
                        .or_else(|| {
                            view.shipments
                                .first()
                                .map(|s| format!("{} {}", s.carrier, s.tracking))
                        });
            }
            Template::OrderCancelled => {
                let reason = data
                    .get("reason")
                    .and_then(|v| v.as_str())
                    .or(order.cancel_reason.as_deref());
                let by_shop = data.get("by").and_then(|v| v.as_str()) == Some("operator");
                view.cancel.key = match reason {
                    Some("refunded") => "cancel.refunded",
                    Some("chargeback") => "cancel.chargeback",
                    // An operator's reason is the shop's own note, never
                    // shown to the customer.
                    _ if by_shop => "cancel.shop",
                    _ => "cancel.customer",
                };
            }
            Template::PaymentRefunded => {
                let read = |field: &str| data.get(field).and_then(|v| Money::deserialize(v).ok());
                let amount = read("amount");
                let refunded = read("refunded").filter(|r| Some(*r) != amount);
                view.refund = RefundView {
                    amount: amount.map(money),
                    refunded: amount.and(refunded).map(money),
                    kind: match data.get("full").and_then(|v| v.as_bool()) {
                        Some(true) => Some("full"),
                        Some(false) => Some("partial"),
                        None => None,
                    },
                };
            }
            Template::OrderResumed => {
                let reprint = data.get("action").and_then(|v| v.as_str()) == Some("reprint");
                view.resumed.key = if reprint {
                    "order_resumed.reprint"
                } else {
                    "order_resumed.intro"
                };
            }
            Template::OrderPlaced
            | Template::OrderPaid
            | Template::PaymentFailed
            | Template::PaymentActionRequired => {}
        }
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_numbers_and_readable_colours() {
        let id = OrderId::parse("ord_0192f1f0a0b07c3e9d2a4b5c6d7e8f90").expect("an order id");
        assert_eq!(short_order_number(&id), "6D7E8F90");
        assert_eq!(readable_on("#1f2a44"), "#ffffff");
        assert_eq!(readable_on("#edf2f4"), "#111111");
        assert_eq!(readable_on("#d98e04"), "#111111");
        assert_eq!(readable_on("#d90429"), "#ffffff");
        assert_eq!(readable_on("#ffd166"), "#111111");
    }
}
