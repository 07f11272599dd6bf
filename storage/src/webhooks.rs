//! Webhook subscriptions and their deliveries (events-design §6–7), in the index.
//!
//! - Fan-out reads the event log after a cursor, creates one delivery per matching validated
//!   subscription, and advances the cursor in the same transaction: every event is fanned out
//!   exactly once, across crashes.
//! - A delivery stays until a 2xx is recorded (at least once), is rescheduled on failure, and
//!   goes to the dead letters when the retry ladder runs out; dead letters can be replayed.

use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::Storage;
use crate::error::{Error, Result};
use crate::index::ops::{EventRecord, decode, encode};
use crate::index::tables::{
    DEAD_LETTERS, DELIVERIES, DELIVERY_DUE, EVENT_LOG, META, SUBSCRIPTIONS,
};
use crate::model::{Party, ResourceId, Timestamp};

/// A webhook subscription (Altinn Events' fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Id.
    pub id: u64,
    /// The organisation that owns it.
    pub consumer: Party,
    /// Where events are POSTed.
    pub end_point: String,
    /// Only events of this resource.
    pub resource_filter: ResourceId,
    /// Only events addressed to this party (the consumer itself).
    pub subject_filter: Party,
    /// Only this event type, if set.
    pub type_filter: Option<String>,
    /// Creation time.
    pub created: Timestamp,
    /// The endpoint answered the validation handshake.
    pub validated: bool,
    /// Why deliveries stopped, if they did (410 Gone, days of failure).
    pub disabled: Option<String>,
    /// Signing secrets, newest first (several during a rotation).
    pub secrets: Vec<String>,
    /// Events up to this sequence predate the subscription.
    pub from_seq: u64,
    /// Since when deliveries have been failing without a success.
    pub failing_since: Option<Timestamp>,
}

impl Subscription {
    /// Whether an event goes to this subscription.
    pub fn matches(&self, e: &EventRecord) -> bool {
        self.validated
            && self.disabled.is_none()
            && e.seq > self.from_seq
            && e.resource == self.resource_filter
            && e.party == self.subject_filter
            && self
                .type_filter
                .as_deref()
                .is_none_or(|t| t.eq_ignore_ascii_case(e.kind.type_string()))
    }
}

/// One event to deliver to one subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Id.
    pub id: u64,
    /// The subscription.
    pub subscription: u64,
    /// The event's sequence.
    pub seq: u64,
    /// Attempts so far.
    pub attempts: u32,
    /// When it is due.
    pub due: Timestamp,
    /// The last failure.
    pub last_error: Option<String>,
}

fn next_id(txn: &WriteTransaction, key: &str) -> Result<u64> {
    let mut meta = txn.open_table(META)?;
    let next: u64 = meta.get(key)?.map(|v| decode(v.value())).transpose()?.unwrap_or(1);
    meta.insert(key, encode(&(next + 1))?.as_slice())?;
    Ok(next)
}

fn get_sub(txn: &WriteTransaction, id: u64) -> Result<Option<Subscription>> {
    txn.open_table(SUBSCRIPTIONS)?.get(id)?.map(|v| decode(v.value())).transpose()
}

fn put_sub(txn: &WriteTransaction, sub: &Subscription) -> Result<()> {
    txn.open_table(SUBSCRIPTIONS)?.insert(sub.id, encode(sub)?.as_slice())?;
    Ok(())
}

fn put_delivery(txn: &WriteTransaction, d: &Delivery) -> Result<()> {
    txn.open_table(DELIVERIES)?.insert(d.id, encode(d)?.as_slice())?;
    txn.open_table(DELIVERY_DUE)?.insert((d.due.as_unix_micros(), d.id), ())?;
    Ok(())
}

fn take_delivery(txn: &WriteTransaction, id: u64) -> Result<Option<Delivery>> {
    let removed = txn
        .open_table(DELIVERIES)?
        .remove(id)?
        .map(|v| decode::<Delivery>(v.value()))
        .transpose()?;
    if let Some(d) = &removed {
        txn.open_table(DELIVERY_DUE)?.remove((d.due.as_unix_micros(), d.id))?;
    }
    Ok(removed)
}

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

impl Storage {
    /// Creates a subscription; it receives events committed after now, once validated.
    pub async fn create_subscription(&self, mut sub: Subscription) -> Result<Subscription> {
        self.index()
            .write(move |txn| {
                sub.id = next_id(txn, "next_subscription_id")?;
                sub.from_seq = txn.open_table(EVENT_LOG)?.last()?.map_or(0, |(k, _)| k.value());
                put_sub(txn, &sub)?;
                Ok(sub.clone())
            })
            .await
    }

    /// A subscription.
    pub fn subscription(&self, id: u64) -> Result<Option<Subscription>> {
        self.index().read(|txn| {
            txn.open_table(SUBSCRIPTIONS)?.get(id)?.map(|v| decode(v.value())).transpose()
        })
    }

    /// Every subscription.
    pub fn subscriptions(&self) -> Result<Vec<Subscription>> {
        self.index().read(|txn| {
            let mut out = Vec::new();
            for entry in txn.open_table(SUBSCRIPTIONS)?.iter()? {
                out.push(decode(entry?.1.value())?);
            }
            Ok(out)
        })
    }

    /// Changes a subscription in one transaction (validation, secret rotation, re-enabling).
    pub async fn modify_subscription<F>(&self, id: u64, mut f: F) -> Result<Subscription>
    where
        F: FnMut(&mut Subscription) + Send + 'static,
    {
        self.index()
            .write(move |txn| {
                let mut sub = get_sub(txn, id)?
                    .ok_or_else(|| Error::NotFound(format!("subscription {id}")))?;
                f(&mut sub);
                put_sub(txn, &sub)?;
                Ok(sub)
            })
            .await
    }

    /// Deletes a subscription with its pending deliveries and dead letters.
    pub async fn delete_subscription(&self, id: u64) -> Result<()> {
        self.index()
            .write(move |txn| {
                txn.open_table(SUBSCRIPTIONS)?.remove(id)?;
                let pending: Vec<Delivery> = {
                    let table = txn.open_table(DELIVERIES)?;
                    let mut out = Vec::new();
                    for entry in table.iter()? {
                        let d: Delivery = decode(entry?.1.value())?;
                        if d.subscription == id {
                            out.push(d);
                        }
                    }
                    out
                };
                for d in pending {
                    take_delivery(txn, d.id)?;
                }
                let dead: Vec<u64> = {
                    let table = txn.open_table(DEAD_LETTERS)?;
                    let mut out = Vec::new();
                    for entry in table.iter()? {
                        let (k, v) = entry?;
                        if decode::<Delivery>(v.value())?.subscription == id {
                            out.push(k.value());
                        }
                    }
                    out
                };
                let mut table = txn.open_table(DEAD_LETTERS)?;
                for k in dead {
                    table.remove(k)?;
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
        let idle = self.index().read(|txn| {
            let meta = txn.open_table(META)?;
            let cursor: u64 =
                meta.get("fanout_cursor")?.map(|v| decode(v.value())).transpose()?.unwrap_or(0);
            let no_events = txn.open_table(EVENT_LOG)?.range(cursor + 1..)?.next().is_none();
            let subscriptions = txn.open_table(SUBSCRIPTIONS)?;
            Ok(no_events || redb::ReadableTableMetadata::is_empty(&subscriptions)?)
        })?;
        if idle {
            return Ok(0);
        }
        self.index()
            .write(move |txn| {
                let meta = txn.open_table(META)?;
                let cursor: u64 =
                    meta.get("fanout_cursor")?.map(|v| decode(v.value())).transpose()?.unwrap_or(0);
                drop(meta);
                let events: Vec<EventRecord> = {
                    let log = txn.open_table(EVENT_LOG)?;
                    let mut out = Vec::new();
                    for entry in log.range(cursor + 1..)?.take(limit) {
                        out.push(decode(entry?.1.value())?);
                    }
                    out
                };
                let Some(last) = events.last().map(|e| e.seq) else { return Ok(0) };
                let subs: Vec<Subscription> = {
                    let table = txn.open_table(SUBSCRIPTIONS)?;
                    let mut out = Vec::new();
                    for entry in table.iter()? {
                        out.push(decode(entry?.1.value())?);
                    }
                    out
                };
                let mut n = 0;
                for e in &events {
                    for sub in subs.iter().filter(|s| s.matches(e)) {
                        let id = next_id(txn, "next_delivery_id")?;
                        put_delivery(
                            txn,
                            &Delivery {
                                id,
                                subscription: sub.id,
                                seq: e.seq,
                                attempts: 0,
                                due: now,
                                last_error: None,
                            },
                        )?;
                        n += 1;
                    }
                }
                txn.open_table(META)?.insert("fanout_cursor", encode(&last)?.as_slice())?;
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
        self.index().read(|txn| {
            let due = txn.open_table(DELIVERY_DUE)?;
            let deliveries = txn.open_table(DELIVERIES)?;
            let subs = txn.open_table(SUBSCRIPTIONS)?;
            let log = txn.open_table(EVENT_LOG)?;
            let mut out = Vec::new();
            for entry in due.range(..=(now.as_unix_micros(), u64::MAX))?.take(limit) {
                let (_, id) = entry?.0.value();
                let Some(d) =
                    deliveries.get(id)?.map(|v| decode::<Delivery>(v.value())).transpose()?
                else {
                    continue;
                };
                let Some(sub) = subs
                    .get(d.subscription)?
                    .map(|v| decode::<Subscription>(v.value()))
                    .transpose()?
                else {
                    continue;
                };
                let Some(e) =
                    log.get(d.seq)?.map(|v| decode::<EventRecord>(v.value())).transpose()?
                else {
                    continue;
                };
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
        self.index()
            .write(move |txn| {
                let Some(mut d) = take_delivery(txn, delivery)? else { return Ok(()) };
                let mut sub = get_sub(txn, d.subscription)?;
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
                        put_delivery(txn, &d)?;
                        if let Some(sub) = sub.as_mut() {
                            sub.failing_since.get_or_insert(now);
                        }
                    }
                    Outcome::GiveUp { error } => {
                        d.last_error = Some(error.clone());
                        txn.open_table(DEAD_LETTERS)?.insert(d.id, encode(&d)?.as_slice())?;
                        if let Some(sub) = sub.as_mut() {
                            sub.failing_since.get_or_insert(now);
                        }
                    }
                    Outcome::Disable { reason } => {
                        d.last_error = Some(reason.clone());
                        txn.open_table(DEAD_LETTERS)?.insert(d.id, encode(&d)?.as_slice())?;
                        // Everything else pending for this subscription goes too.
                        let pending: Vec<Delivery> = {
                            let table = txn.open_table(DELIVERIES)?;
                            let mut out = Vec::new();
                            for entry in table.iter()? {
                                let other: Delivery = decode(entry?.1.value())?;
                                if other.subscription == d.subscription {
                                    out.push(other);
                                }
                            }
                            out
                        };
                        for mut other in pending {
                            take_delivery(txn, other.id)?;
                            other.last_error = Some(reason.clone());
                            txn.open_table(DEAD_LETTERS)?
                                .insert(other.id, encode(&other)?.as_slice())?;
                        }
                        if let Some(sub) = sub.as_mut() {
                            sub.disabled = Some(reason.clone());
                        }
                    }
                }
                if let Some(sub) = &sub {
                    put_sub(txn, sub)?;
                }
                Ok(())
            })
            .await
    }

    /// A subscription's dead letters.
    pub fn dead_letters(&self, subscription: u64) -> Result<Vec<Delivery>> {
        self.index().read(|txn| {
            let mut out = Vec::new();
            for entry in txn.open_table(DEAD_LETTERS)?.iter()? {
                let d: Delivery = decode(entry?.1.value())?;
                if d.subscription == subscription {
                    out.push(d);
                }
            }
            Ok(out)
        })
    }

    /// Puts a subscription's dead letters back in line (due now, attempts reset) and re-enables
    /// it; returns how many.
    pub async fn replay_dead_letters(&self, subscription: u64, now: Timestamp) -> Result<usize> {
        self.index()
            .write(move |txn| {
                let dead: Vec<Delivery> = {
                    let table = txn.open_table(DEAD_LETTERS)?;
                    let mut out = Vec::new();
                    for entry in table.iter()? {
                        let d: Delivery = decode(entry?.1.value())?;
                        if d.subscription == subscription {
                            out.push(d);
                        }
                    }
                    out
                };
                for mut d in dead.clone() {
                    txn.open_table(DEAD_LETTERS)?.remove(d.id)?;
                    d.attempts = 0;
                    d.due = now;
                    put_delivery(txn, &d)?;
                }
                if let Some(mut sub) = get_sub(txn, subscription)? {
                    sub.disabled = None;
                    sub.failing_since = None;
                    put_sub(txn, &sub)?;
                }
                Ok(dead.len())
            })
            .await
    }
}
