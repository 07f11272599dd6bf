//! The suites against today's implementations: [`LocalBlobStore`] and [`RedbIndex`], each in a
//! temporary directory (with `sync` on, as in production).

use std::sync::Arc;

use crate::ports::{BlobStore, MetadataStore};
use crate::{LocalBlobStore, RedbIndex};

/// A fresh directory per store; `reopen` opens the last one again.
#[derive(Default)]
struct Dirs {
    current: Option<tempfile::TempDir>,
}

impl Dirs {
    fn fresh(&mut self) -> &std::path::Path {
        self.current.insert(tempfile::tempdir().expect("a temporary directory")).path()
    }

    fn last(&self) -> &std::path::Path {
        self.current.as_ref().expect("create before reopen").path()
    }
}

#[derive(Default)]
struct LocalBlobs(Dirs);

impl super::blob::BlobFixture for LocalBlobs {
    fn create(&mut self) -> Arc<dyn BlobStore> {
        Arc::new(LocalBlobStore::open(self.0.fresh(), true, 0).expect("opening a blob store"))
    }

    fn reopen(&mut self) -> Arc<dyn BlobStore> {
        Arc::new(LocalBlobStore::open(self.0.last(), true, 0).expect("reopening a blob store"))
    }
}

#[derive(Default)]
struct Redb(Dirs);

impl super::metadata::MetadataFixture for Redb {
    fn create(&mut self) -> Arc<dyn MetadataStore> {
        let path = self.0.fresh().join("index.redb");
        Arc::new(RedbIndex::open(&path, true, 512).expect("opening an index"))
    }

    fn reopen(&mut self) -> Arc<dyn MetadataStore> {
        let path = self.0.last().join("index.redb");
        Arc::new(RedbIndex::open(&path, true, 512).expect("reopening an index"))
    }
}

mod local_blob_store {
    crate::blob_conformance_tests!(super::LocalBlobs::default());
}

mod redb_index {
    crate::metadata_conformance_tests!(super::Redb::default());
}

mod storage_on_both {
    crate::storage_conformance_tests!(super::Redb::default(), super::LocalBlobs::default());
}

/// Schema 2 added only the table of inline blobs: an index written as schema 1 opens, keeps
/// its records and is marked 2 (so that a schema-1 build refuses it); a newer schema is refused.
#[test]
fn a_schema_1_index_is_upgraded_in_place_and_a_newer_one_refused() {
    use crate::index::ops::{decode, encode};
    use crate::index::tables::META;
    use redb::ReadableDatabase;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.redb");
    let set_version = |v: u32| {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", encode(&v).unwrap().as_slice())
            .unwrap();
        txn.commit().unwrap();
    };
    let version = || {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(META).unwrap();
        decode::<u32>(table.get("schema_version").unwrap().unwrap().value()).unwrap()
    };
    drop(RedbIndex::open(&path, true, 512).unwrap());
    set_version(1);
    drop(RedbIndex::open(&path, true, 512).expect("a schema 1 index opens"));
    assert_eq!(version(), 2, "and is marked 2");
    set_version(3);
    let refused = RedbIndex::open(&path, true, 512).map(drop).unwrap_err();
    assert!(refused.to_string().contains("schema version 3"), "{refused}");
}
