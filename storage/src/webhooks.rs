//! Webhook subscriptions and their deliveries (events-design §6–7), in the index.
//!
//! - Fan-out reads the event log after a cursor, creates one delivery per matching validated
//!   subscription, and advances the cursor in the same transaction: every event is fanned out
//!   exactly once, across crashes.
//! - A delivery stays until a 2xx is recorded (at least once), is rescheduled on failure, and
//!   goes to the dead letters when the retry ladder runs out; dead letters can be replayed.

use crate::Storage;
use crate::error::{Error, Result};
use crate::model::Timestamp;
use crate::ports::{Counter, MetadataTxn};
use crate::records::EventRecord;
pub use crate::records::{Delivery, Subscription};

/// What happened to a delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: done.
    Delivered,
    /// Try again at this time.
    Retry {
        /// When.
        at: Timestamp,
        /// Why it failed.
        error: String,
    },
    /// No more attempts: to the dead letters.
    GiveUp {
        /// Why.
        error: String,
    },
    /// Stop the subscription (410 Gone, failing for days): its pending deliveries go to the
    /// dead letters.
    Disable {
        /// Why.
        reason: String,
    },
}

/// A subscription's pending deliveries.
fn pending_of(txn: &mut dyn MetadataTxn, subscription: u64) -> Result<Vec<Delivery>> {
    Ok(txn.deliveries()?.into_iter().filter(|d| d.subscription == subscription).collect())
}

impl Storage {
    /// Creates a subscription; it receives events committed after now, once validated.
    pub async fn create_subscription(&self, mut sub: Subscription) -> Result<Subscription> {
        self.transact(move |txn| {
            sub.id = txn.next_id(Counter::Subscription)?;
            sub.from_seq = txn.last_event_seq()?;
            txn.put_subscription(&sub)?;
            Ok(sub.clone())
        })
        .await
    }

    /// A subscription.
    pub fn subscription(&self, id: u64) -> Result<Option<Subscription>> {
        self.snapshot(|r| r.subscription(id))
    }

    /// Every subscription.
    pub fn subscriptions(&self) -> Result<Vec<Subscription>> {
        self.snapshot(|r| r.subscriptions())
    }

    /// Changes a subscription in one transaction (validation, secret rotation, re-enabling).
    pub async fn modify_subscription<F>(&self, id: u64, mut f: F) -> Result<Subscription>
    where
        F: FnMut(&mut Subscription) + Send + 'static,
    {
        self.transact(move |txn| {
            let mut sub = txn
                .subscription(id)?
                .ok_or_else(|| Error::NotFound(format!("subscription {id}")))?;
            f(&mut sub);
            txn.put_subscription(&sub)?;
            Ok(sub)
        })
        .await
    }

    /// Deletes a subscription with its pending deliveries and dead letters.
    pub async fn delete_subscription(&self, id: u64) -> Result<()> {
        self.transact(move |txn| {
            txn.remove_subscription(id)?;
            for d in pending_of(txn, id)? {
                txn.remove_delivery(d.id)?;
            }
            for d in txn.dead_letters()?.into_iter().filter(|d| d.subscription == id) {
                txn.remove_dead_letter(d.id)?;
            }
            Ok(())
        })
        .await
    }

    /// Fans out the events committed since the last fan-out, at most `limit`; returns how many
    /// deliveries it created. The cursor moves in the same transaction.
    pub async fn fan_out(&self, now: Timestamp, limit: usize) -> Result<usize> {
        // The dispatcher calls this after every event commit. Without subscriptions there is
        // nothing to create, and a later subscription starts after the events logged so far
        // (`from_seq`), so the cursor may stay behind: no write transaction on the hot path.
        let idle = self.snapshot(|r| {
            let no_events = r.last_event_seq()? <= r.fanout_cursor()?;
            Ok(no_events || !r.has_subscriptions()?)
        })?;
        if idle {
            return Ok(0);
        }
        self.transact(move |txn| {
            let cursor = txn.fanout_cursor()?;
            let events = txn.events_after(cursor, limit)?;
            let Some(last) = events.last().map(|e| e.seq) else { return Ok(0) };
            let subs = txn.subscriptions()?;
            let mut n = 0;
            for e in &events {
                for sub in subs.iter().filter(|s| s.matches(e)) {
                    let id = txn.next_id(Counter::Delivery)?;
                    txn.put_delivery(&Delivery {
                        id,
                        subscription: sub.id,
                        seq: e.seq,
                        attempts: 0,
                        due: now,
                        last_error: None,
                    })?;
                    n += 1;
                }
            }
            txn.set_fanout_cursor(last)?;
            Ok(n)
        })
        .await
    }

    /// Deliveries due at `now`, with their subscription and event, earliest first.
    pub fn due_deliveries(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<(Delivery, Subscription, EventRecord)>> {
        self.snapshot(|r| {
            let mut out = Vec::new();
            for id in r.due_deliveries(now, limit)? {
                let Some(d) = r.delivery(id)? else { continue };
                let Some(sub) = r.subscription(d.subscription)? else { continue };
                let Some(e) = r.event(d.seq)? else { continue };
                out.push((d, sub, e));
            }
            Ok(out)
        })
    }

    /// Records an attempt's outcome in one transaction.
    pub async fn record_delivery(
        &self,
        delivery: u64,
        outcome: Outcome,
        now: Timestamp,
    ) -> Result<()> {
        self.transact(move |txn| {
            let Some(mut d) = txn.remove_delivery(delivery)? else { return Ok(()) };
            let mut sub = txn.subscription(d.subscription)?;
            d.attempts += 1;
            match &outcome {
                Outcome::Delivered => {
                    if let Some(sub) = sub.as_mut() {
                        sub.failing_since = None;
                    }
                }
                Outcome::Retry { at, error } => {
                    d.due = *at;
                    d.last_error = Some(error.clone());
                    txn.put_delivery(&d)?;
                    if let Some(sub) = sub.as_mut() {
                        sub.failing_since.get_or_insert(now);
                    }
                }
                Outcome::GiveUp { error } => {
                    d.last_error = Some(error.clone());
                    txn.put_dead_letter(&d)?;
                    if let Some(sub) = sub.as_mut() {
                        sub.failing_since.get_or_insert(now);
                    }
                }
                Outcome::Disable { reason } => {
                    d.last_error = Some(reason.clone());
                    txn.put_dead_letter(&d)?;
                    // Everything else pending for this subscription goes too.
                    for mut other in pending_of(txn, d.subscription)? {
                        txn.remove_delivery(other.id)?;
                        other.last_error = Some(reason.clone());
                        txn.put_dead_letter(&other)?;
                    }
                    if let Some(sub) = sub.as_mut() {
                        sub.disabled = Some(reason.clone());
                    }
                }
            }
            if let Some(sub) = &sub {
                txn.put_subscription(sub)?;
            }
            Ok(())
        })
        .await
    }

    /// A subscription's pending deliveries (not yet delivered nor dead).
    pub fn pending_deliveries(&self, subscription: u64) -> Result<Vec<Delivery>> {
        let all = self.snapshot(|r| r.deliveries())?;
        Ok(all.into_iter().filter(|d| d.subscription == subscription).collect())
    }

    /// A subscription's dead letters.
    pub fn dead_letters(&self, subscription: u64) -> Result<Vec<Delivery>> {
        let all = self.snapshot(|r| r.dead_letters())?;
        Ok(all.into_iter().filter(|d| d.subscription == subscription).collect())
    }

    /// Puts a subscription's dead letters back in line (due now, attempts reset) and re-enables
    /// it; returns how many.
    pub async fn replay_dead_letters(&self, subscription: u64, now: Timestamp) -> Result<usize> {
        self.transact(move |txn| {
            let dead: Vec<Delivery> = txn
                .dead_letters()?
                .into_iter()
                .filter(|d| d.subscription == subscription)
                .collect();
            for mut d in dead.clone() {
                txn.remove_dead_letter(d.id)?;
                d.attempts = 0;
                d.due = now;
                txn.put_delivery(&d)?;
            }
            if let Some(mut sub) = txn.subscription(subscription)? {
                sub.disabled = None;
                sub.failing_since = None;
                txn.put_subscription(&sub)?;
            }
            Ok(dead.len())
        })
        .await
    }
}
