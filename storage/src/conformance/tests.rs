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
