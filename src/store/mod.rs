//! The state store: SQLite (`state_dir/state.db`) behind a versioned schema.
//!
//! Only this module speaks SQL. Each area keeps its queries in its own file
//! here and exposes typed async methods; every call runs on tokio's blocking
//! pool, never on the async runtime.

pub mod actions;
pub mod alerts;
pub mod events;
pub mod external_alerts;
pub mod gcp;
mod migrations;
pub mod outbox;
pub mod probes;
pub mod silences;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

pub use actions::{AuditEntry, Hold, Intent, IntentState, Quarantined};
pub use probes::ProbeTransition;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create state directory {path}: {source} (check that the user rearguard runs as may write there)")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open state database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("state database {path} has schema version {found}, newer than this rearguard knows ({known}); upgrade rearguard or restore an older state.db")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("state database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state database task failed: {0}")]
    Task(String),
}

/// A handle to the state database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

pub const DB_FILE: &str = "state.db";

impl Store {
    /// Opens (creating if needed) `dir/state.db` and brings its schema up to date.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        let conn = Connection::open(&path).map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Self::init(conn, Some(path))
    }

    /// An in-memory store, for tests and tools that keep nothing.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?, None)
    }

    fn init(mut conn: Connection, path: Option<PathBuf>) -> Result<Self, StoreError> {
        migrations::migrate(&mut conn, path.as_deref())?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Runs `f` with the connection on the blocking pool.
    pub(crate) async fn call<F, R>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut Connection) -> Result<R, rusqlite::Error> + Send + 'static,
        R: Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard).map_err(StoreError::from)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// The schema version (the highest migration applied).
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        self.call(|c| {
            c.query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
                r.get(0)
            })
        })
        .await
    }
}
