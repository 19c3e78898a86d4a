//! Versioned schema migrations. Each area owns the SQL of its migration, in
//! its own file; this list fixes their order. Never edit a released migration:
//! add a new one at the end.

use std::path::Path;

use rusqlite::Connection;

use super::StoreError;

/// (version, name, SQL)
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "probe state transitions", super::probes::MIGRATION),
    (
        2,
        "alert states of alerting rules",
        super::alerts::MIGRATION,
    ),
    (
        3,
        "google sources state and cloud run views",
        super::gcp::MIGRATION,
    ),
    (
        4,
        "silences and the notification log",
        super::silences::MIGRATION,
    ),
    (5, "notification outbox", super::outbox::MIGRATION),
    (
        6,
        "action intents, audit, holds, quarantine",
        super::actions::MIGRATION,
    ),
    (
        7,
        "event alerts kept until notified",
        super::events::MIGRATION,
    ),
    (8, "external alerts", super::external_alerts::MIGRATION),
];

pub(super) fn migrate(conn: &mut Connection, path: Option<&Path>) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            applied_at_ms INTEGER NOT NULL
        )",
    )?;
    let current: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?;
    let known = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if current > known {
        return Err(StoreError::TooNew {
            path: path.map(Path::to_path_buf).unwrap_or_default(),
            found: current,
            known,
        });
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?1, ?2, ?3)",
            rusqlite::params![version, name, chrono::Utc::now().timestamp_millis()],
        )?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase() {
        for w in MIGRATIONS.windows(2) {
            assert!(w[0].0 < w[1].0, "migration versions must increase");
        }
    }

    #[tokio::test]
    async fn migrates_once_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let s = super::super::Store::open(dir.path()).unwrap();
        let v = s.schema_version().await.unwrap();
        assert_eq!(v, MIGRATIONS.last().unwrap().0);
        drop(s);
        let s = super::super::Store::open(dir.path()).unwrap();
        assert_eq!(s.schema_version().await.unwrap(), v);
    }

    #[test]
    fn refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        drop(super::super::Store::open(dir.path()).unwrap());
        let c = Connection::open(dir.path().join("state.db")).unwrap();
        c.execute(
            "INSERT INTO schema_migrations VALUES (9999, 'future', 0)",
            [],
        )
        .unwrap();
        drop(c);
        let err = super::super::Store::open(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("newer than this rearguard knows"),
            "{err}"
        );
    }
}
