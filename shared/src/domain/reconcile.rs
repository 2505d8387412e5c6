//! The reconciler's decisions: what the pipeline left behind, what is safe
//! to repair and what must be announced to a person.
//!
//! An order in a working state (paid, rendered, dispatched, in production,
//! printed, packed) that nobody wrote for a while is looked at by
//! [`Order::reconcile`]:
//!
//! - **paid, not rendered** for [`Deadlines::render_after`]: handed to
//!   render again (`OrderNudged` with `stage: render`);
//! - **rendered, not dispatched** for [`Deadlines::dispatch_after`]: handed
//!   to dispatch again (`stage: dispatch`);
//! - **jobs the plant has not taken** whose print file URLs expire within
//!   [`Deadlines::refresh_before`]: handed to dispatch, which sends the
//!   jobs no plant reported on again with fresh URLs under the same job ids
//!   (`reason: urls_expiring`);
//! - **in one state longer than its deadline** ([`Deadlines::stuck_after`],
//!   per state and per plant): announced `OrderStuck`, once per state and
//!   attempt; the order then needs a person ([`Order::is_stuck`]) until it
//!   moves on.
//!
//! Each repair is a write of the order (the next version, with what the
//! reconciler did in [`Watch`]) and its events in one transaction: two
//! reconcilers that read the same order cannot both repair it, and the
//! loser, reading again, finds it was just done. A hand-over that lands
//! twice is harmless: render and dispatch do the work of the order's
//! current attempt once.
//!
//! The reconciler's writes keep the order's `updated_at`: it says when the
//! pipeline or a person last changed the order, which is what the stores'
//! idle index sorts by, so a repair never hides an order from the next
//! run. How long an order has been idle is measured from that, or from the
//! last hand-over ([`Watch::nudged_at`]); how long it has been in its
//! state from the first write the reconciler saw in that state
//! ([`Watch::since`]).

use super::events::{EventEnvelope, EventType};
use super::ops::Stage;
use super::order::Order;
use super::state::OrderState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use time::OffsetDateTime;

/// The states the reconciler watches: work is under way in each, and
/// something must move the order on. (Placed waits for the customer's
/// payment; on hold is already waiting for a person.)
pub const WATCHED: [OrderState; 6] = [
    OrderState::Paid,
    OrderState::Rendered,
    OrderState::Dispatched,
    OrderState::InProduction,
    OrderState::Printed,
    OrderState::Packed,
];

/// What the reconciler did to an order in its current state and attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    pub state: OrderState,
    pub attempt: u32,
    /// Since when the order has been in this state, as far as the
    /// reconciler knows: its last write before the first repair.
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// Hand-overs to a stage again in this state.
    #[serde(default)]
    pub nudges: u32,
    /// When the last hand-over was made.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub nudged_at: Option<OffsetDateTime>,
    /// When the jobs were last sent with fresh print file URLs.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub urls_refreshed_at: Option<OffsetDateTime>,
    /// When `OrderStuck` was announced for this state.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub stuck_at: Option<OffsetDateTime>,
}

/// One thing the reconciler did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepairKind {
    /// A paid order handed to render again.
    Render,
    /// A rendered order handed to dispatch again.
    Dispatch,
    /// Jobs not yet taken sent again with fresh print file URLs.
    RefreshUrls,
    /// `OrderStuck` announced.
    Stuck,
}

impl RepairKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RepairKind::Render => "render",
            RepairKind::Dispatch => "dispatch",
            RepairKind::RefreshUrls => "refresh_urls",
            RepairKind::Stuck => "stuck",
        }
    }
}

/// An order repaired: the next version and the events, written together.
#[derive(Debug, Clone)]
pub struct Repair {
    pub next: Order,
    pub events: Vec<EventEnvelope>,
    pub kinds: Vec<RepairKind>,
}

/// How long is too long, per state and per plant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deadlines {
    /// Outbox events not published this long after they were written are
    /// published by the reconciler.
    pub outbox_after: Duration,
    /// A paid order not written for this long goes to render again.
    pub render_after: Duration,
    /// A rendered order not written for this long goes to dispatch again.
    pub dispatch_after: Duration,
    /// How long the jobs' print file URLs are valid (dispatch's
    /// `JOB_URL_TTL_SECS`).
    pub job_url_ttl: Duration,
    /// Jobs whose URLs expire within this are sent again with fresh ones.
    pub refresh_before: Duration,
    /// Per state (by name): how long before an order is announced stuck.
    pub stuck: BTreeMap<&'static str, Duration>,
    /// Per plant and state, overriding `stuck` for that plant's orders.
    pub stuck_at_plant: BTreeMap<(String, &'static str), Duration>,
}

/// A deadline setting that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct DeadlineError {
    pub setting: String,
    pub message: String,
}

const MINUTE: u64 = 60;
const HOUR: u64 = 3600;

impl Default for Deadlines {
    fn default() -> Deadlines {
        let stuck = BTreeMap::from([
            (OrderState::Paid.as_str(), Duration::from_secs(HOUR)),
            (OrderState::Rendered.as_str(), Duration::from_secs(HOUR)),
            (
                OrderState::Dispatched.as_str(),
                Duration::from_secs(8 * HOUR),
            ),
            (
                OrderState::InProduction.as_str(),
                Duration::from_secs(48 * HOUR),
            ),
            (OrderState::Printed.as_str(), Duration::from_secs(24 * HOUR)),
            (OrderState::Packed.as_str(), Duration::from_secs(24 * HOUR)),
        ]);
        Deadlines {
            outbox_after: Duration::from_secs(5 * MINUTE),
            render_after: Duration::from_secs(15 * MINUTE),
            dispatch_after: Duration::from_secs(15 * MINUTE),
            job_url_ttl: Duration::from_secs(12 * HOUR),
            refresh_before: Duration::from_secs(HOUR),
            stuck,
            stuck_at_plant: BTreeMap::new(),
        }
    }
}

/// `90s`, `15m`, `8h`, `2d`.
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    let unit = raw.chars().last()?;
    let scale = match unit {
        's' => 1,
        'm' => MINUTE,
        'h' => HOUR,
        'd' => 24 * HOUR,
        _ => return None,
    };
    let value: u64 = raw[..raw.len() - 1].parse().ok()?;
    (value > 0)
        .then(|| value.checked_mul(scale).map(Duration::from_secs))
        .flatten()
}

impl Deadlines {
    /// Applies `spec` to the stuck deadlines: comma-separated
    /// `state=duration` or `plant:state=duration` (`dispatched=6h,
    /// btf:in_production=3d`); states are the watched ones.
    pub fn with_stuck(mut self, spec: &str) -> Result<Deadlines, DeadlineError> {
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let error = |message: String| DeadlineError {
                setting: part.to_string(),
                message,
            };
            let (target, duration) = part
                .split_once('=')
                .ok_or_else(|| error("expected state=duration or plant:state=duration".into()))?;
            let duration = parse_duration(duration)
                .ok_or_else(|| error("a duration is a whole number and s, m, h or d".into()))?;
            let (plant, state) = match target.split_once(':') {
                Some((plant, state)) => (Some(plant.trim()), state.trim()),
                None => (None, target.trim()),
            };
            let state = OrderState::parse(state)
                .filter(|s| WATCHED.contains(s))
                .ok_or_else(|| {
                    let names: Vec<_> = WATCHED.iter().map(|s| s.as_str()).collect();
                    error(format!(
                        "{state} is not a watched state ({})",
                        names.join(", ")
                    ))
                })?;
            match plant {
                Some("") => return Err(error("the plant is empty".into())),
                Some(plant) => {
                    self.stuck_at_plant
                        .insert((plant.to_string(), state.as_str()), duration);
                }
                None => {
                    self.stuck.insert(state.as_str(), duration);
                }
            }
        }
        Ok(self)
    }

    /// How long an order of `plant` may stay in `state`.
    pub fn stuck_after(&self, state: OrderState, plant: Option<&str>) -> Option<Duration> {
        plant
            .and_then(|p| self.stuck_at_plant.get(&(p.to_string(), state.as_str())))
            .or_else(|| self.stuck.get(state.as_str()))
            .copied()
    }

    /// How long an order in `state` may go unwritten before the
    /// reconciler must look at it: the shortest of its deadlines (any
    /// plant's). The stores list such orders ([`crate::ports`]'s
    /// `ReconcileStore::idle_orders`).
    pub fn look_after(&self, state: OrderState) -> Duration {
        let stuck = self
            .stuck_at_plant
            .iter()
            .filter(|((_, s), _)| *s == state.as_str())
            .map(|(_, d)| *d)
            .chain(self.stuck.get(state.as_str()).copied())
            .min();
        let work = match state {
            OrderState::Paid => Some(self.render_after),
            OrderState::Rendered => Some(self.dispatch_after),
            OrderState::Dispatched | OrderState::InProduction => Some(self.refresh_after()),
            _ => None,
        };
        [stuck, work]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(Duration::from_secs(24 * HOUR))
    }

    /// How long after they were sent jobs get fresh URLs.
    fn refresh_after(&self) -> Duration {
        self.job_url_ttl.saturating_sub(self.refresh_before)
    }
}

fn since(from: OffsetDateTime, now: OffsetDateTime) -> Duration {
    Duration::try_from(now - from).unwrap_or(Duration::ZERO)
}

fn minutes(d: Duration) -> u64 {
    d.as_secs() / 60
}

impl Order {
    /// The reconciler's record of this state and attempt, if any.
    fn current_watch(&self) -> Option<&Watch> {
        self.watch
            .as_ref()
            .filter(|w| w.state == self.state && w.attempt == self.attempt)
    }

    /// Whether the order was announced stuck in the state it is still in:
    /// it needs a person until it moves on.
    pub fn is_stuck(&self) -> bool {
        self.current_watch().is_some_and(|w| w.stuck_at.is_some())
    }

    /// The current attempt's jobs no plant has reported on yet.
    fn untaken_jobs(&self) -> usize {
        self.production.as_ref().map_or(0, |p| {
            p.jobs
                .iter()
                .filter(|j| j.attempt == self.attempt && j.status.is_none())
                .count()
        })
    }

    /// When the untaken jobs' URLs were last made: the dispatch, an
    /// operator's action that sent jobs anew, or a refresh.
    fn urls_made_at(&self) -> Option<OffsetDateTime> {
        let production = self.production.as_ref()?;
        let action = self
            .actions
            .iter()
            .filter(|a| a.attempt == self.attempt)
            .map(|a| a.at);
        let refreshed = self.current_watch().and_then(|w| w.urls_refreshed_at);
        std::iter::once(production.dispatched_at)
            .chain(action)
            .chain(refreshed)
            .max()
    }

    /// What the reconciler does to this order at `now`, if anything.
    pub fn reconcile(&self, now: OffsetDateTime, deadlines: &Deadlines) -> Option<Repair> {
        if !WATCHED.contains(&self.state) {
            return None;
        }
        let watch = self.current_watch();
        let last_moved = watch
            .and_then(|w| w.nudged_at)
            .map_or(self.updated_at, |n| n.max(self.updated_at));
        let idle = since(last_moved, now);
        let in_state_since = watch.map_or(self.updated_at, |w| w.since);
        let mut kinds = Vec::new();
        let mut nudge: Option<(Stage, String)> = None;
        match self.state {
            OrderState::Paid if idle >= deadlines.render_after => {
                kinds.push(RepairKind::Render);
                nudge = Some((
                    Stage::Render,
                    format!("not rendered after {} min", minutes(idle)),
                ));
            }
            OrderState::Rendered if idle >= deadlines.dispatch_after => {
                kinds.push(RepairKind::Dispatch);
                nudge = Some((
                    Stage::Dispatch,
                    format!("not dispatched after {} min", minutes(idle)),
                ));
            }
            OrderState::Dispatched | OrderState::InProduction if self.untaken_jobs() > 0 => {
                if let Some(made) = self.urls_made_at()
                    && since(made, now) >= deadlines.refresh_after()
                {
                    kinds.push(RepairKind::RefreshUrls);
                    nudge = Some((
                        Stage::Dispatch,
                        "urls_expiring: jobs not taken by the plant get fresh print file URLs"
                            .into(),
                    ));
                }
            }
            _ => {}
        }
        let plant = self.production.as_ref().map(|p| p.plant.as_str());
        let stuck_for = since(in_state_since, now);
        let stuck = watch.is_none_or(|w| w.stuck_at.is_none())
            && deadlines
                .stuck_after(self.state, plant)
                .is_some_and(|limit| stuck_for >= limit);
        if stuck {
            kinds.push(RepairKind::Stuck);
        }
        if kinds.is_empty() {
            return None;
        }
        let mut next = self.successor(now);
        next.updated_at = self.updated_at;
        let mut record = watch.cloned().unwrap_or(Watch {
            state: self.state,
            attempt: self.attempt,
            since: in_state_since,
            nudges: 0,
            nudged_at: None,
            urls_refreshed_at: None,
            stuck_at: None,
        });
        let mut events = Vec::new();
        if let Some((stage, reason)) = nudge {
            record.nudges += 1;
            record.nudged_at = Some(now);
            if kinds.contains(&RepairKind::RefreshUrls) {
                record.urls_refreshed_at = Some(now);
            }
            events.push(EventEnvelope::new(
                EventType::OrderNudged,
                &self.id,
                &self.tenant,
                now,
                serde_json::json!({
                    "stage": stage,
                    "attempt": self.attempt,
                    "state": self.state,
                    "reason": reason,
                    "nudge": record.nudges,
                }),
            ));
        }
        if stuck {
            record.stuck_at = Some(now);
            events.push(EventEnvelope::new(
                EventType::OrderStuck,
                &self.id,
                &self.tenant,
                now,
                serde_json::json!({
                    "state": self.state,
                    "attempt": self.attempt,
                    "plant": plant,
                    "since": in_state_since
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default(),
                    "minutes": minutes(stuck_for),
                }),
            ));
        }
        next.watch = Some(record);
        Some(Repair {
            next,
            events,
            kinds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::catalog::Catalog;
    use crate::domain::production::{Dispatch, JobState};
    use crate::testing::{paid_order, rendered};
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-12-07 10:00:00 UTC);

    fn paid() -> Order {
        paid_order(&[("poster-30x40", 1)], "DE", T0).order
    }

    fn dispatched() -> Order {
        let catalog = Catalog::builtin();
        let order = rendered(&paid(), T0).0;
        match order.dispatch(catalog, &BTreeMap::new(), T0).unwrap() {
            Dispatch::ToPlant { next, .. } => next,
            Dispatch::Hold { .. } => panic!("held"),
        }
    }

    fn mins(n: i64) -> time::Duration {
        time::Duration::minutes(n)
    }

    #[test]
    fn a_paid_order_is_handed_to_render_after_its_deadline_and_not_before() {
        let d = Deadlines::default();
        let order = paid();
        assert!(order.reconcile(T0 + mins(14), &d).is_none());
        let repair = order.reconcile(T0 + mins(15), &d).expect("a repair");
        assert_eq!(repair.kinds, vec![RepairKind::Render]);
        assert_eq!(repair.events.len(), 1);
        let event = &repair.events[0];
        assert_eq!(event.event_type, EventType::OrderNudged);
        assert_eq!(crate::domain::ops::stage_of(event), Some(Stage::Render));
        assert_eq!(crate::domain::ops::attempt_of(event), order.attempt);
        let watch = repair.next.watch.as_ref().unwrap();
        assert_eq!((watch.nudges, watch.since), (1, T0));
        assert_eq!(repair.next.version, order.version + 1);
        assert_eq!(repair.next.updated_at, order.updated_at, "not a change");
        assert_eq!(repair.next.state, OrderState::Paid);
        // Just repaired: nothing until the order is idle again.
        assert!(repair.next.reconcile(T0 + mins(20), &d).is_none());
        let again = repair.next.reconcile(T0 + mins(30), &d).unwrap();
        assert_eq!(again.next.watch.as_ref().unwrap().nudges, 2);
        assert_eq!(again.next.watch.as_ref().unwrap().since, T0);
    }

    #[test]
    fn an_order_is_announced_stuck_once_per_state_measured_from_when_it_got_there() {
        let d = Deadlines::default();
        let mut order = paid();
        let mut stuck_events = 0;
        let mut at = T0;
        // Nudged every 15 minutes; stuck after one hour in `paid`, once.
        for _ in 0..8 {
            at += mins(15);
            if let Some(r) = order.reconcile(at, &d) {
                stuck_events += r
                    .events
                    .iter()
                    .filter(|e| e.event_type == EventType::OrderStuck)
                    .count();
                if r.kinds.contains(&RepairKind::Stuck) {
                    assert_eq!(at, T0 + mins(60));
                    assert_eq!(r.events.last().unwrap().data["minutes"], 60);
                }
                order = r.next;
            }
        }
        assert_eq!(stuck_events, 1);
        assert!(order.is_stuck());
        // Moving on ends it: the rendered order is not stuck, and is
        // watched afresh.
        let moved = rendered(&order, at).0;
        assert!(!moved.is_stuck());
        assert!(!moved.needs_attention());
        let r = moved.reconcile(at + mins(15), &d).unwrap();
        assert_eq!(r.kinds, vec![RepairKind::Dispatch]);
        assert_eq!(r.next.watch.as_ref().unwrap().state, OrderState::Rendered);
    }

    #[test]
    fn untaken_jobs_get_fresh_urls_before_they_expire_and_a_plant_has_its_own_deadline() {
        let d = Deadlines::default()
            .with_stuck("dispatched=20h, muc:dispatched=10h30m")
            .unwrap_err();
        assert!(d.message.contains("duration"), "{d}");
        let order = dispatched();
        let plant = order.production.as_ref().unwrap().plant.clone();
        let d = Deadlines::default()
            .with_stuck(&format!("dispatched=20h,{plant}:dispatched=10h"))
            .unwrap();
        assert!(order.reconcile(T0 + mins(9 * 60), &d).is_none());
        // Stuck at this plant after 10 h.
        let r = order.reconcile(T0 + mins(10 * 60), &d).unwrap();
        assert_eq!(r.kinds, vec![RepairKind::Stuck]);
        assert_eq!(r.events[0].data["plant"], plant.as_str());
        // URLs valid for 12 h are refreshed one hour before.
        let r = r.next.reconcile(T0 + mins(11 * 60), &d).unwrap();
        assert_eq!(r.kinds, vec![RepairKind::RefreshUrls]);
        assert_eq!(
            crate::domain::ops::stage_of(&r.events[0]),
            Some(Stage::Dispatch)
        );
        let refreshed = r.next;
        assert!(refreshed.reconcile(T0 + mins(12 * 60), &d).is_none());
        let r = refreshed.reconcile(T0 + mins(22 * 60), &d).unwrap();
        assert_eq!(r.kinds, vec![RepairKind::RefreshUrls]);
        // Jobs the plant took need no URLs.
        let mut taken = refreshed.clone();
        for job in &mut taken.production.as_mut().unwrap().jobs {
            job.status = Some(JobState::Accepted);
        }
        assert!(taken.reconcile(T0 + mins(23 * 60), &d).is_none());
    }

    #[test]
    fn orders_at_rest_or_waiting_for_others_are_left_alone() {
        let d = Deadlines::default();
        let far = T0 + mins(60 * 24 * 30);
        let mut placed = paid();
        placed.state = OrderState::Placed;
        assert!(placed.reconcile(far, &d).is_none());
        let mut held = paid();
        held.state = OrderState::OnHold;
        assert!(held.reconcile(far, &d).is_none());
        let mut shipped = paid();
        shipped.state = OrderState::Shipped;
        assert!(shipped.reconcile(far, &d).is_none());
    }

    #[test]
    fn deadlines_are_read_from_a_setting_and_refused_with_what_is_allowed() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("0h"), None);
        assert_eq!(parse_duration("h"), None);
        assert_eq!(parse_duration("5w"), None);
        let d = Deadlines::default()
            .with_stuck("packed=2h, btf:in_production=3d")
            .unwrap();
        assert_eq!(
            d.stuck_after(OrderState::Packed, None),
            Some(Duration::from_secs(7200))
        );
        assert_eq!(
            d.stuck_after(OrderState::InProduction, Some("btf")),
            Some(Duration::from_secs(3 * 86_400))
        );
        assert_eq!(
            d.stuck_after(OrderState::InProduction, Some("muc")),
            Some(Duration::from_secs(2 * 86_400))
        );
        assert_eq!(d.look_after(OrderState::Packed), Duration::from_secs(7200));
        assert_eq!(d.look_after(OrderState::Paid), Duration::from_secs(900));
        let e = Deadlines::default().with_stuck("shipped=1h").unwrap_err();
        assert!(e.message.contains("paid, rendered"), "{e}");
        assert!(Deadlines::default().with_stuck(":paid=1h").is_err());
        assert!(Deadlines::default().with_stuck("paid").is_err());
    }
}
