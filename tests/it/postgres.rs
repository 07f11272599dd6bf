//! The metadata port on a real PostgreSQL (a private cluster, `integration_tests::pg`): the
//! port's conformance suite and the facade's, unchanged, then what only PostgreSQL can do —
//! migrations shared by processes, two writers on one database, the server going away.

use std::sync::Arc;
use std::time::Duration;

use integration_tests::pg::PgCluster;
use storage::conformance::blob::BlobFixture;
use storage::conformance::metadata::MetadataFixture;
use storage::ports::{BlobStore, MetadataStore, snapshot, transact};
use storage::{LocalBlobStore, PgIndex, PgOptions};

/// A fresh schema of the shared cluster per store; `reopen` opens the last one again.
#[derive(Default)]
struct Pg {
    schema: Option<String>,
}

fn open(schema: &str) -> PgIndex {
    let options = PgOptions { schema: schema.into(), ..PgOptions::new(PgCluster::shared().url()) };
    PgIndex::open(options).expect("opening the PostgreSQL index")
}

impl MetadataFixture for Pg {
    fn create(&mut self) -> Arc<dyn MetadataStore> {
        Arc::new(open(self.schema.insert(PgCluster::fresh_schema())))
    }

    fn reopen(&mut self) -> Arc<dyn MetadataStore> {
        Arc::new(open(self.schema.as_deref().expect("create before reopen")))
    }
}

#[derive(Default)]
struct LocalBlobs {
    dir: Option<tempfile::TempDir>,
}

impl BlobFixture for LocalBlobs {
    fn create(&mut self) -> Arc<dyn BlobStore> {
        let dir = self.dir.insert(tempfile::tempdir().expect("temp dir"));
        Arc::new(LocalBlobStore::open(dir.path(), true, 0).expect("opening a blob store"))
    }

    fn reopen(&mut self) -> Arc<dyn BlobStore> {
        let dir = self.dir.as_ref().expect("create before reopen");
        Arc::new(LocalBlobStore::open(dir.path(), true, 0).expect("reopening a blob store"))
    }
}

mod metadata_port {
    storage::metadata_conformance_tests!(super::Pg::default());
}

mod facade_on_postgres_and_local_blobs {
    storage::storage_conformance_tests!(super::Pg::default(), super::LocalBlobs::default());
}

/// Counts the subscriptions ids handed out (a simple counter of committed writes).
async fn next_ids(store: &dyn MetadataStore, n: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(
            transact(store, |txn| txn.next_id(storage::ports::Counter::Subscription))
                .await
                .unwrap(),
        );
    }
    ids
}

/// Two stores on one schema (two Ferry processes on one database) take turns: counters never
/// hand out a value twice, and both see every commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_one_schema_serialize() {
    let schema = PgCluster::fresh_schema();
    let (a, b) = (Arc::new(open(&schema)), Arc::new(open(&schema)));
    let (ra, rb) = tokio::join!(
        {
            let a = a.clone();
            async move { next_ids(a.as_ref(), 100).await }
        },
        {
            let b = b.clone();
            async move { next_ids(b.as_ref(), 100).await }
        }
    );
    let mut all: Vec<u64> = ra.into_iter().chain(rb).collect();
    all.sort_unstable();
    assert_eq!(all, (1..=200).collect::<Vec<_>>(), "every id once, none skipped");
}

/// Migrations run once per schema, whoever opens it first; a schema migrated by a newer build
/// is refused with a message that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once_and_a_newer_schema_is_refused() {
    let schema = PgCluster::fresh_schema();
    let opened: Vec<_> = (0..3)
        .map(|_| {
            let schema = schema.clone();
            std::thread::spawn(move || open(&schema))
        })
        .collect();
    let stores: Vec<PgIndex> = opened.into_iter().map(|t| t.join().unwrap()).collect();
    drop(stores);
    let url = PgCluster::shared().url();
    let applied = psql(&url, &format!("SELECT count(*) FROM {schema}.schema_migrations"));
    assert_eq!(applied.trim(), "1", "three processes opening one schema migrate it once");
    psql(&url, &format!("INSERT INTO {schema}.schema_migrations (version) VALUES (999)"));
    let refused = PgIndex::open(PgOptions { schema: schema.clone(), ..PgOptions::new(url) })
        .map(drop)
        .unwrap_err();
    assert!(refused.to_string().contains("version 999"), "{refused}");
}

/// Runs SQL with the cluster's own `psql`, as an operator would.
fn psql(url: &str, sql: &str) -> String {
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap()
        .flatten()
        .map(|e| e.path().join("bin/psql"))
        .find(|p| p.exists())
        .expect("psql");
    let out = std::process::Command::new(bin)
        .args([url, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
        .output()
        .expect("psql");
    assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// PostgreSQL going away and coming back, without reopening the store: a write caught by a
/// short outage commits once the server is back (bounded retries); a longer one fails the write
/// with "unavailable", the store reports itself unhealthy, reads fail the same way, and while
/// it is known to be down a write fails at once; once the server is back, what committed before
/// is there, writes succeed and the store is healthy again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_going_away_and_coming_back() {
    let cluster = PgCluster::start();
    let options = PgOptions { schema: "ferry".into(), ..PgOptions::new(cluster.url()) };
    let store = Arc::new(PgIndex::open(options).unwrap());
    assert_eq!(next_ids(store.as_ref(), 3).await, [1, 2, 3]);

    // A short outage: the write waits through it.
    cluster.stop();
    let caught = {
        let store = store.clone();
        tokio::spawn(async move { next_ids(store.as_ref(), 1).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.start_server();
    assert_eq!(caught.await.unwrap(), [4], "a write caught by a short outage commits");
    assert!(store.healthy());

    // A long one: the write fails after the retries.
    cluster.stop();
    let next = |store: Arc<PgIndex>| async move {
        transact(store.as_ref(), |txn| txn.next_id(storage::ports::Counter::Subscription)).await
    };
    let failed = next(store.clone()).await.unwrap_err();
    assert!(matches!(failed, storage::Error::Unavailable(_)), "{failed}");
    assert!(!store.healthy(), "a store that cannot reach its database is not healthy");
    let read = snapshot(store.as_ref(), |r| r.fanout_cursor()).unwrap_err();
    assert!(matches!(read, storage::Error::Unavailable(_)), "{read}");
    let started = std::time::Instant::now();
    let again = next(store.clone()).await.unwrap_err();
    assert!(matches!(again, storage::Error::Unavailable(_)), "{again}");
    assert!(started.elapsed() < Duration::from_secs(2), "known down: fails at once");

    cluster.start_server();
    assert_eq!(next(store.clone()).await.unwrap(), 5, "nothing committed was lost");
    assert!(store.healthy(), "healthy again after a commit");
    assert_eq!(snapshot(store.as_ref(), |r| r.fanout_cursor()).unwrap(), 0);
}

/// A server configured with a PostgreSQL URL keeps its records there: readiness names the
/// engines, and the transfer a client initializes is a row in the server's schema.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_on_postgres_keeps_its_records_there_and_says_so() {
    let clamd = integration_tests::TestClamd::start();
    let dir = tempfile::tempdir().unwrap();
    let schema = PgCluster::fresh_schema();
    let server = integration_tests::TestServer::start_in(dir.path(), &clamd.address(), 0, |c| {
        c.storage.metadata = PgCluster::shared().url();
        c.storage.metadata_schema = schema.clone();
    })
    .await;
    let ready: serde_json::Value =
        reqwest::get(format!("{}/health/ready", server.url())).await.unwrap().json().await.unwrap();
    assert_eq!(ready["metadata"], "postgresql", "{ready}");
    assert_eq!(ready["blobs"], "local", "{ready}");
    assert_eq!(ready["status"], "ready", "{ready}");

    let owner = server.client(server.token("991825827", &["altinn:serviceowner"]));
    integration_tests::owner_with_resource(&owner, "pg-res", &["910000001"], &["910000002"]).await;
    let sender = server.client(server.token("910000001", &["altinn:broker.write"]));
    let id = integration_tests::initialize_transfer(&sender, "pg-res", "910000001", &["910000002"])
        .await
        .unwrap();
    let rows =
        psql(&PgCluster::shared().url(), &format!("SELECT count(*) FROM {schema}.transfers"));
    assert_eq!(rows.trim(), "1", "transfer {id} is a row in {schema}");
}
