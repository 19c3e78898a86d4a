//! Google sources' state that must survive a restart: the Cloud Monitoring
//! de-duplication state (last point end time and counter totals per series),
//! the Cloud Logging cursors (window start, insertIds seen, counts, evidence),
//! and the last view of each Cloud Run service.
//!
//! The states are JSON documents whose shape belongs to each source.

use rusqlite::{params, OptionalExtension};

use super::{Store, StoreError};
use crate::clock::TimestampMs;

pub(super) const MIGRATION: &str = "
CREATE TABLE gcp_source_state (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE cloud_run_views (
    service TEXT PRIMARY KEY,
    seen_ms INTEGER NOT NULL,
    view TEXT NOT NULL
);
";

/// The kinds of source state.
pub const KIND_MONITORING: &str = "cloud_monitoring";
pub const KIND_LOGGING: &str = "cloud_logging";

impl Store {
    /// Saves the state of source `name` of `kind` (replacing the previous one).
    pub async fn put_gcp_state(
        &self,
        kind: &str,
        name: &str,
        at_ms: TimestampMs,
        state: String,
    ) -> Result<(), StoreError> {
        let (kind, name) = (kind.to_string(), name.to_string());
        self.call(move |c| {
            c.execute(
                "INSERT INTO gcp_source_state (kind, name, updated_ms, state) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (kind, name) DO UPDATE SET updated_ms = excluded.updated_ms, state = excluded.state",
                params![kind, name, at_ms, state],
            )
            .map(|_| ())
        })
        .await
    }

    /// The saved state of source `name` of `kind`.
    pub async fn gcp_state(&self, kind: &str, name: &str) -> Result<Option<String>, StoreError> {
        let (kind, name) = (kind.to_string(), name.to_string());
        self.call(move |c| {
            c.query_row(
                "SELECT state FROM gcp_source_state WHERE kind = ?1 AND name = ?2",
                params![kind, name],
                |r| r.get(0),
            )
            .optional()
        })
        .await
    }

    /// Saves the last view of a Cloud Run service (`projects/P/locations/L/services/S`).
    pub async fn put_cloud_run_view(
        &self,
        service: &str,
        seen_ms: TimestampMs,
        view: String,
    ) -> Result<(), StoreError> {
        let service = service.to_string();
        self.call(move |c| {
            c.execute(
                "INSERT INTO cloud_run_views (service, seen_ms, view) VALUES (?1, ?2, ?3)
                 ON CONFLICT (service) DO UPDATE SET seen_ms = excluded.seen_ms, view = excluded.view",
                params![service, seen_ms, view],
            )
            .map(|_| ())
        })
        .await
    }

    /// The last saved view of a Cloud Run service, with when it was seen.
    pub async fn cloud_run_view(
        &self,
        service: &str,
    ) -> Result<Option<(TimestampMs, String)>, StoreError> {
        let service = service.to_string();
        self.call(move |c| {
            c.query_row(
                "SELECT seen_ms, view FROM cloud_run_views WHERE service = ?1",
                params![service],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn state_is_replaced_and_read_back() {
        let s = Store::open_in_memory().unwrap();
        assert_eq!(s.gcp_state(KIND_LOGGING, "errors").await.unwrap(), None);
        s.put_gcp_state(KIND_LOGGING, "errors", 1, "{\"a\":1}".into())
            .await
            .unwrap();
        s.put_gcp_state(KIND_LOGGING, "errors", 2, "{\"a\":2}".into())
            .await
            .unwrap();
        assert_eq!(
            s.gcp_state(KIND_LOGGING, "errors")
                .await
                .unwrap()
                .as_deref(),
            Some("{\"a\":2}")
        );
        assert_eq!(s.gcp_state(KIND_MONITORING, "errors").await.unwrap(), None);
        s.put_cloud_run_view("projects/p/locations/l/services/s", 5, "{}".into())
            .await
            .unwrap();
        assert_eq!(
            s.cloud_run_view("projects/p/locations/l/services/s")
                .await
                .unwrap(),
            Some((5, "{}".to_string()))
        );
    }
}
