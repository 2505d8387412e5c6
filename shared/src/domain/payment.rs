//! Payments of B2C orders: the checkout a storefront starts, and what a
//! payment provider's notification does to an order.
//!
//! A notification is applied to the order's [`PaymentLedger`]: amounts
//! authorized, captured, refunded and charged back. The ledger only grows
//! (amounts are maxima or sums of distinct events), so the end state does not
//! depend on the order in which a provider delivers its events: a capture
//! that arrives before its authorization pays the order, and the late
//! authorization changes nothing. Which events were already applied is kept
//! by the store (one record per provider event id, written in the same
//! transaction as the order), not here.

use super::events::{EventEnvelope, EventType};
use super::money::Money;
use super::order::{Order, OrderId};
use super::state::OrderState;
use super::tenant::{PaymentSetup, TenantId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The payment providers printworks can take webhooks from.
pub const PROVIDERS: &[&str] = &["stripe", "adyen"];

pub fn provider_known(name: &str) -> bool {
    PROVIDERS.contains(&name)
}

/// Our reference for an order at the provider: `{tenant}:{order id}`
/// (Stripe `metadata.order_reference`, Adyen `merchantReference`; at most
/// 77 characters, inside Adyen's 80).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PaymentReference {
    pub tenant: TenantId,
    pub order: OrderId,
}

impl PaymentReference {
    pub fn of(order: &Order) -> PaymentReference {
        PaymentReference {
            tenant: order.tenant.clone(),
            order: order.id.clone(),
        }
    }

    pub fn parse(raw: &str) -> Option<PaymentReference> {
        let (tenant, order) = raw.split_once(':')?;
        Some(PaymentReference {
            tenant: TenantId::parse(tenant).ok()?,
            order: OrderId::parse(order)?,
        })
    }
}

impl std::fmt::Display for PaymentReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.tenant, self.order)
    }
}

/// What a storefront needs to start the provider's payment for an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkout {
    pub provider: String,
    /// Minor units, as both providers take it.
    pub amount: i64,
    pub currency: String,
    /// Our order reference, to be passed to the provider as `field`.
    pub reference: String,
    /// Where the provider must carry `reference` so its webhooks find the order.
    pub field: String,
}

impl Order {
    /// The checkout of an unpaid order of a provider-paying tenant.
    pub fn checkout(&self) -> Option<Checkout> {
        let PaymentSetup::Provider { provider, .. } = &self.payment else {
            return None;
        };
        if self.state != OrderState::Placed {
            return None;
        }
        let field = match provider.as_str() {
            "stripe" => "payment_intent.metadata.order_reference",
            "adyen" => "merchantReference",
            _ => "reference",
        };
        Some(Checkout {
            provider: provider.clone(),
            amount: self.totals.total.amount,
            currency: self.totals.total.currency.code().to_string(),
            reference: PaymentReference::of(self).to_string(),
            field: field.to_string(),
        })
    }
}

/// What a provider's event means for us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentEventKind {
    Authorized,
    Captured,
    Failed,
    /// The customer must complete 3-D Secure (or another action).
    ActionRequired,
    /// `amount` is this refund alone.
    Refunded,
    /// `amount` is everything refunded on the payment so far (Stripe's
    /// `charge.refunded` carries `amount_refunded`).
    RefundedTotal,
    Chargeback,
    /// A type we do not act on; acknowledged and logged.
    Unknown,
}

/// An amount as the provider sent it: the currency is not ours to parse yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderAmount {
    pub value: i64,
    /// ISO 4217, upper case.
    pub currency: String,
}

/// One verified provider event, in our terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentNotification {
    pub provider: String,
    /// Unique per provider event; duplicates carry the same id.
    pub event_id: String,
    /// The provider's own name for it (`payment_intent.succeeded`, `CAPTURE`).
    pub event_type: String,
    pub kind: PaymentEventKind,
    /// Our reference as the provider echoed it, if the event carries one.
    pub reference: Option<String>,
    /// The provider's id of the payment (PaymentIntent, pspReference).
    pub payment_id: Option<String>,
    pub amount: Option<ProviderAmount>,
    /// Why a payment failed, as the provider said it.
    pub reason: Option<String>,
    /// The merchant account the event was verified for (Stripe: the
    /// account of the endpoint secret that signed it, `None` for the shared
    /// one; Adyen: the item's `merchantAccountCode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_account: Option<String>,
}

impl PaymentNotification {
    /// Whether the event may move an order whose tenant is bound to
    /// `bound` (`None`: the shop's shared account). Stripe's shared secrets
    /// move only unbound tenants' orders, an account's secret only its
    /// tenants'; an Adyen item moves a bound tenant's orders only with its
    /// `merchantAccountCode` (an unbound tenant takes any of the company's).
    pub fn may_move(&self, bound: Option<&str>) -> bool {
        match bound {
            Some(account) => self.merchant_account.as_deref() == Some(account),
            None => self.provider == "adyen" || self.merchant_account.is_none(),
        }
    }
}

/// Where the money of an order stands. Amounts are minor units of the
/// order's currency.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentLedger {
    pub status: PaymentStatus,
    #[serde(default)]
    pub authorized: i64,
    #[serde(default)]
    pub captured: i64,
    #[serde(default)]
    pub refunded: i64,
    #[serde(default)]
    pub charged_back: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    /// The last failed or pending attempt's reason, while nothing is authorized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    /// Events that did not fit the order (wrong amount, money for a
    /// cancelled order): for a person to look at.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<PaymentFlag>,
    /// One entry per payment the provider told us of (by its id), the
    /// order's own and any other: a second payment is never folded into
    /// the first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub payments: Vec<PaymentEntry>,
    /// Money to give back (a second payment, a paid order cancelled), open
    /// until the provider's refund webhook settles it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refund_requests: Vec<RefundRequest>,
}

/// One payment at the provider (a PaymentIntent, a pspReference).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentEntry {
    pub payment_id: String,
    pub provider: String,
    #[serde(default)]
    pub authorized: i64,
    #[serde(default)]
    pub captured: i64,
    #[serde(default)]
    pub refunded: i64,
    #[serde(default)]
    pub charged_back: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    /// Not the order's payment: money paid a second time.
    #[serde(default)]
    pub duplicate: bool,
}

/// Why money must go back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundReason {
    /// A second payment for an order paid already.
    DuplicatePayment,
    /// A paid order was cancelled (by the customer or an operator).
    OrderCancelled,
}

impl RefundReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundReason::DuplicatePayment => "duplicate_payment",
            RefundReason::OrderCancelled => "order_cancelled",
        }
    }
}

/// A refund the shop owes: open until the provider's refund webhook for
/// its payment reaches the amount (`settled_at`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequest {
    /// The payment to refund (the provider's id), if the provider named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    /// Minor units of the order's currency.
    pub amount: i64,
    /// What the payment had refunded when the request was raised: the
    /// request is settled once refunds beyond it reach `amount`.
    #[serde(default)]
    pub refunded_before: i64,
    pub reason: RefundReason,
    #[serde(with = "time::serde::rfc3339")]
    pub raised_at: OffsetDateTime,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub settled_at: Option<OffsetDateTime>,
}

impl RefundRequest {
    pub fn is_open(&self) -> bool {
        self.settled_at.is_none()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    #[default]
    Pending,
    ActionRequired,
    Failed,
    Authorized,
    Captured,
    PartiallyRefunded,
    Refunded,
    ChargedBack,
}

/// A provider event that did not fit the order, for a person: open until
/// an operator resolves it with a note. Flags are numbered from 1 in the
/// order they were raised (`flags[n - 1]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFlag {
    pub event_id: String,
    pub code: String,
    pub message: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<FlagResolution>,
}

/// Who resolved a flag, when, and what they did about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagResolution {
    pub operator: String,
    pub note: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

impl PaymentFlag {
    pub fn is_open(&self) -> bool {
        self.resolved.is_none()
    }
}

impl Order {
    /// Whether the order needs a person: an open payment flag or refund
    /// request, or it is stuck ([`Order::is_stuck`]). The stores index such
    /// orders (`printworks ops flags`, `printworks ops stuck`).
    pub fn needs_attention(&self) -> bool {
        self.money_needs_attention() || self.is_stuck()
    }

    /// Whether the order's money needs a person: an open flag or an open
    /// refund request.
    pub fn money_needs_attention(&self) -> bool {
        self.payment_status.as_ref().is_some_and(|l| {
            l.flags.iter().any(PaymentFlag::is_open) || l.open_refunds().next().is_some()
        })
    }
}

impl PaymentLedger {
    /// The status the amounts (and the last attempt) say.
    fn derive_status(&self, total: i64, attempt: Option<PaymentStatus>) -> PaymentStatus {
        if self.charged_back > 0 {
            PaymentStatus::ChargedBack
        } else if self.refunded > 0 && self.refunded >= total {
            PaymentStatus::Refunded
        } else if self.refunded > 0 {
            PaymentStatus::PartiallyRefunded
        } else if self.captured > 0 {
            PaymentStatus::Captured
        } else if self.authorized > 0 {
            PaymentStatus::Authorized
        } else {
            attempt.unwrap_or(self.status)
        }
    }

    fn money_moved(&self) -> bool {
        self.authorized > 0 || self.captured > 0
    }

    /// The entry of payment `id`, made on first sight.
    fn entry(&mut self, id: &str, provider: &str, now: OffsetDateTime) -> &mut PaymentEntry {
        let at = match self.payments.iter().position(|p| p.payment_id == id) {
            Some(at) => at,
            None => {
                self.payments.push(PaymentEntry {
                    payment_id: id.to_string(),
                    provider: provider.to_string(),
                    authorized: 0,
                    captured: 0,
                    refunded: 0,
                    charged_back: 0,
                    first_seen: now,
                    duplicate: false,
                });
                self.payments.len() - 1
            }
        };
        &mut self.payments[at]
    }

    /// Settles the open requests of payment `id` (or of no payment id)
    /// that its refunds since each was raised cover; `refunded` is all the
    /// payment refunded so far.
    fn settle(&mut self, id: Option<&str>, refunded: i64, now: OffsetDateTime) {
        for request in &mut self.refund_requests {
            if request.payment_id.as_deref() != id && request.payment_id.is_some() {
                continue;
            }
            if request.is_open() && refunded - request.refunded_before >= request.amount {
                request.settled_at = Some(now);
            }
        }
    }

    /// The money of the order's own payment still with the shop: what a
    /// cancellation must give back.
    pub fn owed_back(&self) -> i64 {
        (self.captured - self.refunded - self.charged_back).max(0)
    }

    /// The refund requests still open.
    pub fn open_refunds(&self) -> impl Iterator<Item = &RefundRequest> {
        self.refund_requests.iter().filter(|r| r.is_open())
    }
}

/// What applying a notification did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentOutcome {
    /// The order (or its ledger) changed.
    Applied,
    /// Nothing to change: e.g. an authorization after the capture.
    NoChange,
    /// Recorded on the order for a person, not applied (amount mismatch, ...).
    Flagged(&'static str),
    /// A type we do not act on.
    Ignored,
    /// Authentic but not this order's to take (another merchant account):
    /// recorded with the event only, the order untouched.
    Refused(&'static str),
}

impl PaymentOutcome {
    pub fn code(&self) -> &'static str {
        match self {
            PaymentOutcome::Applied => "applied",
            PaymentOutcome::NoChange => "no_change",
            PaymentOutcome::Flagged(code) | PaymentOutcome::Refused(code) => code,
            PaymentOutcome::Ignored => "ignored",
        }
    }
}

/// The order to write (if anything changed), the events that announce it,
/// and the outcome to record with the provider event.
#[derive(Debug, Clone)]
pub struct PaymentDecision {
    pub next: Option<Order>,
    pub events: Vec<EventEnvelope>,
    pub outcome: PaymentOutcome,
}

impl PaymentDecision {
    fn unchanged(outcome: PaymentOutcome) -> PaymentDecision {
        PaymentDecision {
            next: None,
            events: Vec::new(),
            outcome,
        }
    }
}

impl Order {
    /// Applies one provider event to this order.
    ///
    /// - a capture of exactly the order's total pays a placed order
    ///   (`OrderPaid`); any other amount or currency is flagged, not paid;
    /// - a failure or a 3-D Secure request, while nothing is authorized,
    ///   tells the customer (`PaymentFailed`, `PaymentActionRequired`);
    /// - every refund is announced (`PaymentRefunded`); once the refunds
    ///   reach the total, or on a chargeback, the order is cancelled
    ///   (`OrderCancelled`) if production has not started, and put on hold
    ///   (`OrderOnHold`) if it has; a shipped (or already held) order only
    ///   gets a flag for a person.
    ///
    /// Every flag raised is announced to operators (`PaymentFlagged`).
    pub fn apply_payment(
        &self,
        event: &PaymentNotification,
        now: OffsetDateTime,
    ) -> PaymentDecision {
        let mut decision = self.decide_payment(event, now);
        let had = self.payment_status.as_ref().map_or(0, |l| l.flags.len());
        if let Some(next) = &decision.next
            && let Some(ledger) = &next.payment_status
        {
            for (n, flag) in ledger.flags.iter().enumerate().skip(had) {
                decision.events.push(self.event(
                    EventType::PaymentFlagged,
                    now,
                    serde_json::json!({
                        "flag": n + 1,
                        "code": flag.code,
                        "message": flag.message,
                        "provider_event": flag.event_id,
                    }),
                ));
            }
        }
        decision
    }

    fn decide_payment(&self, event: &PaymentNotification, now: OffsetDateTime) -> PaymentDecision {
        if event.kind == PaymentEventKind::Unknown {
            return PaymentDecision::unchanged(PaymentOutcome::Ignored);
        }
        let mut next = self.successor(now);
        let ledger = next
            .payment_status
            .get_or_insert_with(PaymentLedger::default);
        if ledger.payment_id.is_none() {
            ledger.payment_id.clone_from(&event.payment_id);
        }
        let total = self.totals.total;
        let flagged = |mut next: Order, code: &'static str, message: String| {
            push_flag(&mut next, event, code, message, now);
            PaymentDecision {
                next: Some(next),
                events: Vec::new(),
                outcome: PaymentOutcome::Flagged(code),
            }
        };

        match &self.payment {
            PaymentSetup::Provider {
                provider,
                merchant_account,
            } if *provider == event.provider => {
                if !event.may_move(merchant_account.as_deref()) {
                    // Authentic, but for another merchant account: it
                    // moves nothing of this tenant's (the event's record
                    // says so).
                    tracing::warn!(
                        order = %self.id,
                        event_id = %event.event_id,
                        "a payment event of another merchant account"
                    );
                    return PaymentDecision::unchanged(PaymentOutcome::Refused(
                        "merchant_mismatch",
                    ));
                }
            }
            PaymentSetup::Provider { provider, .. } => {
                let message = format!(
                    "a {} event for an order paid through {provider}",
                    event.provider
                );
                return flagged(next, "provider_mismatch", message);
            }
            PaymentSetup::Invoice => {
                let message = format!("a {} event for an invoice order", event.provider);
                return flagged(next, "not_provider_paid", message);
            }
        }

        // Every kind that moves money must carry our currency.
        let amount = match (&event.amount, event.kind) {
            (_, PaymentEventKind::Failed | PaymentEventKind::ActionRequired) => 0,
            (Some(a), _) if a.value < 0 => {
                let message = format!("a negative amount ({})", a.value);
                return flagged(next, "amount_invalid", message);
            }
            (Some(a), _) if a.currency == total.currency.code() => a.value,
            (Some(a), _) => {
                let message = format!(
                    "{} {} does not match the order's {}",
                    a.value, a.currency, total.currency
                );
                return flagged(next, "currency_mismatch", message);
            }
            (None, _) => {
                return flagged(next, "amount_missing", "the event carries no amount".into());
            }
        };

        let before = self.payment_status.clone().unwrap_or_default();
        // Another payment than the order's: a second payment if the
        // order's has moved money; else (an earlier attempt failed) it
        // becomes the order's payment.
        if let (Some(id), Some(primary)) = (&event.payment_id, &before.payment_id)
            && id != primary
        {
            let primary_moved = before.money_moved();
            let moves = matches!(
                event.kind,
                PaymentEventKind::Authorized | PaymentEventKind::Captured
            ) && amount > 0;
            if primary_moved {
                return self.apply_other_payment(next, event, id, amount, before, now);
            }
            if moves {
                let ledger = next.payment_status.get_or_insert_with(Default::default);
                ledger.payment_id = Some(id.clone());
            }
        }
        if let Some(id) = &event.payment_id {
            let ledger = next.payment_status.get_or_insert_with(Default::default);
            let entry = ledger.entry(id, &event.provider, now);
            match event.kind {
                PaymentEventKind::Authorized => {
                    entry.authorized = entry.authorized.max(amount);
                }
                PaymentEventKind::Captured => {
                    entry.captured = entry.captured.max(amount);
                    entry.authorized = entry.authorized.max(amount);
                }
                PaymentEventKind::Refunded => {
                    entry.refunded = entry.refunded.saturating_add(amount)
                }
                PaymentEventKind::RefundedTotal => entry.refunded = entry.refunded.max(amount),
                PaymentEventKind::Chargeback => {
                    entry.charged_back = entry.charged_back.max(amount.max(1));
                }
                _ => {}
            }
        }
        let mut events = Vec::new();
        let mut attempt = None;
        let mut outcome = PaymentOutcome::Applied;
        match event.kind {
            PaymentEventKind::Unknown => unreachable!("returned above"),
            // Nothing (more) capturable: no news for the order.
            PaymentEventKind::Authorized if amount == 0 => {}
            PaymentEventKind::Authorized | PaymentEventKind::Captured if amount != total.amount => {
                let message = format!(
                    "{} of {} {} does not match the order total {}",
                    event.event_type, amount, total.currency, total.amount
                );
                return flagged(next, "amount_mismatch", message);
            }
            PaymentEventKind::Authorized => {
                let ledger = next.payment_status.get_or_insert_with(Default::default);
                ledger.authorized = ledger.authorized.max(amount);
            }
            PaymentEventKind::Captured => {
                let ledger = next.payment_status.get_or_insert_with(Default::default);
                ledger.captured = ledger.captured.max(amount);
                ledger.authorized = ledger.authorized.max(amount);
                match self.state {
                    OrderState::Placed => {
                        next.state = OrderState::Paid;
                        events.push(self.event(
                            EventType::OrderPaid,
                            now,
                            serde_json::json!({
                                "amount": total,
                                "vat": self.totals.vat,
                                "method": "provider",
                                "provider": event.provider,
                                "payment_id": event.payment_id,
                            }),
                        ));
                    }
                    OrderState::Cancelled if before.refunded < amount => {
                        return flagged(
                            next,
                            "captured_after_cancel",
                            "money was captured for a cancelled order; refund it".into(),
                        );
                    }
                    _ => {}
                }
            }
            PaymentEventKind::Failed | PaymentEventKind::ActionRequired => {
                if !before.money_moved() && self.state == OrderState::Placed {
                    let (status, event_type) = if event.kind == PaymentEventKind::Failed {
                        (PaymentStatus::Failed, EventType::PaymentFailed)
                    } else {
                        (
                            PaymentStatus::ActionRequired,
                            EventType::PaymentActionRequired,
                        )
                    };
                    attempt = Some(status);
                    let ledger = next.payment_status.get_or_insert_with(Default::default);
                    ledger.last_failure.clone_from(&event.reason);
                    events.push(self.event(
                        event_type,
                        now,
                        serde_json::json!({
                            "provider": event.provider,
                            "reason": event.reason,
                            "checkout": self.checkout(),
                        }),
                    ));
                }
            }
            PaymentEventKind::Refunded | PaymentEventKind::RefundedTotal => {
                let ledger = next.payment_status.get_or_insert_with(Default::default);
                ledger.refunded = if event.kind == PaymentEventKind::Refunded {
                    ledger.refunded.saturating_add(amount)
                } else {
                    ledger.refunded.max(amount)
                };
                let refunded = ledger.refunded;
                let primary = ledger.payment_id.clone();
                ledger.settle(primary.as_deref(), refunded, now);
                if refunded > before.refunded {
                    events.push(self.event(
                        EventType::PaymentRefunded,
                        now,
                        serde_json::json!({
                            "amount": Money::new(refunded - before.refunded, total.currency),
                            "refunded": Money::new(refunded, total.currency),
                            "full": refunded >= total.amount,
                        }),
                    ));
                }
                if refunded >= total.amount && before.refunded < total.amount {
                    if let Some(decision) =
                        self.stop_for_money_back(next.clone(), events.clone(), "refunded", now)
                    {
                        return decision;
                    }
                    push_flag(
                        &mut next,
                        event,
                        "refund_needs_review",
                        format!(
                            "the payment was refunded while the order is {}",
                            self.state.as_str()
                        ),
                        now,
                    );
                    outcome = PaymentOutcome::Flagged("refund_needs_review");
                }
            }
            PaymentEventKind::Chargeback => {
                let ledger = next.payment_status.get_or_insert_with(Default::default);
                ledger.charged_back = ledger.charged_back.max(amount.max(1));
                if before.charged_back == 0 {
                    if let Some(decision) =
                        self.stop_for_money_back(next.clone(), events.clone(), "chargeback", now)
                    {
                        return decision;
                    }
                    push_flag(
                        &mut next,
                        event,
                        "chargeback_needs_review",
                        format!(
                            "the customer disputed the payment while the order is {}",
                            self.state.as_str()
                        ),
                        now,
                    );
                    outcome = PaymentOutcome::Flagged("chargeback_needs_review");
                }
            }
        }
        let ledger = next.payment_status.get_or_insert_with(Default::default);
        ledger.status = ledger.derive_status(total.amount, attempt);
        if next.payment_status.as_ref() == Some(&before) && next.state == self.state {
            return PaymentDecision::unchanged(PaymentOutcome::NoChange);
        }
        PaymentDecision {
            next: Some(next),
            events,
            outcome,
        }
    }

    /// An event of a payment that is not the order's own (`id`), while
    /// the order's has moved money: a second payment. Its money is kept
    /// in its own entry, never counted as the order's; the first sight of
    /// its money flags `duplicate_payment`, and its capture raises a
    /// refund request, which its refunds settle. The order's state does
    /// not change.
    fn apply_other_payment(
        &self,
        mut next: Order,
        event: &PaymentNotification,
        id: &str,
        amount: i64,
        before: PaymentLedger,
        now: OffsetDateTime,
    ) -> PaymentDecision {
        let currency = self.totals.total.currency;
        let primary = before.payment_id.clone().unwrap_or_default();
        let ledger = next.payment_status.get_or_insert_with(Default::default);
        let entry = ledger.entry(id, &event.provider, now);
        entry.duplicate = true;
        let was = entry.clone();
        match event.kind {
            PaymentEventKind::Authorized => entry.authorized = entry.authorized.max(amount),
            PaymentEventKind::Captured => {
                entry.captured = entry.captured.max(amount);
                entry.authorized = entry.authorized.max(amount);
            }
            PaymentEventKind::Refunded => entry.refunded = entry.refunded.saturating_add(amount),
            PaymentEventKind::RefundedTotal => entry.refunded = entry.refunded.max(amount),
            PaymentEventKind::Chargeback => {
                entry.charged_back = entry.charged_back.max(amount.max(1));
            }
            PaymentEventKind::Failed
            | PaymentEventKind::ActionRequired
            | PaymentEventKind::Unknown => {}
        }
        let entry = entry.clone();
        let mut events = Vec::new();
        let mut outcome = PaymentOutcome::Applied;
        let moved = |e: &PaymentEntry| e.authorized > 0 || e.captured > 0;
        if moved(&entry) && !moved(&was) {
            let message = format!(
                "a second payment {id} ({}) for an order paid by {primary}: {}",
                Money::new(entry.authorized.max(entry.captured), currency),
                if entry.captured > 0 {
                    "a refund is requested"
                } else {
                    "authorized only: void it, or refund it once captured"
                }
            );
            push_flag(&mut next, event, "duplicate_payment", message, now);
            outcome = PaymentOutcome::Flagged("duplicate_payment");
        }
        let ledger = next.payment_status.get_or_insert_with(Default::default);
        if entry.captured > was.captured {
            // One request per payment, for all it captured.
            match ledger.refund_requests.iter_mut().find(|r| {
                r.payment_id.as_deref() == Some(id) && r.reason == RefundReason::DuplicatePayment
            }) {
                Some(request) => {
                    request.amount = request.amount.max(entry.captured - request.refunded_before);
                }
                None => ledger.refund_requests.push(RefundRequest {
                    payment_id: Some(id.to_string()),
                    amount: entry.captured - was.refunded,
                    refunded_before: was.refunded,
                    reason: RefundReason::DuplicatePayment,
                    raised_at: now,
                    settled_at: None,
                }),
            }
        }
        if entry.refunded > was.refunded {
            ledger.settle(Some(id), entry.refunded, now);
            events.push(self.event(
                EventType::PaymentRefunded,
                now,
                serde_json::json!({
                    "amount": Money::new(entry.refunded - was.refunded, currency),
                    "refunded": Money::new(entry.refunded, currency),
                    "full": false,
                    "duplicate": true,
                }),
            ));
        }
        if entry.charged_back > was.charged_back {
            push_flag(
                &mut next,
                event,
                "chargeback_needs_review",
                format!("the customer disputed the second payment {id}"),
                now,
            );
            outcome = PaymentOutcome::Flagged("chargeback_needs_review");
        }
        if next.payment_status.as_ref() == Some(&before) {
            return PaymentDecision::unchanged(PaymentOutcome::NoChange);
        }
        PaymentDecision {
            next: Some(next),
            events,
            outcome,
        }
    }

    /// Raises a refund request for the money of the order's own payment
    /// still with the shop, on an order being cancelled (`next`); the
    /// amount, if any, for the cancellation's event.
    pub fn request_refund_on_cancel(next: &mut Order, now: OffsetDateTime) -> Option<Money> {
        let currency = next.totals.total.currency;
        let ledger = next.payment_status.as_mut()?;
        let owed = ledger.owed_back();
        let requested: i64 = ledger
            .open_refunds()
            .filter(|r| r.reason == RefundReason::OrderCancelled)
            .map(|r| r.amount)
            .sum();
        if owed <= requested {
            return None;
        }
        let refunded_before = ledger.refunded;
        ledger.refund_requests.push(RefundRequest {
            payment_id: ledger.payment_id.clone(),
            amount: owed - requested,
            refunded_before,
            reason: RefundReason::OrderCancelled,
            raised_at: now,
            settled_at: None,
        });
        Some(Money::new(owed - requested, currency))
    }

    /// The money went back (full refund, chargeback): cancel the order if
    /// production has not started, hold it if it has. `None` when neither is
    /// possible any more (shipped, or already on hold after production
    /// started); an already cancelled order only records the money.
    fn stop_for_money_back(
        &self,
        mut next: Order,
        mut events: Vec<EventEnvelope>,
        why: &str,
        now: OffsetDateTime,
    ) -> Option<PaymentDecision> {
        let total = self.totals.total.amount;
        let ledger = next.payment_status.get_or_insert_with(Default::default);
        ledger.status = ledger.derive_status(total, None);
        let ledger = ledger.clone();
        if self.state == OrderState::Cancelled {
            return Some(PaymentDecision {
                next: Some(next),
                events,
                outcome: PaymentOutcome::Applied,
            });
        }
        let reason = match why {
            "chargeback" => "The customer disputed the payment (chargeback).",
            _ => "The payment was refunded.",
        };
        let moved = match self.cancel(why, now) {
            Ok(moved) => Some(moved),
            Err(_) => self
                .hold(reason, serde_json::json!({ "code": why }), now)
                .ok(),
        }?;
        let (mut stopped, event) = moved;
        stopped.payment_status = Some(ledger);
        events.push(event);
        Some(PaymentDecision {
            next: Some(stopped),
            events,
            outcome: PaymentOutcome::Applied,
        })
    }

    fn event(
        &self,
        kind: EventType,
        now: OffsetDateTime,
        data: serde_json::Value,
    ) -> EventEnvelope {
        EventEnvelope::new(kind, &self.id, &self.tenant, now, data)
    }
}

fn push_flag(
    next: &mut Order,
    event: &PaymentNotification,
    code: &'static str,
    message: String,
    now: OffsetDateTime,
) {
    tracing::warn!(order = %next.id, event_id = %event.event_id, code, "payment flagged");
    next.payment_status
        .get_or_insert_with(PaymentLedger::default)
        .flags
        .push(PaymentFlag {
            event_id: event.event_id.clone(),
            code: code.to_string(),
            message,
            at: now,
            resolved: None,
        });
}
