//! The embedded adapter: one SQLite file (calls, contacts, messages and the job queue) and a
//! folder of blobs, under a data directory. What `callkeeper serve` runs on by default.
//!
//! SQLite calls block, so each runs on tokio's blocking pool behind one connection's mutex:
//! writes are serialized anyway, and a call's writes are a handful of microseconds each.

mod blobs;
mod calls;
mod claims;
mod leads;
mod messages;
pub mod private;
mod profiles;
mod queue;
mod recordings;
mod schema;
mod sql_types;
mod users;

pub use blobs::FolderBlobs;

use super::{StoreError, StoreResult, Stores};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub const DATABASE_FILE: &str = "callkeeper.sqlite3";
pub const BLOBS_DIR: &str = "blobs";

/// The SQLite side: implements `CallStore` and `JobQueue`.
#[derive(Clone)]
pub struct EmbeddedStore {
    conn: Arc<Mutex<Connection>>,
    max_receives: u32,
}

impl EmbeddedStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path, max_receives: u32) -> StoreResult<Self> {
        let unavailable = |e: std::io::Error| StoreError::Unavailable(format!("securing {}: {e}", path.display()));
        // Created empty (a valid empty database) as the owner's only, before SQLite opens it;
        // SQLite gives its -wal and -shm files the database's mode.
        if !path.exists() {
            private::write_new(path, b"").map_err(unavailable)?;
        }
        let beside = |suffix: &str| {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            std::path::PathBuf::from(name)
        };
        for file in [path.to_path_buf(), beside("-wal"), beside("-shm")] {
            private::tighten(&file, private::FILE_MODE).map_err(unavailable)?;
        }
        let mut conn = Connection::open(path).map_err(|e| StoreError::Unavailable(format!("opening {}: {e}", path.display())))?;
        // WAL lets `callkeeper calls list` read while the server writes; NORMAL sync keeps every
        // committed write through a process crash, which is the failure that matters on a laptop.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        schema::migrate(&mut conn)?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)), max_receives })
    }

    /// Runs `f` on the connection, on the blocking pool.
    async fn with_conn<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("storage task failed: {e}")))?
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::FromSqlConversionFailure(column, _, cause) => StoreError::Corrupt(format!("column {column}: {cause}")),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// The embedded stores under `data_dir`, created if missing.
pub fn open_stores(data_dir: &Path, max_receives: u32) -> StoreResult<Stores> {
    private::create_dir(data_dir).map_err(|e| StoreError::Unavailable(format!("creating {}: {e}", data_dir.display())))?;
    let db = EmbeddedStore::open(&data_dir.join(DATABASE_FILE), max_receives)?;
    let blobs_dir = PathBuf::from(data_dir).join(BLOBS_DIR);
    // Its folders below are created as recordings come; the root is what keeps them private.
    private::create_dir(&blobs_dir).map_err(|e| StoreError::Unavailable(format!("creating {}: {e}", blobs_dir.display())))?;
    let blobs = FolderBlobs::new(blobs_dir);
    Ok(Stores { calls: Arc::new(db.clone()), queue: Arc::new(db), blobs: Arc::new(blobs) })
}
