//! The metadata port's record operations as SQL: [`Conn`] is one connection with its prepared
//! statements, and implements [`MetadataRead`] and [`MetadataTxn`] against whatever
//! transaction the caller (`pg/store.rs`) has open on it. Each method is one statement (a
//! transfer with its histories is one `UNION ALL`); the rules that combine records are the
//! facade's (`crate::rules`), as for redb.

use std::collections::{HashMap, HashSet};

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::index::ops::{decode, encode};
use crate::model::{
    FileTransfer, FileTransferId, Party, ResourceConfig, ResourceId, ServiceOwner, Timestamp,
    UploadId,
};
use crate::ports::{Counter, MetadataRead, MetadataTxn, StoredHistory};
use crate::records::{BlobRecord, EventRecord, Job, JobKind, ScanProgress, UploadRecord};
use crate::records::{Delivery, Subscription};

/// One connection, the runtime that drives it (`pg/store.rs`) and the statements prepared on
/// it (once per connection, by text). Every call blocks the calling thread until PostgreSQL
/// answers; it must not be a tokio worker (the store calls from its writer thread, or inside
/// `block_in_place`).
pub(crate) struct Conn {
    client: Client,
    rt: tokio::runtime::Handle,
    statements: HashMap<&'static str, Statement>,
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl Conn {
    pub(crate) fn new(client: Client, rt: tokio::runtime::Handle) -> Self {
        Self { client, rt, statements: HashMap::new() }
    }

    /// Whether the connection is gone (it is then dropped, not reused).
    pub(crate) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Runs `sql` (one or more statements, no parameters) with the simple query protocol.
    pub(crate) fn batch(&self, sql: &str) -> Result<()> {
        Ok(self.rt.block_on(self.client.batch_execute(sql))?)
    }

    fn statement(&mut self, sql: &'static str) -> Result<Statement> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.rt.block_on(self.client.prepare(sql))?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    fn rows(&mut self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>> {
        let statement = self.statement(sql)?;
        Ok(self.rt.block_on(self.client.query(&statement, params))?)
    }

    fn row(&mut self, sql: &'static str, params: Params<'_>) -> Result<Option<Row>> {
        let statement = self.statement(sql)?;
        Ok(self.rt.block_on(self.client.query_opt(&statement, params))?)
    }

    fn execute(&mut self, sql: &'static str, params: Params<'_>) -> Result<u64> {
        let statement = self.statement(sql)?;
        Ok(self.rt.block_on(self.client.execute(&statement, params))?)
    }

    /// How many migrations the schema has had.
    pub(crate) fn applied_migrations(&mut self) -> Result<usize> {
        let row = self.row("SELECT coalesce(max(version), 0) FROM schema_migrations", &[])?;
        let version: i32 = row.map_or(0, |row| row.get(0));
        Ok(usize::try_from(version).unwrap_or(0))
    }

    /// The decoded `data` (column 0) of the row `sql` finds, if any.
    fn record<T: serde::de::DeserializeOwned>(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Option<T>> {
        self.row(sql, params)?.map(|row| decode(row.get::<_, &[u8]>(0))).transpose()
    }

    /// The decoded `data` (column 0) of every row `sql` finds.
    fn records<T: serde::de::DeserializeOwned>(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Vec<T>> {
        self.rows(sql, params)?.iter().map(|row| decode(row.get::<_, &[u8]>(0))).collect()
    }

    fn counter(&mut self, name: &str) -> Result<u64> {
        let row = self
            .row("SELECT value FROM counters WHERE name = $1", &[&name])?
            .ok_or_else(|| Error::Corrupt(format!("counter {name} missing")))?;
        from_i64(row.get(0))
    }

    fn set_counter(&mut self, name: &str, value: u64) -> Result<()> {
        self.execute("UPDATE counters SET value = $2 WHERE name = $1", &[&name, &to_i64(value)?])?;
        Ok(())
    }
}

fn id_key(id: FileTransferId) -> [u8; 16] {
    id.as_u128().to_be_bytes()
}

fn id_from(bytes: &[u8]) -> Result<FileTransferId> {
    let bytes: [u8; 16] =
        bytes.try_into().map_err(|_| Error::Corrupt("a transfer id is not 16 bytes".into()))?;
    Ok(FileTransferId::from_u128(u128::from_be_bytes(bytes)))
}

fn digest_from(bytes: &[u8]) -> Result<Digest> {
    let bytes: [u8; 32] =
        bytes.try_into().map_err(|_| Error::Corrupt("a digest is not 32 bytes".into()))?;
    Ok(Digest::from_bytes(bytes))
}

pub(crate) fn to_i64(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::Corrupt(format!("{v} does not fit a bigint")))
}

fn from_i64(v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::Corrupt(format!("negative counter {v}")))
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn ids(rows: &[Row]) -> Result<Vec<FileTransferId>> {
    rows.iter().map(|row| id_from(row.get(0))).collect()
}

fn u64s(rows: &[Row]) -> Result<Vec<u64>> {
    rows.iter().map(|row| from_i64(row.get(0))).collect()
}

impl MetadataRead for Conn {
    fn service_owner(&mut self, party: &Party) -> Result<Option<ServiceOwner>> {
        self.record("SELECT data FROM service_owners WHERE org = $1", &[&party.org_number()])
    }

    fn resource(&mut self, id: &ResourceId) -> Result<Option<ResourceConfig>> {
        self.record("SELECT data FROM resources WHERE id = $1", &[&id.as_str()])
    }

    fn resources(&mut self) -> Result<Vec<ResourceConfig>> {
        self.records("SELECT data FROM resources ORDER BY id", &[])
    }

    fn transfer(&mut self, id: FileTransferId) -> Result<Option<FileTransfer>> {
        let key = id_key(id);
        let rows = self.rows(
            "SELECT 0::smallint AS part, 0 AS seq, data FROM transfers WHERE id = $1
             UNION ALL SELECT 1::smallint, seq, data FROM status_history WHERE transfer = $1
             UNION ALL SELECT 2::smallint, seq, data FROM recipient_history WHERE transfer = $1
             ORDER BY part, seq",
            &[&key.as_slice()],
        )?;
        let mut rows = rows.iter();
        let Some(first) = rows.next().filter(|row| row.get::<_, i16>(0) == 0) else {
            return Ok(None);
        };
        let mut transfer: FileTransfer = decode(first.get::<_, &[u8]>(2))?;
        for row in rows {
            let data: &[u8] = row.get(2);
            match row.get::<_, i16>(0) {
                1 => transfer.status_history.push(decode(data)?),
                _ => transfer.recipient_history.push(decode(data)?),
            }
        }
        if transfer.status_history.is_empty() {
            return Err(Error::Corrupt(format!("transfer {id} has no status history")));
        }
        Ok(Some(transfer))
    }

    fn transfer_ids(&mut self) -> Result<Vec<FileTransferId>> {
        ids(&self.rows("SELECT id FROM transfers ORDER BY id", &[])?)
    }

    fn transfers_by_resource(
        &mut self,
        resource: &ResourceId,
        from: Timestamp,
        to: Timestamp,
        n: usize,
    ) -> Result<Vec<FileTransferId>> {
        ids(&self.rows(
            "SELECT transfer FROM by_resource WHERE resource = $1 AND created >= $2
             AND created < $3 ORDER BY created, transfer LIMIT $4",
            &[&resource.as_str(), &from.as_unix_micros(), &to.as_unix_micros(), &limit(n)],
        )?)
    }

    fn transfers_by_party(
        &mut self,
        party: &Party,
        as_recipient: bool,
        from: Timestamp,
        to: Timestamp,
        n: usize,
    ) -> Result<Vec<FileTransferId>> {
        ids(&self.rows(
            "SELECT transfer FROM by_party WHERE org = $1 AND role = $2 AND created >= $3
             AND created < $4 ORDER BY created, transfer LIMIT $5",
            &[
                &party.org_number(),
                &i16::from(as_recipient),
                &from.as_unix_micros(),
                &to.as_unix_micros(),
                &limit(n),
            ],
        )?)
    }

    fn idempotency_key(&mut self, key: &str) -> Result<Option<([u8; 32], FileTransferId)>> {
        self.record("SELECT data FROM idempotency WHERE key = $1", &[&key])
    }

    fn blob(&mut self, digest: &Digest) -> Result<Option<BlobRecord>> {
        self.record("SELECT data FROM blobs WHERE digest = $1", &[&digest.as_bytes().as_slice()])
    }

    fn inline_blob(&mut self, digest: &Digest) -> Result<Option<bytes::Bytes>> {
        let row = self.row(
            "SELECT bytes FROM inline_blobs WHERE digest = $1",
            &[&digest.as_bytes().as_slice()],
        )?;
        Ok(row.map(|row| bytes::Bytes::from(row.get::<_, Vec<u8>>(0))))
    }

    fn has_inline_blob(&mut self, digest: &Digest) -> Result<bool> {
        let row = self.row(
            "SELECT 1 FROM inline_blobs WHERE digest = $1",
            &[&digest.as_bytes().as_slice()],
        )?;
        Ok(row.is_some())
    }

    fn blobs(&mut self) -> Result<Vec<(Digest, BlobRecord)>> {
        let rows = self.rows("SELECT digest, data FROM blobs ORDER BY digest", &[])?;
        rows.iter()
            .map(|row| Ok((digest_from(row.get(0))?, decode(row.get::<_, &[u8]>(1))?)))
            .collect()
    }

    fn pending_gc(&mut self) -> Result<Vec<Digest>> {
        let rows = self.rows("SELECT digest FROM blob_gc ORDER BY digest", &[])?;
        rows.iter().map(|row| digest_from(row.get(0))).collect()
    }

    fn upload(&mut self, id: &UploadId) -> Result<Option<UploadRecord>> {
        self.record("SELECT data FROM uploads WHERE id = $1", &[&id.as_str()])
    }

    fn uploads(&mut self) -> Result<Vec<(UploadId, UploadRecord)>> {
        let rows = self.rows("SELECT id, data FROM uploads ORDER BY id", &[])?;
        rows.iter()
            .map(|row| Ok((UploadId::from_stored(row.get(0)), decode(row.get::<_, &[u8]>(1))?)))
            .collect()
    }

    fn scan_progress(&mut self, id: FileTransferId) -> Result<Option<ScanProgress>> {
        self.record("SELECT data FROM scan_progress WHERE transfer = $1", &[&id_key(id).as_slice()])
    }

    fn events_after(&mut self, after: u64, n: usize) -> Result<Vec<EventRecord>> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        self.records(
            "SELECT data FROM event_log WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[&after, &limit(n)],
        )
    }

    fn event(&mut self, seq: u64) -> Result<Option<EventRecord>> {
        let Ok(seq) = i64::try_from(seq) else { return Ok(None) };
        self.record("SELECT data FROM event_log WHERE seq = $1", &[&seq])
    }

    fn event_seq(&mut self, id: &uuid::Uuid) -> Result<Option<u64>> {
        let row =
            self.row("SELECT seq FROM event_log WHERE id = $1", &[&id.as_bytes().as_slice()])?;
        row.map(|row| from_i64(row.get(0))).transpose()
    }

    fn last_event_seq(&mut self) -> Result<u64> {
        let row = self.row("SELECT seq FROM event_log ORDER BY seq DESC LIMIT 1", &[])?;
        Ok(row.map(|row| from_i64(row.get(0))).transpose()?.unwrap_or(0))
    }

    fn due_jobs(&mut self, now: Timestamp, n: usize) -> Result<Vec<Job>> {
        let rows = self.rows(
            "SELECT due, transfer, kind FROM schedule WHERE due <= $1
             ORDER BY due, transfer, kind LIMIT $2",
            &[&now.as_unix_micros(), &limit(n)],
        )?;
        rows.iter()
            .map(|row| {
                let kind: i16 = row.get(2);
                let kind = *usize::try_from(kind)
                    .ok()
                    .and_then(|k| JobKind::ALL.get(k))
                    .ok_or_else(|| Error::Corrupt(format!("job kind {kind}")))?;
                Ok(Job {
                    due: Timestamp::from_unix_micros(row.get(0)),
                    transfer: id_from(row.get(1))?,
                    kind,
                })
            })
            .collect()
    }

    fn subscription(&mut self, id: u64) -> Result<Option<Subscription>> {
        let Ok(id) = i64::try_from(id) else { return Ok(None) };
        self.record("SELECT data FROM subscriptions WHERE id = $1", &[&id])
    }

    fn subscriptions(&mut self) -> Result<Vec<Subscription>> {
        self.records("SELECT data FROM subscriptions ORDER BY id", &[])
    }

    fn has_subscriptions(&mut self) -> Result<bool> {
        Ok(self.row("SELECT 1 FROM subscriptions LIMIT 1", &[])?.is_some())
    }

    fn delivery(&mut self, id: u64) -> Result<Option<Delivery>> {
        let Ok(id) = i64::try_from(id) else { return Ok(None) };
        self.record("SELECT data FROM deliveries WHERE id = $1", &[&id])
    }

    fn deliveries(&mut self) -> Result<Vec<Delivery>> {
        self.records("SELECT data FROM deliveries ORDER BY id", &[])
    }

    fn due_deliveries(&mut self, now: Timestamp, n: usize) -> Result<Vec<u64>> {
        u64s(&self.rows(
            "SELECT id FROM deliveries WHERE due <= $1 ORDER BY due, id LIMIT $2",
            &[&now.as_unix_micros(), &limit(n)],
        )?)
    }

    fn dead_letters(&mut self) -> Result<Vec<Delivery>> {
        self.records("SELECT data FROM dead_letters ORDER BY id", &[])
    }

    fn fanout_cursor(&mut self) -> Result<u64> {
        self.counter("fanout")
    }
}

/// Inserts the rows of a history from `stored` on (rows are append-only).
fn append_rows<T: serde::Serialize>(
    conn: &mut Conn,
    sql: &'static str,
    id: &[u8],
    rows: &[T],
    stored: usize,
) -> Result<()> {
    if rows.len() < stored {
        return Err(Error::Corrupt("a history shrank".into()));
    }
    if rows.len() == stored {
        return Ok(());
    }
    let mut seqs = Vec::with_capacity(rows.len() - stored);
    let mut data = Vec::with_capacity(rows.len() - stored);
    for (seq, row) in rows.iter().enumerate().skip(stored) {
        seqs.push(i32::try_from(seq).map_err(|_| Error::Corrupt("history too long".into()))?);
        data.push(encode(row)?);
    }
    conn.execute(sql, &[&id, &seqs, &data])?;
    Ok(())
}

impl MetadataTxn for Conn {
    fn insert_service_owner(&mut self, owner: &ServiceOwner) -> Result<()> {
        let inserted = self.execute(
            "INSERT INTO service_owners VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&owner.id.org_number(), &encode(owner)?],
        )?;
        if inserted == 0 {
            return Err(Error::AlreadyExists(format!("service owner {}", owner.id)));
        }
        Ok(())
    }

    fn put_resource(&mut self, resource: &ResourceConfig) -> Result<()> {
        self.execute(
            "INSERT INTO resources VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET data = $2",
            &[&resource.id.as_str(), &encode(resource)?],
        )?;
        Ok(())
    }

    fn insert_transfer(&mut self, transfer: &FileTransfer) -> Result<()> {
        let id = id_key(transfer.id);
        if self.row("SELECT 1 FROM transfers WHERE id = $1", &[&id.as_slice()])?.is_some() {
            return Err(Error::AlreadyExists(format!("file transfer {}", transfer.id)));
        }
        let created = transfer.created.as_unix_micros();
        self.execute(
            "INSERT INTO by_resource VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&transfer.resource_id.as_str(), &created, &id.as_slice()],
        )?;
        let mut orgs = vec![transfer.sender.org_number()];
        let mut roles = vec![0i16];
        for recipient in &transfer.recipients {
            orgs.push(recipient.org_number());
            roles.push(1);
        }
        self.execute(
            "INSERT INTO by_party SELECT o, r, $3, $4 FROM unnest($1::text[], $2::smallint[]) AS p(o, r)
             ON CONFLICT DO NOTHING",
            &[&orgs, &roles, &created, &id.as_slice()],
        )?;
        Ok(())
    }

    fn put_transfer(&mut self, transfer: &FileTransfer, stored: StoredHistory) -> Result<()> {
        let id = id_key(transfer.id);
        // The record's encoding leaves its histories out (`#[serde(skip)]`): they are rows.
        self.execute(
            "INSERT INTO transfers VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET data = $2",
            &[&id.as_slice(), &encode(transfer)?],
        )?;
        append_rows(
            self,
            "INSERT INTO status_history SELECT $1, s, d FROM unnest($2::integer[], $3::bytea[]) AS h(s, d)
             ON CONFLICT (transfer, seq) DO UPDATE SET data = excluded.data",
            &id,
            &transfer.status_history,
            stored.status,
        )?;
        append_rows(
            self,
            "INSERT INTO recipient_history SELECT $1, s, d FROM unnest($2::integer[], $3::bytea[]) AS h(s, d)
             ON CONFLICT (transfer, seq) DO UPDATE SET data = excluded.data",
            &id,
            &transfer.recipient_history,
            stored.recipient,
        )
    }

    fn put_idempotency_key(
        &mut self,
        key: &str,
        request_hash: [u8; 32],
        transfer: FileTransferId,
    ) -> Result<()> {
        self.execute(
            "INSERT INTO idempotency VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET data = $2",
            &[&key, &encode(&(request_hash, transfer))?],
        )?;
        Ok(())
    }

    fn put_blob(&mut self, digest: &Digest, record: &BlobRecord) -> Result<()> {
        self.execute(
            "INSERT INTO blobs VALUES ($1, $2) ON CONFLICT (digest) DO UPDATE SET data = $2",
            &[&digest.as_bytes().as_slice(), &encode(record)?],
        )?;
        Ok(())
    }

    fn remove_blob(&mut self, digest: &Digest) -> Result<()> {
        self.execute("DELETE FROM blobs WHERE digest = $1", &[&digest.as_bytes().as_slice()])?;
        Ok(())
    }

    fn put_inline_blob(&mut self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        self.execute(
            "INSERT INTO inline_blobs VALUES ($1, $2) ON CONFLICT (digest) DO UPDATE SET bytes = $2",
            &[&digest.as_bytes().as_slice(), &bytes],
        )?;
        Ok(())
    }

    fn remove_inline_blob(&mut self, digest: &Digest) -> Result<bool> {
        let removed = self.execute(
            "DELETE FROM inline_blobs WHERE digest = $1",
            &[&digest.as_bytes().as_slice()],
        )?;
        Ok(removed > 0)
    }

    fn queue_gc(&mut self, digest: &Digest) -> Result<()> {
        self.execute(
            "INSERT INTO blob_gc VALUES ($1) ON CONFLICT DO NOTHING",
            &[&digest.as_bytes().as_slice()],
        )?;
        Ok(())
    }

    fn unqueue_gc(&mut self, digest: &Digest) -> Result<()> {
        self.execute("DELETE FROM blob_gc WHERE digest = $1", &[&digest.as_bytes().as_slice()])?;
        Ok(())
    }

    fn put_upload(&mut self, id: &UploadId, record: &UploadRecord) -> Result<()> {
        self.execute(
            "INSERT INTO uploads VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET data = $2",
            &[&id.as_str(), &encode(record)?],
        )?;
        Ok(())
    }

    fn remove_upload(&mut self, id: &UploadId) -> Result<Option<UploadRecord>> {
        self.record("DELETE FROM uploads WHERE id = $1 RETURNING data", &[&id.as_str()])
    }

    fn put_scan_progress(&mut self, id: FileTransferId, progress: &ScanProgress) -> Result<()> {
        self.execute(
            "INSERT INTO scan_progress VALUES ($1, $2)
             ON CONFLICT (transfer) DO UPDATE SET data = $2",
            &[&id_key(id).as_slice(), &encode(progress)?],
        )?;
        Ok(())
    }

    fn remove_scan_progress(&mut self, id: FileTransferId) -> Result<()> {
        self.execute("DELETE FROM scan_progress WHERE transfer = $1", &[&id_key(id).as_slice()])?;
        Ok(())
    }

    fn append_events(&mut self, events: Vec<EventRecord>) -> Result<usize> {
        if events.is_empty() {
            return Ok(0);
        }
        let wanted: Vec<&[u8]> = events.iter().map(|e| e.id.as_bytes().as_slice()).collect();
        let rows = self.rows("SELECT id FROM event_log WHERE id = ANY($1)", &[&wanted])?;
        let mut seen: HashSet<Vec<u8>> = rows.iter().map(|row| row.get::<_, Vec<u8>>(0)).collect();
        let mut next = self.counter("event_seq")?;
        let (mut seqs, mut ids, mut data) = (Vec::new(), Vec::new(), Vec::new());
        for mut event in events {
            if !seen.insert(event.id.as_bytes().to_vec()) {
                continue; // already recorded: an event happens once
            }
            event.seq = next;
            seqs.push(to_i64(next)?);
            ids.push(event.id.as_bytes().to_vec());
            data.push(encode(&event)?);
            next += 1;
        }
        if seqs.is_empty() {
            return Ok(0);
        }
        self.execute(
            "INSERT INTO event_log SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bytea[])",
            &[&seqs, &ids, &data],
        )?;
        self.set_counter("event_seq", next)?;
        Ok(seqs.len())
    }

    fn schedule(&mut self, job: &Job) -> Result<()> {
        self.execute(
            "INSERT INTO schedule VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[
                &job.due.as_unix_micros(),
                &id_key(job.transfer).as_slice(),
                &i16::from(job.kind.code()),
            ],
        )?;
        Ok(())
    }

    fn unschedule(&mut self, job: &Job) -> Result<bool> {
        let removed = self.execute(
            "DELETE FROM schedule WHERE due = $1 AND transfer = $2 AND kind = $3",
            &[
                &job.due.as_unix_micros(),
                &id_key(job.transfer).as_slice(),
                &i16::from(job.kind.code()),
            ],
        )?;
        Ok(removed > 0)
    }

    fn next_id(&mut self, counter: Counter) -> Result<u64> {
        let name = match counter {
            Counter::Subscription => "subscription",
            Counter::Delivery => "delivery",
        };
        let row = self
            .row(
                "UPDATE counters SET value = value + 1 WHERE name = $1 RETURNING value - 1",
                &[&name],
            )?
            .ok_or_else(|| Error::Corrupt(format!("counter {name} missing")))?;
        from_i64(row.get(0))
    }

    fn put_subscription(&mut self, sub: &Subscription) -> Result<()> {
        self.execute(
            "INSERT INTO subscriptions VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET data = $2",
            &[&to_i64(sub.id)?, &encode(sub)?],
        )?;
        Ok(())
    }

    fn remove_subscription(&mut self, id: u64) -> Result<()> {
        self.execute("DELETE FROM subscriptions WHERE id = $1", &[&to_i64(id)?])?;
        Ok(())
    }

    fn put_delivery(&mut self, d: &Delivery) -> Result<()> {
        self.execute(
            "INSERT INTO deliveries VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET due = $2, data = $3",
            &[&to_i64(d.id)?, &d.due.as_unix_micros(), &encode(d)?],
        )?;
        Ok(())
    }

    fn remove_delivery(&mut self, id: u64) -> Result<Option<Delivery>> {
        self.record("DELETE FROM deliveries WHERE id = $1 RETURNING data", &[&to_i64(id)?])
    }

    fn put_dead_letter(&mut self, d: &Delivery) -> Result<()> {
        self.execute(
            "INSERT INTO dead_letters VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET data = $2",
            &[&to_i64(d.id)?, &encode(d)?],
        )?;
        Ok(())
    }

    fn remove_dead_letter(&mut self, id: u64) -> Result<()> {
        self.execute("DELETE FROM dead_letters WHERE id = $1", &[&to_i64(id)?])?;
        Ok(())
    }

    fn set_fanout_cursor(&mut self, seq: u64) -> Result<()> {
        self.set_counter("fanout", seq)
    }
}
