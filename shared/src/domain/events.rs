//! Domain events in their envelope, as they travel through the outbox, the
//! topic and the queues.

use super::order::OrderId;
use super::tenant::TenantId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventType {
    OrderPlaced,
    OrderPaid,
    OrderCancelled,
    OrderOnHold,
    OrderRendered,
    OrderDispatched,
    /// A plant accepted the first job of the order.
    OrderInProduction,
    OrderShipped,
    /// A plant could not make a job (the order goes on hold).
    ProductionFailed,
    PaymentFailed,
    /// The customer must complete 3-D Secure (or another step) to pay.
    PaymentActionRequired,
    /// Money went back to the customer (any refund, partial or full).
    PaymentRefunded,
    /// An operator released a held order or reprinted jobs, or the
    /// customer replaced the photo it was held for (`data.by` is
    /// `customer`): a new production attempt (`data.attempt`) goes on at
    /// `data.stage`.
    OrderResumed,
    /// The customer changed the order through the tenant API (a photo,
    /// the address): `data.action`, what changed (never the address
    /// itself), and `data.stage` = `render` when a paid order's photo must
    /// be rendered again.
    OrderChanged,
    /// A provider event did not fit the order (`data.code`: a second
    /// payment, a wrong amount, a refund or chargeback to review): for
    /// operators; `data.flag` numbers it on the order.
    PaymentFlagged,
    /// An operator resolved a payment flag (`data.flag`) with a note.
    PaymentFlagResolved,
    /// The reconciler handed an idle order to a stage again (`data.stage`:
    /// `render` or `dispatch`, of `data.attempt`; `data.reason`): render
    /// and dispatch take it as the work of the order's attempt.
    OrderNudged,
    /// The order stayed in `data.state` past its deadline (`data.minutes`,
    /// `data.plant`): for operators, once per state and attempt.
    OrderStuck,
}

impl EventType {
    pub const ALL: [EventType; 18] = [
        EventType::OrderPlaced,
        EventType::OrderPaid,
        EventType::OrderCancelled,
        EventType::OrderOnHold,
        EventType::OrderRendered,
        EventType::OrderDispatched,
        EventType::OrderInProduction,
        EventType::OrderShipped,
        EventType::ProductionFailed,
        EventType::PaymentFailed,
        EventType::PaymentActionRequired,
        EventType::PaymentRefunded,
        EventType::OrderResumed,
        EventType::OrderChanged,
        EventType::PaymentFlagged,
        EventType::PaymentFlagResolved,
        EventType::OrderNudged,
        EventType::OrderStuck,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::OrderPlaced => "OrderPlaced",
            EventType::OrderPaid => "OrderPaid",
            EventType::OrderCancelled => "OrderCancelled",
            EventType::OrderOnHold => "OrderOnHold",
            EventType::OrderRendered => "OrderRendered",
            EventType::OrderDispatched => "OrderDispatched",
            EventType::OrderInProduction => "OrderInProduction",
            EventType::OrderShipped => "OrderShipped",
            EventType::ProductionFailed => "ProductionFailed",
            EventType::PaymentFailed => "PaymentFailed",
            EventType::PaymentActionRequired => "PaymentActionRequired",
            EventType::PaymentRefunded => "PaymentRefunded",
            EventType::OrderResumed => "OrderResumed",
            EventType::OrderChanged => "OrderChanged",
            EventType::PaymentFlagged => "PaymentFlagged",
            EventType::PaymentFlagResolved => "PaymentFlagResolved",
            EventType::OrderNudged => "OrderNudged",
            EventType::OrderStuck => "OrderStuck",
        }
    }

    pub fn parse(raw: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == raw)
    }
}

/// The envelope every event travels in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventEnvelope {
    /// Unique per event; consumers deduplicate on it.
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub order_id: OrderId,
    pub tenant: TenantId,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    pub data: serde_json::Value,
}

impl EventEnvelope {
    pub fn new(
        event_type: EventType,
        order_id: &OrderId,
        tenant: &TenantId,
        occurred_at: OffsetDateTime,
        data: serde_json::Value,
    ) -> EventEnvelope {
        EventEnvelope {
            id: format!("evt_{}", uuid::Uuid::now_v7().simple()),
            event_type,
            order_id: order_id.clone(),
            tenant: tenant.clone(),
            occurred_at,
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_serializes_with_type_and_rfc3339_time() {
        let order = OrderId::parse("ord_0192f1f0a0b07c3e9d2a4b5c6d7e8f90").unwrap();
        let tenant = TenantId::parse("demo-brand").unwrap();
        let at = time::macros::datetime!(2026-11-22 10:00:00 UTC);
        let env = EventEnvelope::new(
            EventType::OrderPlaced,
            &order,
            &tenant,
            at,
            serde_json::json!({"items": 1}),
        );
        let json = serde_json::to_value(&env).unwrap();
        assert_eq!(json["type"], "OrderPlaced");
        assert_eq!(json["order_id"], order.as_str());
        assert_eq!(json["tenant"], "demo-brand");
        assert_eq!(json["occurred_at"], "2026-11-22T10:00:00Z");
        assert!(json["id"].as_str().unwrap().starts_with("evt_"));
        let back: EventEnvelope = serde_json::from_value(json).unwrap();
        assert_eq!(back, env);
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
    }
}
