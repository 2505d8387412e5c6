//! The order state machine. Every state has a rank; within a production
//! attempt a state only moves to a higher rank. An operator's release or
//! reprint starts a new attempt, which may begin lower
//! ([`super::ops`]): the pair (attempt, rank) only grows. The stores'
//! writes are conditional on the rank and version read.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    /// Accepted, waiting for payment (B2C).
    Placed,
    /// Money confirmed, or invoice customer (B2B): ready to render.
    Paid,
    /// Every item has print-ready files.
    Rendered,
    /// Assigned to a plant; jobs sent.
    Dispatched,
    /// The plant accepted a job: production has started.
    InProduction,
    Printed,
    Packed,
    Shipped,
    /// Stopped for a reason a person must look at (an unprintable photo, a
    /// chargeback after production started).
    OnHold,
    Cancelled,
}

impl OrderState {
    pub const ALL: [OrderState; 10] = [
        OrderState::Placed,
        OrderState::Paid,
        OrderState::Rendered,
        OrderState::Dispatched,
        OrderState::InProduction,
        OrderState::Printed,
        OrderState::Packed,
        OrderState::Shipped,
        OrderState::OnHold,
        OrderState::Cancelled,
    ];

    /// The rank, monotonic within an attempt. `OnHold` ranks above every
    /// production state so no late production event can overwrite a hold
    /// (only an operator's release, a new attempt, leaves it);
    /// `Cancelled` is final.
    pub fn rank(self) -> u32 {
        match self {
            OrderState::Placed => 10,
            OrderState::Paid => 20,
            OrderState::Rendered => 30,
            OrderState::Dispatched => 40,
            OrderState::InProduction => 50,
            OrderState::Printed => 60,
            OrderState::Packed => 70,
            OrderState::Shipped => 80,
            OrderState::OnHold => 90,
            OrderState::Cancelled => 100,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Placed => "placed",
            OrderState::Paid => "paid",
            OrderState::Rendered => "rendered",
            OrderState::Dispatched => "dispatched",
            OrderState::InProduction => "in_production",
            OrderState::Printed => "printed",
            OrderState::Packed => "packed",
            OrderState::Shipped => "shipped",
            OrderState::OnHold => "on_hold",
            OrderState::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Option<OrderState> {
        OrderState::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, OrderState::Shipped | OrderState::Cancelled)
    }

    /// Whether the state machine allows `self -> to`. Always a strictly
    /// higher rank; `Shipped` and `Cancelled` are final; anything not final
    /// may be put on hold. Once dispatched, the order follows the plant's
    /// reports, which may skip a step (a queue does not keep their order),
    /// so any later production state may follow.
    pub fn can_move_to(self, to: OrderState) -> bool {
        if self.is_terminal() || to.rank() <= self.rank() {
            return false;
        }
        match to {
            OrderState::Placed => false,
            OrderState::Paid => self == OrderState::Placed,
            OrderState::Rendered => self == OrderState::Paid,
            OrderState::Dispatched => self == OrderState::Rendered,
            OrderState::InProduction => self == OrderState::Dispatched,
            OrderState::Printed | OrderState::Packed | OrderState::Shipped => {
                self.rank() >= OrderState::Dispatched.rank()
            }
            OrderState::OnHold | OrderState::Cancelled => true,
        }
    }

    /// Production has started once the jobs left for a plant: from then on
    /// the order can no longer simply be cancelled (the plant may already be
    /// printing), only held.
    pub fn production_started(self) -> bool {
        self.rank() >= OrderState::Dispatched.rank()
            && self != OrderState::OnHold
            && self != OrderState::Cancelled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_are_distinct_and_follow_the_flow() {
        let ranks: Vec<u32> = OrderState::ALL.iter().map(|s| s.rank()).collect();
        let mut sorted = ranks.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, ranks, "ALL is listed in rank order, no two equal");
    }

    #[test]
    fn every_allowed_move_raises_the_rank() {
        for from in OrderState::ALL {
            for to in OrderState::ALL {
                if from.can_move_to(to) {
                    assert!(to.rank() > from.rank(), "{from:?} -> {to:?}");
                }
            }
        }
    }

    #[test]
    fn the_happy_path_and_the_forbidden_moves() {
        use OrderState::*;
        let path = [
            Placed,
            Paid,
            Rendered,
            Dispatched,
            InProduction,
            Printed,
            Packed,
            Shipped,
        ];
        for pair in path.windows(2) {
            assert!(
                pair[0].can_move_to(pair[1]),
                "{:?} -> {:?}",
                pair[0],
                pair[1]
            );
        }
        assert!(!Paid.can_move_to(Placed));
        assert!(!Placed.can_move_to(Rendered), "no skipping payment");
        assert!(!Shipped.can_move_to(Cancelled));
        assert!(!Cancelled.can_move_to(OnHold));
        assert!(!Shipped.can_move_to(OnHold));
        assert!(Printed.can_move_to(OnHold));
        assert!(OnHold.can_move_to(Cancelled));
        assert!(!OnHold.can_move_to(Paid));
        assert!(InProduction.production_started());
        assert!(Dispatched.production_started());
        assert!(!Rendered.production_started());
        assert!(
            Dispatched.can_move_to(Shipped),
            "plant reports may skip steps"
        );
        assert!(!Rendered.can_move_to(Printed));
    }

    #[test]
    fn names_round_trip() {
        for s in OrderState::ALL {
            assert_eq!(OrderState::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.as_str())
            );
        }
    }
}
